// The transport interface: the only way ranks talk. Point-to-point operations are
// posted without blocking and completed by Wait (so a batch of posts followed by
// waits cannot deadlock on a blocking transport); collectives run within a group of
// global ranks. Every blocking call takes a timeout. Implementations: Gloo through
// LibTorch's c10d (gloo_transport.h); NCCL on GPU later.
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
  // before the group is used. `ranks` sorted, containing rank().
  virtual absl::Status CreateGroup(const std::vector<int>& ranks, absl::Duration timeout) = 0;

  // `tensor` must stay alive and unmodified (send) / untouched (recv) until Wait.
  virtual absl::StatusOr<Handle> PostSend(const at::Tensor& tensor, int peer, uint32_t tag) = 0;
  virtual absl::StatusOr<Handle> PostRecv(at::Tensor& tensor, int peer, uint32_t tag) = 0;
  virtual absl::Status Wait(Handle handle, absl::Duration timeout) = 0;

  // In-place sum over the group's ranks.
  virtual absl::Status AllReduceSum(std::vector<at::Tensor>& tensors, const std::vector<int>& group,
                                    absl::Duration timeout) = 0;
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
