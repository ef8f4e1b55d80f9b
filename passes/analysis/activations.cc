#include "passes/analysis/activations.h"

#include <algorithm>
#include <limits>
#include <set>
#include <string>

#include "ir/layer_shapes.h"

namespace ppc::passes {

namespace {
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

}  // namespace

int64_t SatMul(int64_t a, int64_t b) {
  int64_t out;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &out)) return kInt64Max;
  return out;
}
int64_t SatAdd(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_add_overflow(a, b, &out)) return kInt64Max;
  return out;
}

int64_t GroupBytes(const std::vector<ir::TensorSpec>& group) {
  int64_t total = 0;
  for (const ir::TensorSpec& t : group) {
    const int64_t n = ir::NumElements(t);
    total = SatAdd(total, SatMul(n < 0 ? kInt64Max : n, t.dtype() == ir::INT64 ? 8 : 4));
  }
  return total;
}

std::vector<ir::TensorSpec> InputGroup(const ir::Plan& plan, int l) {
  if (l == 0) return {plan.model().input()};
  const auto& out = plan.model().layers(l - 1).outputs();
  return {out.begin(), out.end()};
}

std::vector<SavedActivationBytes> SavedActivations(const ir::Plan& plan) {
  const ir::Placement& pl = plan.placement();
  const int nv = pl.virtual_stages_size(), layers = plan.model().layers_size();
  const int64_t mbs = std::max(0, plan.config().micro_batch_size());
  const int interval = plan.config().activation_checkpoint_interval();
  std::vector<SavedActivationBytes> out(nv);
  for (int v = 0; v < nv; ++v) {
    const ir::VirtualStage& vs = pl.virtual_stages(v);
    if (vs.begin() < 0 || vs.begin() >= vs.end() || vs.end() > layers) return {};
    // Tensors by identity: bytes of each (per micro-batch); the group's tensors' ids.
    std::vector<int64_t> bytes;
    auto make = [&](const ir::TensorSpec& t) {
      bytes.push_back(SatMul(GroupBytes({t}), mbs));
      return static_cast<int>(bytes.size()) - 1;
    };
    auto elements = [&](const ir::TensorSpec& t) { return SatMul(std::max<int64_t>(0, ir::NumElements(t)), mbs); };
    std::vector<int> group;
    for (const ir::TensorSpec& t : InputGroup(plan, vs.begin())) group.push_back(make(t));
    std::set<int> forward(group.begin(), group.end()), weights;
    int64_t forward_extra = 0, weights_extra = 0;
    for (int l = vs.begin(); l < vs.end(); ++l) {
      const ir::LayerSpec& layer = plan.model().layers(l);
      if (layer.outputs_size() == 0 || group.empty()) return {};
      if (interval > 0 && (l - vs.begin()) % interval == 0) forward.insert(group.begin(), group.end());
      const std::vector<ir::TensorSpec> in_specs = InputGroup(plan, l);
      const ir::TensorSpec& in_spec = in_specs.front();
      const ir::TensorSpec& out_spec = layer.outputs(0);
      const std::string& kind = layer.kind();
      const int in = group.front();
      if (kind == "Fork") {
        group.push_back(in);
        continue;
      }
      if (kind == "Flatten") continue;  // a view of its input
      if (kind == "Add") {
        group.front() = make(out_spec);
        group.pop_back();
        continue;
      }
      std::vector<int> saves;
      int64_t extra = 0;
      int out = -1;
      if (kind == "Dropout") {
        if (ir::FloatAttr(layer, "p", 0.5).value_or(0.5) == 0) continue;  // the input itself
        extra = SatMul(elements(in_spec), 4);  // the mask
        out = make(out_spec);
      } else {
        out = make(out_spec);
        if (kind == "Linear" || kind == "Conv2d" || kind == "GELU" || kind == "Embedding") {
          saves = {in};
        } else if (kind == "ReLU" || kind == "Tanh") {
          saves = {out};
        } else if (kind == "MaxPool2d") {
          saves = {in};
          extra = SatMul(elements(out_spec), 8);  // the indices
        } else if (kind == "AdaptiveAvgPool2d") {
          if (ir::NumElements(out_spec) != (out_spec.shape_size() > 0 ? out_spec.shape(0) : 1)) saves = {in};
        } else if (kind == "LayerNorm") {
          saves = {in};
          const int64_t n = std::max<int64_t>(1, ir::IntAttr(layer, "normalized_shape").value_or(1));
          extra = SatMul(SatMul(elements(in_spec) / n, 4), 2);  // mean and rstd per row
        } else {
          saves = {in, out};
        }
      }
      if (interval <= 0) {
        forward.insert(saves.begin(), saves.end());
        forward_extra = SatAdd(forward_extra, extra);
      }
      if (layer.param_count() > 0) {
        weights.insert(saves.begin(), saves.end());
        weights_extra = SatAdd(weights_extra, SatAdd(extra, bytes[out]));  // + the output's gradient
      }
      group.front() = out;
    }
    const bool last = v + 1 == nv;
    if (!last) {
      forward.insert(group.begin(), group.end());  // the outputs, held for the send
    } else {
      // The labels, and what the loss saved: cross-entropy's log-softmax of the logits
      // (the size of the logits), MSE's input.
      const int64_t label_elements = elements(plan.model().label());
      forward_extra = SatAdd(forward_extra, SatMul(label_elements, plan.model().loss() == ir::MSE ? 4 : 8));
      if (interval > 0) {
        // Checkpointed: no graph; the backward recomputes the loss.
      } else if (plan.model().loss() == ir::MSE) {
        forward.insert(group.front());
      } else {
        // The log-softmax, and the float32 total weight of the NLL loss.
        forward_extra = SatAdd(forward_extra, SatAdd(bytes[group.front()], 4));
      }
    }
    auto sum = [&](const std::set<int>& ids) {
      int64_t total = 0;
      for (int id : ids) total = SatAdd(total, bytes[id]);
      return total;
    };
    out[v].forward = SatAdd(sum(forward), forward_extra);
    out[v].weights = SatAdd(sum(weights), weights_extra);
  }
  return out;
}

int64_t ActivationWalk::After(ir::ComputeKind kind, int v, bool deferred) const {
  if (v < 0 || v >= static_cast<int>(saved_.size())) return now_;
  const SavedActivationBytes& s = saved_[v];
  switch (kind) {
    case ir::FORWARD:
      return SatAdd(now_, s.forward);
    case ir::BACKWARD:
      return now_ - s.forward;
    case ir::BACKWARD_INPUT:
      return SatAdd(now_ - s.forward, s.weights);
    case ir::BACKWARD_WEIGHT:
      return deferred ? now_ : now_ - SatMul(s.weights, 1 + pending_[v]);
    default:
      return now_;
  }
}

int64_t OneFOneBPeakActivationBytes(const ir::Plan& plan) {
  const int p = std::max(1, plan.topology().num_stages());
  const int nv = plan.placement().virtual_stages_size();
  if (nv == 0 || nv % p != 0) return 0;
  const int chunks = nv / p;
  ir::Plan merged = plan;
  auto* vss = merged.mutable_placement()->mutable_virtual_stages();
  vss->Clear();
  for (int s = 0; s < p; ++s) {
    ir::VirtualStage* vs = vss->Add();
    vs->set_begin(plan.placement().virtual_stages(s * chunks).begin());
    vs->set_end(plan.placement().virtual_stages(s * chunks + chunks - 1).end());
  }
  const std::vector<SavedActivationBytes> saved = SavedActivations(merged);
  if (saved.empty()) return 0;
  const int m = std::max(1, plan.config().micro_batches());
  int64_t peak = 0;
  for (int s = 0; s < p; ++s) peak = std::max(peak, SatMul(std::min(p - s, m), saved[s].forward));
  return peak;
}

}  // namespace ppc::passes
