// The one compiler entry point. Every front end (ppc, the examples, tests, benchmarks)
// compiles through CompilePlan: canonical config defaults, the default pipeline for the
// schedule (or a given one), the verifier attached to the pipeline, a final check of
// the whole plan and the stamp (format version and fingerprint).
#ifndef PPC_PASSES_COMPILE_H_
#define PPC_PASSES_COMPILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "compiler/pass_pipeline.h"
#include "ir/module.h"
#include "ir/program.pb.h"

namespace ppc::passes {

struct CompileOptions {
  // Empty: DefaultPipeline(config).
  std::string pipeline;
  // Printing, dumping, timing, disabled passes and verify_each.
  PipelineOptions pipeline_options;
};

// Fills what a config leaves out (0 or empty means "not given"): micro_batches 1,
// micro_batch_size 1, steps 10, schedule data-parallel when P = 1 and D > 1 else 1f1b,
// virtual_stages 2 for the V schedules (zb-v, dualpipev) else 1, optimizer sgd with lr
// 0.01. Never changes what is given.
void CanonicalizeConfig(const ir::Topology& topology, ir::TrainingConfig* config);

// Compiles a model for a topology and config into a stamped, verified plan, in the
// compiler's form (ir::SavePlan writes it; ir::ToPlan gives the protobuf). When options
// turn per-pass verification off and the final check fails, the plan comes back marked
// unverified (Plan.unverified; pprun refuses it).
absl::StatusOr<ir::Module> CompileModule(const ir::ModelSpec& model, const ir::Topology& topology,
                                         const ir::TrainingConfig& config, const CompileOptions& options = {});
// CompileModule, as a Plan (what the runtime takes).
absl::StatusOr<ir::Plan> CompilePlan(const ir::ModelSpec& model, const ir::Topology& topology,
                                     const ir::TrainingConfig& config, const CompileOptions& options = {});

// Runs `pipeline` (with the verifier) on an existing plan, then stamps it as CompilePlan
// does (`ppc opt`).
absl::StatusOr<ir::Module> RunPipeline(ir::Module module, const std::string& pipeline,
                                       const PipelineOptions& options = {});
absl::StatusOr<ir::Plan> RunPipeline(ir::Plan plan, const std::string& pipeline,
                                     const PipelineOptions& options = {});

// Verifies the whole plan (unless `already_verified`: the pipeline's verifier passed it
// as it is) and stamps it; a plan that fails is stamped marked unverified. Returns the
// verification result.
absl::Status StampVerified(ir::Module& module, bool already_verified = false);

}  // namespace ppc::passes

#endif  // PPC_PASSES_COMPILE_H_
