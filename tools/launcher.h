// Starts N local ranks of this program (torchrun-style): hosts a c10d TCPStore on a
// free loopback port, re-executes /proc/self/exe once per rank with `args` and the
// environment RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT and PPRUN_LAUNCHED=1 (plus, unless already set, OPENBLAS_NUM_THREADS and
// OMP_NUM_THREADS = cores / N and GLIBC_TUNABLES that keep large tensors on the heap),
// and waits. If a rank fails, the others get
// `timeout_s` (+10 s) to report their own errors, then are killed.
#ifndef PPC_TOOLS_LAUNCHER_H_
#define PPC_TOOLS_LAUNCHER_H_

#include <string>
#include <vector>

namespace ppc {

// Set in every launched rank: rank 0 must not host the store (the launcher does).
inline constexpr char kLaunchedEnv[] = "PPRUN_LAUNCHED";

// Returns the first non-zero rank exit status, or 0.
int LaunchLocalRanks(int nproc, const std::vector<std::string>& args, int timeout_s);

// argv without "--nproc N" / "--nproc=N".
std::vector<std::string> WithoutFlag(int argc, char** argv, const std::string& flag);

}  // namespace ppc

#endif  // PPC_TOOLS_LAUNCHER_H_
