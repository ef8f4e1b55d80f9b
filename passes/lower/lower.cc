#include "passes/lower/lower.h"

#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/instruction_text.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/plan_util.h"

namespace ppc::passes {
namespace {

// (direction, boundary, micro-batch)
using Transfer = std::tuple<int, int, int>;

ir::CommRef Ref(bool send, const Transfer& t) {
  ir::CommRef ref;
  ref.set_send(send);
  ref.set_direction(static_cast<ir::Direction>(std::get<0>(t)));
  ref.set_boundary(std::get<1>(t));
  ref.set_micro_batch(std::get<2>(t));
  return ref;
}

template <typename Msg>
void Fill(Msg* m, const Transfer& t, int slot) {
  m->set_direction(static_cast<ir::Direction>(std::get<0>(t)));
  m->set_boundary(std::get<1>(t));
  m->set_micro_batch(std::get<2>(t));
  m->set_slot(slot);
}

// The transfers a compute op needs before it runs (at most one: an F's activation, or
// the gradient before the first of B/I) and produces after it.
struct OpTransfers {
  bool needs = false, produces = false;
  Transfer in, out;
};

OpTransfers TransfersOf(const ir::Grid& grid, const ir::Compute& c, std::set<std::pair<int, int>>& grad_received) {
  OpTransfers t;
  const int v = c.virtual_stage(), mb = c.micro_batch();
  switch (c.kind()) {
    case ir::FORWARD:
      if (!grid.IsFirst(v)) t = {true, false, {ir::ACTIVATION, v - 1, mb}, {}};
      if (!grid.IsLast(v)) {
        t.produces = true;
        t.out = {ir::ACTIVATION, v, mb};
      }
      break;
    case ir::BACKWARD:
    case ir::BACKWARD_INPUT:
      if (!grid.IsLast(v) && grad_received.insert({v, mb}).second) {
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

void InsertReductions(const ir::Plan& plan, const ir::Grid& grid, ir::StageProgram& prog) {
  const bool sharded = plan.config().zero_stage() == 1 && plan.topology().data_parallel() > 1;
  std::map<std::string, std::set<int>> ties;  // tie key -> stages holding a copy
  for (int v = 0; v < plan.placement().virtual_stages_size(); ++v) {
    const auto& vs = plan.placement().virtual_stages(v);
    for (int l = vs.begin(); l < vs.end(); ++l) {
      const std::string& key = plan.model().layers(l).tie_key();
      if (!key.empty()) ties[key].insert(grid.StageOf(v));
    }
  }
  for (const auto& [key, stages] : ties) {
    if (stages.size() < 2 || !stages.count(prog.stage())) continue;
    ir::Instruction in;
    in.mutable_reduce_tied_grads()->set_tie_key(key);
    for (int s : stages) in.mutable_reduce_tied_grads()->add_stages(s);
    *prog.add_instructions() = in;
  }
  if (plan.topology().data_parallel() > 1) prog.add_instructions()->mutable_reduce_grads();
  if (plan.config().gradient_clipping() > 0) {
    // After every reduction: the norm is taken over final, replica-averaged gradients.
    auto* clip = prog.add_instructions()->mutable_clip_grad_norm();
    clip->set_max_norm(plan.config().gradient_clipping());
    for (int s = 0; s < plan.topology().num_stages(); ++s) clip->add_stages(s);
  }
  prog.add_instructions()->mutable_optimizer_step()->set_sharded(sharded);
  if (sharded) prog.add_instructions()->mutable_gather_params();
}

}  // namespace

absl::Status LowerPrograms(const ir::Plan& plan, google::protobuf::RepeatedPtrField<ir::StageProgram>& programs) {
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(plan));
  const int vlast = grid.virtual_stages() - 1;
  // The order in which each receiver takes transfers from each sender: what the
  // sender's posts on that channel must follow.
  std::map<std::pair<int, int>, std::vector<Transfer>> channel;  // (sender, receiver) -> transfers
  for (const ir::StageProgram& prog : programs) {
    std::set<std::pair<int, int>> grad_received;
    for (const ir::Instruction& in : prog.instructions()) {
      if (!in.has_compute()) continue;
      OpTransfers t = TransfersOf(grid, in.compute(), grad_received);
      if (!t.needs) continue;
      const int sender = grid.PeerStage(false, static_cast<ir::Direction>(std::get<0>(t.in)), std::get<1>(t.in));
      channel[{sender, prog.stage()}].push_back(t.in);
    }
  }
  for (ir::StageProgram& prog : programs) {
    const int s = prog.stage();
    google::protobuf::RepeatedPtrField<ir::Instruction> out;
    struct Posted {
      Transfer transfer;
      int slot;
      std::pair<int, int> key;  // (virtual stage, micro-batch) whose slot it read
    };
    std::vector<Posted> unwaited;  // sends posted, in order; waited ones marked below
    std::vector<bool> waited;
    std::map<Transfer, size_t> unwaited_at;  // activation send -> its index in `unwaited`
    std::map<int, size_t> next;                                      // receiver -> position in its channel
    std::map<int, std::map<Transfer, std::pair<int, std::pair<int, int>>>> ready;  // receiver -> transfer -> slot, key
    std::set<std::pair<int, int>> grad_received;
    auto post_ready = [&](int receiver) {
      auto ch = channel.find({s, receiver});
      if (ch == channel.end()) return;
      size_t& k = next[receiver];
      auto& r = ready[receiver];
      while (k < ch->second.size()) {
        auto it = r.find(ch->second[k]);
        if (it == r.end()) break;
        ir::Instruction send;
        Fill(send.mutable_send(), it->first, it->second.first);
        *out.Add() = send;
        if (std::get<0>(it->first) == ir::ACTIVATION) unwaited_at[it->first] = unwaited.size();
        unwaited.push_back({it->first, it->second.first, it->second.second});
        waited.push_back(false);
        r.erase(it);
        ++k;
      }
    };
    for (const ir::Instruction& in : prog.instructions()) {
      if (!in.has_compute()) {
        return absl::InvalidArgumentError(absl::StrCat("stage ", s, ": lower found '", ir::PrintInstruction(in),
                                                       "' in a BUFFERED program"));
      }
      const ir::Compute& c = in.compute();
      const std::pair<int, int> key{c.virtual_stage(), c.micro_batch()};
      if (c.kind() == ir::FORWARD && (c.virtual_stage() == 0 || c.virtual_stage() == vlast)) {
        ir::Instruction load;
        load.mutable_load_micro_batch()->set_micro_batch(c.micro_batch());
        load.mutable_load_micro_batch()->set_slot(c.slot());
        load.mutable_load_micro_batch()->set_inputs(c.virtual_stage() == 0);
        load.mutable_load_micro_batch()->set_labels(c.virtual_stage() == vlast);
        *out.Add() = load;
      }
      OpTransfers t = TransfersOf(grid, c, grad_received);
      if (t.needs) {
        ir::Instruction recv;
        Fill(recv.mutable_recv(), t.in, c.slot());
        *out.Add() = recv;
        ir::Instruction wait;
        *wait.mutable_wait()->add_ops() = Ref(false, t.in);
        // The gradient arrived, so the receiver took this micro-batch's activation: its
        // send is complete, or will be without anything else from this rank.
        if (std::get<0>(t.in) == ir::GRADIENT) {
          const Transfer act{ir::ACTIVATION, std::get<1>(t.in), std::get<2>(t.in)};
          if (auto j = unwaited_at.find(act); j != unwaited_at.end()) {
            *wait.mutable_wait()->add_ops() = Ref(true, act);
            waited[j->second] = true;
            unwaited_at.erase(j);
          }
        }
        *out.Add() = wait;
      }
      *out.Add() = in;
      if (t.produces) {
        const int receiver = grid.PeerStage(true, static_cast<ir::Direction>(std::get<0>(t.out)), std::get<1>(t.out));
        ready[receiver][t.out] = {c.slot(), key};
        post_ready(receiver);
      }
    }
    for (const auto& [receiver, left] : ready) {
      if (!left.empty()) {
        const Transfer& t = left.begin()->first;
        return absl::InvalidArgumentError(absl::StrCat("stage ", s, ": produces ", ir::CommRefText(Ref(true, t)),
                                                       " for stage ", receiver, ", which never receives it"));
      }
    }
    for (const auto& [edge, transfers] : channel) {
      if (edge.first == s && next[edge.second] != transfers.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "stage ", edge.second, " receives ", ir::CommRefText(Ref(false, transfers[next[edge.second]])),
            " from stage ", s, ", which never produces it"));
      }
    }
    ir::Instruction rest;
    for (size_t j = 0; j < unwaited.size(); ++j) {
      if (!waited[j]) *rest.mutable_wait()->add_ops() = Ref(true, unwaited[j].transfer);
    }
    if (rest.has_wait()) *out.Add() = std::move(rest);
    prog.mutable_instructions()->Swap(&out);
    bool trains = false;
    for (const auto& in : prog.instructions()) trains |= in.has_compute() && in.compute().kind() != ir::FORWARD;
    if (trains) InsertReductions(plan, grid, prog);
  }
  return absl::OkStatus();
}

absl::Status Lower::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireLevel(plan, ir::BUFFERED, "lower"));
  RETURN_IF_ERROR(RequirePlacement(plan, "lower"));
  RETURN_IF_ERROR(LowerPrograms(plan, *plan.mutable_programs()));
  plan.set_level(ir::LOWERED);
  return absl::OkStatus();
}

}  // namespace ppc::passes
