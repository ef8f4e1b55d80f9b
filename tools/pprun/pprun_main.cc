// pprun: run a compiled plan.
//
//   pprun PLAN --nproc N [--steps S]     starts N local ranks itself
//   pprun PLAN [--steps S]               one rank, launched by torchrun/srun/mpirun:
//                                        reads RANK, WORLD_SIZE, LOCAL_RANK,
//                                        MASTER_ADDR, MASTER_PORT
//   plus checkpoint, export and evaluation flags (tools/run_flags.h).
//
// Rank 0 prints "step N loss L samples/s X" per step. A plan whose world size does
// not match is refused before any step runs.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "runtime/gloo_transport.h"
#include "runtime/runner.h"
#include "tools/flag_names.h"
#include "tools/launcher.h"
#include "tools/run_flags.h"

ABSL_FLAG(int, nproc, 0, "start this many local ranks (0: this process is one rank; read RANK etc.)");
ABSL_FLAG(int, steps, 0, "training steps (default: the plan's config.steps)");
ABSL_FLAG(int, timeout_s, 120, "seconds any wait may block before failing");
ABSL_FLAG(std::string, metrics_out, "", "rank 0 writes 'step loss samples_per_s' lines here");
ABSL_FLAG(std::string, dump_weights, "", "after the last step, write every parameter as raw float32 into this dir");
ABSL_FLAG(bool, quiet, false, "do not print per-step lines");
ABSL_FLAG(int, print_every, 0, "print every N steps (default: the plan's steps_per_print, else every step)");
ABSL_FLAG(std::string, data, "synthetic", "'synthetic' or a directory with CIFAR-10's binary files");

namespace ppc {
namespace {

absl::StatusOr<int> EnvInt(const char* name, std::optional<int> fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", name,
                                                   " is not set (use --nproc N, or launch with torchrun/srun)"));
  }
  int out;
  if (!absl::SimpleAtoi(v, &out)) return absl::InvalidArgumentError(absl::StrCat(name, "='", v, "' is not an integer"));
  return out;
}

absl::Status RunOneRank(const std::string& plan_path, runtime::RunOptions options) {
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(plan_path));
  runtime::RendezvousOptions rv;
  ASSIGN_OR_RETURN(rv.rank, EnvInt("RANK", 0));
  ASSIGN_OR_RETURN(rv.world_size, EnvInt("WORLD_SIZE", 1));
  const int want = plan.topology().num_stages() * plan.topology().data_parallel();
  if (rv.world_size != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        plan_path, ": the plan needs ", want, " ranks (", plan.topology().num_stages(), " stages x ",
        plan.topology().data_parallel(), " data-parallel) but WORLD_SIZE is ", rv.world_size));
  }
  const char* addr = std::getenv("MASTER_ADDR");
  rv.master_addr = addr && *addr ? addr : "127.0.0.1";
  ASSIGN_OR_RETURN(rv.master_port, EnvInt("MASTER_PORT", rv.world_size == 1 ? std::optional<int>(0) : std::nullopt));
  rv.rank0_hosts_store = std::getenv(kLaunchedEnv) == nullptr;
  rv.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  options.steps = absl::GetFlag(FLAGS_steps);
  options.metrics_out = absl::GetFlag(FLAGS_metrics_out);
  options.dump_weights = absl::GetFlag(FLAGS_dump_weights);
  options.print = !absl::GetFlag(FLAGS_quiet);
  options.print_every = absl::GetFlag(FLAGS_print_every);
  options.runtime.data = absl::GetFlag(FLAGS_data);
  options.runtime.timeout = rv.timeout;
  auto records = runtime::RunRank(plan, rv, options);
  if (!records.ok()) return records.status();
  return absl::OkStatus();
}

// Checks the plan's world size, then starts `nproc` local ranks of this program.
int Launch(int nproc, int argc, char** argv, const std::string& plan_path) {
  auto plan = ir::LoadPlan(plan_path);
  if (!plan.ok()) {
    std::cerr << "pprun: " << plan.status() << "\n";
    return 1;
  }
  const int want = plan->topology().num_stages() * plan->topology().data_parallel();
  if (nproc != want) {
    std::cerr << "pprun: " << plan_path << ": the plan needs " << want << " ranks (" << plan->topology().num_stages()
              << " stages x " << plan->topology().data_parallel() << " data-parallel), --nproc is " << nproc << "\n";
    return 1;
  }
  return LaunchLocalRanks(nproc, WithoutFlag(argc, argv, "--nproc"), absl::GetFlag(FLAGS_timeout_s));
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "run a compiled plan.\n"
      "  pprun PLAN --nproc N [--steps S]   start N local ranks\n"
      "  pprun PLAN [--steps S]             one rank; reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT\n" +
      std::string(kRunFlagsUsage));
  std::vector<std::string> storage;
  NormalizeFlagNames(argc, argv, storage);
  std::vector<char*> original(argv, argv + argc);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string plan_path = args[1];
  runtime::RunOptions options;
  absl::Status flags = ApplyRunFlags(&options);
  if (flags.ok() && absl::GetFlag(FLAGS_steps) < 0) flags = absl::InvalidArgumentError("--steps must be >= 0");
  if (flags.ok() && absl::GetFlag(FLAGS_print_every) < 0) flags = absl::InvalidArgumentError("--print-every must be >= 0");
  if (flags.ok() && absl::GetFlag(FLAGS_nproc) < 0) flags = absl::InvalidArgumentError("--nproc must be >= 0");
  if (flags.ok() && absl::GetFlag(FLAGS_timeout_s) < 1) flags = absl::InvalidArgumentError("--timeout-s must be >= 1");
  if (!flags.ok()) {
    std::cerr << "pprun: " << flags.message() << "\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_nproc) > 0) return Launch(absl::GetFlag(FLAGS_nproc), argc, original.data(), plan_path);
  absl::Status s = RunOneRank(plan_path, options);
  if (!s.ok()) {
    const char* rank = std::getenv("RANK");
    // One write, so that the lines of ranks failing together do not interleave.
    const std::string line = absl::StrCat("pprun: rank ", rank ? rank : "0", ": ", s.ToString(), "\n");
    fwrite(line.data(), 1, line.size(), stderr);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) { return ppc::Main(argc, argv); }
