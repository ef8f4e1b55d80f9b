// batch-weight-grads: the weight gradients of several micro-batches of a virtual stage
// computed in one call per layer (a Linear's as one GEMM over the concatenated inputs and
// output gradients, a Conv2d's as one convolution-backward-weight over the concatenated
// batch), instead of one small call per micro-batch.
//
// On a COMPUTE_ONLY plan that trains (after any schedule pass): every full backward B is
// split into its input backward I and its weight backward W at the same place. Then, per
// virtual stage, the W's in program order are cut into groups of K consecutive ones; every
// W of a group but the last is marked deferred (ir::Compute.deferred): it computes
// nothing and hands what its I kept to the group's last W, which computes the group's
// weight gradients at the place the schedule put that W. So W's stay where the schedule
// put them (with a zero-bubble schedule, in the bubbles) and the stage's gradient
// reduction still follows its last backward.
//
// Memory: what each I keeps for its W (passes/analysis/activations.h) is held until its
// group's W, which ppc inspect and the simulator account for. Options:
//   group=all|K            micro-batches per group (K >= 1; all: M, the default)
//   max_activations=BYTES  the largest K <= group whose peak activation bytes on every
//                          stage stay within BYTES (FailedPrecondition when even K = 1
//                          does not)
// The simulator charges a deferred W nothing and a group's W the sum of the group's W
// costs (the cost model has no figure yet for how much faster one batched call is).
#ifndef PPC_PASSES_SCHEDULE_BATCH_WEIGHT_GRADS_H_
#define PPC_PASSES_SCHEDULE_BATCH_WEIGHT_GRADS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "compiler/pass.h"
#include "ir/module.h"

namespace ppc::passes {

// The plan's programs with B split and W's grouped K at a time (K >= 1), as above.
void BatchWeightGrads(ir::Module& module, int k);

class BatchWeightGradsPass : public Pass {
 public:
  // `group`: "" or "all" or a positive integer; `max_activations`: "" or "none" or a
  // positive byte count. Bad values are InvalidArgument from Run.
  BatchWeightGradsPass(std::string group, std::string max_activations)
      : group_(std::move(group)), max_activations_(std::move(max_activations)) {}
  std::string name() const override { return "batch-weight-grads"; }
  // COMPUTE_ONLY -> COMPUTE_ONLY.
  absl::Status Run(ir::Module& module) override;

 private:
  std::string group_, max_activations_;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_BATCH_WEIGHT_GRADS_H_
