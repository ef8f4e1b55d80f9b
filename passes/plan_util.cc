#include "passes/plan_util.h"

#include "absl/strings/str_cat.h"

namespace ppc::passes {

absl::Status RequireLevel(const ir::Plan& plan, ir::PlanLevel level, const char* pass) {
  if (plan.level() == level) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(pass, " needs a ", ir::PlanLevel_Name(level), " plan; this one is ",
                                                    ir::PlanLevel_Name(plan.level())));
}

absl::Status RequireShapes(const ir::Plan& plan, const char* pass) {
  for (const auto& l : plan.model().layers()) {
    if (l.outputs_size() == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(pass, " needs layer shapes: run infer-shapes first (layer '", l.name(), "' has none)"));
    }
  }
  return absl::OkStatus();
}

absl::Status RequirePlacement(const ir::Plan& plan, const char* pass) {
  const int chunks = std::max(1, plan.config().virtual_stages());
  if (plan.topology().num_stages() < 1 ||
      plan.placement().virtual_stages_size() != plan.topology().num_stages() * chunks ||
      plan.boundaries_size() != plan.placement().virtual_stages_size() - 1) {
    return absl::FailedPreconditionError(absl::StrCat(pass, " needs a placement of ", plan.topology().num_stages(),
                                                      " x ", chunks, " virtual stages: run partition first"));
  }
  return absl::OkStatus();
}

bool IsTraining(const ir::Module& module) {
  for (const ir::Program& p : module.programs)
    for (const ir::Op& op : p.ops)
      if ((op.is(ir::OpCode::kCompute) && op.kind != ir::FORWARD) || op.is(ir::OpCode::kOptimizerStep)) return true;
  return false;
}

absl::Status RequireOwnOp(const ir::Grid& grid, const ir::Program& prog, int i, int virtual_stage, int micro_batches,
                          const char* pass) {
  const int mb = prog.ops[i].micro_batch;
  if (virtual_stage >= 0 && virtual_stage < grid.virtual_stages() && grid.StageOf(virtual_stage) == prog.stage &&
      mb >= 0 && mb < micro_batches) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(pass, ": stage ", prog.stage, " instruction ", i, " (",
                                                 ir::PrintOp(prog, i), ") names virtual stage ", virtual_stage,
                                                 " micro-batch ", mb, ", which stage ", prog.stage,
                                                 " does not run (verify the plan)"));
}

}  // namespace ppc::passes
