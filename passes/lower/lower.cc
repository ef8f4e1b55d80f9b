#include "passes/lower/lower.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "ir/parallel.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/plan_util.h"

namespace ppc::passes {
namespace {

// (direction, boundary, micro-batch)
using Transfer = std::tuple<int, int, int>;

ir::Ref Ref(bool send, const Transfer& t) {
  return ir::Ref{send, {0, 0, 0}, std::get<0>(t), std::get<1>(t), std::get<2>(t)};
}

// The transfers a compute op needs before it runs (at most one: an F's activation, or
// the gradient before the first of B/I) and produces after it. `grad_received` marks,
// by (chunk, micro-batch), the ops whose gradient was already taken.
struct OpTransfers {
  bool needs = false, produces = false;
  Transfer in, out;
};

OpTransfers TransfersOf(const ir::Grid& grid, const ir::Op& c, size_t key, std::vector<bool>& grad_received) {
  OpTransfers t;
  const int v = c.virtual_stage(), mb = c.micro_batch;
  switch (c.compute_kind()) {
    case ir::FORWARD:
      if (!grid.IsFirst(v)) t = {true, false, {ir::ACTIVATION, v - 1, mb}, {}};
      if (!grid.IsLast(v)) {
        t.produces = true;
        t.out = {ir::ACTIVATION, v, mb};
      }
      break;
    case ir::BACKWARD:
    case ir::BACKWARD_INPUT:
      if (!grid.IsLast(v) && !grad_received[key]) {
        grad_received[key] = true;
        t.needs = true;
        t.in = {ir::GRADIENT, v, mb};
      }
      if (!grid.IsFirst(v)) {
        t.produces = true;
        t.out = {ir::GRADIENT, v - 1, mb};
      }
      break;
    default:
      break;
  }
  return t;
}

// The tail every training program ends with: tied-weight and data-parallel reductions,
// clipping, the optimizer step (and ZeRO-1's gather).
struct Reductions {
  std::map<std::string, std::set<int>> ties;  // tie key -> stages holding a copy
  bool sharded = false;

  Reductions(const ir::Plan& plan, const ir::Grid& grid) {
    sharded = plan.config().zero_stage() == 1 && plan.topology().data_parallel() > 1;
    for (int v = 0; v < plan.placement().virtual_stages_size(); ++v) {
      const auto& vs = plan.placement().virtual_stages(v);
      for (int l = vs.begin(); l < vs.end(); ++l) {
        const std::string& key = plan.model().layers(l).tie_key();
        if (!key.empty()) ties[key].insert(grid.StageOf(v));
      }
    }
  }

  void AppendTo(const ir::Plan& plan, ir::Program& prog) const {
    for (const auto& [key, stages] : ties) {
      if (stages.size() < 2 || !stages.count(prog.stage)) continue;
      ir::Instruction in;
      in.mutable_reduce_tied_grads()->set_tie_key(key);
      for (int s : stages) in.mutable_reduce_tied_grads()->add_stages(s);
      prog.AddCollective(std::move(in));
    }
    if (plan.topology().data_parallel() > 1) prog.Add(ir::Op::Plain(ir::OpCode::kReduceGrads));
    if (plan.config().gradient_clipping() > 0) {
      // After every reduction: the norm is taken over final, replica-averaged gradients.
      ir::Instruction in;
      auto* clip = in.mutable_clip_grad_norm();
      clip->set_max_norm(plan.config().gradient_clipping());
      for (int s = 0; s < plan.topology().num_stages(); ++s) clip->add_stages(s);
      prog.AddCollective(std::move(in));
    }
    prog.Add(ir::Op::Plain(ir::OpCode::kOptimizerStep, sharded ? ir::Op::kSharded : 0));
    if (sharded) prog.Add(ir::Op::Plain(ir::OpCode::kGatherParams));
  }
};

// What a stage posts to one receiver, in the order that receiver takes it.
struct Channel {
  int sender, receiver;
  std::vector<Transfer> transfers;
};

}  // namespace

absl::Status LowerPrograms(const ir::Plan& plan, std::vector<ir::Program>& programs) {
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(plan));
  const int vlast = grid.virtual_stages() - 1;
  const int m = plan.config().micro_batches();
  const int p = grid.stages();
  if (static_cast<int>(programs.size()) != p) {
    return absl::InvalidArgumentError(absl::StrCat("lower: ", programs.size(), " programs for ", p, " stages"));
  }
  for (int s = 0; s < p; ++s) {
    if (programs[s].stage != s) {
      return absl::InvalidArgumentError(absl::StrCat("lower: program ", s, " says it is stage ", programs[s].stage));
    }
  }
  const size_t keys = static_cast<size_t>(grid.chunks()) * m;
  auto key_of = [&](int v, int mb) { return static_cast<size_t>(grid.ChunkOf(v)) * m + mb; };
  // The order in which each receiver takes transfers from each sender: what the
  // sender's posts on that channel must follow. The channels are the placement's
  // (ir::Grid::Channels); each receiver fills its own, on the machine's cores.
  const std::vector<std::pair<int, int>> edges = grid.Channels();
  std::vector<Channel> channels(edges.size());
  std::vector<std::vector<std::pair<int, int>>> out_of(p), in_of(p);  // stage -> (peer, channel), by peer
  for (int c = 0; c < static_cast<int>(edges.size()); ++c) {
    channels[c] = {edges[c].first, edges[c].second, {}};
    out_of[edges[c].first].push_back({edges[c].second, c});
    in_of[edges[c].second].push_back({edges[c].first, c});
  }
  auto find = [](const std::vector<std::pair<int, int>>& list, int peer) {
    for (const auto& [other, c] : list)
      if (other == peer) return c;
    return -1;
  };
  std::vector<absl::Status> checked(programs.size());
  ir::ParallelFor(static_cast<int>(programs.size()), [&](int r) {
    const ir::Program& prog = programs[r];
    for (int i = 0; i < prog.size(); ++i) {
      const ir::Op& in = prog.ops[i];
      if (!in.is(ir::OpCode::kCompute)) {
        checked[r] = absl::InvalidArgumentError(
            absl::StrCat("stage ", prog.stage, ": lower found '", ir::PrintOp(prog, i), "' in a BUFFERED program"));
        return;
      }
      checked[r] = RequireOwnOp(grid, prog, i, in.virtual_stage(), m, "lower");
      if (!checked[r].ok()) return;
    }
    std::vector<bool> grad_received(keys);
    // Collected here, then handed over: other threads fill neighbouring channels.
    const auto& ins = in_of[prog.stage];
    std::vector<std::vector<Transfer>> mine(ins.size());
    for (const ir::Op& in : prog.ops) {
      OpTransfers t = TransfersOf(grid, in, key_of(in.virtual_stage(), in.micro_batch), grad_received);
      if (!t.needs) continue;
      const int sender = grid.PeerStage(false, static_cast<ir::Direction>(std::get<0>(t.in)), std::get<1>(t.in));
      for (size_t j = 0; j < ins.size(); ++j) {
        if (ins[j].first == sender) mine[j].push_back(t.in);
      }
    }
    for (size_t j = 0; j < ins.size(); ++j) channels[ins[j].second].transfers = std::move(mine[j]);
  });
  for (const absl::Status& st : checked) RETURN_IF_ERROR(st);
  const Reductions reductions(plan, grid);
  // Each stage on its own, on the machine's cores (everything above is only read).
  auto lower_stage = [&](ir::Program& prog) -> absl::Status {
    const int s = prog.stage;
    ir::Program out;
    out.stage = s;
    out.num_slots = prog.num_slots;
    out.ops.reserve(prog.ops.size() * 4 + 8);
    // Sends posted, in order; the waited ones marked.
    struct Posted {
      Transfer transfer;
      bool waited = false;
    };
    std::vector<Posted> unwaited;
    std::vector<int> unwaited_act(keys, -1);  // activation send of (chunk, mb) -> index in `unwaited`
    // Transfers produced but not yet posted, by (direction, chunk of the sending virtual
    // stage, micro-batch): the slot they are read from, or -1.
    std::vector<int> ready(2 * keys, -1);
    auto ready_at = [&](const Transfer& t) -> int& {
      const int dir = std::get<0>(t);
      const int sender_v = grid.SenderOf(static_cast<ir::Direction>(dir), std::get<1>(t));
      return ready[(dir == ir::GRADIENT ? keys : 0) + key_of(sender_v, std::get<2>(t))];
    };
    std::vector<int> next(channels.size(), 0);  // per channel from this stage: how many posted
    std::vector<int> pending(p, 0);              // per receiver: transfers produced, not posted
    std::vector<bool> grad_received(keys);
    auto post_ready = [&](int receiver) {
      const int ch = find(out_of[s], receiver);
      if (ch < 0) return;
      const std::vector<Transfer>& order = channels[ch].transfers;
      int& k = next[ch];
      while (k < static_cast<int>(order.size())) {
        int& slot = ready_at(order[k]);
        if (slot < 0) break;
        const Transfer& t = order[k];
        out.Add(ir::Op::Transfer(true, static_cast<ir::Direction>(std::get<0>(t)), std::get<1>(t), std::get<2>(t), slot));
        if (std::get<0>(t) == ir::ACTIVATION) {
          unwaited_act[key_of(grid.SenderOf(ir::ACTIVATION, std::get<1>(t)), std::get<2>(t))] =
              static_cast<int>(unwaited.size());
        }
        unwaited.push_back({t});
        slot = -1;
        --pending[receiver];
        ++k;
      }
    };
    for (const ir::Op& c : prog.ops) {
      const size_t key = key_of(c.virtual_stage(), c.micro_batch);
      if (c.compute_kind() == ir::FORWARD && (c.virtual_stage() == 0 || c.virtual_stage() == vlast)) {
        out.Add(ir::Op::Load(c.micro_batch, c.slot, c.virtual_stage() == 0, c.virtual_stage() == vlast));
      }
      OpTransfers t = TransfersOf(grid, c, key, grad_received);
      if (t.needs) {
        out.Add(ir::Op::Transfer(false, static_cast<ir::Direction>(std::get<0>(t.in)), std::get<1>(t.in),
                                 std::get<2>(t.in), c.slot));
        ir::Ref waited[2] = {Ref(false, t.in)};
        int n = 1;
        // The gradient arrived, so the receiver took this micro-batch's activation: its
        // send is complete, or will be without anything else from this rank.
        if (std::get<0>(t.in) == ir::GRADIENT) {
          int& j = unwaited_act[key];
          if (j >= 0) {
            waited[n++] = Ref(true, {ir::ACTIVATION, std::get<1>(t.in), std::get<2>(t.in)});
            unwaited[j].waited = true;
            j = -1;
          }
        }
        out.AddWait(absl::MakeConstSpan(waited, n));
      }
      out.Add(c);
      if (t.produces) {
        const int receiver = grid.PeerStage(true, static_cast<ir::Direction>(std::get<0>(t.out)), std::get<1>(t.out));
        int& slot = ready_at(t.out);
        if (slot < 0) ++pending[receiver];
        slot = c.slot;
        post_ready(receiver);
      }
    }
    for (int receiver = 0; receiver < p; ++receiver) {
      if (pending[receiver] == 0) continue;
      // The first (direction, boundary, micro-batch) left for that receiver.
      Transfer first{3, 0, 0};
      for (int dir : {ir::ACTIVATION, ir::GRADIENT}) {
        for (int v = 0; v <= vlast; ++v) {
          if (grid.StageOf(v) != s) continue;
          const int b = dir == ir::ACTIVATION ? v : v - 1;
          if (b < 0 || b >= grid.boundaries() || grid.PeerStage(true, static_cast<ir::Direction>(dir), b) != receiver) {
            continue;
          }
          for (int mb = 0; mb < m; ++mb) {
            const Transfer t{dir, b, mb};
            if (ready_at(t) >= 0) first = std::min(first, t);
          }
        }
      }
      return absl::InvalidArgumentError(absl::StrCat("stage ", s, ": produces ", ir::RefText(Ref(true, first)),
                                                     " for stage ", receiver, ", which never receives it"));
    }
    for (const auto& [receiver, c] : out_of[s]) {
      const Channel& ch = channels[c];
      if (next[c] != static_cast<int>(ch.transfers.size())) {
        return absl::InvalidArgumentError(absl::StrCat("stage ", ch.receiver, " receives ",
                                                       ir::RefText(Ref(false, ch.transfers[next[c]])), " from stage ",
                                                       s, ", which never produces it"));
      }
    }
    std::vector<ir::Ref> rest;
    for (const Posted& post : unwaited) {
      if (!post.waited) rest.push_back(Ref(true, post.transfer));
    }
    if (!rest.empty()) out.AddWait(rest);
    bool trains = false;
    for (const ir::Op& op : prog.ops) trains |= op.compute_kind() != ir::FORWARD;
    if (trains) reductions.AppendTo(plan, out);
    prog = std::move(out);
    return absl::OkStatus();
  };
  std::vector<absl::Status> done(programs.size());
  ir::ParallelFor(static_cast<int>(programs.size()), [&](int i) { done[i] = lower_stage(programs[i]); });
  for (const absl::Status& st : done) RETURN_IF_ERROR(st);
  return absl::OkStatus();
}

absl::Status Lower::Run(ir::Module& module) {
  RETURN_IF_ERROR(RequireLevel(module.header, ir::BUFFERED, "lower"));
  RETURN_IF_ERROR(RequirePlacement(module.header, "lower"));
  RETURN_IF_ERROR(LowerPrograms(module.header, module.programs));
  module.header.set_level(ir::LOWERED);
  return absl::OkStatus();
}

}  // namespace ppc::passes
