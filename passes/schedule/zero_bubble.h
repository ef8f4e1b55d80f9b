// Zero-bubble schedules: the backward of a micro-batch split into I (gradients of the
// inputs, what the previous virtual stage waits for) and W (gradients of the weights,
// which nothing waits for), and the W's moved into what would be bubbles. Orders as
// torch.distributed.pipelining builds them (passes/testdata/orders/ holds torch's own
// orders; passes/zero_bubble_order_test.cc compares).
//
// Memory. An I keeps its micro-batch's slot: W needs the stage's saved inputs (and the
// output gradients I computed), so a (virtual stage, micro-batch) is live from its F
// until its W (or its B), as assign-buffers gives slots. In bytes, the runtime frees at
// I what only the input gradients needed (passes/analysis/activations.h models both);
// the schedule passes cap W deferral in bytes (passes/schedule/activation_cap.h). The
// order functions here are torch's orders, uncapped.
//
// Virtual stages are global ids (ComputeOp.virtual_stage), torch's stage_index.
#ifndef PPC_PASSES_SCHEDULE_ZERO_BUBBLE_H_
#define PPC_PASSES_SCHEDULE_ZERO_BUBBLE_H_

#include <vector>

#include "absl/status/status.h"
#include "ir/topology.h"
#include "passes/schedule/schedule.h"

namespace ppc::passes {

// ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", 2023, the handcrafted schedule
// of Figure 3, top), as torch's ScheduleInterleavedZeroBubble (its "ZB1P") builds it
// with one local stage per rank. One chunk per stage. Stage s runs 1F1B's
// w = min(P - s - 1, M) warm-up forwards, then M - w steps of "F, I" and w steps of
// "I", each followed by one W (the oldest pending) once s steps have passed without one;
// the s W's held back run at the end. So the last stage defers its W's the most
// (P - 1), and the W's fill the cool-down bubbles that 1F1B's B = I + W would leave. At
// F = I = W = 1 (B = 2) each stage idles P - 1 instead of 1F1B's 3(P - 1): bubble
// (P - 1) / (3M + P - 1) against 1F1B's (P - 1) / (M + P - 1), 0.41x at P = 4, M = 8,
// tending to a third.
// Memory: every stage holds min(P, M) micro-batches between F and W at its peak. That
// is 1F1B's peak on stage 0, the largest, so the peak over the stages is 1F1B's (the
// paper's claim) in micro-batches, but stage s > 0 holds more than 1F1B's min(P - s, M)
// there; in bytes the same holds only where a W keeps no more than its F (the cap,
// activation_cap.h, handles the rest).
std::vector<ComputeOp> ZbH1Order(const ir::Grid& grid, int stage, int micro_batches);
// Any P >= 1 and M >= 1; one chunk per stage (round-robin, V = 1). (Torch's class also
// refuses M that is not a multiple of its max(1, M / P) "rounds", which with one local
// stage do not change the order; this accepts every M.)
absl::Status ZbH1Shape(const ir::Grid& grid, int micro_batches);

// ZB-V as torch's ScheduleZBVZeroBubble (the paper's Section 6): two chunks per stage
// in the V (stage r holds virtual stages r and 2P-1-r, so the model goes down the
// stages and back up and stage 0 also holds the loss). With M' = max(M, 2P - 1) (torch
// pads to 2P - 1 micro-batches and drops the ops of the padding ones):
//   warm-up:   2(P - r) - 1 forwards of chunk 0; r times "F chunk 1, F chunk 0";
//              P - r times "F, I, W" of chunk 1;
//   steady:    while chunk 0 has forwards left (or chunk 1 lags): "F chunk 0 (while any
//              left), I and W chunk 0, F, I and W chunk 1";
//   cool-down: r times "I chunk 0, I chunk 1"; P - r times "I, W chunk 0"; then the
//              remaining W's of chunk 1, then of chunk 0.
// At F = I = W = 1 each stage r computes without a gap from time r (when micro-batch 0
// reaches it) to r + 6M: only the pipeline fill remains, P - 1 per stage, bubble
// (P - 1) / (6M + P - 1). Peak in flight per stage: 2P chunk-micro-batches (M >= 2P),
// P whole stages' worth as a chunk is half a stage: 1F1B's peak (its stage 0's), on
// every stage.
std::vector<ComputeOp> ZbVOrder(const ir::Grid& grid, int stage, int micro_batches);
// Needs the V placement (two chunks per stage, grid.IsV()); any P >= 1 and M >= 1
// (torch pads smaller M to 2P - 1 and drops the padding).
absl::Status ZbVShape(const ir::Grid& grid, int micro_batches);

// DualPipeV as torch's ScheduleDualPipeV (DeepSeek's DualPipe folded into a V: the V
// placement, chunk 0 going down the stages, chunk 1 coming back up). Per stage r, with
// chunk 0 = r and chunk 1 = 2P-1-r:
//   1. 2(P - r - 1) forwards of chunk 0;
//   2. r + 1 times "F chunk 0, F chunk 1";
//   3. P - r - 1 times "I chunk 1, the oldest pending W, F chunk 1";
//   4. M - 2P + r + 1 times "F chunk 0 + B chunk 1, F chunk 1 + B chunk 0" (the first
//      pair not overlapped on the last stage: F chunk 0, then B chunk 1);
//   5. P - r - 1 times "B chunk 1, F chunk 1 + B chunk 0";
//   6. r + 1 times "B chunk 1, B chunk 0", switching to I (and deferred W) half way;
//   7. P - r - 1 times "pending W, B or I chunk 0"; 8. the pending W's.
// "F x + B y" is torch's OVERLAP_F_B action: a forward of one micro-batch overlapped
// with a FULL backward (B, not I) of another. Here it is the two compute ops back to
// back, F then B (torch's sub-action order), nothing between them. Peak in flight per stage:
// 2P + 1 chunk-micro-batches, half a stage more than ZB-V.
std::vector<ComputeOp> DualPipeVOrder(const ir::Grid& grid, int stage, int micro_batches);
// Needs the V placement (grid.IsV()) and M >= 2P, as torch ("at least as many
// microbatches as stages", its stages being the 2P virtual stages).
absl::Status DualPipeVShape(const ir::Grid& grid, int micro_batches);

}  // namespace ppc::passes

#endif  // PPC_PASSES_SCHEDULE_ZERO_BUBBLE_H_
