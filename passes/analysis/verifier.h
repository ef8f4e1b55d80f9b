// The plan verifier. Never mutates. Proves, for whatever the plan holds so far (its
// Plan.level says how far lowering got):
//  - the structural rules (ir/plan_check.h): placement, boundary table, every index,
//    virtual stage and transfer end on the right stage;
//  - COMPUTE_ONLY and up: each (virtual stage, micro-batch) is forwarded exactly once
//    and, when training, backwarded once (B, or I then W) after its forward;
//  - BUFFERED and up: every op of a (virtual stage, micro-batch) uses its forward's
//    slot, and no slot is reused for another one while still live;
//  - LOWERED: data (loads, received activations and gradients) is in the slot and
//    waited for before the op that needs it, sends follow the op that produced their
//    data, every post is waited exactly once, reductions and the optimizer step come
//    after every backward; between every pair of ranks the k-th send is the k-th
//    receive on the other side (transfers match by order, as NCCL matches them); and
//    the event simulation of all stages (passes/analysis/simulate.h) finishes.
// Errors are InvalidArgument and name the stage, the instruction index and text, and
// the peer. All static problems are reported together.
#ifndef PPC_PASSES_ANALYSIS_VERIFIER_H_
#define PPC_PASSES_ANALYSIS_VERIFIER_H_

#include "absl/status/status.h"
#include "compiler/pass.h"
#include "compiler/pass_pipeline.h"
#include "ir/module.h"
#include "ir/program.pb.h"

namespace ppc::passes {

// `unchanged`: the parts the pass pipeline knows to be as this verifier last passed them
// (the same header and programs, or eval programs); they are not proven again.
absl::Status VerifyPlan(const ir::Module& module, const Unchanged& unchanged = {});
absl::Status VerifyPlan(const ir::Plan& plan);

// VerifyPlan for a plan that is to run (pprun, ppc verify): also requires what a correct
// intermediate plan may still lack. Every stage loads or receives what it forwards and
// waits for it, a training schedule backwards every micro-batch and steps the optimizer
// on every stage, and the runtime's complete structural rules (buffers assigned) hold.
absl::Status VerifyRunnablePlan(const ir::Module& module);
absl::Status VerifyRunnablePlan(const ir::Plan& plan);

// The verifier as a pass (never changes the plan), for `ppc opt --passes=...,verify`.
class VerifyPass : public Pass {
 public:
  std::string name() const override { return "verify"; }
  absl::Status Run(ir::Module& module) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_VERIFIER_H_
