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
// `pipeline` with batch-weight-grads{group=GROUP} after its schedule pass (before
// assign-buffers): the --batch-weight-grads flag. InvalidArgument unless GROUP is "all"
// or a number >= 1, or when the pipeline has no assign-buffers pass to put it before.
absl::StatusOr<std::string> WithBatchWeightGrads(const std::string& pipeline, const std::string& group);

}  // namespace ppc::passes

#endif  // PPC_PASSES_REGISTRY_H_
