// The `ppc inspect` timeline and per-stage figures, on top of the event simulator
// (passes/analysis/simulate.h, whose semantics apply): one data-parallel replica's
// training programs run under a cost model — CostModel::Unit (F=1, B=2, I=W=1,
// communication free) or CostModel::FromPlan.
#ifndef PPC_PASSES_ANALYSIS_TIMELINE_H_
#define PPC_PASSES_ANALYSIS_TIMELINE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"
#include "passes/analysis/activations.h"
#include "passes/analysis/simulate.h"

namespace ppc::passes {

struct StageStats {
  int num_slots = 0;        // the program's micro-batch state slots
  int peak_live_slots = 0;  // most of them live at once (Simulation::peak_live_slots)
  // num_slots * the largest (input group + output group) bytes of one micro-batch among
  // the stage's virtual stages; 0 when the output groups have not been inferred.
  int64_t activation_bytes = 0;
  // The most bytes of activations the stage holds for backwards at once, walking its
  // program with SavedActivations: an F adds its virtual stage's `forward`, a B frees
  // it, an I frees it and adds `weights`, the W frees that. Buffers of transfers in
  // flight (posted receives, sends not yet waited for) are not counted. 0 without
  // inferred shapes.
  int64_t peak_activation_bytes = 0;
  int64_t bytes_sent = 0;  // per step, per replica: every Send of the program (TransferBytes)
  double busy = 0;         // time computing
  // Distinct parameters of the stage's layers (all its chunks): a weight tied between
  // layers of this stage counts once.
  int64_t params = 0;
  // Optimizer state per rank of this stage (float32: Adam/AdamW keep 2 values per
  // parameter, SGD with momentum 1, plain SGD none): as the plan runs, i.e. divided over
  // the data-parallel replicas when its optimizer step is sharded (ZeRO stage 1), and
  // as it would be unsharded. 0 when the program has no optimizer step.
  int64_t optimizer_state_bytes = 0;
  int64_t optimizer_state_bytes_unsharded = 0;
};

struct Timeline {
  double makespan = 0;
  double bubble_fraction = 0;  // 1 - busy / (stages * makespan)
  // Per stage, its compute ops in time order (labels "0F3", "2B1", ...).
  std::vector<std::vector<Span>> compute;
  std::vector<StageStats> stages;
  int64_t bytes_sent_per_step = 0;  // all ranks together
};

// Simulates module.programs under `costs`. FailedPrecondition when the plan has no
// programs or the programs do not run to the end (the simulator's errors, one per line).
absl::StatusOr<Timeline> SimulateTimeline(const ir::Module& module, const CostModel& costs);
// The same under CostModel::Unit.
absl::StatusOr<Timeline> SimulateTimeline(const ir::Module& module);
// The same for a Plan's programs.
absl::StatusOr<Timeline> SimulateTimeline(const ir::Plan& plan, const CostModel& costs);
absl::StatusOr<Timeline> SimulateTimeline(const ir::Plan& plan);

// ASCII chart, one row per stage ("stage S  |..."). When every op starts and ends on a
// whole time unit (unit costs) and the makespan is at most kMaxUnitColumns: one
// '|'-separated cell per time unit, each op's label spanning the cells of its duration,
// '.' for an idle unit, e.g. "stage 0  |0F0|0F1|.  |0B0    |". Otherwise scaled to
// `max_columns` columns after a line giving the scale: each op drawn over its columns as
// '|' and its label (or its F/B/I/W letter when the label does not fit), '.' idle, e.g.
// "stage 0  |0F0 |F|...|0B0     |".
inline constexpr int kMaxUnitColumns = 2000;
std::string RenderTimeline(const Timeline& timeline, int max_columns = 120);

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_TIMELINE_H_
