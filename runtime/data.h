// Deterministic synthetic data: micro-batch `global_mb` of step `step` is a pure
// function of (seed, step, global_mb), so the first stage (inputs) and the last
// (labels) agree without talking, and any data-parallel split of the same global
// batch sees the same samples. Classification labels come from a fixed random
// "teacher" over the inputs, so the loss can actually fall.
#ifndef PPC_RUNTIME_DATA_H_
#define PPC_RUNTIME_DATA_H_

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::runtime {

// Where a training data stream stands: samples drawn so far and, for a finite data
// set, the epoch, the cursor within it and the seed of its shuffle.
struct DataPosition {
  int64_t samples = 0;
  int64_t epoch = 0;
  int64_t cursor = 0;
  int64_t dataset_size = 0;  // 0: endless synthetic data
  uint64_t shuffle_seed = 0;
};

struct MicroBatch {
  torch::Tensor inputs;
  torch::Tensor labels;
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual absl::StatusOr<MicroBatch> Load(int64_t step, int64_t global_mb, bool inputs, bool labels) = 0;
  // Where the stream stands before `step`.
  virtual DataPosition PositionAt(int64_t step) const = 0;
  // Continues from a saved position: `step` reads what followed `position`.
  virtual absl::Status Resume(int64_t step, const DataPosition& position) = 0;
};

class SyntheticData : public DataSource {
 public:
  // `output` is the model's per-sample output (MSE targets take its shape). Held-out
  // data (for evaluation) draws other samples from the same task: the same teacher.
  static absl::StatusOr<std::unique_ptr<SyntheticData>> Create(const ir::ModelSpec& model, const ir::TensorSpec& output,
                                                               int micro_batch_size, int64_t global_batch,
                                                               uint64_t seed, bool held_out = false);
  absl::StatusOr<MicroBatch> Load(int64_t step, int64_t global_mb, bool inputs, bool labels) override;
  DataPosition PositionAt(int64_t step) const override;
  // Synthetic samples are a function of the step: nothing to move.
  absl::Status Resume(int64_t, const DataPosition&) override { return absl::OkStatus(); }

 private:
  torch::Tensor Inputs(int64_t step, int64_t global_mb);
  ir::ModelSpec model_;
  ir::TensorSpec output_;
  int mbs_ = 1;
  int64_t global_batch_ = 1;
  uint64_t seed_ = 0;
  uint64_t domain_ = 0;  // distinguishes held-out samples from training samples
  int64_t vocab_ = 2;
  torch::Tensor teacher_;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_DATA_H_
