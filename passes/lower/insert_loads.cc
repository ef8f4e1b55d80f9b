#include "passes/lower/insert_loads.h"

#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::StatusOr<bool> InsertLoads::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireSchedule(plan, "insert-loads"));
  const int p = plan.topology().num_stages();
  bool changed = false;
  for (ir::StageProgram& prog : *plan.mutable_programs()) {
    const int s = prog.stage();
    if (s != 0 && s != p - 1) continue;
    bool already = false;
    for (const auto& in : prog.instructions()) already |= in.has_load_micro_batch();
    if (already) continue;
    google::protobuf::RepeatedPtrField<ir::Instruction> out;
    for (const ir::Instruction& in : prog.instructions()) {
      if (in.has_forward()) {
        ir::Instruction load;
        load.mutable_load_micro_batch()->set_micro_batch(in.forward().micro_batch());
        load.mutable_load_micro_batch()->set_slot(in.forward().slot());
        load.mutable_load_micro_batch()->set_inputs(s == 0);
        load.mutable_load_micro_batch()->set_labels(s == p - 1);
        *out.Add() = load;
        changed = true;
      }
      *out.Add() = in;
    }
    prog.mutable_instructions()->Swap(&out);
  }
  return changed;
}

}  // namespace ppc::passes
