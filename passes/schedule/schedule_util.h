// Shared by the compute-only schedule passes: replaces the plan's programs with one
// program per stage holding only Forward/Backward instructions (slots unassigned).
#ifndef PPC_PASSES_SCHEDULE_SCHEDULE_UTIL_H_
#define PPC_PASSES_SCHEDULE_SCHEDULE_UTIL_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::passes {

// One compute step: forward (true) or backward (false) of a micro-batch.
struct ComputeOp {
  bool forward;
  int micro_batch;
};

// order(stage, num_stages, micro_batches) -> that stage's compute order.
using StageOrder = std::function<std::vector<ComputeOp>(int, int, int)>;

absl::StatusOr<bool> WriteSchedule(ir::Plan& plan, const char* pass, const StageOrder& order);

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_SCHEDULE_UTIL_H_
