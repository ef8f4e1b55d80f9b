// Every pass ppc knows, and the default compile pipeline for a training config.
#ifndef PPC_PASSES_REGISTRY_H_
#define PPC_PASSES_REGISTRY_H_

#include <string>

#include "absl/status/statusor.h"
#include "compiler/pass_registry.h"
#include "ir/program.pb.h"

namespace ppc::passes {

// The one registry: alphabetical by pass name (registry_test checks the order).
const PassRegistry& GlobalPassRegistry();

// The compile pipeline for config.schedule. Order matters: shapes feed partitioning;
// partition feeds the schedule; slots must exist before loads and p2p copy them; p2p
// must see every forward/backward before the final reductions are appended; lower-eval
// lowers the eval programs over the finished partition.
absl::StatusOr<std::string> DefaultPipeline(const ir::TrainingConfig& config);

}  // namespace ppc::passes

#endif  // PPC_PASSES_REGISTRY_H_
