#include "passes/schedule/schedule_gpipe.h"

#include "passes/schedule/schedule_util.h"

namespace ppc::passes {

absl::StatusOr<bool> ScheduleGPipe::Run(ir::Plan& plan) {
  return WriteSchedule(plan, "schedule-gpipe", [](int, int, int m) {
    std::vector<ComputeOp> ops;
    for (int i = 0; i < m; ++i) ops.push_back({true, i});
    for (int i = 0; i < m; ++i) ops.push_back({false, i});
    return ops;
  });
}

}  // namespace ppc::passes
