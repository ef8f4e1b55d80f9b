#include "passes/analysis/infer_shapes.h"

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/layer_shapes.h"
#include "ir/status_macros.h"

namespace ppc::passes {

absl::Status InferShapes::Run(ir::Module& module) {
  ir::Plan& plan = module.header;  // the model, topology and config; no programs yet
  if (plan.level() != ir::LEVEL_NONE) {
    return absl::FailedPreconditionError(absl::StrCat("infer-shapes needs a ", ir::PlanLevel_Name(ir::LEVEL_NONE),
                                                      " plan; this one is ", ir::PlanLevel_Name(plan.level())));
  }
  ir::ModelSpec* model = plan.mutable_model();
  if (model->layers_size() == 0) return absl::InvalidArgumentError("model has no layers");
  if (model->input().dtype() == ir::DTYPE_UNSPECIFIED || model->input().shape_size() == 0) {
    return absl::InvalidArgumentError("model.input needs a shape and a dtype (FLOAT32 or INT64)");
  }
  // The activation between layers is a group of tensors (ir/layer_shapes.h); the model
  // input is a group of one, named "input".
  std::vector<ir::TensorSpec> current = {model->input()};
  current.front().set_name("input");
  std::map<std::string, std::pair<std::string, std::vector<int64_t>>> ties;  // key -> (first layer, shape)
  for (int i = 0; i < model->layers_size(); ++i) {
    ir::LayerSpec* layer = model->mutable_layers(i);
    auto info = ir::InferGroup(*layer, current);
    if (!info.ok()) return Annotate(info.status(), absl::StrCat("layer ", i));
    layer->clear_outputs();
    for (const ir::TensorSpec& t : info->outputs) *layer->add_outputs() = t;
    layer->set_param_count(info->param_count);
    if (!layer->tie_key().empty()) {
      if (info->weight_shape.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", i, " '", layer->name(), "' (", layer->kind(),
                                                       ") has tie key '", layer->tie_key(), "' but no weight"));
      }
      auto [it, inserted] = ties.emplace(layer->tie_key(), std::make_pair(layer->name(), info->weight_shape));
      if (!inserted && it->second.second != info->weight_shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tie key '", layer->tie_key(), "': layer '", layer->name(), "' has weight [",
            absl::StrJoin(info->weight_shape, ","), "] but layer '", it->second.first, "' has [",
            absl::StrJoin(it->second.second, ","), "]"));
      }
    }
    current = std::move(info->outputs);
  }
  if (current.size() != 1) {
    const ir::LayerSpec& last = model->layers(model->layers_size() - 1);
    std::vector<std::string> names;
    for (const ir::TensorSpec& t : current) names.push_back(absl::StrCat("'", t.name(), "' ", ir::ShapeString(t)));
    return absl::InvalidArgumentError(absl::StrCat("layer ", model->layers_size() - 1, " '", last.name(), "' (",
                                                   last.kind(), "), the model's last, leaves a group of ",
                                                   current.size(), " tensors (", absl::StrJoin(names, ", "),
                                                   "); the loss takes exactly one: every Fork needs an Add"));
  }
  return absl::OkStatus();
}

}  // namespace ppc::passes
