#include "runtime/gloo_transport.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <utility>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/status_macros.h"
#include "runtime/torch_status.h"

namespace ppc::runtime {
namespace {

std::chrono::milliseconds Ms(absl::Duration d) { return std::chrono::milliseconds(absl::ToInt64Milliseconds(d)); }

// Gloo matches a receive to the send with the same tag (a non-negative int). Callers
// pass the channel's sequence number, which only grows: it is taken modulo 2^31, which
// stays unique among a channel's messages in flight.
int GlooTag(uint32_t tag) { return static_cast<int>(tag & 0x7fffffffu); }

// Gloo reads and writes host memory: a tensor on a CUDA device is staged through a
// pinned host buffer (gloo_transport.h). Pinned memory needs a CUDA build of LibTorch,
// which is the only kind that has CUDA tensors: nothing here runs for CPU tensors.
at::Tensor PinnedHostLike(const at::Tensor& t) {
  return at::empty(t.sizes(), at::TensorOptions().dtype(t.scalar_type()).device(at::kCPU).pinned_memory(true));
}

// A device tensor and the host buffer that stands in for it; after the operation the
// buffer's contents go back to the tensor.
struct CopyBack {
  at::Tensor device, host;
};

// What Gloo works on: `tensors` as they are when on the host, else pinned host copies
// of them (`copy_in`: with their current values; else only the buffers, for results).
// The copies to the host are synchronous: they wait for the device work up to here.
struct Staged {
  std::vector<at::Tensor> host;
  std::vector<CopyBack> copy_back;  // results to copy back to the device (`results`)
  std::vector<at::Tensor> keep;     // host buffers the operation reads or writes
};

Staged Stage(const std::vector<at::Tensor>& tensors, bool copy_in, bool results) {
  Staged s;
  s.host.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    if (!t.defined() || !t.is_cuda()) {
      s.host.push_back(t);
      continue;
    }
    at::Tensor host = PinnedHostLike(t);
    if (copy_in) host.copy_(t);
    s.host.push_back(host);
    s.keep.push_back(host);
    if (results) s.copy_back.push_back({t, host});
  }
  return s;
}

// The results' copies to the device, ordered on the device's current stream (later work
// on that stream sees them; the caching host allocator keeps each pinned buffer until its
// copy is done).
absl::Status CopyToDevice(const std::vector<CopyBack>& copies) {
  if (copies.empty()) return absl::OkStatus();
  return TorchCall([&] {
    for (const CopyBack& c : copies) c.device.copy_(c.host, /*non_blocking=*/true);
  });
}

class GlooTransport : public Transport {
 public:
  GlooTransport(c10::intrusive_ptr<c10d::Store> store, int rank, int world, std::string host)
      : store_(std::move(store)), rank_(rank), world_(world), host_(std::move(host)) {}

  absl::Status Init(absl::Duration timeout) {
    std::vector<int> all(world_);
    for (int r = 0; r < world_; ++r) all[r] = r;
    return CreateGroup(all, timeout);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  absl::Status CreateGroup(const std::vector<int>& ranks, absl::Duration timeout) override {
    if (groups_.count(ranks)) return absl::OkStatus();
    auto it = std::find(ranks.begin(), ranks.end(), rank_);
    if (it == ranks.end()) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " is not in group [", absl::StrJoin(ranks, ","), "]"));
    }
    int group_rank = static_cast<int>(it - ranks.begin());
    return TorchCall([&] {
      auto opts = c10d::ProcessGroupGloo::Options::create(Ms(timeout));
      opts->devices.push_back(host_ == "127.0.0.1" || host_ == "localhost"
                                  ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                  : c10d::ProcessGroupGloo::createDefaultDevice());
      auto prefix = c10::make_intrusive<c10d::PrefixStore>(absl::StrCat("group/", absl::StrJoin(ranks, ",")), store_);
      groups_[ranks] = c10::make_intrusive<c10d::ProcessGroupGloo>(prefix, group_rank, static_cast<int>(ranks.size()), opts);
    });
  }

  absl::StatusOr<Handle> PostSend(const at::Tensor& tensor, int peer, uint32_t tag) override {
    const std::string what = absl::StrCat("rank ", rank_, ": send to rank ", peer, " (tag ", tag, ")");
    RETURN_IF_ERROR(CheckPeer(peer));
    Staged staged;
    RETURN_IF_ERROR(Annotate(TorchCall([&] { staged = Stage({tensor}, /*copy_in=*/true, /*results=*/false); }),
                             absl::StrCat(what, ": staging through host memory")));
    c10::intrusive_ptr<c10d::Work> work;
    RETURN_IF_ERROR(TorchCall([&] { work = World()->send(staged.host, peer, GlooTag(tag)); }));
    return Keep(std::move(work), what, std::move(staged));
  }

  absl::StatusOr<Handle> PostRecv(at::Tensor& tensor, int peer, uint32_t tag) override {
    const std::string what = absl::StrCat("rank ", rank_, ": receive from rank ", peer, " (tag ", tag, ")");
    RETURN_IF_ERROR(CheckPeer(peer));
    Staged staged;
    RETURN_IF_ERROR(Annotate(TorchCall([&] { staged = Stage({tensor}, /*copy_in=*/false, /*results=*/true); }),
                             absl::StrCat(what, ": staging through host memory")));
    c10::intrusive_ptr<c10d::Work> work;
    RETURN_IF_ERROR(TorchCall([&] { work = World()->recv(staged.host, peer, GlooTag(tag)); }));
    return Keep(std::move(work), what, std::move(staged));
  }

  absl::Status Wait(Handle handle, absl::Duration timeout) override {
    auto it = pending_.find(handle);
    if (it == pending_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, ": unknown transport handle ", handle));
    }
    Pending op = std::move(it->second);
    pending_.erase(it);
    bool completed = true;
    absl::Status s = TorchCall([&] { completed = op.work->wait(Ms(timeout)); });
    if (s.ok() && !completed) s = absl::AbortedError("aborted");
    if (s.ok()) s = CopyToDevice(op.staged.copy_back);
    if (s.ok()) return s;
    if (absl::IsDeadlineExceeded(s)) {
      s = absl::DeadlineExceededError(
          absl::StrCat("did not complete within ", absl::FormatDuration(timeout), " (", s.message(), ")"));
    }
    return Annotate(s, op.what);
  }

  absl::StatusOr<Handle> PostAllReduceSum(std::vector<at::Tensor>& tensors, const std::vector<int>& group) override {
    ASSIGN_OR_RETURN(auto pg, Group(group));
    Staged staged;
    RETURN_IF_ERROR(Named("all-reduce", group, TorchCall([&] { staged = Stage(tensors, true, true); })));
    c10::intrusive_ptr<c10d::Work> work;
    RETURN_IF_ERROR(Named("all-reduce", group, TorchCall([&] { work = pg->allreduce(staged.host); })));
    return Keep(std::move(work),
                absl::StrCat("rank ", rank_, ": all-reduce over ranks [", absl::StrJoin(group, ","),
                             "] (one of them died or stalled)"),
                std::move(staged));
  }

  absl::Status AllReduceSum(std::vector<at::Tensor>& tensors, const std::vector<int>& group,
                            absl::Duration timeout) override {
    ASSIGN_OR_RETURN(auto pg, Group(group));
    Staged staged;
    RETURN_IF_ERROR(Named("all-reduce", group, TorchCall([&] { staged = Stage(tensors, true, true); })));
    RETURN_IF_ERROR(Named("all-reduce", group, TorchCall([&] { pg->allreduce(staged.host)->wait(Ms(timeout)); })));
    return Named("all-reduce", group, CopyToDevice(staged.copy_back));
  }

  absl::Status AllGather(const at::Tensor& input, at::Tensor& output, const std::vector<int>& group,
                         absl::Duration timeout) override {
    ASSIGN_OR_RETURN(auto pg, Group(group));
    const int64_t n = input.numel();
    if (input.dim() != 1 || output.dim() != 1 || output.numel() != n * static_cast<int64_t>(group.size())) {
      return absl::InternalError(absl::StrCat("all-gather of ", n, " values into ", output.numel(), " over ",
                                              group.size(), " ranks"));
    }
    Staged in, out;
    RETURN_IF_ERROR(Named("all-gather", group, TorchCall([&] {
                            in = Stage({input}, true, false);
                            out = Stage({output}, false, true);
                          })));
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (size_t r = 0; r < group.size(); ++r) outputs[0].push_back(out.host[0].narrow(0, int64_t(r) * n, n));
    std::vector<at::Tensor> inputs{in.host[0].contiguous()};
    RETURN_IF_ERROR(
        Named("all-gather", group, TorchCall([&] { pg->allgather(outputs, inputs)->wait(Ms(timeout)); })));
    return Named("all-gather", group, CopyToDevice(out.copy_back));
  }

  absl::Status Gather(const at::Tensor& input, at::Tensor& output, int root, const std::vector<int>& group,
                      absl::Duration timeout) override {
    ASSIGN_OR_RETURN(auto pg, Group(group));
    auto it = std::find(group.begin(), group.end(), root);
    if (it == group.end()) return absl::InvalidArgumentError(absl::StrCat("gather root ", root, " not in group"));
    const int64_t n = input.numel();
    std::vector<std::vector<at::Tensor>> outputs;
    Staged in, out;
    RETURN_IF_ERROR(Named("gather", group, TorchCall([&] { in = Stage({input}, true, false); })));
    if (rank_ == root) {
      if (input.dim() != 1 || output.dim() != 1 || output.numel() != n * static_cast<int64_t>(group.size())) {
        return absl::InternalError(absl::StrCat("gather of ", n, " values into ", output.numel(), " over ",
                                                group.size(), " ranks"));
      }
      RETURN_IF_ERROR(Named("gather", group, TorchCall([&] { out = Stage({output}, false, true); })));
      outputs.resize(1);
      for (size_t r = 0; r < group.size(); ++r) outputs[0].push_back(out.host[0].narrow(0, int64_t(r) * n, n));
    }
    std::vector<at::Tensor> inputs{in.host[0].contiguous()};
    c10d::GatherOptions o;
    o.rootRank = static_cast<int>(it - group.begin());
    RETURN_IF_ERROR(Named("gather", group, TorchCall([&] { pg->gather(outputs, inputs, o)->wait(Ms(timeout)); })));
    return Named("gather", group, CopyToDevice(out.copy_back));
  }

  absl::Status Broadcast(at::Tensor& tensor, int root, const std::vector<int>& group, absl::Duration timeout) override {
    ASSIGN_OR_RETURN(auto pg, Group(group));
    auto it = std::find(group.begin(), group.end(), root);
    if (it == group.end()) return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " not in group"));
    c10d::BroadcastOptions o;
    o.rootRank = static_cast<int>(it - group.begin());
    // Only the root's values are sent; every member's buffer receives.
    Staged staged;
    RETURN_IF_ERROR(Named("broadcast", group, TorchCall([&] { staged = Stage({tensor}, rank_ == root, true); })));
    RETURN_IF_ERROR(Named("broadcast", group, TorchCall([&] { pg->broadcast(staged.host, o)->wait(Ms(timeout)); })));
    return Named("broadcast", group, CopyToDevice(staged.copy_back));
  }

  absl::Status Barrier(const std::vector<int>& group, absl::Duration timeout) override {
    ASSIGN_OR_RETURN(auto pg, Group(group));
    // Gloo's barrier ignores per-call timeouts; a one-element all-reduce honours them.
    std::vector<at::Tensor> t{at::zeros({1})};
    return Named("barrier", group, TorchCall([&] { pg->allreduce(t)->wait(Ms(timeout)); }));
  }

 private:
  // A failed collective names its group: one of those ranks died or stalled.
  static absl::Status Named(const char* op, const std::vector<int>& group, absl::Status s) {
    if (s.ok()) return s;
    return Annotate(s, absl::StrCat(op, " over ranks [", absl::StrJoin(group, ","), "] (one of them died or stalled)"));
  }

  c10d::ProcessGroupGloo* World() {
    std::vector<int> all(world_);
    for (int r = 0; r < world_; ++r) all[r] = r;
    return groups_.at(all).get();
  }

  absl::StatusOr<c10d::ProcessGroupGloo*> Group(const std::vector<int>& ranks) {
    auto it = groups_.find(ranks);
    if (it == groups_.end()) {
      return absl::InternalError(absl::StrCat("group [", absl::StrJoin(ranks, ","), "] was not created at load"));
    }
    return it->second.get();
  }

  absl::Status CheckPeer(int peer) const {
    if (peer < 0 || peer >= world_ || peer == rank_) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank_, ": peer rank ", peer, " is not another rank of a world of ", world_));
    }
    return absl::OkStatus();
  }

  // A posted operation and what it is, for Wait's errors; for tensors on a device, the
  // host buffers it works on.
  struct Pending {
    c10::intrusive_ptr<c10d::Work> work;
    std::string what;
    Staged staged;
  };

  Handle Keep(c10::intrusive_ptr<c10d::Work> work, std::string what, Staged staged = {}) {
    Handle h = next_++;
    pending_[h] = Pending{std::move(work), std::move(what), std::move(staged)};
    return h;
  }

  c10::intrusive_ptr<c10d::Store> store_;
  int rank_, world_;
  std::string host_;
  // Keyed by sorted global ranks; [0, world) is the world group, created by Init.
  std::map<std::vector<int>, c10::intrusive_ptr<c10d::ProcessGroupGloo>> groups_;
  std::map<Handle, Pending> pending_;
  Handle next_ = 1;
};

class TcpStoreServer : public StoreServer {
 public:
  explicit TcpStoreServer(c10::intrusive_ptr<c10d::TCPStore> store) : store_(std::move(store)) {}
  int port() const override { return store_->getPort(); }

 private:
  c10::intrusive_ptr<c10d::TCPStore> store_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StoreServer>> StoreServer::Start(int world_size, absl::Duration timeout) {
  c10::intrusive_ptr<c10d::TCPStore> store;
  RETURN_IF_ERROR(TorchCall([&] {
    c10d::TCPStoreOptions o;
    o.port = 0;
    o.isServer = true;
    o.numWorkers = c10::nullopt;
    o.waitWorkers = false;
    o.timeout = Ms(timeout);
    store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", o);
  }));
  return std::unique_ptr<StoreServer>(new TcpStoreServer(std::move(store)));
}

namespace {

// The rendezvous: connects to (or hosts) the TCPStore, then every rank announces itself
// and checks that all ranks arrived with the same plan.
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> Join(const RendezvousOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " is not in a world of size ", options.world_size));
  }
  c10::intrusive_ptr<c10d::Store> store;
  absl::Status s = TorchCall([&] {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(options.master_port);
    o.isServer = options.rank == 0 && options.rank0_hosts_store;
    o.numWorkers = c10::nullopt;
    o.waitWorkers = false;
    o.timeout = Ms(options.timeout);
    store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, o);
  });
  if (!s.ok()) {
    return Annotate(s, absl::StrCat("rank ", options.rank, ": rendezvous at ", options.master_addr, ":",
                                    options.master_port));
  }
  // Every rank announces itself, then waits for all the others: a rank that never comes
  // (dead, or not started) is named, instead of a bare timeout deep in Gloo.
  if (options.world_size > 1) {
    const std::string mine = absl::StrCat("ppc/joined/", options.rank);
    const std::vector<uint8_t> fingerprint(options.plan_fingerprint.begin(), options.plan_fingerprint.end());
    absl::Status joined = TorchCall([&] { store->set(mine, fingerprint); });
    std::vector<std::string> keys;
    for (int r = 0; r < options.world_size; ++r) keys.push_back(absl::StrCat("ppc/joined/", r));
    if (joined.ok()) joined = TorchCall([&] { store->wait(keys, Ms(options.timeout)); });
    if (!joined.ok()) {
      std::vector<int> missing;
      for (int r = 0; r < options.world_size; ++r) {
        bool there = false;
        if (TorchCall([&] { there = store->check({keys[r]}); }).ok() && !there) missing.push_back(r);
      }
      return absl::DeadlineExceededError(absl::StrCat(
          "rank ", options.rank, ": rendezvous at ", options.master_addr, ":", options.master_port, ": rank(s) [",
          absl::StrJoin(missing, ", "), "] of ", options.world_size, " did not arrive within ",
          absl::FormatDuration(options.timeout), " (dead, or never started)"));
    }
    // Same plan everywhere, or nobody starts: different programs would exchange
    // mismatched messages (an abort deep in Gloo, or a hang).
    std::vector<std::string> others;
    for (int r = 0; r < options.world_size; ++r) {
      std::vector<uint8_t> theirs;
      absl::Status got = TorchCall([&] { theirs = store->get(keys[r]); });
      if (!got.ok()) return Annotate(got, absl::StrCat("rank ", options.rank, ": rendezvous: reading rank ", r));
      if (theirs != fingerprint && others.size() < 8) {
        others.push_back(absl::StrCat("rank ", r, " runs ", theirs.empty() ? "?" : std::string(theirs.begin(), theirs.end())));
      }
    }
    // Everyone compares before anyone leaves: the store may live in rank 0, and a rank
    // that left early would take it away from the others' comparison.
    const std::string compared = absl::StrCat("ppc/compared/", options.rank);
    absl::Status done = TorchCall([&] { store->set(compared, std::vector<uint8_t>{1}); });
    std::vector<std::string> compared_keys;
    for (int r = 0; r < options.world_size; ++r) compared_keys.push_back(absl::StrCat("ppc/compared/", r));
    if (done.ok()) done = TorchCall([&] { store->wait(compared_keys, Ms(options.timeout)); });
    if (!done.ok()) return Annotate(done, absl::StrCat("rank ", options.rank, ": rendezvous: comparing plans"));
    if (!others.empty() && options.rank == 0 && options.rank0_hosts_store) {
      // This rank hosts the store: it stays until every rank has had its answer.
      (void)TorchCall([&] { store->set(absl::StrCat("ppc/left/", options.rank), std::vector<uint8_t>{1}); });
      std::vector<std::string> left_keys;
      for (int r = 1; r < options.world_size; ++r) left_keys.push_back(absl::StrCat("ppc/left/", r));
      (void)TorchCall([&] { store->wait(left_keys, Ms(std::min(options.timeout, absl::Seconds(10)))); });
    } else if (!others.empty()) {
      (void)TorchCall([&] { store->set(absl::StrCat("ppc/left/", options.rank), std::vector<uint8_t>{1}); });
    }
    if (!others.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "rank ", options.rank, ": rendezvous: the ranks run different plans (this one: fingerprint ",
          options.plan_fingerprint, "; ", absl::StrJoin(others, ", "), "); start every rank with the same plan file"));
    }
  }
  return store;
}

class C10dRendezvousStore : public RendezvousStore {
 public:
  explicit C10dRendezvousStore(c10::intrusive_ptr<c10d::Store> store) : store_(std::move(store)) {}

  absl::Status Set(const std::string& key, const std::string& value) override {
    return TorchCall([&] { store_->set(key, std::vector<uint8_t>(value.begin(), value.end())); });
  }

  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override {
    std::vector<uint8_t> value;
    absl::Status s = TorchCall([&] {
      store_->wait({key}, Ms(timeout));
      value = store_->get(key);
    });
    if (absl::IsDeadlineExceeded(s)) {
      return absl::DeadlineExceededError(absl::StrCat("rendezvous key '", key, "' was not set within ",
                                                      absl::FormatDuration(timeout), " (", s.message(), ")"));
    }
    if (!s.ok()) return Annotate(s, absl::StrCat("rendezvous key '", key, "'"));
    return std::string(value.begin(), value.end());
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RendezvousStore>> JoinRendezvous(const RendezvousOptions& options) {
  ASSIGN_OR_RETURN(c10::intrusive_ptr<c10d::Store> store, Join(options));
  return std::unique_ptr<RendezvousStore>(new C10dRendezvousStore(std::move(store)));
}

absl::StatusOr<std::unique_ptr<Transport>> CreateGlooTransport(const RendezvousOptions& options) {
  ASSIGN_OR_RETURN(c10::intrusive_ptr<c10d::Store> store, Join(options));
  auto t = std::make_unique<GlooTransport>(store, options.rank, options.world_size, options.master_addr);
  absl::Status init = t->Init(options.timeout);
  if (!init.ok()) {
    return Annotate(init, absl::StrCat("rank ", options.rank, ": connecting ", options.world_size, " ranks"));
  }
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace ppc::runtime
