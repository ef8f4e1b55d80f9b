// An in-process Transport whose ranks are threads of one process, for tests: a
// LoopbackHub holds the shared state of a world of N ranks, and Connect(r) gives rank r
// its Transport. It follows transport.h's contract at its strictest:
//  - a channel (sender -> receiver) matches its k-th send with its k-th receive; if
//    their tags differ, both Waits fail with FailedPrecondition ("rank A -> rank B:
//    message k was posted with tag X by the sender but tag Y by the receiver"): the two
//    sides disagree on the order;
//  - the data is copied from the send's tensor into the receive's when they match
//    (the same number of elements and dtype, else InvalidArgument on both sides); a send
//    completes only then (a rendezvous), so a program that relies on buffered sends
//    deadlocks here (and times out) as it could on NCCL;
//  - a collective waits for every member of its group (one rendezvous per call, in
//    each member's call order on that group) and checks that all of them called the
//    same operation with matching tensors;
//  - every Wait has a timeout (DeadlineExceeded naming the rank, the peer or the group,
//    and the tag); an operation whose Wait timed out is abandoned, and so is every
//    unfinished operation of a Transport that is destroyed: its partners fail with
//    Aborted, and a partner that waits for a rank that is gone fails with Unavailable
//    instead of running into its timeout.
// Thread-safe: one mutex guards the hub; each Transport is used by its own thread.
#ifndef PPC_RUNTIME_LOOPBACK_TRANSPORT_H_
#define PPC_RUNTIME_LOOPBACK_TRANSPORT_H_

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/transport.h"

namespace ppc::runtime {

class LoopbackHub {
 public:
  // InvalidArgument unless world_size >= 1.
  static absl::StatusOr<std::shared_ptr<LoopbackHub>> Create(int world_size);
  ~LoopbackHub();
  LoopbackHub(const LoopbackHub&) = delete;
  LoopbackHub& operator=(const LoopbackHub&) = delete;

  int world_size() const { return world_size_; }

  // Rank `rank`'s Transport, once per rank (FailedPrecondition the second time; a rank
  // out of range is InvalidArgument). It shares the hub's state, so it may outlive the
  // hub; destroying it disconnects the rank for good. The world group exists from the
  // start; other groups need CreateGroup (which only checks and records them here).
  absl::StatusOr<std::unique_ptr<Transport>> Connect(int rank);

  struct State;  // defined in loopback_transport.cc

 private:
  explicit LoopbackHub(int world_size);

  const int world_size_;
  std::shared_ptr<State> state_;
};

// Runs `body` on `world_size` threads, thread r with rank r's Transport of a fresh hub,
// and returns OK if every body did, else the first error to happen, prefixed
// "rank N: " unless its message starts so already (the later errors are often its
// consequences: a rank whose body returns disconnects). A body's exception becomes an
// error too. `body` runs on all the threads at once.
absl::Status RunLoopbackWorld(int world_size, const std::function<absl::Status(Transport&)>& body);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_LOOPBACK_TRANSPORT_H_
