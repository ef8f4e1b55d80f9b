#include "tools/launcher.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/plan_io.h"
#include "runtime/gloo_transport.h"

namespace ppc {
namespace {

volatile sig_atomic_t g_signal = 0;
void OnSignal(int sig) { g_signal = sig; }

// One write per line, so that lines of processes writing together never interleave.
void Say(const std::string& line) {
  const std::string text = line + "\n";
  fwrite(text.data(), 1, text.size(), stderr);
}

std::string Describe(int status) {
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  return absl::StrCat("exited with status ", WEXITSTATUS(status));
}

}  // namespace

std::vector<std::string> WithoutFlag(int argc, char** argv, const std::string& flag) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == flag) {
      ++i;  // its value
      continue;
    }
    if (a.rfind(flag + "=", 0) == 0) continue;
    args.push_back(a);
  }
  return args;
}

absl::StatusOr<std::string> WritePrivatePlan(const ir::Plan& plan, std::string* dir) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(base && *base ? base : "/tmp", "/ppc-run-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create a private directory for the run (", pattern,
                                                    "): ", std::strerror(errno)));
  }
  *dir = pattern;
  const std::string path = pattern + "/plan.pb";
  absl::Status s = ir::SavePlan(plan, path);
  if (!s.ok()) {
    RemoveRunDir(pattern);
    return s;
  }
  return path;
}

void RemoveRunDir(const std::string& dir) {
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);
}

int LaunchLocalRanks(const LaunchOptions& options) {
  const int nproc = options.nproc;
  auto store = runtime::StoreServer::Start(nproc, absl::Seconds(options.timeout_s));
  if (!store.ok()) {
    Say(absl::StrCat("launcher: cannot start the rendezvous store: ", store.status().ToString()));
    return 1;
  }
  // Signals to the launcher go to its ranks (installed before any rank exists, so none
  // is missed).
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = getpid();
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = fork();
    if (pid < 0) {
      Say(absl::StrCat("launcher: fork: ", std::strerror(errno)));
      for (pid_t p : pids) kill(p, SIGKILL);
      return 1;
    }
    if (pid == 0) {
      // Die with the launcher, whatever kills it (checked after arming: it may be gone).
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      signal(SIGHUP, SIG_DFL);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string((*store)->port()).c_str(), 1);
      setenv(kLaunchedEnv, "1", 1);
      for (const auto& [k, v] : options.env) setenv(k.c_str(), v.c_str(), 1);
      // Ranks share the machine's cores: one BLAS/OpenMP pool per rank of cores/N threads.
      const std::string threads = std::to_string(std::max(1u, std::thread::hardware_concurrency() / nproc));
      setenv("OPENBLAS_NUM_THREADS", threads.c_str(), 0);
      setenv("OMP_NUM_THREADS", threads.c_str(), 0);
      // Keep large tensors (gradients of big layers, re-allocated every micro-batch) on
      // the heap instead of a fresh mmap each time: page faults otherwise dominate
      // (AlexNet at 64x64: 10.5 -> 39 samples/s on 2 cores).
      setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295", 0);
      std::vector<std::string> copy = options.args;
      std::vector<char*> cargs;
      for (auto& a : copy) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      execv("/proc/self/exe", cargs.data());
      std::perror("launcher: exec");
      _exit(127);
    }
    pids.push_back(pid);
  }
  using Clock = std::chrono::steady_clock;
  std::vector<bool> alive(nproc, true);
  int running = nproc;
  int exit_code = 0;
  std::optional<Clock::time_point> deadline;  // when the ranks still running are killed
  int forwarded = 0;
  while (running > 0) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      auto it = std::find(pids.begin(), pids.end(), pid);
      if (it == pids.end()) continue;
      const int rank = static_cast<int>(it - pids.begin());
      alive[rank] = false;
      --running;
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0 && exit_code == 0 && forwarded == 0) {
        Say(absl::StrCat("launcher: rank ", rank, " ", Describe(status), "; stopping the others"));
        exit_code = code;
        // The others get a moment to report their own errors.
        deadline = Clock::now() + std::chrono::seconds(1);
      }
      continue;
    }
    if (g_signal != 0 && forwarded == 0) {
      forwarded = g_signal;
      Say(absl::StrCat("launcher: received ", strsignal(forwarded), "; passing it to the ranks"));
      for (int r = 0; r < nproc; ++r)
        if (alive[r]) kill(pids[r], forwarded);
      exit_code = 128 + forwarded;
      deadline = Clock::now() + std::chrono::seconds(3);
    }
    if (deadline && Clock::now() > *deadline) {
      std::vector<int> killed;
      for (int r = 0; r < nproc; ++r) {
        if (alive[r]) {
          kill(pids[r], SIGKILL);
          killed.push_back(r);
        }
      }
      if (!killed.empty()) {
        Say(absl::StrCat("launcher: killed rank(s) ", absl::StrJoin(killed, ", "),
                         forwarded != 0 ? " still running" : " still running after the failure (stalled or hung)"));
      }
      deadline.reset();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_code;
}

}  // namespace ppc
