// CreateNcclTransport in a build without CUDA: `--backend nccl` fails with this error.
#include "absl/status/status.h"
#include "runtime/nccl_transport.h"

namespace ppc::runtime {

absl::StatusOr<std::unique_ptr<Transport>> CreateNcclTransport(const RendezvousOptions& options, int device_index) {
  (void)options;
  (void)device_index;
  return absl::UnimplementedError(
      "this build has no CUDA/NCCL transport: build with bazel --config=cuda on a CUDA LibTorch, or with CMake "
      "against a CUDA LibTorch (PPC_WITH_CUDA=ON)");
}

}  // namespace ppc::runtime
