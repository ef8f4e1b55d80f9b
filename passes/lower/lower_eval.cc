#include "passes/lower/lower_eval.h"

#include "ir/status_macros.h"
#include "passes/lower/assign_buffers.h"
#include "passes/lower/lower.h"
#include "passes/plan_util.h"
#include "passes/schedule/schedule.h"

namespace ppc::passes {

absl::Status LowerEval::Run(ir::Module& module) {
  RETURN_IF_ERROR(RequireLevel(module.header, ir::LOWERED, "lower-eval"));
  if (!IsTraining(module) || !module.eval_programs.empty()) return absl::OkStatus();
  // The same lowering any schedule gets, on a module of the header alone.
  ir::Module eval;
  eval.header = module.header;
  eval.header.set_level(ir::LEVEL_NONE);
  eval.header.mutable_config()->set_schedule("inference");
  SchedulePass schedule("schedule-inference", InferenceOrder, AnyShape);
  AssignBuffers buffers;
  Lower lower;
  for (Pass* pass : std::initializer_list<Pass*>{&schedule, &buffers, &lower}) RETURN_IF_ERROR(pass->Run(eval));
  module.eval_programs = std::move(eval.programs);
  return absl::OkStatus();
}

}  // namespace ppc::passes
