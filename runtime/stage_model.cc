#include "runtime/stage_model.h"

#include <algorithm>
#include <optional>

#include <torch/autograd.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/variable.h>
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
                          SavedForward* saved, torch::Tensor* loss, bool split) const {
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
  if (split) {
    Group y = RunLayersSplit(chunk.first_layer, chunk.end_layer, std::move(inputs), ctx, saved->tape);
    if (last) {
      // The loss gets a graph of its own too: the I pass starts from d(loss/M)/d(output).
      saved->loss_input = y[0].detach().requires_grad_(y[0].requires_grad());
      *loss = Loss(saved->loss_input, labels);
      saved->roots = {*loss / micro_batches_};
      *loss = loss->detach();
    }
    return y;
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

namespace {

// `t` cut from its producer's graph: a leaf sharing its storage, requiring grad when
// it did (so gradients still flow to it), or `t` itself when nothing flows.
torch::Tensor Cut(const torch::Tensor& t) {
  return t.is_floating_point() && t.requires_grad() ? t.detach().requires_grad_(true) : t;
}

}  // namespace

Group StageModel::RunLayersSplit(int begin, int end, Group x, const ForwardContext& ctx,
                                 std::vector<LayerTape>& tape) const {
  for (int l = begin; l < end; ++l) {
    if (l > begin) {
      for (auto& t : x) t = Cut(t);
    }
    LayerTape entry;
    entry.layer = l;
    entry.inputs = x;
    x = layers_[l]->ForwardGroup(std::move(x), ctx);
    entry.outputs = x;
    tape.push_back(std::move(entry));
  }
  return x;
}

Group StageModel::InputPass(std::vector<LayerTape>& tape, Group grads, bool want_inputs,
                            std::vector<WeightWork>& work) const {
  for (int k = static_cast<int>(tape.size()) - 1; k >= 0; --k) {
    LayerTape& t = tape[k];
    const Group outs = Differentiable(t.outputs), ins = Differentiable(t.inputs);
    Group in_grads(ins.size());
    auto add = [](torch::Tensor& into, const torch::Tensor& g) { into = into.defined() ? into + g : g; };
    Group roots, root_grads;
    for (size_t j = 0; j < outs.size() && j < grads.size(); ++j) {
      if (!outs[j].requires_grad() || !grads[j].defined()) continue;
      // A tensor the layer passed through unchanged: its gradient goes straight on.
      bool passed = false;
      for (size_t i = 0; i < ins.size() && !passed; ++i) {
        if (ins[i].unsafeGetTensorImpl() == outs[j].unsafeGetTensorImpl()) {
          add(in_grads[i], grads[j]);
          passed = true;
        }
      }
      if (passed) continue;
      roots.push_back(outs[j]);
      root_grads.push_back(grads[j]);
    }
    std::vector<torch::Tensor> params;
    for (auto& [name, p] : layers_[t.layer]->params()) {
      bool dup = false;
      for (const auto& q : params) dup |= q.unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
      if (!dup) params.push_back(p);
    }
    Group wanted;
    std::vector<size_t> wanted_at;
    if (k > 0 || want_inputs) {
      for (size_t i = 0; i < ins.size(); ++i) {
        if (ins[i].requires_grad()) {
          wanted.push_back(ins[i]);
          wanted_at.push_back(i);
        }
      }
    }
    if (!roots.empty() && !wanted.empty()) {
      // Only the edges towards the inputs are computed (autograd skips the weight
      // gradients nobody asked for); the graph stays for W when the layer has weights.
      auto g = torch::autograd::grad(roots, wanted, root_grads, /*retain_graph=*/!params.empty(),
                                     /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t i = 0; i < g.size(); ++i)
        if (g[i].defined()) add(in_grads[wanted_at[i]], g[i]);
    }
    if (!params.empty() && !roots.empty()) {
      torch::autograd::edge_list edges;
      for (const auto& r : roots) edges.push_back(torch::autograd::impl::gradient_edge(r));
      work.push_back({std::move(edges), std::move(root_grads), std::move(params)});
    }
    grads = std::move(in_grads);
    t = LayerTape();  // the layer's activations are W's (through its roots) or free
  }
  tape.clear();
  return grads;
}

void StageModel::RunWeightWork(std::vector<WeightWork>& work) {
  for (WeightWork& w : work) {
    // What torch::autograd::grad does, from graph edges instead of output tensors.
    torch::autograd::edge_list params;
    for (const auto& p : w.params) params.push_back(torch::autograd::impl::gradient_edge(p));
    auto g = torch::autograd::Engine::get_default_engine().execute(w.roots, w.grads, /*keep_graph=*/false,
                                                                   /*create_graph=*/false,
                                                                   /*accumulate_grad=*/false, params);
    // Accumulated in place: every .grad is a view of flat_grads_.
    for (size_t k = 0; k < g.size(); ++k)
      if (g[k].defined()) w.params[k].mutable_grad().add_(g[k]);
  }
  work.clear();
}

Group StageModel::BackwardInput(int vs, SavedForward& saved, const Group& output_grads) {
  const Chunk& chunk = ChunkOf(vs);
  const bool last = grid_.IsLast(vs);
  const bool has_input_grad = !grid_.IsFirst(vs);
  // The gradient of the loss with respect to the (cut) model output.
  auto loss_grads = [&](const torch::Tensor& root, const torch::Tensor& output) {
    Group g{torch::Tensor()};
    if (output.requires_grad()) g = torch::autograd::grad({root}, {output}, {}, false, false, true);
    return g;
  };
  Group grads;
  if (checkpoint_interval_ > 0) {
    // Recompute each segment once, with a graph per layer, and run its input pass.
    grads = output_grads;
    const int segments = static_cast<int>(saved.segment_inputs.size());
    for (int k = segments - 1; k >= 0; --k) {
      Group x = k > 0 ? saved.segment_inputs[k] : saved.inputs;
      if (k > 0) {
        for (auto& t : x) t = t.is_floating_point() ? t.detach().requires_grad_(true) : t;
      }
      const int begin = chunk.first_layer + k * checkpoint_interval_;
      std::vector<LayerTape> tape;
      Group y = RunLayersSplit(begin, std::min(chunk.end_layer, begin + checkpoint_interval_), x, saved.ctx, tape);
      if (k == segments - 1 && last) {
        torch::Tensor out = Cut(y[0]);
        grads = loss_grads(Loss(out, saved.labels) / micro_batches_, out);
      }
      grads = InputPass(tape, std::move(grads), k > 0 || has_input_grad, saved.weight_work);
    }
  } else {
    grads = last ? loss_grads(saved.roots[0], saved.loss_input) : output_grads;
    grads = InputPass(saved.tape, std::move(grads), has_input_grad, saved.weight_work);
  }
  Group input_grads;
  if (has_input_grad) {
    const Group floats = Differentiable(saved.inputs);
    grads.resize(floats.size());
    input_grads = InputGrads(floats, grads);
  }
  // What W needs is in weight_work; the rest of the forward state goes now.
  std::vector<WeightWork> work = std::move(saved.weight_work);
  saved.Clear();
  saved.weight_work = std::move(work);
  saved.input_done = true;
  return input_grads;
}

Group StageModel::Backward(ir::ComputeKind kind, int vs, SavedForward& saved, const Group& output_grads) {
  const Chunk& chunk = ChunkOf(vs);
  const bool last = grid_.IsLast(vs);
  const bool has_input_grad = !grid_.IsFirst(vs);
  if (kind == ir::BACKWARD_INPUT) return BackwardInput(vs, saved, output_grads);
  if (kind == ir::BACKWARD_WEIGHT) {
    RunWeightWork(saved.weight_work);
    saved.Clear();
    return {};
  }
  if (!saved.tape.empty()) {
    // A full backward of a split-mode forward: I then W at once.
    Group input_grads = BackwardInput(vs, saved, output_grads);
    RunWeightWork(saved.weight_work);
    saved.Clear();
    return input_grads;
  }
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
  if (!roots.empty()) torch::autograd::backward(roots, grads);
  Group in_grads;
  for (const auto& t : inputs) in_grads.push_back(t.grad());
  Group input_grads = InputGrads(inputs, in_grads);
  saved.Clear();
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
