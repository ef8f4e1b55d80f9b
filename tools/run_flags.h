// The flags pprun and the examples share for checkpoints, export and evaluation, and
// their translation into runtime::RunOptions (with every bad combination refused).
#ifndef PPC_TOOLS_RUN_FLAGS_H_
#define PPC_TOOLS_RUN_FLAGS_H_

#include "absl/status/status.h"
#include "runtime/runner.h"

namespace ppc {

// Fills the checkpoint, export and evaluation fields of `options` from the flags.
// InvalidArgument for bad values and combinations, naming the flag.
absl::Status ApplyRunFlags(runtime::RunOptions* options);

// Resolves --device and --backend for this rank of `world_size` (runtime/device.h),
// with LOCAL_RANK and LOCAL_WORLD_SIZE from the environment (default: one machine).
absl::Status ApplyDeviceFlags(runtime::RunOptions* options, int rank, int world_size);

// The flag list for usage messages.
inline constexpr char kRunFlagsUsage[] =
    "  checkpoints: --save-dir DIR [--save-every N]   --load DIR [--tag T] [--load-module-only]\n"
    "  export:      --export FILE   (one PyTorch state dict with the model's layer names)\n"
    "  evaluation:  --eval [--eval-steps N] [--predict FILE]   --eval-every N\n"
    "  memory:      --memory-report\n"
    "  timeline:    --trace DIR   (a Chrome trace per rank)\n"
    "  device:      --device cpu|cuda|auto   --backend gloo|nccl|auto";

}  // namespace ppc

#endif  // PPC_TOOLS_RUN_FLAGS_H_
