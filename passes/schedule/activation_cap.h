// The activation cap of the split-backward schedules (zb-h1, zb-v, dualpipev): their
// option max_activations=none|1f1b|BYTES. The schedule's orders are emitted as they are,
// then replayed together at unit costs (F, I, W 1, B 2, transfers free), with each
// stage's activations walked as passes/analysis/activations.h models them.
//
// First in the schedule's order. Where the next op would take a stage above the cap:
//   1. its pending W's run first, the oldest first (each after its own I);
//   2. an I that would still cross runs as a full B (I then W at once: what W would
//      keep is never held), and its W is dropped;
//   3. a forward that would still cross waits: the stage runs instead the first B or I
//      further down its order that is ready at that moment (capped as in 2), or idles
//      until one is. So does an op whose input waits behind an earlier gradient on its
//      channel (below) that the stage takes further down its order.
// Where that moved anything, or cannot hold the cap at all, the orders are replayed
// again with free choice: at each moment a stage runs a ready B or I (the earliest
// virtual stage first), else a ready forward that fits with room left for one forward
// of each later chunk it holds with none in flight (the V's first chunk on a stage must
// leave room for its last, whose backward is the first to free memory there), the latest
// virtual stage first, else a pending W; rules 1 and 2 as above. The shorter of the two
// replays wins, the schedule's order on a tie. When neither can finish because the cap
// holds a forward back, the cap cannot be held: FailedPrecondition, naming the stage,
// the forward and its bytes (Internal when neither finished for another reason).
//
// In both, a transfer between stages is taken only after every gradient produced on the
// same channel before it: lower posts a channel's transfers in the order the receiver
// takes them, and a gradient's slot is freed at the B or W that made it, so it must not
// wait behind a later transfer. Each stage's new order is the order it ran its ops in
// the replay, so the orders are deadlock-free together; the verifier proves them like
// any order. Where the cap is never reached nothing moves. Orders that cannot finish even
// uncapped are the schedule's error (Internal), whatever the cap.
//
// "1f1b" caps at OneFOneBPeakActivationBytes: the peak over the stages of 1F1B's
// activations for the same model and cuts. Torch's ZB-H1 order stays within it where a
// W keeps no more than its F did (the zero-bubble paper's assumption: a transformer
// layer's F saves more than its weight gradients need). Where a W keeps more (a Linear +
// ReLU MLP: W needs each Linear's input and output gradient, F only the inputs), rules 1
// and 2 hold it exactly; ZB-H1's forwards are 1F1B's, so rule 3 never fires. The V holds
// two chunks' boundary tensors per micro-batch where 1F1B's stage holds one, so torch's
// ZB-V order crosses 1F1B's peak with its forwards alone; capped, the free choice holds
// it at the cost of the bubble the V hid, which is why zb-v is uncapped by default.
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
