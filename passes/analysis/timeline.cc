#include "passes/analysis/timeline.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/instruction_text.h"
#include "ir/layer_shapes.h"
#include "passes/plan_util.h"

namespace ppc::passes {
namespace {

int64_t Bytes(const std::vector<int64_t>& shape, ir::DType dtype) {
  int64_t n = dtype == ir::INT64 ? 8 : 4;
  for (int64_t d : shape) n *= d;
  return n;
}

// Float32 optimizer state values kept per parameter.
int StateValuesPerParameter(const ir::OptimizerConfig& o) {
  if (o.type() == "adam" || o.type() == "adamw") return 2;
  return o.momentum() != 0 ? 1 : 0;
}

}  // namespace

absl::StatusOr<Timeline> SimulateTimeline(const ir::Plan& plan) {
  const int p = plan.programs_size();
  if (p == 0) return absl::FailedPreconditionError("plan has no programs to simulate");
  struct Op {
    const ir::Instruction* in;
    int cost;
  };
  std::vector<std::vector<Op>> ops(p);
  Timeline t;
  t.stages.resize(p);
  for (int s = 0; s < p; ++s) {
    const auto& prog = plan.programs(s);
    StageStats& st = t.stages[s];
    st.num_slots = prog.num_slots();
    if (plan.partition().stages_size() == p && RequireShapes(plan, "timeline").ok()) {
      auto in_shape = BatchShape(plan, StageInput(plan, s));
      auto out_shape = BatchShape(plan, StageOutput(plan, s));
      st.activation_bytes = int64_t(prog.num_slots()) * (Bytes(in_shape, StageInput(plan, s).dtype()) +
                                                          Bytes(out_shape, StageOutput(plan, s).dtype()));
      // Distinct parameters: a weight tied between layers of this stage counts once.
      std::set<std::string> ties;
      for (int l = plan.partition().stages(s).begin(); l < plan.partition().stages(s).end(); ++l) {
        const ir::LayerSpec& layer = plan.model().layers(l);
        st.params += layer.param_count();
        if (!layer.tie_key().empty() && !ties.insert(layer.tie_key()).second) {
          auto info = ir::InferLayer(layer, l == 0 ? plan.model().input() : plan.model().layers(l - 1).output());
          if (info.ok()) {
            int64_t weight = 1;
            for (int64_t d : info->weight_shape) weight *= d;
            st.params -= weight;
          }
        }
      }
    }
    bool trains = false, sharded = false;
    for (const auto& in : prog.instructions()) {
      if (in.has_optimizer_step()) {
        trains = true;
        sharded = in.optimizer_step().sharded();
      }
    }
    if (trains) {
      st.optimizer_state_bytes_unsharded = st.params * 4 * StateValuesPerParameter(plan.config().optimizer());
      const int64_t d = std::max(1, plan.topology().data_parallel());
      st.optimizer_state_bytes = sharded ? (st.optimizer_state_bytes_unsharded + d - 1) / d
                                         : st.optimizer_state_bytes_unsharded;
    }
    for (const auto& in : prog.instructions()) {
      if (in.has_forward()) ops[s].push_back({&in, 1});
      if (in.has_backward()) ops[s].push_back({&in, in.backward().part() == ir::FULL ? 2 : 1});
      if (in.has_send_activation()) st.bytes_sent += Bytes({in.send_activation().shape().begin(), in.send_activation().shape().end()}, in.send_activation().dtype());
      if (in.has_send_grad()) st.bytes_sent += Bytes({in.send_grad().shape().begin(), in.send_grad().shape().end()}, in.send_grad().dtype());
    }
    t.bytes_sent_per_step += st.bytes_sent * std::max(1, plan.topology().data_parallel());
  }
  // finish[s][(mb, kind)] with kind 0 = forward, 1 = input gradient ready, 2 = backward done.
  std::vector<std::map<std::pair<int, int>, int>> finish(p);
  std::vector<size_t> next(p, 0);
  std::vector<int> free_at(p, 0);
  bool progress = true;
  while (progress) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      while (next[s] < ops[s].size()) {
        const Op& op = ops[s][next[s]];
        int ready = free_at[s];
        std::string label = ir::OpName(*op.in);
        if (op.in->has_forward()) {
          int mb = op.in->forward().micro_batch();
          if (s > 0) {
            auto it = finish[s - 1].find({mb, 0});
            if (it == finish[s - 1].end()) break;
            ready = std::max(ready, it->second);
          }
          finish[s][{mb, 0}] = ready + op.cost;
        } else {
          const auto& b = op.in->backward();
          int mb = b.micro_batch();
          if (s + 1 < p && b.part() != ir::WEIGHT_ONLY) {
            auto it = finish[s + 1].find({mb, 1});
            if (it == finish[s + 1].end()) break;
            ready = std::max(ready, it->second);
          }
          if (b.part() != ir::WEIGHT_ONLY) finish[s][{mb, 1}] = ready + op.cost;
          if (b.part() != ir::INPUT_ONLY) finish[s][{mb, 2}] = ready + op.cost;
        }
        if (static_cast<int>(t.cells.size()) < p) t.cells.resize(p);
        auto& row = t.cells[s];
        if (static_cast<int>(row.size()) < ready + op.cost) row.resize(ready + op.cost);
        for (int k = 0; k < op.cost; ++k) row[ready + k] = label;
        free_at[s] = ready + op.cost;
        t.stages[s].busy += op.cost;
        ++next[s];
        progress = true;
      }
    }
  }
  for (int s = 0; s < p; ++s) {
    if (next[s] < ops[s].size()) {
      return absl::FailedPreconditionError(absl::StrCat("stage ", s, " cannot run ", ir::OpName(*ops[s][next[s]].in),
                                                        ": its producer never runs (verify the plan)"));
    }
    t.makespan = std::max(t.makespan, free_at[s]);
  }
  t.cells.resize(p);
  int busy = 0;
  for (int s = 0; s < p; ++s) {
    t.cells[s].resize(t.makespan);
    busy += t.stages[s].busy;
  }
  t.bubble_fraction = t.makespan == 0 ? 0 : 1.0 - double(busy) / (double(p) * t.makespan);
  return t;
}

std::string RenderTimeline(const Timeline& t) {
  size_t width = 1;
  for (const auto& row : t.cells)
    for (const auto& c : row) width = std::max(width, c.size());
  std::string out;
  for (size_t s = 0; s < t.cells.size(); ++s) {
    absl::StrAppend(&out, absl::StrFormat("stage %-2d |", s));
    for (const auto& c : t.cells[s]) absl::StrAppend(&out, absl::StrFormat("%-*s|", width, c.empty() ? "." : c));
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace ppc::passes
