// Test helpers: build small model plans and run pipelines with the verifier on.
#ifndef PPC_PASSES_TEST_UTIL_H_
#define PPC_PASSES_TEST_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::passes {

// An MLP: `hidden` Linear+ReLU blocks of the given widths, then a Linear to 4 classes.
ir::Plan MlpPlan(int stages, int data_parallel, int micro_batches, const std::string& schedule,
                 std::vector<int> widths = {16, 32, 32, 16});

// Runs `pipeline` on `plan` with the verifier after every changed pass.
absl::StatusOr<ir::Plan> RunPipeline(ir::Plan plan, const std::string& pipeline);

// Runs the default pipeline for plan.config().schedule.
absl::StatusOr<ir::Plan> Compile(ir::Plan plan);

// Compute instructions of stage `s` in order, e.g. "F0 F1 B0 F2 B1 F3 B2 B3".
std::string ComputeOrder(const ir::Plan& plan, int s);

}  // namespace ppc::passes

#endif  // PPC_PASSES_TEST_UTIL_H_
