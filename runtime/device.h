// Where a rank runs and how it talks: `--device cpu|cuda|auto` and
// `--backend gloo|nccl|auto` resolved against what this process can see.
//
//   device auto   cuda when a GPU is visible, else cpu
//   device cuda   rank with local rank r uses cuda:(r mod GPUs): its own GPU when the
//                 machine has one per local rank, else the GPUs are shared
//   backend auto  nccl on cuda when every local rank has its own GPU and this build has
//                 the NCCL transport; gloo otherwise (Gloo stages CUDA tensors through
//                 pinned host memory, which is how several stages share one GPU)
//   backend nccl  needs cuda, a GPU per local rank (NCCL refuses two ranks of one
//                 communicator on one GPU) and a build with the NCCL transport
#ifndef PPC_RUNTIME_DEVICE_H_
#define PPC_RUNTIME_DEVICE_H_

#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace ppc::runtime {

struct DeviceChoice {
  torch::Device device = torch::kCPU;
  std::string backend = "gloo";  // "gloo" | "nccl"
  std::string Text() const;      // "cuda:1 over nccl"
};

// What the process can see (a parameter so that the rules are testable anywhere).
struct DeviceInventory {
  int cuda_devices = 0;      // GPUs visible to this process
  bool nccl_built = false;   // this build has the NCCL transport
  static DeviceInventory Probe();
};

// InvalidArgument for an unknown value; FailedPrecondition for a combination this
// process cannot honour (cuda without a GPU, nccl on cpu, nccl with ranks sharing a GPU,
// nccl in a build without it), naming the rank and what to do instead.
absl::StatusOr<DeviceChoice> ChooseDevice(const std::string& device, const std::string& backend, int rank,
                                          int local_rank, int local_world_size, const DeviceInventory& inventory);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_DEVICE_H_
