#include "runtime/cifar10.h"

#include <sys/stat.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace ppc::runtime {
namespace {

// Writes `n` records per file; record r of file f has label (f + r) % 10 and every
// pixel equal to (f * 31 + r) % 256.
std::string WriteDataset(const std::string& name, int n, int files = 5) {
  std::string dir = ::testing::TempDir() + "/" + name;
  mkdir(dir.c_str(), 0755);
  for (int f = 1; f <= files; ++f) {
    std::ofstream out(absl::StrCat(dir, "/data_batch_", f, ".bin"), std::ios::binary);
    for (int r = 0; r < n; ++r) {
      out.put(static_cast<char>((f + r) % 10));
      std::string pixels(3072, static_cast<char>((f * 31 + r) % 256));
      out.write(pixels.data(), pixels.size());
    }
  }
  return dir;
}

TEST(Cifar10, ReadsRecordsAndPreprocessesLikeTheSeed) {
  std::string dir = WriteDataset("ok", 4);
  auto d = Cifar10Data::Open(dir, false, 64, 2, 2, 7);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->size(), 20);
  // Record 0 of file 1: pixels 31/255 everywhere; normalised per channel with
  // ImageNet mean/std; resize + crop of a constant image stays constant.
  torch::Tensor img = (*d)->Image(0);
  EXPECT_EQ(img.sizes().vec(), (std::vector<int64_t>{3, 64, 64}));
  const float v = 31.0f / 255.0f;
  EXPECT_NEAR(img[0].mean().item<float>(), (v - 0.485f) / 0.229f, 1e-5);
  EXPECT_NEAR(img[2].max().item<float>(), (v - 0.406f) / 0.225f, 1e-5);
}

TEST(Cifar10, SamplerIsDeterministicShardedAndWrapsAround) {
  std::string dir = WriteDataset("sampler", 2);  // 10 samples
  auto a = *Cifar10Data::Open(dir, false, 32, 2, 4, 7);
  auto b = *Cifar10Data::Open(dir, false, 32, 2, 4, 7);
  std::set<int64_t> epoch0;
  for (int64_t pos = 0; pos < 10; ++pos) {
    EXPECT_EQ(a->SampleAt(pos), b->SampleAt(pos));
    epoch0.insert(a->SampleAt(pos));
  }
  EXPECT_EQ(epoch0.size(), 10u) << "an epoch visits every sample once";
  bool reshuffled = false;
  for (int64_t pos = 0; pos < 10; ++pos) reshuffled |= a->SampleAt(pos) != a->SampleAt(10 + pos);
  EXPECT_TRUE(reshuffled) << "each epoch uses a fresh permutation";
  // Micro-batch 1 of step 0 takes stream positions 2, 3 (global batch 4, micro-batch size 2).
  auto mb = *a->Load(0, 1, true, true);
  EXPECT_EQ(mb.labels.size(0), 2);
  EXPECT_EQ(mb.inputs.sizes().vec(), (std::vector<int64_t>{2, 3, 32, 32}));
  std::vector<int64_t> want;
  for (int64_t pos : {2, 3}) {
    int64_t idx = a->SampleAt(pos);
    want.push_back(((idx / 2 + 1) + idx % 2) % 10);  // file (idx/2)+1, record idx%2
  }
  EXPECT_EQ(mb.labels[0].item<int64_t>(), want[0]);
  EXPECT_EQ(mb.labels[1].item<int64_t>(), want[1]);
}

TEST(Cifar10, ResumesAtASavedPositionInTheSavedShuffle) {
  std::string dir = WriteDataset("resume", 2);  // 10 samples, global batch 4
  auto a = *Cifar10Data::Open(dir, false, 32, 2, 4, 7);
  DataPosition at3 = a->PositionAt(3);
  EXPECT_EQ(at3.samples, 12);
  EXPECT_EQ(at3.epoch, 1);
  EXPECT_EQ(at3.cursor, 2);
  EXPECT_EQ(at3.dataset_size, 10);
  EXPECT_EQ(at3.shuffle_seed, 7u);
  // Another process (even with another seed) continues the stream exactly.
  auto b = *Cifar10Data::Open(dir, false, 32, 2, 4, 99);
  ASSERT_TRUE(b->Resume(3, at3).ok());
  for (int64_t step : {3, 4, 9}) {
    for (int64_t g : {0, 1}) {
      EXPECT_TRUE(a->Load(step, g, true, true)->inputs.equal(b->Load(step, g, true, true)->inputs)) << step << g;
    }
  }
  EXPECT_EQ(b->PositionAt(5).samples, 20);
  EXPECT_FALSE(b->Resume(1, DataPosition{-4}).ok());
  // Another global batch (2 instead of 4) continues at the same sample: its step 3 reads
  // positions 12, 13 (a's micro-batch 0 of step 3), its step 4 positions 14, 15.
  auto c = *Cifar10Data::Open(dir, false, 32, 2, 2, 7);
  ASSERT_TRUE(c->Resume(3, at3).ok());
  EXPECT_TRUE(c->Load(3, 0, true, true)->inputs.equal(a->Load(3, 0, true, true)->inputs));
  EXPECT_TRUE(c->Load(4, 0, true, true)->inputs.equal(a->Load(3, 1, true, true)->inputs));
  EXPECT_EQ(c->PositionAt(5).samples, 16);
}

TEST(Cifar10, WithoutShuffleReadsInFileOrder) {
  std::string dir = WriteDataset("ordered", 2);
  auto d = *Cifar10Data::Open(dir, false, 32, 2, 4, 7, /*shuffle=*/false);
  for (int64_t pos = 0; pos < 25; ++pos) EXPECT_EQ(d->SampleAt(pos), pos % 10);
}

TEST(Cifar10, ClearErrorsNameTheFileAndRecord) {
  auto missing = Cifar10Data::Open("/nonexistent/cifar", false, 32, 1, 1, 1);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("'/nonexistent/cifar' does not exist"), std::string::npos);
  auto device = Cifar10Data::Open("/dev/zero", false, 32, 4, 4, 1, false);
  ASSERT_FALSE(device.ok());
  EXPECT_NE(device.status().message().find("'/dev/zero' is not a directory"), std::string::npos) << device.status();

  std::string dir = WriteDataset("truncated", 3);
  {
    std::ofstream out(dir + "/data_batch_4.bin", std::ios::binary | std::ios::app);
    out.write("xyz", 3);
  }
  auto cut = Cifar10Data::Open(dir, false, 32, 1, 1, 1);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(cut.status().message().find("data_batch_4.bin' is truncated: 9222 bytes"), std::string::npos)
      << cut.status();
  EXPECT_NE(cut.status().message().find("record 3 is incomplete"), std::string::npos) << cut.status();

  std::string bad = WriteDataset("badlabel", 3);
  {
    std::fstream f(bad + "/data_batch_2.bin", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(2 * kCifarRecordBytes);
    f.put(static_cast<char>(42));
  }
  auto label = Cifar10Data::Open(bad, false, 32, 1, 1, 1);
  EXPECT_NE(label.status().message().find("data_batch_2.bin' record 2 has label 42"), std::string::npos)
      << label.status();

  std::string partial = WriteDataset("partial", 2, 3);
  auto absent = Cifar10Data::Open(partial, false, 32, 1, 1, 1);
  EXPECT_NE(absent.status().message().find("data_batch_4.bin' is missing"), std::string::npos) << absent.status();
}

}  // namespace
}  // namespace ppc::runtime
