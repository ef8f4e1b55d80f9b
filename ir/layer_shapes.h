// Shape inference and parameter counts for every layer kind, without LibTorch, so the
// compiler can partition, size buffers and check sends. The runtime's layer registry
// (runtime/layers.h) must build the same kinds; runtime/layers_test checks both agree.
//
// Groups. The activation between two layers is a group of tensors, in order; the model
// input is a group of one, named "input" (TensorSpec.name). At most kMaxGroupTensors
// (ir/limits.h) tensors are in a group, before and after every layer.
//  - Every kind but Fork and Add transforms the FIRST tensor of the group and passes the
//    others through unchanged; its output tensor is named after the layer.
//  - "Fork" (no attributes) pushes a copy of the first tensor onto the end of the group:
//    the copy is named after the Fork layer, the first keeps its name. This is how a
//    residual skip branch is carried over the layers in between.
//  - "Add" (no attributes) pops the LAST tensor of the group and adds it to the first;
//    both must be FLOAT32 with equal shapes, the group must hold at least two tensors,
//    and the sum, in first place, is named after the Add layer.
// A model's last layer must leave a group of exactly one tensor (the loss takes one);
// the infer-shapes pass checks that. So the residual block x + f(x) is
//   Fork, <layers of f>, Add.
// Estimated flops: Fork 0 (the runtime shares the tensor, copying nothing), Add one per
// element; neither has parameters.
#ifndef PPC_IR_LAYER_SHAPES_H_
#define PPC_IR_LAYER_SHAPES_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::ir {

struct LayerShapeInfo {
  TensorSpec output;    // per sample
  int64_t param_count;  // including a tied weight
  // Shape of the "weight" parameter (what a tie key shares); empty when there is none.
  std::vector<int64_t> weight_shape;
  // Estimated forward multiply-adds (or element operations) per sample.
  int64_t flops = 0;
};

// Output spec and parameter count of `layer` applied to one sample of `input`, with
// PyTorch's output-size formulas (floor, padding, dilation, ceil_mode). Every attribute
// is range-checked, the input and output within the limits (ir/limits.h), and counts
// overflow-checked. An attribute key the kind does not read (LayerAttributes) is refused,
// never ignored. InvalidArgument names the layer, the attribute and the shape. The
// output is named after the layer. Single-tensor use only: Fork and Add act on a group
// and are refused here (use InferGroup).
absl::StatusOr<LayerShapeInfo> InferLayer(const LayerSpec& layer, const TensorSpec& input);

struct GroupShapeInfo {
  std::vector<TensorSpec> outputs;  // the whole output group, per sample, named
  int64_t param_count = 0;          // including a tied weight
  // Shape of the "weight" parameter (what a tie key shares); empty when there is none.
  std::vector<int64_t> weight_shape;
  // Estimated forward multiply-adds (or element operations) per sample.
  int64_t flops = 0;
};

// The output group of `layer` applied to one sample of `group` (the group semantics
// above): InferLayer's checks and results for the first tensor of an ordinary kind, the
// others passed through; Fork and Add as documented. Every tensor of the group is
// checked (CheckTensorSpec) and the group's size, before and after, is in
// [1, kMaxGroupTensors]. InvalidArgument names the layer.
absl::StatusOr<GroupShapeInfo> InferGroup(const LayerSpec& layer, const std::vector<TensorSpec>& group);

// Whether `kind` acts on the whole group (Fork, Add) rather than on its first tensor.
bool IsGroupKind(const std::string& kind);

// Registered kinds, sorted.
std::vector<std::string> LayerKinds();

// Every attribute key `kind` reads, optional ones included, sorted; empty for a kind
// without attributes or an unknown kind.
std::vector<std::string> LayerAttributes(const std::string& kind);

// A per-sample tensor spec: FLOAT32 or INT64, at most kMaxTensorRank dimensions, each in
// [1, kMaxDim], at most kMaxTensorElements elements. `what` names it in the error.
absl::Status CheckTensorSpec(const TensorSpec& spec, const std::string& what);

// Attribute accessors with defaults; InvalidArgument when the attribute has another type
// or (ints) lies outside [min_value, kMaxDim], (floats) is not finite.
absl::StatusOr<int64_t> IntAttr(const LayerSpec& layer, const std::string& key,
                                std::optional<int64_t> default_value = std::nullopt, int64_t min_value = 1);
absl::StatusOr<double> FloatAttr(const LayerSpec& layer, const std::string& key,
                                 std::optional<double> default_value = std::nullopt);
absl::StatusOr<bool> BoolAttr(const LayerSpec& layer, const std::string& key, bool default_value);
// An int or an int list; a single int is repeated `n` times (kernel_size=3 -> {3,3}).
absl::StatusOr<std::vector<int64_t>> IntsAttr(const LayerSpec& layer, const std::string& key, int n,
                                              std::optional<int64_t> default_value = std::nullopt,
                                              int64_t min_value = 1);

std::string ShapeString(const TensorSpec& spec);
// The product of the dimensions; -1 if it overflows int64.
int64_t NumElements(const TensorSpec& spec);

}  // namespace ppc::ir

#endif  // PPC_IR_LAYER_SHAPES_H_
