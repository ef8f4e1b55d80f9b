#include "passes/plan_util.h"

#include "absl/strings/str_cat.h"

namespace ppc::passes {

ir::TensorSpec StageInput(const ir::Plan& plan, int s) {
  if (s == 0) return plan.model().input();
  return StageOutput(plan, s - 1);
}

ir::TensorSpec StageOutput(const ir::Plan& plan, int s) {
  int end = plan.partition().stages(s).end();
  return plan.model().layers(end - 1).output();
}

std::vector<int64_t> BatchShape(const ir::Plan& plan, const ir::TensorSpec& spec) {
  std::vector<int64_t> shape{plan.config().micro_batch_size()};
  shape.insert(shape.end(), spec.shape().begin(), spec.shape().end());
  return shape;
}

absl::Status RequireShapes(const ir::Plan& plan, const char* pass) {
  for (const auto& l : plan.model().layers()) {
    if (l.output().dtype() == ir::DTYPE_UNSPECIFIED) {
      return absl::FailedPreconditionError(
          absl::StrCat(pass, " needs layer shapes: run infer-shapes first (layer '", l.name(), "' has none)"));
    }
  }
  return absl::OkStatus();
}

absl::Status RequirePartition(const ir::Plan& plan, const char* pass) {
  if (plan.partition().stages_size() != plan.topology().num_stages() || plan.topology().num_stages() < 1) {
    return absl::FailedPreconditionError(absl::StrCat(pass, " needs a partition into ", plan.topology().num_stages(),
                                                      " stages: run partition first"));
  }
  return absl::OkStatus();
}

absl::Status RequireSchedule(const ir::Plan& plan, const char* pass) {
  if (plan.programs_size() != plan.topology().num_stages()) {
    return absl::FailedPreconditionError(absl::StrCat(pass, " needs one program per stage: run a schedule pass first"));
  }
  return absl::OkStatus();
}

bool IsTraining(const ir::Plan& plan) {
  for (const auto& p : plan.programs())
    for (const auto& in : p.instructions())
      if (in.has_backward() || in.has_optimizer_step()) return true;
  return false;
}

ir::Instruction MakeForward(int mb, int chunk, int slot) {
  ir::Instruction in;
  in.mutable_forward()->set_micro_batch(mb);
  in.mutable_forward()->set_chunk(chunk);
  in.mutable_forward()->set_slot(slot);
  return in;
}

ir::Instruction MakeBackward(int mb, int chunk, int slot, ir::BackwardPart part) {
  ir::Instruction in;
  in.mutable_backward()->set_micro_batch(mb);
  in.mutable_backward()->set_chunk(chunk);
  in.mutable_backward()->set_slot(slot);
  in.mutable_backward()->set_part(part);
  return in;
}

}  // namespace ppc::passes
