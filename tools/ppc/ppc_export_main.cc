// ppc-export: one PyTorch state dict of a whole model from a checkpoint directory,
// keyed by the model's own layer names (torchvision's AlexNet: features.0.weight, ...).
// `ppc export ...` runs this program (it links LibTorch; ppc itself does not).
//
//   ppc-export DIR [--tag T] --out FILE [--model M.textproto]
//
// DIR is what pprun --save-dir wrote (the tag in DIR/latest unless --tag), or a
// DeepSpeed layer_XX-model_states.pt directory, which needs --model to name its layers.
// Every file is checked against the checkpoint's manifest first.
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "runtime/checkpoint.h"
#include "tools/flag_names.h"

ABSL_FLAG(std::string, tag, "", "checkpoint tag (default: the one DIR/latest names)");
ABSL_FLAG(std::string, out, "", "the state dict to write (.pt)");
ABSL_FLAG(std::string, model, "", "model spec naming the layers of a checkpoint without job.json (an import)");

namespace ppc {
namespace {

absl::Status Export(const std::string& dir) {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out FILE is required");
  RETURN_IF_ERROR(ir::CheckOutputPath(out, "--out"));
  ASSIGN_OR_RETURN(std::string tag_dir, runtime::ResolveCheckpoint(dir, absl::GetFlag(FLAGS_tag)));
  ir::ModelSpec model;
  const std::string model_path = absl::GetFlag(FLAGS_model);
  if (!model_path.empty()) RETURN_IF_ERROR(ir::ParseTextProtoFile(model_path, &model));
  RETURN_IF_ERROR(runtime::ExportCheckpoint(tag_dir, model_path.empty() ? nullptr : &model, out));
  std::cerr << "ppc export: wrote " << out << " from " << tag_dir << "\n";
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "write a checkpoint's model as one PyTorch state dict.\n"
      "  ppc export DIR [--tag T] --out FILE [--model M.textproto]");
  std::vector<std::string> storage;
  if (const std::string e = NormalizeFlagNames(argc, argv, storage); !e.empty()) {
    std::fprintf(stderr, "%s: %s\n", "ppc export", e.c_str());
    return 2;
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  absl::Status s = Export(args[1]);
  if (!s.ok()) {
    std::cerr << "ppc export: " << s << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) { return ppc::Main(argc, argv); }
