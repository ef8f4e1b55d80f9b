// Starts N local ranks of this program (torchrun-style): hosts a c10d TCPStore on a
// free loopback port, re-executes /proc/self/exe once per rank with `args` and the
// environment RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
// and PPRUN_LAUNCHED=1 (plus `env`, and, unless already set, OPENBLAS_NUM_THREADS and
// OMP_NUM_THREADS = cores / N and GLIBC_TUNABLES that keep large tensors on the heap),
// and waits.
//
// No rank outlives the launcher: each dies with it (PR_SET_PDEATHSIG), SIGINT, SIGTERM
// and SIGHUP are forwarded to the ranks (killed after a grace period), and when a rank
// exits non-zero the others get one second to report their own errors before they are
// killed. The launcher names the rank that failed first.
#ifndef PPC_TOOLS_LAUNCHER_H_
#define PPC_TOOLS_LAUNCHER_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc {

// Set in every launched rank: rank 0 must not host the store (the launcher does).
inline constexpr char kLaunchedEnv[] = "PPRUN_LAUNCHED";
// Set by the launcher to the fingerprint of the plan it verified: a rank refuses any other.
inline constexpr char kVerifiedFingerprintEnv[] = "PPRUN_VERIFIED_FINGERPRINT";
// Set by the launcher to the run's private copy of the plan, which the ranks read.
inline constexpr char kPlanPathEnv[] = "PPRUN_PLAN_PATH";

struct LaunchOptions {
  int nproc = 1;
  std::vector<std::string> args;  // each rank's argv, argv[0] included
  int timeout_s = 120;
  std::map<std::string, std::string> env;  // extra environment for the ranks
};

// Returns 0 when every rank exited 0; otherwise the first failing rank's status (128 +
// signal for a signal), or 128 + the signal that stopped the launcher.
int LaunchLocalRanks(const LaunchOptions& options);

// argv without "--nproc N" / "--nproc=N".
std::vector<std::string> WithoutFlag(int argc, char** argv, const std::string& flag);

// A private copy of `plan` for one run: a fresh directory only this user can read, the
// plan in it. Ranks read this copy, so a later write to the user's path (another run,
// an editor) cannot change what they run. The returned directory is removed by the
// caller (RemoveRunDir).
absl::StatusOr<std::string> WritePrivatePlan(const ir::Plan& plan, std::string* dir);
void RemoveRunDir(const std::string& dir);

}  // namespace ppc

#endif  // PPC_TOOLS_LAUNCHER_H_
