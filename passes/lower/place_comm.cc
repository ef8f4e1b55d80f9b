#include "passes/lower/place_comm.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

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
  // Per slot: the (virtual stage, micro-batch) now using it, and the last instruction
  // that used it for an earlier one.
  struct Occupant {
    int64_t key = -1;
    int last = -1;       // last use by `key`
    int free_from = 0;   // first position after the previous occupant's last use
  };
  std::map<int, Occupant> slots;
  std::map<int, int> last_recv_target;  // sender stage -> target of its previous receive
  std::vector<int> target(n);
  for (int i = 0; i < n; ++i) {
    const ir::Instruction& in = prog.instructions(i);
    target[i] = i;
    auto use = [&](int slot, int64_t key) {
      Occupant& o = slots[slot];
      if (o.key != key) {
        if (o.key >= 0) o.free_from = o.last + 1;
        o.key = key;
      }
      o.last = i;
    };
    switch (in.op_case()) {
      case ir::Instruction::kLoadMicroBatch: {
        // A load is for virtual stage 0 (inputs) or the last (labels).
        const int v = in.load_micro_batch().inputs() ? 0 : grid.virtual_stages() - 1;
        use(in.load_micro_batch().slot(), key_of(v, in.load_micro_batch().micro_batch()));
        break;
      }
      case ir::Instruction::kCompute:
        use(in.compute().slot(), key_of(in.compute().virtual_stage(), in.compute().micro_batch()));
        break;
      case ir::Instruction::kSend: {
        const auto& s = in.send();
        const int v = grid.SenderOf(s.direction(), s.boundary());
        use(s.slot(), key_of(v, s.micro_batch()));
        break;
      }
      case ir::Instruction::kRecv: {
        const auto& r = in.recv();
        const int v = grid.ReceiverOf(r.direction(), r.boundary());
        const int64_t key = key_of(v, r.micro_batch());
        const int sender = grid.PeerStage(false, r.direction(), r.boundary());
        // After the slot's previous occupant is done with it (the receive may precede
        // this micro-batch's own earlier uses of the slot, e.g. its load or forward) ...
        int t = 0;
        if (auto it = slots.find(r.slot()); it != slots.end()) {
          t = it->second.key == key ? it->second.free_from : it->second.last + 1;
        }
        // ... and after the previous receive from the same sender (order matching).
        if (auto it = last_recv_target.find(sender); it != last_recv_target.end()) t = std::max(t, it->second);
        target[i] = std::min(t, i);
        // A receive that stays put is followed by the next one from the same sender; one
        // that moves before instruction T shares T, and the sort keeps them in order.
        last_recv_target[sender] = target[i] == i ? i + 1 : target[i];
        use(r.slot(), key);
        break;
      }
      default:
        break;
    }
  }
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  // Each receive moves to just before the instruction at its target; ties keep program
  // order (so receives from one sender stay in order).
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    // Receives sort before the other instruction at their target, whether they moved or
    // not, so running the pass again changes nothing.
    auto pos = [&](int i) { return std::make_pair(target[i], prog.instructions(i).has_recv() ? 0 : 1); };
    return pos(a) < pos(b);
  });
  google::protobuf::RepeatedPtrField<ir::Instruction> out;
  out.Reserve(n);
  for (int i : order) *out.Add() = prog.instructions(i);
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
