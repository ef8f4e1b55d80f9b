#include "runtime/loopback_transport.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/ScalarType.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/status_macros.h"
#include "runtime/torch_status.h"

namespace ppc::runtime {
namespace {

// One posted send or receive. Guarded by State::mu once posted.
struct P2POp {
  int src = 0, dst = 0;
  uint64_t index = 0;  // the k of "the k-th message from src to dst"
  uint32_t tag = 0;
  bool is_send = false;
  at::Tensor tensor;
  bool done = false;       // matched (and, if the match was good, copied)
  bool abandoned = false;  // its Wait gave up, or its rank disconnected
  absl::Status status;
};

// Sender -> receiver. At most one of the queues is non-empty: an operation waits in its
// queue until the other side posts its partner.
struct Channel {
  uint64_t sends = 0, recvs = 0;
  std::deque<std::shared_ptr<P2POp>> unmatched_sends, unmatched_recvs;
};

enum class Kind { kAllReduce, kAllGather, kGather, kBroadcast, kBarrier };

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kAllReduce: return "all-reduce";
    case Kind::kAllGather: return "all-gather";
    case Kind::kGather: return "gather";
    case Kind::kBroadcast: return "broadcast";
    case Kind::kBarrier: return "barrier";
  }
  return "?";
}

// One member's part in a collective call.
struct Member {
  bool arrived = false;
  bool abandoned = false;
  Kind kind = Kind::kBarrier;
  int root = -1;  // gather, broadcast
  // all-reduce: its tensors; all-gather, gather: {input, output}; broadcast: {tensor}.
  std::vector<at::Tensor> tensors;
};

// The seq-th collective call on a group: a rendezvous of its members.
struct Collective {
  std::vector<int> group;
  uint64_t seq = 0;
  std::vector<Member> members;  // in group order
  int arrived = 0;
  bool done = false;
  absl::Status status;

  std::string What(Kind kind) const {
    return absl::StrCat(KindName(kind), " #", seq, " over ranks [", absl::StrJoin(group, ","), "]");
  }
};

std::string Describe(const Member& m) {
  if (m.kind == Kind::kGather) return absl::StrCat("gather to rank ", m.root);
  if (m.kind == Kind::kBroadcast) return absl::StrCat("broadcast from rank ", m.root);
  return KindName(m.kind);
}

std::string Values(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return absl::StrCat(t.numel(), " values of ", c10::toString(t.scalar_type()));
}

bool SameShape(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && b.defined() && a.numel() == b.numel() && a.scalar_type() == b.scalar_type();
}

}  // namespace

struct LoopbackHub::State {
  explicit State(int world) : connected(world, false), left(world, false) {}

  // std::mutex rather than absl::Mutex: ThreadSanitizer sees through it.
  std::mutex mu;
  std::condition_variable changed;  // notified after every change under mu
  std::vector<bool> connected;      // guarded by mu, like everything below
  std::vector<bool> left;           // connected, then disconnected
  std::map<std::pair<int, int>, Channel> channels;
  // Calls some members have joined and not all: the last to join completes and removes it.
  std::map<std::pair<std::vector<int>, uint64_t>, std::shared_ptr<Collective>> collectives;

  // Waits, mu held by `lock`, until ready() or `timeout` has passed; returns ready().
  template <typename Ready>
  bool WaitFor(std::unique_lock<std::mutex>& lock, absl::Duration timeout, Ready ready) {
    // Capped so that the deadline fits in the clock (an infinite timeout is 100 years).
    const auto deadline = std::chrono::steady_clock::now() +
                          absl::ToChronoNanoseconds(std::min(timeout, absl::Hours(24 * 365 * 100)));
    return changed.wait_until(lock, deadline, ready);
  }
};

namespace {

// Completes a matched pair: both get the same status. Called with State::mu held.
void Match(P2POp& send, P2POp& recv) {
  const std::string message =
      absl::StrCat("rank ", send.src, " -> rank ", send.dst, ": message ", send.index);
  absl::Status s;
  if (send.tag != recv.tag) {
    s = absl::FailedPreconditionError(absl::StrCat(message, " was posted with tag ", send.tag,
                                                   " by the sender but tag ", recv.tag, " by the receiver"));
  } else if (send.abandoned || recv.abandoned) {
    s = absl::AbortedError(absl::StrCat(message, " (tag ", send.tag, ") was abandoned by the ",
                                        send.abandoned ? "sender" : "receiver",
                                        " (its wait timed out, or it disconnected)"));
  } else if (!SameShape(send.tensor, recv.tensor)) {
    s = absl::InvalidArgumentError(absl::StrCat(message, " (tag ", send.tag, "): the sender posted ",
                                                Values(send.tensor), " but the receiver expects ",
                                                Values(recv.tensor)));
  } else {
    s = TorchCall([&] {
      at::NoGradGuard no_grad;
      recv.tensor.copy_(send.tensor.reshape(recv.tensor.sizes()));
    });
    if (!s.ok()) s = Annotate(s, absl::StrCat(message, " (tag ", send.tag, "): copying"));
  }
  send.done = recv.done = true;
  send.status = recv.status = s;
}

// Checks that the members of a collective call agree. Called with State::mu held, every
// member arrived.
absl::Status CheckCollective(const Collective& c) {
  const std::vector<Member>& m = c.members;
  const std::string what = c.What(m[0].kind);
  for (size_t i = 1; i < m.size(); ++i) {
    if (m[i].kind != m[0].kind || m[i].root != m[0].root) {
      return absl::FailedPreconditionError(absl::StrCat(
          "collective call #", c.seq, " over ranks [", absl::StrJoin(c.group, ","), "]: rank ", c.group[0],
          " called ", Describe(m[0]), " but rank ", c.group[i], " called ", Describe(m[i])));
    }
  }
  std::vector<int> gave_up;
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i].abandoned) gave_up.push_back(c.group[i]);
  if (!gave_up.empty()) {
    return absl::AbortedError(absl::StrCat(what, ": rank(s) [", absl::StrJoin(gave_up, ","),
                                           "] gave up on it (wait timed out, or disconnected)"));
  }
  int root_index = -1;
  if (m[0].kind == Kind::kGather || m[0].kind == Kind::kBroadcast) {
    auto it = std::find(c.group.begin(), c.group.end(), m[0].root);
    if (it == c.group.end()) return absl::InvalidArgumentError(absl::StrCat(what, ": root rank ", m[0].root, " is not a member"));
    root_index = static_cast<int>(it - c.group.begin());
  }
  const int64_t size = static_cast<int64_t>(m.size());
  switch (m[0].kind) {
    case Kind::kAllReduce:
      for (size_t i = 0; i < m.size(); ++i) {
        if (m[i].tensors.size() != m[0].tensors.size()) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": rank ", c.group[0], " passed ", m[0].tensors.size(),
                                                         " tensors but rank ", c.group[i], " ",
                                                         m[i].tensors.size()));
        }
        for (size_t t = 0; t < m[i].tensors.size(); ++t) {
          if (!SameShape(m[i].tensors[t], m[0].tensors[t])) {
            return absl::InvalidArgumentError(absl::StrCat(what, ": tensor ", t, " has ", Values(m[0].tensors[t]),
                                                           " on rank ", c.group[0], " but ", Values(m[i].tensors[t]),
                                                           " on rank ", c.group[i]));
          }
        }
      }
      return absl::OkStatus();
    case Kind::kAllGather:
    case Kind::kGather:
      for (size_t i = 0; i < m.size(); ++i) {
        const at::Tensor& in = m[i].tensors[0];
        if (!in.defined() || in.dim() != 1 || !SameShape(in, m[0].tensors[0])) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": the inputs must be 1-D and alike, but rank ",
                                                         c.group[0], " passed ", Values(m[0].tensors[0]),
                                                         " and rank ", c.group[i], " ",
                                                         in.defined() ? absl::StrCat(in.dim(), "-D ") : "",
                                                         Values(in)));
        }
        if (m[0].kind == Kind::kGather && static_cast<int>(i) != root_index) continue;
        const at::Tensor& out = m[i].tensors[1];
        if (!out.defined() || out.dim() != 1 || out.numel() != size * in.numel() ||
            out.scalar_type() != in.scalar_type()) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": rank ", c.group[i], " gathers ", size, " x ",
                                                         Values(in), " into ",
                                                         out.defined() ? absl::StrCat(out.dim(), "-D ") : "",
                                                         Values(out)));
        }
      }
      return absl::OkStatus();
    case Kind::kBroadcast:
      for (size_t i = 0; i < m.size(); ++i) {
        if (!SameShape(m[i].tensors[0], m[root_index].tensors[0])) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": root rank ", m[0].root, " sends ",
                                                         Values(m[root_index].tensors[0]), " but rank ",
                                                         c.group[i], " expects ", Values(m[i].tensors[0])));
        }
      }
      return absl::OkStatus();
    case Kind::kBarrier:
      return absl::OkStatus();
  }
  return absl::InternalError("unreachable: unknown collective kind");
}

// Runs a checked collective, writing every member's results. Called with State::mu held.
void RunCollective(Collective& c) {
  std::vector<Member>& m = c.members;
  const int64_t size = static_cast<int64_t>(m.size());
  at::NoGradGuard no_grad;
  switch (m[0].kind) {
    case Kind::kAllReduce:
      // Summed in group order on every member: the same bits everywhere.
      for (size_t t = 0; t < m[0].tensors.size(); ++t) {
        at::Tensor sum = m[0].tensors[t].reshape({-1}).clone();
        for (size_t i = 1; i < m.size(); ++i) sum.add_(m[i].tensors[t].reshape({-1}));
        for (size_t i = 0; i < m.size(); ++i) m[i].tensors[t].copy_(sum.reshape(m[i].tensors[t].sizes()));
      }
      return;
    case Kind::kAllGather:
    case Kind::kGather: {
      const int64_t n = m[0].tensors[0].numel();
      for (size_t i = 0; i < m.size(); ++i) {
        if (m[0].kind == Kind::kGather && c.group[i] != m[0].root) continue;
        for (int64_t r = 0; r < size; ++r) m[i].tensors[1].narrow(0, r * n, n).copy_(m[r].tensors[0]);
      }
      return;
    }
    case Kind::kBroadcast: {
      const auto root = std::find(c.group.begin(), c.group.end(), m[0].root) - c.group.begin();
      const at::Tensor& from = m[root].tensors[0];
      for (size_t i = 0; i < m.size(); ++i) {
        if (static_cast<int64_t>(i) != root) m[i].tensors[0].copy_(from.reshape(m[i].tensors[0].sizes()));
      }
      return;
    }
    case Kind::kBarrier:
      return;
  }
}

class LoopbackTransport : public Transport {
 public:
  LoopbackTransport(std::shared_ptr<LoopbackHub::State> state, int rank, int world)
      : state_(std::move(state)), rank_(rank), world_(world) {
    std::vector<int> all(world_);
    for (int r = 0; r < world_; ++r) all[r] = r;
    groups_[all] = 0;
  }

  // Disconnects: this rank's unfinished operations are abandoned, and partners waiting
  // for it fail instead of running into their timeouts.
  ~LoopbackTransport() override {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->left[rank_] = true;
    for (auto& [handle, op] : pending_) Abandon(op);
    state_->changed.notify_all();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  absl::Status CreateGroup(const std::vector<int>& ranks, absl::Duration timeout) override {
    bool valid = !ranks.empty();
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (ranks[i] < 0 || ranks[i] >= world_ || (i > 0 && ranks[i] <= ranks[i - 1])) valid = false;
    }
    if (!valid) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, ": group [", absl::StrJoin(ranks, ","),
                                                     "] is not a sorted list of distinct ranks of a world of ",
                                                     world_));
    }
    if (std::find(ranks.begin(), ranks.end(), rank_) == ranks.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank_, " is not in group [", absl::StrJoin(ranks, ","), "]"));
    }
    groups_.emplace(ranks, 0);
    return absl::OkStatus();
  }

  absl::StatusOr<Handle> PostSend(const at::Tensor& tensor, int peer, uint32_t tag) override {
    return PostP2P(tensor, peer, tag, /*is_send=*/true);
  }

  absl::StatusOr<Handle> PostRecv(at::Tensor& tensor, int peer, uint32_t tag) override {
    return PostP2P(tensor, peer, tag, /*is_send=*/false);
  }

  absl::StatusOr<Handle> PostAllReduceSum(std::vector<at::Tensor>& tensors, const std::vector<int>& group) override {
    return PostCollective(Kind::kAllReduce, -1, tensors, group);
  }

  absl::Status Wait(Handle handle, absl::Duration timeout) override {
    auto it = pending_.find(handle);
    if (it == pending_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, ": unknown transport handle ", handle));
    }
    Pending op = std::move(it->second);
    pending_.erase(it);
    std::unique_lock<std::mutex> lock(state_->mu);
    return op.p2p != nullptr ? WaitP2P(lock, *op.p2p, timeout)
                             : WaitCollective(lock, *op.collective, op.member, timeout);
  }

  absl::Status AllGather(const at::Tensor& input, at::Tensor& output, const std::vector<int>& group,
                         absl::Duration timeout) override {
    return Blocking(Kind::kAllGather, -1, {input, output}, group, timeout);
  }

  absl::Status Gather(const at::Tensor& input, at::Tensor& output, int root, const std::vector<int>& group,
                      absl::Duration timeout) override {
    return Blocking(Kind::kGather, root, {input, output}, group, timeout);
  }

  absl::Status Broadcast(at::Tensor& tensor, int root, const std::vector<int>& group,
                         absl::Duration timeout) override {
    return Blocking(Kind::kBroadcast, root, {tensor}, group, timeout);
  }

  absl::Status Barrier(const std::vector<int>& group, absl::Duration timeout) override {
    return Blocking(Kind::kBarrier, -1, {}, group, timeout);
  }

 private:
  struct Pending {
    std::shared_ptr<P2POp> p2p;               // a send or a receive, or
    std::shared_ptr<Collective> collective;   // this rank's part in a collective call
    int member = 0;
  };

  absl::StatusOr<Handle> PostP2P(const at::Tensor& tensor, int peer, uint32_t tag, bool is_send) {
    const char* verb = is_send ? "send to" : "receive from";
    if (peer < 0 || peer >= world_ || peer == rank_) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank_, ": ", verb, " rank ", peer, ": not another rank of a world of ", world_));
    }
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank_, ": ", verb, " rank ", peer, " (tag ", tag, "): undefined tensor"));
    }
    auto op = std::make_shared<P2POp>();
    op->src = is_send ? rank_ : peer;
    op->dst = is_send ? peer : rank_;
    op->tag = tag;
    op->is_send = is_send;
    op->tensor = tensor;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      Channel& channel = state_->channels[{op->src, op->dst}];
      op->index = is_send ? channel.sends++ : channel.recvs++;
      auto& partners = is_send ? channel.unmatched_recvs : channel.unmatched_sends;
      if (!partners.empty()) {
        std::shared_ptr<P2POp> partner = std::move(partners.front());
        partners.pop_front();
        if (is_send) {
          Match(*op, *partner);
        } else {
          Match(*partner, *op);
        }
        state_->changed.notify_all();
      } else {
        (is_send ? channel.unmatched_sends : channel.unmatched_recvs).push_back(op);
      }
    }
    return Keep(Pending{std::move(op), nullptr, 0});
  }

  absl::StatusOr<Handle> PostCollective(Kind kind, int root, std::vector<at::Tensor> tensors,
                                        const std::vector<int>& group) {
    auto g = groups_.find(group);
    if (g == groups_.end()) {
      return absl::FailedPreconditionError(absl::StrCat("rank ", rank_, ": ", KindName(kind), " over group [",
                                                        absl::StrJoin(group, ","), "], which was not created"));
    }
    const int member = static_cast<int>(std::find(group.begin(), group.end(), rank_) - group.begin());
    const uint64_t seq = g->second++;
    std::shared_ptr<Collective> c;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      auto key = std::make_pair(group, seq);
      std::shared_ptr<Collective>& slot = state_->collectives[key];
      if (slot == nullptr) {
        slot = std::make_shared<Collective>();
        slot->group = group;
        slot->seq = seq;
        slot->members.resize(group.size());
      }
      c = slot;
      Member& m = c->members[member];
      m.arrived = true;
      m.kind = kind;
      m.root = root;
      m.tensors = std::move(tensors);
      if (++c->arrived == static_cast<int>(group.size())) {
        absl::Status s = CheckCollective(*c);
        if (s.ok()) {
          s = TorchCall([&] { RunCollective(*c); });
          if (!s.ok()) s = Annotate(s, c->What(kind));
        }
        c->status = s;
        c->done = true;
        state_->collectives.erase(key);
      }
      state_->changed.notify_all();  // an arrival: those waiting check again
    }
    return Keep(Pending{nullptr, std::move(c), member});
  }

  absl::Status Blocking(Kind kind, int root, std::vector<at::Tensor> tensors, const std::vector<int>& group,
                        absl::Duration timeout) {
    ASSIGN_OR_RETURN(Handle h, PostCollective(kind, root, std::move(tensors), group));
    return Wait(h, timeout);
  }

  // Called with State::mu held by `lock`.
  absl::Status WaitP2P(std::unique_lock<std::mutex>& lock, P2POp& op, absl::Duration timeout) {
    const int peer = op.is_send ? op.dst : op.src;
    const LoopbackHub::State& st = *state_;
    state_->WaitFor(lock, timeout, [&op, &st, peer] { return op.done || st.left[peer]; });
    if (op.done) return op.status;
    // Abandoned: it will fail its partner rather than touch its tensor.
    op.abandoned = true;
    state_->changed.notify_all();
    const std::string what = absl::StrCat("rank ", rank_, ": ", op.is_send ? "send to" : "receive from", " rank ",
                                          peer, " (message ", op.index, ", tag ", op.tag, ")");
    if (state_->left[peer]) {
      return absl::UnavailableError(absl::StrCat(what, ": rank ", peer, " disconnected before it ",
                                                 op.is_send ? "received" : "sent", " it"));
    }
    return absl::DeadlineExceededError(
        absl::StrCat(what, " did not complete within ", absl::FormatDuration(timeout)));
  }

  // Called with State::mu held by `lock`.
  absl::Status WaitCollective(std::unique_lock<std::mutex>& lock, Collective& c, int member, absl::Duration timeout) {
    const LoopbackHub::State& st = *state_;
    // Fails early once it cannot succeed: a member gave up, or one that has not joined is gone.
    auto ready = [&c, &st] {
      if (c.done) return true;
      for (size_t i = 0; i < c.members.size(); ++i) {
        if (c.members[i].abandoned || (!c.members[i].arrived && st.left[c.group[i]])) return true;
      }
      return false;
    };
    state_->WaitFor(lock, timeout, ready);
    if (c.done) return c.status;
    const std::string what = absl::StrCat("rank ", rank_, ": ", c.What(c.members[member].kind));
    std::vector<int> missing, gone, gave_up;
    for (size_t i = 0; i < c.members.size(); ++i) {
      if (c.members[i].abandoned) gave_up.push_back(c.group[i]);
      if (c.members[i].arrived) continue;
      missing.push_back(c.group[i]);
      if (state_->left[c.group[i]]) gone.push_back(c.group[i]);
    }
    if (!gone.empty()) {
      return absl::UnavailableError(
          absl::StrCat(what, ": rank(s) [", absl::StrJoin(gone, ","), "] disconnected before joining it"));
    }
    if (!gave_up.empty()) {
      return absl::AbortedError(absl::StrCat(what, ": rank(s) [", absl::StrJoin(gave_up, ","),
                                             "] gave up on it (wait timed out, or disconnected)"));
    }
    // This rank gives up: the call can no longer succeed, and will not touch its tensors.
    c.members[member].abandoned = true;
    state_->changed.notify_all();
    return absl::DeadlineExceededError(absl::StrCat(what, " did not complete within ", absl::FormatDuration(timeout),
                                                    ": rank(s) [", absl::StrJoin(missing, ","),
                                                    "] have not joined it"));
  }

  // Called with State::mu held.
  static void Abandon(Pending& op) {
    if (op.p2p != nullptr && !op.p2p->done) op.p2p->abandoned = true;
    if (op.collective != nullptr && !op.collective->done) op.collective->members[op.member].abandoned = true;
  }

  Handle Keep(Pending op) {
    Handle h = next_++;
    pending_[h] = std::move(op);
    return h;
  }

  const std::shared_ptr<LoopbackHub::State> state_;
  const int rank_, world_;
  // This rank's own state, used by its thread only.
  std::map<std::vector<int>, uint64_t> groups_;  // created groups -> calls so far
  std::map<Handle, Pending> pending_;
  Handle next_ = 1;
};

}  // namespace

LoopbackHub::LoopbackHub(int world_size)
    : world_size_(world_size), state_(std::make_shared<State>(world_size)) {}

LoopbackHub::~LoopbackHub() = default;

absl::StatusOr<std::shared_ptr<LoopbackHub>> LoopbackHub::Create(int world_size) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("a loopback world of ", world_size, " ranks"));
  }
  return std::shared_ptr<LoopbackHub>(new LoopbackHub(world_size));
}

absl::StatusOr<std::unique_ptr<Transport>> LoopbackHub::Connect(int rank) {
  if (rank < 0 || rank >= world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is not in a world of size ", world_size_));
  }
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->connected[rank]) {
      return absl::FailedPreconditionError(absl::StrCat("rank ", rank, " is already connected to this hub"));
    }
    state_->connected[rank] = true;
  }
  return std::unique_ptr<Transport>(new LoopbackTransport(state_, rank, world_size_));
}

absl::Status RunLoopbackWorld(int world_size, const std::function<absl::Status(Transport&)>& body) {
  ASSIGN_OR_RETURN(std::shared_ptr<LoopbackHub> hub, LoopbackHub::Create(world_size));
  std::mutex mu;
  absl::Status first;
  std::vector<std::thread> threads;
  threads.reserve(world_size);
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<Transport>> transport = hub->Connect(r);
      absl::Status s = transport.status();
      if (s.ok()) {
        absl::Status returned;
        s = TorchCall([&] { returned = body(**transport); });
        if (s.ok()) s = returned;
      }
      if (!s.ok()) {
        const std::string prefix = absl::StrCat("rank ", r, ": ");
        if (!absl::StartsWith(s.message(), prefix)) s = Annotate(s, absl::StrCat("rank ", r));
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = s;
      }
      // Only now disconnect: the errors this causes on other ranks come after this one.
      if (transport.ok()) transport->reset();
    });
  }
  for (std::thread& t : threads) t.join();
  return first;
}

}  // namespace ppc::runtime
