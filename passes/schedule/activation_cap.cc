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

bool SameOrders(const std::vector<std::vector<ComputeOp>>& a, const std::vector<std::vector<ComputeOp>>& b) {
  auto same = [](const ComputeOp& x, const ComputeOp& y) {
    return x.kind == y.kind && x.virtual_stage == y.virtual_stage && x.micro_batch == y.micro_batch;
  };
  if (a.size() != b.size()) return false;
  for (size_t s = 0; s < a.size(); ++s) {
    if (!std::equal(a[s].begin(), a[s].end(), b[s].begin(), b[s].end(), same)) return false;
  }
  return true;
}

// The replay of every stage's order at unit costs (activation_cap.h).
class Replay {
 public:
  Replay(const std::vector<std::vector<ComputeOp>>& orders, const std::vector<int>& stage_of, int micro_batches,
         const std::vector<SavedActivationBytes>& saved, int64_t cap, bool free_choice, bool channels = true)
      : nv_(static_cast<int>(stage_of.size())), m_(micro_batches), stage_of_(stage_of), channel_rule_(channels),
        cap_(cap), free_(free_choice), saved_(saved),
        forward_done_(static_cast<size_t>(nv_) * m_, kNever), backward_done_(forward_done_) {
    stages_.reserve(orders.size());
    for (const std::vector<ComputeOp>& order : orders) {
      Stage st(order, saved);
      for (size_t i = 0; i < order.size(); ++i) {
        if (order[i].kind == ir::BACKWARD_WEIGHT) st.w_index[{order[i].virtual_stage, order[i].micro_batch}] = i;
        if (order[i].kind == ir::BACKWARD || order[i].kind == ir::BACKWARD_INPUT) {
          st.b_index[{order[i].virtual_stage, order[i].micro_batch}] = i;
        }
        if (order[i].kind == ir::FORWARD) st.forwards[order[i].virtual_stage].push_back(i);
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
        if (stages_[s].busy_until <= t && (free_ ? DecideFree(stages_[s], t) : Decide(stages_[s], t))) started = true;
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
    for (Stage& st : stages_) {
      makespan_ = std::max(makespan_, st.busy_until);
      out.push_back(std::move(st.out));
    }
    return out;
  }
  // After a Run that finished: when the last op ends, at unit costs.
  int64_t makespan() const { return makespan_; }

 private:
  struct Stage {
    Stage(const std::vector<ComputeOp>& o, const std::vector<SavedActivationBytes>& saved)
        : order(&o), taken(o.size(), false), walk(saved) {}
    const std::vector<ComputeOp>* order;
    std::vector<bool> taken;
    size_t head = 0;
    std::deque<std::pair<int, int>> pending;  // W's whose I ran, oldest first
    std::map<std::pair<int, int>, size_t> w_index, b_index;  // (v, mb) -> position of its W, its B or I
    // The B's and I's whose F has run and they not: by position, and by (virtual stage,
    // position). Only these can be ready; there are as many as forwards in flight.
    std::set<size_t> armed;
    std::set<std::pair<int, size_t>> armed_by_stage;
    std::map<int, std::deque<size_t>> forwards;  // per virtual stage, in order: its F's not yet run
    ActivationWalk walk;
    int64_t busy_until = 0;
    std::vector<ComputeOp> out;
  };

  void Take(Stage& st, size_t i) {
    st.taken[i] = true;
    const ComputeOp& op = (*st.order)[i];
    if (op.kind == ir::FORWARD) {
      std::deque<size_t>& q = st.forwards[op.virtual_stage];
      q.erase(std::find(q.begin(), q.end(), i));
      auto b = st.b_index.find({op.virtual_stage, op.micro_batch});
      if (b != st.b_index.end()) {
        st.armed.insert(b->second);
        st.armed_by_stage.insert({op.virtual_stage, b->second});
      }
    } else if (op.kind != ir::BACKWARD_WEIGHT) {
      st.armed.erase(i);
      st.armed_by_stage.erase({op.virtual_stage, i});
    }
    --left_;
  }
  size_t Key(int v, int mb) const { return static_cast<size_t>(v) * m_ + mb; }
  bool Valid(const ComputeOp& op) const {
    return op.virtual_stage >= 0 && op.virtual_stage < nv_ && op.micro_batch >= 0 && op.micro_batch < m_;
  }
  bool Ready(const ComputeOp& op, int64_t t) const { return DependenciesDone(op, t) && ChannelAllows(op); }
  // What it needs has been computed (its input may still wait on the channel rule).
  bool DependenciesDone(const ComputeOp& op, int64_t t) const {
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
  // What virtual stage `from` sends virtual stage `to` for micro-batch mb, where the two
  // run on different stages. lower posts a channel's transfers in the order the
  // receiver takes them, so a transfer produced early waits in its slot for those taken
  // before it. An activation's slot lives until its own backward, which cannot come
  // first; a gradient's is freed at the B or W that made it. So the receiver takes a
  // transfer only when every gradient produced on the channel before it has been taken:
  // then every gradient is posted as soon as it is made.
  struct Sent {
    int from, mb;
    bool gradient;
  };
  using Channel = std::deque<Sent>;  // the untaken ones, as produced
  bool ChannelAllows(const ComputeOp& op) const {
    const int v = op.virtual_stage;
    if (op.kind == ir::FORWARD) return v == 0 || NextOnChannel(v - 1, v, op.micro_batch);
    if (op.kind == ir::BACKWARD || op.kind == ir::BACKWARD_INPUT) {
      return v + 1 == nv_ || NextOnChannel(v + 1, v, op.micro_batch);
    }
    return true;
  }
  bool NextOnChannel(int from, int to, int mb) const {
    if (!channel_rule_ || stage_of_[from] == stage_of_[to]) return true;
    auto c = channels_.find({stage_of_[from], stage_of_[to]});
    if (c == channels_.end()) return false;
    for (const Sent& x : c->second) {
      if (x.from == from && x.mb == mb) return true;
      if (x.gradient) return false;  // an earlier gradient not yet taken
    }
    return false;
  }
  void Produce(int from, int to, int mb) {
    if (to < 0 || to >= nv_ || stage_of_[from] == stage_of_[to]) return;
    channels_[{stage_of_[from], stage_of_[to]}].push_back({from, mb, to < from});
  }
  void Consume(int from, int to, int mb) {
    if (from < 0 || from >= nv_ || stage_of_[from] == stage_of_[to]) return;
    Channel& c = channels_[{stage_of_[from], stage_of_[to]}];
    auto at = std::find_if(c.begin(), c.end(), [&](const Sent& x) { return x.from == from && x.mb == mb; });
    if (at != c.end()) c.erase(at);
  }
  bool Crosses(const Stage& st, ir::ComputeKind kind, int v) const {
    return cap_ > 0 && st.walk.After(kind, v) > cap_;
  }
  // A forward of v fits when, after it, the stage could still run one forward of each
  // later virtual stage it holds that has none in flight (reserving room for the chunk
  // whose backward would free memory). Only the free choice reserves.
  bool FitsForward(const Stage& st, int v) const {
    if (cap_ <= 0) return true;
    int64_t after = st.walk.After(ir::FORWARD, v);
    if (after > cap_) return false;
    if (!free_) return true;
    for (const auto& [w, q] : st.forwards) {
      if (w <= v || q.empty()) continue;
      auto in_flight = st.armed_by_stage.lower_bound({w, 0});
      if (in_flight != st.armed_by_stage.end() && in_flight->first == w) continue;
      after = SatAdd(after, saved_[w].forward);
    }
    return after <= cap_;
  }
  void Start(Stage& st, ir::ComputeKind kind, int v, int mb, int64_t t) {
    st.out.push_back({kind, v, mb});
    st.walk.Apply(kind, v);
    const int64_t end = t + (kind == ir::BACKWARD ? 2 : 1);
    st.busy_until = end;
    if (kind == ir::FORWARD) {
      forward_done_[Key(v, mb)] = end;
      Consume(v - 1, v, mb);
      Produce(v, v + 1, mb);
    }
    if (kind == ir::BACKWARD || kind == ir::BACKWARD_INPUT) {
      backward_done_[Key(v, mb)] = end;
      Consume(v + 1, v, mb);
      Produce(v, v - 1, mb);
    }
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
  // The free choice (activation_cap.h): a ready B or I, the earliest virtual stage
  // first; else a ready forward that fits with room kept for the later chunks, the
  // latest virtual stage first; else a pending W. Where a ready op would cross the cap,
  // a pending W runs first.
  bool DecideFree(Stage& st, int64_t t) {
    for (const auto& [v, j] : st.armed_by_stage) {
      const ComputeOp& op = (*st.order)[j];
      if (!Ready(op, t)) continue;
      if (!st.pending.empty() && Crosses(st, op.kind, op.virtual_stage)) {
        StartWeight(st, st.pending.front(), t);
      } else {
        StartBackward(st, j, t);
      }
      return true;
    }
    for (auto it = st.forwards.rbegin(); it != st.forwards.rend(); ++it) {
      if (it->second.empty()) continue;
      const size_t j = it->second.front();
      const ComputeOp& f = (*st.order)[j];
      if (!Ready(f, t)) continue;
      if (FitsForward(st, f.virtual_stage)) {
        Take(st, j);
        Start(st, f.kind, f.virtual_stage, f.micro_batch, t);
        return true;
      }
      if (!st.pending.empty()) {
        StartWeight(st, st.pending.front(), t);
        return true;
      }
    }
    if (st.pending.empty()) return false;
    StartWeight(st, st.pending.front(), t);
    return true;
  }
  bool RunLaterBackward(Stage& st, int64_t t) {
    for (size_t j : st.armed) {
      if (Ready((*st.order)[j], t)) {
        StartBackward(st, j, t);
        return true;
      }
    }
    return false;
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
    if (!st.pending.empty() && (next.kind == ir::FORWARD ? !FitsForward(st, next.virtual_stage)
                                                         : Crosses(st, next.kind, next.virtual_stage))) {
      StartWeight(st, st.pending.front(), t);
      return true;
    }
    // A forward the cap holds back, or an op whose input waits behind an earlier gradient
    // on its channel (one this stage takes further down its order): the first ready B
    // or I further down runs instead.
    const bool held = next.kind == ir::FORWARD && !FitsForward(st, next.virtual_stage);
    if (held || (DependenciesDone(next, t) && !ChannelAllows(next))) return RunLaterBackward(st, t);
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
      // The forwards the stage could take next: its head in order; with free choice, the
      // first untaken forward of each of its virtual stages.
      std::vector<size_t> next;
      if (!free_ && st.head < st.taken.size()) next.push_back(st.head);
      if (free_) {
        for (const auto& [v, q] : st.forwards) {
          if (!q.empty()) next.push_back(q.front());
        }
      }
      for (size_t i : next) {
        const ComputeOp& op = (*st.order)[i];
        if (op.kind != ir::FORWARD || !Ready(op, t) || FitsForward(st, op.virtual_stage)) continue;
        return absl::FailedPreconditionError(absl::StrCat(
            "stage ", s, " cannot hold max_activations=", cap_, " bytes: its forward ", op.virtual_stage, "F",
            op.micro_batch, " would take its activations to ", st.walk.After(op.kind, op.virtual_stage),
            " bytes, and no backward can run before it (each stage's ops run in the schedule's order, a "
            "forward held back only while a later backward can run; nor can it with each stage free to run any "
            "ready op); raise the cap or use max_activations=none"));
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
  const std::vector<int>& stage_of_;
  bool channel_rule_;  // NextOnChannel
  std::map<std::pair<int, int>, Channel> channels_;  // (sender, receiver) stage -> in flight
  int64_t cap_;
  bool free_;  // DecideFree instead of Decide
  const std::vector<SavedActivationBytes>& saved_;
  std::vector<int64_t> forward_done_, backward_done_;
  std::vector<Stage> stages_;
  size_t left_ = 0;  // ops not yet run, all stages
  size_t steps_ = 0;
  int64_t makespan_ = 0;
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
  // Orders that cannot finish even uncapped are the schedule's fault (Internal), and no
  // replay below may hide it.
  absl::StatusOr<std::vector<std::vector<ComputeOp>>> uncapped =
      Replay(orders, stage_of, m, saved, 0, false, /*channels=*/false).Run();
  if (!uncapped.ok()) return uncapped.status();
  // In the schedule's order; where that moved something, also with free choice, and the
  // shorter of the two (at unit costs) wins, the schedule's order on a tie.
  Replay in_order_replay(orders, stage_of, m, saved, cap, false);
  absl::StatusOr<std::vector<std::vector<ComputeOp>>> in_order = in_order_replay.Run();
  if (in_order.ok() && SameOrders(*in_order, orders)) return in_order;
  Replay free_replay(orders, stage_of, m, saved, cap, true);
  absl::StatusOr<std::vector<std::vector<ComputeOp>>> free_choice = free_replay.Run();
  if (in_order.ok() && (!free_choice.ok() || in_order_replay.makespan() <= free_replay.makespan())) return in_order;
  if (free_choice.ok()) return free_choice;
  for (const absl::Status& st : {in_order.status(), free_choice.status()}) {
    if (st.code() == absl::StatusCode::kFailedPrecondition) return st;
  }
  return in_order.status();  // neither replay could finish, with nothing held back by the cap
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
