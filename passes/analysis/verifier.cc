#include "passes/analysis/verifier.h"

#include <algorithm>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"

#include "absl/strings/str_cat.h"
#include "ir/error_list.h"
#include "ir/instruction_text.h"
#include "ir/parallel.h"
#include "ir/plan_check.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/analysis/simulate.h"

namespace ppc::passes {
namespace {

using ir::Op;
using ir::OpCode;

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
  Verifier(const ir::Plan& plan, const std::vector<ir::Program>& programs, const ir::Grid& grid, bool training,
           std::string kind)
      : plan_(plan), programs_(programs), grid_(grid), training_(training), kind_(std::move(kind)) {}

  absl::Status Run() {
    if (programs_.empty()) return absl::OkStatus();
    level_ = plan_.level();
    std::vector<ir::ErrorList> stage_errors(programs_.size());
    ir::ParallelFor(static_cast<int>(programs_.size()), [&](int s) { CheckStage(programs_[s], stage_errors[s]); });
    for (const ir::ErrorList& e : stage_errors) errors_.Merge(e);
    if (errors_.empty() && level_ == ir::LOWERED) CheckChannels();
    if (errors_.empty() && level_ == ir::LOWERED) Simulate();
    return errors_.ToStatus();
  }

 private:
  void Error(std::string msg) { errors_.Add(absl::StrCat(kind_, msg)); }

  std::string Where(int s, int i) const {
    return absl::StrCat("stage ", s, " instruction ", i, " (", ir::PrintOp(programs_[s], i), ")");
  }

  // One stage's program; on several threads at once for different stages, so it reports
  // into `errors` alone.
  void CheckStage(const ir::Program& prog, ir::ErrorList& errors) const {
    auto Error = [&](std::string msg) { errors.Add(absl::StrCat(kind_, msg)); };
    const int s = prog.stage;
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
    // Per chunk: the first deferred W not yet computed by a W of its batch (-1: none).
    std::vector<int> deferred_since(chunks, -1);
    bool sharded_step = false;
    std::vector<int> reductions;
    // Slot liveness: (slot, key) -> [first, last] instruction. A key keeps one slot (the
    // dense arrays); another slot for it goes to the map.
    std::vector<int> live_slot(buffered ? n : 0, -1), live_first(buffered ? n : 0), live_last(buffered ? n : 0);
    absl::flat_hash_map<std::pair<int, size_t>, std::pair<int, int>> live_other;
    auto touch = [&](int slot, size_t key, int i) {
      if (!buffered) return;
      if (live_slot[key] < 0) {
        live_slot[key] = slot;
        live_first[key] = i;
      }
      if (live_slot[key] == slot) {
        live_last[key] = i;
        return;
      }
      auto [it, fresh] = live_other.try_emplace({slot, key}, i, i);
      if (!fresh) it->second.second = i;
    };
    for (int i = 0; i < prog.size(); ++i) {
      const Op& in = prog.ops[i];
      switch (in.code) {
        case OpCode::kLoadMicroBatch: {
          if (in.inputs()) {
            loaded_in[idx(0, in.micro_batch)] = in.slot;
            touch(in.slot, idx(0, in.micro_batch), i);
          }
          if (in.labels()) {
            loaded_labels[idx(vlast, in.micro_batch)] = in.slot;
            touch(in.slot, idx(vlast, in.micro_batch), i);
          }
          break;
        }
        case OpCode::kCompute: {
          const Op& c = in;
          const int v = c.virtual_stage(), mb = c.micro_batch;
          const size_t k = idx(v, mb);
          touch(c.slot, k, i);
          if (c.compute_kind() == ir::FORWARD) {
            if (fwd[k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": forwards virtual stage ", v, " micro-batch ", mb,
                                 " a second time (first at instruction ", fwd[k], ")"));
              break;
            }
            fwd[k] = i;
            slot_of[k] = c.slot;
            if (!lowered) break;
            if (v == 0 && loaded_in[k] != c.slot) {
              Error(absl::StrCat(Where(s, i), ": inputs of micro-batch ", mb, " were not loaded into slot ", c.slot));
            }
            if (v == vlast && loaded_labels[k] != c.slot) {
              Error(absl::StrCat(Where(s, i), ": labels of micro-batch ", mb, " were not loaded into slot ", c.slot));
            }
            if (v > 0 && (waited[kRecvAct][k] < 0 || posted_slot[kRecvAct][k] != c.slot)) {
              Error(absl::StrCat(Where(s, i), ": the activation across boundary ", v - 1, " from stage ",
                                 grid_.StageOf(v - 1), " was not received into slot ", c.slot, " and waited for"));
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
          if (buffered && c.slot != slot_of[k]) {
            Error(absl::StrCat(Where(s, i), ": uses slot ", c.slot, " but the forward of virtual stage ", v,
                               " micro-batch ", mb, " used slot ", slot_of[k]));
          }
          const bool first_backward = bwd[k] < 0 && bin[k] < 0;
          if (lowered && v < vlast && first_backward && c.compute_kind() != ir::BACKWARD_WEIGHT &&
              (waited[kRecvGrad][k] < 0 || posted_slot[kRecvGrad][k] != slot_of[k])) {
            Error(absl::StrCat(Where(s, i), ": the gradient across boundary ", v, " from stage ", grid_.StageOf(v + 1),
                               " was not received into slot ", slot_of[k], " and waited for"));
          }
          if (c.compute_kind() == ir::BACKWARD) {
            if (bwd[k] >= 0 || bin[k] >= 0 || bw[k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": backward of virtual stage ", v, " micro-batch ", mb, " is done twice"));
            }
            bwd[k] = i;
          } else if (c.compute_kind() == ir::BACKWARD_INPUT) {
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
            int& since = deferred_since[grid_.ChunkOf(v)];
            if (c.deferred()) {
              if (since < 0) since = i;
            } else {
              since = -1;  // this W computes the batch
            }
          }
          break;
        }
        case OpCode::kSend:
        case OpCode::kRecv: {
          const bool send = in.is(OpCode::kSend);
          const ir::Direction d = in.direction();
          const int b = in.boundary(), mb = in.micro_batch, slot = in.slot;
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
        case OpCode::kWait:
          for (const ir::Ref& ref : prog.RefsOf(in)) {
            const int v = ref.send ? grid_.SenderOf(ref.dir(), ref.boundary) : grid_.ReceiverOf(ref.dir(), ref.boundary);
            if (grid_.StageOf(v) != s) {
              Error(absl::StrCat(Where(s, i), ": waits for ", ir::RefText(ref), ", which stage ", grid_.StageOf(v),
                                 " posts"));
              continue;
            }
            const size_t k = idx(v, ref.micro_batch);
            const Role role = RoleOf(ref.send, ref.dir());
            if (posted[role][k] < 0) {
              Error(absl::StrCat(Where(s, i), ": waits for ", ir::RefText(ref), " which was not posted before"));
            } else if (waited[role][k] >= 0) {
              Error(absl::StrCat(Where(s, i), ": waits for ", ir::RefText(ref), " a second time"));
            } else {
              waited[role][k] = i;
              // A received transfer lands in its slot at the wait; a send holds its own
              // reference to the data, so its wait does not need the slot.
              if (!ref.send) touch(posted_slot[role][k], k, i);
            }
          }
          break;
        case OpCode::kReduceTiedGrads:
        case OpCode::kReduceGrads:
          reductions.push_back(i);
          if (in.is(OpCode::kReduceGrads)) {
            if (reduce >= 0) Error(absl::StrCat(Where(s, i), ": reduces gradients twice"));
            reduce = i;
          }
          break;
        case OpCode::kClipGradNorm:
          reductions.push_back(i);
          if (reduce >= 0 && i < reduce) Error(absl::StrCat(Where(s, i), ": clips before the data-parallel reduction"));
          clip = i;
          break;
        case OpCode::kOptimizerStep:
          if (optimizer >= 0) Error(absl::StrCat(Where(s, i), ": second optimizer step (first at ", optimizer, ")"));
          optimizer = i;
          sharded_step = in.sharded();
          break;
        case OpCode::kGatherParams:
          if (gather >= 0) Error(absl::StrCat(Where(s, i), ": gathers parameters twice (first at ", gather, ")"));
          if (optimizer < 0 || !sharded_step) {
            Error(absl::StrCat(Where(s, i), ": gathers parameters without a sharded optimizer step before it"));
          }
          gather = i;
          break;
        case OpCode::kNone:
          break;
      }
      if (errors.full()) return;
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
        if (errors.full()) return;
      }
    }
    for (int c = 0; c < chunks; ++c) {
      if (deferred_since[c] >= 0) {
        Error(absl::StrCat(Where(s, deferred_since[c]), ": defers the weight backward of virtual stage ",
                           grid_.VirtualOf(s, c), " but no W of that virtual stage without the deferred mark follows "
                           "to compute its batch, so its weight gradients would be lost"));
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
    if (!buffered) return;
    std::vector<std::vector<std::tuple<int, int, size_t>>> by_slot(std::max(1, prog.num_slots));  // (first, last, key)
    for (size_t k = 0; k < n; ++k) {
      if (live_slot[k] >= 0) by_slot[live_slot[k]].emplace_back(live_first[k], live_last[k], k);
    }
    for (const auto& [sk, range] : live_other) by_slot[sk.first].emplace_back(range.first, range.second, sk.second);
    for (int slot = 0; slot < static_cast<int>(by_slot.size()); ++slot) {
      auto& ranges = by_slot[slot];
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
    // Per channel (ir::Grid::Channels, in (from, to) order), the instructions of its sends
    // (written by the stage `from` alone) and its receives (by `to` alone): each stage
    // fills its own on the machine's cores, then each channel is compared.
    const std::vector<std::pair<int, int>> edges = grid_.Channels();
    const int p = static_cast<int>(programs_.size());
    std::vector<std::vector<std::pair<int, int>>> out_of(p), in_of(p);  // stage -> (peer, channel)
    for (int c = 0; c < static_cast<int>(edges.size()); ++c) {
      out_of[edges[c].first].push_back({edges[c].second, c});
      in_of[edges[c].second].push_back({edges[c].first, c});
    }
    std::vector<std::vector<int>> sends(edges.size()), recvs(edges.size());
    ir::ParallelFor(p, [&](int s) {
      // Collected here, then handed over: other threads fill neighbouring channels.
      std::vector<std::vector<int>> mine_out(out_of[s].size()), mine_in(in_of[s].size());
      const ir::Program& prog = programs_[s];
      for (int i = 0; i < prog.size(); ++i) {
        const Op& in = prog.ops[i];
        if (!in.is_transfer()) continue;
        const bool send = in.is(OpCode::kSend);
        const int peer = grid_.PeerStage(send, in.direction(), in.boundary());
        const auto& list = send ? out_of[s] : in_of[s];
        for (size_t j = 0; j < list.size(); ++j) {
          if (list[j].first == peer) (send ? mine_out : mine_in)[j].push_back(i);
        }
      }
      for (size_t j = 0; j < mine_out.size(); ++j) sends[out_of[s][j].second] = std::move(mine_out[j]);
      for (size_t j = 0; j < mine_in.size(); ++j) recvs[in_of[s][j].second] = std::move(mine_in[j]);
    });
    std::vector<ir::ErrorList> channel_errors(edges.size());
    ir::ParallelFor(static_cast<int>(edges.size()), [&](int c) {
      const auto [from, to] = edges[c];
      const std::vector<int>& out = sends[c];
      const std::vector<int>& in = recvs[c];
      auto add = [&](std::string msg) { channel_errors[c].Add(absl::StrCat(kind_, msg)); };
      const size_t common = std::min(out.size(), in.size());
      for (size_t k = 0; k < common; ++k) {
        const ir::Ref a = programs_[from].ops[out[k]].AsRef(), b = programs_[to].ops[in[k]].AsRef();
        if (a.direction != b.direction || a.boundary != b.boundary || a.micro_batch != b.micro_batch) {
          add(absl::StrCat("stage ", from, " -> stage ", to, " transfer ", k, ": ", Where(from, out[k]), " is stage ",
                           to, "'s receive ", k, ", but that is ", Where(to, in[k]),
                           " (transfers between two ranks match in the order they are posted)"));
          break;
        }
      }
      if (out.size() > common) {
        add(absl::StrCat(Where(from, out[common]), ": no matching receive on stage ", to, " (it posts ", in.size(),
                         " receives from stage ", from, ", stage ", from, " posts ", out.size(), " sends)"));
      } else if (in.size() > common) {
        add(absl::StrCat(Where(to, in[common]), ": no matching send on stage ", from, " (it posts ", out.size(),
                         " sends to stage ", to, ", stage ", to, " posts ", in.size(), " receives)"));
      }
    });
    for (const ir::ErrorList& e : channel_errors) errors_.Merge(e);
  }

  // All stages together under the transport semantics (passes/analysis/simulate.h):
  // posts never block, a wait needs its counterpart posted, collectives meet.
  void Simulate() {
    SimulateOptions options;
    options.record_spans = false;
    options.count_live_slots = false;
    options.check_pairing = false;  // CheckChannels has, naming the instructions
    auto sim = passes::Simulate(plan_, programs_, CostModel::Unit(plan_), options);
    if (!sim.ok()) {
      Error(std::string(sim.status().message()));
      return;
    }
    for (const std::string& e : sim->errors) Error(e);
  }

  const ir::Plan& plan_;
  const std::vector<ir::Program>& programs_;
  const ir::Grid& grid_;
  const bool training_;
  const std::string kind_;
  ir::PlanLevel level_ = ir::LEVEL_NONE;
  ir::ErrorList errors_;
};

bool HasBackward(const std::vector<ir::Program>& programs) {
  for (const ir::Program& prog : programs)
    for (const Op& op : prog.ops)
      if ((op.is(OpCode::kCompute) && op.kind != ir::FORWARD) || op.is(OpCode::kOptimizerStep)) return true;
  return false;
}

// `runnable`: the plan must be what pprun can run (LOWERED; a training schedule has its
// backwards and optimizer steps) rather than any correct stage of compilation.
absl::Status Verify(const ir::Module& module, bool runnable, const Unchanged& unchanged = {}) {
  // The structural rules first (shared with the runtime's load): everything below may
  // assume indices, stages, slots and boundaries in range.
  RETURN_IF_ERROR(ir::CheckPlanStructure(module, /*complete=*/runnable, !unchanged.programs, !unchanged.eval_programs));
  if (module.programs.empty()) return absl::OkStatus();
  const ir::Plan& plan = module.header;
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(plan));
  const bool training = HasBackward(module.programs) || (runnable && plan.config().schedule() != "inference");
  if (!unchanged.programs) RETURN_IF_ERROR(Verifier(plan, module.programs, grid, training, "").Run());
  if (module.eval_programs.empty() || unchanged.eval_programs) return absl::OkStatus();
  // The eval programs: a forward-only plan of their own over the same placement.
  return Verifier(plan, module.eval_programs, grid, /*training=*/false, "eval programs: ").Run();
}

}  // namespace

absl::Status VerifyPlan(const ir::Module& module, const Unchanged& unchanged) {
  return Verify(module, /*runnable=*/false, unchanged);
}
absl::Status VerifyRunnablePlan(const ir::Module& module) { return Verify(module, /*runnable=*/true); }
absl::Status VerifyPlan(const ir::Plan& plan) { return Verify(ir::ToModule(plan), /*runnable=*/false); }
absl::Status VerifyRunnablePlan(const ir::Plan& plan) { return Verify(ir::ToModule(plan), /*runnable=*/true); }

absl::Status VerifyPass::Run(ir::Module& module) { return VerifyPlan(module); }

}  // namespace ppc::passes
