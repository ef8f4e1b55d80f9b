#ifndef PPC_PASSES_LOWER_INSERT_GRAD_REDUCTION_H_
#define PPC_PASSES_LOWER_INSERT_GRAD_REDUCTION_H_

#include "compiler/pass.h"

namespace ppc::passes {

// Appends, on training plans, ReduceTiedGrads for every tie key held on two or more
// stages (sorted by key, so all stages agree on the order), ReduceGrads when
// data_parallel > 1, ClipGradNorm over all stages when config.gradient_clipping > 0,
// then OptimizerStep. With config.zero_stage 1 and data_parallel > 1 the step is
// sharded (each replica updates its slice) and a GatherParams follows it. A zero_stage
// other than 0 or 1 is an error.
class InsertGradReduction : public Pass {
 public:
  std::string name() const override { return "insert-grad-reduction"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_INSERT_GRAD_REDUCTION_H_
