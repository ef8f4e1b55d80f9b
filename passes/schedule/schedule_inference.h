#ifndef PPC_PASSES_SCHEDULE_SCHEDULE_INFERENCE_H_
#define PPC_PASSES_SCHEDULE_SCHEDULE_INFERENCE_H_

#include "compiler/pass.h"

namespace ppc::passes {

// Forward only, in micro-batch order (DeepSpeed's InferenceSchedule).
class ScheduleInference : public Pass {
 public:
  std::string name() const override { return "schedule-inference"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_SCHEDULE_INFERENCE_H_
