// AlexNet on CIFAR-10, the seed's training/pipeline_parallelism/train.py in ppc:
//
//   train [--pipeline-parallel-size P] [--nproc N] [--steps S] [--seed 1138]
//         [--deepspeed_config ds_config.json] [--device cpu|cuda] [--backend gloo|nccl] [--data synthetic|DIR]
//         [--image-size 224] [checkpoint, export and evaluation flags: tools/run_flags.h]
//
// P > 0: pipeline mode (the seed's train_pipe): P stages, N/P data-parallel replicas,
// 1F1B, partition by parameters. P = 0: base mode (train_base): plain data-parallel
// training over N ranks. The plan is compiled by passes::CompilePlan, left on disk for
// `ppc inspect`, and run by N local ranks exactly as `pprun PLAN --nproc N` would.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "compiler/deepspeed_config.h"
#include "google/protobuf/text_format.h"
#include "ir/layer_shapes.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/analysis/verifier.h"
#include "passes/compile.h"
#include "passes/registry.h"
#include "runtime/runner.h"
#include "tools/flag_names.h"
#include "tools/launcher.h"
#include "tools/run_flags.h"

extern const char kAlexNetSpec[];
extern const char kSeedDeepSpeedConfig[];

ABSL_FLAG(int, steps, 100, "quit after this many steps");
ABSL_FLAG(int, pipeline_parallel_size, 2, "pipeline stages; 0 = plain data-parallel training (train_base)");
ABSL_FLAG(int64_t, seed, 1138, "PRNG seed");
ABSL_FLAG(std::string, deepspeed_config, "", "DeepSpeed JSON config (default: the seed's ds_config.json)");
ABSL_FLAG(std::string, data, "synthetic", "'synthetic', or a directory with CIFAR-10's binary files");
ABSL_FLAG(int, image_size, 224, "image side after resize + centre crop (the seed: 224)");
ABSL_FLAG(int, nproc, 0, "ranks to start (default: P in pipeline mode, 1 in base mode)");
ABSL_FLAG(int, local_rank, -1, "accepted for DeepSpeed-launcher compatibility; ignored");
ABSL_FLAG(std::string, plan_out, "/tmp/ppc_alexnet_cifar10.pb", "where the compiled plan is left");
ABSL_FLAG(std::string, partition, "parameters", "partition method (the seed: parameters)");
ABSL_FLAG(int, timeout_s, 300, "seconds any wait may block before failing");
ABSL_FLAG(std::string, metrics_out, "", "rank 0 writes 'step loss samples_per_s' lines here");
ABSL_FLAG(int, print_every, 0, "print every N steps (default: the config's steps_per_print)");
ABSL_FLAG(std::string, batch_weight_grads, "",
          "compute the weight gradients K micro-batches at a time, one call per layer (all | K; default: off)");
ABSL_FLAG(std::string, dump_weights, "", "write every parameter as raw float32 here after the last step");

namespace ppc {
namespace {

absl::StatusOr<ir::Plan> BuildPlan() {
  const int p = absl::GetFlag(FLAGS_pipeline_parallel_size);
  if (p < 0) return absl::InvalidArgumentError("--pipeline-parallel-size must be >= 0");
  const int stages = std::max(p, 1);
  const int nproc = absl::GetFlag(FLAGS_nproc) > 0 ? absl::GetFlag(FLAGS_nproc) : stages;
  if (nproc % stages != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--nproc ", nproc, " is not a multiple of --pipeline-parallel-size ", stages));
  }
  const int dp = nproc / stages;

  ir::ModelSpec model;
  if (!google::protobuf::TextFormat::ParseFromString(kAlexNetSpec, &model)) {
    return absl::InternalError("built-in AlexNet spec does not parse");
  }
  const int size = absl::GetFlag(FLAGS_image_size);
  // The true minimum: the smallest side every layer of the model can take (output sizes
  // only grow with the input, so a binary search finds it).
  auto fits = [&](int side) {
    std::vector<ir::TensorSpec> group(1, model.input());  // the input's dtype and name
    group[0].clear_shape();
    for (int d : {3, side, side}) group[0].add_shape(d);
    for (const auto& layer : model.layers()) {
      auto info = ir::InferGroup(layer, group);
      if (!info.ok()) return false;
      group = std::move(info->outputs);
    }
    return true;
  };
  if (size > 4096) return absl::InvalidArgumentError(absl::StrCat("--image-size ", size, " is more than 4096"));
  if (size < 1 || !fits(size)) {
    int lo = 1, hi = 4096;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (fits(mid)) hi = mid; else lo = mid + 1;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("--image-size ", size, " is too small for AlexNet: the smallest that works is ", lo));
  }
  model.mutable_input()->set_shape(1, size);
  model.mutable_input()->set_shape(2, size);

  const std::string config_path = absl::GetFlag(FLAGS_deepspeed_config);
  absl::StatusOr<DeepSpeedConfig> ds = config_path.empty()
                                           ? ParseDeepSpeedConfig(kSeedDeepSpeedConfig, dp, "built-in ds_config.json")
                                           : ReadDeepSpeedConfig(config_path, dp);
  if (!ds.ok()) return ds.status();
  for (const std::string& w : ds->warnings) std::cerr << "warning: " << w << "\n";
  ir::TrainingConfig config = ds->config;
  config.set_seed(absl::GetFlag(FLAGS_seed));
  config.set_steps(absl::GetFlag(FLAGS_steps));
  config.set_schedule(p == 0 ? "data-parallel" : "1f1b");
  if (config.partition_method().empty()) config.set_partition_method(absl::GetFlag(FLAGS_partition));
  ir::Topology topology;
  topology.set_num_stages(stages);
  topology.set_data_parallel(dp);

  // The default pipeline for the schedule (with batch-weight-grads when asked), verified
  // after every pass, then stamped.
  passes::CompileOptions options;
  if (const std::string k = absl::GetFlag(FLAGS_batch_weight_grads); !k.empty()) {
    ASSIGN_OR_RETURN(std::string pipeline, passes::DefaultPipeline(config));
    ASSIGN_OR_RETURN(options.pipeline, passes::WithBatchWeightGrads(pipeline, k));
  }
  ASSIGN_OR_RETURN(ir::Plan plan, passes::CompilePlan(model, topology, config, options));
  RETURN_IF_ERROR(passes::VerifyRunnablePlan(plan));
  const ir::TrainingConfig& c = plan.config();
  std::cerr << "ppc: AlexNet on CIFAR-10 (" << absl::GetFlag(FLAGS_data) << ", " << size << "x" << size << "), "
            << (p == 0 ? "base mode (data-parallel)" : "pipeline mode") << ": " << stages << " stage(s) x " << dp
            << " replica(s), " << c.micro_batches() << " micro-batches of " << c.micro_batch_size()
            << " per replica (train_batch_size " << ds->train_batch_size << "), " << c.optimizer().type()
            << " lr=" << c.optimizer().lr() << "\n";
  return plan;
}

absl::Status RunAsRank(runtime::RunOptions options) {
  // The run's private copy of the plan the launcher verified (never the shared --plan-out,
  // which another run may be writing).
  const char* path = std::getenv(kPlanPathEnv);
  const char* verified = std::getenv(kVerifiedFingerprintEnv);
  if (path == nullptr || verified == nullptr) return absl::FailedPreconditionError("not started by train's launcher");
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(path));
  RETURN_IF_ERROR(ir::CheckStamp(plan, path));
  if (plan.fingerprint() != verified) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not the plan the launcher verified"));
  }
  // The environment is not proof: each rank verifies the plan it runs itself.
  if (absl::Status v = passes::VerifyRunnablePlan(plan); !v.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the verifier rejects the plan:\n  ", v.message()));
  }
  runtime::RendezvousOptions rv;
  rv.rank = std::atoi(std::getenv("RANK"));
  rv.world_size = std::atoi(std::getenv("WORLD_SIZE"));
  rv.master_port = std::atoi(std::getenv("MASTER_PORT"));
  rv.rank0_hosts_store = false;
  rv.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  options.steps = absl::GetFlag(FLAGS_steps);
  options.metrics_out = absl::GetFlag(FLAGS_metrics_out);
  options.dump_weights = absl::GetFlag(FLAGS_dump_weights);
  options.print_every = absl::GetFlag(FLAGS_print_every);
  options.runtime.timeout = rv.timeout;
  options.runtime.data = absl::GetFlag(FLAGS_data);
  RETURN_IF_ERROR(ApplyDeviceFlags(&options, rv.rank, rv.world_size));
  return runtime::RunRank(plan, rv, options).status();
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(std::string("AlexNet on CIFAR-10 with pipeline (P > 0) or data-parallel (P = 0) training\n") +
                               kRunFlagsUsage);
  std::vector<std::string> storage;
  if (const std::string e = NormalizeFlagNames(argc, argv, storage); !e.empty()) {
    std::fprintf(stderr, "%s: %s\n", "train", e.c_str());
    return 2;
  }
  // The seed's short options.
  for (int i = 1; i < argc; ++i) {
    if (storage[i] == "-p") storage[i] = "--pipeline_parallel_size";
    if (storage[i] == "-s") storage[i] = "--steps";
    argv[i] = storage[i].data();
  }
  std::vector<char*> original(argv, argv + argc);
  absl::ParseCommandLine(argc, argv);
  runtime::RunOptions options;
  absl::Status flags = ApplyRunFlags(&options);
  if (flags.ok() && absl::GetFlag(FLAGS_steps) < 1) flags = absl::InvalidArgumentError("--steps must be >= 1");
  if (flags.ok() && absl::GetFlag(FLAGS_seed) < 0) flags = absl::InvalidArgumentError("--seed must be >= 0 (as ppc's)");
  if (flags.ok() && absl::GetFlag(FLAGS_print_every) < 0) flags = absl::InvalidArgumentError("--print-every must be >= 0");
  if (flags.ok() && absl::GetFlag(FLAGS_nproc) < 0) flags = absl::InvalidArgumentError("--nproc must be >= 0");
  if (flags.ok() && absl::GetFlag(FLAGS_timeout_s) < 1) flags = absl::InvalidArgumentError("--timeout-s must be >= 1");
  if (flags.ok() && absl::GetFlag(FLAGS_data).empty()) {
    flags = absl::InvalidArgumentError("--data is empty; give 'synthetic' or a CIFAR-10 directory");
  }
  if (!flags.ok()) {
    std::cerr << "train: " << flags.message() << "\n";
    return 2;
  }
  if (std::getenv(kLaunchedEnv) != nullptr) {
    absl::Status s = RunAsRank(options);
    if (!s.ok()) {
      const std::string line = absl::StrCat("train: rank ", std::getenv("RANK"), ": ", s.ToString(), "\n");
      fwrite(line.data(), 1, line.size(), stderr);
      return 1;
    }
    return 0;
  }
  if (absl::Status out = ir::CheckOutputPath(absl::GetFlag(FLAGS_plan_out), "--plan-out"); !out.ok()) {
    std::cerr << "train: " << out.message() << "\n";
    return 2;
  }
  auto plan = BuildPlan();
  if (!plan.ok()) {
    std::cerr << "train: " << plan.status() << "\n";
    return plan.status().code() == absl::StatusCode::kUnimplemented ? 2 : 1;
  }
  const std::string path = absl::GetFlag(FLAGS_plan_out);
  absl::Status saved = ir::SavePlan(*plan, path);
  if (!saved.ok()) {
    std::cerr << "train: " << saved << "\n";
    return 1;
  }
  std::cerr << "ppc: plan written to " << path << " (inspect it with: ppc inspect " << path << ")\n";
  std::string dir;
  auto private_path = WritePrivatePlan(*plan, &dir);
  if (!private_path.ok()) {
    std::cerr << "train: " << private_path.status() << "\n";
    return 1;
  }
  auto grid = ir::Grid::Of(*plan);
  if (!grid.ok()) {
    std::cerr << "train: " << grid.status() << "\n";
    return 1;
  }
  // --device and --backend as rank 0 will resolve them: refused here, before any rank starts.
  runtime::RunOptions probe = options;
  if (absl::Status d = ApplyDeviceFlags(&probe, 0, grid->world_size()); !d.ok()) {
    std::cerr << "train: " << d.message() << "\n";
    RemoveRunDir(dir);
    return 2;
  }
  LaunchOptions launch;
  launch.nproc = grid->world_size();
  launch.args = WithoutFlag(argc, original.data(), "--nproc");
  launch.timeout_s = absl::GetFlag(FLAGS_timeout_s);
  launch.env[kPlanPathEnv] = *private_path;
  launch.env[kVerifiedFingerprintEnv] = plan->fingerprint();
  const int code = LaunchLocalRanks(launch);
  RemoveRunDir(dir);
  return code;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) { return ppc::Main(argc, argv); }
