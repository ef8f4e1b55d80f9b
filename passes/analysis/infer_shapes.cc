#include "passes/analysis/infer_shapes.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "ir/layer_shapes.h"
#include "ir/status_macros.h"

namespace ppc::passes {

absl::StatusOr<bool> InferShapes::Run(ir::Plan& plan) {
  ir::ModelSpec* model = plan.mutable_model();
  if (model->layers_size() == 0) return absl::InvalidArgumentError("model has no layers");
  if (model->input().dtype() == ir::DTYPE_UNSPECIFIED || model->input().shape_size() == 0) {
    return absl::InvalidArgumentError("model.input needs a shape and a dtype (FLOAT32 or INT64)");
  }
  bool changed = false;
  ir::TensorSpec current = model->input();
  std::map<std::string, std::pair<std::string, std::vector<int64_t>>> ties;  // key -> (first layer, shape)
  for (int i = 0; i < model->layers_size(); ++i) {
    ir::LayerSpec* layer = model->mutable_layers(i);
    auto info = ir::InferLayer(*layer, current);
    if (!info.ok()) return Annotate(info.status(), absl::StrCat("layer ", i));
    if (!google::protobuf::util::MessageDifferencer::Equals(layer->output(), info->output)) {
      *layer->mutable_output() = info->output;
      changed = true;
    }
    if (layer->param_count() != info->param_count) {
      layer->set_param_count(info->param_count);
      changed = true;
    }
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
    current = info->output;
  }
  return changed;
}

}  // namespace ppc::passes
