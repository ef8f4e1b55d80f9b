#include "runtime/layers.h"

#include <cmath>
#include <functional>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional.h>

#include "absl/strings/str_cat.h"
#include "ir/layer_shapes.h"
#include "ir/status_macros.h"

namespace ppc::runtime {
namespace {

namespace F = torch::nn::functional;

constexpr uint64_t kInitDomain = 0x1a17;
constexpr uint64_t kDropoutDomain = 0xd409;

uint64_t Mix(uint64_t h, uint64_t v) {
  // splitmix64 over the running hash.
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h += 0x9e3779b97f4a7c15ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

torch::Tensor Uniform(std::vector<int64_t> shape, double bound, torch::Generator& gen) {
  return torch::empty(shape).uniform_(-bound, bound, gen).set_requires_grad(true);
}

class Linear : public Layer {
 public:
  Linear(int64_t in, int64_t out, bool bias, torch::Generator gen) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // PyTorch's default init
    params_["weight"] = Uniform({out, in}, bound, gen);
    if (bias) params_["bias"] = Uniform({out}, bound, gen);
  }
  torch::Tensor Forward(const torch::Tensor& x, const ForwardContext&) override {
    auto b = params_.find("bias");
    return torch::linear(x, params_["weight"], b == params_.end() ? torch::Tensor() : b->second);
  }
  bool BatchesWeightGrads() const override { return true; }
  // dW += G^T X over the concatenated micro-batches, in one GEMM into the gradient.
  void AccumulateWeightGrads(const std::vector<torch::Tensor>& inputs,
                             const std::vector<torch::Tensor>& output_grads) override {
    torch::NoGradGuard no_grad;
    torch::Tensor& w = params_["weight"];
    const torch::Tensor x = Concat(inputs, w.size(1));
    const torch::Tensor g = Concat(output_grads, w.size(0));
    w.mutable_grad().addmm_(g.t(), x);
    auto b = params_.find("bias");
    if (b != params_.end()) b->second.mutable_grad().add_(g.sum(0));
  }

 private:
  // The micro-batches' tensors as one [rows, width] matrix.
  static torch::Tensor Concat(const std::vector<torch::Tensor>& parts, int64_t width) {
    std::vector<torch::Tensor> rows;
    for (const auto& t : parts) rows.push_back(t.reshape({-1, width}));
    return rows.size() == 1 ? rows[0] : torch::cat(rows);
  }
};

class Conv2d : public Layer {
 public:
  Conv2d(int64_t cin, int64_t cout, std::vector<int64_t> k, std::vector<int64_t> stride, std::vector<int64_t> pad,
         std::vector<int64_t> dilation, bool bias, torch::Generator gen)
      : stride_(stride), pad_(pad), dilation_(dilation) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(cin * k[0] * k[1]));
    params_["weight"] = Uniform({cout, cin, k[0], k[1]}, bound, gen);
    if (bias) params_["bias"] = Uniform({cout}, bound, gen);
  }
  torch::Tensor Forward(const torch::Tensor& x, const ForwardContext&) override {
    auto b = params_.find("bias");
    return torch::conv2d(x, params_["weight"], b == params_.end() ? torch::Tensor() : b->second, stride_, pad_,
                         dilation_);
  }
  bool BatchesWeightGrads() const override { return true; }
  // One convolution-backward-weight (and bias) over the concatenated micro-batches.
  void AccumulateWeightGrads(const std::vector<torch::Tensor>& inputs,
                             const std::vector<torch::Tensor>& output_grads) override {
    torch::NoGradGuard no_grad;
    torch::Tensor& w = params_["weight"];
    auto b = params_.find("bias");
    const bool bias = b != params_.end();
    const torch::Tensor x = inputs.size() == 1 ? inputs[0] : torch::cat(inputs);
    const torch::Tensor g = output_grads.size() == 1 ? output_grads[0] : torch::cat(output_grads);
    std::vector<int64_t> bias_sizes;
    if (bias) bias_sizes = b->second.sizes().vec();
    auto grads = at::convolution_backward(g, x, w, bias ? c10::optional<at::IntArrayRef>(bias_sizes) : c10::nullopt,
                                          stride_, pad_, dilation_, /*transposed=*/false, /*output_padding=*/{0, 0},
                                          /*groups=*/1, {false, true, bias});
    w.mutable_grad().add_(std::get<1>(grads));
    if (bias) b->second.mutable_grad().add_(std::get<2>(grads));
  }

 private:
  std::vector<int64_t> stride_, pad_, dilation_;
};

class Embedding : public Layer {
 public:
  Embedding(int64_t num, int64_t dim, torch::Generator gen) {
    params_["weight"] = torch::empty({num, dim}).normal_(0, 1, gen).set_requires_grad(true);
  }
  torch::Tensor Forward(const torch::Tensor& x, const ForwardContext&) override {
    return torch::embedding(params_["weight"], x);
  }
};

class LayerNorm : public Layer {
 public:
  LayerNorm(int64_t n, double eps) : n_(n), eps_(eps) {
    params_["weight"] = torch::ones({n}).set_requires_grad(true);
    params_["bias"] = torch::zeros({n}).set_requires_grad(true);
  }
  torch::Tensor Forward(const torch::Tensor& x, const ForwardContext&) override {
    return torch::layer_norm(x, {n_}, params_["weight"], params_["bias"], eps_);
  }

 private:
  int64_t n_;
  double eps_;
};

class Dropout : public Layer {
 public:
  explicit Dropout(double p) : p_(p) {}
  torch::Tensor Forward(const torch::Tensor& x, const ForwardContext& ctx) override {
    if (!ctx.training || p_ == 0) return x;
    torch::Generator gen = MakeGenerator({kDropoutDomain, ctx.seed, uint64_t(ctx.step), uint64_t(ctx.micro_batch),
                                          uint64_t(index_)});
    // Drawn on the CPU (the same masks on every device), then moved to x's.
    torch::Tensor mask = torch::empty(x.sizes()).bernoulli_(1.0 - p_, gen).to(x.device());
    return x * mask * (1.0 / (1.0 - p_));
  }

 private:
  double p_;
};

class Functional : public Layer {
 public:
  explicit Functional(std::function<torch::Tensor(const torch::Tensor&)> fn) : fn_(std::move(fn)) {}
  torch::Tensor Forward(const torch::Tensor& x, const ForwardContext&) override { return fn_(x); }

 private:
  std::function<torch::Tensor(const torch::Tensor&)> fn_;
};

// Fork: pushes the first tensor of the group, the same tensor object, onto its end (the
// skip branch of a residual block); autograd sums the gradients of both uses.
class Fork : public Layer {
 public:
  torch::Tensor Forward(const torch::Tensor&, const ForwardContext&) override {
    TORCH_CHECK(false, "layer ", index_, ": Fork acts on a group of tensors; run it with ForwardGroup");
  }
  std::vector<torch::Tensor> ForwardGroup(std::vector<torch::Tensor> group, const ForwardContext&) override {
    TORCH_CHECK(!group.empty(), "layer ", index_, " (Fork): empty group");
    group.push_back(group.front());
    return group;
  }
};

// Add: pops the last tensor of the group and adds it to the first.
class Add : public Layer {
 public:
  torch::Tensor Forward(const torch::Tensor&, const ForwardContext&) override {
    TORCH_CHECK(false, "layer ", index_, ": Add acts on a group of tensors; run it with ForwardGroup");
  }
  std::vector<torch::Tensor> ForwardGroup(std::vector<torch::Tensor> group, const ForwardContext&) override {
    TORCH_CHECK(group.size() >= 2, "layer ", index_, " (Add): a group of ", group.size(),
                " tensors; it needs at least two");
    group.front() = group.front() + group.back();
    group.pop_back();
    return group;
  }
};

using Builder = std::function<absl::StatusOr<std::unique_ptr<Layer>>(const ir::LayerSpec&, torch::Generator)>;

const std::map<std::string, Builder>& Registry() {
  static const auto* registry = new std::map<std::string, Builder>{
      {"AdaptiveAvgPool2d",
       [](const ir::LayerSpec& l, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         ASSIGN_OR_RETURN(auto o, ir::IntsAttr(l, "output_size", 2));
         return std::make_unique<Functional>([o](const torch::Tensor& x) { return torch::adaptive_avg_pool2d(x, o); });
       }},
      {"Add",
       [](const ir::LayerSpec&, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         return std::make_unique<Add>();
       }},
      {"Conv2d",
       [](const ir::LayerSpec& l, torch::Generator g) -> absl::StatusOr<std::unique_ptr<Layer>> {
         ASSIGN_OR_RETURN(int64_t cin, ir::IntAttr(l, "in_channels"));
         ASSIGN_OR_RETURN(int64_t cout, ir::IntAttr(l, "out_channels"));
         ASSIGN_OR_RETURN(auto k, ir::IntsAttr(l, "kernel_size", 2));
         ASSIGN_OR_RETURN(auto st, ir::IntsAttr(l, "stride", 2, 1));
         ASSIGN_OR_RETURN(auto pad, ir::IntsAttr(l, "padding", 2, 0, /*min_value=*/0));
         ASSIGN_OR_RETURN(auto dil, ir::IntsAttr(l, "dilation", 2, 1));
         ASSIGN_OR_RETURN(bool bias, ir::BoolAttr(l, "bias", true));
         return std::make_unique<Conv2d>(cin, cout, k, st, pad, dil, bias, g);
       }},
      {"Dropout",
       [](const ir::LayerSpec& l, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         ASSIGN_OR_RETURN(double p, ir::FloatAttr(l, "p", 0.5));
         return std::make_unique<Dropout>(p);
       }},
      {"Embedding",
       [](const ir::LayerSpec& l, torch::Generator g) -> absl::StatusOr<std::unique_ptr<Layer>> {
         ASSIGN_OR_RETURN(int64_t num, ir::IntAttr(l, "num_embeddings"));
         ASSIGN_OR_RETURN(int64_t dim, ir::IntAttr(l, "embedding_dim"));
         return std::make_unique<Embedding>(num, dim, g);
       }},
      {"Flatten",
       [](const ir::LayerSpec&, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         return std::make_unique<Functional>([](const torch::Tensor& x) { return x.flatten(1); });
       }},
      {"Fork",
       [](const ir::LayerSpec&, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         return std::make_unique<Fork>();
       }},
      {"GELU",
       [](const ir::LayerSpec&, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         return std::make_unique<Functional>([](const torch::Tensor& x) { return torch::gelu(x); });
       }},
      {"LayerNorm",
       [](const ir::LayerSpec& l, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         ASSIGN_OR_RETURN(int64_t n, ir::IntAttr(l, "normalized_shape"));
         ASSIGN_OR_RETURN(double eps, ir::FloatAttr(l, "eps", 1e-5));
         return std::make_unique<LayerNorm>(n, eps);
       }},
      {"Linear",
       [](const ir::LayerSpec& l, torch::Generator g) -> absl::StatusOr<std::unique_ptr<Layer>> {
         ASSIGN_OR_RETURN(int64_t in, ir::IntAttr(l, "in_features"));
         ASSIGN_OR_RETURN(int64_t out, ir::IntAttr(l, "out_features"));
         ASSIGN_OR_RETURN(bool bias, ir::BoolAttr(l, "bias", true));
         return std::make_unique<Linear>(in, out, bias, g);
       }},
      {"MaxPool2d",
       [](const ir::LayerSpec& l, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         ASSIGN_OR_RETURN(auto k, ir::IntsAttr(l, "kernel_size", 2));
         ASSIGN_OR_RETURN(auto st, ir::IntsAttr(l, "stride", 2, k[0]));
         ASSIGN_OR_RETURN(auto pad, ir::IntsAttr(l, "padding", 2, 0, /*min_value=*/0));
         ASSIGN_OR_RETURN(auto dil, ir::IntsAttr(l, "dilation", 2, 1));
         ASSIGN_OR_RETURN(bool ceil_mode, ir::BoolAttr(l, "ceil_mode", false));
         return std::make_unique<Functional>([k, st, pad, dil, ceil_mode](const torch::Tensor& x) {
           return torch::max_pool2d(x, k, st, pad, dil, ceil_mode);
         });
       }},
      {"ReLU",
       [](const ir::LayerSpec&, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         return std::make_unique<Functional>([](const torch::Tensor& x) { return torch::relu(x); });
       }},
      {"Tanh",
       [](const ir::LayerSpec&, torch::Generator) -> absl::StatusOr<std::unique_ptr<Layer>> {
         return std::make_unique<Functional>([](const torch::Tensor& x) { return torch::tanh(x); });
       }},
  };
  return *registry;
}

}  // namespace

void Layer::AccumulateWeightGrads(const std::vector<torch::Tensor>&, const std::vector<torch::Tensor>&) {
  TORCH_CHECK(false, "layer ", index_, ": no batched weight gradient");
}

std::vector<torch::Tensor> Layer::ForwardGroup(std::vector<torch::Tensor> group, const ForwardContext& ctx) {
  TORCH_CHECK(!group.empty(), "layer ", index_, ": empty group");
  group.front() = Forward(group.front(), ctx);
  return group;
}

torch::Generator MakeGenerator(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x5eed;
  for (uint64_t v : values) h = Mix(h, v);
  return at::make_generator<at::CPUGeneratorImpl>(h);
}

absl::StatusOr<std::unique_ptr<Layer>> BuildLayer(const ir::LayerSpec& spec, int global_index, uint64_t seed) {
  auto it = Registry().find(spec.kind());
  if (it == Registry().end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", global_index, " '", spec.name(), "': kind '", spec.kind(), "' has no runtime builder"));
  }
  torch::NoGradGuard no_grad;
  auto layer = it->second(spec, MakeGenerator({kInitDomain, seed, uint64_t(global_index)}));
  if (!layer.ok()) return Annotate(layer.status(), absl::StrCat("layer ", global_index));
  (*layer)->index_ = global_index;
  return layer;
}

std::vector<std::string> RuntimeLayerKinds() {
  std::vector<std::string> kinds;
  for (const auto& [k, b] : Registry()) kinds.push_back(k);
  return kinds;
}

}  // namespace ppc::runtime
