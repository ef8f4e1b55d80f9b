// This rank's point-to-point transfers of boundary tensors. A transfer is one boundary's
// group for one micro-batch in one direction (every tensor forward, the FLOAT32 ones
// back), named as the program's CommRefs name it: (send, direction, boundary,
// micro-batch). Post never blocks; Wait completes the transfer. Each direction of each
// pair of ranks numbers its messages from 0 in every run of a program (Reset), and the
// number is the tag (transport.h, Ordering). A transfer between two virtual stages of
// this rank never reaches the transport: the receive's Wait takes the sender's tensors
// (the send must have been posted before it; the verifier proves it is).
#ifndef PPC_RUNTIME_COMM_ENGINE_H_
#define PPC_RUNTIME_COMM_ENGINE_H_

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ir/program.pb.h"
#include "ir/topology.h"
#include "runtime/stage_model.h"
#include "runtime/transport.h"

namespace ppc::runtime {

class CommEngine {
 public:
  // One tensor of a transfer: [micro_batch_size, per-sample shape...] of a dtype.
  struct TensorShape {
    std::vector<int64_t> sizes;
    at::ScalarType dtype;
  };
  // A transfer as Load resolves it for an instruction.
  struct Transfer {
    bool send = false;
    ir::Direction direction = ir::ACTIVATION;
    int boundary = 0, micro_batch = 0;
    int peer_stage = 0, peer_rank = 0;
    // Both ends on this rank (adjacent virtual stages on one stage, as at the turn of
    // the V placement): the tensors are handed over in memory, no transport involved.
    bool local = false;
    const std::vector<TensorShape>* shapes = nullptr;  // what it carries
    std::string Text() const;                          // "send/activation/0/3"
  };
  // A completed receive: the group that arrived (the FLOAT32 members of a gradient
  // group only) and the slot the program lands it in.
  struct Received {
    int slot = 0;
    Group tensors;
  };

  // `plan` has passed the structural checks; this rank is `replica` of its stage.
  // Received tensors are allocated on `device`.
  CommEngine(Transport* transport, const ir::Plan& plan, const ir::Grid& grid, int replica, absl::Duration timeout,
             const torch::Device& device = torch::kCPU);

  Transfer Resolve(bool send, ir::Direction direction, int boundary, int micro_batch) const;

  // A new run of a program: sequence numbers from 0 again.
  void Reset();
  // Posts a send of `group`, which must be what the transfer carries (count, shapes,
  // dtypes): FailedPrecondition naming `what` (whose group it is) otherwise, before
  // anything is posted, since a transport may fail hard on a message of another size
  // than the receive posted for it. The engine keeps its own reference to the data.
  absl::Status PostSend(const Transfer& transfer, const Group& group, const std::string& what);
  // Posts a receive into fresh buffers of the transfer's shapes, for slot `slot`.
  absl::Status PostRecv(const Transfer& transfer, int slot);
  // Completes a posted transfer (Load checked that it was posted); a receive's group
  // comes back. Past the timeout: DeadlineExceeded naming the transfer and the peer.
  absl::StatusOr<Received> Wait(const Transfer& transfer);

  // Load-time check of this stage's channels against the peers' programs (every rank
  // has the whole plan): on each ordered pair of stages, the k-th transfer one posts as
  // a send must be the k-th the other posts as a receive, else the transport would
  // match messages of different transfers (Gloo's I/O thread aborts the process when
  // the sizes differ; equal sizes would silently deliver the wrong data). Appends one
  // problem per channel that disagrees, naming the ranks of `replica` and the first
  // pair of instructions that differ. `eval`: compare the eval programs.
  static void CheckChannels(const ir::Plan& plan, const ir::Grid& grid, int stage, int replica, bool eval,
                            std::vector<std::string>& problems);

 private:
  using Key = std::tuple<bool, int, int, int>;  // (send, direction, boundary, micro-batch)
  struct Pending {
    std::vector<Transport::Handle> handles;  // one per tensor
    Group tensors;                           // kept alive until the Wait
    int slot = 0;
  };
  static Key KeyOf(const Transfer& t) { return Key{t.send, t.direction, t.boundary, t.micro_batch}; }
  absl::Status Post(const Transfer& transfer, Pending op);

  Transport* transport_;
  const ir::Grid grid_;
  const int replica_;
  const absl::Duration timeout_;
  const torch::Device device_;
  // [boundary][0: activation, 1: gradient]
  std::vector<std::vector<TensorShape>> shapes_[2];
  std::map<Key, Pending> pending_;
  // Local transfers sent and not yet received: (direction, boundary, micro-batch) ->
  // the sender's tensors.
  std::map<std::tuple<int, int, int>, Group> local_;
  // Messages posted so far in this run, per peer rank: the tags.
  std::map<int, uint32_t> send_seq_, recv_seq_;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_COMM_ENGINE_H_
