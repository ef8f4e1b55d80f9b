// Transport over NCCL on one CUDA device per rank, stream-ordered (transport.h's
// Completion contract). Needs no CUDA header: CPU-only code includes it, and a build
// without CUDA links nccl_transport_unavailable.cc, whose CreateNcclTransport says so.
//
// Rendezvous: the same c10d TCPStore and checks as the Gloo transport (JoinRendezvous in
// gloo_transport.h); NCCL's unique ids are exchanged through it.
//
// Communicators. One for the world; one per group CreateGroup makes (the world's own
// group reuses the world's); and one per ordered pair of ranks (sender -> receiver) for
// point-to-point, so that each channel of transport.h is independent of every other
// channel and of the collectives, as the contract requires (NCCL matches by order, not
// tags, and serializes all the operations of one communicator). Each communicator has
// its own CUDA stream. The pair communicators are made when the transport is created:
// 2 (world - 1) two-rank communicators per rank, initialized concurrently and connected
// with a one-byte exchange, so that no later post has to wait for a peer to connect.
// A send to this rank itself (a world of one, tests) goes over a one-rank communicator
// and is issued together with its receive, in one NCCL group, when both are posted.
//
// Ordering. A post records an event on the current (compute) stream of the device, makes
// the communicator's stream wait for it, issues the NCCL operation there, and records a
// completion event; the caching allocator is told that the tensors are used on that
// stream. Wait makes the current stream wait for the completion event, and returns: no
// host synchronization. Results on the host (CPU tensors, which are staged through the
// device) and Barrier wait on the host, for at most their timeout.
//
// Failures. A watchdog thread follows every operation. When one whose Wait returned has
// not completed within Wait's timeout (counted from when it could start: when the work
// before its post was done on the device), or NCCL reports an asynchronous error, it
// aborts every communicator of this transport, so that nothing queued behind waits
// forever, and every later call returns the error: DeadlineExceeded naming this rank,
// the peer or group, the tag and the timeout, or Aborted for an NCCL error. Communicator
// creation is bounded by the rendezvous timeout (non-blocking initialization, aborted
// when it runs out).
//
// Threads: like every Transport, used by one thread at a time (plus its own watchdog).
#ifndef PPC_RUNTIME_NCCL_TRANSPORT_H_
#define PPC_RUNTIME_NCCL_TRANSPORT_H_

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/gloo_transport.h"
#include "runtime/transport.h"

namespace ppc::runtime {

// Joins the rendezvous `options` describes and connects the world over NCCL on CUDA
// device `device_index` (the rank's own: NCCL refuses two ranks of one communicator on
// one device). Tensors given to the transport live on that device, or on the host
// (staged). Unimplemented in a build without CUDA.
absl::StatusOr<std::unique_ptr<Transport>> CreateNcclTransport(const RendezvousOptions& options, int device_index);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_NCCL_TRANSPORT_H_
