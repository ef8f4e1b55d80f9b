// The per-rank interpreter. Load validates the whole plan for this rank once (stamp,
// world size, every index, shape and peer of its stage's program), builds the stage's
// layers with deterministic weights, allocates buffers and creates communication
// groups, reporting every problem at once. RunStep is then a flat loop over the
// program that trusts what Load checked.
#ifndef PPC_RUNTIME_INTERPRETER_H_
#define PPC_RUNTIME_INTERPRETER_H_

#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ir/program.pb.h"
#include "runtime/data.h"
#include "runtime/layers.h"
#include "runtime/transport.h"

namespace ppc::runtime {

struct RuntimeOptions {
  // Every blocking wait gives up after this long with DeadlineExceeded.
  absl::Duration timeout = absl::Seconds(120);
  // "synthetic" (or empty): deterministic synthetic data; otherwise a directory with
  // CIFAR-10's binary files (runtime/cifar10.h).
  std::string data = "synthetic";
};

struct StepResult {
  // Mean loss over micro-batches and replicas; the same on every rank.
  double loss = 0;
  int64_t samples = 0;  // global batch
};

struct NamedParameter {
  int layer;  // global layer index
  std::string name;
  torch::Tensor value;
};

class StageRuntime {
 public:
  static absl::StatusOr<std::unique_ptr<StageRuntime>> Load(const ir::Plan& plan, Transport* transport,
                                                            const RuntimeOptions& options);
  ~StageRuntime();

  absl::StatusOr<StepResult> RunStep(int64_t step);

  int stage() const { return stage_; }
  int replica() const { return replica_; }
  // This stage's parameters, by global layer index (a tied weight appears per layer).
  std::vector<NamedParameter> Parameters() const;
  // Instructions executed so far (for benchmarks).
  int64_t instructions_executed() const { return executed_; }
  // Global gradient norm before clipping, from the last ClipGradNorm (0 if none ran).
  double last_grad_norm() const { return last_grad_norm_; }

 private:
  StageRuntime() = default;
  struct Slot;
  absl::Status Execute(const ir::Instruction& in, int64_t step);
  absl::Status Validate(const ir::Plan& plan);
  std::string Where(int index, const ir::Instruction& in, int64_t step) const;

  ir::Plan plan_;
  ir::StageProgram program_;
  Transport* transport_ = nullptr;
  RuntimeOptions options_;
  int rank_ = 0, stage_ = 0, replica_ = 0, num_stages_ = 1, dp_ = 1, m_ = 1;
  bool training_ = false;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<torch::Tensor> unique_params_;
  std::map<std::string, torch::Tensor> tied_;  // tie key -> shared weight on this stage
  // Tied weights whose first holder is an earlier stage: left out of this stage's
  // share of the global gradient norm, so each tied weight is counted once.
  std::set<const void*> not_owned_;
  std::vector<int> pipeline_group_;  // ranks of this replica's stages
  // Layers per activation checkpoint (0: keep all activations).
  int checkpoint_interval_ = 0;
  // Posts a send or receive of `tensor` to the peer stage's rank of this replica.
  template <typename CommInstruction>
  absl::Status Post(ir::CommKind kind, const CommInstruction& c, torch::Tensor& tensor, uint32_t tag);
  torch::Tensor RunLayers(size_t begin, size_t end, torch::Tensor x, const ForwardContext& ctx);
  torch::Tensor Loss(const torch::Tensor& out, const torch::Tensor& labels);
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<DataSource> data_;
  std::vector<std::unique_ptr<Slot>> slots_;
  struct PendingOp {
    Transport::Handle handle;
    int slot;
    int peer;  // stage
  };
  // Posted, not yet waited operations by (kind, micro-batch, chunk).
  std::map<std::tuple<int, int, int>, PendingOp> pending_;
  std::vector<int> dp_group_, world_group_;
  double loss_sum_ = 0;
  double last_grad_norm_ = 0;
  int64_t executed_ = 0;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_INTERPRETER_H_
