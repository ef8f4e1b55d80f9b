#ifndef PPC_PASSES_SCHEDULE_SCHEDULE_1F1B_H_
#define PPC_PASSES_SCHEDULE_SCHEDULE_1F1B_H_

#include "compiler/pass.h"

namespace ppc::passes {

// DeepSpeed's TrainSchedule: stage s runs min(P-s-1, M) warm-up forwards, then alternates one forward and one backward, then drains the remaining backwards. Live activations on stage s: min(P-s, M).
class Schedule1F1B : public Pass {
 public:
  std::string name() const override { return "schedule-1f1b"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_SCHEDULE_1F1B_H_
