#include "passes/lower/lower_eval.h"

#include "ir/status_macros.h"
#include "passes/lower/assign_buffers.h"
#include "passes/lower/lower.h"
#include "passes/plan_util.h"
#include "passes/schedule/schedule.h"

namespace ppc::passes {

absl::Status LowerEval::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireLevel(plan, ir::LOWERED, "lower-eval"));
  if (!IsTraining(plan) || plan.eval_programs_size() > 0) return absl::OkStatus();
  // The same lowering any schedule gets, on a copy without the training programs.
  ir::Plan eval = plan;
  eval.clear_programs();
  eval.clear_eval_programs();
  eval.set_level(ir::LEVEL_NONE);
  eval.mutable_config()->set_schedule("inference");
  SchedulePass schedule("schedule-inference", InferenceOrder, AnyShape);
  AssignBuffers buffers;
  Lower lower;
  for (Pass* pass : std::initializer_list<Pass*>{&schedule, &buffers, &lower}) RETURN_IF_ERROR(pass->Run(eval));
  *plan.mutable_eval_programs() = eval.programs();
  return absl::OkStatus();
}

}  // namespace ppc::passes
