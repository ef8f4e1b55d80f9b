// The runtime layer registry: one entry per ModelSpec layer kind (the same kinds as
// ir/layer_shapes.h; layers_test checks they agree). A new model layer is an entry
// here and there, never a new instruction.
//
// Initial weights are a pure function of (seed, global layer index), and run-time
// randomness (dropout) of (seed, step, global micro-batch, global layer index), so
// every partition of a model starts from and draws the same numbers.
//
// Groups: the activation between layers is a group of tensors (ir/layer_shapes.h). Run a
// layer with ForwardGroup: ordinary kinds apply Forward to the first tensor and pass the
// others through; Fork pushes the first tensor itself (the same tensor object, so autograd
// sums the gradients of the two branches), Add replaces the first by first + last and pops
// the last.
#ifndef PPC_RUNTIME_LAYERS_H_
#define PPC_RUNTIME_LAYERS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::runtime {

struct ForwardContext {
  uint64_t seed = 0;
  int64_t step = 0;
  int64_t micro_batch = 0;  // global: replica * micro_batches + micro-batch
  bool training = true;
};

class Layer {
 public:
  virtual ~Layer() = default;
  // One tensor in, one out. Fork and Add have no single-tensor meaning: theirs throws
  // (c10::Error) rather than silently dropping a residual branch.
  virtual torch::Tensor Forward(const torch::Tensor& x, const ForwardContext& ctx) = 0;
  // The layer on a whole group, returned in place of it. Default: Forward on group[0],
  // the others unchanged. Throws (c10::Error) on an empty group; Add on one of fewer than
  // two tensors.
  virtual std::vector<torch::Tensor> ForwardGroup(std::vector<torch::Tensor> group, const ForwardContext& ctx);
  // Batched weight gradient (the batch-weight-grads pass): whether AccumulateWeightGrads
  // can compute this layer's parameter gradients from its inputs and output gradients
  // alone, and doing it: adds to every parameter's .grad the gradient over all the
  // micro-batches given at once (inputs[k] and output_grads[k] are micro-batch k's layer
  // input and gradient of the layer's output), one call per parameter over the
  // concatenated batch. Default: not supported (the caller runs each micro-batch's
  // weight backward through autograd instead).
  virtual bool BatchesWeightGrads() const { return false; }
  virtual void AccumulateWeightGrads(const std::vector<torch::Tensor>& inputs,
                                     const std::vector<torch::Tensor>& output_grads);
  // Parameters by name ("weight", "bias"), in a stable order.
  std::map<std::string, torch::Tensor>& params() { return params_; }
  int global_index() const { return index_; }

 protected:
  std::map<std::string, torch::Tensor> params_;
  int index_ = 0;
  friend absl::StatusOr<std::unique_ptr<Layer>> BuildLayer(const ir::LayerSpec&, int, uint64_t);
};

// Builds layer `global_index` of a model with its deterministic initial weights.
absl::StatusOr<std::unique_ptr<Layer>> BuildLayer(const ir::LayerSpec& spec, int global_index, uint64_t seed);

std::vector<std::string> RuntimeLayerKinds();

// A generator seeded by a hash of the given values.
torch::Generator MakeGenerator(std::initializer_list<uint64_t> values);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_LAYERS_H_
