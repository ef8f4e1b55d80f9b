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
// Adds a pass to the global registry (a pass plugin's; compiler/pass_plugin.h). Not
// thread-safe: register before compiling. AlreadyExists on a taken name.
absl::Status RegisterPass(PassInfo info);

// The compile pipeline for config.schedule: infer-shapes, partition, the schedule,
// assign-buffers, lower, lower-eval, place-comm. Each pass checks the plan level it
// needs (Plan.level), so a wrong order fails loudly.
absl::StatusOr<std::string> DefaultPipeline(const ir::TrainingConfig& config);

}  // namespace ppc::passes

#endif  // PPC_PASSES_REGISTRY_H_
