#include "passes/schedule/schedule_data_parallel.h"

#include "absl/strings/str_cat.h"
#include "passes/schedule/schedule_util.h"

namespace ppc::passes {

absl::StatusOr<bool> ScheduleDataParallel::Run(ir::Plan& plan) {
  if (plan.topology().num_stages() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("schedule-data-parallel needs num_stages == 1, got ",
                                                   plan.topology().num_stages(), "; use schedule-1f1b or schedule-gpipe"));
  }
  return WriteSchedule(plan, "schedule-data-parallel", [](int, int, int m) {
    std::vector<ComputeOp> ops;
    for (int i = 0; i < m; ++i) {
      ops.push_back({true, i});
      ops.push_back({false, i});
    }
    return ops;
  });
}

}  // namespace ppc::passes
