#ifndef PPC_PASSES_ANALYSIS_INFER_SHAPES_H_
#define PPC_PASSES_ANALYSIS_INFER_SHAPES_H_

#include "absl/status/status.h"
#include "compiler/pass.h"

namespace ppc::passes {

// Fills every layer's per-sample output group (LayerSpec.outputs, ir/layer_shapes.h's
// group semantics) and parameter count from the model input (a group of one, named
// "input"), checks that layers sharing a tie key have the same weight shape, and that the
// last layer leaves a group of exactly one tensor (the loss takes one). Needs and leaves
// a LEVEL_NONE plan (shapes come before partitioning and scheduling).
class InferShapes : public Pass {
 public:
  std::string name() const override { return "infer-shapes"; }
  absl::Status Run(ir::Module& module) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_INFER_SHAPES_H_
