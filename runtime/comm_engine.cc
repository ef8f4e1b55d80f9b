#include "runtime/comm_engine.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ir/instruction_text.h"
#include "ir/status_macros.h"

namespace ppc::runtime {

namespace {

std::string ShapeText(at::ScalarType dtype, at::IntArrayRef sizes) {
  return absl::StrCat(dtype == at::kLong ? "INT64" : dtype == at::kFloat ? "FLOAT32" : c10::toString(dtype),
                      c10::str(sizes));
}

}  // namespace

std::string CommEngine::Transfer::Text() const {
  ir::CommRef ref;
  ref.set_send(send);
  ref.set_direction(direction);
  ref.set_boundary(boundary);
  ref.set_micro_batch(micro_batch);
  return ir::CommRefText(ref);
}

CommEngine::CommEngine(Transport* transport, const ir::Plan& plan, const ir::Grid& grid, int replica,
                       absl::Duration timeout, const torch::Device& device)
    : transport_(transport), grid_(grid), replica_(replica), timeout_(timeout), device_(device) {
  const int64_t mbs = plan.config().micro_batch_size();
  for (const ir::Boundary& b : plan.boundaries()) {
    std::vector<TensorShape> forward, back;
    for (const ir::TensorSpec& spec : b.tensors()) {
      TensorShape shape{{mbs}, spec.dtype() == ir::INT64 ? at::kLong : at::kFloat};
      shape.sizes.insert(shape.sizes.end(), spec.shape().begin(), spec.shape().end());
      if (spec.dtype() == ir::FLOAT32) back.push_back(shape);
      forward.push_back(std::move(shape));
    }
    shapes_[0].push_back(std::move(forward));
    shapes_[1].push_back(std::move(back));
  }
}

CommEngine::Transfer CommEngine::Resolve(bool send, ir::Direction direction, int boundary, int micro_batch) const {
  Transfer t;
  t.send = send;
  t.direction = direction;
  t.boundary = boundary;
  t.micro_batch = micro_batch;
  t.peer_stage = grid_.PeerStage(send, direction, boundary);
  t.peer_rank = grid_.Rank(t.peer_stage, replica_);
  t.local = t.peer_stage == grid_.StageOf(send ? grid_.SenderOf(direction, boundary) : grid_.ReceiverOf(direction, boundary));
  t.shapes = &shapes_[direction == ir::GRADIENT ? 1 : 0][boundary];
  return t;
}

void CommEngine::Reset() {
  send_seq_.clear();
  recv_seq_.clear();
  local_.clear();
}

absl::Status CommEngine::PostSend(const Transfer& transfer, const Group& group, const std::string& what) {
  const std::vector<TensorShape>& shapes = *transfer.shapes;
  const char* kind = transfer.direction == ir::ACTIVATION ? "outputs" : "input gradients";
  if (group.size() != shapes.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " holds ", group.size(), " ", kind, " but boundary ", transfer.boundary, " carries ", shapes.size(),
        group.empty() ? (transfer.direction == ir::ACTIVATION ? " (not forwarded yet, or already backwarded)"
                                                              : " (not backwarded yet)")
                      : ""));
  }
  for (size_t k = 0; k < shapes.size(); ++k) {
    if (group[k].sizes() != at::IntArrayRef(shapes[k].sizes) || group[k].scalar_type() != shapes[k].dtype) {
      return absl::FailedPreconditionError(
          absl::StrCat(kind, " ", k, " of ", what, " is ", ShapeText(group[k].scalar_type(), group[k].sizes()),
                       " but boundary ", transfer.boundary, " carries ", ShapeText(shapes[k].dtype, shapes[k].sizes)));
    }
  }
  Pending op;
  // The op keeps its own reference to the data until its Wait: the slot may move on.
  for (const auto& t : group) op.tensors.push_back(t.detach().contiguous());
  return Post(transfer, std::move(op));
}

absl::Status CommEngine::PostRecv(const Transfer& transfer, int slot) {
  Pending op;
  op.slot = slot;
  if (transfer.local) return Post(transfer, std::move(op));
  for (const TensorShape& shape : *transfer.shapes) op.tensors.push_back(torch::empty(shape.sizes, torch::TensorOptions().dtype(shape.dtype).device(device_)));
  return Post(transfer, std::move(op));
}

absl::Status CommEngine::Post(const Transfer& transfer, Pending op) {
  if (transfer.local) {
    if (transfer.send) {
      local_[{transfer.direction, transfer.boundary, transfer.micro_batch}] = op.tensors;
      op.tensors.clear();
    } else {
      op.tensors.clear();  // the sender's tensors arrive at the Wait
    }
    pending_[KeyOf(transfer)] = std::move(op);
    return absl::OkStatus();
  }
  for (auto& t : op.tensors) {
    uint32_t& seq = transfer.send ? send_seq_[transfer.peer_rank] : recv_seq_[transfer.peer_rank];
    ASSIGN_OR_RETURN(Transport::Handle h, transfer.send ? transport_->PostSend(t, transfer.peer_rank, seq)
                                                        : transport_->PostRecv(t, transfer.peer_rank, seq));
    ++seq;
    op.handles.push_back(h);
  }
  pending_[KeyOf(transfer)] = std::move(op);
  return absl::OkStatus();
}

absl::StatusOr<CommEngine::Received> CommEngine::Wait(const Transfer& transfer) {
  auto it = pending_.find(KeyOf(transfer));
  // Load checked that every wait follows its post.
  if (it == pending_.end()) return absl::InternalError("unreachable: wait without a post passed Load");
  Pending op = std::move(it->second);
  pending_.erase(it);
  if (transfer.local && !transfer.send) {
    auto sent = local_.find({transfer.direction, transfer.boundary, transfer.micro_batch});
    if (sent == local_.end()) {
      return absl::FailedPreconditionError(absl::StrCat("waiting for ", transfer.Text(),
                                                        ": its send, on this rank (stage ", transfer.peer_stage,
                                                        "), is not posted yet"));
    }
    op.tensors = std::move(sent->second);
    local_.erase(sent);
  }
  for (Transport::Handle h : op.handles) {
    absl::Status waited = transport_->Wait(h, timeout_);
    if (!waited.ok()) {
      return Annotate(waited, absl::StrCat("waiting for ", transfer.Text(), " with peer stage ", transfer.peer_stage,
                                           " rank ", transfer.peer_rank));
    }
  }
  Received r;
  r.slot = op.slot;
  if (!transfer.send) r.tensors = std::move(op.tensors);
  return r;
}

void CommEngine::CheckChannels(const ir::Plan& plan, const ir::Grid& grid, int stage, int replica, bool eval,
                               std::vector<std::string>& problems) {
  const auto& programs = eval ? plan.eval_programs() : plan.programs();
  if (programs.size() != grid.stages()) return;  // the structural checks report it
  struct Entry {
    int direction, boundary, micro_batch;
    int index;  // of the instruction that posts it
    bool operator==(const Entry& o) const {
      return direction == o.direction && boundary == o.boundary && micro_batch == o.micro_batch;
    }
  };
  using Channels = std::map<int, std::vector<Entry>>;  // by peer stage
  // The transfers of stage s's program with each peer stage, in posting order:
  // [0] its sends, [1] its receives.
  auto channels = [&](int s) {
    std::vector<Channels> out(2);
    const auto& code = programs.Get(s).instructions();
    for (int i = 0; i < code.size(); ++i) {
      const ir::Instruction& in = code.Get(i);
      if (!in.has_send() && !in.has_recv()) continue;
      const bool send = in.has_send();
      const ir::Direction d = send ? in.send().direction() : in.recv().direction();
      const int b = send ? in.send().boundary() : in.recv().boundary();
      // Other stages' programs may not have been checked structurally.
      if ((d != ir::ACTIVATION && d != ir::GRADIENT) || b < 0 || b >= grid.boundaries()) continue;
      out[send ? 0 : 1][grid.PeerStage(send, d, b)].push_back(
          {d, b, send ? in.send().micro_batch() : in.recv().micro_batch(), i});
    }
    return out;
  };
  auto get = [](const Channels& c, int peer) {
    auto it = c.find(peer);
    return it == c.end() ? std::vector<Entry>{} : it->second;
  };
  auto text = [&](int s, const Entry& e) {
    return absl::StrCat("stage ", s, " instruction ", e.index, " (",
                        ir::PrintInstruction(programs.Get(s).instructions(e.index)), ")");
  };
  // Transfers only cross boundaries, so the peers are the stages of the virtual stages
  // next to this stage's.
  std::set<int> peers;
  for (int c = 0; c < grid.chunks(); ++c) {
    const int v = grid.VirtualOf(stage, c);
    if (v > 0) peers.insert(grid.StageOf(v - 1));
    if (v + 1 < grid.virtual_stages()) peers.insert(grid.StageOf(v + 1));
  }
  peers.erase(stage);
  const std::vector<Channels> mine = channels(stage);
  for (int peer : peers) {
    const std::vector<Channels> theirs = channels(peer);
    for (bool send : {true, false}) {
      const int from = send ? stage : peer, to = send ? peer : stage;
      const std::vector<Entry> sends = get((send ? mine : theirs)[0], to), recvs = get((send ? theirs : mine)[1], from);
      size_t k = 0;
      while (k < sends.size() && k < recvs.size() && sends[k] == recvs[k]) ++k;
      if (k == sends.size() && k == recvs.size()) continue;
      std::string what;
      if (k < sends.size() && k < recvs.size()) {
        what = absl::StrCat("transfer ", k, " is ", text(from, sends[k]), " at the sender but ", text(to, recvs[k]),
                            " at the receiver");
      } else {
        what = absl::StrCat("the sender posts ", sends.size(), " transfers and the receiver ", recvs.size());
      }
      problems.push_back(absl::StrCat(eval ? "eval program: " : "", "the channel from stage ", from, " (rank ",
                                      grid.Rank(from, replica), ") to stage ", to, " (rank ", grid.Rank(to, replica),
                                      ") disagrees on the order of its transfers (the k-th send must be the k-th "
                                      "receive): ",
                                      what));
    }
  }
}

}  // namespace ppc::runtime
