#include "tools/run_flags.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "runtime/device.h"

ABSL_FLAG(std::string, save_dir, "", "save checkpoints here (DeepSpeed's layout; DIR/latest names the newest)");
ABSL_FLAG(int, save_every, 0, "with --save-dir: also save after every N steps (default: only after the last step)");
ABSL_FLAG(std::string, load, "", "resume from the checkpoint in this directory (DIR/latest, or --tag)");
ABSL_FLAG(std::string, load_dir, "", "DeepSpeed's name for --load");
ABSL_FLAG(std::string, tag, "", "with --load: the checkpoint tag to load (default: the one DIR/latest names)");
ABSL_FLAG(bool, load_module_only, false, "with --load: load the weights only; optimizer state and step start fresh");
ABSL_FLAG(std::string, export, "", "after the run, write the model as one PyTorch state dict with its layer names");
ABSL_FLAG(bool, eval, false, "evaluate instead of training: --eval-steps held-out batches, forward only");
ABSL_FLAG(int, eval_steps, 1, "held-out batches (global batches) per evaluation");
ABSL_FLAG(int, eval_every, 0, "evaluate after every N training steps (0: never)");
ABSL_FLAG(std::string, predict, "", "with --eval: write the last stage's outputs and labels here (a .pt file)");
ABSL_FLAG(bool, memory_report, false,
          "every rank prints its parameter and optimizer-state bytes, peak RSS and activation bytes (counted)");
ABSL_FLAG(std::string, trace, "",
          "write a Chrome trace of the training steps per rank to DIR/rank<R>.json (chrome://tracing, Perfetto)");
ABSL_FLAG(std::string, device, "auto",
          "cpu, cuda (rank with LOCAL_RANK r uses cuda:r, or the GPUs are shared) or auto (cuda when a GPU is visible)");
ABSL_FLAG(std::string, backend, "auto",
          "gloo, nccl (a GPU per local rank) or auto (nccl on cuda when every local rank has its own GPU, else gloo)");

namespace ppc {
namespace {

absl::Status Bad(const std::string& flag, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", what));
}

// An output file: its directory must exist, and what is there already must be a
// regular file (never a directory, a FIFO, a device or a link, which would be replaced).
absl::Status CheckOutputFile(const std::string& flag, const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  return ir::CheckOutputPath(path, "--" + flag);
}

}  // namespace

absl::Status ApplyRunFlags(runtime::RunOptions* o) {
  o->save_dir = absl::GetFlag(FLAGS_save_dir);
  o->save_every = absl::GetFlag(FLAGS_save_every);
  o->load_dir = absl::GetFlag(FLAGS_load);
  const std::string load_dir = absl::GetFlag(FLAGS_load_dir);
  if (!load_dir.empty()) {
    if (!o->load_dir.empty() && o->load_dir != load_dir) return Bad("load-dir", "and --load name different directories");
    o->load_dir = load_dir;
  }
  o->load_tag = absl::GetFlag(FLAGS_tag);
  o->load_module_only = absl::GetFlag(FLAGS_load_module_only);
  o->export_path = absl::GetFlag(FLAGS_export);
  o->eval_only = absl::GetFlag(FLAGS_eval);
  o->eval_steps = absl::GetFlag(FLAGS_eval_steps);
  o->eval_every = absl::GetFlag(FLAGS_eval_every);
  o->predict_path = absl::GetFlag(FLAGS_predict);
  o->memory_report = absl::GetFlag(FLAGS_memory_report);
  o->trace_dir = absl::GetFlag(FLAGS_trace);

  if (o->save_every < 0) return Bad("save-every", absl::StrCat("must be >= 0, got ", o->save_every));
  if (o->save_every > 0 && o->save_dir.empty()) return Bad("save-every", "needs --save-dir");
  std::error_code ec;
  if (!o->trace_dir.empty() && !std::filesystem::is_directory(o->trace_dir, ec)) {
    return Bad("trace", absl::StrCat("'", o->trace_dir, "' is not a directory"));
  }
  if (!o->save_dir.empty() && std::filesystem::exists(o->save_dir, ec) &&
      !std::filesystem::is_directory(o->save_dir, ec)) {
    return Bad("save-dir", absl::StrCat("'", o->save_dir, "' exists and is not a directory"));
  }
  if (!o->load_dir.empty() && !std::filesystem::is_directory(o->load_dir, ec)) {
    return Bad("load", absl::StrCat("'", o->load_dir, "' is not a directory"));
  }
  if (!o->load_tag.empty() && o->load_dir.empty()) return Bad("tag", "needs --load");
  if (o->load_module_only && o->load_dir.empty()) return Bad("load-module-only", "needs --load");
  if (o->eval_steps < 1) return Bad("eval-steps", absl::StrCat("must be >= 1, got ", o->eval_steps));
  if (o->eval_every < 0) return Bad("eval-every", absl::StrCat("must be >= 0, got ", o->eval_every));
  if (o->eval_only && o->eval_every > 0) return Bad("eval-every", "is for training; --eval evaluates once");
  if (o->eval_only && !o->save_dir.empty()) return Bad("save-dir", "has nothing to save with --eval (no training)");
  if (!o->predict_path.empty() && !o->eval_only) return Bad("predict", "needs --eval");
  if (auto s = CheckOutputFile("export", o->export_path); !s.ok()) return s;
  if (auto s = CheckOutputFile("predict", o->predict_path); !s.ok()) return s;
  if (!o->export_path.empty() && o->export_path == o->predict_path) {
    return Bad("predict", "and --export name the same file");
  }
  return absl::OkStatus();
}

absl::Status ApplyDeviceFlags(runtime::RunOptions* o, int rank, int world_size) {
  // torchrun's variables; pprun's launcher sets them too. One machine by default.
  auto env = [](const char* name, int fallback, int lo, int hi) -> absl::StatusOr<int> {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return fallback;
    int out;
    if (!absl::SimpleAtoi(v, &out) || out < lo || out > hi) {
      return absl::InvalidArgumentError(absl::StrCat(name, "='", v, "' is not an integer in [", lo, ", ", hi, "]"));
    }
    return out;
  };
  ASSIGN_OR_RETURN(int local_world, env("LOCAL_WORLD_SIZE", world_size, 1, std::max(1, world_size)));
  ASSIGN_OR_RETURN(int local_rank, env("LOCAL_RANK", rank % local_world, 0, local_world - 1));
  ASSIGN_OR_RETURN(runtime::DeviceChoice choice,
                   runtime::ChooseDevice(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_backend), rank, local_rank,
                                         local_world, runtime::DeviceInventory::Probe()));
  o->runtime.device = choice.device;
  o->backend = choice.backend;
  return absl::OkStatus();
}

}  // namespace ppc
