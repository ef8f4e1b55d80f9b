#include "passes/analysis/timeline.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/layer_shapes.h"
#include "ir/topology.h"
#include "passes/analysis/activations.h"

namespace ppc::passes {
namespace {

// Float32 optimizer state values kept per parameter.
int StateValuesPerParameter(const ir::OptimizerConfig& o) {
  if (o.type() == "adam" || o.type() == "adamw") return 2;
  return o.momentum() != 0 ? 1 : 0;
}

// Parameters, activation bytes and optimizer state of stage s from the model and
// placement.
void ModelStats(const ir::Plan& plan, const ir::Grid& grid, int s, StageStats& st) {
  const ir::Placement& pl = plan.placement();
  if (pl.virtual_stages_size() != grid.virtual_stages()) return;
  const int layers = plan.model().layers_size();
  const int64_t mbs = std::max(0, plan.config().micro_batch_size());
  std::set<std::string> ties;
  int64_t largest = 0;  // (input + output group) bytes of one micro-batch
  bool shapes = true;
  for (int c = 0; c < grid.chunks(); ++c) {
    const ir::VirtualStage& vs = pl.virtual_stages(grid.VirtualOf(s, c));
    if (vs.begin() < 0 || vs.begin() >= vs.end() || vs.end() > layers) continue;
    for (int l = vs.begin(); l < vs.end(); ++l) {
      const ir::LayerSpec& layer = plan.model().layers(l);
      st.params = SatAdd(st.params, std::max<int64_t>(0, layer.param_count()));
      if (layer.outputs_size() == 0) shapes = false;
      if (!layer.tie_key().empty() && !ties.insert(layer.tie_key()).second) {
        // Tied to an earlier layer of this stage: its weight is held once.
        auto info = ir::InferGroup(layer, InputGroup(plan, l));
        if (info.ok()) {
          int64_t weight = 1;
          for (int64_t d : info->weight_shape) weight = SatMul(weight, d);
          st.params = std::max<int64_t>(0, st.params - weight);
        }
      }
    }
    const auto& out = plan.model().layers(vs.end() - 1).outputs();
    const int64_t bytes = SatAdd(GroupBytes(InputGroup(plan, vs.begin())), GroupBytes({out.begin(), out.end()}));
    largest = std::max(largest, SatMul(bytes, mbs));
  }
  if (shapes) st.activation_bytes = SatMul(st.num_slots, largest);
}

// StageStats::peak_activation_bytes of `prog` (stage s).
int64_t PeakActivationBytes(const std::vector<SavedActivationBytes>& saved, const ir::Program& prog) {
  bool trains = false;  // a forward-only program keeps nothing for backwards
  for (const ir::Op& op : prog.ops) trains |= op.is(ir::OpCode::kCompute) && op.kind != ir::FORWARD;
  if (!trains) return 0;
  ActivationWalk walk(saved);
  for (const ir::Op& op : prog.ops)
    if (op.is(ir::OpCode::kCompute)) walk.Apply(op.compute_kind(), op.virtual_stage(), op.deferred());
  return walk.peak();
}

}  // namespace

absl::StatusOr<Timeline> SimulateTimeline(const ir::Module& module, const CostModel& costs) {
  const ir::Plan& plan = module.header;
  if (module.programs.empty()) return absl::FailedPreconditionError("plan has no programs to simulate");
  auto grid = ir::Grid::Of(plan);
  if (!grid.ok()) return absl::FailedPreconditionError(absl::StrCat("timeline: ", grid.status().message()));
  auto sim = Simulate(plan, module.programs, costs);
  if (!sim.ok()) return absl::FailedPreconditionError(absl::StrCat("timeline: ", sim.status().message()));
  if (!sim->errors.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the programs do not run to the end (verify the plan):\n  ", absl::StrJoin(sim->errors, "\n  ")));
  }
  const int p = grid->stages();
  const int64_t d = std::max(1, plan.topology().data_parallel());
  Timeline t;
  t.makespan = sim->makespan;
  t.bubble_fraction = sim->bubble_fraction;
  t.compute = std::move(sim->compute);
  t.stages.resize(p);
  const std::vector<SavedActivationBytes> saved = SavedActivations(plan);
  for (int s = 0; s < p; ++s) {
    const ir::Program& prog = module.programs[s];
    StageStats& st = t.stages[s];
    st.num_slots = prog.num_slots;
    st.peak_live_slots = sim->peak_live_slots[s];
    st.busy = sim->busy[s];
    ModelStats(plan, *grid, s, st);
    st.peak_activation_bytes = PeakActivationBytes(saved, prog);
    bool trains = false, sharded = false;
    for (const ir::Op& op : prog.ops) {
      if (op.is(ir::OpCode::kSend)) st.bytes_sent = SatAdd(st.bytes_sent, TransferBytes(plan, op.direction(), op.boundary()));
      if (op.is(ir::OpCode::kOptimizerStep)) {
        trains = true;
        sharded = op.sharded();
      }
    }
    if (trains) {
      st.optimizer_state_bytes_unsharded = SatMul(st.params, 4 * StateValuesPerParameter(plan.config().optimizer()));
      st.optimizer_state_bytes =
          sharded ? st.optimizer_state_bytes_unsharded / d + (st.optimizer_state_bytes_unsharded % d != 0)
                  : st.optimizer_state_bytes_unsharded;
    }
    t.bytes_sent_per_step = SatAdd(t.bytes_sent_per_step, SatMul(st.bytes_sent, d));
  }
  return t;
}

absl::StatusOr<Timeline> SimulateTimeline(const ir::Module& module) {
  return SimulateTimeline(module, CostModel::Unit(module.header));
}

absl::StatusOr<Timeline> SimulateTimeline(const ir::Plan& plan, const CostModel& costs) {
  return SimulateTimeline(ir::ToModule(plan), costs);
}

absl::StatusOr<Timeline> SimulateTimeline(const ir::Plan& plan) { return SimulateTimeline(ir::ToModule(plan)); }

namespace {

bool Whole(double x) { return std::floor(x) == x; }

// The F/B/I/W letter of a compute label "<vs><letter><mb>".
std::string Letter(const std::string& label) {
  for (char c : label)
    if (c < '0' || c > '9') return std::string(1, c);
  return "?";
}

std::string RenderUnits(const Timeline& t) {
  size_t width = 1;
  for (const auto& row : t.compute)
    for (const Span& sp : row) width = std::max(width, sp.label.size());
  const int64_t units = static_cast<int64_t>(t.makespan);
  std::string out;
  for (size_t s = 0; s < t.compute.size(); ++s) {
    absl::StrAppend(&out, absl::StrFormat("stage %-2d |", s));
    int64_t now = 0;
    for (const Span& sp : t.compute[s]) {
      const int64_t start = static_cast<int64_t>(sp.start), end = static_cast<int64_t>(sp.end);
      if (end <= start) continue;  // takes no time: not drawn
      for (; now < start; ++now) absl::StrAppend(&out, absl::StrFormat("%-*s|", width, "."));
      const int64_t cells = end - start;
      absl::StrAppend(&out, absl::StrFormat("%-*s|", cells * width + (cells - 1), sp.label));
      now = end;
    }
    for (; now < units; ++now) absl::StrAppend(&out, absl::StrFormat("%-*s|", width, "."));
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string RenderScaled(const Timeline& t, int columns) {
  const double scale = t.makespan / columns;  // time per column
  std::string out = absl::StrFormat("(1 column = %.6g time units, makespan %.6g)\n", scale, t.makespan);
  for (size_t s = 0; s < t.compute.size(); ++s) {
    std::string row(columns, '.');
    for (const Span& sp : t.compute[s]) {
      if (!(sp.end > sp.start)) continue;
      int c0 = std::clamp(static_cast<int>(std::lround(sp.start / scale)), 0, columns - 1);
      int c1 = std::clamp(static_cast<int>(std::lround(sp.end / scale)), c0 + 1, columns);
      const int w = c1 - c0;
      std::string text = "|" + sp.label;
      if (static_cast<int>(text.size()) > w) text = w >= 2 ? "|" + Letter(sp.label) : Letter(sp.label);
      text.resize(w, ' ');
      row.replace(c0, w, text);
    }
    absl::StrAppend(&out, absl::StrFormat("stage %-2d ", s), row, "|\n");
  }
  return out;
}

}  // namespace

std::string RenderTimeline(const Timeline& t, int max_columns) {
  bool whole = Whole(t.makespan) && t.makespan <= kMaxUnitColumns;
  for (const auto& row : t.compute)
    for (const Span& sp : row) whole = whole && Whole(sp.start) && Whole(sp.end);
  if (whole) return RenderUnits(t);
  return RenderScaled(t, std::max(1, max_columns));
}

}  // namespace ppc::passes
