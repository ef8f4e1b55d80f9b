// The NCCL transport (nccl_transport.h). Built only with CUDA: a CUDA LibTorch and NCCL.
//
// Streams and events, per operation:
//
//   compute stream (current)   ... work ... [ready] ............. (Wait) wait(done) ...
//                                              |                            ^
//   communicator's stream              wait(ready) [NCCL op] [done] --------+
//
// The host never blocks on a peer here, except where the result must be on the host
// (CPU tensors, Barrier) and while creating communicators; the watchdog bounds the rest.
//
// Locks. mu_ guards the operation tables, the event pool and error_; nccl_mu_ serializes
// the NCCL calls that touch a communicator (issuing, polling, aborting), since
// ncclCommAbort must not run while another thread uses the communicator. Order: nccl_mu_
// before mu_. error_ is set before any communicator is aborted, and every public call
// checks it first, so a caller never waits behind an abort.
#include "runtime/nccl_transport.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "ir/status_macros.h"
#include "runtime/torch_status.h"

#if !defined(NCCL_MAJOR) || NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "the NCCL transport needs NCCL 2.14 or newer (non-blocking communicators, ncclCommInitRankConfig)"
#endif

namespace ppc::runtime {
namespace {

using Clock = std::chrono::steady_clock;

Clock::duration ToClock(absl::Duration d) { return std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(d)); }

std::string NcclText(ncclResult_t r) {
  const char* last = ncclGetLastError(nullptr);
  return absl::StrCat(ncclGetErrorString(r), last != nullptr && *last != '\0' ? absl::StrCat(": ", last) : "");
}

std::string CudaText(cudaError_t e) { return absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)); }

absl::Status CudaStatus(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": CUDA error ", CudaText(e)));
}

// An NCCL failure: a wrong call is a bug (Internal); anything else (a peer gone, the
// network, an abort) ends the communicator (Aborted).
absl::Status NcclStatus(ncclResult_t r, const std::string& what) {
  if (r == ncclSuccess || r == ncclInProgress) return absl::OkStatus();
  std::string message = absl::StrCat(what, ": NCCL error: ", NcclText(r));
  if (r == ncclInvalidArgument || r == ncclInvalidUsage) return absl::InternalError(message);
  return absl::AbortedError(message);
}

absl::StatusOr<ncclDataType_t> NcclType(at::ScalarType type, bool reduce, const std::string& what) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kChar: return ncclInt8;
    case at::kByte: return ncclUint8;
    case at::kBool:
      if (!reduce) return ncclUint8;
      break;
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": NCCL cannot ", reduce ? "sum" : "transfer", " tensors of type ", c10::toString(type)));
}

// Runs `body` (some NCCL calls) inside ncclGroupStart/ncclGroupEnd; the group is closed
// whatever `body` returns. Returns the first error, else ncclGroupEnd's result
// (ncclInProgress while a non-blocking communicator is still connecting).
ncclResult_t Grouped(const std::function<ncclResult_t()>& body) {
  ncclResult_t r = ncclGroupStart();
  if (r != ncclSuccess) return r;
  ncclResult_t first = body();
  ncclResult_t end = ncclGroupEnd();
  return first != ncclSuccess && first != ncclInProgress ? first : end;
}

// Makes `device` current for a scope (what LibTorch and NCCL use); never throws.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) (void)cudaSetDevice(device);
  }
  ~DeviceGuard() {
    int now = -1;
    if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// The first error of a sequence of NCCL calls inside a group.
void Keep(ncclResult_t& first, ncclResult_t r) {
  if ((first == ncclSuccess || first == ncclInProgress) && r != ncclSuccess) first = r;
}

// This process's communication streams, never destroyed: the caching allocator records
// an event on every stream a tensor was used on when the tensor is freed, which can be
// after the transport is gone. A destroyed transport's streams go to the next one created
// on the device. They do not block the legacy default stream, and run at the highest
// priority so that communication is not starved by the compute queued before it.
class StreamPool {
 public:
  static absl::StatusOr<cudaStream_t> Acquire(int device) {
    StreamPool& p = Get();
    {
      std::lock_guard<std::mutex> l(p.mu_);
      auto& free = p.free_[device];
      if (!free.empty()) {
        cudaStream_t s = free.back();
        free.pop_back();
        return s;
      }
    }
    int least = 0, greatest = 0;
    RETURN_IF_ERROR(CudaStatus(cudaDeviceGetStreamPriorityRange(&least, &greatest), "stream priorities"));
    cudaStream_t s = nullptr;
    RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, greatest),
                               "creating a communication stream"));
    return s;
  }

  static void Release(int device, cudaStream_t s) {
    StreamPool& p = Get();
    std::lock_guard<std::mutex> l(p.mu_);
    p.free_[device].push_back(s);
  }

 private:
  static StreamPool& Get() {
    static StreamPool* pool = new StreamPool;  // never destroyed (see above)
    return *pool;
  }
  std::mutex mu_;
  std::map<int, std::vector<cudaStream_t>> free_;
};

// A communicator and its stream.
struct Comm {
  ncclComm_t comm = nullptr;  // null once aborted or destroyed (guarded by nccl_mu_)
  cudaStream_t stream = nullptr;
  std::vector<int> ranks;  // global ranks, in communicator rank order
  std::string name;        // "the channel rank 0 -> rank 1", "ranks [0,1,2]"
  uint64_t collectives = 0;  // issued so far (main thread), for messages

  int Index(int global) const {
    auto it = std::find(ranks.begin(), ranks.end(), global);
    return it == ranks.end() ? -1 : static_cast<int>(it - ranks.begin());
  }
};

// One posted operation. Once it is issued, the watchdog reads and writes the fields from
// `issued` on, and clears `keep`, under mu_.
struct Op {
  Transport::Handle handle = 0;
  Comm* comm = nullptr;
  std::string what;  // "rank 0: receive from rank 1 (tag 3)"
  std::string hint;  // who to suspect when it does not complete
  // Device buffers the operation reads or writes: kept until it completes.
  std::vector<at::Tensor> keep;
  // Results to copy to the caller's tensors at Wait: (caller's tensor, device buffer),
  // for callers' tensors on the host or not contiguous.
  std::vector<std::pair<at::Tensor, at::Tensor>> copy_back;
  bool host_wait = false;  // Wait blocks the host until completion (bounded)
  cudaEvent_t ready = nullptr;  // on the compute stream, at post
  cudaEvent_t done = nullptr;   // on the communicator's stream, after the operation
  // Self channel: the operation waits for its partner before anything is issued.
  bool self = false, is_send = false;
  int64_t numel = 0;
  at::ScalarType dtype = at::kFloat;
  ncclDataType_t nccl_type = ncclFloat32;

  bool issued = false;     // in the watchdog's list
  bool complete = false;   // its `done` event has completed
  bool waited = false;     // Wait was called: its timeout runs
  bool wait_done = false;  // Wait no longer uses the events
  bool started = false;    // the work before its post is done: it could start
  Clock::time_point waited_at, started_at;
  Clock::duration timeout{};
  absl::Duration timeout_text;
};

class NcclTransport : public Transport {
 public:
  NcclTransport(std::unique_ptr<RendezvousStore> store, int rank, int world, int device, absl::Duration timeout)
      : store_(std::move(store)), rank_(rank), world_(world), device_(device), timeout_(timeout) {}

  ~NcclTransport() override;

  absl::Status Init();

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  absl::Status CreateGroup(const std::vector<int>& ranks, absl::Duration timeout) override;
  absl::StatusOr<Handle> PostSend(const at::Tensor& tensor, int peer, uint32_t tag) override;
  absl::StatusOr<Handle> PostRecv(at::Tensor& tensor, int peer, uint32_t tag) override;
  absl::StatusOr<Handle> PostAllReduceSum(std::vector<at::Tensor>& tensors, const std::vector<int>& group) override;
  absl::Status Wait(Handle handle, absl::Duration timeout) override;
  absl::Status AllGather(const at::Tensor& input, at::Tensor& output, const std::vector<int>& group,
                         absl::Duration timeout) override;
  absl::Status Gather(const at::Tensor& input, at::Tensor& output, int root, const std::vector<int>& group,
                      absl::Duration timeout) override;
  absl::Status Broadcast(at::Tensor& tensor, int root, const std::vector<int>& group, absl::Duration timeout) override;
  absl::Status Barrier(const std::vector<int>& group, absl::Duration timeout) override;

 private:
  // A tensor as the device sees it: the caller's own when it is on this device and
  // contiguous, else a contiguous device copy (copied back at Wait when `result`).
  struct Buffer {
    at::Tensor device;
    bool staged = false;
  };
  absl::StatusOr<Buffer> OnDevice(const at::Tensor& t, bool copy_in, const std::string& what);
  // Adds `t`'s buffer to `op`: kept alive, and copied back when a staged result.
  void Use(Op& op, const at::Tensor& caller, const Buffer& b, bool result);

  // The current (compute) stream of the device.
  absl::StatusOr<cudaStream_t> Current() const {
    cudaStream_t s = nullptr;
    RETURN_IF_ERROR(
        TorchCall([&] { s = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream(); }));
    return s;
  }

  absl::Status Check() {
    std::lock_guard<std::mutex> l(mu_);
    return error_;
  }
  // Records the first error, aborts every communicator, returns the first error.
  absl::Status Fail(absl::Status s);
  // Records the first error without aborting (nothing is in flight that could hang).
  absl::Status SetError(absl::Status s) {
    std::lock_guard<std::mutex> l(mu_);
    if (error_.ok()) error_ = std::move(s);
    return error_;
  }
  void AbortAll();

  absl::StatusOr<cudaEvent_t> NewEvent();
  void ReleaseEvents(Op& op);  // mu_ held
  void MaybeRelease(Op& op) {  // mu_ held
    if (op.complete && op.wait_done) ReleaseEvents(op);
  }

  // Communicator creation: every spec's communicator initialized concurrently
  // (non-blocking), bounded by `deadline`.
  struct InitSpec {
    Comm* comm;
    ncclUniqueId id;
    int nranks, rank;
  };
  absl::Status InitComms(std::vector<InitSpec>& specs, Clock::time_point deadline, const std::string& what);
  // Polls until no communicator of `comms` is still busy with a non-blocking call.
  absl::Status PollReady(const std::vector<Comm*>& comms, Clock::time_point deadline, const std::string& what);
  // Waits on the host for events (warm-up), bounded by `deadline`.
  absl::Status HostWaitEvents(const std::vector<std::pair<cudaEvent_t, Comm*>>& events, Clock::time_point deadline,
                              const std::string& what);
  absl::StatusOr<Comm*> NewComm(std::vector<int> ranks, std::string name);
  absl::Status WarmUpPairs(Clock::time_point deadline);
  absl::Status WarmUpCollective(Comm* comm, Clock::time_point deadline, const std::string& what);
  absl::StatusOr<ncclUniqueId> ExchangeId(const std::string& key, bool mine, absl::Duration timeout);
  absl::StatusOr<Comm*> SelfComm();

  absl::StatusOr<Comm*> GroupComm(const std::vector<int>& group);
  absl::Status CheckPeer(int peer) const;

  // Issues `launch` (NCCL calls on the stream it is given) on op->comm's stream after
  // the work issued so far on the current stream, and registers the operation.
  absl::StatusOr<Handle> Issue(std::shared_ptr<Op> op, const std::function<ncclResult_t(cudaStream_t)>& launch);
  absl::Status Launch(Comm* comm, const std::function<ncclResult_t(cudaStream_t)>& launch, const std::string& what);
  absl::Status Finish(Op& op);  // records `done`, tells the allocator
  // Tells the caching allocator that `t` is used on `stream`: its memory is not reused
  // before the work issued there so far is done, even when `t` is freed before.
  absl::Status UsedOn(const at::Tensor& t, cudaStream_t stream);
  Handle Register(std::shared_ptr<Op> op);
  absl::StatusOr<Handle> PostSelf(std::shared_ptr<Op> op);
  absl::Status HostWait(Op& op);

  void Watchdog();

  std::unique_ptr<RendezvousStore> store_;
  const int rank_, world_, device_;
  const absl::Duration timeout_;  // the rendezvous's: creation, and posts still connecting
  bool device_ok_ = false;        // device_ exists (Init checked it)

  std::vector<std::unique_ptr<Comm>> comms_;  // all, for aborting; appended by the main thread under mu_
  Comm* world_comm_ = nullptr;
  Comm* self_comm_ = nullptr;
  std::map<int, Comm*> send_comms_, recv_comms_;  // by peer: this rank -> peer, peer -> this rank
  std::map<std::vector<int>, Comm*> groups_;

  // Main thread only.
  std::map<Handle, std::shared_ptr<Op>> pending_;  // posted, not yet waited
  std::deque<std::shared_ptr<Op>> self_sends_, self_recvs_;  // self channel, unmatched
  Handle next_ = 1;

  std::mutex nccl_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  absl::Status error_;                           // the first failure: every later call returns it
  std::list<std::shared_ptr<Op>> inflight_;      // issued, not yet complete
  std::vector<cudaEvent_t> free_events_;
  bool stop_ = false;
  std::thread watchdog_;
};

absl::Status NcclTransport::Fail(absl::Status s) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (error_.ok()) error_ = std::move(s);
    s = error_;
  }
  AbortAll();
  return s;
}

void NcclTransport::AbortAll() {
  std::vector<Comm*> comms;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& c : comms_) comms.push_back(c.get());
  }
  std::lock_guard<std::mutex> l(nccl_mu_);
  for (Comm* c : comms) {
    if (c->comm == nullptr) continue;
    // Makes the communicator's kernels and proxy give up: what is queued behind them on
    // the streams (and the compute stream waiting on them) then drains.
    (void)ncclCommAbort(c->comm);
    c->comm = nullptr;
  }
}

absl::StatusOr<cudaEvent_t> NcclTransport::NewEvent() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
  }
  cudaEvent_t e = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "creating a CUDA event"));
  return e;
}

void NcclTransport::ReleaseEvents(Op& op) {
  if (op.ready != nullptr) free_events_.push_back(op.ready);
  if (op.done != nullptr) free_events_.push_back(op.done);
  op.ready = op.done = nullptr;
}

absl::StatusOr<NcclTransport::Buffer> NcclTransport::OnDevice(const at::Tensor& t, bool copy_in,
                                                              const std::string& what) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(what, ": undefined tensor"));
  if (t.is_cuda()) {
    if (t.get_device() != device_) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": the tensor is on cuda:", t.get_device(),
                                                     " but this rank's NCCL transport runs on cuda:", device_));
    }
    if (t.is_contiguous()) return Buffer{t, false};
  } else if (!t.device().is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the NCCL transport takes CUDA or CPU tensors, not ", t.device().str()));
  }
  Buffer b;
  b.staged = true;
  RETURN_IF_ERROR(Annotate(TorchCall([&] {
                             b.device = at::empty(t.sizes(), t.options().device(at::Device(
                                                                 at::kCUDA, static_cast<c10::DeviceIndex>(device_))));
                             if (copy_in) b.device.copy_(t);
                           }),
                           absl::StrCat(what, ": staging on cuda:", device_)));
  return b;
}

void NcclTransport::Use(Op& op, const at::Tensor& caller, const Buffer& b, bool result) {
  op.keep.push_back(b.device);
  if (!result) return;  // an input on the host was copied synchronously when posted
  if (!caller.is_cuda()) op.host_wait = true;
  if (b.staged) op.copy_back.emplace_back(caller, b.device);
}

absl::Status NcclTransport::CheckPeer(int peer) const {
  if (peer < 0 || peer >= world_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, ": peer rank ", peer, " is not a rank of a world of ", world_));
  }
  return absl::OkStatus();
}

absl::StatusOr<Comm*> NcclTransport::NewComm(std::vector<int> ranks, std::string name) {
  auto c = std::make_unique<Comm>();
  c->ranks = std::move(ranks);
  c->name = std::move(name);
  ASSIGN_OR_RETURN(c->stream, StreamPool::Acquire(device_));
  Comm* raw = c.get();
  std::lock_guard<std::mutex> l(mu_);
  comms_.push_back(std::move(c));
  return raw;
}

// The unique id of a communicator: made by this rank (`mine`) and published under `key`
// (unless the key is empty: a communicator of this rank alone), or read from there.
absl::StatusOr<ncclUniqueId> NcclTransport::ExchangeId(const std::string& key, bool mine, absl::Duration timeout) {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (mine) {
    RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), absl::StrCat("rank ", rank_, ": ncclGetUniqueId")));
    if (!key.empty()) {
      RETURN_IF_ERROR(Annotate(store_->Set(key, std::string(reinterpret_cast<const char*>(&id), sizeof(id))),
                               absl::StrCat("rank ", rank_, ": publishing NCCL id")));
    }
    return id;
  }
  absl::StatusOr<std::string> got = store_->Get(key, timeout);
  if (!got.ok()) return Annotate(got.status(), absl::StrCat("rank ", rank_, ": waiting for an NCCL id"));
  const std::string& bytes = *got;
  if (bytes.size() != sizeof(id)) {
    return absl::InternalError(absl::StrCat("rank ", rank_, ": rendezvous key '", key, "' holds ", bytes.size(),
                                            " bytes, not an NCCL unique id (", sizeof(id), " bytes)"));
  }
  std::memcpy(&id, bytes.data(), sizeof(id));
  return id;
}

// Communicators are created non-blocking (ncclConfig_t::blocking = 0): the calls return
// at once and the initialization runs in NCCL's threads, which this thread polls with
// ncclCommGetAsyncError. That bounds creation by `deadline` (a blocking
// ncclCommInitRank waits for every member forever, and cannot be interrupted: its
// communicator handle only exists once it returns), and lets all of this rank's
// communicators connect concurrently, in one NCCL group, so that no order of creation
// across ranks can deadlock. On a timeout or error the communicators are aborted
// (ncclCommAbort also cancels a pending initialization).
absl::Status NcclTransport::InitComms(std::vector<InitSpec>& specs, Clock::time_point deadline,
                                      const std::string& what) {
  if (specs.empty()) return absl::OkStatus();
  std::vector<ncclConfig_t> configs(specs.size());
  std::vector<Comm*> comms;
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> l(nccl_mu_);
    r = Grouped([&] {
      ncclResult_t first = ncclSuccess;
      for (size_t i = 0; i < specs.size(); ++i) {
        ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
        config.blocking = 0;
        configs[i] = config;
        Keep(first, ncclCommInitRankConfig(&specs[i].comm->comm, specs[i].nranks, specs[i].id, specs[i].rank,
                                           &configs[i]));
      }
      return first;
    });
  }
  for (auto& s : specs) comms.push_back(s.comm);
  if (r != ncclSuccess && r != ncclInProgress) return Fail(NcclStatus(r, what));
  absl::Status s = PollReady(comms, deadline, what);
  if (!s.ok()) return Fail(s);
  return absl::OkStatus();
}

absl::Status NcclTransport::PollReady(const std::vector<Comm*>& comms, Clock::time_point deadline,
                                      const std::string& what) {
  for (int spins = 0;; ++spins) {
    std::vector<std::string> busy;
    {
      std::lock_guard<std::mutex> l(nccl_mu_);
      for (Comm* c : comms) {
        if (c->comm == nullptr) return absl::AbortedError(absl::StrCat(what, ": ", c->name, " was aborted"));
        ncclResult_t state = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(c->comm, &state);
        if (r != ncclSuccess) return NcclStatus(r, absl::StrCat(what, ": ", c->name));
        if (state == ncclInProgress) {
          busy.push_back(c->name);
        } else if (state != ncclSuccess) {
          return NcclStatus(state, absl::StrCat(what, ": ", c->name));
        }
      }
    }
    if (busy.empty()) return absl::OkStatus();
    if (Clock::now() > deadline) {
      if (busy.size() > 8) busy.resize(8);
      return absl::DeadlineExceededError(absl::StrCat(what, ": ", absl::StrJoin(busy, ", "),
                                                      " did not connect in time (a peer dead, stalled, or not "
                                                      "creating the same communicators)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(spins < 100 ? 50 : 1000));
  }
}

absl::Status NcclTransport::HostWaitEvents(const std::vector<std::pair<cudaEvent_t, Comm*>>& events,
                                           Clock::time_point deadline, const std::string& what) {
  for (int spins = 0;; ++spins) {
    std::vector<std::string> busy;
    for (const auto& [event, comm] : events) {
      cudaError_t q = cudaEventQuery(event);
      if (q == cudaErrorNotReady) {
        (void)cudaGetLastError();  // not an error: clear it for LibTorch's checks
        busy.push_back(comm->name);
      } else if (q != cudaSuccess) {
        return CudaStatus(q, absl::StrCat(what, ": ", comm->name));
      }
    }
    if (busy.empty()) return absl::OkStatus();
    if (Clock::now() > deadline) {
      if (busy.size() > 8) busy.resize(8);
      return absl::DeadlineExceededError(
          absl::StrCat(what, ": ", absl::StrJoin(busy, ", "), " did not complete in time (a peer dead or stalled)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(spins < 100 ? 50 : 1000));
  }
}

// NCCL connects a pair of ranks for point-to-point lazily, inside the first send or
// receive between them, and that connection needs the peer to take part: left to the
// first post, a post could wait for its peer's (or, with a non-blocking communicator,
// return before the operation is even queued). One byte over every channel, all in one
// NCCL group, connects them all here instead.
absl::Status NcclTransport::WarmUpPairs(Clock::time_point deadline) {
  if (world_ == 1) return absl::OkStatus();
  const std::string what = absl::StrCat("rank ", rank_, ": connecting the point-to-point channels");
  at::Tensor bytes;
  RETURN_IF_ERROR(TorchCall([&] {
    bytes = at::zeros({2 * (world_ - 1)},
                      at::TensorOptions().dtype(at::kByte).device(at::kCUDA, static_cast<c10::DeviceIndex>(device_)));
  }));
  ASSIGN_OR_RETURN(cudaStream_t compute, Current());
  ASSIGN_OR_RETURN(cudaEvent_t ready, NewEvent());
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(ready, compute), what));
  std::vector<Comm*> comms;
  for (auto& [peer, c] : send_comms_) comms.push_back(c);
  for (auto& [peer, c] : recv_comms_) comms.push_back(c);
  for (Comm* c : comms) {
    RETURN_IF_ERROR(CudaStatus(cudaStreamWaitEvent(c->stream, ready, 0), what));
    RETURN_IF_ERROR(UsedOn(bytes, c->stream));  // still safe if this fails half-way
  }
  uint8_t* p = bytes.data_ptr<uint8_t>();
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> l(nccl_mu_);
    r = Grouped([&] {
      ncclResult_t first = ncclSuccess;
      int i = 0;
      for (auto& [peer, c] : send_comms_) Keep(first, ncclSend(p + i++, 1, ncclUint8, 1, c->comm, c->stream));
      for (auto& [peer, c] : recv_comms_) Keep(first, ncclRecv(p + i++, 1, ncclUint8, 0, c->comm, c->stream));
      return first;
    });
  }
  absl::Status s = NcclStatus(r, what);
  if (s.ok()) s = PollReady(comms, deadline, what);
  std::vector<std::pair<cudaEvent_t, Comm*>> events;
  for (Comm* c : comms) {
    if (!s.ok()) break;
    absl::StatusOr<cudaEvent_t> e = NewEvent();
    if (!e.ok()) {
      s = e.status();
      break;
    }
    events.emplace_back(*e, c);
    s = CudaStatus(cudaEventRecord(*e, c->stream), what);
  }
  if (s.ok()) s = HostWaitEvents(events, deadline, what);
  std::lock_guard<std::mutex> l(mu_);
  free_events_.push_back(ready);
  for (auto& [e, c] : events) free_events_.push_back(e);
  return s;
}

// A one-element all-reduce: connects the communicator for small collectives (Barrier's)
// and checks that every member is there.
absl::Status NcclTransport::WarmUpCollective(Comm* comm, Clock::time_point deadline, const std::string& what) {
  if (comm->ranks.size() == 1) return absl::OkStatus();
  at::Tensor one;
  RETURN_IF_ERROR(TorchCall([&] {
    one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, static_cast<c10::DeviceIndex>(device_)));
  }));
  ASSIGN_OR_RETURN(cudaStream_t compute, Current());
  ASSIGN_OR_RETURN(cudaEvent_t ready, NewEvent());
  ASSIGN_OR_RETURN(cudaEvent_t done, NewEvent());
  absl::Status s = CudaStatus(cudaEventRecord(ready, compute), what);
  if (s.ok()) s = CudaStatus(cudaStreamWaitEvent(comm->stream, ready, 0), what);
  if (s.ok()) s = UsedOn(one, comm->stream);
  if (s.ok()) {
    ncclResult_t r;
    {
      std::lock_guard<std::mutex> l(nccl_mu_);
      r = ncclAllReduce(one.data_ptr(), one.data_ptr(), 1, ncclFloat32, ncclSum, comm->comm, comm->stream);
    }
    s = NcclStatus(r, what);
  }
  if (s.ok()) s = PollReady({comm}, deadline, what);
  if (s.ok()) s = CudaStatus(cudaEventRecord(done, comm->stream), what);
  if (s.ok()) s = HostWaitEvents({{done, comm}}, deadline, what);
  if (s.ok()) {
    float sum = 0;
    s = TorchCall([&] { sum = one.item<float>(); });
    if (s.ok() && sum != static_cast<float>(comm->ranks.size())) {
      s = absl::InternalError(absl::StrCat(what, ": a test all-reduce over ", comm->name, " gave ", sum, ", not ",
                                           comm->ranks.size()));
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  free_events_.push_back(ready);
  free_events_.push_back(done);
  return s;
}

absl::Status NcclTransport::Init() {
  const Clock::time_point deadline = Clock::now() + ToClock(timeout_);
  const std::string who = absl::StrCat("rank ", rank_);
  int devices = 0;
  RETURN_IF_ERROR(CudaStatus(cudaGetDeviceCount(&devices), absl::StrCat(who, ": counting CUDA devices")));
  if (device_ < 0 || device_ >= devices) {
    return absl::FailedPreconditionError(absl::StrCat(who, ": CUDA device ", device_, " does not exist (this process sees ",
                                                      devices, ")"));
  }
  device_ok_ = true;
  DeviceGuard guard(device_);
  auto left = [&] { return absl::FromChrono(std::max<Clock::duration>(deadline - Clock::now(), Clock::duration(0))); };

  // The world's id comes from rank 0; each channel's from its sender.
  std::vector<int> all(world_);
  for (int r = 0; r < world_; ++r) all[r] = r;
  ASSIGN_OR_RETURN(world_comm_, NewComm(all, absl::StrCat("ranks [", absl::StrJoin(all, ","), "]")));
  groups_[all] = world_comm_;
  std::vector<InitSpec> specs;
  for (int peer = 0; peer < world_; ++peer) {
    if (peer == rank_) continue;
    ASSIGN_OR_RETURN(Comm * c, NewComm({rank_, peer}, absl::StrCat("the channel rank ", rank_, " -> rank ", peer)));
    send_comms_[peer] = c;
    ASSIGN_OR_RETURN(ncclUniqueId id, ExchangeId(absl::StrCat("ppc/nccl/p2p/", rank_, "-", peer), true, left()));
    specs.push_back({c, id, 2, 0});
  }
  {
    ASSIGN_OR_RETURN(ncclUniqueId id, ExchangeId("ppc/nccl/world", rank_ == 0, left()));
    specs.push_back({world_comm_, id, world_, rank_});
  }
  for (int peer = 0; peer < world_; ++peer) {
    if (peer == rank_) continue;
    ASSIGN_OR_RETURN(Comm * c, NewComm({peer, rank_}, absl::StrCat("the channel rank ", peer, " -> rank ", rank_)));
    recv_comms_[peer] = c;
    ASSIGN_OR_RETURN(ncclUniqueId id, ExchangeId(absl::StrCat("ppc/nccl/p2p/", peer, "-", rank_), false, left()));
    specs.push_back({c, id, 2, 1});
  }
  if (world_ == 1) self_comm_ = world_comm_;
  RETURN_IF_ERROR(InitComms(specs, deadline, absl::StrCat(who, ": creating NCCL communicators on cuda:", device_)));
  absl::Status s = WarmUpPairs(deadline);
  if (s.ok()) s = WarmUpCollective(world_comm_, deadline, absl::StrCat(who, ": connecting the world"));
  if (!s.ok()) return Fail(s);
  watchdog_ = std::thread([this] { Watchdog(); });
  return absl::OkStatus();
}

NcclTransport::~NcclTransport() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (!device_ok_) return;  // nothing was created
  DeviceGuard guard(device_);
  // Operations never waited for, or not complete, are abandoned: the communicators are
  // aborted (their partners fail instead of hanging). Otherwise they are finalized.
  std::set<Op*> ops;
  bool clean = error_.ok() && self_sends_.empty() && self_recvs_.empty();
  for (auto& [h, op] : pending_) ops.insert(op.get());
  for (auto& op : inflight_) ops.insert(op.get());
  for (Op* op : ops) {
    if (op->done == nullptr || cudaEventQuery(op->done) != cudaSuccess) clean = false;
  }
  (void)cudaGetLastError();
  if (clean) {
    // One communicator at a time (each non-blocking finalization is its own NCCL job),
    // all within a bound; what does not finalize in time is aborted below.
    const Clock::time_point deadline = Clock::now() + ToClock(std::min(timeout_, absl::Seconds(30)));
    for (auto& c : comms_) {
      {
        std::lock_guard<std::mutex> l(nccl_mu_);
        if (c->comm == nullptr) continue;
        (void)ncclCommFinalize(c->comm);  // its outcome: the poll below
      }
      if (!PollReady({c.get()}, deadline, "finalizing").ok()) break;
      std::lock_guard<std::mutex> l(nccl_mu_);
      (void)ncclCommDestroy(c->comm);
      c->comm = nullptr;
    }
  }
  AbortAll();  // whatever is left
  for (Op* op : ops) {
    if (op->ready != nullptr) (void)cudaEventDestroy(op->ready);
    if (op->done != nullptr) (void)cudaEventDestroy(op->done);
    op->ready = op->done = nullptr;
  }
  // The tensors go before the streams return to the pool (the allocator may still record
  // events on them, which is why they are never destroyed).
  pending_.clear();
  inflight_.clear();
  self_sends_.clear();
  self_recvs_.clear();
  for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
  free_events_.clear();
  for (auto& c : comms_) StreamPool::Release(device_, c->stream);
  (void)cudaGetLastError();
}

absl::Status NcclTransport::CreateGroup(const std::vector<int>& ranks, absl::Duration timeout) {
  RETURN_IF_ERROR(Check());
  const std::string name = absl::StrCat("ranks [", absl::StrJoin(ranks, ","), "]");
  if (groups_.count(ranks)) return absl::OkStatus();
  if (std::find(ranks.begin(), ranks.end(), rank_) == ranks.end()) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " is not in group [", absl::StrJoin(ranks, ","), "]"));
  }
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= world_ || (i > 0 && ranks[i] <= ranks[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank_, ": group ", name, " is not sorted distinct ranks of a world of ", world_));
    }
  }
  const Clock::time_point deadline = Clock::now() + ToClock(timeout);
  const std::string what = absl::StrCat("rank ", rank_, ": creating the NCCL communicator of ", name);
  DeviceGuard guard(device_);
  ASSIGN_OR_RETURN(Comm * comm, NewComm(ranks, name));
  // The lowest member's id; a one-member group needs nobody else's.
  absl::StatusOr<ncclUniqueId> id =
      ranks.size() == 1 ? ExchangeId("", true, timeout)
                        : ExchangeId(absl::StrCat("ppc/nccl/group/", absl::StrJoin(ranks, ",")), ranks[0] == rank_,
                                     timeout);
  if (!id.ok()) return Annotate(id.status(), what);
  std::vector<InitSpec> specs{{comm, *id, static_cast<int>(ranks.size()), comm->Index(rank_)}};
  RETURN_IF_ERROR(InitComms(specs, deadline, what));
  absl::Status s = WarmUpCollective(comm, deadline, what);
  if (!s.ok()) return Fail(s);
  groups_[ranks] = comm;
  return absl::OkStatus();
}

absl::StatusOr<Comm*> NcclTransport::SelfComm() {
  if (self_comm_ != nullptr) return self_comm_;
  const std::string what = absl::StrCat("rank ", rank_, ": creating the NCCL communicator for sends to itself");
  ASSIGN_OR_RETURN(Comm * comm, NewComm({rank_}, absl::StrCat("the channel rank ", rank_, " -> rank ", rank_)));
  ASSIGN_OR_RETURN(ncclUniqueId id, ExchangeId("", true, timeout_));
  std::vector<InitSpec> specs{{comm, id, 1, 0}};
  RETURN_IF_ERROR(InitComms(specs, Clock::now() + ToClock(timeout_), what));
  self_comm_ = comm;
  return comm;
}

absl::StatusOr<Comm*> NcclTransport::GroupComm(const std::vector<int>& group) {
  auto it = groups_.find(group);
  if (it == groups_.end()) {
    return absl::InternalError(absl::StrCat("rank ", rank_, ": group [", absl::StrJoin(group, ","),
                                            "] was not created at load"));
  }
  return it->second;
}

absl::Status NcclTransport::Launch(Comm* comm, const std::function<ncclResult_t(cudaStream_t)>& launch,
                                   const std::string& what) {
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> l(nccl_mu_);
    if (comm->comm == nullptr) {
      std::lock_guard<std::mutex> m(mu_);
      return error_.ok() ? absl::AbortedError(absl::StrCat(what, ": ", comm->name, " was aborted")) : error_;
    }
    r = launch(comm->stream);
  }
  if (r == ncclInProgress) {
    // Still connecting (the channels and groups were connected at creation, but NCCL may
    // connect more for a collective of another size): bounded like creation.
    absl::Status s = PollReady({comm}, Clock::now() + ToClock(timeout_), what);
    if (!s.ok()) return Fail(s);
    return absl::OkStatus();
  }
  if (r != ncclSuccess) return Fail(NcclStatus(r, what));
  return absl::OkStatus();
}

absl::StatusOr<Transport::Handle> NcclTransport::Issue(std::shared_ptr<Op> op,
                                                       const std::function<ncclResult_t(cudaStream_t)>& launch) {
  Comm* comm = op->comm;
  ASSIGN_OR_RETURN(cudaStream_t compute, Current());
  ASSIGN_OR_RETURN(op->ready, NewEvent());
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(op->ready, compute), op->what));
  RETURN_IF_ERROR(CudaStatus(cudaStreamWaitEvent(comm->stream, op->ready, 0), op->what));
  RETURN_IF_ERROR(Launch(comm, launch, op->what));
  // Once issued, a failure to follow the operation is fatal: its buffers are in use.
  absl::Status finished = Finish(*op);
  if (!finished.ok()) return Fail(finished);
  return Register(std::move(op));
}

absl::Status NcclTransport::Finish(Op& op) {
  ASSIGN_OR_RETURN(op.done, NewEvent());
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(op.done, op.comm->stream), op.what));
  for (const at::Tensor& t : op.keep) RETURN_IF_ERROR(Annotate(UsedOn(t, op.comm->stream), op.what));
  return absl::OkStatus();
}

absl::Status NcclTransport::UsedOn(const at::Tensor& t, cudaStream_t stream) {
  return TorchCall([&] {
    c10::cuda::CUDACachingAllocator::recordStream(
        t.storage().data_ptr(), c10::cuda::getStreamFromExternal(stream, static_cast<c10::DeviceIndex>(device_)));
  });
}

Transport::Handle NcclTransport::Register(std::shared_ptr<Op> op) {
  const Handle h = next_++;
  op->handle = h;
  pending_[h] = op;
  if (!op->self || op->done != nullptr) {
    {
      std::lock_guard<std::mutex> l(mu_);
      op->issued = true;
      inflight_.push_back(op);
    }
    cv_.notify_all();
  }
  return h;
}

// A transfer to this rank itself: NCCL needs the send and the receive in one group call
// (each alone would wait for the other on one stream), so the first one posted waits,
// unissued, for its partner; the pair then goes in post order of the channel.
absl::StatusOr<Transport::Handle> NcclTransport::PostSelf(std::shared_ptr<Op> op) {
  ASSIGN_OR_RETURN(Comm * comm, SelfComm());
  op->comm = comm;
  op->self = true;
  ASSIGN_OR_RETURN(cudaStream_t compute, Current());
  ASSIGN_OR_RETURN(op->ready, NewEvent());
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(op->ready, compute), op->what));
  auto& partners = op->is_send ? self_recvs_ : self_sends_;
  if (partners.empty()) {
    (op->is_send ? self_sends_ : self_recvs_).push_back(op);
    return Register(std::move(op));
  }
  std::shared_ptr<Op> partner = partners.front();
  partners.pop_front();
  Op& send = op->is_send ? *op : *partner;
  Op& recv = op->is_send ? *partner : *op;
  if (send.numel != recv.numel || send.dtype != recv.dtype) {
    return SetError(absl::InvalidArgumentError(absl::StrCat(
        recv.what, ": the matching send (", send.what, ") has ", send.numel, " values of type ",
        c10::toString(send.dtype), ", the receive ", recv.numel, " of type ", c10::toString(recv.dtype))));
  }
  RETURN_IF_ERROR(CudaStatus(cudaStreamWaitEvent(comm->stream, send.ready, 0), send.what));
  RETURN_IF_ERROR(CudaStatus(cudaStreamWaitEvent(comm->stream, recv.ready, 0), recv.what));
  void* from = send.keep[0].data_ptr();
  void* to = recv.keep[0].data_ptr();
  RETURN_IF_ERROR(Launch(
      comm,
      [&](cudaStream_t s) {
        return Grouped([&] {
          ncclResult_t first = ncclSuccess;
          Keep(first, ncclSend(from, send.numel, send.nccl_type, 0, comm->comm, s));
          Keep(first, ncclRecv(to, recv.numel, recv.nccl_type, 0, comm->comm, s));
          return first;
        });
      },
      recv.what));
  absl::Status finished = Finish(*partner);
  if (finished.ok()) finished = Finish(*op);
  if (!finished.ok()) return Fail(finished);
  {
    std::lock_guard<std::mutex> l(mu_);
    partner->issued = true;
    inflight_.push_back(partner);
  }
  return Register(std::move(op));
}

absl::StatusOr<Transport::Handle> NcclTransport::PostSend(const at::Tensor& tensor, int peer, uint32_t tag) {
  RETURN_IF_ERROR(Check());
  RETURN_IF_ERROR(CheckPeer(peer));
  DeviceGuard guard(device_);
  auto op = std::make_shared<Op>();
  op->what = absl::StrCat("rank ", rank_, ": send to rank ", peer, " (tag ", tag, ")");
  op->hint = absl::StrCat("rank ", peer, " died, stalled, or receives this channel's messages in another order");
  op->is_send = true;
  ASSIGN_OR_RETURN(op->nccl_type, NcclType(tensor.scalar_type(), false, op->what));
  ASSIGN_OR_RETURN(Buffer b, OnDevice(tensor, /*copy_in=*/true, op->what));
  Use(*op, tensor, b, /*result=*/false);
  op->numel = b.device.numel();
  op->dtype = tensor.scalar_type();
  if (peer == rank_) return PostSelf(std::move(op));
  op->comm = send_comms_.at(peer);
  void* data = b.device.data_ptr();
  const size_t n = static_cast<size_t>(op->numel);
  const ncclDataType_t type = op->nccl_type;
  Comm* comm = op->comm;
  return Issue(std::move(op), [=](cudaStream_t s) { return ncclSend(data, n, type, 1, comm->comm, s); });
}

absl::StatusOr<Transport::Handle> NcclTransport::PostRecv(at::Tensor& tensor, int peer, uint32_t tag) {
  RETURN_IF_ERROR(Check());
  RETURN_IF_ERROR(CheckPeer(peer));
  DeviceGuard guard(device_);
  auto op = std::make_shared<Op>();
  op->what = absl::StrCat("rank ", rank_, ": receive from rank ", peer, " (tag ", tag, ")");
  op->hint = absl::StrCat("rank ", peer, " died, stalled, or sends this channel's messages in another order");
  ASSIGN_OR_RETURN(op->nccl_type, NcclType(tensor.scalar_type(), false, op->what));
  ASSIGN_OR_RETURN(Buffer b, OnDevice(tensor, /*copy_in=*/false, op->what));
  Use(*op, tensor, b, /*result=*/true);
  op->numel = b.device.numel();
  op->dtype = tensor.scalar_type();
  if (peer == rank_) return PostSelf(std::move(op));
  op->comm = recv_comms_.at(peer);
  void* data = b.device.data_ptr();
  const size_t n = static_cast<size_t>(op->numel);
  const ncclDataType_t type = op->nccl_type;
  Comm* comm = op->comm;
  return Issue(std::move(op), [=](cudaStream_t s) { return ncclRecv(data, n, type, 0, comm->comm, s); });
}

absl::StatusOr<Transport::Handle> NcclTransport::PostAllReduceSum(std::vector<at::Tensor>& tensors,
                                                                  const std::vector<int>& group) {
  RETURN_IF_ERROR(Check());
  ASSIGN_OR_RETURN(Comm * comm, GroupComm(group));
  DeviceGuard guard(device_);
  auto op = std::make_shared<Op>();
  op->comm = comm;
  op->what = absl::StrCat("rank ", rank_, ": all-reduce #", comm->collectives, " over ", comm->name);
  op->hint = "one of the group's ranks died or stalled, or the ranks call the group's collectives in different orders";
  struct Item {
    void* data;
    size_t n;
    ncclDataType_t type;
  };
  std::vector<Item> items;
  for (const at::Tensor& t : tensors) {
    ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(t.scalar_type(), true, op->what));
    ASSIGN_OR_RETURN(Buffer b, OnDevice(t, /*copy_in=*/true, op->what));
    Use(*op, t, b, /*result=*/true);
    items.push_back({b.device.data_ptr(), static_cast<size_t>(b.device.numel()), type});
  }
  ++comm->collectives;
  // One all-reduce per tensor, in one NCCL group: one launch, no flattening copy.
  return Issue(std::move(op), [=](cudaStream_t s) {
    return Grouped([&] {
      ncclResult_t first = ncclSuccess;
      for (const Item& i : items) Keep(first, ncclAllReduce(i.data, i.data, i.n, i.type, ncclSum, comm->comm, s));
      return first;
    });
  });
}

absl::Status NcclTransport::HostWait(Op& op) {
  // The watchdog enforces the timeout (and aborts, which completes the event).
  for (int spins = 0;; ++spins) {
    cudaError_t q = cudaEventQuery(op.done);
    if (q == cudaSuccess) return absl::OkStatus();
    if (q != cudaErrorNotReady) return Fail(CudaStatus(q, op.what));
    (void)cudaGetLastError();
    RETURN_IF_ERROR(Check());
    std::this_thread::sleep_for(std::chrono::microseconds(spins < 200 ? 20 : 500));
  }
}

absl::Status NcclTransport::Wait(Handle handle, absl::Duration timeout) {
  auto it = pending_.find(handle);
  if (it == pending_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, ": unknown transport handle ", handle));
  }
  std::shared_ptr<Op> op = std::move(it->second);
  pending_.erase(it);
  // However this ends, Wait no longer needs the events.
  struct Done {
    NcclTransport* t;
    Op* op;
    ~Done() {
      std::lock_guard<std::mutex> l(t->mu_);
      op->wait_done = true;
      t->MaybeRelease(*op);
    }
  } done_guard{this, op.get()};
  RETURN_IF_ERROR(Check());
  if (op->done == nullptr) {
    // A transfer to this rank itself whose partner was never posted: no later call of
    // this thread can post it while it waits here.
    auto& queue = op->is_send ? self_sends_ : self_recvs_;
    queue.erase(std::remove(queue.begin(), queue.end(), op), queue.end());
    {
      std::lock_guard<std::mutex> l(mu_);
      ReleaseEvents(*op);
    }
    return SetError(absl::DeadlineExceededError(absl::StrCat(
        op->what, " cannot complete: its matching ", op->is_send ? "receive" : "send",
        " was not posted before this wait (did not complete within ", absl::FormatDuration(timeout), ")")));
  }
  DeviceGuard guard(device_);
  {
    std::lock_guard<std::mutex> l(mu_);
    op->waited = true;
    op->waited_at = Clock::now();
    op->timeout = ToClock(timeout);
    op->timeout_text = timeout;
  }
  cv_.notify_all();
  if (op->host_wait) RETURN_IF_ERROR(HostWait(*op));
  ASSIGN_OR_RETURN(cudaStream_t compute, Current());
  RETURN_IF_ERROR(CudaStatus(cudaStreamWaitEvent(compute, op->done, 0), op->what));
  if (!op->copy_back.empty()) {
    RETURN_IF_ERROR(Annotate(TorchCall([&] {
                               for (auto& [caller, buffer] : op->copy_back) {
                                 caller.copy_(buffer, /*non_blocking=*/caller.is_cuda());
                               }
                             }),
                             absl::StrCat(op->what, ": copying the result back")));
  }
  return Check();
}

absl::Status NcclTransport::AllGather(const at::Tensor& input, at::Tensor& output, const std::vector<int>& group,
                                      absl::Duration timeout) {
  RETURN_IF_ERROR(Check());
  ASSIGN_OR_RETURN(Comm * comm, GroupComm(group));
  const int64_t n = input.numel();
  if (input.dim() != 1 || output.dim() != 1 || output.numel() != n * static_cast<int64_t>(group.size()) ||
      input.scalar_type() != output.scalar_type()) {
    return absl::InternalError(
        absl::StrCat("all-gather of ", n, " values into ", output.numel(), " over ", group.size(), " ranks"));
  }
  DeviceGuard guard(device_);
  auto op = std::make_shared<Op>();
  op->comm = comm;
  op->what = absl::StrCat("rank ", rank_, ": all-gather #", comm->collectives, " over ", comm->name);
  op->hint = "one of the group's ranks died or stalled, or the ranks call the group's collectives in different orders";
  ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(input.scalar_type(), false, op->what));
  ASSIGN_OR_RETURN(Buffer in, OnDevice(input, true, op->what));
  ASSIGN_OR_RETURN(Buffer out, OnDevice(output, false, op->what));
  Use(*op, input, in, false);
  Use(*op, output, out, true);
  ++comm->collectives;
  void* from = in.device.data_ptr();
  void* to = out.device.data_ptr();
  ASSIGN_OR_RETURN(Handle h, Issue(std::move(op), [=](cudaStream_t s) {
                     return ncclAllGather(from, to, static_cast<size_t>(n), type, comm->comm, s);
                   }));
  return Wait(h, timeout);
}

// Over point-to-point on the group's communicator: every member sends to the root, which
// receives each member's part in place (and copies its own).
absl::Status NcclTransport::Gather(const at::Tensor& input, at::Tensor& output, int root,
                                   const std::vector<int>& group, absl::Duration timeout) {
  RETURN_IF_ERROR(Check());
  ASSIGN_OR_RETURN(Comm * comm, GroupComm(group));
  const int root_index = comm->Index(root);
  if (root_index < 0) return absl::InvalidArgumentError(absl::StrCat("gather root ", root, " not in group"));
  const int64_t n = input.numel();
  const bool is_root = rank_ == root;
  if (is_root && (input.dim() != 1 || output.dim() != 1 || output.numel() != n * static_cast<int64_t>(group.size()) ||
                  input.scalar_type() != output.scalar_type())) {
    return absl::InternalError(
        absl::StrCat("gather of ", n, " values into ", output.numel(), " over ", group.size(), " ranks"));
  }
  DeviceGuard guard(device_);
  auto op = std::make_shared<Op>();
  op->comm = comm;
  op->what = absl::StrCat("rank ", rank_, ": gather #", comm->collectives, " to rank ", root, " over ", comm->name);
  op->hint = "one of the group's ranks died or stalled, or the ranks call the group's collectives in different orders";
  ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(input.scalar_type(), false, op->what));
  ASSIGN_OR_RETURN(Buffer in, OnDevice(input, true, op->what));
  Use(*op, input, in, false);
  Buffer out;
  if (is_root) {
    ASSIGN_OR_RETURN(out, OnDevice(output, false, op->what));
    Use(*op, output, out, true);
  }
  ++comm->collectives;
  const int members = static_cast<int>(comm->ranks.size());
  const int me = comm->Index(rank_);
  const size_t bytes = static_cast<size_t>(n) * input.element_size();
  char* from = static_cast<char*>(in.device.data_ptr());
  char* to = is_root ? static_cast<char*>(out.device.data_ptr()) : nullptr;
  ASSIGN_OR_RETURN(Handle h, Issue(std::move(op), [=](cudaStream_t s) -> ncclResult_t {
                     if (is_root && cudaMemcpyAsync(to + me * bytes, from, bytes, cudaMemcpyDeviceToDevice, s) !=
                                        cudaSuccess) {
                       return ncclUnhandledCudaError;
                     }
                     return Grouped([&] {
                       ncclResult_t first = ncclSuccess;
                       if (!is_root) {
                         Keep(first, ncclSend(from, static_cast<size_t>(n), type, root_index, comm->comm, s));
                       } else {
                         for (int i = 0; i < members; ++i) {
                           if (i == me) continue;
                           Keep(first, ncclRecv(to + i * bytes, static_cast<size_t>(n), type, i, comm->comm, s));
                         }
                       }
                       return first;
                     });
                   }));
  return Wait(h, timeout);
}

absl::Status NcclTransport::Broadcast(at::Tensor& tensor, int root, const std::vector<int>& group,
                                      absl::Duration timeout) {
  RETURN_IF_ERROR(Check());
  ASSIGN_OR_RETURN(Comm * comm, GroupComm(group));
  const int root_index = comm->Index(root);
  if (root_index < 0) return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " not in group"));
  DeviceGuard guard(device_);
  auto op = std::make_shared<Op>();
  op->comm = comm;
  op->what = absl::StrCat("rank ", rank_, ": broadcast #", comm->collectives, " from rank ", root, " over ", comm->name);
  op->hint = "one of the group's ranks died or stalled, or the ranks call the group's collectives in different orders";
  ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(tensor.scalar_type(), false, op->what));
  ASSIGN_OR_RETURN(Buffer b, OnDevice(tensor, /*copy_in=*/rank_ == root, op->what));
  Use(*op, tensor, b, /*result=*/rank_ != root);
  ++comm->collectives;
  void* data = b.device.data_ptr();
  const size_t n = static_cast<size_t>(b.device.numel());
  ASSIGN_OR_RETURN(Handle h, Issue(std::move(op), [=](cudaStream_t s) {
                     return ncclBroadcast(data, data, n, type, root_index, comm->comm, s);
                   }));
  return Wait(h, timeout);
}

// A one-element all-reduce, then the host waits for it: every member has arrived.
absl::Status NcclTransport::Barrier(const std::vector<int>& group, absl::Duration timeout) {
  RETURN_IF_ERROR(Check());
  ASSIGN_OR_RETURN(Comm * comm, GroupComm(group));
  DeviceGuard guard(device_);
  auto op = std::make_shared<Op>();
  op->comm = comm;
  op->what = absl::StrCat("rank ", rank_, ": barrier #", comm->collectives, " over ", comm->name);
  op->hint = "one of the group's ranks died or stalled, or the ranks call the group's collectives in different orders";
  at::Tensor one;
  RETURN_IF_ERROR(TorchCall([&] {
    one = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, static_cast<c10::DeviceIndex>(device_)));
  }));
  op->keep.push_back(one);
  op->host_wait = true;
  ++comm->collectives;
  void* data = one.data_ptr();
  ASSIGN_OR_RETURN(Handle h, Issue(std::move(op), [=](cudaStream_t s) {
                     return ncclAllReduce(data, data, 1, ncclFloat32, ncclSum, comm->comm, s);
                   }));
  return Wait(h, timeout);
}

// Follows every issued operation until it completes. An operation whose Wait returned
// is timed from when it could start (its post's `ready` event completed: the device had
// done the work before the post, including any earlier operation it waited for), so a
// long queue of compute ahead of it does not count against it. Past its timeout, or on
// an NCCL asynchronous error, everything is aborted and the error recorded.
void NcclTransport::Watchdog() {
  (void)cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (inflight_.empty()) {
      cv_.wait(lock, [&] { return stop_ || !inflight_.empty(); });
      continue;
    }
    cv_.wait_for(lock, std::chrono::milliseconds(2));
    if (stop_) break;
    const Clock::time_point now = Clock::now();
    absl::Status failure;
    std::set<Comm*> busy;
    for (auto it = inflight_.begin(); it != inflight_.end();) {
      Op& op = **it;
      cudaError_t q = cudaEventQuery(op.done);
      if (q == cudaSuccess) {
        op.complete = true;
        op.keep.clear();
        MaybeRelease(op);
        it = inflight_.erase(it);
        continue;
      }
      if (q != cudaErrorNotReady) {
        failure = CudaStatus(q, op.what);
        break;
      }
      (void)cudaGetLastError();
      busy.insert(op.comm);
      if (op.waited && error_.ok()) {
        if (!op.started) {
          cudaError_t r = cudaEventQuery(op.ready);
          if (r == cudaSuccess) {
            op.started = true;
            op.started_at = now;
          } else {
            (void)cudaGetLastError();
            // Not even startable: the device work before its post is stuck. Bounded too,
            // generously, so that nothing waits forever.
            if (now - op.waited_at > 4 * op.timeout + std::chrono::seconds(60)) {
              failure = absl::DeadlineExceededError(absl::StrCat(
                  op.what, " could not start within ", absl::FormatDuration(4 * op.timeout_text + absl::Seconds(60)),
                  " of its wait: the device work posted before it did not finish; the NCCL communicators of rank ",
                  rank_, " were aborted"));
              break;
            }
          }
        }
        if (op.started && now - op.started_at > op.timeout) {
          failure = absl::DeadlineExceededError(absl::StrCat(op.what, " did not complete within ",
                                                             absl::FormatDuration(op.timeout_text), " (", op.hint,
                                                             "); the NCCL communicators of rank ", rank_,
                                                             " were aborted"));
          break;
        }
      }
      ++it;
    }
    if (failure.ok() && error_.ok() && !busy.empty()) {
      // NCCL's own errors (a peer's process gone, the network): the communicators of the
      // operations in flight.
      lock.unlock();
      {
        std::lock_guard<std::mutex> l(nccl_mu_);
        for (Comm* c : busy) {
          if (c->comm == nullptr) continue;
          ncclResult_t state = ncclSuccess;
          ncclResult_t r = ncclCommGetAsyncError(c->comm, &state);
          if (r == ncclSuccess && (state == ncclSuccess || state == ncclInProgress)) continue;
          failure = absl::AbortedError(absl::StrCat("rank ", rank_, ": NCCL error on ", c->name, ": ",
                                                    NcclText(r != ncclSuccess ? r : state),
                                                    "; the NCCL communicators of rank ", rank_, " were aborted"));
          break;
        }
      }
      lock.lock();
    }
    if (!failure.ok() && error_.ok()) {
      error_ = failure;
      lock.unlock();
      AbortAll();
      lock.lock();
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Transport>> CreateNcclTransport(const RendezvousOptions& options, int device_index) {
  ASSIGN_OR_RETURN(std::unique_ptr<RendezvousStore> store, JoinRendezvous(options));
  auto t = std::make_unique<NcclTransport>(std::move(store), options.rank, options.world_size, device_index,
                                           options.timeout);
  absl::Status init = t->Init();
  if (!init.ok()) {
    return Annotate(init, absl::StrCat("rank ", options.rank, ": connecting ", options.world_size,
                                       " ranks over NCCL on cuda:", device_index));
  }
  return std::unique_ptr<Transport>(std::move(t));
}

}  // namespace ppc::runtime
