#include "passes/analysis/verifier.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/error_list.h"
#include "ir/instruction_text.h"
#include "ir/plan_check.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/analysis/simulate.h"

namespace ppc::passes {
namespace {

using ir::Instruction;

// The four transfers a (virtual stage, micro-batch) takes part in, by what this stage does.
enum Role { kSendAct = 0, kRecvAct = 1, kSendGrad = 2, kRecvGrad = 3 };

Role RoleOf(bool send, ir::Direction d) {
  if (d == ir::ACTIVATION) return send ? kSendAct : kRecvAct;
  return send ? kSendGrad : kRecvGrad;
}

class Verifier {
 public:
  // `programs`: plan.programs() or plan.eval_programs(). `training`: backwards and
  // optimizer steps are required (else forbidden). `runnable`: the plan must be what a
  // runtime runs (LOWERED).
  Verifier(const ir::Plan& plan, const google::protobuf::RepeatedPtrField<ir::StageProgram>& programs,
           const ir::Grid& grid, bool training, std::string kind)
      : plan_(plan), programs_(programs), grid_(grid), training_(training), kind_(std::move(kind)) {}

  absl::Status Run() {
    if (programs_.empty()) return absl::OkStatus();
    level_ = plan_.level();
    for (const auto& prog : programs_) CheckStage(prog);
    if (errors_.empty() && level_ == ir::LOWERED) CheckChannels();
    if (errors_.empty() && level_ == ir::LOWERED) Simulate();
    return errors_.ToStatus();
  }

 private:
  void Error(std::string msg) { errors_.Add(absl::StrCat(kind_, msg)); }

  std::string Where(int s, int i) const {
    return absl::StrCat("stage ", s, " instruction ", i, " (", ir::PrintInstruction(programs_.Get(s).instructions(i)),
                        ")");
  }

  void CheckStage(const ir::StageProgram& prog) {
    const int s = prog.stage();
    const int m = plan_.config().micro_batches();
    const int chunks = grid_.chunks();
    const int vlast = grid_.virtual_stages() - 1;
    const bool buffered = level_ >= ir::BUFFERED, lowered = level_ == ir::LOWERED;
    const size_t n = static_cast<size_t>(chunks) * m;
    auto idx = [&](int v, int mb) { return static_cast<size_t>(grid_.ChunkOf(v)) * m + mb; };
    std::vector<int> fwd(n, -1), bwd(n, -1), bin(n, -1), bw(n, -1), slot_of(n, -1);
    std::vector<int> loaded_in(n, -1), loaded_labels(n, -1);  // slot loaded into
    std::vector<int> posted[4], waited[4], posted_slot[4];
    for (int r = 0; r < 4; ++r) {
      posted[r].assign(n, -1);
      waited[r].assign(n, -1);
      posted_slot[r].assign(n, -1);
    }
    int optimizer = -1, reduce = -1, last_backward = -1, clip = -1, gather = -1;
    bool sharded_step = false;
    std::vector<int> reductions;
    // Slot liveness: (slot, key) -> [first, last] instruction.
    std::map<std::pair<int, size_t>, std::pair<int, int>> live;
    auto touch = [&](int slot, size_t key, int i) {
      if (!buffered) return;
      auto [it, fresh] = live.try_emplace({slot, key}, i, i);
      if (!fresh) it->second.second = i;
    };
    for (int i = 0; i < prog.instructions_size(); ++i) {
      const Instruction& in = prog.instructions(i);
      switch (in.op_case()) {
        case Instruction::kLoadMicroBatch: {
          const auto& l = in.load_micro_batch();
          if (l.inputs()) {
            loaded_in[idx(0, l.micro_batch())] = l.slot();
            touch(l.slot(), idx(0, l.micro_batch()), i);
          }
          if (l.labels()) {
            loaded_labels[idx(vlast, l.micro_batch())] = l.slot();
            touch(l.slot(), idx(vlast, l.micro_batch()), i);
          }
          break;
        }
        case Instruction::kCompute: {
          const auto& c = in.compute();
          const int v = c.virtual_stage(), mb = c.micro_batch();
          const size_t k = idx(v, mb);
          touch(c.slot(), k, i);
          if (c.kind() == ir::FORWARD) {
            if (fwd[k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": forwards virtual stage ", v, " micro-batch ", mb,
                                 " a second time (first at instruction ", fwd[k], ")"));
              break;
            }
            fwd[k] = i;
            slot_of[k] = c.slot();
            if (!lowered) break;
            if (v == 0 && loaded_in[k] != c.slot()) {
              Error(absl::StrCat(Where(s, i), ": inputs of micro-batch ", mb, " were not loaded into slot ", c.slot()));
            }
            if (v == vlast && loaded_labels[k] != c.slot()) {
              Error(absl::StrCat(Where(s, i), ": labels of micro-batch ", mb, " were not loaded into slot ", c.slot()));
            }
            if (v > 0 && (waited[kRecvAct][k] < 0 || posted_slot[kRecvAct][k] != c.slot())) {
              Error(absl::StrCat(Where(s, i), ": the activation across boundary ", v - 1, " from stage ",
                                 grid_.StageOf(v - 1), " was not received into slot ", c.slot(), " and waited for"));
            }
            break;
          }
          last_backward = i;
          if (!training_) {
            Error(absl::StrCat(Where(s, i), ": a forward-only program backwards"));
            break;
          }
          if (fwd[k] < 0) {
            Error(absl::StrCat(Where(s, i), ": backward of virtual stage ", v, " micro-batch ", mb, " before its forward"));
            break;
          }
          if (buffered && c.slot() != slot_of[k]) {
            Error(absl::StrCat(Where(s, i), ": uses slot ", c.slot(), " but the forward of virtual stage ", v,
                               " micro-batch ", mb, " used slot ", slot_of[k]));
          }
          const bool first_backward = bwd[k] < 0 && bin[k] < 0;
          if (lowered && v < vlast && first_backward && c.kind() != ir::BACKWARD_WEIGHT &&
              (waited[kRecvGrad][k] < 0 || posted_slot[kRecvGrad][k] != slot_of[k])) {
            Error(absl::StrCat(Where(s, i), ": the gradient across boundary ", v, " from stage ", grid_.StageOf(v + 1),
                               " was not received into slot ", slot_of[k], " and waited for"));
          }
          if (c.kind() == ir::BACKWARD) {
            if (bwd[k] >= 0 || bin[k] >= 0 || bw[k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": backward of virtual stage ", v, " micro-batch ", mb, " is done twice"));
            }
            bwd[k] = i;
          } else if (c.kind() == ir::BACKWARD_INPUT) {
            if (bwd[k] >= 0 || bin[k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": input backward of virtual stage ", v, " micro-batch ", mb,
                                 " is done twice"));
            }
            bin[k] = i;
          } else {
            if (bin[k] < 0) {
              Error(absl::StrCat(Where(s, i), ": weight backward of virtual stage ", v, " micro-batch ", mb,
                                 " before its input backward"));
            } else if (bw[k] >= 0 || bwd[k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": weight backward of virtual stage ", v, " micro-batch ", mb,
                                 " is done twice"));
            }
            bw[k] = i;
          }
          break;
        }
        case Instruction::kSend:
        case Instruction::kRecv: {
          const bool send = in.has_send();
          const ir::Direction d = send ? in.send().direction() : in.recv().direction();
          const int b = send ? in.send().boundary() : in.recv().boundary();
          const int mb = send ? in.send().micro_batch() : in.recv().micro_batch();
          const int slot = send ? in.send().slot() : in.recv().slot();
          const int v = send ? grid_.SenderOf(d, b) : grid_.ReceiverOf(d, b);
          const size_t k = idx(v, mb);
          const Role role = RoleOf(send, d);
          // A send reads the slot when posted; a receive fills its own buffer and
          // writes the slot at its wait (below).
          if (send) touch(slot, k, i);
          if (posted[role][k] >= 0) {
            Error(absl::StrCat(Where(s, i), ": posted again (first at instruction ", posted[role][k], ")"));
            break;
          }
          posted[role][k] = i;
          posted_slot[role][k] = slot;
          if (role == kSendAct && (fwd[k] < 0 || slot_of[k] != slot)) {
            Error(absl::StrCat(Where(s, i), ": sends the activation of virtual stage ", v, " micro-batch ", mb,
                               " before its forward on slot ", slot));
          }
          if (role == kSendGrad && ((bwd[k] < 0 && bin[k] < 0) || slot_of[k] != slot)) {
            Error(absl::StrCat(Where(s, i), ": sends the input gradient of virtual stage ", v, " micro-batch ", mb,
                               " before its backward on slot ", slot));
          }
          break;
        }
        case Instruction::kWait:
          for (const auto& ref : in.wait().ops()) {
            const int v = ref.send() ? grid_.SenderOf(ref.direction(), ref.boundary())
                                     : grid_.ReceiverOf(ref.direction(), ref.boundary());
            if (grid_.StageOf(v) != s) {
              Error(absl::StrCat(Where(s, i), ": waits for ", ir::CommRefText(ref), ", which stage ", grid_.StageOf(v),
                                 " posts"));
              continue;
            }
            const size_t k = idx(v, ref.micro_batch());
            const Role role = RoleOf(ref.send(), ref.direction());
            if (posted[role][k] < 0) {
              Error(absl::StrCat(Where(s, i), ": waits for ", ir::CommRefText(ref), " which was not posted before"));
            } else if (waited[role][k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": waits for ", ir::CommRefText(ref), " a second time"));
            } else {
              waited[role][k] = i;
              // A received transfer lands in its slot at the wait; a send holds its own
              // reference to the data, so its wait does not need the slot.
              if (!ref.send()) touch(posted_slot[role][k], k, i);
            }
          }
          break;
        case Instruction::kReduceTiedGrads:
        case Instruction::kReduceGrads:
          reductions.push_back(i);
          if (in.has_reduce_grads()) {
            if (reduce >= 0) Error(absl::StrCat(Where(s, i), ": reduces gradients twice"));
            reduce = i;
          }
          break;
        case Instruction::kClipGradNorm:
          reductions.push_back(i);
          if (reduce >= 0 && i < reduce) Error(absl::StrCat(Where(s, i), ": clips before the data-parallel reduction"));
          clip = i;
          break;
        case Instruction::kOptimizerStep:
          if (optimizer >= 0) Error(absl::StrCat(Where(s, i), ": second optimizer step (first at ", optimizer, ")"));
          optimizer = i;
          sharded_step = in.optimizer_step().sharded();
          break;
        case Instruction::kGatherParams:
          if (gather >= 0) Error(absl::StrCat(Where(s, i), ": gathers parameters twice (first at ", gather, ")"));
          if (optimizer < 0 || !sharded_step) {
            Error(absl::StrCat(Where(s, i), ": gathers parameters without a sharded optimizer step before it"));
          }
          gather = i;
          break;
        case Instruction::OP_NOT_SET:
          break;
      }
      if (errors_.full()) return;
    }
    // Whole-program properties.
    for (int c = 0; c < chunks; ++c) {
      const int v = grid_.VirtualOf(s, c);
      for (int mb = 0; mb < m; ++mb) {
        const size_t k = idx(v, mb);
        if (fwd[k] < 0) Error(absl::StrCat("stage ", s, ": virtual stage ", v, " micro-batch ", mb, " is never forwarded"));
        const bool done = bwd[k] >= 0 || (bin[k] >= 0 && bw[k] >= 0);
        if (training_ && !done) {
          Error(absl::StrCat("stage ", s, ": virtual stage ", v, " micro-batch ", mb, " is never (fully) backwarded"));
        }
        for (int r = 0; r < 4; ++r) {
          if (posted[r][k] >= 0 && waited[r][k] < 0) Error(absl::StrCat(Where(s, posted[r][k]), ": posted but never waited for"));
        }
        if (errors_.full()) return;
      }
    }
    for (int r : reductions) {
      if (r < last_backward) {
        Error(absl::StrCat(Where(s, r), ": reduces gradients before the backward at instruction ", last_backward));
      }
      if (optimizer >= 0 && r > optimizer) Error(absl::StrCat(Where(s, r), ": reduces gradients after the optimizer step"));
    }
    if (optimizer >= 0 && optimizer < last_backward) {
      Error(absl::StrCat(Where(s, optimizer), ": optimizer step before the backward at instruction ", last_backward));
    }
    if (clip >= 0 && reduce > clip) Error(absl::StrCat(Where(s, reduce), ": reduces gradients after clipping them"));
    if (training_ && lowered && optimizer < 0) Error(absl::StrCat("stage ", s, ": training plan has no optimizer step"));
    if (!training_ && optimizer >= 0) Error(absl::StrCat(Where(s, optimizer), ": a forward-only program steps the optimizer"));
    if (sharded_step && gather < 0) {
      Error(absl::StrCat(Where(s, optimizer), ": sharded optimizer step is never followed by GatherParams, so the "
                         "replicas' parameters would diverge"));
    }
    if (training_ && lowered && plan_.topology().data_parallel() > 1 && reduce < 0) {
      Error(absl::StrCat("stage ", s, ": data_parallel=", plan_.topology().data_parallel(),
                         " but gradients are never reduced (ReduceGrads)"));
    }
    // A slot holds one (virtual stage, micro-batch) from its first use to its last.
    std::map<int, std::vector<std::tuple<int, int, size_t>>> by_slot;  // slot -> (first, last, key)
    for (const auto& [sk, range] : live) by_slot[sk.first].emplace_back(range.first, range.second, sk.second);
    for (auto& [slot, ranges] : by_slot) {
      std::sort(ranges.begin(), ranges.end());
      for (size_t j = 1; j < ranges.size(); ++j) {
        auto [f0, l0, k0] = ranges[j - 1];
        auto [f1, l1, k1] = ranges[j];
        if (f1 <= l0) {
          Error(absl::StrCat(Where(s, f1), ": overwrites slot ", slot, " with virtual stage ",
                             grid_.VirtualOf(s, static_cast<int>(k1 / m)), " micro-batch ", k1 % m,
                             " while virtual stage ", grid_.VirtualOf(s, static_cast<int>(k0 / m)), " micro-batch ",
                             k0 % m, " still needs it (until instruction ", l0, ")"));
        }
      }
    }
  }

  // Transfers between two ranks match by order: the k-th send from a to b must be the
  // k-th receive on b from a, on both sides (so a plan correct for Gloo is correct for NCCL).
  void CheckChannels() {
    struct Post {
      int stage, instruction;
      ir::CommRef ref;
    };
    std::map<std::pair<int, int>, std::vector<Post>> sends, recvs;  // (from, to)
    for (const auto& prog : programs_) {
      for (int i = 0; i < prog.instructions_size(); ++i) {
        const Instruction& in = prog.instructions(i);
        if (!in.has_send() && !in.has_recv()) continue;
        const bool send = in.has_send();
        ir::CommRef ref;
        ref.set_send(send);
        ref.set_direction(send ? in.send().direction() : in.recv().direction());
        ref.set_boundary(send ? in.send().boundary() : in.recv().boundary());
        ref.set_micro_batch(send ? in.send().micro_batch() : in.recv().micro_batch());
        const int peer = grid_.PeerStage(send, ref.direction(), ref.boundary());
        (send ? sends[{prog.stage(), peer}] : recvs[{peer, prog.stage()}]).push_back({prog.stage(), i, ref});
      }
    }
    auto same = [](const ir::CommRef& a, const ir::CommRef& b) {
      return a.direction() == b.direction() && a.boundary() == b.boundary() && a.micro_batch() == b.micro_batch();
    };
    std::map<std::pair<int, int>, int> channels;
    for (const auto& [edge, v] : sends) channels[edge] = 0;
    for (const auto& [edge, v] : recvs) channels[edge] = 0;
    for (const auto& [edge, unused] : channels) {
      const auto& out = sends[edge];
      const auto& in = recvs[edge];
      const size_t common = std::min(out.size(), in.size());
      for (size_t k = 0; k < common; ++k) {
        if (!same(out[k].ref, in[k].ref)) {
          Error(absl::StrCat("stage ", edge.first, " -> stage ", edge.second, " transfer ", k, ": ",
                             Where(out[k].stage, out[k].instruction), " is stage ", edge.second, "'s receive ", k,
                             ", but that is ", Where(in[k].stage, in[k].instruction),
                             " (transfers between two ranks match in the order they are posted)"));
          break;
        }
      }
      if (out.size() > common) {
        Error(absl::StrCat(Where(out[common].stage, out[common].instruction), ": no matching receive on stage ",
                           edge.second, " (it posts ", in.size(), " receives from stage ", edge.first, ", stage ",
                           edge.first, " posts ", out.size(), " sends)"));
      } else if (in.size() > common) {
        Error(absl::StrCat(Where(in[common].stage, in[common].instruction), ": no matching send on stage ",
                           edge.first, " (it posts ", out.size(), " sends to stage ", edge.second, ", stage ",
                           edge.second, " posts ", in.size(), " receives)"));
      }
    }
  }

  // All stages together under the transport semantics (passes/analysis/simulate.h):
  // posts never block, a wait needs its counterpart posted, collectives meet.
  void Simulate() {
    auto sim = passes::Simulate(plan_, programs_, CostModel::Unit(plan_));
    if (!sim.ok()) {
      Error(std::string(sim.status().message()));
      return;
    }
    for (const std::string& e : sim->errors) Error(e);
  }

  const ir::Plan& plan_;
  const google::protobuf::RepeatedPtrField<ir::StageProgram>& programs_;
  const ir::Grid& grid_;
  const bool training_;
  const std::string kind_;
  ir::PlanLevel level_ = ir::LEVEL_NONE;
  ir::ErrorList errors_;
};

bool HasBackward(const google::protobuf::RepeatedPtrField<ir::StageProgram>& programs) {
  for (const auto& prog : programs)
    for (const auto& in : prog.instructions())
      if ((in.has_compute() && in.compute().kind() != ir::FORWARD) || in.has_optimizer_step()) return true;
  return false;
}

// `runnable`: the plan must be what pprun can run (LOWERED; a training schedule has its
// backwards and optimizer steps) rather than any correct stage of compilation.
absl::Status Verify(const ir::Plan& plan, bool runnable) {
  // The structural rules first (shared with the runtime's load): everything below may
  // assume indices, stages, slots and boundaries in range.
  RETURN_IF_ERROR(ir::CheckPlanStructure(plan, /*complete=*/runnable));
  if (plan.programs_size() == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(plan));
  const bool training = HasBackward(plan.programs()) || (runnable && plan.config().schedule() != "inference");
  RETURN_IF_ERROR(Verifier(plan, plan.programs(), grid, training, "").Run());
  if (plan.eval_programs_size() == 0) return absl::OkStatus();
  // The eval programs: a forward-only plan of their own over the same placement.
  return Verifier(plan, plan.eval_programs(), grid, /*training=*/false, "eval programs: ").Run();
}

}  // namespace

absl::Status VerifyPlan(const ir::Plan& plan) { return Verify(plan, /*runnable=*/false); }

absl::Status VerifyRunnablePlan(const ir::Plan& plan) { return Verify(plan, /*runnable=*/true); }

absl::Status VerifyPass::Run(ir::Plan& plan) { return VerifyPlan(plan); }

}  // namespace ppc::passes
