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

struct MicroBatch {
  torch::Tensor inputs;
  torch::Tensor labels;
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual absl::StatusOr<MicroBatch> Load(int64_t step, int64_t global_mb, bool inputs, bool labels) = 0;
};

class SyntheticData : public DataSource {
 public:
  // `output` is the model's per-sample output (MSE targets take its shape).
  static absl::StatusOr<std::unique_ptr<SyntheticData>> Create(const ir::ModelSpec& model, const ir::TensorSpec& output,
                                                               int micro_batch_size, uint64_t seed);
  absl::StatusOr<MicroBatch> Load(int64_t step, int64_t global_mb, bool inputs, bool labels) override;

 private:
  torch::Tensor Inputs(int64_t step, int64_t global_mb);
  ir::ModelSpec model_;
  ir::TensorSpec output_;
  int mbs_ = 1;
  uint64_t seed_ = 0;
  int64_t vocab_ = 2;
  torch::Tensor teacher_;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_DATA_H_
