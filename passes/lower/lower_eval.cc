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
  // The same lowering any schedule gets, on a plan without the training programs (moved
  // out and back rather than copied: they are most of the plan).
  google::protobuf::RepeatedPtrField<ir::StageProgram> training;
  training.Swap(plan.mutable_programs());
  ir::Plan eval = plan;
  plan.mutable_programs()->Swap(&training);
  eval.set_level(ir::LEVEL_NONE);
  eval.mutable_config()->set_schedule("inference");
  SchedulePass schedule("schedule-inference", InferenceOrder, AnyShape);
  AssignBuffers buffers;
  Lower lower;
  for (Pass* pass : std::initializer_list<Pass*>{&schedule, &buffers, &lower}) RETURN_IF_ERROR(pass->Run(eval));
  plan.mutable_eval_programs()->Swap(eval.mutable_programs());
  return absl::OkStatus();
}

}  // namespace ppc::passes
