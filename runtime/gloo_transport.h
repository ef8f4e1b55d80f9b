// Transport over Gloo through LibTorch's c10d (CPU). Rendezvous through a c10d
// TCPStore: rank 0 hosts it unless the launcher (pprun --nproc) already does.
// All c10d use lives in gloo_transport.cc: c10d's API differs between LibTorch 1.13
// (ProcessGroup) and 2.x (Backend).
// Point-to-point messages are matched by tag (taken modulo 2^31), so the callers' per-
// channel sequence numbers (transport.h) keep each channel in order.
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

// A store server for launchers: binds 127.0.0.1 on a free port, returned by port().
class StoreServer {
 public:
  static absl::StatusOr<std::unique_ptr<StoreServer>> Start(int world_size, absl::Duration timeout);
  virtual ~StoreServer() = default;
  virtual int port() const = 0;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_GLOO_TRANSPORT_H_
