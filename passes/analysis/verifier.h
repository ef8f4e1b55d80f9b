// The plan verifier. Never mutates. Proves, for whatever the plan holds so far:
//  - the partition covers every layer with non-empty contiguous stage ranges;
//  - every index (micro-batch, chunk, slot, peer) is in range, every send/receive
//    shape and dtype matches the model's stage boundary;
//  - every send has exactly one matching receive (peer, micro-batch, chunk, shape, dtype);
//  - each micro-batch is forwarded exactly once per stage and, when training,
//    backwarded exactly once after its forward; data (loads, received activations
//    and gradients) is ready before the instruction that needs it;
//  - no buffer slot is reused for another micro-batch while still live;
//  - every posted operation is waited exactly once; gradient reductions and the
//    optimizer step come after every backward;
//  - a joint simulation of all stages, with blocking waits and collectives, finishes
//    (no cycle of waits).
// Errors are InvalidArgument and name the stage, the instruction index and text, and
// the peer. All static problems are reported together.
#ifndef PPC_PASSES_ANALYSIS_VERIFIER_H_
#define PPC_PASSES_ANALYSIS_VERIFIER_H_

#include "absl/status/status.h"
#include "compiler/pass.h"
#include "ir/program.pb.h"

namespace ppc::passes {

absl::Status VerifyPlan(const ir::Plan& plan);

// VerifyPlan for a plan that is to run (pprun, ppc verify): also requires what a correct
// intermediate plan may still lack. Every stage loads or receives what it forwards and
// waits for it, a training schedule backwards every micro-batch and steps the optimizer
// on every stage, and the runtime's complete structural rules (buffers assigned) hold.
absl::Status VerifyRunnablePlan(const ir::Plan& plan);

// The verifier as a pass (never changes the plan), for `ppc opt --passes=...,verify`.
class VerifyPass : public Pass {
 public:
  std::string name() const override { return "verify"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_VERIFIER_H_
