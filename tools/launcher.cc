#include "tools/launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <thread>

#include "runtime/gloo_transport.h"

namespace ppc {

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

int LaunchLocalRanks(int nproc, const std::vector<std::string>& args, int timeout_s) {
  auto store = runtime::StoreServer::Start(nproc, absl::Seconds(timeout_s));
  if (!store.ok()) {
    std::cerr << "launcher: cannot start the rendezvous store: " << store.status() << "\n";
    return 1;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("launcher: fork");
      for (pid_t p : pids) kill(p, SIGKILL);
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
      // Ranks share the machine's cores: one BLAS/OpenMP pool per rank of cores/N threads.
      const std::string threads = std::to_string(std::max(1u, std::thread::hardware_concurrency() / nproc));
      setenv("OPENBLAS_NUM_THREADS", threads.c_str(), 0);
      setenv("OMP_NUM_THREADS", threads.c_str(), 0);
      // Keep large tensors (gradients of big layers, re-allocated every micro-batch) on
      // the heap instead of a fresh mmap each time: page faults otherwise dominate
      // (AlexNet at 64x64: 10.5 -> 39 samples/s on 2 cores).
      setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295", 0);
      std::vector<std::string> copy = args;
      std::vector<char*> cargs;
      for (auto& a : copy) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      execv("/proc/self/exe", cargs.data());
      std::perror("launcher: exec");
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
          std::cerr << "launcher: rank " << rank << " exited with status " << code << "\n";
          exit_code = code;
        }
        if (!deadline) deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s + 10);
      }
      continue;
    }
    if (deadline && std::chrono::steady_clock::now() > *deadline) {
      std::cerr << "launcher: killing ranks still running after a rank failed\n";
      for (pid_t p : pids) kill(p, SIGKILL);
      deadline.reset();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code;
}

}  // namespace ppc
