// Small helpers shared by passes: level and prerequisite checks, instruction constructors.
#ifndef PPC_PASSES_PLAN_UTIL_H_
#define PPC_PASSES_PLAN_UTIL_H_

#include "absl/status/status.h"
#include "ir/topology.h"
#include "ir/module.h"
#include "ir/program.pb.h"

namespace ppc::passes {

// FailedPrecondition naming the pass unless the plan is at exactly `level`.
absl::Status RequireLevel(const ir::Plan& plan, ir::PlanLevel level, const char* pass);
// FailedPrecondition unless infer-shapes / partition have run.
absl::Status RequireShapes(const ir::Plan& plan, const char* pass);
absl::Status RequirePlacement(const ir::Plan& plan, const char* pass);

// True when the schedule trains: any program has a backward op or an optimizer step.
bool IsTraining(const ir::Module& module);

// InvalidArgument naming the pass, stage and instruction unless `op`'s virtual stage runs
// on stage `s` and its micro-batch is in [0, micro_batches): what a pass must know before
// it indexes its tables by (chunk, micro-batch). The verifier proves it for every plan a
// pass gets with verification on; this keeps an unverified plan from crashing one.
absl::Status RequireOwnOp(const ir::Grid& grid, const ir::Program& prog, int i, int virtual_stage, int micro_batches,
                          const char* pass);

}  // namespace ppc::passes

#endif  // PPC_PASSES_PLAN_UTIL_H_
