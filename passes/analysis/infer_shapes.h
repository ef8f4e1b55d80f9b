#ifndef PPC_PASSES_ANALYSIS_INFER_SHAPES_H_
#define PPC_PASSES_ANALYSIS_INFER_SHAPES_H_

#include "compiler/pass.h"

namespace ppc::passes {

// Fills every layer's per-sample output spec and parameter count from the model
// input, and checks that layers sharing a tie key have the same weight shape.
class InferShapes : public Pass {
 public:
  std::string name() const override { return "infer-shapes"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_INFER_SHAPES_H_
