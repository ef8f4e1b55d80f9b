// The activation cap of the split-backward schedules (zb-h1, zb-v, dualpipev): their
// option max_activations=none|1f1b|BYTES. The schedule's orders are emitted as they are,
// then replayed together, every stage in its order, at unit costs (F, I, W 1, B 2,
// transfers free), with each stage's activations walked as passes/analysis/activations.h
// models them. Where the next op would take a stage above the cap:
//   1. its pending W's run first, the oldest first (each after its own I);
//   2. an I that would still cross runs as a full B (I then W at once: what W would
//      keep is never held), and its W is dropped;
//   3. a forward that would still cross waits: the stage runs instead the first B or I
//      further down its order that is ready at that moment (capped as in 2), or idles
//      until one is. When no stage can run anything, the cap cannot be held in this
//      order: FailedPrecondition, naming the stage, the forward and its bytes.
// Each stage's new order is the order it ran its ops in that replay, so every op still
// comes after everything it needs and the orders are deadlock-free together; the
// verifier proves them like any order. Where the cap is never reached nothing moves:
// the schedule's own order is emitted.
//
// "1f1b" caps at OneFOneBPeakActivationBytes: the peak over the stages of 1F1B's
// activations for the same model and cuts. Torch's ZB-H1 order stays within it where a
// W keeps no more than its F did (the zero-bubble paper's assumption: a transformer
// layer's F saves more than its weight gradients need). Where a W keeps more (a Linear +
// ReLU MLP: W needs each Linear's input and output gradient, F only the inputs), rules 1
// and 2 hold it exactly; ZB-H1's forwards are 1F1B's, so rule 3 never fires. The V holds
// two chunks' boundary tensors per micro-batch where 1F1B's stage holds one, so its
// forwards alone can cross 1F1B's peak; zb-v is therefore uncapped by default, and a
// cap given to it holds (rule 3, at the cost of the bubble it hides) or is refused.
#ifndef PPC_PASSES_SCHEDULE_ACTIVATION_CAP_H_
#define PPC_PASSES_SCHEDULE_ACTIVATION_CAP_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "passes/analysis/activations.h"
#include "passes/schedule/schedule.h"

namespace ppc::passes {

// The capped orders of all stages. orders[s]: stage s's compute ops; stage_of[v]: the
// stage that runs virtual stage v; saved[v]: what v keeps (ActivationWalk). Internal
// when the orders cannot all run (an op needs one that never comes).
absl::StatusOr<std::vector<std::vector<ComputeOp>>> CapActivations(const std::vector<std::vector<ComputeOp>>& orders,
                                                                   const std::vector<int>& stage_of,
                                                                   const std::vector<SavedActivationBytes>& saved,
                                                                   int64_t cap);

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
