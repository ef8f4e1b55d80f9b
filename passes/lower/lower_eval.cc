#include "passes/lower/lower_eval.h"

#include "ir/status_macros.h"
#include "passes/lower/assign_buffers.h"
#include "passes/lower/insert_loads.h"
#include "passes/lower/insert_p2p.h"
#include "passes/plan_util.h"
#include "passes/schedule/schedule_inference.h"

namespace ppc::passes {

absl::StatusOr<bool> LowerEval::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequirePartition(plan, "lower-eval"));
  if (!IsTraining(plan) || plan.eval_programs_size() > 0) return false;
  // The same lowering any schedule gets, on a copy without the training programs.
  ir::Plan eval = plan;
  eval.clear_programs();
  eval.mutable_config()->set_schedule("inference");
  ScheduleInference schedule;
  AssignBuffers buffers;
  InsertLoads loads;
  InsertP2P p2p;
  for (Pass* pass : std::initializer_list<Pass*>{&schedule, &buffers, &loads, &p2p}) {
    RETURN_IF_ERROR(pass->Run(eval).status());
  }
  *plan.mutable_eval_programs() = eval.programs();
  return true;
}

}  // namespace ppc::passes
