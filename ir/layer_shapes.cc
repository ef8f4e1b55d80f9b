#include "ir/layer_shapes.h"

#include <algorithm>
#include <functional>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/status_macros.h"

namespace ppc::ir {
namespace {

using ShapeFn = std::function<absl::StatusOr<LayerShapeInfo>(const LayerSpec&, const TensorSpec&)>;

absl::Status Bad(const LayerSpec& layer, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("layer '", layer.name(), "' (", layer.kind(), "): ", what));
}

TensorSpec Spec(std::vector<int64_t> shape, DType dtype = FLOAT32) {
  TensorSpec s;
  for (int64_t d : shape) s.add_shape(d);
  s.set_dtype(dtype);
  return s;
}

std::vector<int64_t> Dims(const TensorSpec& s) { return {s.shape().begin(), s.shape().end()}; }

absl::Status NeedFloat(const LayerSpec& layer, const TensorSpec& in) {
  if (in.dtype() != FLOAT32) return Bad(layer, "expects a float32 input, got " + ShapeString(in));
  return absl::OkStatus();
}

absl::StatusOr<LayerShapeInfo> Linear(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  ASSIGN_OR_RETURN(int64_t in_f, IntAttr(l, "in_features"));
  ASSIGN_OR_RETURN(int64_t out_f, IntAttr(l, "out_features"));
  ASSIGN_OR_RETURN(bool bias, BoolAttr(l, "bias", true));
  if (in.shape_size() < 1 || in.shape(in.shape_size() - 1) != in_f)
    return Bad(l, absl::StrCat("in_features=", in_f, " does not match input ", ShapeString(in)));
  auto dims = Dims(in);
  dims.back() = out_f;
  return LayerShapeInfo{Spec(dims), in_f * out_f + (bias ? out_f : 0), {out_f, in_f}};
}

absl::StatusOr<LayerShapeInfo> Conv2d(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  ASSIGN_OR_RETURN(int64_t cin, IntAttr(l, "in_channels"));
  ASSIGN_OR_RETURN(int64_t cout, IntAttr(l, "out_channels"));
  ASSIGN_OR_RETURN(auto k, IntsAttr(l, "kernel_size", 2));
  ASSIGN_OR_RETURN(auto st, IntsAttr(l, "stride", 2, 1));
  ASSIGN_OR_RETURN(auto pad, IntsAttr(l, "padding", 2, 0));
  ASSIGN_OR_RETURN(bool bias, BoolAttr(l, "bias", true));
  if (in.shape_size() != 3 || in.shape(0) != cin)
    return Bad(l, absl::StrCat("expects input [", cin, ",H,W], got ", ShapeString(in)));
  std::vector<int64_t> out{cout, 0, 0};
  for (int i = 0; i < 2; ++i) {
    int64_t o = (in.shape(1 + i) + 2 * pad[i] - k[i]) / st[i] + 1;
    if (o <= 0) return Bad(l, "output would be empty for input " + ShapeString(in));
    out[1 + i] = o;
  }
  return LayerShapeInfo{Spec(out), cout * cin * k[0] * k[1] + (bias ? cout : 0), {cout, cin, k[0], k[1]}};
}

absl::StatusOr<LayerShapeInfo> MaxPool2d(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  ASSIGN_OR_RETURN(auto k, IntsAttr(l, "kernel_size", 2));
  ASSIGN_OR_RETURN(auto st, IntsAttr(l, "stride", 2, k[0]));
  ASSIGN_OR_RETURN(auto pad, IntsAttr(l, "padding", 2, 0));
  if (in.shape_size() != 3) return Bad(l, "expects input [C,H,W], got " + ShapeString(in));
  std::vector<int64_t> out{in.shape(0), 0, 0};
  for (int i = 0; i < 2; ++i) {
    int64_t o = (in.shape(1 + i) + 2 * pad[i] - k[i]) / st[i] + 1;
    if (o <= 0) return Bad(l, "output would be empty for input " + ShapeString(in));
    out[1 + i] = o;
  }
  return LayerShapeInfo{Spec(out), 0, {}};
}

absl::StatusOr<LayerShapeInfo> AdaptiveAvgPool2d(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  ASSIGN_OR_RETURN(auto o, IntsAttr(l, "output_size", 2));
  if (in.shape_size() != 3) return Bad(l, "expects input [C,H,W], got " + ShapeString(in));
  return LayerShapeInfo{Spec({in.shape(0), o[0], o[1]}), 0, {}};
}

absl::StatusOr<LayerShapeInfo> Elementwise(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  return LayerShapeInfo{in, 0, {}};
}

absl::StatusOr<LayerShapeInfo> Dropout(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  ASSIGN_OR_RETURN(double p, FloatAttr(l, "p", 0.5));
  if (p < 0 || p >= 1) return Bad(l, absl::StrCat("p=", p, " must be in [0, 1)"));
  return LayerShapeInfo{in, 0, {}};
}

absl::StatusOr<LayerShapeInfo> Flatten(const LayerSpec& l, const TensorSpec& in) {
  return LayerShapeInfo{Spec({NumElements(in)}, in.dtype()), 0, {}};
}

absl::StatusOr<LayerShapeInfo> LayerNorm(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  if (in.shape_size() < 1) return Bad(l, "expects at least one dimension");
  ASSIGN_OR_RETURN(int64_t n, IntAttr(l, "normalized_shape", in.shape(in.shape_size() - 1)));
  ASSIGN_OR_RETURN(double eps, FloatAttr(l, "eps", 1e-5));
  (void)eps;
  if (n != in.shape(in.shape_size() - 1))
    return Bad(l, absl::StrCat("normalized_shape=", n, " does not match input ", ShapeString(in)));
  return LayerShapeInfo{in, 2 * n, {n}};
}

absl::StatusOr<LayerShapeInfo> Embedding(const LayerSpec& l, const TensorSpec& in) {
  ASSIGN_OR_RETURN(int64_t num, IntAttr(l, "num_embeddings"));
  ASSIGN_OR_RETURN(int64_t dim, IntAttr(l, "embedding_dim"));
  if (in.dtype() != INT64) return Bad(l, "expects int64 indices, got " + ShapeString(in));
  auto dims = Dims(in);
  dims.push_back(dim);
  return LayerShapeInfo{Spec(dims), num * dim, {num, dim}};
}

const std::map<std::string, ShapeFn>& Registry() {
  static const auto* registry = new std::map<std::string, ShapeFn>{
      {"AdaptiveAvgPool2d", AdaptiveAvgPool2d},
      {"Conv2d", Conv2d},
      {"Dropout", Dropout},
      {"Embedding", Embedding},
      {"Flatten", Flatten},
      {"GELU", Elementwise},
      {"LayerNorm", LayerNorm},
      {"Linear", Linear},
      {"MaxPool2d", MaxPool2d},
      {"ReLU", Elementwise},
      {"Tanh", Elementwise},
  };
  return *registry;
}

}  // namespace

std::string ShapeString(const TensorSpec& spec) {
  return absl::StrCat(DType_Name(spec.dtype()), "[", absl::StrJoin(spec.shape(), ","), "]");
}

int64_t NumElements(const TensorSpec& spec) {
  int64_t n = 1;
  for (int64_t d : spec.shape()) n *= d;
  return n;
}

absl::StatusOr<LayerShapeInfo> InferLayer(const LayerSpec& layer, const TensorSpec& input) {
  auto it = Registry().find(layer.kind());
  if (it == Registry().end()) {
    std::vector<std::string> kinds = LayerKinds();
    return Bad(layer, absl::StrCat("unknown layer kind; known kinds: ", absl::StrJoin(kinds, ", ")));
  }
  ASSIGN_OR_RETURN(LayerShapeInfo info, it->second(layer, input));
  // Forward cost estimate: multiply-adds for layers with a weight (each output element
  // reads one weight row / filter), element operations for the rest.
  const int64_t out = NumElements(info.output);
  const std::string& kind = layer.kind();
  if (kind == "Linear") {
    info.flops = out * info.weight_shape[1];
  } else if (kind == "Conv2d") {
    info.flops = out * info.weight_shape[1] * info.weight_shape[2] * info.weight_shape[3];
  } else if (kind == "MaxPool2d") {
    auto k = IntsAttr(layer, "kernel_size", 2);
    info.flops = out * (k.ok() ? (*k)[0] * (*k)[1] : 1);
  } else if (kind == "LayerNorm") {
    info.flops = 5 * out;
  } else {
    info.flops = std::max(out, NumElements(input));
  }
  return info;
}

std::vector<std::string> LayerKinds() {
  std::vector<std::string> kinds;
  for (const auto& [k, fn] : Registry()) kinds.push_back(k);
  return kinds;
}

absl::StatusOr<int64_t> IntAttr(const LayerSpec& layer, const std::string& key,
                                std::optional<int64_t> default_value) {
  auto it = layer.attrs().find(key);
  if (it == layer.attrs().end()) {
    if (default_value) return *default_value;
    return Bad(layer, "missing attribute '" + key + "'");
  }
  if (it->second.value_case() != AttrValue::kI) return Bad(layer, "attribute '" + key + "' must be an int");
  return it->second.i();
}

absl::StatusOr<double> FloatAttr(const LayerSpec& layer, const std::string& key,
                                 std::optional<double> default_value) {
  auto it = layer.attrs().find(key);
  if (it == layer.attrs().end()) {
    if (default_value) return *default_value;
    return Bad(layer, "missing attribute '" + key + "'");
  }
  if (it->second.value_case() == AttrValue::kI) return static_cast<double>(it->second.i());
  if (it->second.value_case() != AttrValue::kF) return Bad(layer, "attribute '" + key + "' must be a float");
  return it->second.f();
}

absl::StatusOr<bool> BoolAttr(const LayerSpec& layer, const std::string& key, bool default_value) {
  auto it = layer.attrs().find(key);
  if (it == layer.attrs().end()) return default_value;
  if (it->second.value_case() != AttrValue::kB) return Bad(layer, "attribute '" + key + "' must be a bool");
  return it->second.b();
}

absl::StatusOr<std::vector<int64_t>> IntsAttr(const LayerSpec& layer, const std::string& key, int n,
                                              std::optional<int64_t> default_value) {
  auto it = layer.attrs().find(key);
  if (it == layer.attrs().end()) {
    if (default_value) return std::vector<int64_t>(n, *default_value);
    return Bad(layer, "missing attribute '" + key + "'");
  }
  if (it->second.value_case() == AttrValue::kI) return std::vector<int64_t>(n, it->second.i());
  if (it->second.value_case() == AttrValue::kInts && it->second.ints().values_size() == n) {
    const auto& v = it->second.ints().values();
    for (int64_t x : v)
      if (x <= 0 && key != "padding") return Bad(layer, "attribute '" + key + "' must be positive");
    return std::vector<int64_t>(v.begin(), v.end());
  }
  return Bad(layer, absl::StrCat("attribute '", key, "' must be an int or a list of ", n, " ints"));
}

}  // namespace ppc::ir
