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

bool IsTraining(const ir::Plan& plan) {
  for (const auto& p : plan.programs())
    for (const auto& in : p.instructions())
      if ((in.has_compute() && in.compute().kind() != ir::FORWARD) || in.has_optimizer_step()) return true;
  return false;
}

ir::Instruction MakeCompute(ir::ComputeKind kind, int virtual_stage, int micro_batch, int slot) {
  ir::Instruction in;
  ir::Compute* c = in.mutable_compute();
  c->set_kind(kind);
  c->set_virtual_stage(virtual_stage);
  c->set_micro_batch(micro_batch);
  c->set_slot(slot);
  return in;
}

}  // namespace ppc::passes
