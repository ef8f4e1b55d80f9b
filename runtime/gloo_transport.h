// Transport over Gloo through LibTorch's c10d. Rendezvous through a c10d TCPStore:
// rank 0 hosts it unless the launcher (pprun --nproc) already does. The same rendezvous
// serves the NCCL transport (nccl_transport.h), which reads and writes its own keys
// through RendezvousStore.
// All c10d use lives in gloo_transport.cc: c10d's API differs between LibTorch 1.13
// (ProcessGroup) and 2.x (Backend).
// Point-to-point messages are matched by tag (taken modulo 2^31), so the callers' per-
// channel sequence numbers (transport.h) keep each channel in order.
// Gloo works on host memory. Tensors on a CUDA device are staged through pinned host
// buffers: a send or a collective's input is copied to the host when it is posted (the
// post waits for the device's work up to that point), a result is copied back to the
// device when the operation is waited for, ordered on the current CUDA stream like the
// rest of that stream's work. This is how several ranks share one GPU (NCCL refuses two
// ranks of a communicator on one device). CPU tensors are used in place, as always.
#ifndef PPC_RUNTIME_GLOO_TRANSPORT_H_
#define PPC_RUNTIME_GLOO_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/transport.h"

namespace ppc::runtime {

struct RendezvousOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  int rank = 0;
  int world_size = 1;
  // True when rank 0 should host the TCPStore (torchrun-style); false when the
  // launcher hosts it.
  bool rank0_hosts_store = true;
  absl::Duration timeout = absl::Seconds(120);
  // Every rank must run the same plan: ranks compare this at the rendezvous.
  std::string plan_fingerprint;
};

absl::StatusOr<std::unique_ptr<Transport>> CreateGlooTransport(const RendezvousOptions& options);

// The rendezvous's key-value store, for a transport that exchanges its own connection
// data between ranks (the NCCL transport's unique ids). Keys are shared by all ranks of
// the rendezvous; a value, once set, is never changed.
class RendezvousStore {
 public:
  virtual ~RendezvousStore() = default;
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // Waits up to `timeout` for another rank to set `key` (DeadlineExceeded naming it).
  virtual absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) = 0;
};

// Joins the rendezvous `options` describes exactly as CreateGlooTransport does (every
// rank arrives within options.timeout, all with the same plan fingerprint, with the same
// errors) and returns its store. Rank 0's store hosts the others' when
// options.rank0_hosts_store: keep it alive as long as any rank may still use it.
absl::StatusOr<std::unique_ptr<RendezvousStore>> JoinRendezvous(const RendezvousOptions& options);

// A store server for launchers: binds 127.0.0.1 on a free port, returned by port().
class StoreServer {
 public:
  static absl::StatusOr<std::unique_ptr<StoreServer>> Start(int world_size, absl::Duration timeout);
  virtual ~StoreServer() = default;
  virtual int port() const = 0;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_GLOO_TRANSPORT_H_
