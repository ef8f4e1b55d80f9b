#include "passes/compile.h"

#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "passes/analysis/verifier.h"
#include "passes/registry.h"

namespace ppc::passes {

void CanonicalizeConfig(const ir::Topology& topology, ir::TrainingConfig* c) {
  if (c->micro_batches() == 0) c->set_micro_batches(1);
  if (c->micro_batch_size() == 0) c->set_micro_batch_size(1);
  if (c->steps() == 0) c->set_steps(10);
  if (c->schedule().empty()) {
    c->set_schedule(topology.num_stages() == 1 && topology.data_parallel() > 1 ? "data-parallel" : "1f1b");
  }
  // The V schedules place two virtual stages per stage.
  if (c->virtual_stages() == 0) c->set_virtual_stages(ir::IsVSchedule(c->schedule()) ? 2 : 1);
  if (c->optimizer().type().empty()) c->mutable_optimizer()->set_type("sgd");
  if (!c->optimizer().has_lr()) c->mutable_optimizer()->set_lr(0.01);
}

absl::Status StampVerified(ir::Module& module, bool already_verified) {
  module.header.set_unverified(false);
  absl::Status verified = already_verified ? absl::OkStatus() : VerifyPlan(module);
  module.header.set_unverified(!verified.ok());
  ir::Stamp(module);
  return verified;
}

absl::StatusOr<ir::Module> RunPipeline(ir::Module module, const std::string& pipeline,
                                       const PipelineOptions& options) {
  ASSIGN_OR_RETURN(PassPipeline p, PassPipeline::Create(pipeline, GlobalPassRegistry(),
                                                        [](const ir::Module& m, const Unchanged& u) { return VerifyPlan(m, u); }));
  bool pipeline_verified = false;
  RETURN_IF_ERROR(p.Run(module, options, &pipeline_verified).status());
  absl::Status verified = StampVerified(module, pipeline_verified);
  // With per-pass verification on, the pipeline has already proven the plan.
  if (!verified.ok() && options.verify_each) return verified;
  return module;
}

absl::StatusOr<ir::Plan> RunPipeline(ir::Plan plan, const std::string& pipeline, const PipelineOptions& options) {
  ASSIGN_OR_RETURN(ir::Module module, RunPipeline(ir::ToModule(std::move(plan)), pipeline, options));
  return ir::ToPlan(module);
}

absl::StatusOr<ir::Module> CompileModule(const ir::ModelSpec& model, const ir::Topology& topology,
                                         const ir::TrainingConfig& config, const CompileOptions& options) {
  ir::Module module;
  *module.header.mutable_model() = model;
  *module.header.mutable_topology() = topology;
  *module.header.mutable_config() = config;
  CanonicalizeConfig(topology, module.header.mutable_config());
  std::string pipeline = options.pipeline;
  if (pipeline.empty()) {
    ASSIGN_OR_RETURN(pipeline, DefaultPipeline(module.header.config()));
  }
  return RunPipeline(std::move(module), pipeline, options.pipeline_options);
}

absl::StatusOr<ir::Plan> CompilePlan(const ir::ModelSpec& model, const ir::Topology& topology,
                                     const ir::TrainingConfig& config, const CompileOptions& options) {
  ASSIGN_OR_RETURN(ir::Module module, CompileModule(model, topology, config, options));
  return ir::ToPlan(module);
}

}  // namespace ppc::passes
