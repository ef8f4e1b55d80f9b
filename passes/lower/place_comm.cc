#include "passes/lower/place_comm.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "ir/parallel.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::Status PlaceReceives(const ir::Plan& plan, const ir::Grid& grid, ir::Program& prog) {
  const int n = prog.size();
  const int m = std::max(1, plan.config().micro_batches());
  const int p = grid.stages();
  const int slots_in_program = std::max(1, prog.num_slots);
  // The (virtual stage, micro-batch) whose data an instruction touches in its slot, by
  // (chunk, micro-batch): the virtual stage runs on this stage (checked as each is seen).
  const size_t keys = static_cast<size_t>(grid.chunks()) * m;
  auto check = [&](int i, int v, int mb, int slot) -> absl::Status {
    RETURN_IF_ERROR(RequireOwnOp(grid, prog, i, v, m, "place-comm"));
    if (mb < 0 || mb >= m || slot < 0 || slot >= slots_in_program) {
      return absl::InvalidArgumentError(absl::StrCat("place-comm: stage ", prog.stage, " instruction ", i, " (",
                                                     ir::PrintOp(prog, i), ") names micro-batch ", mb, " slot ", slot,
                                                     ", out of range (verify the plan)"));
    }
    return absl::OkStatus();
  };
  auto key_of = [&](int v, int mb) { return static_cast<size_t>(grid.ChunkOf(v)) * m + mb; };

  // Positions are counted in the instructions other than receives ("anchors"): the pass
  // only moves receives, so the anchors, and so its result, do not depend on where the
  // receives were; running it again changes nothing.
  //
  // Pass 1: each slot's occupants in order, from the uses that touch it: loads, compute
  // ops, sends (posting reads the slot) and the waits of receives (a receive fills its
  // own buffer and moves it into the slot at its wait).
  struct Occupancy {
    size_t key;
    int last = -1;          // anchor of the last use
    int last_compute = -1;  // anchor of the last compute op
  };
  std::vector<std::vector<Occupancy>> slots(slots_in_program);
  // (slot, key) -> index of its first occupancy in slots[slot]: a key's first slot in the
  // dense arrays, any other in the map.
  std::vector<int> first_slot(keys, -1), first_index(keys, -1);
  absl::flat_hash_map<std::pair<int, size_t>, int> other_first;
  auto first_occupancy = [&](int slot, size_t key) -> int {
    if (first_slot[key] == slot) return first_index[key];
    auto it = other_first.find({slot, key});
    return it == other_first.end() ? -1 : it->second;
  };
  // The slot of the latest receive of a transfer, by (direction, chunk of the receiving
  // virtual stage, micro-batch); -1: none.
  std::vector<int> recv_slot(2 * keys, -1);
  auto recv_at = [&](ir::Direction d, int receiver_v, int mb) -> int& {
    return recv_slot[(d == ir::GRADIENT ? keys : 0) + key_of(receiver_v, mb)];
  };
  std::vector<int> anchor(n);
  std::vector<bool> anchor_is_wait;
  anchor_is_wait.reserve(n);
  int anchors = 0;
  for (int i = 0; i < n; ++i) {
    const ir::Op& in = prog.ops[i];
    anchor[i] = anchors;
    if (in.is_transfer() && (in.direction() != ir::ACTIVATION && in.direction() != ir::GRADIENT)) {
      return absl::InvalidArgumentError(absl::StrCat("place-comm: stage ", prog.stage, " instruction ", i, " (",
                                                     ir::PrintOp(prog, i), ") has no direction (verify the plan)"));
    }
    if (in.is_transfer() && (in.boundary() < 0 || in.boundary() >= grid.boundaries())) {
      return absl::InvalidArgumentError(absl::StrCat("place-comm: stage ", prog.stage, " instruction ", i, " (",
                                                     ir::PrintOp(prog, i), ") names boundary ", in.boundary(),
                                                     ", out of range (verify the plan)"));
    }
    if (in.is(ir::OpCode::kRecv)) {
      const int v = grid.ReceiverOf(in.direction(), in.boundary());
      RETURN_IF_ERROR(check(i, v, in.micro_batch, in.slot));
      recv_at(in.direction(), v, in.micro_batch) = in.slot;
      continue;
    }
    const int a = anchors++;
    anchor_is_wait.push_back(in.is(ir::OpCode::kWait));
    auto use = [&](int slot, size_t key, bool compute) {
      auto& list = slots[slot];
      if (list.empty() || list.back().key != key) {
        const int index = static_cast<int>(list.size());
        if (first_slot[key] < 0) {
          first_slot[key] = slot;
          first_index[key] = index;
        } else if (first_slot[key] != slot) {
          other_first.try_emplace({slot, key}, index);
        }
        list.push_back({key});
      }
      list.back().last = a;
      if (compute) list.back().last_compute = a;
    };
    switch (in.code) {
      case ir::OpCode::kLoadMicroBatch: {
        // A load is for virtual stage 0 (inputs) or the last (labels).
        const int v = in.inputs() ? 0 : grid.virtual_stages() - 1;
        RETURN_IF_ERROR(check(i, v, in.micro_batch, in.slot));
        use(in.slot, key_of(v, in.micro_batch), false);
        break;
      }
      case ir::OpCode::kCompute:
        RETURN_IF_ERROR(check(i, in.virtual_stage(), in.micro_batch, in.slot));
        use(in.slot, key_of(in.virtual_stage(), in.micro_batch), true);
        break;
      case ir::OpCode::kSend: {
        const int v = grid.SenderOf(in.direction(), in.boundary());
        RETURN_IF_ERROR(check(i, v, in.micro_batch, in.slot));
        use(in.slot, key_of(v, in.micro_batch), false);
        break;
      }
      case ir::OpCode::kWait:
        for (const ir::Ref& ref : prog.RefsOf(in)) {
          if (ref.send || (ref.dir() != ir::ACTIVATION && ref.dir() != ir::GRADIENT) || ref.boundary < 0 ||
              ref.boundary >= grid.boundaries() || ref.micro_batch < 0 || ref.micro_batch >= m) {
            continue;  // the verifier reports a ref that cannot exist
          }
          const int v = grid.ReceiverOf(ref.dir(), ref.boundary);
          if (grid.StageOf(v) != prog.stage) continue;  // the verifier reports it
          const int slot = recv_at(ref.dir(), v, ref.micro_batch);
          if (slot < 0) continue;  // not received before: the verifier reports it
          use(slot, key_of(v, ref.micro_batch), false);
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
  std::vector<int> last_target(p, -1);  // sender stage -> target of its previous receive
  for (int i = 0; i < n; ++i) {
    const ir::Op& in = prog.ops[i];
    target[i] = anchor[i];
    if (!in.is(ir::OpCode::kRecv)) continue;
    int t = anchor[i];
    const size_t key = key_of(grid.ReceiverOf(in.direction(), in.boundary()), in.micro_batch);
    if (const int first = first_occupancy(in.slot, key); first >= 0) {
      if (first == 0) {
        t = 0;
      } else {
        const Occupancy& prev = slots[in.slot][first - 1];
        t = prev.last_compute >= 0 ? prev.last_compute : prev.last + 1;
      }
      // Ahead of the waits right before that op too, so they stay next to their use.
      while (t > 0 && anchor_is_wait[t - 1]) --t;
    }
    const int sender = grid.PeerStage(false, in.direction(), in.boundary());
    if (last_target[sender] >= 0) t = std::max(t, last_target[sender]);
    target[i] = std::min(t, anchor[i]);
    last_target[sender] = target[i];
  }
  // Receives go before the instruction at their anchor; ties keep program order (a
  // counting sort by target, receives ahead of the one other instruction at it).
  std::vector<int> start(anchors + 2, 0);
  for (int i = 0; i < n; ++i) ++start[target[i] + 1];
  for (int a = 0; a <= anchors; ++a) start[a + 1] += start[a];
  std::vector<ir::Op> out(n);
  std::vector<int> fill(start.begin(), start.end() - 1);
  for (int pass = 0; pass < 2; ++pass) {  // receives first, then the anchors
    for (int i = 0; i < n; ++i) {
      if (prog.ops[i].is(ir::OpCode::kRecv) == (pass == 0)) out[fill[target[i]]++] = prog.ops[i];
    }
  }
  prog.ops = std::move(out);
  return absl::OkStatus();
}

absl::Status PlaceComm::Run(ir::Module& module) {
  RETURN_IF_ERROR(RequireLevel(module.header, ir::LOWERED, "place-comm"));
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(module.header));
  // Every program on its own, on the machine's cores; the first with an error reports it.
  std::vector<ir::Program*> programs;
  for (ir::Program& prog : module.programs) programs.push_back(&prog);
  for (ir::Program& prog : module.eval_programs) programs.push_back(&prog);
  std::vector<absl::Status> done(programs.size());
  ir::ParallelFor(static_cast<int>(programs.size()),
                  [&](int i) { done[i] = PlaceReceives(module.header, grid, *programs[i]); });
  for (const absl::Status& st : done) RETURN_IF_ERROR(st);
  return absl::OkStatus();
}

}  // namespace ppc::passes
