#include "passes/schedule/schedule_util.h"

#include "absl/strings/str_cat.h"
#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::StatusOr<bool> WriteSchedule(ir::Plan& plan, const char* pass, const StageOrder& order) {
  RETURN_IF_ERROR(RequirePartition(plan, pass));
  const int p = plan.topology().num_stages();
  const int m = plan.config().micro_batches();
  if (m < 1) return absl::InvalidArgumentError(absl::StrCat(pass, ": config.micro_batches must be >= 1, got ", m));
  if (plan.config().micro_batch_size() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(pass, ": config.micro_batch_size must be >= 1, got ",
                                                   plan.config().micro_batch_size()));
  }
  std::string before;
  for (const auto& prog : plan.programs()) before += prog.SerializeAsString();
  plan.clear_programs();
  for (int s = 0; s < p; ++s) {
    ir::StageProgram* prog = plan.add_programs();
    prog->set_stage(s);
    for (const ComputeOp& op : order(s, p, m)) {
      *prog->add_instructions() = op.forward ? MakeForward(op.micro_batch, 0, 0) : MakeBackward(op.micro_batch, 0, 0);
    }
  }
  std::string after;
  for (const auto& prog : plan.programs()) after += prog.SerializeAsString();
  return before != after;
}

}  // namespace ppc::passes
