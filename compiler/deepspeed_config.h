// Reads a DeepSpeed JSON config (the subset that pipeline training uses) into a
// TrainingConfig, with DeepSpeed's batch-size rules:
//   train_batch_size == train_micro_batch_size_per_gpu * gradient_accumulation_steps * D
// Any two determine the third; all three must agree. Errors name the file and key;
// unknown keys produce warnings, never silence.
#ifndef PPC_COMPILER_DEEPSPEED_CONFIG_H_
#define PPC_COMPILER_DEEPSPEED_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc {

struct DeepSpeedConfig {
  // micro_batches, micro_batch_size, optimizer, gradient_clipping, steps_per_print,
  // activation_checkpoint_interval, partition_method and zero_stage
  // (zero_optimization.stage: 0 or 1; 2 and 3 are refused) are set; the rest untouched.
  ir::TrainingConfig config;
  int64_t train_batch_size = 0;
  std::vector<std::string> warnings;
};

// `data_parallel` is the number of data-parallel replicas (DeepSpeed's world size / P).
absl::StatusOr<DeepSpeedConfig> ParseDeepSpeedConfig(const std::string& json, int data_parallel,
                                                     const std::string& where);
absl::StatusOr<DeepSpeedConfig> ReadDeepSpeedConfig(const std::string& path, int data_parallel);

}  // namespace ppc

#endif  // PPC_COMPILER_DEEPSPEED_CONFIG_H_
