#include "passes/analysis/verifier.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/instruction_text.h"
#include "ir/layer_shapes.h"
#include "ir/error_list.h"
#include "ir/plan_check.h"
#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {
namespace {

using ir::CommKind;
using ir::Instruction;


// A posted communication as identified by Wait: kind, micro-batch, chunk.
using CommKey = std::tuple<int, int, int>;

struct Comm {
  CommKind kind;
  int mb, chunk, slot, peer;
  std::vector<int64_t> shape;
  ir::DType dtype;
};

bool AsComm(const Instruction& in, Comm* c) {
  auto fill = [&](CommKind kind, const auto& m) {
    *c = Comm{kind, m.micro_batch(), m.chunk(), m.slot(), m.peer(), {m.shape().begin(), m.shape().end()}, m.dtype()};
    return true;
  };
  switch (in.op_case()) {
    case Instruction::kSendActivation: return fill(ir::SEND_ACTIVATION, in.send_activation());
    case Instruction::kRecvActivation: return fill(ir::RECV_ACTIVATION, in.recv_activation());
    case Instruction::kSendGrad: return fill(ir::SEND_GRAD, in.send_grad());
    case Instruction::kRecvGrad: return fill(ir::RECV_GRAD, in.recv_grad());
    default: return false;
  }
}

// Cross-stage collectives: every listed stage must reach the same one.
bool CollectiveOf(const Instruction& in, std::vector<int>* stages) {
  if (in.has_reduce_tied_grads()) {
    stages->assign(in.reduce_tied_grads().stages().begin(), in.reduce_tied_grads().stages().end());
    return true;
  }
  if (in.has_clip_grad_norm()) {
    stages->assign(in.clip_grad_norm().stages().begin(), in.clip_grad_norm().stages().end());
    return true;
  }
  return false;
}

bool SameCollective(const Instruction& a, const Instruction& b) {
  if (a.op_case() != b.op_case()) return false;
  if (a.has_reduce_tied_grads()) return a.reduce_tied_grads().tie_key() == b.reduce_tied_grads().tie_key();
  return true;
}

CommKind Counterpart(CommKind k) {
  switch (k) {
    case ir::SEND_ACTIVATION: return ir::RECV_ACTIVATION;
    case ir::RECV_ACTIVATION: return ir::SEND_ACTIVATION;
    case ir::SEND_GRAD: return ir::RECV_GRAD;
    case ir::RECV_GRAD: return ir::SEND_GRAD;
    default: return ir::COMM_UNSPECIFIED;
  }
}

std::string KindName(CommKind k) { return absl::AsciiStrToLower(ir::CommKind_Name(k)); }

// The slot an instruction touches, if any.
bool SlotOf(const Instruction& in, int* mb, int* slot) {
  int chunk;
  if (!ir::MicroBatchOf(in, mb, &chunk)) return false;
  switch (in.op_case()) {
    case Instruction::kLoadMicroBatch: *slot = in.load_micro_batch().slot(); return true;
    case Instruction::kForward: *slot = in.forward().slot(); return true;
    case Instruction::kBackward: *slot = in.backward().slot(); return true;
    default: {
      Comm c;
      if (AsComm(in, &c)) {
        *slot = c.slot;
        return true;
      }
      return false;
    }
  }
}

class Verifier {
 public:
  // `lowered` / `comm_lowered`: require loads / communication even if the programs have
  // none (eval programs must be as lowered as the training programs they accompany).
  // `training`: require backwards and optimizer steps even if the programs have none.
  explicit Verifier(const ir::Plan& plan, bool lowered = false, bool comm_lowered = false, bool training = false)
      : plan_(plan), lowered_(lowered), comm_lowered_(comm_lowered), training_(training), has_optimizer_(training) {}

  absl::Status Run() {
    // The structural rules first (shared with the runtime's load): everything below may
    // assume indices, peers, slots and shapes in range.
    RETURN_IF_ERROR(ir::CheckPlanStructure(plan_, /*complete=*/false));
    sharded_ = plan_.config().zero_stage() == 1 && plan_.topology().data_parallel() > 1;
    if (plan_.programs_size() > 0) {
      CheckProgramsPresent();
      if (errors_.empty()) {
        for (const auto& prog : plan_.programs()) CheckStage(prog);
        CheckMatching();
      }
      if (errors_.empty()) Simulate();
    }
    return errors_.ToStatus();
  }

 private:
  void Error(std::string msg) { errors_.Add(std::move(msg)); }

  std::string Where(int s, int i) {
    return absl::StrCat("stage ", s, " instruction ", i, " (", ir::PrintInstruction(plan_.programs(s).instructions(i)),
                        ")");
  }

  void CheckProgramsPresent() {
    for (const auto& prog : plan_.programs()) {
      for (const auto& in : prog.instructions()) {
        lowered_ |= in.has_load_micro_batch();
        comm_lowered_ |= in.has_wait();
        training_ |= in.has_backward() || in.has_optimizer_step();
        has_optimizer_ |= in.has_optimizer_step();
      }
    }
  }

  void CheckStage(const ir::StageProgram& prog) {
    const int s = prog.stage();
    const int p = plan_.topology().num_stages();
    const int m = plan_.config().micro_batches();
    const int slots = prog.num_slots();
    const bool first = s == 0, last = s == p - 1;
    std::vector<int> fwd(m, -1), bwd_full(m, -1), bwd_in(m, -1), bwd_w(m, -1);
    std::vector<int> fwd_slot(m, -1);
    std::vector<bool> inputs(m, false), labels(m, false), act_ready(m, false), grad_ready(m, false);
    std::map<CommKey, int> posted;  // -> instruction index
    std::set<CommKey> waited;
    std::map<CommKey, int> posted_slot;
    int optimizer = -1, reduce = -1, last_backward = -1, clip = -1, gather = -1;
    bool sharded_step = false;
    std::vector<int> reductions;
    // slot -> (mb -> [first, last] instruction index)
    std::map<int, std::map<int, std::pair<int, int>>> live;
    auto touch = [&](int slot, int mb, int i) {
      auto& by_mb = live[slot];
      auto it = by_mb.find(mb);
      if (it == by_mb.end()) {
        by_mb[mb] = {i, i};
      } else {
        it->second.second = i;
      }
    };
    for (int i = 0; i < prog.instructions_size(); ++i) {
      const Instruction& in = prog.instructions(i);
      int mb = 0, chunk = 0, slot = 0;
      if (ir::MicroBatchOf(in, &mb, &chunk) && SlotOf(in, &mb, &slot)) touch(slot, mb, i);
      Comm c;
      if (AsComm(in, &c)) {
        CommKey key{c.kind, c.mb, c.chunk};
        if (posted.count(key)) {
          Error(absl::StrCat(Where(s, i), ": posts ", KindName(c.kind), " mb=", c.mb, " again (first at instruction ",
                             posted[key], ")"));
          continue;
        }
        posted[key] = i;
        posted_slot[key] = c.slot;
        switch (c.kind) {
          case ir::SEND_ACTIVATION:
            if (fwd[c.mb] < 0 || fwd_slot[c.mb] != c.slot) {
              Error(absl::StrCat(Where(s, i), ": sends the activation of micro-batch ", c.mb,
                                 " before its forward on slot ", c.slot));
            }
            break;
          case ir::SEND_GRAD:
            if ((bwd_full[c.mb] < 0 && bwd_in[c.mb] < 0) || fwd_slot[c.mb] != c.slot) {
              Error(absl::StrCat(Where(s, i), ": sends the input gradient of micro-batch ", c.mb,
                                 " before its backward on slot ", c.slot));
            }
            break;
          default:
            break;
        }
        continue;
      }
      switch (in.op_case()) {
        case Instruction::kLoadMicroBatch: {
          const auto& l = in.load_micro_batch();
          if (l.inputs()) inputs[mb] = true;
          if (l.labels()) labels[mb] = true;
          break;
        }
        case Instruction::kWait: {
          for (const auto& ref : in.wait().ops()) {
            CommKey key{ref.kind(), ref.micro_batch(), ref.chunk()};
            if (!posted.count(key)) {
              Error(absl::StrCat(Where(s, i), ": waits for ", KindName(ref.kind()), " mb=", ref.micro_batch(),
                                 " which was not posted before"));
            } else if (!waited.insert(key).second) {
              Error(absl::StrCat(Where(s, i), ": waits for ", KindName(ref.kind()), " mb=", ref.micro_batch(),
                                 " a second time"));
            } else {
              touch(posted_slot[key], ref.micro_batch(), i);
              if (ref.kind() == ir::RECV_ACTIVATION) act_ready[ref.micro_batch()] = true;
              if (ref.kind() == ir::RECV_GRAD) grad_ready[ref.micro_batch()] = true;
            }
          }
          break;
        }
        case Instruction::kForward: {
          const int slot = in.forward().slot();
          if (fwd[mb] >= 0) {
            Error(absl::StrCat(Where(s, i), ": forwards micro-batch ", mb, " a second time (first at instruction ",
                               fwd[mb], ")"));
            break;
          }
          fwd[mb] = i;
          fwd_slot[mb] = slot;
          if (lowered_) {
            if (first && !inputs[mb]) Error(absl::StrCat(Where(s, i), ": inputs of micro-batch ", mb, " were not loaded"));
            if (!first && comm_lowered_ && !act_ready[mb]) {
              Error(absl::StrCat(Where(s, i), ": activation of micro-batch ", mb, " from stage ", s - 1,
                                 " was not received and waited for"));
            }
            if (last && !labels[mb]) Error(absl::StrCat(Where(s, i), ": labels of micro-batch ", mb, " were not loaded"));
          }
          break;
        }
        case Instruction::kBackward: {
          const auto& b = in.backward();
          last_backward = i;
          if (fwd[mb] < 0) {
            Error(absl::StrCat(Where(s, i), ": backward of micro-batch ", mb, " before its forward"));
            break;
          }
          if (b.slot() != fwd_slot[mb]) {
            Error(absl::StrCat(Where(s, i), ": uses slot ", b.slot(), " but the forward of micro-batch ", mb,
                               " used slot ", fwd_slot[mb]));
          }
          if (comm_lowered_ && !last && !grad_ready[mb]) {
            Error(absl::StrCat(Where(s, i), ": gradient of micro-batch ", mb, " from stage ", s + 1,
                               " was not received and waited for"));
          }
          std::vector<int>* seen = b.part() == ir::FULL ? &bwd_full : b.part() == ir::INPUT_ONLY ? &bwd_in : &bwd_w;
          if ((*seen)[mb] >= 0 || (b.part() == ir::FULL && (bwd_in[mb] >= 0 || bwd_w[mb] >= 0)) ||
              (b.part() != ir::FULL && bwd_full[mb] >= 0)) {
            Error(absl::StrCat(Where(s, i), ": backward of micro-batch ", mb, " is done twice"));
          }
          if (b.part() == ir::WEIGHT_ONLY && bwd_in[mb] < 0) {
            Error(absl::StrCat(Where(s, i), ": weight-only backward of micro-batch ", mb, " before its input-only part"));
          }
          (*seen)[mb] = i;
          break;
        }
        case Instruction::kReduceTiedGrads:
        case Instruction::kReduceGrads:
          reductions.push_back(i);
          if (in.has_reduce_grads()) {
            if (reduce >= 0) Error(absl::StrCat(Where(s, i), ": reduces gradients twice"));
            reduce = i;
          }
          break;
        case Instruction::kClipGradNorm: {
          reductions.push_back(i);
          if (reduce >= 0 && i < reduce) Error(absl::StrCat(Where(s, i), ": clips before the data-parallel reduction"));
          clip = i;
          break;
        }
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
        default:
          break;
      }
    }
    // Whole-program properties.
    for (int mb = 0; mb < m; ++mb) {
      if (fwd[mb] < 0) Error(absl::StrCat("stage ", s, ": micro-batch ", mb, " is never forwarded"));
      bool done = bwd_full[mb] >= 0 || (bwd_in[mb] >= 0 && bwd_w[mb] >= 0);
      bool any = bwd_full[mb] >= 0 || bwd_in[mb] >= 0 || bwd_w[mb] >= 0;
      if (training_ && !done) Error(absl::StrCat("stage ", s, ": micro-batch ", mb, " is never (fully) backwarded"));
      if (!training_ && any) Error(absl::StrCat("stage ", s, ": inference plan backwards micro-batch ", mb));
    }
    for (const auto& [key, i] : posted) {
      if (!waited.count(key)) {
        Error(absl::StrCat(Where(s, i), ": posted but never waited for"));
      }
    }
    for (int r : reductions) {
      if (r < last_backward) Error(absl::StrCat(Where(s, r), ": reduces gradients before the backward at instruction ",
                                                last_backward));
      if (optimizer >= 0 && r > optimizer) Error(absl::StrCat(Where(s, r), ": reduces gradients after the optimizer step"));
    }
    if (optimizer >= 0 && optimizer < last_backward) {
      Error(absl::StrCat(Where(s, optimizer), ": optimizer step before the backward at instruction ", last_backward));
    }
    if (clip >= 0 && reduce > clip) Error(absl::StrCat(Where(s, reduce), ": reduces gradients after clipping them"));
    if (has_optimizer_ && optimizer < 0) Error(absl::StrCat("stage ", s, ": training plan has no optimizer step"));
    if (sharded_step && gather < 0) {
      Error(absl::StrCat(Where(s, optimizer), ": sharded optimizer step is never followed by GatherParams, so the "
                         "replicas' parameters would diverge"));
    }
    if (has_optimizer_ && plan_.topology().data_parallel() > 1 && reduce < 0) {
      Error(absl::StrCat("stage ", s, ": data_parallel=", plan_.topology().data_parallel(),
                         " but gradients are never reduced (ReduceGrads)"));
    }
    // Liveness: a slot holds one micro-batch from its first to its last use. Before
    // assign-buffers (num_slots == 0) slots are unassigned and not checked.
    if (slots == 0) {
      if (lowered_ || comm_lowered_) {
        Error(absl::StrCat("stage ", s, ": loads or communication were inserted before buffer slots were assigned "
                           "(run assign-buffers first)"));
      }
      return;
    }
    for (const auto& [slot, by_mb] : live) {
      std::vector<std::tuple<int, int, int>> ranges;  // first, last, mb
      for (const auto& [mb, r] : by_mb) ranges.emplace_back(r.first, r.second, mb);
      std::sort(ranges.begin(), ranges.end());
      for (size_t k = 1; k < ranges.size(); ++k) {
        auto [f0, l0, mb0] = ranges[k - 1];
        auto [f1, l1, mb1] = ranges[k];
        if (f1 <= l0) {
          Error(absl::StrCat(Where(s, f1), ": overwrites slot ", slot, " with micro-batch ", mb1, " while micro-batch ",
                             mb0, " still needs it (until instruction ", l0, ")"));
        }
      }
    }
  }

  void CheckMatching() {
    // (sender stage, receiver stage, kind of send, mb, chunk) -> instruction
    std::map<std::tuple<int, int, int, int, int>, std::pair<int, Comm>> sends, recvs;
    for (const auto& prog : plan_.programs()) {
      for (int i = 0; i < prog.instructions_size(); ++i) {
        Comm c;
        if (!AsComm(prog.instructions(i), &c)) continue;
        const bool is_send = c.kind == ir::SEND_ACTIVATION || c.kind == ir::SEND_GRAD;
        CommKind send_kind = is_send ? c.kind : Counterpart(c.kind);
        auto key = is_send ? std::make_tuple(prog.stage(), c.peer, int(send_kind), c.mb, c.chunk)
                           : std::make_tuple(c.peer, prog.stage(), int(send_kind), c.mb, c.chunk);
        (is_send ? sends : recvs)[key] = {i, c};
      }
    }
    for (const auto& [key, v] : sends) {
      auto [from, to, kind, mb, chunk] = key;
      auto it = recvs.find(key);
      if (it == recvs.end()) {
        Error(absl::StrCat(Where(from, v.first), ": no matching ", KindName(Counterpart(CommKind(kind))),
                           " on stage ", to));
        continue;
      }
      if (it->second.second.shape != v.second.shape || it->second.second.dtype != v.second.dtype) {
        Error(absl::StrCat(Where(from, v.first), ": shape or dtype differs from the matching receive at ",
                           Where(to, it->second.first)));
      }
    }
    for (const auto& [key, v] : recvs) {
      if (!sends.count(key)) {
        auto [from, to, kind, mb, chunk] = key;
        Error(absl::StrCat(Where(to, v.first), ": no matching ", KindName(CommKind(kind)), " on stage ", from));
      }
    }
  }

  // Runs all stages together: posts never block; a Wait blocks until the peer has
  // posted the counterpart of every referenced operation (rendezvous semantics, the
  // strictest a transport may have); ReduceTiedGrads blocks until every listed stage
  // is at the same collective.
  void Simulate() {
    const int p = plan_.topology().num_stages();
    std::vector<int> pc(p, 0);
    std::vector<std::map<CommKey, int>> posted(p);  // key -> peer
    auto finished = [&](int s) { return pc[s] >= plan_.programs(s).instructions_size(); };
    auto blocked_reason = [&](int s) -> std::string {
      const Instruction& in = plan_.programs(s).instructions(pc[s]);
      if (in.has_wait()) {
        for (const auto& ref : in.wait().ops()) {
          CommKey key{ref.kind(), ref.micro_batch(), ref.chunk()};
          int peer = posted[s].at(key);
          CommKey other{Counterpart(ref.kind()), ref.micro_batch(), ref.chunk()};
          if (!posted[peer].count(other)) {
            return absl::StrCat("needs stage ", peer, " to post ", KindName(Counterpart(ref.kind())), " mb=",
                                ref.micro_batch());
          }
        }
        return "";
      }
      std::vector<int> members;
      if (CollectiveOf(in, &members)) {
        for (int t : members) {
          if (t == s) continue;
          if (finished(t) || !SameCollective(in, plan_.programs(t).instructions(pc[t]))) {
            return absl::StrCat("needs stage ", t, " at the same collective (", ir::PrintInstruction(in), ")");
          }
        }
        return "";
      }
      return "";
    };
    bool progress = true;
    while (progress) {
      progress = false;
      for (int s = 0; s < p; ++s) {
        while (!finished(s)) {
          const Instruction& in = plan_.programs(s).instructions(pc[s]);
          if (!blocked_reason(s).empty()) break;
          Comm c;
          if (AsComm(in, &c)) posted[s][{c.kind, c.mb, c.chunk}] = c.peer;
          std::vector<int> members;
          if (CollectiveOf(in, &members)) {
            // Every participant is here: all of them pass the collective together.
            for (int t : members)
              if (t != s) ++pc[t];
          }
          ++pc[s];
          progress = true;
        }
      }
    }
    std::vector<std::string> stuck;
    for (int s = 0; s < p; ++s) {
      if (!finished(s)) stuck.push_back(absl::StrCat(Where(s, pc[s]), " ", blocked_reason(s)));
    }
    if (!stuck.empty()) {
      Error(absl::StrCat("deadlock: with blocking waits no stage can proceed:\n    ", absl::StrJoin(stuck, "\n    ")));
    }
  }

  const ir::Plan& plan_;
  ir::ErrorList errors_;
  bool have_shapes_ = false;
  bool lowered_ = false;       // loads inserted: check inputs/labels are loaded
  bool comm_lowered_ = false;  // p2p inserted: check activations/gradients arrive
  bool training_ = false;
  bool has_optimizer_ = false;
  bool sharded_ = false;  // optimizer steps must be sharded (ZeRO stage 1, D > 1)
};

}  // namespace

namespace {

// `runnable`: the plan must be what pprun can run (fully lowered; a training schedule has
// its backwards and optimizer steps) rather than any correct stage of compilation.
absl::Status Verify(const ir::Plan& plan, bool runnable) {
  const bool multi = plan.topology().num_stages() > 1;
  if (runnable) {
    RETURN_IF_ERROR(ir::CheckPlanStructure(plan, /*complete=*/true));
    RETURN_IF_ERROR(Verifier(plan, /*lowered=*/true, /*comm_lowered=*/multi,
                             /*training=*/plan.config().schedule() != "inference")
                        .Run());
  } else {
    RETURN_IF_ERROR(Verifier(plan).Run());
  }
  if (plan.eval_programs_size() == 0) return absl::OkStatus();
  // The eval programs are a forward-only plan of their own over the same partition.
  ir::Plan eval = plan;
  eval.clear_eval_programs();
  *eval.mutable_programs() = plan.eval_programs();
  bool lowered = runnable, comm_lowered = runnable && multi;
  for (const auto& prog : plan.programs()) {
    for (const auto& in : prog.instructions()) {
      lowered |= in.has_load_micro_batch();
      comm_lowered |= in.has_wait();
    }
  }
  for (const auto& prog : eval.programs()) {
    for (int i = 0; i < prog.instructions_size(); ++i) {
      const auto& in = prog.instructions(i);
      if (in.has_backward() || in.has_optimizer_step() || in.has_reduce_grads() || in.has_reduce_tied_grads() ||
          in.has_clip_grad_norm() || in.has_gather_params()) {
        return absl::InvalidArgumentError(absl::StrCat("eval programs: stage ", prog.stage(), " instruction ", i, " (",
                                                       ir::PrintInstruction(in), ") is not forward-only"));
      }
    }
  }
  absl::Status s = Verifier(eval, lowered, comm_lowered).Run();
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("eval programs: ", s.message()));
  return absl::OkStatus();
}

}  // namespace

absl::Status VerifyPlan(const ir::Plan& plan) { return Verify(plan, /*runnable=*/false); }

absl::Status VerifyRunnablePlan(const ir::Plan& plan) { return Verify(plan, /*runnable=*/true); }

absl::StatusOr<bool> VerifyPass::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(VerifyPlan(plan));
  return false;
}

}  // namespace ppc::passes
