// pprun: run a compiled plan.
//
//   pprun PLAN --nproc N [--steps S]     starts N local ranks itself
//   pprun PLAN [--steps S]               one rank, launched by torchrun/srun/mpirun:
//                                        reads RANK, WORLD_SIZE, LOCAL_RANK,
//                                        MASTER_ADDR, MASTER_PORT
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

ABSL_FLAG(int, nproc, 0, "start this many local ranks (0: this process is one rank; read RANK etc.)");
ABSL_FLAG(int, steps, 0, "training steps (default: the plan's config.steps)");
ABSL_FLAG(int, timeout_s, 120, "seconds any wait may block before failing");
ABSL_FLAG(std::string, metrics_out, "", "rank 0 writes 'step loss samples_per_s' lines here");
ABSL_FLAG(std::string, dump_weights, "", "after the last step, write every parameter as raw float32 into this dir");
ABSL_FLAG(bool, quiet, false, "do not print per-step lines");

namespace ppc {
namespace {

constexpr char kLaunchedEnv[] = "PPRUN_LAUNCHED";

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

absl::Status RunOneRank(const std::string& plan_path) {
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
  runtime::RunOptions options;
  options.steps = absl::GetFlag(FLAGS_steps);
  options.metrics_out = absl::GetFlag(FLAGS_metrics_out);
  options.dump_weights = absl::GetFlag(FLAGS_dump_weights);
  options.print = !absl::GetFlag(FLAGS_quiet);
  options.runtime.timeout = rv.timeout;
  auto records = runtime::RunRank(plan, rv, options);
  if (!records.ok()) return records.status();
  return absl::OkStatus();
}

// Starts `nproc` copies of this program as ranks 0..nproc-1 around one TCPStore that
// this process hosts. If a rank fails, the others get the transport timeout (plus a
// grace period) to report their own errors, then are killed.
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
  const int timeout_s = absl::GetFlag(FLAGS_timeout_s);
  auto store = runtime::StoreServer::Start(nproc, absl::Seconds(timeout_s));
  if (!store.ok()) {
    std::cerr << "pprun: cannot start the rendezvous store: " << store.status() << "\n";
    return 1;
  }
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--nproc", 0) == 0) {
      if (a == "--nproc" && i + 1 < argc) ++i;  // value in the next argument
      continue;
    }
    args.push_back(a);
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("pprun: fork");
      return 1;
    }
    if (pid == 0) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string((*store)->port()).c_str(), 1);
      setenv(kLaunchedEnv, "1", 1);
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      execv("/proc/self/exe", cargs.data());
      std::perror("pprun: exec");
      _exit(127);
    }
    pids.push_back(pid);
  }
  int exit_code = 0;
  int alive = nproc;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  while (alive > 0) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      --alive;
      int rank = static_cast<int>(std::find(pids.begin(), pids.end(), pid) - pids.begin());
      int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0) {
        if (exit_code == 0) {
          std::cerr << "pprun: rank " << rank << " exited with status " << code << "\n";
          exit_code = code;
        }
        if (!deadline) deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s + 10);
      }
      continue;
    }
    if (deadline && std::chrono::steady_clock::now() > *deadline) {
      std::cerr << "pprun: killing ranks still running after rank failure\n";
      for (pid_t p : pids) kill(p, SIGKILL);
      deadline.reset();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "run a compiled plan.\n"
      "  pprun PLAN --nproc N [--steps S]   start N local ranks\n"
      "  pprun PLAN [--steps S]             one rank; reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT");
  std::vector<std::string> storage;
  NormalizeFlagNames(argc, argv, storage);
  std::vector<char*> original(argv, argv + argc);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string plan_path = args[1];
  if (absl::GetFlag(FLAGS_nproc) > 0) return Launch(absl::GetFlag(FLAGS_nproc), argc, original.data(), plan_path);
  absl::Status s = RunOneRank(plan_path);
  if (!s.ok()) {
    const char* rank = std::getenv("RANK");
    std::cerr << "pprun: rank " << (rank ? rank : "0") << ": " << s << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) { return ppc::Main(argc, argv); }
