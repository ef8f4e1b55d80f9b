#ifndef PPC_PASSES_SCHEDULE_SCHEDULE_GPIPE_H_
#define PPC_PASSES_SCHEDULE_SCHEDULE_GPIPE_H_

#include "compiler/pass.h"

namespace ppc::passes {

// GPipe: every forward, then every backward in micro-batch order. Live activations: M on every stage.
class ScheduleGPipe : public Pass {
 public:
  std::string name() const override { return "schedule-gpipe"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_SCHEDULE_GPIPE_H_
