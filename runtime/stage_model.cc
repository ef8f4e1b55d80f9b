#include "runtime/stage_model.h"

#include <algorithm>
#include <optional>
#include <set>

#include <torch/autograd.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/functional/loss.h>
#include <ATen/SequenceNumber.h>

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

namespace {

using torch::autograd::Edge;

// The graph edge of `t`: where its gradient flows.
Edge EdgeOf(const torch::Tensor& t) { return torch::autograd::impl::gradient_edge(t); }

// Frees the saved tensors of every graph node reachable from `roots` that was made in
// [first, end) (this forward's) and is not in a kept range, and cuts its edges so that
// nothing behind it is reached through it again (W only walks the kept nodes). Nodes of
// other forwards (parameters' accumulators, other micro-batches) are not touched.
void ReleaseGraph(const std::vector<Edge>& roots, uint64_t first, uint64_t end,
                  const std::vector<std::pair<uint64_t, uint64_t>>& kept) {
  // Owning pointers: cutting a node's edges may drop the last other reference to a
  // child still on the stack.
  std::vector<std::shared_ptr<torch::autograd::Node>> stack;
  std::set<const torch::autograd::Node*> seen;
  for (const Edge& e : roots)
    if (e.function && seen.insert(e.function.get()).second) stack.push_back(e.function);
  while (!stack.empty()) {
    std::shared_ptr<torch::autograd::Node> node = std::move(stack.back());
    stack.pop_back();
    const uint64_t seq = node->sequence_nr();
    if (seq < first || seq >= end) continue;
    for (const Edge& e : node->next_edges())
      if (e.function && seen.insert(e.function.get()).second) stack.push_back(e.function);
    const std::pair<uint64_t, uint64_t>* own = nullptr;  // the kept range holding the node
    for (const auto& range : kept)
      if (seq >= range.first && seq < range.second) own = &range;
    if (own != nullptr) {
      // A kept node keeps only its edges inside its own layer and out of this forward
      // (the parameters' accumulators): W then walks its own layer alone, never into
      // another weighted layer (which, through a weight tied between the two, would
      // count that layer's share again or run it after its own W freed it).
      for (Edge& e : node->next_edges()) {
        if (!e.function) continue;
        const uint64_t to = e.function->sequence_nr();
        if (to >= first && to < end && (to < own->first || to >= own->second)) e = Edge();
      }
      continue;
    }
    node->release_variables();
    // Not set_next_edge, which would recompute the node's topological number (refused
    // once the node has a parent); with fewer children the old number is still an upper
    // bound, which is all the engine asks of it.
    for (Edge& e : node->next_edges()) e = Edge();
  }
}

}  // namespace

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
  saved->forwarded = true;
  saved->inputs = inputs;
  saved->ctx = ctx;
  saved->split = split;
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
  saved->first_node = at::sequence_number::peek();
  Group y = split ? RunLayersNoting(chunk.first_layer, chunk.end_layer, std::move(inputs), ctx, saved->weighted)
                  : RunLayers(chunk.first_layer, chunk.end_layer, std::move(inputs), ctx);
  if (last) {
    *loss = Loss(y[0], labels);
    // Gradient accumulation: each micro-batch contributes 1/M of the step's gradient.
    saved->roots = {EdgeOf(*loss / micro_batches_)};
    saved->root_grad = {-1};
    *loss = loss->detach();
  } else {
    const Group floats = Differentiable(y);
    for (size_t k = 0; k < floats.size(); ++k) {
      if (!floats[k].requires_grad()) continue;
      saved->roots.push_back(EdgeOf(floats[k]));
      saved->root_grad.push_back(static_cast<int>(k));
    }
  }
  saved->end_node = at::sequence_number::peek();
  return y;
}

Group StageModel::RunLayersNoting(int begin, int end, Group x, const ForwardContext& ctx,
                                  std::vector<WeightedLayer>& weighted) const {
  for (int l = begin; l < end; ++l) {
    const uint64_t first = at::sequence_number::peek();
    if (layers_[l]->params().empty()) {
      x = layers_[l]->ForwardGroup(std::move(x), ctx);
      continue;
    }
    const Group before = x;  // held, so that no output can reuse an input's address
    x = layers_[l]->ForwardGroup(std::move(x), ctx);
    WeightedLayer w;
    for (const auto& t : Differentiable(x)) {
      bool passed = false;  // a tensor of the group the layer passes through
      for (const auto& b : before) passed |= b.unsafeGetTensorImpl() == t.unsafeGetTensorImpl();
      if (t.requires_grad() && !passed) w.outputs.push_back(EdgeOf(t));
    }
    for (auto& [name, p] : layers_[l]->params()) {
      bool dup = false;
      for (const auto& q : w.params) dup |= q.unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
      if (!dup) w.params.push_back(p);
    }
    w.first_node = first;
    w.end_node = at::sequence_number::peek();
    if (layers_[l]->BatchesWeightGrads() && !before.empty()) {
      w.layer = l;
      w.input = before[0];
    }
    weighted.push_back(std::move(w));
  }
  return x;
}

Group StageModel::InputPass(const std::vector<Edge>& roots, const Group& root_grads, const Group& inputs,
                            const std::vector<WeightedLayer>& weighted, uint64_t first_node, uint64_t end_node,
                            std::vector<WeightWork>& work) const {
  // One pass from the roots that captures the gradients of the inputs and of every
  // weighted layer's outputs: autograd computes only what leads to them, so no weight
  // gradient; the graph stays (keep_graph) for W, minus what is freed below.
  std::vector<Edge> capture;
  for (const auto& t : inputs) capture.push_back(EdgeOf(t));
  for (const WeightedLayer& w : weighted) capture.insert(capture.end(), w.outputs.begin(), w.outputs.end());
  Group got;
  if (!roots.empty() && !capture.empty()) {
    got = torch::autograd::Engine::get_default_engine().execute(roots, root_grads, /*keep_graph=*/true,
                                                                /*create_graph=*/false, /*accumulate_grad=*/false,
                                                                capture);
  }
  got.resize(capture.size());
  Group input_grads(got.begin(), got.begin() + static_cast<long>(inputs.size()));
  size_t at = inputs.size();
  std::vector<std::pair<uint64_t, uint64_t>> kept;
  for (const WeightedLayer& w : weighted) {
    WeightWork ww;
    for (size_t j = 0; j < w.outputs.size(); ++j, ++at) {
      if (!got[at].defined()) continue;  // no gradient flows into this output
      ww.roots.push_back(w.outputs[j]);
      ww.grads.push_back(got[at]);
    }
    if (ww.roots.empty()) continue;
    ww.params = w.params;
    ww.layer = w.layer;
    ww.input = w.input;
    kept.push_back({w.first_node, w.end_node});
    work.push_back(std::move(ww));
  }
  ReleaseGraph(roots, first_node, end_node, kept);
  return input_grads;
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

void StageModel::BatchedWeightBackward(std::vector<WeightWork>& work) {
  // Per batching layer, in the order first met: the micro-batches' inputs and gradients.
  std::vector<int> order;
  std::map<int, std::pair<Group, Group>> batched;
  std::vector<WeightWork> one_by_one;
  for (WeightWork& w : work) {
    const bool batches = w.layer >= 0 && w.input.defined() && w.roots.size() == 1 && w.grads.size() == 1 &&
                         w.grads[0].defined();
    if (!batches) {
      one_by_one.push_back(std::move(w));
      continue;
    }
    auto [it, fresh] = batched.try_emplace(w.layer);
    if (fresh) order.push_back(w.layer);
    it->second.first.push_back(std::move(w.input));
    it->second.second.push_back(std::move(w.grads[0]));
  }
  work.clear();  // the graph nodes go; the inputs and gradients are held by `batched`
  for (int l : order) {
    auto& [inputs, grads] = batched[l];
    layers_[l]->AccumulateWeightGrads(inputs, grads);
    inputs.clear();
    grads.clear();
  }
  RunWeightWork(one_by_one);
}

Group StageModel::BackwardInput(int vs, SavedForward& saved, const Group& output_grads) {
  const Chunk& chunk = ChunkOf(vs);
  const bool last = grid_.IsLast(vs);
  const bool has_input_grad = !grid_.IsFirst(vs);
  const Group floats = has_input_grad ? Differentiable(saved.inputs) : Group{};
  Group grads;
  if (checkpoint_interval_ > 0) {
    // Recompute each segment once, noting its weighted layers, and run its input pass.
    grads = output_grads;
    const int segments = static_cast<int>(saved.segment_inputs.size());
    for (int k = segments - 1; k >= 0; --k) {
      Group x = k > 0 ? saved.segment_inputs[k] : saved.inputs;
      if (k > 0) {
        for (auto& t : x) t = t.is_floating_point() ? t.detach().requires_grad_(true) : t;
      }
      const int begin = chunk.first_layer + k * checkpoint_interval_;
      std::vector<WeightedLayer> weighted;
      const uint64_t first = at::sequence_number::peek();
      Group y = RunLayersNoting(begin, std::min(chunk.end_layer, begin + checkpoint_interval_), x, saved.ctx, weighted);
      std::vector<Edge> roots;
      Group root_grads;
      if (k == segments - 1 && last) {
        torch::Tensor root = Loss(y[0], saved.labels) / micro_batches_;
        roots.push_back(EdgeOf(root));
        root_grads.push_back(torch::ones_like(root));
      } else {
        const Group outs = Differentiable(y);
        for (size_t j = 0; j < outs.size() && j < grads.size(); ++j) {
          if (!outs[j].requires_grad() || !grads[j].defined()) continue;
          roots.push_back(EdgeOf(outs[j]));
          root_grads.push_back(grads[j]);
        }
      }
      Group wanted;  // the segment's inputs whose gradients go on
      if (k > 0 || has_input_grad) {
        for (const auto& t : Differentiable(x))
          if (t.requires_grad()) wanted.push_back(t);
      }
      const uint64_t end = at::sequence_number::peek();
      Group got = InputPass(roots, root_grads, wanted, weighted, first, end, saved.weight_work);
      // The gradients in the order of the segment's FLOAT32 inputs (zeros where none).
      grads.clear();
      size_t w = 0;
      for (const auto& t : Differentiable(x)) {
        torch::Tensor g;
        if (t.requires_grad() && (k > 0 || has_input_grad)) g = got[w++];
        grads.push_back(g.defined() ? g : torch::zeros_like(t));
      }
    }
  } else {
    Group root_grads;
    for (int j : saved.root_grad) {
      root_grads.push_back(j < 0 ? torch::ones({}, flat_params_.options()) : output_grads[j]);
    }
    grads = InputPass(saved.roots, root_grads, floats, saved.weighted, saved.first_node, saved.end_node,
                      saved.weight_work);
  }
  Group input_grads;
  if (has_input_grad) {
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
  // From the roots (the scaled loss on the last virtual stage, else every FLOAT32
  // output that depends on something trainable) into every leaf: the parameters'
  // gradients accumulate, the inputs' gradients are read from them.
  Group root_grads;
  for (int j : saved.root_grad) root_grads.push_back(j < 0 ? torch::ones({}, flat_params_.options()) : output_grads[j]);
  const Group inputs = has_input_grad ? Differentiable(saved.inputs) : Group{};
  if (!saved.roots.empty()) {
    torch::autograd::Engine::get_default_engine().execute(saved.roots, root_grads, /*keep_graph=*/false,
                                                          /*create_graph=*/false, /*accumulate_grad=*/true, {});
  }
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
