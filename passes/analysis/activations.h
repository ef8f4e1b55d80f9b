// The activation memory model: what the runtime's training keeps per micro-batch for
// backwards (passes/analysis/timeline.h walks programs with it; schedules cap their
// orders with it). Bytes are the runtime's CPU tensor bytes, which
// tests/interpreter_test.cc's StageModel.KeepsTheBytesThatInspectModels checks against
// a counting allocator, tensor for tensor.
#ifndef PPC_PASSES_ANALYSIS_ACTIVATIONS_H_
#define PPC_PASSES_ANALYSIS_ACTIVATIONS_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ir/program.pb.h"

namespace ppc::passes {

// What one micro-batch's training keeps on the stage that runs a virtual stage, in
// bytes: the tensors the runtime's autograd graph saves, each counted once however
// many nodes share it (a ReLU's output is the next Linear's input), with the virtual
// stage's input and output groups and the labels.
//   Linear, Conv2d, GELU, AdaptiveAvgPool2d (unless to 1x1): their input;
//   ReLU, Tanh: their output; MaxPool2d: its input and int64 indices;
//   LayerNorm: its input and a mean and an rstd per row; Dropout: a float32 mask;
//   Embedding: its indices; Flatten, Fork: nothing (views); Add: nothing;
//   cross-entropy: the log-softmax of the logits; MSE: the model output;
//   any other kind: its input and output.
// Under activation checkpointing the forward keeps each segment's input group instead
// of the graph. `weights` is what an I keeps for the W: what the layers with weights
// saved, and the gradient of each one's output.
struct SavedActivationBytes {
  int64_t forward = 0;  // from the F to its B or I
  int64_t weights = 0;  // from the I to its W
};
// Per virtual stage; empty when the placement does not fit the model or the output
// groups have not been inferred.
std::vector<SavedActivationBytes> SavedActivations(const ir::Plan& plan);

// Walks one stage's compute ops: an F adds its virtual stage's `forward`, a B frees it,
// an I frees it and adds `weights`, a W frees that. A deferred W (batch-weight-grads)
// frees nothing: the W of its virtual stage that computes the batch frees the `weights`
// of every micro-batch in it.
class ActivationWalk {
 public:
  explicit ActivationWalk(const std::vector<SavedActivationBytes>& saved) : saved_(saved), pending_(saved.size()) {}
  // The bytes held after `kind` of virtual stage v (out of range: unchanged).
  int64_t After(ir::ComputeKind kind, int v, bool deferred = false) const;
  void Apply(ir::ComputeKind kind, int v, bool deferred = false) {
    now_ = After(kind, v, deferred);
    peak_ = std::max(peak_, now_);
    if (kind == ir::BACKWARD_WEIGHT && v >= 0 && v < static_cast<int>(pending_.size())) {
      pending_[v] = deferred ? pending_[v] + 1 : 0;
    }
  }
  int64_t now() const { return now_; }
  int64_t peak() const { return peak_; }

 private:
  const std::vector<SavedActivationBytes>& saved_;
  std::vector<int64_t> pending_;  // per virtual stage: deferred W's not yet computed
  int64_t now_ = 0, peak_ = 0;
};

// The peak over the stages of 1F1B's activations for this plan's model and cuts, with
// one virtual stage per stage (every chunk of a stage that holds several, V-shaped or
// round-robin, counted as the contiguous run of virtual stages 1F1B would give it:
// stage s holds virtual stages [sV, sV + V)): 1F1B's stage s keeps min(P - s, M)
// forwards at once. 0 without inferred shapes.
int64_t OneFOneBPeakActivationBytes(const ir::Plan& plan);

// Bytes of one sample of a group (INT64 8, others 4 bytes per element; saturating).
int64_t GroupBytes(const std::vector<ir::TensorSpec>& group);
// The group of tensors entering layer l (the model input for the first layer).
std::vector<ir::TensorSpec> InputGroup(const ir::Plan& plan, int l);
int64_t SatMul(int64_t a, int64_t b);
int64_t SatAdd(int64_t a, int64_t b);

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_ACTIVATIONS_H_
