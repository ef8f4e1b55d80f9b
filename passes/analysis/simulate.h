// The one event simulator of a plan's programs: the verifier's deadlock and ordering
// check, the `ppc inspect` timeline, bubble and memory figures and the cost model all
// run it. Its semantics below are the contract between the verifier and the transport
// (NCCL): a plan that simulates without errors runs to the end on any transport that
// gives at least these guarantees.
//
// Semantics. Simulate runs ONE data-parallel replica: one StageProgram per pipeline
// stage, all replicas being identical.
//  - Each stage runs its instructions in program order on its own clock, from 0.
//  - Compute takes its cost, CostModel's entry for its kind (F, B, I, W) and virtual
//    stage. LoadMicroBatch, Send and Recv posts, ReduceGrads, OptimizerStep and
//    GatherParams take 0 (the last three are among data-parallel replicas).
//  - Posts never block. Between one ordered pair of stages (sender a -> receiver b,
//    a == b allowed) the transfers are a FIFO channel: the k-th Send posted on a to b
//    pairs with the k-th Recv posted on b from a (k from 0), whatever they name, as NCCL
//    matches by order, not by tag. The peer of a Send/Recv is the stage of the virtual
//    stage at the other end of its boundary (ir::Grid::PeerStage). When the k-th send
//    and the k-th receive name different transfers (direction, boundary or micro-batch)
//    that is an error, reported once per channel (the first such k):
//      "stage A -> stage B transfer k: stage A sends <send/...> but stage B's receive k
//       is <recv/...>"
//    and the channel goes on pairing by order (as the transport would).
//  - Wait lists transfers its stage posted before (CommRef; the most recent post of
//    that transfer). A received transfer is ready at its matching send's post time +
//    latency + bytes * seconds_per_byte, bytes = TransferBytes(its direction and
//    boundary). A sent transfer is ready at the post time of its matching receive
//    (rendezvous: the strictest semantics a transport may have). A Wait blocks until
//    every listed transfer is ready; then the stage's clock is the max of its clock and
//    their ready times.
//  - ReduceTiedGrads and ClipGradNorm are collectives over the stages they list: a stage
//    blocks there until every listed stage is at the same collective (same instruction
//    kind, same tie_key); then all of them continue at the max of their arrival times.
//  - If no stage can proceed and some are not finished, that is a deadlock, one error:
//      "deadlock: no stage can proceed:" and, per stuck stage (at most
//      kMaxDeadlockLines, then a count), a line "\n    " +
//      "stage S instruction I (<ir::PrintInstruction>) waits for stage T to post <the
//       counterpart, e.g. send/activation/0/3>" or
//      "stage S instruction I (<...>) needs stage T at the same collective".
//  - When every program ran to the end, a channel whose sends and receives differ in
//    number is an error: "stage A -> stage B: stage A's send k (<send/...>) has no
//    matching receive on stage B" (or "stage B's receive k (<recv/...>) has no matching
//    send on stage A").
// Malformed programs (a compute of a virtual stage placed on another stage, a transfer
// over a boundary this stage is not an end of or of a micro-batch out of range, a Wait
// on a transfer not posted before, a collective naming a stage out of range, programs
// or costs of the wrong size) are not simulated: Simulate returns InvalidArgument naming the stage and instruction.
//
// Cost: linear in the number of instructions plus, per collective, its stages squared.
// Stages run until they block and are woken by the post or the arrival they wait for.
#ifndef PPC_PASSES_ANALYSIS_SIMULATE_H_
#define PPC_PASSES_ANALYSIS_SIMULATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/module.h"
#include "ir/program.pb.h"

namespace ppc::passes {

struct CostModel {
  // Per virtual stage: the time of one micro-batch's F, B (full backward), I (input
  // grad), W (weight grad). Each must have one entry per virtual stage, finite, >= 0.
  std::vector<double> forward, backward, backward_input, backward_weight;
  // A transfer is available to its receiver `latency + bytes * seconds_per_byte` after
  // its send was posted (both 0 by default: communication free).
  double latency = 0, seconds_per_byte = 0;

  // F=1, B=2, I=1, W=1 for every virtual stage (`ppc inspect --unit-costs`).
  static CostModel Unit(const ir::Plan& plan);
  // Per layer: forward = LayerSpec.forward_cost when > 0, else the estimate
  // (2 * param_count + elements of the layer's output group) * micro_batch_size;
  // backward = backward_cost when > 0, else 2 * forward; I = W = backward / 2. Summed
  // over each virtual stage's layers [begin, end) of plan.placement(). Errors: no
  // placement, a range outside the model, or a layer without forward_cost whose output
  // group has not been inferred.
  static absl::StatusOr<CostModel> FromPlan(const ir::Plan& plan);
};

// Bytes of one micro-batch's transfer across `boundary` in `direction`:
// micro_batch_size * sum over plan.boundaries(boundary).tensors() (GRADIENT: the
// FLOAT32 ones only) of elements * (8 for INT64, else 4). Saturates at INT64_MAX; 0 when
// the boundary is not in the table.
int64_t TransferBytes(const ir::Plan& plan, ir::Direction direction, int boundary);

struct Span {
  int instruction;  // index in the stage's program
  double start, end;
  std::string label;  // ir::OpName, e.g. "0F3", "2B1"
};

struct Simulation {
  double makespan = 0;  // the latest stage clock
  // 1 - sum(busy) / (stages * makespan); 0 when makespan is 0.
  double bubble_fraction = 0;
  std::vector<std::vector<Span>> compute;  // per pipeline stage, the Compute ops in time order
  std::vector<double> busy;                // per stage, time computing
  // Per stage: the most buffers holding a (virtual stage, micro-batch) at once; one is
  // live from the first to the last instruction that names its slot for one (virtual
  // stage, micro-batch) (a send or receive names its own end's virtual stage; a load of
  // inputs virtual stage 0, of labels the last). A receive's buffer is live from its
  // post, so a receive posted early (place-comm) while its slot's previous occupant is
  // still live counts as one more. 0 with SimulateOptions::count_live_slots off.
  std::vector<int> peak_live_slots;
  // Order mismatches, deadlock, unmatched posts; empty when the programs run to the
  // end. With errors, the figures above cover what ran.
  std::vector<std::string> errors;
};

struct SimulateOptions {
  // Fill Simulation::compute (a label per compute op); off for checks that only need
  // the errors and the figures.
  bool record_spans = true;
  // Fill Simulation::peak_live_slots; off for checks that only need the errors.
  bool count_live_slots = true;
  // Check that the k-th send and the k-th receive of every channel name the same
  // transfer, and that no post is left unmatched (the errors above). Off only for a
  // caller that has checked it already (the verifier's channel check).
  bool check_pairing = true;
};

inline constexpr int kMaxDeadlockLines = 64;

// Runs one data-parallel replica's programs (`programs`: one per pipeline stage, in
// stage order; a Module's programs or eval_programs) under the semantics above. The plan
// (a Module's header) supplies the topology, placement, boundary table, micro_batches
// and micro_batch_size.
absl::StatusOr<Simulation> Simulate(const ir::Plan& plan, const std::vector<ir::Program>& programs,
                                    const CostModel& costs, const SimulateOptions& options = {});
// The same over protobuf programs (plan.programs() or plan.eval_programs()).
absl::StatusOr<Simulation> Simulate(const ir::Plan& plan,
                                    const google::protobuf::RepeatedPtrField<ir::StageProgram>& programs,
                                    const CostModel& costs, const SimulateOptions& options = {});

}  // namespace ppc::passes

#endif  // PPC_PASSES_ANALYSIS_SIMULATE_H_
