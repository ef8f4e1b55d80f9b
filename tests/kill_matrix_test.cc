// The kill matrix: a rank of a 2-stage x 2-replica run is killed (SIGKILL), terminated
// (SIGTERM) or stopped (SIGSTOP) during the rendezvous, mid-step, in the gradient
// reduction and in the optimizer step; and the pprun parent gets SIGINT, SIGTERM or
// SIGKILL mid-training. In every case no process of the run survives (checked by pid,
// through /proc), the exit is non-zero, the output names the rank, and it all ends
// within a few seconds (SIGSTOP: within --timeout-s plus a margin).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "ir/plan_io.h"
#include "tests/pprun_util.h"

namespace ppc {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
constexpr int kTimeoutS = 5;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Live processes (not zombies) whose command line contains `marker`.
std::vector<pid_t> Survivors(const std::string& marker) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream cmd(e.path() / "cmdline", std::ios::binary);
    std::string args((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    if (args.find(marker) == std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t paren = line.rfind(')');
    const char state = paren != std::string::npos && paren + 2 < line.size() ? line[paren + 2] : 'X';
    if (state != 'Z' && state != 'X') out.push_back(std::stoi(name));
  }
  return out;
}

struct Outcome {
  int status = 0;
  std::string output;
  double seconds = 0;
  std::vector<pid_t> survivors;
};

// Runs pprun on `plan` with 4 ranks; `env` may inject a fault; a `parent_signal` is
// sent to pprun once training is under way.
Outcome RunPprun(const std::string& plan, const std::string& name, const std::map<std::string, std::string>& env,
            int parent_signal) {
  const std::string metrics = e2e::Tmp(name + ".metrics"), log = e2e::Tmp(name + ".log");
  fs::remove(metrics);
  const auto start = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<std::string> args{e2e::kPprun, plan, "--nproc", "4", "--steps", "100000", "--quiet", "--timeout-s",
                                  std::to_string(kTimeoutS), "--metrics-out", metrics};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(e2e::kPprun, argv.data());
    _exit(127);
  }
  Outcome o;
  if (parent_signal != 0) {
    // Under way: rank 0 has written a step.
    while (Since(start) < 60) {
      std::ifstream in(metrics);
      std::string line;
      if (std::getline(in, line)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid, parent_signal);
  }
  // The run must end by itself (or by the signal) well within this.
  while (waitpid(pid, &o.status, WNOHANG) == 0) {
    if (Since(start) > 90) {
      kill(pid, SIGKILL);
      waitpid(pid, &o.status, 0);
      ADD_FAILURE() << name << ": pprun did not end";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  o.seconds = Since(start);
  // Ranks dying with their parent may take a moment after it.
  while ((o.survivors = Survivors(metrics)), !o.survivors.empty() && Since(start) < o.seconds + 3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (pid_t p : o.survivors) kill(p, SIGKILL);  // never leave them behind for other tests
  o.output = ir::ReadFile(log).value_or("");
  return o;
}

class KillMatrix : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ir::Plan plan;
    ASSERT_TRUE(ir::ParseTextProtoFile("examples/mlp/mlp.textproto", plan.mutable_model()).ok());
    plan.mutable_topology()->set_num_stages(2);
    plan.mutable_topology()->set_data_parallel(2);
    auto* c = plan.mutable_config();
    c->set_micro_batches(2);
    c->set_micro_batch_size(2);
    c->set_schedule("1f1b");
    c->set_seed(1);
    c->set_steps(1);
    c->mutable_optimizer()->set_type("sgd");
    c->mutable_optimizer()->set_lr(0.01);
    plan_ = new std::string(e2e::CompileTo(plan, "kill_plan"));
  }
  static std::string* plan_;
};
std::string* KillMatrix::plan_ = nullptr;

TEST_F(KillMatrix, ARankKilledStoppedOrTerminatedInAnyPhaseEndsTheWholeRun) {
  for (const char* phase : {"rendezvous", "forward", "reduce", "optimizer"}) {
    for (const char* sig : {"KILL", "TERM", "STOP"}) {
      const std::string name = absl::StrCat("rank1_", phase, "_", sig);
      SCOPED_TRACE(name);
      Outcome o = RunPprun(*plan_, name, {{"PPRUN_FAULT_INJECT", absl::StrCat("1:", phase, ":2:", sig)}}, 0);
      EXPECT_TRUE(WIFEXITED(o.status) && WEXITSTATUS(o.status) != 0) << o.output;
      EXPECT_TRUE(o.survivors.empty()) << o.survivors.size() << " process(es) of the run survived";
      // The rank is named: by the launcher (it died) or by its peers (it stalled).
      const bool named = o.output.find("rank 1 ") != std::string::npos ||          // died
                         o.output.find("rank(s) [1]") != std::string::npos ||      // never arrived
                         o.output.find("killed rank(s) 1 ") != std::string::npos;  // stalled
      EXPECT_TRUE(named) << o.output;
      const double limit = std::string(sig) == "STOP" ? 2 * kTimeoutS + 15 : 15;
      EXPECT_LT(o.seconds, limit) << o.output;
    }
  }
}

TEST_F(KillMatrix, SignallingTheParentEndsEveryRank) {
  for (int sig : {SIGINT, SIGTERM, SIGKILL}) {
    const std::string name = absl::StrCat("parent_", sig);
    SCOPED_TRACE(name);
    Outcome o = RunPprun(*plan_, name, {}, sig);
    EXPECT_TRUE(o.survivors.empty()) << o.survivors.size() << " rank(s) survived their parent";
    if (sig == SIGKILL) {
      EXPECT_TRUE(WIFSIGNALED(o.status) && WTERMSIG(o.status) == SIGKILL);
    } else {
      EXPECT_TRUE(WIFEXITED(o.status) && WEXITSTATUS(o.status) == 128 + sig) << o.output;
      EXPECT_NE(o.output.find("launcher: received"), std::string::npos) << o.output;
    }
    EXPECT_LT(o.seconds, 60);
  }
}

}  // namespace
}  // namespace ppc
