// Checkpoints in DeepSpeed's pipeline layout, readable by PyTorch (docs/checkpoints.md):
//
//   DIR/latest                          the newest complete tag (DeepSpeed's file)
//   DIR/<tag>/layer_XX-model_states.pt  one per global layer: that layer's state dict
//   DIR/<tag>/layer_XX-optim_states.pt  per layer with parameters: optimizer state
//   DIR/<tag>/job.json                  step, data position, RNG, config, model fingerprint
//   DIR/<tag>/manifest.json             every file's size and crc32; written last
//
// Layers are numbered globally, so a checkpoint saved with one partition, topology,
// schedule or ZeRO stage loads into any other of the same model (the fingerprint covers
// the model alone). Saving is crash-safe: every rank writes its files into
// a fresh DIR/<tag>.partial-<random> (temporary name, fsync, rename), rank 0 adds job.json and the
// manifest, moves the directory into place and only then rewrites `latest`; a save
// that fails or is killed leaves the previous checkpoint and `latest` untouched.
// A directory of DeepSpeed's layer_XX-model_states.pt files without a manifest loads as
// initial weights (an import).
#ifndef PPC_RUNTIME_CHECKPOINT_H_
#define PPC_RUNTIME_CHECKPOINT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ir/program.pb.h"
#include "runtime/interpreter.h"

namespace ppc::runtime {

struct SaveOptions {
  std::string dir;
  std::string tag;          // default: global_step<step>, as DeepSpeed names tags
  bool model_only = false;  // only layer_XX-model_states.pt (and the manifest); no job, no `latest`
  absl::Duration timeout = absl::Seconds(120);
  // Testing: this rank dies halfway through writing its first file.
  bool die_mid_write = false;
};

// Saves the state after `step` completed steps. Collective over every rank: replica 0
// of each stage writes that stage's layers (in parallel with the other stages); rank 0
// completes the checkpoint. Returns the tag directory.
absl::StatusOr<std::string> SaveCheckpoint(StageRuntime& rt, const ir::Plan& plan, int64_t step,
                                           const SaveOptions& options);

struct LoadOptions {
  std::string dir;
  std::string tag;             // default: the tag named in DIR/latest
  bool module_only = false;    // weights only: the optimizer state and step start fresh
};

struct LoadedCheckpoint {
  std::string tag_dir;
  int64_t step = 0;                    // completed steps; training continues with the next
  std::optional<DataPosition> data;    // where the training data stood
  bool imported = false;               // no manifest: DeepSpeed-layout weights only
  std::vector<std::string> notes;      // things the user should know (printed by rank 0)
};

// Loads this rank's layers (and optimizer state) into `rt`, verifying every file it
// reads against the manifest. job.json and manifest.json are checked field by field
// (range and consistency: the stored topology and partition must be valid for the stored
// model, `rng.next_step` and the optimizer's steps must equal `step`, the data source must
// be the run's unless `module_only`), and every weight must be finite. Errors name the
// file, the field or tensor, and what is wrong: DataLoss for corrupt or impossible
// contents, FailedPrecondition for a version or checksum algorithm this build does not
// read, InvalidArgument for a checkpoint that does not fit the run. Not collective:
// follow with AgreeOnStatus so that every rank stops if one fails.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(StageRuntime& rt, const ir::Plan& plan, const LoadOptions& options);

// DIR/<tag>, DIR/<the tag in DIR/latest>, or DIR itself when it holds layer files.
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& dir, const std::string& tag);

// Writes one PyTorch state dict of the whole model, keyed by the model's own layer names
// ("features.0.weight", ...; tied weights under every layer that uses them), from the
// checkpoint in `tag_dir`. `model` names the layers of a checkpoint without job.json
// (an import); otherwise the checkpoint's own model is used.
absl::Status ExportCheckpoint(const std::string& tag_dir, const ir::ModelSpec* model, const std::string& out);

// --export: writes the model held by the ranks as one state dict at `out` (as
// ExportCheckpoint does), through a model-only checkpoint in a fresh directory next to
// it that is removed afterwards. Collective over the world.
absl::Status ExportModel(StageRuntime& rt, const ir::Plan& plan, const std::string& out, absl::Duration timeout);

// Every rank learns whether any rank failed: returns `local` if it failed, an error
// naming `what` if another rank did, OK if none did. Collective over the world.
absl::Status AgreeOnStatus(Transport& transport, const absl::Status& local, const std::string& what,
                           absl::Duration timeout);

// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync of the
// directory. A crash leaves either the old file or the new one.
absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_CHECKPOINT_H_
