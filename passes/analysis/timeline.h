// Unit-time simulation of a plan for `ppc inspect`: forward = 1, full backward = 2,
// input-only or weight-only backward = 1, communication free. Each stage runs its
// compute instructions in program order, as soon as their producer on the
// neighbouring stage has finished.
#ifndef PPC_PASSES_ANALYSIS_TIMELINE_H_
#define PPC_PASSES_ANALYSIS_TIMELINE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::passes {

struct StageStats {
  int num_slots = 0;
  int64_t activation_bytes = 0;  // num_slots * (stage input + output) per micro-batch
  int64_t bytes_sent = 0;        // per step, per replica
  int busy = 0;                  // time units computing
  int64_t params = 0;  // distinct: a weight tied within the stage counts once
  // Optimizer state per rank of this stage (float32: Adam/AdamW keep 2 values per
  // parameter, SGD with momentum 1, plain SGD none): as the plan runs, i.e. divided over
  // the data-parallel replicas when its optimizer step is sharded (ZeRO stage 1), and
  // as it would be unsharded.
  int64_t optimizer_state_bytes = 0;
  int64_t optimizer_state_bytes_unsharded = 0;
};

struct Timeline {
  int makespan = 0;
  double bubble_fraction = 0;  // idle / (stages * makespan)
  // cells[s][t]: label of what stage s computes in unit t ("" when idle).
  std::vector<std::vector<std::string>> cells;
  std::vector<StageStats> stages;
  int64_t bytes_sent_per_step = 0;  // all ranks together
};

absl::StatusOr<Timeline> SimulateTimeline(const ir::Plan& plan);
// ASCII chart: one row per stage, one column per time unit, '.' when idle.
std::string RenderTimeline(const Timeline& timeline);

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_TIMELINE_H_
