#include "ir/layer_shapes.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/limits.h"
#include "ir/status_macros.h"

namespace ppc::ir {
namespace {

using ShapeFn = std::function<absl::StatusOr<LayerShapeInfo>(const LayerSpec&, const TensorSpec&)>;
using GroupFn = std::function<absl::StatusOr<GroupShapeInfo>(const LayerSpec&, const std::vector<TensorSpec>&)>;

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

int64_t Product(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // callers keep each product within kMaxTensorElements
  return n;
}

// A parameter count: the product of the weight's dimensions plus a bias, checked.
absl::StatusOr<int64_t> Params(const LayerSpec& l, const std::vector<int64_t>& weight, int64_t bias) {
  int64_t n = 1;
  for (int64_t d : weight) {
    if (!CheckedMul(n, d, &n) || n > kMaxParameters) {
      return Bad(l, absl::StrCat("more than ", kMaxParameters, " parameters"));
    }
  }
  if (!CheckedAdd(n, bias, &n) || n > kMaxParameters) {
    return Bad(l, absl::StrCat("more than ", kMaxParameters, " parameters"));
  }
  return n;
}

// PyTorch's output size of a convolution or pooling window along one dimension:
// floor((in + 2p - d(k-1) - 1) / s) + 1, or ceil with ceil_mode (a window may not start
// in the right padding).
absl::StatusOr<int64_t> WindowOutput(const LayerSpec& l, const TensorSpec& in, int64_t size, int64_t k, int64_t s,
                                     int64_t p, int64_t d, bool ceil_mode) {
  const int64_t span = d * (k - 1) + 1;  // attrs are <= kMaxDim: no overflow
  const int64_t room = size + 2 * p - span;
  if (room < 0) {
    return Bad(l, absl::StrCat("kernel ", k, " (dilation ", d, ", padding ", p, ") does not fit input ",
                               ShapeString(in), ": the output would be empty"));
  }
  int64_t out = (ceil_mode ? (room + s - 1) / s : room / s) + 1;
  if (ceil_mode && (out - 1) * s >= size + p) --out;
  return out;
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
  ASSIGN_OR_RETURN(int64_t params, Params(l, {out_f, in_f}, bias ? out_f : 0));
  return LayerShapeInfo{Spec(dims), params, {out_f, in_f}};
}

absl::StatusOr<LayerShapeInfo> Conv2d(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  ASSIGN_OR_RETURN(int64_t cin, IntAttr(l, "in_channels"));
  ASSIGN_OR_RETURN(int64_t cout, IntAttr(l, "out_channels"));
  ASSIGN_OR_RETURN(auto k, IntsAttr(l, "kernel_size", 2));
  ASSIGN_OR_RETURN(auto st, IntsAttr(l, "stride", 2, 1));
  ASSIGN_OR_RETURN(auto pad, IntsAttr(l, "padding", 2, 0, /*min=*/0));
  ASSIGN_OR_RETURN(auto dil, IntsAttr(l, "dilation", 2, 1));
  ASSIGN_OR_RETURN(bool bias, BoolAttr(l, "bias", true));
  if (in.shape_size() != 3 || in.shape(0) != cin)
    return Bad(l, absl::StrCat("expects input [", cin, ",H,W], got ", ShapeString(in)));
  std::vector<int64_t> out{cout, 0, 0};
  for (int i = 0; i < 2; ++i) {
    ASSIGN_OR_RETURN(out[1 + i], WindowOutput(l, in, in.shape(1 + i), k[i], st[i], pad[i], dil[i], false));
  }
  ASSIGN_OR_RETURN(int64_t params, Params(l, {cout, cin, k[0], k[1]}, bias ? cout : 0));
  return LayerShapeInfo{Spec(out), params, {cout, cin, k[0], k[1]}};
}

absl::StatusOr<LayerShapeInfo> MaxPool2d(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  ASSIGN_OR_RETURN(auto k, IntsAttr(l, "kernel_size", 2));
  ASSIGN_OR_RETURN(auto st, IntsAttr(l, "stride", 2, k[0]));
  ASSIGN_OR_RETURN(auto pad, IntsAttr(l, "padding", 2, 0, /*min=*/0));
  ASSIGN_OR_RETURN(auto dil, IntsAttr(l, "dilation", 2, 1));
  ASSIGN_OR_RETURN(bool ceil_mode, BoolAttr(l, "ceil_mode", false));
  if (in.shape_size() != 3) return Bad(l, "expects input [C,H,W], got " + ShapeString(in));
  std::vector<int64_t> out{in.shape(0), 0, 0};
  for (int i = 0; i < 2; ++i) {
    // PyTorch: "pad should be at most half of kernel size" (kernel // 2).
    if (pad[i] > k[i] / 2) {
      return Bad(l, absl::StrCat("padding ", pad[i], " is more than half the kernel ", k[i]));
    }
    ASSIGN_OR_RETURN(out[1 + i], WindowOutput(l, in, in.shape(1 + i), k[i], st[i], pad[i], dil[i], ceil_mode));
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
  if (!(p >= 0 && p < 1)) return Bad(l, absl::StrCat("p=", p, " must be in [0, 1)"));
  return LayerShapeInfo{in, 0, {}};
}

absl::StatusOr<LayerShapeInfo> Flatten(const LayerSpec& l, const TensorSpec& in) {
  if (in.shape_size() < 1) return Bad(l, "expects at least one dimension");
  return LayerShapeInfo{Spec({NumElements(in)}, in.dtype()), 0, {}};
}

absl::StatusOr<LayerShapeInfo> LayerNorm(const LayerSpec& l, const TensorSpec& in) {
  RETURN_IF_ERROR(NeedFloat(l, in));
  if (in.shape_size() < 1) return Bad(l, "expects at least one dimension");
  ASSIGN_OR_RETURN(int64_t n, IntAttr(l, "normalized_shape", in.shape(in.shape_size() - 1)));
  ASSIGN_OR_RETURN(double eps, FloatAttr(l, "eps", 1e-5));
  if (!(eps >= 0 && eps < 1e300)) return Bad(l, absl::StrCat("eps=", eps, " must be finite and >= 0"));
  if (n != in.shape(in.shape_size() - 1))
    return Bad(l, absl::StrCat("normalized_shape=", n, " does not match input ", ShapeString(in)));
  return LayerShapeInfo{in, 2 * n, {n}};
}

absl::StatusOr<LayerShapeInfo> Embedding(const LayerSpec& l, const TensorSpec& in) {
  ASSIGN_OR_RETURN(int64_t num, IntAttr(l, "num_embeddings"));
  ASSIGN_OR_RETURN(int64_t dim, IntAttr(l, "embedding_dim"));
  if (in.dtype() != INT64) return Bad(l, "expects int64 indices, got " + ShapeString(in));
  if (in.shape_size() + 1 > kMaxTensorRank) return Bad(l, "output would have too many dimensions");
  auto dims = Dims(in);
  dims.push_back(dim);
  ASSIGN_OR_RETURN(int64_t params, Params(l, {num, dim}, 0));
  return LayerShapeInfo{Spec(dims), params, {num, dim}};
}

// "'input' FLOAT32[4], 'skip' FLOAT32[4]": a group, for error messages.
std::string GroupString(const std::vector<TensorSpec>& group) {
  std::vector<std::string> parts;
  for (const TensorSpec& t : group) parts.push_back(absl::StrCat("'", t.name(), "' ", ShapeString(t)));
  return absl::StrJoin(parts, ", ");
}

// Fork: pushes a copy of the first tensor, named after the layer; the first keeps its name.
absl::StatusOr<GroupShapeInfo> ForkGroup(const LayerSpec& l, const std::vector<TensorSpec>& group) {
  if (static_cast<int64_t>(group.size()) >= kMaxGroupTensors) {
    return Bad(l, absl::StrCat("a Fork of a group of ", group.size(), " tensors would make ", group.size() + 1,
                               "; a group holds at most ", kMaxGroupTensors, " (an Add pops one)"));
  }
  GroupShapeInfo info{group, 0, {}, 0};
  info.outputs.push_back(group.front());
  info.outputs.back().set_name(l.name());
  return info;
}

// Add: pops the last tensor and adds it to the first; the sum is named after the layer.
absl::StatusOr<GroupShapeInfo> AddGroup(const LayerSpec& l, const std::vector<TensorSpec>& group) {
  if (group.size() < 2) {
    return Bad(l, absl::StrCat("adds the last tensor of the group to the first, but the group is one tensor (",
                               GroupString(group), "); a Fork must push the tensor to add first"));
  }
  const TensorSpec& first = group.front();
  const TensorSpec& last = group.back();
  if (first.dtype() != FLOAT32 || last.dtype() != FLOAT32 || Dims(first) != Dims(last)) {
    return Bad(l, absl::StrCat("cannot add the last tensor '", last.name(), "' ", ShapeString(last),
                               " to the first '", first.name(), "' ", ShapeString(first),
                               ": both must be FLOAT32 with the same shape"));
  }
  GroupShapeInfo info{group, 0, {}, NumElements(first)};
  info.outputs.pop_back();
  info.outputs.front().set_name(l.name());
  return info;
}

// A kind's shape function and every attribute it (and the runtime's builder,
// runtime/layers.cc) reads, optional ones included: any other key is refused, so a
// misspelled attribute cannot leave its default in place. Kinds that act on the whole
// group (Fork, Add) have `group` and no `infer`.
struct KindInfo {
  ShapeFn infer;
  std::vector<std::string> attrs;  // sorted
  GroupFn group = nullptr;
};

const std::map<std::string, KindInfo>& Registry() {
  static const auto* registry = new std::map<std::string, KindInfo>{
      {"AdaptiveAvgPool2d", {AdaptiveAvgPool2d, {"output_size"}}},
      {"Add", {nullptr, {}, AddGroup}},
      {"Conv2d",
       {Conv2d, {"bias", "dilation", "in_channels", "kernel_size", "out_channels", "padding", "stride"}}},
      {"Dropout", {Dropout, {"p"}}},
      {"Embedding", {Embedding, {"embedding_dim", "num_embeddings"}}},
      {"Flatten", {Flatten, {}}},
      {"Fork", {nullptr, {}, ForkGroup}},
      {"GELU", {Elementwise, {}}},
      {"LayerNorm", {LayerNorm, {"eps", "normalized_shape"}}},
      {"Linear", {Linear, {"bias", "in_features", "out_features"}}},
      {"MaxPool2d", {MaxPool2d, {"ceil_mode", "dilation", "kernel_size", "padding", "stride"}}},
      {"ReLU", {Elementwise, {}}},
      {"Tanh", {Elementwise, {}}},
  };
  return *registry;
}

// InvalidArgument naming every attribute key of `layer` its kind does not read.
absl::Status CheckAttributeKeys(const LayerSpec& layer, const std::vector<std::string>& known) {
  std::vector<std::string> unknown;
  for (const auto& [key, value] : layer.attrs()) {
    if (!std::binary_search(known.begin(), known.end(), key)) unknown.push_back(absl::StrCat("'", key, "'"));
  }
  if (unknown.empty()) return absl::OkStatus();
  std::sort(unknown.begin(), unknown.end());  // map order is unspecified
  return Bad(layer, absl::StrCat("unknown attribute", unknown.size() == 1 ? " " : "s ", absl::StrJoin(unknown, ", "),
                                 " (known: ", known.empty() ? "none" : absl::StrJoin(known, ", "), ")"));
}

// The registry entry of `layer`'s kind, its attribute keys checked.
absl::StatusOr<const KindInfo*> FindKind(const LayerSpec& layer) {
  auto it = Registry().find(layer.kind());
  if (it == Registry().end()) {
    std::vector<std::string> kinds = LayerKinds();
    return Bad(layer, absl::StrCat("unknown layer kind; known kinds: ", absl::StrJoin(kinds, ", ")));
  }
  RETURN_IF_ERROR(CheckAttributeKeys(layer, it->second.attrs));
  return &it->second;
}

// InferLayer once the kind is known to act on one tensor.
absl::StatusOr<LayerShapeInfo> InferOne(const LayerSpec& layer, const KindInfo& kind_info, const TensorSpec& input) {
  RETURN_IF_ERROR(CheckTensorSpec(input, absl::StrCat("layer '", layer.name(), "' input")));
  ASSIGN_OR_RETURN(LayerShapeInfo info, kind_info.infer(layer, input));
  info.output.set_name(layer.name());
  RETURN_IF_ERROR(CheckTensorSpec(info.output, absl::StrCat("layer '", layer.name(), "' (", layer.kind(), ") output")));
  // Forward cost estimate: multiply-adds for layers with a weight (each output element
  // reads one weight row / filter), element operations for the rest.
  const int64_t out = NumElements(info.output);
  const std::string& kind = layer.kind();
  // Saturating: an estimate, never an overflow.
  auto mul = [](std::initializer_list<int64_t> factors) {
    int64_t n = 1;
    for (int64_t f : factors) {
      if (!CheckedMul(n, f, &n)) return std::numeric_limits<int64_t>::max();
    }
    return n;
  };
  if (kind == "Linear") {
    info.flops = mul({out, info.weight_shape[1]});
  } else if (kind == "Conv2d") {
    info.flops = mul({out, info.weight_shape[1], info.weight_shape[2], info.weight_shape[3]});
  } else if (kind == "MaxPool2d") {
    auto k = IntsAttr(layer, "kernel_size", 2);
    info.flops = mul({out, k.ok() ? (*k)[0] : 1, k.ok() ? (*k)[1] : 1});
  } else if (kind == "LayerNorm") {
    info.flops = mul({5, out});
  } else {
    info.flops = std::max(out, NumElements(input));
  }
  return info;
}

}  // namespace

std::string ShapeString(const TensorSpec& spec) {
  return absl::StrCat(DType_Name(spec.dtype()), "[", absl::StrJoin(spec.shape(), ","), "]");
}

int64_t NumElements(const TensorSpec& spec) {
  int64_t n = 1;
  for (int64_t d : spec.shape()) {
    if (!CheckedMul(n, d, &n)) return -1;
  }
  return n;
}

absl::Status CheckTensorSpec(const TensorSpec& spec, const std::string& what) {
  if (spec.dtype() != FLOAT32 && spec.dtype() != INT64) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has dtype ", DType_Name(spec.dtype()),
                                                   " (FLOAT32 or INT64)"));
  }
  if (spec.shape_size() > kMaxTensorRank) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", ShapeString(spec), " has more than ", kMaxTensorRank,
                                                   " dimensions"));
  }
  int64_t n = 1;
  for (int64_t d : spec.shape()) {
    if (d < 1 || d > kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", ShapeString(spec), ": every dimension must be in [1, ",
                                                     kMaxDim, "]"));
    }
    if (!CheckedMul(n, d, &n) || n > kMaxTensorElements) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", ShapeString(spec), " has more than ",
                                                     kMaxTensorElements, " elements"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerShapeInfo> InferLayer(const LayerSpec& layer, const TensorSpec& input) {
  ASSIGN_OR_RETURN(const KindInfo* kind, FindKind(layer));
  if (kind->group) {
    return Bad(layer, "acts on a group of tensors, not on one (Fork pushes a copy of the first tensor, Add pops the "
                      "last into the first): infer it with InferGroup");
  }
  return InferOne(layer, *kind, input);
}

absl::StatusOr<GroupShapeInfo> InferGroup(const LayerSpec& layer, const std::vector<TensorSpec>& group) {
  if (group.empty()) return Bad(layer, "input group is empty; a group holds at least one tensor");
  if (static_cast<int64_t>(group.size()) > kMaxGroupTensors) {
    return Bad(layer, absl::StrCat("input group has ", group.size(), " tensors; at most ", kMaxGroupTensors));
  }
  ASSIGN_OR_RETURN(const KindInfo* kind, FindKind(layer));
  for (size_t i = 0; i < group.size(); ++i) {
    RETURN_IF_ERROR(CheckTensorSpec(group[i], absl::StrCat("layer '", layer.name(), "' (", layer.kind(),
                                                           ") input tensor ", i, " '", group[i].name(), "'")));
  }
  if (kind->group) return kind->group(layer, group);
  ASSIGN_OR_RETURN(LayerShapeInfo info, InferOne(layer, *kind, group.front()));
  GroupShapeInfo result{group, info.param_count, std::move(info.weight_shape), info.flops};
  result.outputs.front() = std::move(info.output);
  return result;
}

bool IsGroupKind(const std::string& kind) {
  auto it = Registry().find(kind);
  return it != Registry().end() && it->second.group != nullptr;
}

std::vector<std::string> LayerKinds() {
  std::vector<std::string> kinds;
  for (const auto& [k, info] : Registry()) kinds.push_back(k);
  return kinds;
}

std::vector<std::string> LayerAttributes(const std::string& kind) {
  auto it = Registry().find(kind);
  return it == Registry().end() ? std::vector<std::string>{} : it->second.attrs;
}

absl::StatusOr<int64_t> IntAttr(const LayerSpec& layer, const std::string& key,
                                std::optional<int64_t> default_value, int64_t min_value) {
  auto it = layer.attrs().find(key);
  if (it == layer.attrs().end()) {
    if (default_value) return *default_value;
    return Bad(layer, "missing attribute '" + key + "'");
  }
  if (it->second.value_case() != AttrValue::kI) return Bad(layer, "attribute '" + key + "' must be an int");
  const int64_t v = it->second.i();
  if (v < min_value || v > kMaxDim) {
    return Bad(layer, absl::StrCat("attribute '", key, "' is ", v, "; it must be in [", min_value, ", ", kMaxDim, "]"));
  }
  return v;
}

absl::StatusOr<double> FloatAttr(const LayerSpec& layer, const std::string& key,
                                 std::optional<double> default_value) {
  auto it = layer.attrs().find(key);
  if (it == layer.attrs().end()) {
    if (default_value) return *default_value;
    return Bad(layer, "missing attribute '" + key + "'");
  }
  double v;
  if (it->second.value_case() == AttrValue::kI) {
    v = static_cast<double>(it->second.i());
  } else if (it->second.value_case() == AttrValue::kF) {
    v = it->second.f();
  } else {
    return Bad(layer, "attribute '" + key + "' must be a float");
  }
  if (!std::isfinite(v)) return Bad(layer, absl::StrCat("attribute '", key, "' is ", v, "; it must be finite"));
  return v;
}

absl::StatusOr<bool> BoolAttr(const LayerSpec& layer, const std::string& key, bool default_value) {
  auto it = layer.attrs().find(key);
  if (it == layer.attrs().end()) return default_value;
  if (it->second.value_case() != AttrValue::kB) return Bad(layer, "attribute '" + key + "' must be a bool");
  return it->second.b();
}

absl::StatusOr<std::vector<int64_t>> IntsAttr(const LayerSpec& layer, const std::string& key, int n,
                                              std::optional<int64_t> default_value, int64_t min_value) {
  auto it = layer.attrs().find(key);
  std::vector<int64_t> values;
  if (it == layer.attrs().end()) {
    if (!default_value) return Bad(layer, "missing attribute '" + key + "'");
    values.assign(n, *default_value);
  } else if (it->second.value_case() == AttrValue::kI) {
    values.assign(n, it->second.i());
  } else if (it->second.value_case() == AttrValue::kInts && it->second.ints().values_size() == n) {
    values.assign(it->second.ints().values().begin(), it->second.ints().values().end());
  } else {
    return Bad(layer, absl::StrCat("attribute '", key, "' must be an int or a list of ", n, " ints"));
  }
  for (int64_t v : values) {
    if (v < min_value || v > kMaxDim) {
      return Bad(layer,
                 absl::StrCat("attribute '", key, "' has ", v, "; it must be in [", min_value, ", ", kMaxDim, "]"));
    }
  }
  return values;
}

}  // namespace ppc::ir
