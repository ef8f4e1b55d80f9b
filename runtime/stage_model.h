// The model state of one pipeline stage: the layers of its virtual stages (chunks) with
// their deterministic initial weights, tied weights shared within the stage, and the
// stage's distinct parameters and gradients flattened into two buffers. Forward and
// Backward run one virtual stage on one micro-batch, taking and returning groups of
// tensors (ir/layer_shapes.h: what crosses a boundary is a group), with activation
// checkpointing when the plan asks for it.
#ifndef PPC_RUNTIME_STAGE_MODEL_H_
#define PPC_RUNTIME_STAGE_MODEL_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <torch/csrc/autograd/edge.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "ir/program.pb.h"
#include "ir/topology.h"
#include "runtime/layers.h"

namespace ppc::runtime {

using Group = std::vector<torch::Tensor>;

struct NamedParameter {
  int layer;  // global layer index
  std::string name;
  torch::Tensor value;
};

// A layer with parameters in a split-backward forward: the graph edges of its
// differentiable outputs (where I captures the gradients that W needs; the edges, not
// the output tensors, so their storage is not held) and the range of autograd sequence
// numbers its graph nodes took (the nodes W runs through; I frees every other node's
// saved tensors).
// For a layer that batches its weight gradient (Layer::BatchesWeightGrads), also its
// index in the stage's layers and its input, which its own graph node saved anyway.
struct WeightedLayer {
  std::vector<torch::autograd::Edge> outputs;
  std::vector<torch::Tensor> params;
  uint64_t first_node = 0, end_node = 0;
  int layer = -1;
  torch::Tensor input;
};

// What an input backward (I) keeps for the weight backward (W) of one layer: the graph
// edges of the layer's differentiable outputs (its own nodes, which hold the tensors
// the weight gradient needs, e.g. a Linear's input) and the gradients that flowed into
// them.
struct WeightWork {
  std::vector<torch::autograd::Edge> roots;
  Group grads;
  std::vector<torch::Tensor> params;
  int layer = -1;  // as WeightedLayer's: set where the layer batches its weight gradient
  torch::Tensor input;
};

// What a training forward of one (virtual stage, micro-batch) leaves for its backward.
// It holds the autograd graph by its edges, not by the output tensors: an activation
// stays alive only while a graph node saved it (or the send of an output holds it).
struct SavedForward {
  Group inputs;  // the input group; FLOAT32 members require grad past virtual stage 0
  // The backward's roots: the graph edges of the FLOAT32 outputs that depend on
  // something trainable, each with the index of its gradient among the output
  // gradients; or, on the last virtual stage, the edge of loss / M (root_grad -1: its
  // gradient is one). Empty with activation checkpointing (the backward recomputes them).
  std::vector<torch::autograd::Edge> roots;
  std::vector<int> root_grad;
  // Activation checkpointing: the input group of every segment of layers, and the
  // labels to recompute the last virtual stage's loss with.
  std::vector<Group> segment_inputs;
  torch::Tensor labels;
  ForwardContext ctx;
  // Split backward (the forward was told the backward is I then W): the layers with
  // parameters (not with checkpointing, where I recomputes them), and the sequence
  // numbers of every graph node this forward made.
  bool split = false;
  std::vector<WeightedLayer> weighted;
  uint64_t first_node = 0, end_node = 0;
  // After I: what W needs. I keeps exactly this (the graph nodes of the layers that have
  // parameters, and their output gradients); everything else is freed at I.
  std::vector<WeightWork> weight_work;
  bool input_done = false;  // I ran; only W may follow
  bool forwarded = false;   // a training forward filled this (and no B or I consumed it)
  // A forward left state that no backward has consumed yet.
  bool has_forward() const { return forwarded || input_done; }
  void Clear() { *this = SavedForward(); }
};

class StageModel {
 public:
  // A virtual stage of this stage: layers_[first_layer, end_layer) are global layers
  // [begin, end); params: their distinct parameters.
  struct Chunk {
    int virtual_stage, begin, end;
    int first_layer, end_layer;
    std::vector<torch::Tensor> params;
  };

  // Builds the layers of `stage`'s virtual stages (chunk order, ascending layers), each
  // tied weight shared within the stage and initialised from the first layer of its tie
  // group wherever that layer lives. Appends every problem to `problems` (the model is
  // then unusable).
  static std::unique_ptr<StageModel> Build(const ir::Plan& plan, const ir::Grid& grid, int stage,
                                           std::vector<std::string>& problems);

  // Moves the distinct parameters into flat buffers of `size` values (>= their count;
  // padding is zero) on `device` and rebinds every layer, so that every parameter and
  // every .grad is a view of flat_params() / flat_grads(). Before it, the layers live
  // on the CPU, where their initial weights are drawn.
  void Flatten(int64_t size, const torch::Device& device);

  // Forward of virtual stage `vs` on `inputs`: its output group (the model's output on
  // the last virtual stage). With labels on the last virtual stage, *loss becomes the
  // micro-batch's mean loss. `saved` null: no autograd graph is kept (evaluation).
  // Otherwise it receives what Backward needs; the FLOAT32 inputs past virtual stage 0
  // (received leaves) start to require grad. `split`: the backward will be I then W, so
  // the forward notes where the gradients of the layers with parameters flow (a full B
  // works on it too).
  Group Forward(int vs, Group inputs, const torch::Tensor& labels, const ForwardContext& ctx, SavedForward* saved,
                torch::Tensor* loss, bool split = false) const;
  // Backward of virtual stage `vs` from the gradients of its FLOAT32 outputs
  // (`output_grads`, in order; none on the last virtual stage, whose root is the scaled
  // loss): returns the gradients of its FLOAT32 inputs (zeros where an input did not
  // matter; empty on virtual stage 0). BACKWARD and BACKWARD_WEIGHT accumulate into the
  // parameters' gradients and consume `saved`. BACKWARD_INPUT computes the input
  // gradients only (autograd computes no weight gradient it is not asked for) and keeps,
  // for the BACKWARD_WEIGHT that follows, each parameterised layer's graph nodes and
  // output gradient, freeing every other saved tensor of the forward; W computes the
  // weight gradients from them without going through any activation gradient again.
  // Under activation checkpointing I recomputes each segment once and W recomputes
  // nothing.
  // BACKWARD_WEIGHT returns an empty group. The caller checks that `saved` is a
  // forward's (for W: one whose I ran) and that `output_grads` are complete.
  Group Backward(ir::ComputeKind kind, int vs, SavedForward& saved, const Group& output_grads);

  // The weight backward of a batch (the batch-weight-grads pass): `work` is what the I's
  // of several micro-batches of one virtual stage kept (their SavedForward::weight_work,
  // one after another). Each layer that batches its weight gradient
  // (Layer::BatchesWeightGrads) gets one call over all the micro-batches; any other
  // layer's weight backward runs micro-batch by micro-batch through autograd. Accumulates
  // into the parameters' gradients and clears `work` (freeing what the I's kept).
  void BatchedWeightBackward(std::vector<WeightWork>& work);

  torch::Tensor Loss(const torch::Tensor& output, const torch::Tensor& labels) const;

  const std::vector<Chunk>& chunks() const { return chunks_; }
  const Chunk& ChunkOf(int vs) const { return chunks_[grid_.ChunkOf(vs)]; }
  // This stage's weight tied as `key`, or null.
  const torch::Tensor* TiedWeight(const std::string& key) const;
  // The squared L2 norm of this stage's gradients (float64 [1]), each tied weight
  // counted on the stage of its first layer only (on the parameters' device); and
  // scaling every gradient by a one-element tensor on that device.
  torch::Tensor SquaredGradNorm() const;
  void ScaleGrads(const torch::Tensor& coef);

  const torch::Tensor& flat_params() const { return flat_params_; }
  const torch::Tensor& flat_grads() const { return flat_grads_; }
  const std::vector<torch::Tensor>& distinct_params() const { return unique_params_; }
  int64_t NumParameters() const;

  // Global indices of the layers this stage holds, ascending.
  std::vector<int> HeldLayers() const;
  // Parameters by global layer index (a tied weight appears per layer).
  std::vector<NamedParameter> Parameters() const;
  // Each distinct parameter once, with the first layer of this stage that holds it.
  std::vector<NamedParameter> DistinctParameters() const;
  // Overwrites a parameter's values (shape checked); a tied weight changes in every
  // layer that shares it. InvalidArgument naming `who` when there is no such parameter.
  absl::Status SetParameter(int layer, const std::string& name, const torch::Tensor& value,
                            const std::string& who);
  int64_t ParameterBytes() const;

 private:
  explicit StageModel(const ir::Grid& grid) : grid_(grid) {}
  Group RunLayers(int begin, int end, Group x, const ForwardContext& ctx) const;
  // RunLayers, noting each layer with parameters in `weighted` (its output edges and
  // the sequence numbers of its graph nodes).
  Group RunLayersNoting(int begin, int end, Group x, const ForwardContext& ctx,
                        std::vector<WeightedLayer>& weighted) const;
  // The input-gradient pass of one graph (a forward, or a recomputed segment) from
  // `roots` with `root_grads`: returns the gradients of `inputs` (undefined where none
  // flowed), appends the weight work of every layer in `weighted`, and frees the saved
  // tensors of every other node made in [first_node, end_node).
  Group InputPass(const std::vector<torch::autograd::Edge>& roots, const Group& root_grads, const Group& inputs,
                  const std::vector<WeightedLayer>& weighted, uint64_t first_node, uint64_t end_node,
                  std::vector<WeightWork>& work) const;
  // The split backward's I from saved state (with or without checkpointing).
  Group BackwardInput(int vs, SavedForward& saved, const Group& output_grads);
  static void RunWeightWork(std::vector<WeightWork>& work);

  ir::Grid grid_;
  ir::LossKind loss_kind_ = ir::LOSS_UNSPECIFIED;
  int micro_batches_ = 1;  // each micro-batch contributes 1/M of the step's gradient
  // Layers per activation checkpoint segment (0: keep all activations).
  int checkpoint_interval_ = 0;
  std::vector<Chunk> chunks_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<torch::Tensor> unique_params_;
  std::map<std::string, torch::Tensor> tied_;  // tie key -> shared weight on this stage
  // Tied weights whose first holder is an earlier stage: left out of this stage's
  // share of the global gradient norm, so each tied weight is counted once.
  std::set<const void*> not_owned_;
  torch::Tensor flat_params_, flat_grads_;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_STAGE_MODEL_H_
