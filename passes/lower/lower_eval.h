#ifndef PPC_PASSES_LOWER_LOWER_EVAL_H_
#define PPC_PASSES_LOWER_LOWER_EVAL_H_

#include "compiler/pass.h"

namespace ppc::passes {

// LOWERED -> LOWERED. Gives a training plan its forward-only eval programs: the
// inference schedule over the same placement, lowered by the same passes as any
// schedule (assign-buffers, lower), stored in plan.eval_programs. Evaluation then needs no
// second plan (pprun --eval, train --eval-every). Does nothing on a plan that is not
// training or already has eval programs.
class LowerEval : public Pass {
 public:
  std::string name() const override { return "lower-eval"; }
  absl::Status Run(ir::Module& module) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_LOWER_EVAL_H_
