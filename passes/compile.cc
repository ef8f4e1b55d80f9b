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

absl::Status StampVerified(ir::Plan& plan, bool already_verified) {
  plan.set_unverified(false);
  absl::Status verified = already_verified ? absl::OkStatus() : VerifyPlan(plan);
  plan.set_unverified(!verified.ok());
  ir::Stamp(plan);
  return verified;
}

absl::StatusOr<ir::Plan> RunPipeline(ir::Plan plan, const std::string& pipeline, const PipelineOptions& options) {
  ASSIGN_OR_RETURN(PassPipeline p, PassPipeline::Create(pipeline, GlobalPassRegistry(), VerifyPlan));
  bool pipeline_verified = false;
  RETURN_IF_ERROR(p.Run(plan, options, &pipeline_verified).status());
  absl::Status verified = StampVerified(plan, pipeline_verified);
  // With per-pass verification on, the pipeline has already proven the plan.
  if (!verified.ok() && options.verify_each) return verified;
  return plan;
}

absl::StatusOr<ir::Plan> CompilePlan(const ir::ModelSpec& model, const ir::Topology& topology,
                                     const ir::TrainingConfig& config, const CompileOptions& options) {
  ir::Plan plan;
  *plan.mutable_model() = model;
  *plan.mutable_topology() = topology;
  *plan.mutable_config() = config;
  CanonicalizeConfig(topology, plan.mutable_config());
  std::string pipeline = options.pipeline;
  if (pipeline.empty()) {
    ASSIGN_OR_RETURN(pipeline, DefaultPipeline(plan.config()));
  }
  return RunPipeline(std::move(plan), pipeline, options.pipeline_options);
}

}  // namespace ppc::passes
