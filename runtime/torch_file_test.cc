// PyTorch files: reading what Python's torch.save wrote (runtime/testdata, made by
// make_torch_files.py), writing what it reads, and refusing damaged files with an
// error, never a crash.
#include "runtime/torch_file.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include "gtest/gtest.h"
#include "ir/plan_io.h"

namespace ppc::runtime {
namespace {

using Kind = PyValue::Kind;

std::vector<float> Floats(const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

TEST(TorchFile, ReadsWhatPythonSaved) {
  auto v = ReadTorchFile("runtime/testdata/python_values.pt");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->kind, Kind::kDict);
  // A state_dict() is an OrderedDict with _metadata: read as a dict, in order.
  const PyValue* sd = v->Find("sd");
  ASSERT_NE(sd, nullptr);
  ASSERT_EQ(sd->dict.size(), 2u);
  EXPECT_EQ(sd->dict[0].first->s, "weight");
  EXPECT_EQ(sd->dict[1].first->s, "bias");
  const at::Tensor& w = sd->Find("weight")->tensor;
  EXPECT_EQ(w.sizes(), at::IntArrayRef({3, 2, 2, 2}));
  EXPECT_FLOAT_EQ(w[2][1][1][1].item<float>(), 23.0f / 8);
  EXPECT_EQ(Floats(sd->Find("bias")->tensor), std::vector<float>({-1.0f, 0.5f, 2.0f}));
  EXPECT_EQ(Floats(v->Find("param")->tensor), std::vector<float>({1, 2, 3, 4}));
  const at::Tensor& l = v->Find("long")->tensor;
  EXPECT_EQ(l.scalar_type(), at::kLong);
  EXPECT_EQ(l[0].item<int64_t>(), -2);
  // A view saves its whole storage; the reader keeps only the view's elements.
  EXPECT_EQ(Floats(v->Find("view")->tensor), std::vector<float>({3, 4, 5}));
  EXPECT_EQ(Floats(v->Find("strided")->tensor), std::vector<float>({0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(Floats(v->Find("shared_a")->tensor), Floats(v->Find("shared_b")->tensor));
  const at::Tensor& d = v->Find("double")->tensor;
  EXPECT_EQ(d.scalar_type(), at::kDouble);
  EXPECT_DOUBLE_EQ(d[1].item<double>(), 1e300);
  EXPECT_EQ(Floats(v->Find("half")->tensor), std::vector<float>({0.5f, -3.0f}));
  EXPECT_EQ(v->Find("empty")->tensor.sizes(), at::IntArrayRef({0, 3}));
  EXPECT_EQ(v->Find("scalar")->tensor.dim(), 0);
  EXPECT_FLOAT_EQ(v->Find("scalar")->tensor.item<float>(), 7.0f);
  const PyValue* nums = v->Find("nums");
  ASSERT_EQ(nums->items.size(), 10u);
  EXPECT_EQ(nums->items[0]->i, 1);
  EXPECT_EQ(nums->items[1]->i, -2);
  EXPECT_EQ(nums->items[2]->f, 3.5);
  EXPECT_TRUE(nums->items[3]->b);
  EXPECT_EQ(nums->items[4]->kind, Kind::kNone);
  EXPECT_EQ(nums->items[5]->s, "x");
  EXPECT_EQ(nums->items[6]->i, int64_t(1) << 40);
  EXPECT_EQ(nums->items[7]->i, -(int64_t(1) << 40));
  EXPECT_EQ(nums->items[8]->i, 300);
  EXPECT_EQ(nums->items[9]->i, 70000);
  EXPECT_EQ(v->Find("list")->items[1]->items[1]->i, 3);
  const PyValue* state = v->Find("state");
  ASSERT_EQ(state->dict.size(), 1u);
  EXPECT_EQ(state->dict[0].first->i, 0);
  EXPECT_EQ(state->dict[0].second->Find("step")->i, 3);
}

TEST(TorchFile, ReadsAnEmptyStateDict) {
  auto v = ReadTorchFile("runtime/testdata/python_empty_state_dict.pt");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, Kind::kDict);
  EXPECT_TRUE(v->dict.empty());
}

TEST(TorchFile, RefusesTheLegacyFormatByName) {
  auto v = ReadTorchFile("runtime/testdata/python_legacy.pt");
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("legacy (pre-1.6) format"), std::string::npos) << v.status();
}

TEST(TorchFile, RoundTripsWhatItWrites) {
  c10::Dict<std::string, at::Tensor> d;
  at::Tensor big = torch::arange(100000, torch::kFloat32);
  d.insert("weight", big.slice(0, 10, 16).view({2, 3}));  // a view of a larger tensor
  d.insert("bias", torch::tensor({1.0f, -1.0f}));
  auto bytes = SerializeTorchFile(d);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // Only the view's 6 floats are stored, not the 100,000 of its base.
  EXPECT_LT(bytes->size(), 10000u);
  auto v = ParseTorchFile(std::string(bytes->begin(), bytes->end()), "mem");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(Floats(v->Find("weight")->tensor), std::vector<float>({10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(v->Find("weight")->tensor.sizes(), at::IntArrayRef({2, 3}));
  EXPECT_EQ(Floats(v->Find("bias")->tensor), std::vector<float>({1, -1}));
}

TEST(TorchFile, DamagedFilesAreErrorsNeverCrashes) {
  auto original = ir::ReadFile("runtime/testdata/python_values.pt");
  ASSERT_TRUE(original.ok());
  // Every truncation, and a flipped byte at every position: each either parses or
  // fails with a status; the process survives all of them.
  int failures = 0;
  for (size_t n = 0; n < original->size(); ++n) {
    auto v = ParseTorchFile(original->substr(0, n), "truncated");
    EXPECT_FALSE(v.ok()) << "truncated to " << n << " bytes";
    failures += !v.ok();
  }
  EXPECT_EQ(failures, static_cast<int>(original->size()));
  for (size_t i = 0; i < original->size(); ++i) {
    std::string bytes = *original;
    bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
    (void)ParseTorchFile(bytes, "flipped");
  }
  auto empty = ParseTorchFile("", "empty.pt");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty.pt: not a PyTorch file"), std::string::npos) << empty.status();
}

// A PyTorch zip holding `pickle` as data.pkl and the given storage records.
std::string Zip(const std::string& pickle, const std::map<std::string, std::string>& records = {}) {
  std::string out;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t n) {
    out.append(static_cast<const char*>(data), n);
    return n;
  });
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  for (const auto& [name, bytes] : records) writer.writeRecord(name, bytes.data(), bytes.size());
  writer.writeEndOfFile();
  return out;
}

TEST(TorchFile, HostilePicklesAreRefusedWithoutCrashing) {
  // A million nested 1-tuples.
  std::string deep = "\x80\x02N" + std::string(1000000, '\x85') + ".";
  auto a = ParseTorchFile(Zip(deep), "deep.pt");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("nested more than"), std::string::npos) << a.status();
  // A chain built by appending each new list into the previous one (via the memo), so
  // that no container's recorded depth grows: freeing it must not recurse.
  std::string chain = "\x80\x02]q\x00";  // L0 = [], memo 0
  for (int i = 1; i <= 200000; ++i) {
    // BINGET previous (LONG_BINGET), EMPTY_LIST, LONG_BINPUT i, APPEND, POP
    auto u32 = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
    chain += "j" + u32(i - 1) + "]r" + u32(i) + "a0";
  }
  chain += ".";
  (void)ParseTorchFile(Zip(chain), "chain.pt");  // any status; the process survives
  // A storage that declares 2^62 elements: the size check must not overflow.
  // (Hex escapes are split from the next literal: "\x02" "c", not "\x02c".)
  std::string huge = std::string("\x80\x02") + "ctorch._utils\n_rebuild_tensor_v2\n((" +
                     std::string("X\x07\x00\x00\x00", 5) + "storage" + "ctorch\nFloatStorage\n" +
                     std::string("X\x01\x00\x00\x00", 5) + "0" + std::string("X\x03\x00\x00\x00", 5) + "cpu" +
                     std::string("\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40", 10) +  // LONG1: 2^62
                     "tQ" + std::string("K\x00", 2) + std::string("K\x01\x85", 3) + std::string("K\x01\x85", 3) +
                     "\x89NtR.";
  auto h = ParseTorchFile(Zip(huge, {{"data/0", std::string(16, '\0')}}), "huge.pt");
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("too few for"), std::string::npos) << h.status();
  // A pickle that would call os.system is refused, not called.
  std::string call = std::string("\x80\x02") + "cposix\nsystem\n" + std::string("X\x04\x00\x00\x00", 5) +
                     "true" + "\x85R.";
  auto c = ParseTorchFile(Zip(call), "call.pt");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("unsupported object 'posix.system'"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace ppc::runtime
