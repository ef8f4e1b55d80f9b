// The transport interface: the only way ranks talk. Point-to-point operations and
// all-reduces are posted without blocking (PostSend, PostRecv, PostAllReduceSum) and
// completed by Wait, so a batch of posts followed by waits cannot deadlock on a blocking
// transport, and an all-reduce can overlap the compute issued between its post and its
// wait; the other collectives are blocking calls. Collectives run within a group of
// global ranks. Every call that can wait for a peer takes a timeout. Implementations:
// Gloo through LibTorch's c10d (gloo_transport.h; CPU tensors, and CUDA tensors staged
// through pinned host memory); NCCL on CUDA devices, stream-ordered (nccl_transport.h);
// an in-process one whose ranks are threads, for tests (loopback_transport.h).
//
// Ordering (the NCCL model). The point-to-point messages of one ordered pair of ranks
// (sender a -> receiver b) form a channel: the k-th send a posts to b (counting from 0)
// matches the k-th receive b posts from a, whatever the tags, and the channel's
// operations complete in the order they were posted. Channels are independent of each
// other and of collectives. Callers pass the channel's sequence number as the tag: the
// k-th message from a to b carries tag k on both sides. An implementation may use the
// tag to check the order (the loopback transport fails a k-th receive whose tag differs
// from the k-th send's: the two sides disagree on the order) or to match (Gloo matches a
// receive to the send with its tag; NCCL ignores tags).
//
// Collectives. Every member of a group calls the group's collectives (blocking, or
// posted) in the same order; a posted all-reduce takes its place in that order when it
// is posted, not when it is waited for.
//
// Completion (the contract a stream-ordered transport can keep). "Complete" means:
// the operation's results are usable by, and its input buffers may be overwritten by,
// any work this rank issues afterwards. A CPU transport (Gloo, loopback) finishes the
// operation before Wait or a blocking collective returns. A stream-ordered one (CUDA
// with NCCL) may instead enqueue that ordering on the rank's compute stream and return
// (later kernels then wait on the device, and a host read of a result, such as
// Tensor::item, synchronizes the stream as LibTorch always does). Such a transport
// must still bound every wait: when an operation whose Wait returned OK fails or
// outlives its timeout, it aborts its communicator (so that nothing queued behind the
// operation waits forever) and reports the error from this rank's next call
// (DeadlineExceeded or Aborted). Callers treat any error as fatal for the run.
//
// Lifetime. Destroying a Transport abandons its operations not yet waited for (a rank
// that stops on an error does not wait for them); their partners fail instead of hanging.
//
// Threads. A Transport object is used by one thread at a time.
#ifndef PPC_RUNTIME_TRANSPORT_H_
#define PPC_RUNTIME_TRANSPORT_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ppc::runtime {

class Transport {
 public:
  using Handle = int64_t;
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Must be called by every member of every group, groups in the same global order,
  // before the group is used. `ranks` sorted, containing rank(). The world group
  // [0, world_size()) exists from the start.
  virtual absl::Status CreateGroup(const std::vector<int>& ranks, absl::Duration timeout) = 0;

  // Posts this rank's next message to / from `peer` (see Ordering above: `tag` is the
  // channel's sequence number); never waits for the peer. `tensor` must stay alive and
  // unmodified (send) / untouched (recv) until Wait; a receive's tensor has the send's
  // number of elements and dtype (callers check this before posting: Gloo aborts the
  // process on a message larger than the receive posted for it).
  virtual absl::StatusOr<Handle> PostSend(const at::Tensor& tensor, int peer, uint32_t tag) = 0;
  virtual absl::StatusOr<Handle> PostRecv(at::Tensor& tensor, int peer, uint32_t tag) = 0;

  // Posts an in-place sum over the group's ranks, completed by Wait; never waits for the
  // other members. The tensors (not the vector) must stay alive and untouched until Wait.
  virtual absl::StatusOr<Handle> PostAllReduceSum(std::vector<at::Tensor>& tensors, const std::vector<int>& group) = 0;

  // Completes a posted operation (see Completion above: OK means its results are usable
  // by the work this rank issues next; a stream-ordered transport may return once that
  // is enqueued). A handle is waited for at most once, and is gone afterwards whatever
  // the outcome. Past `timeout`: DeadlineExceeded, naming this rank, the peer (or the
  // group) and the tag; the operation is then abandoned and its tensor must not be
  // relied on.
  virtual absl::Status Wait(Handle handle, absl::Duration timeout) = 0;

  // Blocking collectives: complete (as Wait) when they return OK.
  // In-place sum over the group's ranks: PostAllReduceSum, then Wait.
  virtual absl::Status AllReduceSum(std::vector<at::Tensor>& tensors, const std::vector<int>& group,
                                    absl::Duration timeout) {
    absl::StatusOr<Handle> handle = PostAllReduceSum(tensors, group);
    if (!handle.ok()) return handle.status();
    return Wait(*handle, timeout);
  }
  // Concatenates every member's `input` (1-D, the same length everywhere) in group order
  // into `output` (group size x that length).
  virtual absl::Status AllGather(const at::Tensor& input, at::Tensor& output, const std::vector<int>& group,
                                 absl::Duration timeout) = 0;
  // Like AllGather, but only `root` (a member) receives: `output` is used on root only.
  virtual absl::Status Gather(const at::Tensor& input, at::Tensor& output, int root, const std::vector<int>& group,
                              absl::Duration timeout) = 0;
  virtual absl::Status Broadcast(at::Tensor& tensor, int root, const std::vector<int>& group,
                                 absl::Duration timeout) = 0;
  virtual absl::Status Barrier(const std::vector<int>& group, absl::Duration timeout) = 0;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_TRANSPORT_H_
