// Schedule passes. A schedule is its order function and nothing else: for each pipeline
// stage, the compute ops (F, B, I, W of a virtual stage on a micro-batch, as
// torch.distributed.pipelining's actions) in the order that stage runs them. The
// generic SchedulePass writes them as a COMPUTE_ONLY plan; slots, loads, transfers and
// reductions are the lowering passes' (passes/lower/).
//
// Adding a schedule: write an order function (and a check of the stages, chunks and
// micro-batches it supports), register a SchedulePass for it in passes/registry.cc,
// and add its name to ir::kSchedules. The verifier proves every order it emits.
#ifndef PPC_PASSES_SCHEDULE_SCHEDULE_H_
#define PPC_PASSES_SCHEDULE_SCHEDULE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "compiler/pass.h"
#include "ir/topology.h"

namespace ppc::passes {

struct ComputeOp {
  ir::ComputeKind kind;
  int virtual_stage;
  int micro_batch;
};

// order(grid, stage, micro_batches) -> that stage's compute ops.
using StageOrder = std::function<std::vector<ComputeOp>(const ir::Grid&, int, int)>;
// InvalidArgument when the schedule cannot run this many stages, chunks, micro-batches.
using ScheduleCheck = std::function<absl::Status(const ir::Grid&, int)>;

class SchedulePass : public Pass {
 public:
  SchedulePass(std::string name, StageOrder order, ScheduleCheck check)
      : name_(std::move(name)), order_(std::move(order)), check_(std::move(check)) {}
  std::string name() const override { return name_; }
  // LEVEL_NONE with a placement -> COMPUTE_ONLY.
  absl::Status Run(ir::Module& module) override;

 private:
  std::string name_;
  StageOrder order_;
  ScheduleCheck check_;
};

// DeepSpeed's TrainSchedule: stage s runs min(P-s-1, M) warm-up forwards, then
// alternates one forward and one backward, then drains. One chunk per stage.
std::vector<ComputeOp> OneFOneBOrder(const ir::Grid& grid, int stage, int micro_batches);
// All forwards (micro-batch by micro-batch, each through the stage's chunks), then all
// backwards in the same micro-batch order, chunks reversed.
std::vector<ComputeOp> GPipeOrder(const ir::Grid& grid, int stage, int micro_batches);
// Forwards only, in GPipe's order.
std::vector<ComputeOp> InferenceOrder(const ir::Grid& grid, int stage, int micro_batches);
// P = 1: forward and backward of each micro-batch in turn (gradient accumulation).
std::vector<ComputeOp> DataParallelOrder(const ir::Grid& grid, int stage, int micro_batches);
// Megatron-LM's interleaved 1F1B (virtual pipeline): V chunks per stage placed
// round-robin; micro-batches in groups of P through each chunk in turn; warm-up
// (P - s - 1) * 2 + (V - 1) * P forwards (all of them when M == P), then one forward
// and one backward, then the remaining backwards. Needs M a multiple of P.
std::vector<ComputeOp> Interleaved1F1BOrder(const ir::Grid& grid, int stage, int micro_batches);

absl::Status OneChunk(const ir::Grid& grid, int micro_batches);
absl::Status OneStageOneChunk(const ir::Grid& grid, int micro_batches);
absl::Status AnyShape(const ir::Grid& grid, int micro_batches);
absl::Status InterleavedShape(const ir::Grid& grid, int micro_batches);

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_SCHEDULE_H_
