// Small helpers shared by passes: stage boundaries, instruction constructors.
#ifndef PPC_PASSES_PLAN_UTIL_H_
#define PPC_PASSES_PLAN_UTIL_H_

#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::passes {

// Per-sample tensor entering stage `s` (the model input for s == 0). Needs infer-shapes.
ir::TensorSpec StageInput(const ir::Plan& plan, int s);
// Per-sample tensor leaving stage `s`.
ir::TensorSpec StageOutput(const ir::Plan& plan, int s);
// [micro_batch_size] + per-sample shape.
std::vector<int64_t> BatchShape(const ir::Plan& plan, const ir::TensorSpec& spec);

// FailedPrecondition unless infer-shapes and partition have run.
absl::Status RequireShapes(const ir::Plan& plan, const char* pass);
absl::Status RequirePartition(const ir::Plan& plan, const char* pass);
absl::Status RequireSchedule(const ir::Plan& plan, const char* pass);

// True when any program has a backward (a training plan).
bool IsTraining(const ir::Plan& plan);

ir::Instruction MakeForward(int mb, int chunk, int slot);
ir::Instruction MakeBackward(int mb, int chunk, int slot, ir::BackwardPart part = ir::FULL);

}  // namespace ppc::passes

#endif  // PPC_PASSES_PLAN_UTIL_H_
