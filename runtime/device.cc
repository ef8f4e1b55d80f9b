#include "runtime/device.h"

#include <torch/cuda.h>

#include "absl/strings/str_cat.h"

namespace ppc::runtime {

std::string DeviceChoice::Text() const { return absl::StrCat(device.str(), " over ", backend); }

DeviceInventory DeviceInventory::Probe() {
  DeviceInventory inv;
  inv.cuda_devices = static_cast<int>(torch::cuda::device_count());
#ifdef PPC_NCCL_BUILT
  inv.nccl_built = true;  // runtime/nccl_transport.cc is linked in
#else
  inv.nccl_built = false;  // the build links nccl_transport_unavailable.cc
#endif
  return inv;
}

absl::StatusOr<DeviceChoice> ChooseDevice(const std::string& device, const std::string& backend, int rank,
                                          int local_rank, int local_world_size, const DeviceInventory& inv) {
  const std::string who = absl::StrCat("rank ", rank);
  if (device != "auto" && device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--device '", device, "' is not cpu, cuda or auto"));
  }
  if (backend != "auto" && backend != "gloo" && backend != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("--backend '", backend, "' is not gloo, nccl or auto"));
  }
  if (local_world_size < 1 || local_rank < 0 || local_rank >= local_world_size) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": LOCAL_RANK ", local_rank, " is not in [0, LOCAL_WORLD_SIZE ",
                                                   local_world_size, ")"));
  }
  DeviceChoice choice;
  const bool cuda = device == "cuda" || (device == "auto" && inv.cuda_devices > 0);
  if (cuda && inv.cuda_devices < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        who, ": --device cuda, but this process sees no GPU (none is visible, or this LibTorch has no CUDA); "
             "use --device cpu"));
  }
  if (cuda) choice.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % inv.cuda_devices));
  const bool own_gpu = cuda && local_world_size <= inv.cuda_devices;
  if (backend == "nccl") {
    if (!cuda) {
      return absl::FailedPreconditionError(
          absl::StrCat(who, ": --backend nccl needs --device cuda (NCCL moves GPU memory); use --backend gloo on cpu"));
    }
    if (!own_gpu) {
      return absl::FailedPreconditionError(absl::StrCat(
          who, ": --backend nccl needs a GPU per local rank, but ", local_world_size, " local ranks share ",
          inv.cuda_devices, " GPU(s) (NCCL refuses two ranks of one communicator on one GPU); use --backend gloo"));
    }
    if (!inv.nccl_built) {
      return absl::FailedPreconditionError(absl::StrCat(
          who, ": --backend nccl, but this build has no NCCL transport (build with bazel --config=cuda or with "
               "CMake against a CUDA LibTorch); use --backend gloo"));
    }
  }
  choice.backend = backend == "auto" ? (own_gpu && inv.nccl_built ? "nccl" : "gloo") : backend;
  return choice;
}

}  // namespace ppc::runtime
