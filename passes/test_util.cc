#include "passes/test_util.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "passes/compile.h"
#include "ir/instruction_text.h"
#include "ir/status_macros.h"
#include "passes/analysis/verifier.h"
#include "passes/registry.h"

namespace ppc::passes {

ir::Plan MlpPlan(int stages, int data_parallel, int micro_batches, const std::string& schedule,
                 std::vector<int> widths) {
  ir::Plan plan;
  ir::ModelSpec* model = plan.mutable_model();
  model->set_name("mlp");
  model->mutable_input()->add_shape(widths[0]);
  model->mutable_input()->set_dtype(ir::FLOAT32);
  model->mutable_label()->set_dtype(ir::INT64);
  model->set_loss(ir::CROSS_ENTROPY);
  model->set_num_classes(4);
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    auto* fc = model->add_layers();
    fc->set_name(absl::StrCat("fc", i));
    fc->set_kind("Linear");
    (*fc->mutable_attrs())["in_features"].set_i(widths[i]);
    (*fc->mutable_attrs())["out_features"].set_i(widths[i + 1]);
    auto* act = model->add_layers();
    act->set_name(absl::StrCat("relu", i));
    act->set_kind("ReLU");
  }
  auto* head = model->add_layers();
  head->set_name("head");
  head->set_kind("Linear");
  (*head->mutable_attrs())["in_features"].set_i(widths.back());
  (*head->mutable_attrs())["out_features"].set_i(4);
  plan.mutable_topology()->set_num_stages(stages);
  plan.mutable_topology()->set_data_parallel(data_parallel);
  plan.mutable_config()->set_micro_batches(micro_batches);
  plan.mutable_config()->set_micro_batch_size(2);
  plan.mutable_config()->set_schedule(schedule);
  plan.mutable_config()->set_seed(1);
  plan.mutable_config()->set_steps(1);
  plan.mutable_config()->mutable_optimizer()->set_type("sgd");
  plan.mutable_config()->mutable_optimizer()->set_lr(0.1);
  return plan;
}

absl::StatusOr<ir::Plan> Compile(ir::Plan plan) {
  return CompilePlan(plan.model(), plan.topology(), plan.config());
}

std::string ComputeOrder(const ir::Plan& plan, int s) {
  std::vector<std::string> ops;
  for (const auto& in : plan.programs(s).instructions())
    if (in.has_compute()) ops.push_back(ir::OpName(in));
  return absl::StrJoin(ops, " ");
}

}  // namespace ppc::passes
