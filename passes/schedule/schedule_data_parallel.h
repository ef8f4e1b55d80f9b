#ifndef PPC_PASSES_SCHEDULE_SCHEDULE_DATA_PARALLEL_H_
#define PPC_PASSES_SCHEDULE_SCHEDULE_DATA_PARALLEL_H_

#include "compiler/pass.h"

namespace ppc::passes {

// P=1 gradient accumulation: F0 B0 F1 B1 ... (the seed's train_base). Fails unless num_stages == 1.
class ScheduleDataParallel : public Pass {
 public:
  std::string name() const override { return "schedule-data-parallel"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_SCHEDULE_DATA_PARALLEL_H_
