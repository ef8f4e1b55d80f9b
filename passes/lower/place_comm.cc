#include "passes/lower/place_comm.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::Status PlaceReceives(const ir::Plan& plan, ir::StageProgram& prog) {
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(plan));
  const int n = prog.instructions_size();
  const int m = std::max(1, plan.config().micro_batches());
  // The (virtual stage, micro-batch) whose data an instruction touches in its slot.
  auto key_of = [&](int virtual_stage, int mb) { return int64_t{virtual_stage} * m + mb; };
  auto recv_key = [&](const ir::Recv& r) { return key_of(grid.ReceiverOf(r.direction(), r.boundary()), r.micro_batch()); };

  // Positions are counted in the instructions other than receives ("anchors"): the pass
  // only moves receives, so the anchors, and so its result, do not depend on where the
  // receives were; running it again changes nothing.
  //
  // Pass 1: each slot's occupants in order, from the uses that touch it: loads, compute
  // ops, sends (posting reads the slot) and the waits of receives (a receive fills its
  // own buffer and moves it into the slot at its wait).
  struct Occupancy {
    int64_t key;
    int last = -1;          // anchor of the last use
    int last_compute = -1;  // anchor of the last compute op
  };
  absl::flat_hash_map<int, std::vector<Occupancy>> slots;
  absl::flat_hash_map<std::pair<int, int64_t>, int> first_occupancy;  // (slot, key) -> index in slots[slot]
  absl::flat_hash_map<std::tuple<int, int, int>, int> recv_slot;    // (direction, boundary, mb) -> slot
  std::vector<int> anchor(n);
  std::vector<bool> anchor_is_wait;
  int anchors = 0;
  for (int i = 0; i < n; ++i) {
    const ir::Instruction& in = prog.instructions(i);
    anchor[i] = anchors;
    if (in.has_recv()) {
      recv_slot[{in.recv().direction(), in.recv().boundary(), in.recv().micro_batch()}] = in.recv().slot();
      continue;
    }
    const int a = anchors++;
    anchor_is_wait.push_back(in.has_wait());
    auto use = [&](int slot, int64_t key, bool compute) {
      auto& list = slots[slot];
      if (list.empty() || list.back().key != key) {
        first_occupancy.try_emplace({slot, key}, static_cast<int>(list.size()));
        list.push_back({key});
      }
      list.back().last = a;
      if (compute) list.back().last_compute = a;
    };
    switch (in.op_case()) {
      case ir::Instruction::kLoadMicroBatch: {
        // A load is for virtual stage 0 (inputs) or the last (labels).
        const int v = in.load_micro_batch().inputs() ? 0 : grid.virtual_stages() - 1;
        use(in.load_micro_batch().slot(), key_of(v, in.load_micro_batch().micro_batch()), false);
        break;
      }
      case ir::Instruction::kCompute:
        use(in.compute().slot(), key_of(in.compute().virtual_stage(), in.compute().micro_batch()), true);
        break;
      case ir::Instruction::kSend: {
        const auto& s = in.send();
        use(s.slot(), key_of(grid.SenderOf(s.direction(), s.boundary()), s.micro_batch()), false);
        break;
      }
      case ir::Instruction::kWait:
        for (const auto& ref : in.wait().ops()) {
          if (ref.send()) continue;
          auto it = recv_slot.find({ref.direction(), ref.boundary(), ref.micro_batch()});
          if (it == recv_slot.end()) continue;  // the verifier reports it
          use(it->second, key_of(grid.ReceiverOf(ref.direction(), ref.boundary()), ref.micro_batch()), false);
        }
        break;
      default:
        break;
    }
  }

  // Pass 2: each receive moves to just before the last compute op of its slot's
  // previous occupant (so that op overlaps the transfer, and at most one received
  // buffer per slot waits beside its occupant) and the waits before it, or to the start
  // when the slot had none;
  // never before an earlier receive from the same sender (transfers between two ranks
  // match in order), and never later than it was.
  std::vector<int> target(n);
  absl::flat_hash_map<int, int> last_target;  // sender stage -> target of its previous receive
  for (int i = 0; i < n; ++i) {
    const ir::Instruction& in = prog.instructions(i);
    target[i] = anchor[i];
    if (!in.has_recv()) continue;
    const ir::Recv& r = in.recv();
    int t = anchor[i];
    if (auto it = first_occupancy.find({r.slot(), recv_key(r)}); it != first_occupancy.end()) {
      if (it->second == 0) {
        t = 0;
      } else {
        const Occupancy& prev = slots[r.slot()][it->second - 1];
        t = prev.last_compute >= 0 ? prev.last_compute : prev.last + 1;
      }
      // Ahead of the waits right before that op too, so they stay next to their use.
      while (t > 0 && anchor_is_wait[t - 1]) --t;
    }
    const int sender = grid.PeerStage(false, r.direction(), r.boundary());
    if (auto it = last_target.find(sender); it != last_target.end()) t = std::max(t, it->second);
    target[i] = std::min(t, anchor[i]);
    last_target[sender] = target[i];
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  // Receives sort before the instruction at their anchor; ties keep program order.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    auto pos = [&](int i) { return std::make_pair(target[i], prog.instructions(i).has_recv() ? 0 : 1); };
    return pos(a) < pos(b);
  });
  google::protobuf::RepeatedPtrField<ir::Instruction> out;
  out.Reserve(n);
  for (int i : order) out.Add()->Swap(prog.mutable_instructions(i));
  prog.mutable_instructions()->Swap(&out);
  return absl::OkStatus();
}

absl::Status PlaceComm::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireLevel(plan, ir::LOWERED, "place-comm"));
  for (ir::StageProgram& prog : *plan.mutable_programs()) RETURN_IF_ERROR(PlaceReceives(plan, prog));
  for (ir::StageProgram& prog : *plan.mutable_eval_programs()) RETURN_IF_ERROR(PlaceReceives(plan, prog));
  return absl::OkStatus();
}

}  // namespace ppc::passes
