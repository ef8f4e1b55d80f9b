// The compiler's shape rules (ir/layer_shapes) and the runtime's builders must agree
// on every kind: same kinds, same output shapes, same parameter counts.
#include "runtime/layers.h"

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
