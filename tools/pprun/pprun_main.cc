// pprun: run a compiled plan.
//
//   pprun PLAN --nproc N [--steps S]     starts N local ranks itself
//   pprun PLAN [--steps S]               one rank, launched by torchrun/srun/mpirun:
//                                        reads RANK, WORLD_SIZE, LOCAL_RANK,
//                                        MASTER_ADDR, MASTER_PORT
//   plus checkpoint, export and evaluation flags (tools/run_flags.h).
//
// Nothing unverified runs: before any rank starts, the plan's fingerprint (a hash of
// its whole content) is checked and the full verifier runs (once, in the launcher; each
// rank under another launcher). A plan written with verification off is refused unless
// --allow-unverified, which still applies the structural checks. Rank 0 prints
// "step N loss L samples/s X" per step.
#include <cstdio>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ir/limits.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/analysis/verifier.h"
#include "runtime/gloo_transport.h"
#include "runtime/runner.h"
#include "tools/flag_names.h"
#include "tools/launcher.h"
#include "tools/run_flags.h"

ABSL_FLAG(std::optional<int64_t>, nproc, std::nullopt,
          "start this many local ranks (without it, this process is one rank: read RANK etc.)");
ABSL_FLAG(std::optional<int64_t>, steps, std::nullopt, "training steps (default: the plan's config.steps)");
ABSL_FLAG(int64_t, timeout_s, 120, "seconds any wait may block before failing");
ABSL_FLAG(std::string, metrics_out, "", "rank 0 writes 'step loss samples_per_s' lines here");
ABSL_FLAG(std::string, dump_weights, "", "after the last step, write every parameter as raw float32 into this dir");
ABSL_FLAG(bool, quiet, false, "do not print per-step lines");
ABSL_FLAG(std::optional<int64_t>, print_every, std::nullopt,
          "print every N steps (default: the plan's steps_per_print, else every step)");
ABSL_FLAG(std::string, data, "synthetic", "'synthetic' or a directory with CIFAR-10's binary files");
ABSL_FLAG(bool, allow_unverified, false,
          "run a plan marked unverified, or one the verifier rejects (the structural checks still apply)");

namespace ppc {
namespace {

// One write per line (ranks write to the same terminal).
void Say(const std::string& line) {
  const std::string text = line + "\n";
  fwrite(text.data(), 1, text.size(), stderr);
}

absl::StatusOr<int64_t> EnvInt(const char* name, std::optional<int64_t> fallback, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    if (fallback) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", name,
                                                   " is not set (use --nproc N, or launch with torchrun/srun)"));
  }
  int64_t out;
  if (!absl::SimpleAtoi(v, &out) || out < lo || out > hi) {
    return absl::InvalidArgumentError(absl::StrCat(name, "='", v, "' is not an integer in [", lo, ", ", hi, "]"));
  }
  return out;
}

// The plan's ranks, stages and replicas (ir::Grid is the one place that maps them).
absl::StatusOr<ir::Grid> GridOf(const ir::Plan& plan, const std::string& path) {
  absl::StatusOr<ir::Grid> grid = ir::Grid::Of(plan);
  if (!grid.ok()) return Annotate(grid.status(), absl::StrCat(path, ": cannot load the plan"));
  return grid;
}

// The gate every plan passes before a rank runs it.
absl::Status CheckPlanForRun(const ir::Plan& plan, const std::string& path) {
  RETURN_IF_ERROR(ir::CheckStamp(plan, path));
  // Under pprun's own launcher: the launcher verified this plan; a rank refuses any other.
  // The rank still applies every check below itself: an environment variable is not proof.
  const char* launcher_fp = std::getenv(kVerifiedFingerprintEnv);
  if (launcher_fp != nullptr && std::getenv(kLaunchedEnv) != nullptr && plan.fingerprint() != launcher_fp) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": fingerprint ", plan.fingerprint(),
                                                      " is not that of the plan the launcher verified (", launcher_fp,
                                                      ")"));
  }
  if (absl::GetFlag(FLAGS_allow_unverified)) {
    absl::Status structure = ir::CheckPlanStructure(plan, /*complete=*/true);
    if (!structure.ok()) return Annotate(structure, absl::StrCat(path, ": cannot load the plan"));
    return absl::OkStatus();
  }
  if (plan.unverified()) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": the plan is marked unverified (it was written with verification off); verify it with "
              "`ppc verify`, or pass --allow-unverified to run it anyway"));
  }
  absl::Status verified = passes::VerifyRunnablePlan(plan);
  if (!verified.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the verifier rejects the plan, so it does not run "
                                                         "(--allow-unverified to run it anyway):\n  ",
                                                   verified.message()));
  }
  return absl::OkStatus();
}

absl::Status RunOneRank(std::string plan_path, runtime::RunOptions options) {
  // Under pprun's launcher, the run's private copy of the plan.
  if (const char* private_path = std::getenv(kPlanPathEnv); private_path && std::getenv(kLaunchedEnv)) {
    plan_path = private_path;
  }
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(plan_path));
  RETURN_IF_ERROR(ir::CheckStamp(plan, plan_path));
  runtime::RendezvousOptions rv;
  ASSIGN_OR_RETURN(int64_t world, EnvInt("WORLD_SIZE", 1, 1, ir::kMaxRanks));
  ASSIGN_OR_RETURN(int64_t rank, EnvInt("RANK", 0, 0, world - 1));
  rv.rank = static_cast<int>(rank);
  rv.world_size = static_cast<int>(world);
  ASSIGN_OR_RETURN(ir::Grid grid, GridOf(plan, plan_path));
  if (rv.world_size != grid.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(plan_path, ": the plan needs ", grid.world_size(), " ranks (",
                                                   grid.stages(), " stages x ", grid.replicas(),
                                                   " data-parallel) but WORLD_SIZE is ", rv.world_size));
  }
  RETURN_IF_ERROR(CheckPlanForRun(plan, plan_path));
  const char* addr = std::getenv("MASTER_ADDR");
  rv.master_addr = addr && *addr ? addr : "127.0.0.1";
  ASSIGN_OR_RETURN(int64_t port, EnvInt("MASTER_PORT", rv.world_size == 1 ? std::optional<int64_t>(0) : std::nullopt,
                                        rv.world_size == 1 ? 0 : 1, 65535));
  rv.master_port = static_cast<int>(port);
  rv.rank0_hosts_store = std::getenv(kLaunchedEnv) == nullptr;
  rv.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  options.steps = static_cast<int>(absl::GetFlag(FLAGS_steps).value_or(0));  // 0: the plan's
  options.metrics_out = absl::GetFlag(FLAGS_metrics_out);
  options.dump_weights = absl::GetFlag(FLAGS_dump_weights);
  options.print = !absl::GetFlag(FLAGS_quiet);
  options.print_every = static_cast<int>(absl::GetFlag(FLAGS_print_every).value_or(0));  // 0: the plan's
  options.runtime.data = absl::GetFlag(FLAGS_data);
  options.runtime.timeout = rv.timeout;
  RETURN_IF_ERROR(ApplyDeviceFlags(&options, rv.rank, rv.world_size));
  return runtime::RunRank(plan, rv, options).status();
}

// Verifies the plan once, then starts `nproc` local ranks of this program on a private
// copy of it.
int Launch(int nproc, int argc, char** argv, const std::string& plan_path) {
  // Inherited values would describe another run; this launcher sets its own for its ranks.
  unsetenv(kVerifiedFingerprintEnv);
  unsetenv(kPlanPathEnv);
  unsetenv(kLaunchedEnv);
  auto plan = ir::LoadPlan(plan_path);
  if (!plan.ok()) {
    Say(absl::StrCat("pprun: ", plan.status().ToString()));
    return 1;
  }
  // The stamp first: the figures of an edited plan mean nothing.
  if (absl::Status stamp = ir::CheckStamp(*plan, plan_path); !stamp.ok()) {
    Say(absl::StrCat("pprun: ", stamp.ToString()));
    return 1;
  }
  auto grid = GridOf(*plan, plan_path);
  if (!grid.ok()) {
    Say(absl::StrCat("pprun: ", grid.status().ToString()));
    return 1;
  }
  if (nproc != grid->world_size()) {
    Say(absl::StrCat("pprun: ", plan_path, ": the plan needs ", grid->world_size(), " ranks (", grid->stages(),
                     " stages x ", grid->replicas(), " data-parallel), --nproc is ", nproc));
    return 1;
  }
  absl::Status checked = CheckPlanForRun(*plan, plan_path);
  if (!checked.ok()) {
    Say(absl::StrCat("pprun: ", checked.ToString()));
    return 1;
  }
  // --device and --backend as rank 0 will resolve them: refused here, before any rank starts.
  runtime::RunOptions probe;
  if (absl::Status d = ApplyDeviceFlags(&probe, 0, nproc); !d.ok()) {
    Say(absl::StrCat("pprun: ", d.message()));
    return 2;
  }
  std::string dir;
  auto private_path = WritePrivatePlan(*plan, &dir);
  if (!private_path.ok()) {
    Say(absl::StrCat("pprun: ", private_path.status().ToString()));
    return 1;
  }
  LaunchOptions launch;
  launch.nproc = nproc;
  launch.timeout_s = static_cast<int>(absl::GetFlag(FLAGS_timeout_s));
  launch.env[kVerifiedFingerprintEnv] = plan->fingerprint();
  launch.env[kPlanPathEnv] = *private_path;
  launch.args = WithoutFlag(argc, argv, "--nproc");
  const int code = LaunchLocalRanks(launch);
  RemoveRunDir(dir);
  return code;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "run a compiled plan.\n"
      "  pprun PLAN --nproc N [--steps S]   start N local ranks\n"
      "  pprun PLAN [--steps S]             one rank; reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT\n" +
      std::string(kRunFlagsUsage));
  std::vector<std::string> storage;
  if (const std::string e = NormalizeFlagNames(argc, argv, storage); !e.empty()) {
    std::fprintf(stderr, "%s: %s\n", "pprun", e.c_str());
    return 2;
  }
  std::vector<char*> original(argv, argv + argc);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string plan_path = args[1];
  runtime::RunOptions options;
  absl::Status flags = ApplyRunFlags(&options);
  auto ranged = [&](const char* flag, int64_t v, int64_t lo, int64_t hi) {
    if (flags.ok() && (v < lo || v > hi)) {
      flags = absl::InvalidArgumentError(absl::StrCat("--", flag, " is ", v, "; it must be in [", lo, ", ", hi, "]"));
    }
  };
  if (auto v = absl::GetFlag(FLAGS_steps)) ranged("steps", *v, 1, std::numeric_limits<int32_t>::max());
  if (auto v = absl::GetFlag(FLAGS_print_every)) ranged("print-every", *v, 1, std::numeric_limits<int32_t>::max());
  ranged("timeout-s", absl::GetFlag(FLAGS_timeout_s), 1, 86400);
  if (auto n = absl::GetFlag(FLAGS_nproc)) ranged("nproc", *n, 1, ir::kMaxRanks);
  if (flags.ok() && absl::GetFlag(FLAGS_data).empty()) {
    flags = absl::InvalidArgumentError("--data is empty; give 'synthetic' or a CIFAR-10 directory");
  }
  if (!flags.ok()) {
    Say(absl::StrCat("pprun: ", flags.message()));
    return 2;
  }
  if (auto n = absl::GetFlag(FLAGS_nproc)) return Launch(static_cast<int>(*n), argc, original.data(), plan_path);
  absl::Status s = RunOneRank(plan_path, options);
  if (!s.ok()) {
    const char* rank = std::getenv("RANK");
    Say(absl::StrCat("pprun: rank ", rank ? rank : "0", ": ", s.ToString()));
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) { return ppc::Main(argc, argv); }
