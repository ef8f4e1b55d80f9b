#include "passes/lower/insert_grad_reduction.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::StatusOr<bool> InsertGradReduction::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireSchedule(plan, "insert-grad-reduction"));
  RETURN_IF_ERROR(RequirePartition(plan, "insert-grad-reduction"));
  const int zero = plan.config().zero_stage();
  if (zero != 0 && zero != 1) {
    return absl::InvalidArgumentError(absl::StrCat("insert-grad-reduction: config.zero_stage ", zero,
                                                   " is not supported; pipeline training supports ZeRO stage 0 or 1"));
  }
  if (!IsTraining(plan)) return false;
  const bool sharded = zero == 1 && plan.topology().data_parallel() > 1;
  // Tie key -> stages holding a copy.
  std::map<std::string, std::set<int>> ties;
  for (int s = 0; s < plan.partition().stages_size(); ++s) {
    for (int l = plan.partition().stages(s).begin(); l < plan.partition().stages(s).end(); ++l) {
      const std::string& key = plan.model().layers(l).tie_key();
      if (!key.empty()) ties[key].insert(s);
    }
  }
  bool changed = false;
  for (ir::StageProgram& prog : *plan.mutable_programs()) {
    bool already = false;
    for (const auto& in : prog.instructions()) already |= in.has_optimizer_step();
    if (already) continue;
    for (const auto& [key, stages] : ties) {
      if (stages.size() < 2 || !stages.count(prog.stage())) continue;
      ir::Instruction in;
      in.mutable_reduce_tied_grads()->set_tie_key(key);
      for (int s : stages) in.mutable_reduce_tied_grads()->add_stages(s);
      *prog.add_instructions() = in;
    }
    if (plan.topology().data_parallel() > 1) prog.add_instructions()->mutable_reduce_grads()->set_chunk(0);
    if (plan.config().gradient_clipping() > 0) {
      // After every reduction: the norm is taken over final, replica-averaged gradients.
      auto* clip = prog.add_instructions()->mutable_clip_grad_norm();
      clip->set_max_norm(plan.config().gradient_clipping());
      for (int s = 0; s < plan.topology().num_stages(); ++s) clip->add_stages(s);
    }
    prog.add_instructions()->mutable_optimizer_step()->set_sharded(sharded);
    if (sharded) prog.add_instructions()->mutable_gather_params()->set_chunk(0);
    changed = true;
  }
  return changed;
}

}  // namespace ppc::passes
