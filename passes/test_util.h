// Test helpers: build small model plans and run pipelines with the verifier on.
#ifndef PPC_PASSES_TEST_UTIL_H_
#define PPC_PASSES_TEST_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"
#include "passes/compile.h"  // RunPipeline, CompilePlan

namespace ppc::passes {

// An MLP: `hidden` Linear+ReLU blocks of the given widths, then a Linear to 4 classes.
ir::Plan MlpPlan(int stages, int data_parallel, int micro_batches, const std::string& schedule,
                 std::vector<int> widths = {16, 32, 32, 16});

// CompilePlan of the plan's model, topology and config.
absl::StatusOr<ir::Plan> Compile(ir::Plan plan);

// Compute ops of stage `s` in order, as actions: "0F0 0F1 0B0 0F2 0B1 0F3 0B2 0B3".
std::string ComputeOrder(const ir::Plan& plan, int s);

}  // namespace ppc::passes

#endif  // PPC_PASSES_TEST_UTIL_H_
