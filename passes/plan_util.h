// Small helpers shared by passes: level and prerequisite checks, instruction constructors.
#ifndef PPC_PASSES_PLAN_UTIL_H_
#define PPC_PASSES_PLAN_UTIL_H_

#include "absl/status/status.h"
#include "ir/program.pb.h"

namespace ppc::passes {

// FailedPrecondition naming the pass unless the plan is at exactly `level`.
absl::Status RequireLevel(const ir::Plan& plan, ir::PlanLevel level, const char* pass);
// FailedPrecondition unless infer-shapes / partition have run.
absl::Status RequireShapes(const ir::Plan& plan, const char* pass);
absl::Status RequirePlacement(const ir::Plan& plan, const char* pass);

// True when the schedule trains: any program has a backward op or an optimizer step.
bool IsTraining(const ir::Plan& plan);

ir::Instruction MakeCompute(ir::ComputeKind kind, int virtual_stage, int micro_batch, int slot = 0);

}  // namespace ppc::passes

#endif  // PPC_PASSES_PLAN_UTIL_H_
