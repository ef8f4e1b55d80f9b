#ifndef PPC_PASSES_LOWER_LOWER_H_
#define PPC_PASSES_LOWER_LOWER_H_

#include "compiler/pass.h"

namespace ppc::passes {

// BUFFERED -> LOWERED: everything a rank does besides compute.
//  - Loads: inputs before each forward of virtual stage 0, labels before each forward of
//    the last virtual stage.
//  - Transfers: a Recv and its Wait right before the compute op that needs them (the
//    activation across the virtual stage's input boundary before F; the gradient across
//    its output boundary before the first of B/I), a Send right after the op that
//    produced the data (F: activations; B or I: input gradients). Between one pair of
//    ranks, sends are posted in the order the receiver receives them (transfers match by
//    order, as in NCCL): a send that is ready before an earlier one in that order waits
//    to be posted after it. A send keeps its own reference to the data (its slot may move
//    on); an activation's send is waited together with the receive of that micro-batch's
//    gradient (which proves the activation arrived), every other send at the end of the
//    program. (Waiting a send earlier, e.g. when its slot is reused, can deadlock: a
//    send completes only once the peer has posted its receive.)
//  - Reductions and the step, after the last backward: ReduceTiedGrads per tie held by
//    more than one stage, ReduceGrads when data_parallel > 1, ClipGradNorm when
//    config.gradient_clipping > 0, OptimizerStep (sharded under ZeRO-1, then
//    GatherParams). Only in programs with backward ops.
class Lower : public Pass {
 public:
  std::string name() const override { return "lower"; }
  absl::Status Run(ir::Module& module) override;
};

// The same lowering on a set of programs of `plan` (the eval programs use it).
absl::Status LowerPrograms(const ir::Plan& plan, std::vector<ir::Program>& programs);

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_LOWER_H_
