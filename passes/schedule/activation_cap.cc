#include "passes/schedule/activation_cap.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ir/instruction_text.h"
#include "ir/limits.h"
#include "ir/status_macros.h"
#include "ir/topology.h"

namespace ppc::passes {

namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// The replay of every stage's order at unit costs (activation_cap.h).
class Replay {
 public:
  Replay(const std::vector<std::vector<ComputeOp>>& orders, int virtual_stages, int micro_batches,
         const std::vector<SavedActivationBytes>& saved, int64_t cap)
      : nv_(virtual_stages), m_(micro_batches), cap_(cap),
        forward_done_(static_cast<size_t>(nv_) * m_, kNever), backward_done_(forward_done_) {
    stages_.reserve(orders.size());
    for (const std::vector<ComputeOp>& order : orders) {
      Stage st(order, saved);
      for (size_t i = 0; i < order.size(); ++i) {
        if (order[i].kind == ir::BACKWARD_WEIGHT) st.w_index[{order[i].virtual_stage, order[i].micro_batch}] = i;
        if (order[i].kind == ir::BACKWARD || order[i].kind == ir::BACKWARD_INPUT) st.backwards.insert(i);
      }
      left_ += order.size();
      stages_.push_back(std::move(st));
    }
  }

  absl::StatusOr<std::vector<std::vector<ComputeOp>>> Run() {
    const size_t total = left_;
    int64_t t = 0;
    while (left_ > 0) {
      bool started = false;
      for (size_t s = 0; s < stages_.size(); ++s) {
        if (stages_[s].busy_until <= t && Decide(stages_[s], t)) started = true;
      }
      int64_t next = kNever;
      for (const Stage& st : stages_) {
        if (st.busy_until > t) next = std::min(next, st.busy_until);
      }
      if (!started && next == kNever) return CannotHold(t);
      if (next != kNever) t = next;
      if (++steps_ > 4 * total + 16) return Stuck();
    }
    std::vector<std::vector<ComputeOp>> out;
    out.reserve(stages_.size());
    for (Stage& st : stages_) out.push_back(std::move(st.out));
    return out;
  }

 private:
  struct Stage {
    Stage(const std::vector<ComputeOp>& o, const std::vector<SavedActivationBytes>& saved)
        : order(&o), taken(o.size(), false), walk(saved) {}
    const std::vector<ComputeOp>* order;
    std::vector<bool> taken;
    size_t head = 0;
    std::deque<std::pair<int, int>> pending;  // W's whose I ran, oldest first
    std::map<std::pair<int, int>, size_t> w_index;
    std::set<size_t> backwards;  // positions of the B's and I's not yet run
    ActivationWalk walk;
    int64_t busy_until = 0;
    std::vector<ComputeOp> out;
  };

  void Take(Stage& st, size_t i) {
    st.taken[i] = true;
    st.backwards.erase(i);
    --left_;
  }
  size_t Key(int v, int mb) const { return static_cast<size_t>(v) * m_ + mb; }
  bool Valid(const ComputeOp& op) const {
    return op.virtual_stage >= 0 && op.virtual_stage < nv_ && op.micro_batch >= 0 && op.micro_batch < m_;
  }
  bool Ready(const ComputeOp& op, int64_t t) const {
    if (!Valid(op)) return false;
    const int v = op.virtual_stage, mb = op.micro_batch;
    switch (op.kind) {
      case ir::FORWARD:
        return v == 0 || forward_done_[Key(v - 1, mb)] <= t;
      case ir::BACKWARD:
      case ir::BACKWARD_INPUT:
        return forward_done_[Key(v, mb)] <= t && (v + 1 == nv_ || backward_done_[Key(v + 1, mb)] <= t);
      case ir::BACKWARD_WEIGHT:
        return backward_done_[Key(v, mb)] <= t;
      default:
        return false;
    }
  }
  bool Crosses(const Stage& st, ir::ComputeKind kind, int v) const {
    return cap_ > 0 && st.walk.After(kind, v) > cap_;
  }
  void Start(Stage& st, ir::ComputeKind kind, int v, int mb, int64_t t) {
    st.out.push_back({kind, v, mb});
    st.walk.Apply(kind, v);
    const int64_t end = t + (kind == ir::BACKWARD ? 2 : 1);
    st.busy_until = end;
    if (kind == ir::FORWARD) forward_done_[Key(v, mb)] = end;
    if (kind == ir::BACKWARD || kind == ir::BACKWARD_INPUT) backward_done_[Key(v, mb)] = end;
    if (kind == ir::BACKWARD_INPUT) st.pending.push_back({v, mb});
  }
  // CapActivations checked that every W follows its own I once, so it is pending here.
  void StartWeight(Stage& st, std::pair<int, int> w, int64_t t) {
    auto p = std::find(st.pending.begin(), st.pending.end(), w);
    if (p != st.pending.end()) st.pending.erase(p);
    Take(st, st.w_index.at(w));
    Start(st, ir::BACKWARD_WEIGHT, w.first, w.second, t);
  }
  // A B or I at index i; an I that would cross the cap runs as a B, its W dropped.
  void StartBackward(Stage& st, size_t i, int64_t t) {
    const ComputeOp& op = (*st.order)[i];
    Take(st, i);
    if (op.kind == ir::BACKWARD_INPUT && Crosses(st, op.kind, op.virtual_stage)) {
      Take(st, st.w_index.at({op.virtual_stage, op.micro_batch}));
      Start(st, ir::BACKWARD, op.virtual_stage, op.micro_batch, t);
      return;
    }
    Start(st, op.kind, op.virtual_stage, op.micro_batch, t);
  }
  // Whether the stage starts an op at t.
  bool Decide(Stage& st, int64_t t) {
    while (st.head < st.taken.size() && st.taken[st.head]) ++st.head;
    if (st.head == st.taken.size()) return false;
    const size_t i = st.head;
    const ComputeOp& next = (*st.order)[i];
    if (next.kind == ir::BACKWARD_WEIGHT) {
      if (!Ready(next, t)) return false;
      StartWeight(st, {next.virtual_stage, next.micro_batch}, t);
      return true;
    }
    if (!st.pending.empty() && Crosses(st, next.kind, next.virtual_stage)) {
      StartWeight(st, st.pending.front(), t);
      return true;
    }
    if (next.kind == ir::FORWARD && Crosses(st, next.kind, next.virtual_stage)) {
      for (size_t j : st.backwards) {
        if (Ready((*st.order)[j], t)) {
          StartBackward(st, j, t);
          return true;
        }
      }
      return false;
    }
    if (!Ready(next, t)) return false;
    if (next.kind == ir::FORWARD) {
      Take(st, i);
      Start(st, next.kind, next.virtual_stage, next.micro_batch, t);
    } else {
      StartBackward(st, i, t);
    }
    return true;
  }
  // Nobody runs at t and nobody can start: a forward that the cap holds back, or an op
  // whose input never comes.
  absl::Status CannotHold(int64_t t) const {
    for (size_t s = 0; s < stages_.size(); ++s) {
      const Stage& st = stages_[s];
      if (st.head == st.taken.size()) continue;
      const ComputeOp& op = (*st.order)[st.head];
      if (op.kind == ir::FORWARD && Ready(op, t) && Crosses(st, op.kind, op.virtual_stage)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "stage ", s, " cannot hold max_activations=", cap_, " bytes: its forward ", op.virtual_stage, "F",
            op.micro_batch, " would take its activations to ", st.walk.After(op.kind, op.virtual_stage),
            " bytes, and no backward can run before it (each stage's ops run in the schedule's order, a "
            "forward held back only while a later backward can run); raise the cap or use max_activations=none"));
      }
    }
    return Stuck();
  }
  absl::Status Stuck() const {
    for (size_t s = 0; s < stages_.size(); ++s) {
      const Stage& st = stages_[s];
      for (size_t i = 0; i < st.taken.size(); ++i) {
        if (st.taken[i]) continue;
        const ComputeOp& op = (*st.order)[i];
        return absl::InternalError(absl::StrCat("activation cap: stage ", s, "'s op ", op.virtual_stage,
                                                ir::ComputeLetter(op.kind), op.micro_batch,
                                                " never becomes ready (an op it needs never runs)"));
      }
    }
    return absl::InternalError("activation cap: the orders did not finish");
  }

  int nv_, m_;
  int64_t cap_;
  std::vector<int64_t> forward_done_, backward_done_;
  std::vector<Stage> stages_;
  size_t left_ = 0;  // ops not yet run, all stages
  size_t steps_ = 0;
};

}  // namespace

absl::StatusOr<std::vector<std::vector<ComputeOp>>> CapActivations(const std::vector<std::vector<ComputeOp>>& orders,
                                                                   const std::vector<int>& stage_of,
                                                                   const std::vector<SavedActivationBytes>& saved,
                                                                   int64_t cap) {
  const int nv = static_cast<int>(stage_of.size());
  int m = 0;
  for (size_t s = 0; s < orders.size(); ++s) {
    // Per (virtual stage, micro-batch): one F, then one B or one I, and a W only after
    // its I, once.
    std::map<std::pair<int, int>, int> state;  // 0 none, 1 F, 2 B or I-with-W, 3 I waiting for its W
    for (const ComputeOp& op : orders[s]) {
      auto bad = [&](const char* why) {
        return absl::InvalidArgumentError(absl::StrCat("activation cap: stage ", s, "'s op ", op.virtual_stage,
                                                       ir::ComputeLetter(op.kind), op.micro_batch, " ", why));
      };
      if (op.virtual_stage < 0 || op.virtual_stage >= nv || stage_of[op.virtual_stage] != static_cast<int>(s)) {
        return bad("is not one of its virtual stages' ops");
      }
      if (op.micro_batch < 0 || op.micro_batch >= ir::kMaxMicroBatches) {
        return bad(absl::StrCat("has a micro-batch outside [0, ", ir::kMaxMicroBatches, ")").c_str());
      }
      int& at = state[{op.virtual_stage, op.micro_batch}];
      switch (op.kind) {
        case ir::FORWARD:
          if (at != 0) return bad("repeats a forward");
          at = 1;
          break;
        case ir::BACKWARD:
        case ir::BACKWARD_INPUT:
          if (at != 1) return bad("is not the one backward after its forward");
          at = op.kind == ir::BACKWARD ? 2 : 3;
          break;
        case ir::BACKWARD_WEIGHT:
          if (at != 3) return bad("does not follow its own I once");
          at = 2;
          break;
        default:
          return bad("is not a compute op");
      }
      m = std::max(m, op.micro_batch + 1);
    }
    for (const auto& [key, at] : state) {
      if (at == 3) {
        return absl::InvalidArgumentError(absl::StrCat("activation cap: stage ", s, "'s op ", key.first, "I",
                                                       key.second, " has no W after it"));
      }
    }
  }
  if (static_cast<int>(saved.size()) != nv) {
    return absl::InvalidArgumentError(absl::StrCat("activation cap: ", saved.size(), " saved sizes for ", nv,
                                                   " virtual stages"));
  }
  return Replay(orders, nv, m, saved, cap).Run();
}

absl::Status CappedSchedulePass::Run(ir::Module& module) {
  const std::string pass = name();
  int64_t cap = 0;  // none
  if (max_activations_ != "none") {
    if (max_activations_ != "1f1b" && (!absl::SimpleAtoi(max_activations_, &cap) || cap <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          pass, ": max_activations must be none, 1f1b or a number of bytes > 0, got '", max_activations_, "'"));
    }
  }
  RETURN_IF_ERROR(SchedulePass::Run(module));
  if (max_activations_ == "none") return absl::OkStatus();
  const std::vector<SavedActivationBytes> saved = SavedActivations(module.header);
  if (saved.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(pass, ": max_activations=", max_activations_,
                                                      " needs the layers' output shapes (run infer-shapes first)"));
  }
  if (max_activations_ == "1f1b") cap = OneFOneBPeakActivationBytes(module.header);
  if (cap <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(pass, ": max_activations=1f1b: no 1F1B peak for this plan "
                                                      "(its placement does not give each stage whole virtual stages)"));
  }
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(module.header));
  std::vector<int> stage_of(grid.virtual_stages());
  for (int v = 0; v < grid.virtual_stages(); ++v) stage_of[v] = grid.StageOf(v);
  std::vector<std::vector<ComputeOp>> orders;
  orders.reserve(module.programs.size());
  for (const ir::Program& prog : module.programs) {
    std::vector<ComputeOp>& order = orders.emplace_back();
    order.reserve(prog.ops.size());
    for (const ir::Op& op : prog.ops) order.push_back({op.compute_kind(), op.virtual_stage(), op.micro_batch});
  }
  absl::StatusOr<std::vector<std::vector<ComputeOp>>> capped = CapActivations(orders, stage_of, saved, cap);
  if (!capped.ok()) return absl::Status(capped.status().code(), absl::StrCat(pass, ": ", capped.status().message()));
  for (size_t s = 0; s < module.programs.size(); ++s) {
    ir::Program& prog = module.programs[s];
    prog.ops.clear();
    for (const ComputeOp& op : (*capped)[s]) prog.Add(ir::Op::Compute(op.kind, op.virtual_stage, op.micro_batch));
  }
  return absl::OkStatus();
}

}  // namespace ppc::passes
