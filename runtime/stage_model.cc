#include "runtime/stage_model.h"

#include <algorithm>
#include <optional>

#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>

#include "absl/strings/str_cat.h"

namespace ppc::runtime {

namespace {

// The FLOAT32 members of a group (what gradients flow through), in order.
Group Differentiable(const Group& group) {
  Group out;
  for (const auto& t : group)
    if (t.is_floating_point()) out.push_back(t);
  return out;
}

// Gradients of the FLOAT32 inputs, zeros where an input did not matter.
Group InputGrads(const Group& inputs, const Group& grads) {
  Group out;
  for (size_t k = 0; k < inputs.size(); ++k) out.push_back(grads[k].defined() ? grads[k] : torch::zeros_like(inputs[k]));
  return out;
}

}  // namespace

std::unique_ptr<StageModel> StageModel::Build(const ir::Plan& plan, const ir::Grid& grid, int stage,
                                              std::vector<std::string>& problems) {
  std::unique_ptr<StageModel> model(new StageModel(grid));
  const uint64_t seed = plan.config().seed();
  model->loss_kind_ = plan.model().loss();
  model->micro_batches_ = plan.config().micro_batches();
  model->checkpoint_interval_ = plan.config().activation_checkpoint_interval();
  auto& chunks = model->chunks_;
  auto& layers = model->layers_;
  auto& tied = model->tied_;
  for (int c = 0; c < grid.chunks(); ++c) {
    const int v = grid.VirtualOf(stage, c);
    const auto& vs = plan.placement().virtual_stages(v);
    chunks.push_back({v, vs.begin(), vs.end(), 0, 0, {}});
  }
  auto holds = [&](int layer) {
    for (const Chunk& c : chunks)
      if (layer >= c.begin && layer < c.end) return true;
    return false;
  };
  std::map<std::string, int> first_of_tie;
  for (int l = 0; l < plan.model().layers_size(); ++l) {
    const auto& key = plan.model().layers(l).tie_key();
    if (!key.empty() && !first_of_tie.count(key)) first_of_tie[key] = l;
  }
  for (Chunk& chunk : chunks) {
    chunk.first_layer = static_cast<int>(layers.size());
    for (int l = chunk.begin; l < chunk.end; ++l) {
      const ir::LayerSpec& spec = plan.model().layers(l);
      auto layer = BuildLayer(spec, l, seed);
      if (!layer.ok()) {
        problems.push_back(std::string(layer.status().message()));
        continue;
      }
      int64_t count = 0;
      for (auto& [name, p] : (*layer)->params()) count += p.numel();
      if (count != spec.param_count()) {
        problems.push_back(absl::StrCat("layer ", l, " '", spec.name(), "' has ", count,
                                        " parameters but the plan says ", spec.param_count()));
      }
      if (!spec.tie_key().empty()) {
        auto it = tied.find(spec.tie_key());
        if (it == tied.end()) {
          torch::Tensor w = (*layer)->params()["weight"];
          const int first = first_of_tie[spec.tie_key()];
          if (first != l) {
            auto origin = BuildLayer(plan.model().layers(first), first, seed);
            if (!origin.ok()) {
              problems.push_back(std::string(origin.status().message()));
              continue;
            }
            w = (*origin)->params()["weight"];
          }
          it = tied.emplace(spec.tie_key(), w).first;
        }
        if (!holds(first_of_tie[spec.tie_key()])) model->not_owned_.insert(it->second.unsafeGetTensorImpl());
        if (it->second.sizes() != (*layer)->params()["weight"].sizes()) {
          problems.push_back(absl::StrCat("layer ", l, " tie '", spec.tie_key(), "' weight shape differs"));
        } else {
          (*layer)->params()["weight"] = it->second;
        }
      }
      layers.push_back(*std::move(layer));
    }
    chunk.end_layer = static_cast<int>(layers.size());
  }
  std::set<const void*> seen;
  for (auto& layer : layers)
    for (auto& [name, p] : layer->params())
      if (seen.insert(p.unsafeGetTensorImpl()).second) model->unique_params_.push_back(p);
  for (Chunk& chunk : chunks) {
    std::set<const void*> in_chunk;
    for (int l = chunk.first_layer; l < chunk.end_layer; ++l)
      for (auto& [name, p] : layers[l]->params())
        if (in_chunk.insert(p.unsafeGetTensorImpl()).second) chunk.params.push_back(p);
  }
  return model;
}

void StageModel::Flatten(int64_t size, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  // The layers were built (and initialised) on the CPU; copying into the buffers moves
  // every parameter to `device` with the same values.
  flat_params_ = torch::zeros({size}, torch::TensorOptions().device(device));
  flat_grads_ = torch::zeros({size}, torch::TensorOptions().device(device));
  std::map<const void*, torch::Tensor> moved;  // old parameter -> its view
  int64_t off = 0;
  for (auto& p : unique_params_) {
    const int64_t n = p.numel();
    // detach(): plain aliases of the buffers (not autograd views), so that the view is a
    // leaf that can require grad and its .grad can be zeroed in place.
    torch::Tensor view = flat_params_.narrow(0, off, n).view(p.sizes()).detach();
    view.copy_(p);
    view.set_requires_grad(true);
    view.mutable_grad() = flat_grads_.narrow(0, off, n).view(p.sizes()).detach();
    moved[p.unsafeGetTensorImpl()] = view;
    off += n;
  }
  auto rebind = [&](torch::Tensor& t) { t = moved.at(t.unsafeGetTensorImpl()); };
  for (auto& layer : layers_)
    for (auto& [name, p] : layer->params()) rebind(p);
  for (auto& [key, w] : tied_) rebind(w);
  std::set<const void*> not_owned;
  for (const void* impl : not_owned_) not_owned.insert(moved.at(impl).unsafeGetTensorImpl());
  not_owned_ = std::move(not_owned);
  for (auto& p : unique_params_) rebind(p);
  for (auto& chunk : chunks_)
    for (auto& p : chunk.params) rebind(p);
}

Group StageModel::RunLayers(int begin, int end, Group x, const ForwardContext& ctx) const {
  for (int l = begin; l < end; ++l) x = layers_[l]->ForwardGroup(std::move(x), ctx);
  return x;
}

torch::Tensor StageModel::Loss(const torch::Tensor& output, const torch::Tensor& labels) const {
  if (loss_kind_ == ir::CROSS_ENTROPY) {
    return torch::nn::functional::cross_entropy(output.reshape({-1, output.size(-1)}), labels.reshape({-1}));
  }
  return torch::mse_loss(output, labels);
}

Group StageModel::Forward(int vs, Group inputs, const torch::Tensor& labels, const ForwardContext& ctx,
                          SavedForward* saved, torch::Tensor* loss) const {
  const Chunk& chunk = ChunkOf(vs);
  const bool last = grid_.IsLast(vs) && labels.defined();
  if (saved == nullptr) {
    torch::NoGradGuard no_grad;
    Group y = RunLayers(chunk.first_layer, chunk.end_layer, std::move(inputs), ctx);
    if (last) *loss = Loss(y[0], labels);
    return y;
  }
  if (!grid_.IsFirst(vs)) {
    for (auto& t : inputs)
      if (t.is_floating_point()) t.requires_grad_(true);
  }
  saved->Clear();
  saved->inputs = inputs;
  saved->ctx = ctx;
  if (checkpoint_interval_ > 0) {
    // Keep only each segment's inputs; the backward recomputes the segment. Dropout
    // masks are a pure function of (seed, step, micro-batch, layer), so recomputation matches.
    torch::NoGradGuard no_grad;
    Group x = std::move(inputs);
    for (int b = chunk.first_layer; b < chunk.end_layer; b += checkpoint_interval_) {
      saved->segment_inputs.push_back(x);
      x = RunLayers(b, std::min(chunk.end_layer, b + checkpoint_interval_), std::move(x), ctx);
    }
    if (last) {
      *loss = Loss(x[0], labels);
      saved->labels = labels;
    }
    return x;
  }
  Group y = RunLayers(chunk.first_layer, chunk.end_layer, std::move(inputs), ctx);
  if (last) {
    *loss = Loss(y[0], labels);
    // Gradient accumulation: each micro-batch contributes 1/M of the step's gradient.
    saved->roots = {*loss / micro_batches_};
  } else {
    saved->roots = y;
  }
  return y;
}

Group StageModel::Backward(ir::ComputeKind kind, int vs, SavedForward& saved, const Group& output_grads) {
  const Chunk& chunk = ChunkOf(vs);
  const bool last = grid_.IsLast(vs);
  const bool has_input_grad = !grid_.IsFirst(vs);
  if (checkpoint_interval_ > 0) {
    // Recompute segment by segment from the last, back-propagating through each.
    Group grad = output_grads;
    const int segments = static_cast<int>(saved.segment_inputs.size());
    for (int k = segments - 1; k >= 0; --k) {
      Group x = saved.segment_inputs[k];
      if (k > 0) {
        for (auto& t : x) t = t.is_floating_point() ? t.detach().requires_grad_(true) : t;
      } else {
        x = saved.inputs;
      }
      const int begin = chunk.first_layer + k * checkpoint_interval_;
      Group y = RunLayers(begin, std::min(chunk.end_layer, begin + checkpoint_interval_), x, saved.ctx);
      if (k == segments - 1 && last) {
        torch::autograd::backward({Loss(y[0], saved.labels) / micro_batches_});
      } else {
        Group roots, grads;
        const Group floats = Differentiable(y);
        for (size_t j = 0; j < floats.size(); ++j) {
          if (!floats[j].requires_grad()) continue;
          roots.push_back(floats[j]);
          grads.push_back(grad[j]);
        }
        if (!roots.empty()) torch::autograd::backward(roots, grads);
      }
      if (k > 0) {
        grad.clear();
        for (const auto& t : Differentiable(x)) grad.push_back(t.grad().defined() ? t.grad() : torch::zeros_like(t));
      }
    }
    Group input_grads;
    if (has_input_grad) {
      Group grads;
      const Group floats = Differentiable(saved.inputs);
      for (const auto& t : floats) grads.push_back(t.grad());
      input_grads = InputGrads(floats, grads);
    }
    saved.Clear();
    return input_grads;
  }
  // The roots and their incoming gradients: the scaled loss on the last virtual stage,
  // else every FLOAT32 output that depends on something trainable.
  Group roots, grads;
  if (last) {
    roots = {saved.roots[0]};
  } else {
    const Group floats = Differentiable(saved.roots);
    for (size_t k = 0; k < floats.size(); ++k) {
      if (!floats[k].requires_grad()) continue;
      roots.push_back(floats[k]);
      grads.push_back(output_grads[k]);
    }
  }
  const Group inputs = has_input_grad ? Differentiable(saved.inputs) : Group{};
  Group input_grads;
  switch (kind) {
    case ir::BACKWARD: {
      if (!roots.empty()) torch::autograd::backward(roots, grads);
      Group in_grads;
      for (const auto& t : inputs) in_grads.push_back(t.grad());
      input_grads = InputGrads(inputs, in_grads);
      saved.Clear();
      break;
    }
    case ir::BACKWARD_INPUT: {
      Group in_grads(inputs.size());
      if (!roots.empty() && !inputs.empty()) {
        in_grads = torch::autograd::grad(roots, inputs, grads, /*retain_graph=*/true, /*create_graph=*/false,
                                         /*allow_unused=*/true);
      }
      input_grads = InputGrads(inputs, in_grads);
      break;
    }
    default: {  // BACKWARD_WEIGHT: this virtual stage's parameters only
      if (!roots.empty() && !chunk.params.empty()) {
        auto w = torch::autograd::grad(roots, chunk.params, grads, /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
        // Accumulated in place: every .grad is a view of flat_grads_.
        for (size_t k = 0; k < w.size(); ++k) {
          if (w[k].defined()) chunk.params[k].mutable_grad().add_(w[k]);
        }
      }
      saved.Clear();
      break;
    }
  }
  return input_grads;
}

const torch::Tensor* StageModel::TiedWeight(const std::string& key) const {
  auto it = tied_.find(key);
  return it == tied_.end() ? nullptr : &it->second;
}

torch::Tensor StageModel::SquaredGradNorm() const {
  torch::Tensor sq = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(flat_grads_.device()));
  for (const auto& p : unique_params_) {
    if (!p.grad().defined() || not_owned_.count(p.unsafeGetTensorImpl())) continue;
    sq += p.grad().to(torch::kFloat64).pow(2).sum();
  }
  return sq;
}

void StageModel::ScaleGrads(const torch::Tensor& coef) {
  for (auto& p : unique_params_)
    if (p.grad().defined()) p.mutable_grad().mul_(coef);
}

int64_t StageModel::NumParameters() const {
  int64_t n = 0;
  for (const auto& p : unique_params_) n += p.numel();
  return n;
}

std::vector<int> StageModel::HeldLayers() const {
  std::vector<int> out;
  for (const Chunk& c : chunks_)
    for (int l = c.begin; l < c.end; ++l) out.push_back(l);
  return out;
}

std::vector<NamedParameter> StageModel::Parameters() const {
  std::vector<NamedParameter> out;
  for (const auto& layer : layers_)
    for (const auto& [name, p] : layer->params()) out.push_back({layer->global_index(), name, p});
  return out;
}

std::vector<NamedParameter> StageModel::DistinctParameters() const {
  std::vector<NamedParameter> out;
  std::set<const void*> seen;
  for (const auto& layer : layers_)
    for (const auto& [name, p] : layer->params())
      if (seen.insert(p.unsafeGetTensorImpl()).second) out.push_back({layer->global_index(), name, p});
  return out;
}

absl::Status StageModel::SetParameter(int layer, const std::string& name, const torch::Tensor& value,
                                      const std::string& who) {
  for (auto& l : layers_) {
    if (l->global_index() != layer) continue;
    auto it = l->params().find(name);
    if (it == l->params().end()) break;
    if (it->second.sizes() != value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " ", name, ": shape ", c10::str(value.sizes()),
                                                     " does not fit the model's ", c10::str(it->second.sizes())));
    }
    torch::NoGradGuard no_grad;
    it->second.copy_(value);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(who, " has no parameter ", name, " in layer ", layer));
}

int64_t StageModel::ParameterBytes() const {
  int64_t bytes = 0;
  for (const auto& p : unique_params_) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  return bytes;
}

}  // namespace ppc::runtime
