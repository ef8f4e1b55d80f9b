// The compiler's shape rules (ir/layer_shapes) and the runtime's builders must agree
// on every kind: same kinds, same output shapes, same parameter counts.
#include "runtime/layers.h"

#include <random>

#include "gtest/gtest.h"
#include "ir/layer_shapes.h"

namespace ppc::runtime {
namespace {

struct Case {
  std::string kind;
  std::map<std::string, int64_t> ints;
  std::vector<int64_t> input;
  ir::DType dtype = ir::FLOAT32;
};

TEST(Layers, RegistriesCoverTheSameKinds) { EXPECT_EQ(RuntimeLayerKinds(), ir::LayerKinds()); }

TEST(Layers, ShapesAndParameterCountsMatchTheCompiler) {
  std::vector<Case> cases = {
      {"AdaptiveAvgPool2d", {{"output_size", 6}}, {4, 13, 13}},
      {"Conv2d", {{"in_channels", 3}, {"out_channels", 8}, {"kernel_size", 5}, {"stride", 2}, {"padding", 2}}, {3, 17, 17}},
      {"Dropout", {}, {7}},
      {"Embedding", {{"num_embeddings", 11}, {"embedding_dim", 5}}, {3}, ir::INT64},
      {"Flatten", {}, {2, 3, 4}},
      {"GELU", {}, {5}},
      {"LayerNorm", {{"normalized_shape", 6}}, {3, 6}},
      {"Linear", {{"in_features", 6}, {"out_features", 3}}, {2, 6}},
      {"MaxPool2d", {{"kernel_size", 3}, {"stride", 2}}, {2, 9, 9}},
      {"ReLU", {}, {5}},
      {"Tanh", {}, {5}},
  };
  ASSERT_EQ(cases.size(), ir::LayerKinds().size());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.kind);
    ir::LayerSpec spec;
    spec.set_name("x");
    spec.set_kind(c.kind);
    for (auto& [k, v] : c.ints) (*spec.mutable_attrs())[k].set_i(v);
    ir::TensorSpec in;
    for (auto d : c.input) in.add_shape(d);
    in.set_dtype(c.dtype);
    auto info = ir::InferLayer(spec, in);
    ASSERT_TRUE(info.ok()) << info.status();
    auto layer = BuildLayer(spec, 3, 42);
    ASSERT_TRUE(layer.ok()) << layer.status();
    int64_t params = 0;
    for (auto& [n, p] : (*layer)->params()) params += p.numel();
    EXPECT_EQ(params, info->param_count);
    std::vector<int64_t> shape{2};
    shape.insert(shape.end(), c.input.begin(), c.input.end());
    torch::Tensor x = c.dtype == ir::INT64 ? torch::randint(0, 5, shape) : torch::randn(shape);
    torch::Tensor y = (*layer)->Forward(x, ForwardContext{1, 0, 0, true});
    std::vector<int64_t> want{2};
    want.insert(want.end(), info->output.shape().begin(), info->output.shape().end());
    EXPECT_EQ(y.sizes().vec(), want);
  }
}

// Property: whatever the compiler's shape inference accepts, the runtime runs, with
// the inferred shape. Random windows (kernel, stride, padding, dilation, ceil_mode) over
// random small inputs, including ones that leave nothing (which inference must refuse).
TEST(Layers, EverySpecTheCompilerAcceptsRunsWithTheInferredShape) {
  std::mt19937 rng(20261125);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int accepted = 0, refused = 0;
  for (int trial = 0; trial < 600; ++trial) {
    ir::LayerSpec spec;
    spec.set_name("random");
    const int kind = trial % 3;
    const int64_t h = pick(1, 12), w = pick(1, 12), c = pick(1, 3);
    auto set = [&](const char* key, int64_t v) { (*spec.mutable_attrs())[key].set_i(v); };
    auto set2 = [&](const char* key, int64_t a, int64_t b) {
      auto* ints = (*spec.mutable_attrs())[key].mutable_ints();
      ints->add_values(a);
      ints->add_values(b);
    };
    if (kind == 0) {
      spec.set_kind("Conv2d");
      set("in_channels", c);
      set("out_channels", pick(1, 3));
      set2("kernel_size", pick(1, 5), pick(1, 5));
      set2("stride", pick(1, 3), pick(1, 3));
      set2("padding", pick(0, 2), pick(0, 2));
      set2("dilation", pick(1, 2), pick(1, 2));
    } else if (kind == 1) {
      spec.set_kind("MaxPool2d");
      set2("kernel_size", pick(1, 4), pick(1, 4));
      set2("stride", pick(1, 3), pick(1, 3));
      set2("padding", pick(0, 2), pick(0, 2));
      set2("dilation", pick(1, 2), pick(1, 2));
      (*spec.mutable_attrs())["ceil_mode"].set_b(pick(0, 1) == 1);
    } else {
      spec.set_kind("AdaptiveAvgPool2d");
      set2("output_size", pick(1, 5), pick(1, 5));
    }
    ir::TensorSpec in;
    in.set_dtype(ir::FLOAT32);
    for (int64_t d : {c, h, w}) in.add_shape(d);
    auto info = ir::InferLayer(spec, in);
    if (!info.ok()) {
      ++refused;
      continue;
    }
    ++accepted;
    SCOPED_TRACE(spec.DebugString() + " input " + ir::ShapeString(in));
    auto layer = BuildLayer(spec, 0, 1);
    ASSERT_TRUE(layer.ok()) << layer.status();
    torch::Tensor y;
    try {
      y = (*layer)->Forward(torch::randn({2, c, h, w}), ForwardContext{1, 0, 0, true});
    } catch (const c10::Error& e) {
      FAIL() << "the compiler accepted what the runtime cannot run: " << e.what_without_backtrace();
    }
    std::vector<int64_t> want{2};
    want.insert(want.end(), info->output.shape().begin(), info->output.shape().end());
    EXPECT_EQ(y.sizes().vec(), want);
  }
  // Both sides of the property were exercised.
  EXPECT_GT(accepted, 200);
  EXPECT_GT(refused, 20);
}

TEST(Layers, AttributesOutsideTheirRangeAreRefusedInEveryForm) {
  ir::TensorSpec in;
  in.set_dtype(ir::FLOAT32);
  for (int64_t d : {3, 8, 8}) in.add_shape(d);
  auto refused = [&](const char* kind, const char* key, ir::AttrValue value) {
    ir::LayerSpec spec;
    spec.set_name("x");
    spec.set_kind(kind);
    if (std::string(kind) == "Conv2d") {
      (*spec.mutable_attrs())["in_channels"].set_i(3);
      (*spec.mutable_attrs())["out_channels"].set_i(2);
    }
    (*spec.mutable_attrs())["kernel_size"].set_i(2);
    // The same spec with a valid value is accepted: the refusal is the value's.
    EXPECT_TRUE(ir::InferLayer(spec, in).ok()) << kind;
    (*spec.mutable_attrs())[key] = value;
    return !ir::InferLayer(spec, in).ok();
  };
  ir::AttrValue zero, negative, list_zero;
  zero.set_i(0);
  negative.set_i(-3);
  list_zero.mutable_ints()->add_values(1);
  list_zero.mutable_ints()->add_values(0);
  for (const char* kind : {"Conv2d", "MaxPool2d"}) {
    SCOPED_TRACE(kind);
    EXPECT_TRUE(refused(kind, "stride", zero));  // was a division by zero
    EXPECT_TRUE(refused(kind, "stride", list_zero));
    EXPECT_TRUE(refused(kind, "kernel_size", zero));
    EXPECT_TRUE(refused(kind, "padding", negative));
    EXPECT_TRUE(refused(kind, "dilation", zero));
  }
  EXPECT_TRUE(refused("Conv2d", "out_channels", negative));
}

TEST(Layers, InitialWeightsDependOnlyOnSeedAndIndex) {
  ir::LayerSpec spec;
  spec.set_name("fc");
  spec.set_kind("Linear");
  (*spec.mutable_attrs())["in_features"].set_i(4);
  (*spec.mutable_attrs())["out_features"].set_i(3);
  auto a = BuildLayer(spec, 5, 7), b = BuildLayer(spec, 5, 7), c = BuildLayer(spec, 6, 7), d = BuildLayer(spec, 5, 8);
  EXPECT_TRUE(torch::equal((*a)->params()["weight"], (*b)->params()["weight"]));
  EXPECT_FALSE(torch::equal((*a)->params()["weight"], (*c)->params()["weight"]));
  EXPECT_FALSE(torch::equal((*a)->params()["weight"], (*d)->params()["weight"]));
  // PyTorch's default bound 1/sqrt(in_features).
  EXPECT_LE((*a)->params()["weight"].abs().max().item<float>(), 0.5f);
}

TEST(Layers, DropoutMasksDependOnStepMicroBatchAndLayerOnly) {
  ir::LayerSpec spec;
  spec.set_name("drop");
  spec.set_kind("Dropout");
  (*spec.mutable_attrs())["p"].set_f(0.5);
  auto layer = BuildLayer(spec, 2, 1);
  torch::Tensor x = torch::ones({4, 64});
  auto y1 = (*layer)->Forward(x, {1, 3, 5, true});
  auto y2 = (*layer)->Forward(x, {1, 3, 5, true});
  auto y3 = (*layer)->Forward(x, {1, 3, 6, true});
  EXPECT_TRUE(torch::equal(y1, y2));
  EXPECT_FALSE(torch::equal(y1, y3));
  // Kept values are scaled by 1/(1-p).
  EXPECT_NEAR(y1.max().item<float>(), 2.0f, 1e-6);
  EXPECT_TRUE(torch::equal((*layer)->Forward(x, {1, 3, 5, false}), x));
}

}  // namespace
}  // namespace ppc::runtime
