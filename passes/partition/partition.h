#ifndef PPC_PASSES_PARTITION_PARTITION_H_
#define PPC_PASSES_PARTITION_PARTITION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "compiler/pass.h"

namespace ppc::passes {

// Splits the layers into P x V contiguous, non-empty virtual stages (P = num_stages,
// V = config.virtual_stages) and writes the boundary table (what crosses between
// virtual stages v and v + 1). Layouts (ir::Grid::Layout):
//   round-robin      virtual stage v on stage v % P (Megatron's interleaving)
//   v                V = 2: stage r holds virtual stages r and 2P-1-r (ZB-V, DualPipeV)
// Empty layout: "v" for the schedules that need it (ir::IsVSchedule), else round-robin.
// Methods (DeepSpeed's partition_method, plus explicit boundaries):
//   parameters       minimise the largest per-stage parameter count (DeepSpeed's default)
//   flops            minimise the largest per-stage compute, estimated from the layer
//                    shapes (multiply-adds; ir/layer_shapes.h)
//   uniform          balance the number of layers
//   type:REGEX       balance the layers whose kind matches REGEX (case-insensitive)
//   explicit:A:B:..  virtual stage k>0 starts at layer A, B, ... (P x V - 1 boundaries)
// Empty method: config.partition_method, else "parameters".
class PartitionPass : public Pass {
 public:
  explicit PartitionPass(std::string method, std::string layout = "")
      : method_(std::move(method)), layout_(std::move(layout)) {}
  std::string name() const override { return "partition"; }
  absl::Status Run(ir::Module& module) override;

 private:
  std::string method_, layout_;
};

// The split of `weights` (>= 0) into `parts` non-empty contiguous ranges (parts <=
// weights.size()) with the smallest largest sum; among those, the most even range sizes
// (least sum of squared sizes), then the earliest cuts. Returns each range's start.
std::vector<int> BalancedSplit(const std::vector<int64_t>& weights, int parts);

}  // namespace ppc::passes

#endif  // PPC_PASSES_PARTITION_PARTITION_H_
