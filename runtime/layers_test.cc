// The compiler's shape rules (ir/layer_shapes) and the runtime's builders must agree
// on every kind: same kinds, same output groups, same parameter counts.
#include "runtime/layers.h"

#include <random>

#include <torch/autograd.h>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ir/layer_shapes.h"
#include "ir/limits.h"

namespace ppc::runtime {
namespace {

struct Case {
  std::string kind;
  std::map<std::string, int64_t> ints;
  std::vector<int64_t> input;
  ir::DType dtype = ir::FLOAT32;
  // The input group's second tensor: a copy of the first for Add, a pass-through
  // FLOAT32[3] for the others; none for Fork.
  bool pair = true;
};

ir::TensorSpec Spec(std::vector<int64_t> shape, const std::string& name, ir::DType dtype = ir::FLOAT32) {
  ir::TensorSpec s;
  for (int64_t d : shape) s.add_shape(d);
  s.set_dtype(dtype);
  s.set_name(name);
  return s;
}

ir::LayerSpec LayerOf(const std::string& name, const std::string& kind, std::map<std::string, int64_t> ints = {}) {
  ir::LayerSpec spec;
  spec.set_name(name);
  spec.set_kind(kind);
  for (auto& [k, v] : ints) (*spec.mutable_attrs())[k].set_i(v);
  return spec;
}

std::vector<std::string> Names(const std::vector<ir::TensorSpec>& group) {
  std::vector<std::string> names;
  for (const auto& t : group) names.push_back(t.name());
  return names;
}

std::vector<std::string> Shapes(const std::vector<ir::TensorSpec>& group) {
  std::vector<std::string> shapes;
  for (const auto& t : group) shapes.push_back(ir::ShapeString(t));
  return shapes;
}

TEST(Layers, RegistriesCoverTheSameKinds) { EXPECT_EQ(RuntimeLayerKinds(), ir::LayerKinds()); }

TEST(Layers, ShapesAndParameterCountsMatchTheCompiler) {
  std::vector<Case> cases = {
      {"AdaptiveAvgPool2d", {{"output_size", 6}}, {4, 13, 13}},
      {"Add", {}, {3, 5}},
      {"Conv2d", {{"in_channels", 3}, {"out_channels", 8}, {"kernel_size", 5}, {"stride", 2}, {"padding", 2}}, {3, 17, 17}},
      {"Dropout", {}, {7}},
      {"Embedding", {{"num_embeddings", 11}, {"embedding_dim", 5}}, {3}, ir::INT64},
      {"Flatten", {}, {2, 3, 4}},
      {"Fork", {}, {2, 5}, ir::FLOAT32, /*pair=*/false},
      {"GELU", {}, {5}},
      {"LayerNorm", {{"normalized_shape", 6}}, {3, 6}},
      {"Linear", {{"in_features", 6}, {"out_features", 3}}, {2, 6}},
      {"Linear", {{"in_features", 6}, {"out_features", 3}}, {2, 6}, ir::FLOAT32, /*pair=*/false},
      {"MaxPool2d", {{"kernel_size", 3}, {"stride", 2}}, {2, 9, 9}},
      {"ReLU", {}, {5}},
      {"Tanh", {}, {5}},
  };
  std::set<std::string> covered;
  for (const Case& c : cases) covered.insert(c.kind);
  EXPECT_EQ(std::vector<std::string>(covered.begin(), covered.end()), ir::LayerKinds());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.kind + (c.pair ? " on a pair" : " on one tensor"));
    ir::LayerSpec spec = LayerOf("x", c.kind, c.ints);
    std::vector<ir::TensorSpec> in = {Spec(c.input, "input", c.dtype)};
    if (c.pair) in.push_back(c.kind == "Add" ? Spec(c.input, "skip") : Spec({3}, "other"));
    auto info = ir::InferGroup(spec, in);
    ASSERT_TRUE(info.ok()) << info.status();
    auto layer = BuildLayer(spec, 3, 42);
    ASSERT_TRUE(layer.ok()) << layer.status();
    int64_t params = 0;
    for (auto& [n, p] : (*layer)->params()) params += p.numel();
    EXPECT_EQ(params, info->param_count);
    std::vector<torch::Tensor> group;
    for (const ir::TensorSpec& t : in) {
      std::vector<int64_t> shape{2};
      shape.insert(shape.end(), t.shape().begin(), t.shape().end());
      group.push_back(t.dtype() == ir::INT64 ? torch::randint(0, 5, shape) : torch::randn(shape));
    }
    const std::vector<torch::Tensor> x = group;
    std::vector<torch::Tensor> y = (*layer)->ForwardGroup(group, ForwardContext{1, 0, 0, true});
    ASSERT_EQ(y.size(), info->outputs.size());
    for (size_t t = 0; t < y.size(); ++t) {
      std::vector<int64_t> want{2};
      want.insert(want.end(), info->outputs[t].shape().begin(), info->outputs[t].shape().end());
      EXPECT_EQ(y[t].sizes().vec(), want) << "tensor " << t;
      EXPECT_EQ(y[t].scalar_type(), info->outputs[t].dtype() == ir::INT64 ? torch::kLong : torch::kFloat);
    }
    // The first tensor is the layer's (Fork's first keeps its name); the rest pass through.
    EXPECT_EQ(info->outputs[0].name(), c.kind == "Fork" ? "input" : "x");
    if (c.pair && c.kind != "Add") {
      EXPECT_TRUE(y[1].is_same(x[1]));
      EXPECT_EQ(info->outputs[1].DebugString(), in[1].DebugString());
    }
    // The single-tensor forms agree with the group's first tensor.
    if (!ir::IsGroupKind(c.kind)) {
      auto one = ir::InferLayer(spec, in[0]);
      ASSERT_TRUE(one.ok()) << one.status();
      EXPECT_EQ(one->output.DebugString(), info->outputs[0].DebugString());
      EXPECT_EQ(one->param_count, info->param_count);
      EXPECT_EQ(one->flops, info->flops);
    }
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

TEST(Layers, ForkLinearAddGroupShapesAndNames) {
  std::vector<ir::TensorSpec> group = {Spec({4}, "input")};
  auto fork = ir::InferGroup(LayerOf("skip", "Fork"), group);
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ(Names(fork->outputs), (std::vector<std::string>{"input", "skip"}));
  EXPECT_EQ(Shapes(fork->outputs), (std::vector<std::string>{"FLOAT32[4]", "FLOAT32[4]"}));
  EXPECT_EQ(fork->param_count, 0);
  EXPECT_EQ(fork->flops, 0);
  EXPECT_TRUE(fork->weight_shape.empty());

  auto fc = ir::InferGroup(LayerOf("fc", "Linear", {{"in_features", 4}, {"out_features", 4}}), fork->outputs);
  ASSERT_TRUE(fc.ok()) << fc.status();
  EXPECT_EQ(Names(fc->outputs), (std::vector<std::string>{"fc", "skip"}));
  EXPECT_EQ(Shapes(fc->outputs), (std::vector<std::string>{"FLOAT32[4]", "FLOAT32[4]"}));
  EXPECT_EQ(fc->param_count, 20);
  EXPECT_EQ(fc->weight_shape, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(fc->flops, 16);

  auto add = ir::InferGroup(LayerOf("add", "Add"), fc->outputs);
  ASSERT_TRUE(add.ok()) << add.status();
  EXPECT_EQ(Names(add->outputs), (std::vector<std::string>{"add"}));
  EXPECT_EQ(Shapes(add->outputs), (std::vector<std::string>{"FLOAT32[4]"}));
  EXPECT_EQ(add->param_count, 0);
  EXPECT_EQ(add->flops, 4);

  // Group kinds are registered, without attributes, on both sides.
  EXPECT_TRUE(ir::IsGroupKind("Fork"));
  EXPECT_TRUE(ir::IsGroupKind("Add"));
  EXPECT_FALSE(ir::IsGroupKind("Linear"));
  EXPECT_TRUE(ir::LayerAttributes("Fork").empty());
  EXPECT_TRUE(ir::LayerAttributes("Add").empty());
}

TEST(Layers, GroupErrorsNameTheLayer) {
  auto error = [](const ir::LayerSpec& layer, const std::vector<ir::TensorSpec>& group) {
    auto info = ir::InferGroup(layer, group);
    EXPECT_FALSE(info.ok());
    if (info.ok()) return std::string();
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(info.status().message().find("'" + layer.name() + "'"), std::string::npos) << info.status();
    return std::string(info.status().message());
  };
  const ir::TensorSpec x = Spec({4}, "input");
  // Add on a group of one tensor.
  EXPECT_NE(error(LayerOf("add", "Add"), {x}).find("one tensor"), std::string::npos);
  // Mismatched shapes, and int64 (no gradient to add).
  std::string msg = error(LayerOf("add", "Add"), {Spec({3}, "fc"), x});
  EXPECT_NE(msg.find("FLOAT32[3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("FLOAT32[4]"), std::string::npos) << msg;
  error(LayerOf("add", "Add"), {Spec({2, 2}, "fc"), x});
  error(LayerOf("add", "Add"), {Spec({4}, "ids", ir::INT64), Spec({4}, "skip", ir::INT64)});
  // Fork up to the limit, not beyond.
  std::vector<ir::TensorSpec> group(ir::kMaxGroupTensors - 1, x);
  auto full = ir::InferGroup(LayerOf("fork", "Fork"), group);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(static_cast<int64_t>(full->outputs.size()), ir::kMaxGroupTensors);
  msg = error(LayerOf("fork", "Fork"), full->outputs);
  EXPECT_NE(msg.find(absl::StrCat(ir::kMaxGroupTensors + 1)), std::string::npos) << msg;
  // No input group at all, or one beyond the limit.
  error(LayerOf("relu", "ReLU"), {});
  error(LayerOf("relu", "ReLU"), std::vector<ir::TensorSpec>(ir::kMaxGroupTensors + 1, x));
  // A bad pass-through tensor, an attribute on a kind without any, an unknown kind.
  error(LayerOf("relu", "ReLU"), {x, Spec({0}, "empty")});
  error(LayerOf("fork", "Fork", {{"n", 2}}), {x});
  error(LayerOf("res", "Residual"), {x});
  // The single-tensor form refuses group kinds, saying why.
  for (const char* kind : {"Fork", "Add"}) {
    auto one = ir::InferLayer(LayerOf("g", kind), x);
    ASSERT_FALSE(one.ok());
    EXPECT_NE(one.status().message().find("group"), std::string::npos) << one.status();
    EXPECT_NE(one.status().message().find("'g'"), std::string::npos) << one.status();
  }
}

// Fork, Linear, ReLU, Linear, Add run through ForwardGroup is x + lin2(relu(lin1(x))),
// forward and backward: the skip branch's gradient is summed with the block's.
TEST(Layers, ResidualBlockFromForkAndAddMatchesTheDirectExpression) {
  const std::vector<ir::LayerSpec> specs = {
      LayerOf("skip", "Fork"),
      LayerOf("fc1", "Linear", {{"in_features", 6}, {"out_features", 5}}),
      LayerOf("act", "ReLU"),
      LayerOf("fc2", "Linear", {{"in_features", 5}, {"out_features", 6}}),
      LayerOf("add", "Add"),
  };
  std::vector<std::unique_ptr<Layer>> layers;
  std::vector<ir::TensorSpec> shapes = {Spec({6}, "input")};
  for (size_t i = 0; i < specs.size(); ++i) {
    auto layer = BuildLayer(specs[i], static_cast<int>(i), 11);
    ASSERT_TRUE(layer.ok()) << layer.status();
    layers.push_back(std::move(*layer));
    auto info = ir::InferGroup(specs[i], shapes);
    ASSERT_TRUE(info.ok()) << info.status();
    shapes = info->outputs;
  }
  EXPECT_EQ(Names(shapes), (std::vector<std::string>{"add"}));
  // Fork's single-tensor Forward refuses to run.
  EXPECT_THROW(layers[0]->Forward(torch::zeros({1, 6}), ForwardContext{}), c10::Error);
  EXPECT_THROW(layers[4]->Forward(torch::zeros({1, 6}), ForwardContext{}), c10::Error);

  torch::manual_seed(3);
  const torch::Tensor x0 = torch::randn({3, 6});
  const torch::Tensor upstream = torch::randn({3, 6});
  torch::Tensor& w1 = layers[1]->params()["weight"];
  torch::Tensor& b1 = layers[1]->params()["bias"];
  torch::Tensor& w2 = layers[3]->params()["weight"];
  torch::Tensor& b2 = layers[3]->params()["bias"];

  torch::Tensor x = x0.clone().set_requires_grad(true);
  std::vector<torch::Tensor> group = {x};
  const ForwardContext ctx{1, 0, 0, true};
  const std::vector<size_t> sizes = {2, 2, 2, 2, 1};  // the group after each layer
  for (size_t i = 0; i < layers.size(); ++i) {
    group = layers[i]->ForwardGroup(std::move(group), ctx);
    ASSERT_EQ(group.size(), sizes[i]) << specs[i].name();
    if (i == 0) EXPECT_TRUE(group[0].is_same(group[1]));  // the same tensor, not a copy
  }
  ASSERT_EQ(group.size(), 1u);
  const torch::Tensor y = group[0];
  y.backward(upstream);
  const torch::Tensor grad_x = x.grad().clone();
  const torch::Tensor grad_w1 = w1.grad().clone(), grad_b2 = b2.grad().clone();
  for (torch::Tensor* p : {&w1, &b1, &w2, &b2}) p->mutable_grad() = torch::Tensor();

  torch::Tensor xd = x0.clone().set_requires_grad(true);
  const torch::Tensor yd = xd + torch::linear(torch::relu(torch::linear(xd, w1, b1)), w2, b2);
  yd.backward(upstream);

  EXPECT_TRUE(torch::equal(y, yd));  // the same ops on the same numbers
  EXPECT_TRUE(torch::allclose(grad_x, xd.grad(), /*rtol=*/1e-6, /*atol=*/1e-7));
  EXPECT_TRUE(torch::allclose(grad_w1, w1.grad(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(grad_b2, b2.grad(), 1e-6, 1e-7));
  // The skip branch counts: the gradient is not the block's alone.
  EXPECT_FALSE(torch::allclose(grad_x, xd.grad() - upstream, 1e-6, 1e-7));
}


// The batched weight gradient of a Linear and a Conv2d (with and without bias, a Conv2d
// with stride, padding and dilation) over three micro-batches adds to .grad exactly what
// autograd's weight gradients of the three micro-batches add, one after another; the
// layers without one say so.
TEST(Layers, BatchedWeightGradsEqualTheSumOfEachMicroBatchsWeightGradients) {
  struct BatchCase {
    ir::LayerSpec spec;
    std::vector<int64_t> input;  // one micro-batch, with its batch dimension
  };
  auto no_bias = [](ir::LayerSpec spec) {
    (*spec.mutable_attrs())["bias"].set_b(false);
    return spec;
  };
  std::vector<BatchCase> cases = {
      {LayerOf("fc", "Linear", {{"in_features", 7}, {"out_features", 5}}), {4, 7}},
      {no_bias(LayerOf("fc", "Linear", {{"in_features", 7}, {"out_features", 5}})), {2, 3, 7}},
      {LayerOf("conv", "Conv2d", {{"in_channels", 3}, {"out_channels", 4}, {"kernel_size", 3}, {"stride", 2},
                                  {"padding", 1}, {"dilation", 2}}),
       {2, 3, 9, 9}},
      {no_bias(LayerOf("conv", "Conv2d", {{"in_channels", 2}, {"out_channels", 3}, {"kernel_size", 3}})),
       {3, 2, 6, 6}},
  };
  for (const BatchCase& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.spec.kind(), " ", c.spec.ShortDebugString()));
    auto layer = BuildLayer(c.spec, 3, 1138);
    ASSERT_TRUE(layer.ok()) << layer.status();
    Layer& l = **layer;
    ASSERT_TRUE(l.BatchesWeightGrads());
    torch::manual_seed(7);
    std::vector<torch::Tensor> inputs, grads;
    std::map<std::string, torch::Tensor> want;
    for (auto& [name, p] : l.params()) want[name] = torch::zeros_like(p);
    for (int mb = 0; mb < 3; ++mb) {
      torch::Tensor x = torch::randn(c.input);
      torch::Tensor y = l.Forward(x, ForwardContext{});
      torch::Tensor g = torch::randn(y.sizes());
      std::vector<torch::Tensor> params;
      for (auto& [name, p] : l.params()) params.push_back(p);
      auto dw = torch::autograd::grad({y}, params, {g});
      size_t k = 0;
      for (auto& [name, p] : l.params()) want[name] += dw[k++];
      inputs.push_back(x);
      grads.push_back(g);
    }
    for (auto& [name, p] : l.params()) p.mutable_grad() = torch::full_like(p, 0.5);  // accumulated into, not replaced
    l.AccumulateWeightGrads(inputs, grads);
    for (auto& [name, p] : l.params()) {
      ASSERT_TRUE(p.grad().defined()) << name;
      const double err = (p.grad() - 0.5 - want[name]).abs().max().item<double>();
      EXPECT_LT(err, 1e-4) << name;
      EXPECT_GT(want[name].abs().max().item<double>(), 0.1) << name << ": the case must have a gradient";
    }
  }
  for (const char* kind : {"LayerNorm", "Embedding"}) {
    ir::LayerSpec spec = LayerOf("l", kind, {{"normalized_shape", 4}, {"num_embeddings", 5}, {"embedding_dim", 4}});
    auto layer = BuildLayer(spec, 0, 1);
    ASSERT_TRUE(layer.ok()) << kind << ": " << layer.status();
    EXPECT_FALSE((*layer)->BatchesWeightGrads()) << kind;
  }
}

}  // namespace
}  // namespace ppc::runtime
