#include "passes/analysis/simulate.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "ir/instruction_text.h"
#include "ir/parallel.h"
#include "ir/status_macros.h"
#include "ir/topology.h"

namespace ppc::passes {
namespace {

using ir::Instruction;

int64_t SaturatingMul(int64_t a, int64_t b) {
  int64_t out;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &out)) return std::numeric_limits<int64_t>::max();
  return out;
}
int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t out;
  if (__builtin_add_overflow(a, b, &out)) return std::numeric_limits<int64_t>::max();
  return out;
}

double Elements(const ir::TensorSpec& t) {
  double n = 1;
  for (int64_t d : t.shape()) n *= static_cast<double>(d);
  return n;
}

bool CostsOk(const std::vector<double>& v, int n) {
  if (static_cast<int>(v.size()) != n) return false;
  for (double x : v)
    if (!std::isfinite(x) || x < 0) return false;
  return true;
}

// A transfer as the programs name it: send/recv, direction, boundary, micro-batch.
uint64_t TransferKey(bool send, ir::Direction direction, int boundary, int micro_batch) {
  return (uint64_t{send} << 63) | (uint64_t(direction & 3) << 61) | (uint64_t(uint32_t(boundary) & 0x1fffffff) << 32) |
         uint64_t(uint32_t(micro_batch));
}
// The same transfer seen from its other end.
uint64_t SameTransfer(uint64_t key) { return key & ~(uint64_t{1} << 63); }
std::string KeyText(uint64_t key) {
  ir::Ref ref;
  ref.send = key >> 63;
  ref.direction = static_cast<int>((key >> 61) & 3);
  ref.boundary = static_cast<int>((key >> 32) & 0x1fffffff);
  ref.micro_batch = static_cast<int>(static_cast<uint32_t>(key));
  return ir::RefText(ref);
}

// A Wait's ref resolved: the channel and the position of its post in it.
struct Ref {
  int32_t channel;
  int32_t k;
  bool send;
};

struct Channel {
  int from, to;
  int sends = 0, recvs = 0;                     // posted by the programs in all
  std::vector<uint64_t> send_keys, recv_keys;  // in posting order (when pairing is checked)
  std::vector<double> send_ready;              // post time + transfer cost
  std::vector<double> recv_post;
  int sends_posted = 0, recvs_posted = 0;
  int send_waiter = -1;  // the sender waits for receive k to be posted
  int recv_waiter = -1;  // the receiver waits for send k to be posted
};

struct StageState {
  int pc = 0;
  int wait_pos = 0;  // next ref of the current Wait to check
  int next_ref = 0;  // the current Wait's first ref in the stage's resolved refs
  double clock = 0;
  bool at_collective = false;
  double arrival = 0;
  // Per chunk: deferred W's (batch-weight-grads) since the last W that computed a batch.
  std::vector<int> deferred_w;
};

bool CollectiveStages(const Instruction& in, const google::protobuf::RepeatedField<int32_t>** stages) {
  if (in.has_reduce_tied_grads()) {
    *stages = &in.reduce_tied_grads().stages();
    return true;
  }
  if (in.has_clip_grad_norm()) {
    *stages = &in.clip_grad_norm().stages();
    return true;
  }
  return false;
}

bool SameCollective(const Instruction& a, const Instruction& b) {
  if (a.op_case() != b.op_case()) return false;
  if (a.has_reduce_tied_grads()) return a.reduce_tied_grads().tie_key() == b.reduce_tied_grads().tie_key();
  return a.has_clip_grad_norm();
}

// The collective an Op is (kReduceTiedGrads or kClipGradNorm), or null.
const ir::Instruction* CollectiveOf(const ir::Program& prog, const ir::Op& op) {
  if (!op.is(ir::OpCode::kReduceTiedGrads) && !op.is(ir::OpCode::kClipGradNorm)) return nullptr;
  return &prog.CollectiveOf(op);
}

// Runs the programs as they are (ir::Op), with what Prepare resolved beside them: the
// channel of each Send and Recv, and each Wait's refs as (channel, position).
class Simulator {
 public:
  Simulator(const ir::Plan& plan, const std::vector<ir::Program>& programs, const CostModel& costs,
            const SimulateOptions& options, const ir::Grid& grid)
      : plan_(plan), programs_(programs), costs_(costs), options_(options), grid_(grid), p_(grid.stages()) {}

  absl::StatusOr<Simulation> Run() {
    RETURN_IF_ERROR(CheckInputs());
    channel_of_op_.resize(p_);
    refs_.resize(p_);
    out_.busy.assign(p_, 0);
    out_.peak_live_slots.assign(p_, 0);
    out_.compute.resize(p_);
    MakeChannels();
    // Stage by stage on the machine's cores; the first stage with an error reports it.
    std::vector<absl::Status> prepared(p_);
    ir::ParallelFor(p_, [&](int s) { prepared[s] = Prepare(s); });
    for (const absl::Status& st : prepared) RETURN_IF_ERROR(st);
    if (options_.check_pairing) CheckPairing();
    Execute();
    double busy = 0;
    for (int s = 0; s < p_; ++s) {
      out_.makespan = std::max(out_.makespan, state_[s].clock);
      busy += out_.busy[s];
    }
    out_.bubble_fraction = out_.makespan > 0 ? 1.0 - busy / (double(p_) * out_.makespan) : 0;
    return std::move(out_);
  }

 private:
  std::string Where(int s, int i) const {
    return absl::StrCat("stage ", s, " instruction ", i, " (", ir::PrintOp(programs_[s], i), ")");
  }

  absl::Status CheckInputs() {
    if (static_cast<int>(programs_.size()) != p_) {
      return absl::InvalidArgumentError(
          absl::StrCat("simulate: ", programs_.size(), " programs for ", p_, " pipeline stages"));
    }
    for (int s = 0; s < p_; ++s) {
      if (programs_[s].stage != s) {
        return absl::InvalidArgumentError(
            absl::StrCat("simulate: program ", s, " is for stage ", programs_[s].stage));
      }
    }
    const int nv = grid_.virtual_stages();
    if (!CostsOk(costs_.forward, nv) || !CostsOk(costs_.backward, nv) || !CostsOk(costs_.backward_input, nv) ||
        !CostsOk(costs_.backward_weight, nv)) {
      return absl::InvalidArgumentError(
          absl::StrCat("simulate: the cost model needs one finite, non-negative F, B, I and W cost per virtual stage (",
                       nv, "); it has ", costs_.forward.size(), ", ", costs_.backward.size(), ", ",
                       costs_.backward_input.size(), ", ", costs_.backward_weight.size()));
    }
    if (!std::isfinite(costs_.latency) || costs_.latency < 0 || !std::isfinite(costs_.seconds_per_byte) ||
        costs_.seconds_per_byte < 0) {
      return absl::InvalidArgumentError("simulate: latency and seconds_per_byte must be finite and >= 0");
    }
    if (costs_.seconds_per_byte > 0 && plan_.boundaries_size() != grid_.boundaries()) {
      return absl::InvalidArgumentError(absl::StrCat("simulate: the plan has ", plan_.boundaries_size(),
                                                     " boundaries; its placement needs ", grid_.boundaries()));
    }
    const int nb = std::max(0, grid_.boundaries());
    for (int d = 0; d < 2; ++d) {
      transfer_cost_[d].resize(nb);
      for (int b = 0; b < nb; ++b) {
        const int64_t bytes = TransferBytes(plan_, d == 0 ? ir::ACTIVATION : ir::GRADIENT, b);
        transfer_cost_[d][b] = costs_.latency + static_cast<double>(bytes) * costs_.seconds_per_byte;
      }
    }
    return absl::OkStatus();
  }

  // Every channel the placement allows (the stages at the two ends of each boundary, in
  // both directions), in (from, to) order; per stage, its channels out and in.
  void MakeChannels() {
    const std::vector<std::pair<int, int>> edges = grid_.Channels();
    channels_.resize(edges.size());
    out_channels_.assign(p_, {});
    in_channels_.assign(p_, {});
    for (size_t i = 0; i < edges.size(); ++i) {
      channels_[i].from = edges[i].first;
      channels_[i].to = edges[i].second;
      out_channels_[edges[i].first].push_back({edges[i].second, static_cast<int>(i)});
      in_channels_[edges[i].second].push_back({edges[i].first, static_cast<int>(i)});
    }
  }

  // Where the channel to or from `peer` is in `list` (a stage's out or in channels, keyed
  // by the other end).
  static int FindChannel(const std::vector<std::pair<int, int>>& list, int peer) {
    for (size_t i = 0; i < list.size(); ++i)
      if (list[i].first == peer) return static_cast<int>(i);
    return -1;  // cannot happen for a transfer the placement allows
  }

  double ComputeCost(const ir::Op& op) const {
    const int v = op.virtual_stage();
    switch (op.compute_kind()) {
      case ir::FORWARD:
        return costs_.forward[v];
      case ir::BACKWARD:
        return costs_.backward[v];
      case ir::BACKWARD_INPUT:
        return costs_.backward_input[v];
      default:
        return costs_.backward_weight[v];
    }
  }

  // Checks stage s's program and resolves what the run needs: each transfer's channel
  // (its position there is the count of earlier posts on it), each Wait's refs; and its
  // peak of live slots.
  absl::Status Prepare(int s) {
    const ir::Program& prog = programs_[s];
    const int n = prog.size();
    std::vector<int32_t>& channel_of = channel_of_op_[s];
    channel_of.assign(n, -1);
    const int nv = grid_.virtual_stages(), nb = grid_.boundaries();
    const int m = std::max(1, plan_.config().micro_batches());
    const int chunks = grid_.chunks();
    // Per (what this stage does with a transfer, chunk of its own end, micro-batch): the
    // most recent post of that transfer, as (channel, k); -1: none.
    const size_t per_role = static_cast<size_t>(chunks) * m;
    std::vector<std::pair<int, int>> posted(4 * per_role, {-1, -1});
    auto posted_at = [&](bool send, ir::Direction dir, int own, int mb) -> std::pair<int, int>& {
      const int role = (dir == ir::GRADIENT ? 2 : 0) + (send ? 0 : 1);
      return posted[role * per_role + static_cast<size_t>(grid_.ChunkOf(own)) * m + mb];
    };
    // Slot uses: each distinct (slot, virtual stage, micro-batch) gets an id; use_ids[i]
    // is instruction i's (or -1), last_use[id] its last instruction. A (virtual stage,
    // micro-batch) of this stage takes one slot (dense arrays); anything else (another
    // slot for it, a virtual stage of another stage) goes to a map.
    std::vector<int> use_slot(options_.count_live_slots ? per_role : 0, -1), use_id(use_slot.size(), -1);
    // This stage's posts on its channels out and in (counted and keyed here, handed to
    // the channels at the end: stages are prepared at once on several threads).
    const auto& outs = out_channels_[s];
    const auto& ins = in_channels_[s];
    std::vector<std::vector<uint64_t>> out_keys(outs.size()), in_keys(ins.size());
    std::vector<int> out_count(outs.size()), in_count(ins.size());
    absl::flat_hash_map<std::tuple<int, int, int>, int> other_uses;
    std::vector<int> use_ids(options_.count_live_slots ? n : 0, -1), last_use;
    int computes = 0;
    for (int i = 0; i < n; ++i) {
      const ir::Op& in = prog.ops[i];
      switch (in.code) {
        case ir::OpCode::kCompute: {
          const int v = in.virtual_stage();
          if (v < 0 || v >= nv || grid_.StageOf(v) != s) {
            return absl::InvalidArgumentError(
                absl::StrCat(Where(s, i), ": virtual stage ", v,
                             v < 0 || v >= nv ? absl::StrCat(" is out of range (", nv, " virtual stages)")
                                              : absl::StrCat(" runs on stage ", grid_.StageOf(v))));
          }
          if (in.kind < ir::FORWARD || in.kind > ir::BACKWARD_WEIGHT) {
            return absl::InvalidArgumentError(absl::StrCat(Where(s, i), ": compute kind is unspecified"));
          }
          ++computes;
          break;
        }
        case ir::OpCode::kSend:
        case ir::OpCode::kRecv: {
          const bool send = in.is(ir::OpCode::kSend);
          const ir::Direction dir = in.direction();
          const int b = in.boundary(), mb = in.micro_batch;
          if (dir != ir::ACTIVATION && dir != ir::GRADIENT) {
            return absl::InvalidArgumentError(absl::StrCat(Where(s, i), ": direction is unspecified"));
          }
          if (b < 0 || b >= nb) {
            return absl::InvalidArgumentError(
                absl::StrCat(Where(s, i), ": boundary ", b, " is out of range (", nb, " boundaries)"));
          }
          if (mb < 0 || mb >= m) {
            return absl::InvalidArgumentError(
                absl::StrCat(Where(s, i), ": micro-batch ", mb, " is out of range (", m, " micro-batches)"));
          }
          const int own = send ? grid_.SenderOf(dir, b) : grid_.ReceiverOf(dir, b);
          if (grid_.StageOf(own) != s) {
            return absl::InvalidArgumentError(absl::StrCat(Where(s, i), ": virtual stage ", own, " ",
                                                           send ? "sends" : "receives",
                                                           " this transfer but runs on stage ", grid_.StageOf(own)));
          }
          const int peer = grid_.PeerStage(send, dir, b);
          const int at = FindChannel(send ? outs : ins, peer);
          const int ch = (send ? outs : ins)[at].second;
          posted_at(send, dir, own, mb) = {ch, send ? out_count[at]++ : in_count[at]++};
          if (options_.check_pairing) (send ? out_keys : in_keys)[at].push_back(TransferKey(send, dir, b, mb));
          channel_of[i] = ch;
          break;
        }
        case ir::OpCode::kWait: {
          for (const ir::Ref& ref : prog.RefsOf(in)) {
            const ir::Direction dir = ref.dir();
            const bool valid = (dir == ir::ACTIVATION || dir == ir::GRADIENT) && ref.boundary >= 0 &&
                               ref.boundary < nb && ref.micro_batch >= 0 && ref.micro_batch < m;
            const int own = !valid ? -1 : ref.send ? grid_.SenderOf(dir, ref.boundary) : grid_.ReceiverOf(dir, ref.boundary);
            const std::pair<int, int> at =
                valid && grid_.StageOf(own) == s ? posted_at(ref.send, dir, own, ref.micro_batch) : std::make_pair(-1, -1);
            if (at.first < 0) {
              return absl::InvalidArgumentError(absl::StrCat(Where(s, i), ": waits for ", ir::RefText(ref),
                                                             ", which stage ", s, " has not posted before"));
            }
            refs_[s].push_back({at.first, at.second, ref.send});
          }
          break;
        }
        case ir::OpCode::kReduceTiedGrads:
        case ir::OpCode::kClipGradNorm: {
          const google::protobuf::RepeatedField<int32_t>* stages;
          CollectiveStages(prog.CollectiveOf(in), &stages);
          for (int t : *stages) {
            if (t < 0 || t >= p_) {
              return absl::InvalidArgumentError(
                  absl::StrCat(Where(s, i), ": stage ", t, " is out of range (", p_, " stages)"));
            }
          }
          break;
        }
        case ir::OpCode::kLoadMicroBatch:
        case ir::OpCode::kReduceGrads:
        case ir::OpCode::kOptimizerStep:
        case ir::OpCode::kGatherParams:
          break;
        default:
          return absl::InvalidArgumentError(absl::StrCat(Where(s, i), ": empty instruction"));
      }
      int slot, v, mb;
      if (options_.count_live_slots && SlotUse(in, &slot, &v, &mb)) {
        int* id = nullptr;
        if (v >= 0 && v < nv && grid_.StageOf(v) == s && mb >= 0 && mb < m) {
          const size_t k = static_cast<size_t>(grid_.ChunkOf(v)) * m + mb;
          if (use_slot[k] < 0) use_slot[k] = slot;
          if (use_slot[k] == slot) id = &use_id[k];
        }
        if (id == nullptr) id = &other_uses.try_emplace({slot, v, mb}, -1).first->second;
        if (*id < 0) {
          *id = static_cast<int>(last_use.size());
          last_use.push_back(i);
        }
        use_ids[i] = *id;
        last_use[*id] = i;
      }
    }
    // Peak of live slots: a use is live from its first instruction to its last.
    std::vector<bool> seen(last_use.size());
    int live = 0, peak = 0;
    for (int i = 0; i < static_cast<int>(use_ids.size()); ++i) {
      const int id = use_ids[i];
      if (id < 0) continue;
      if (!seen[id]) {
        seen[id] = true;
        peak = std::max(peak, ++live);
      }
      if (last_use[id] == i) --live;
    }
    out_.peak_live_slots[s] = peak;
    // Only this stage posts the sends of its channels out and the receives of those in.
    for (size_t j = 0; j < outs.size(); ++j) {
      channels_[outs[j].second].sends = out_count[j];
      channels_[outs[j].second].send_keys = std::move(out_keys[j]);
    }
    for (size_t j = 0; j < ins.size(); ++j) {
      channels_[ins[j].second].recvs = in_count[j];
      channels_[ins[j].second].recv_keys = std::move(in_keys[j]);
    }
    if (options_.record_spans) out_.compute[s].reserve(computes);
    return absl::OkStatus();
  }

  // Which (slot, virtual stage, micro-batch) an instruction names, if any.
  bool SlotUse(const ir::Op& op, int* slot, int* v, int* mb) const {
    *slot = op.slot;
    *mb = op.micro_batch;
    switch (op.code) {
      case ir::OpCode::kCompute:
        *v = op.virtual_stage();
        return true;
      case ir::OpCode::kSend:
        *v = grid_.SenderOf(op.direction(), op.boundary());
        return true;
      case ir::OpCode::kRecv:
        *v = grid_.ReceiverOf(op.direction(), op.boundary());
        return true;
      case ir::OpCode::kLoadMicroBatch:
        *v = op.inputs() ? 0 : grid_.virtual_stages() - 1;
        return true;
      default:
        return false;
    }
  }

  // The FIFO pairing is fixed by the programs: check that the k-th send and the k-th
  // receive of every channel name the same transfer.
  void CheckPairing() {
    for (const Channel& c : channels_) {
      const size_t n = std::min(c.send_keys.size(), c.recv_keys.size());
      for (size_t k = 0; k < n; ++k) {
        if (SameTransfer(c.send_keys[k]) != SameTransfer(c.recv_keys[k])) {
          out_.errors.push_back(absl::StrCat("stage ", c.from, " -> stage ", c.to, " transfer ", k, ": stage ", c.from,
                                             " sends ", KeyText(c.send_keys[k]), " but stage ", c.to, "'s receive ", k,
                                             " is ", KeyText(c.recv_keys[k])));
          break;
        }
      }
    }
  }

  void Execute() {
    state_.assign(p_, StageState());
    for (StageState& st : state_) st.deferred_w.assign(grid_.chunks(), 0);
    for (Channel& c : channels_) {
      c.send_ready.resize(c.sends);
      c.recv_post.resize(c.recvs);
    }
    ready_.reserve(p_);
    for (int s = p_ - 1; s >= 0; --s) ready_.push_back(s);
    while (!ready_.empty()) {
      const int s = ready_.back();
      ready_.pop_back();
      Advance(s);
    }
    std::vector<std::string> stuck;
    int stuck_count = 0;
    for (int s = 0; s < p_; ++s) {
      if (Finished(s)) continue;
      if (++stuck_count <= kMaxDeadlockLines) stuck.push_back(BlockedReason(s));
    }
    if (stuck_count > 0) {
      std::string msg = "deadlock: no stage can proceed:";
      for (const std::string& line : stuck) absl::StrAppend(&msg, "\n    ", line);
      if (stuck_count > kMaxDeadlockLines) {
        absl::StrAppend(&msg, "\n    ... and ", stuck_count - kMaxDeadlockLines, " more stuck stages");
      }
      out_.errors.push_back(std::move(msg));
      return;
    }
    if (!options_.check_pairing) return;
    for (const Channel& c : channels_) {
      const size_t ns = c.send_keys.size(), nr = c.recv_keys.size();
      if (ns > nr) {
        out_.errors.push_back(absl::StrCat("stage ", c.from, " -> stage ", c.to, ": stage ", c.from, "'s send ", nr,
                                           " (", KeyText(c.send_keys[nr]), ") has no matching receive on stage ",
                                           c.to));
      } else if (nr > ns) {
        out_.errors.push_back(absl::StrCat("stage ", c.from, " -> stage ", c.to, ": stage ", c.to, "'s receive ", ns,
                                           " (", KeyText(c.recv_keys[ns]), ") has no matching send on stage ", c.from));
      }
    }
  }

  bool Finished(int s) const { return state_[s].pc >= programs_[s].size(); }

  std::string BlockedReason(int s) const {
    const StageState& st = state_[s];
    const ir::Program& prog = programs_[s];
    const ir::Op& in = prog.ops[st.pc];
    if (in.is(ir::OpCode::kWait)) {
      const Ref& r = refs_[s][st.next_ref + st.wait_pos];
      const Channel& c = channels_[r.channel];
      ir::Ref counterpart = prog.RefsOf(in)[st.wait_pos];
      counterpart.send = !counterpart.send;
      return absl::StrCat(Where(s, st.pc), " waits for stage ", r.send ? c.to : c.from, " to post ",
                          ir::RefText(counterpart));
    }
    const google::protobuf::RepeatedField<int32_t>* stages;
    if (const ir::Instruction* coll = CollectiveOf(prog, in); coll != nullptr && CollectiveStages(*coll, &stages)) {
      for (int t : *stages) {
        if (t == s) continue;
        const ir::Instruction* there =
            state_[t].at_collective ? CollectiveOf(programs_[t], programs_[t].ops[state_[t].pc]) : nullptr;
        if (there == nullptr || !SameCollective(*coll, *there)) {
          return absl::StrCat(Where(s, st.pc), " needs stage ", t, " at the same collective");
        }
      }
    }
    return absl::StrCat(Where(s, st.pc), " is blocked");
  }

  void Wake(int s) { ready_.push_back(s); }

  // Runs stage s until it finishes or blocks.
  void Advance(int s) {
    StageState& st = state_[s];
    const ir::Program& prog = programs_[s];
    const ir::Op* ops = prog.ops.data();
    const int32_t* channel_of = channel_of_op_[s].data();
    const Ref* refs = refs_[s].data();
    const int n = prog.size();
    while (st.pc < n) {
      const ir::Op& op = ops[st.pc];
      switch (op.code) {
        case ir::OpCode::kCompute: {
          double cost = ComputeCost(op);
          if (op.compute_kind() == ir::BACKWARD_WEIGHT) {
            // A deferred W costs nothing; the W that computes its batch costs the batch's W's.
            int& pending = st.deferred_w[grid_.ChunkOf(op.virtual_stage())];
            if (op.deferred()) {
              cost = 0;
              ++pending;
            } else {
              cost *= 1 + pending;
              pending = 0;
            }
          }
          if (options_.record_spans) {
            out_.compute[s].push_back({st.pc, st.clock, st.clock + cost,
                                       absl::StrCat(op.virtual_stage(), ir::ComputeLetter(op.compute_kind()),
                                                    op.micro_batch)});
          }
          st.clock += cost;
          out_.busy[s] += cost;
          break;
        }
        case ir::OpCode::kSend: {
          Channel& c = channels_[channel_of[st.pc]];
          const int k = c.sends_posted++;
          // A transfer within one stage is a hand-over in memory: free.
          c.send_ready[k] = st.clock + (c.to != s ? transfer_cost_[op.direction() == ir::GRADIENT][op.boundary()] : 0);
          if (c.recv_waiter >= 0 && c.recv_waiter <= k) {
            c.recv_waiter = -1;
            Wake(c.to);
          }
          break;
        }
        case ir::OpCode::kRecv: {
          Channel& c = channels_[channel_of[st.pc]];
          const int k = c.recvs_posted++;
          c.recv_post[k] = st.clock;
          if (c.send_waiter >= 0 && c.send_waiter <= k) {
            c.send_waiter = -1;
            Wake(c.from);
          }
          break;
        }
        case ir::OpCode::kWait: {
          const int count = op.micro_batch;
          for (; st.wait_pos < count; ++st.wait_pos) {
            const Ref& r = refs[st.next_ref + st.wait_pos];
            Channel& c = channels_[r.channel];
            if (r.send) {
              if (r.k >= c.recvs_posted) {
                c.send_waiter = r.k;
                return;
              }
              st.clock = std::max(st.clock, c.recv_post[r.k]);
            } else {
              if (r.k >= c.sends_posted) {
                c.recv_waiter = r.k;
                return;
              }
              st.clock = std::max(st.clock, c.send_ready[r.k]);
            }
          }
          st.wait_pos = 0;
          st.next_ref += count;
          break;
        }
        case ir::OpCode::kReduceTiedGrads:
        case ir::OpCode::kClipGradNorm: {
          const ir::Instruction& in = prog.CollectiveOf(op);
          if (!st.at_collective) {
            st.at_collective = true;
            st.arrival = st.clock;
          }
          const google::protobuf::RepeatedField<int32_t>* stages;
          CollectiveStages(in, &stages);
          double release = st.arrival;
          for (int t : *stages) {
            if (t == s) continue;
            const StageState& other = state_[t];
            const ir::Instruction* there =
                other.at_collective ? CollectiveOf(programs_[t], programs_[t].ops[other.pc]) : nullptr;
            if (there == nullptr || !SameCollective(in, *there)) return;
            release = std::max(release, other.arrival);
          }
          // Every listed stage is here: all of them pass the collective together.
          for (int t : *stages) {
            StageState& other = state_[t];
            if (t == s || !other.at_collective) continue;
            other.at_collective = false;
            other.clock = release;
            ++other.pc;
            Wake(t);
          }
          st.at_collective = false;
          st.clock = release;
          break;
        }
        default:
          break;
      }
      ++st.pc;
    }
  }

  const ir::Plan& plan_;
  const std::vector<ir::Program>& programs_;
  const CostModel& costs_;
  const SimulateOptions& options_;
  const ir::Grid& grid_;
  const int p_;
  std::vector<double> transfer_cost_[2];  // [ACTIVATION, GRADIENT][boundary]
  // Per stage: the channel of each instruction (-1 but for Send/Recv), the Waits' refs.
  std::vector<std::vector<int32_t>> channel_of_op_;
  std::vector<std::vector<Ref>> refs_;
  std::vector<Channel> channels_;
  // Per stage: (the other end, channel) of its channels out and in.
  std::vector<std::vector<std::pair<int, int>>> out_channels_, in_channels_;
  std::vector<StageState> state_;
  std::vector<int> ready_;
  Simulation out_;
};

}  // namespace

CostModel CostModel::Unit(const ir::Plan& plan) {
  int n = plan.placement().virtual_stages_size();
  if (n == 0) n = std::max(1, plan.topology().num_stages()) * std::max(1, plan.placement().chunks_per_stage());
  CostModel c;
  c.forward.assign(n, 1);
  c.backward.assign(n, 2);
  c.backward_input.assign(n, 1);
  c.backward_weight.assign(n, 1);
  return c;
}

absl::StatusOr<CostModel> CostModel::FromPlan(const ir::Plan& plan) {
  const ir::Placement& pl = plan.placement();
  if (pl.virtual_stages_size() == 0) {
    return absl::FailedPreconditionError("cost model: the plan has no placement (run partition)");
  }
  const int layers = plan.model().layers_size();
  const double mbs = std::max(1, plan.config().micro_batch_size());
  CostModel c;
  for (int v = 0; v < pl.virtual_stages_size(); ++v) {
    const ir::VirtualStage& vs = pl.virtual_stages(v);
    if (vs.begin() < 0 || vs.begin() > vs.end() || vs.end() > layers) {
      return absl::InvalidArgumentError(absl::StrCat("cost model: virtual stage ", v, " has layers [", vs.begin(), ", ",
                                                     vs.end(), "); the model has ", layers));
    }
    double f = 0, b = 0;
    for (int l = vs.begin(); l < vs.end(); ++l) {
      const ir::LayerSpec& layer = plan.model().layers(l);
      double lf = layer.forward_cost();
      if (!(lf > 0)) {
        if (layer.outputs_size() == 0) {
          return absl::FailedPreconditionError(absl::StrCat("cost model: layer ", l, " (", layer.name(),
                                                            ") has no forward_cost and no inferred output shapes"));
        }
        double elements = 0;
        for (const ir::TensorSpec& t : layer.outputs()) elements += Elements(t);
        lf = (2.0 * static_cast<double>(layer.param_count()) + elements) * mbs;
      }
      f += lf;
      b += layer.backward_cost() > 0 ? layer.backward_cost() : 2 * lf;
    }
    c.forward.push_back(f);
    c.backward.push_back(b);
    c.backward_input.push_back(b / 2);
    c.backward_weight.push_back(b / 2);
  }
  return c;
}

int64_t TransferBytes(const ir::Plan& plan, ir::Direction direction, int boundary) {
  if (boundary < 0 || boundary >= plan.boundaries_size()) return 0;
  int64_t per_sample = 0;
  for (const ir::TensorSpec& t : plan.boundaries(boundary).tensors()) {
    if (direction == ir::GRADIENT && t.dtype() != ir::FLOAT32) continue;
    int64_t n = t.dtype() == ir::INT64 ? 8 : 4;
    for (int64_t d : t.shape()) n = SaturatingMul(n, std::max<int64_t>(d, 0));
    per_sample = SaturatingAdd(per_sample, n);
  }
  return SaturatingMul(per_sample, std::max(0, plan.config().micro_batch_size()));
}

absl::StatusOr<Simulation> Simulate(const ir::Plan& plan, const std::vector<ir::Program>& programs,
                                    const CostModel& costs, const SimulateOptions& options) {
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(plan));
  Simulator sim(plan, programs, costs, options, grid);
  return sim.Run();
}

absl::StatusOr<Simulation> Simulate(const ir::Plan& plan,
                                    const google::protobuf::RepeatedPtrField<ir::StageProgram>& programs,
                                    const CostModel& costs, const SimulateOptions& options) {
  std::vector<ir::Program> converted;
  converted.reserve(programs.size());
  for (const ir::StageProgram& p : programs) converted.push_back(ir::ToProgram(p));
  return Simulate(plan, converted, costs, options);
}

}  // namespace ppc::passes
