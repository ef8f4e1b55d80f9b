// The activation cap of the split-backward schedules (zb-h1, zb-v, dualpipev): their
// option max_activations=none|1f1b|BYTES. The schedule's order is emitted as is, then
// each stage's W's run earlier (each after its own I, the oldest pending first) where
// deferring them is what would take the stage's activations, as
// passes/analysis/activations.h models them, above the cap. Only W's move, and W's wait
// for nothing on another stage, so every transfer and what waits for what across
// stages stay the same; the verifier proves the result like any order.
//
// "1f1b" caps at OneFOneBPeakActivationBytes: the peak over the stages of 1F1B's
// activations for the same model and cuts. Where a W keeps no more than its F did (the
// zero-bubble paper's assumption: a transformer layer's F saves more than its weight
// gradients need), torch's orders already stay within it and nothing moves. Where a W
// keeps more (a Linear + ReLU MLP: W needs each Linear's input and output gradient, F
// only the inputs, the ReLU's output being the next Linear's input), the cap runs W's
// earlier; the stage's peak is then 1F1B's plus at most one micro-batch's excess of W
// over F (an I turns an F's state into the larger W state before its W can run).
#ifndef PPC_PASSES_SCHEDULE_ACTIVATION_CAP_H_
#define PPC_PASSES_SCHEDULE_ACTIVATION_CAP_H_

#include <string>
#include <vector>

#include "passes/analysis/activations.h"
#include "passes/schedule/schedule.h"

namespace ppc::passes {

// `order` with its W's moved earlier (each after its I, oldest pending first) whenever
// the next op would take the stage's activations (ActivationWalk over `saved`) above
// `cap` while a W is pending. The order of everything else is unchanged.
std::vector<ComputeOp> CapActivations(const std::vector<ComputeOp>& order,
                                      const std::vector<SavedActivationBytes>& saved, int64_t cap);

// A SchedulePass whose orders are capped: `max_activations` is "none", "1f1b" or a
// number of bytes > 0 (anything else: InvalidArgument from Run).
class CappedSchedulePass : public SchedulePass {
 public:
  CappedSchedulePass(std::string name, StageOrder order, ScheduleCheck check, std::string max_activations)
      : SchedulePass(std::move(name), std::move(order), std::move(check)),
        max_activations_(std::move(max_activations)) {}
  absl::Status Run(ir::Module& module) override;

 private:
  std::string max_activations_;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_ACTIVATION_CAP_H_
