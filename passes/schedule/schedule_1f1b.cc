#include "passes/schedule/schedule_1f1b.h"

#include <algorithm>

#include "passes/schedule/schedule_util.h"

namespace ppc::passes {

absl::StatusOr<bool> Schedule1F1B::Run(ir::Plan& plan) {
  return WriteSchedule(plan, "schedule-1f1b", [](int s, int p, int m) {
    std::vector<ComputeOp> ops;
    const int warmup = std::min(p - s - 1, m);
    int next_f = 0, next_b = 0;
    for (; next_f < warmup; ++next_f) ops.push_back({true, next_f});
    while (next_f < m) {
      ops.push_back({true, next_f++});
      ops.push_back({false, next_b++});
    }
    while (next_b < m) ops.push_back({false, next_b++});
    return ops;
  });
}

}  // namespace ppc::passes
