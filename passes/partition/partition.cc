#include "passes/partition/partition.h"

#include <algorithm>
#include <limits>
#include <regex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ir/layer_shapes.h"
#include "ir/limits.h"
#include "ir/plan_check.h"
#include "ir/topology.h"
#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {
namespace {

// The smallest largest-range sum of any split of `w` into `parts` non-empty contiguous
// ranges (n >= parts): a binary search on it, each try a greedy count of the ranges it
// needs (a split into fewer ranges can always be split further without raising it).
int64_t SmallestLargestSum(const std::vector<int64_t>& w, int parts) {
  int64_t lo = 0, hi = 0;
  for (int64_t x : w) {
    lo = std::max(lo, x);
    hi += x;
  }
  auto fits = [&](int64_t bound) {
    int ranges = 1;
    int64_t sum = 0;
    for (int64_t x : w) {
      if (sum + x > bound) {
        ++ranges;
        sum = 0;
      }
      sum += x;
    }
    return ranges <= parts;
  };
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (fits(mid)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

}  // namespace

// A dynamic program over (ranges, layers) whose last range may only be one no larger
// than the optimal largest sum B (found first): every state on an optimal split has a
// largest sum <= B, and among its choices the ones over B can never win, so the result
// is that of the unrestricted program while each state looks at the few cuts whose
// last range fits B rather than all of them.
std::vector<int> BalancedSplit(const std::vector<int64_t>& w, int parts) {
  const int n = static_cast<int>(w.size());
  std::vector<int64_t> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + w[i];
  const int64_t bound = SmallestLargestSum(w, parts);
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  // cost[k][i]: (max sum, sum of squared range sizes) splitting the first i layers into k ranges.
  using Cost = std::pair<int64_t, int64_t>;
  std::vector<std::vector<Cost>> cost(parts + 1, std::vector<Cost>(n + 1, {kInf, kInf}));
  std::vector<std::vector<int>> from(parts + 1, std::vector<int>(n + 1, -1));
  cost[0][0] = {0, 0};
  for (int k = 1; k <= parts; ++k) {
    // The first i layers in k ranges, the other n - i in parts - k.
    int lo = k - 1;  // the first cut whose last range [j, i) fits the bound; grows with i
    for (int i = k; i <= n - (parts - k); ++i) {
      while (lo < i - 1 && prefix[i] - prefix[lo] > bound) ++lo;
      for (int j = lo; j < i; ++j) {
        if (cost[k - 1][j].first == kInf) continue;
        Cost c{std::max(cost[k - 1][j].first, prefix[i] - prefix[j]),
               cost[k - 1][j].second + int64_t(i - j) * (i - j)};
        if (c < cost[k][i]) {
          cost[k][i] = c;
          from[k][i] = j;
        }
      }
    }
  }
  std::vector<int> starts(parts);
  for (int k = parts, i = n; k >= 1; --k) {
    starts[k - 1] = from[k][i];
    i = from[k][i];
  }
  return starts;
}

absl::Status PartitionPass::Run(ir::Module& module) {
  ir::Plan& plan = module.header;  // the model, topology and config; no programs yet
  RETURN_IF_ERROR(RequireShapes(plan, "partition"));
  RETURN_IF_ERROR(RequireLevel(plan, ir::LEVEL_NONE, "partition"));
  const int stages = plan.topology().num_stages();
  const int chunks = plan.config().virtual_stages() == 0 ? 1 : plan.config().virtual_stages();
  const int n = plan.model().layers_size();
  if (stages < 1) return absl::InvalidArgumentError(absl::StrCat("topology.num_stages must be >= 1, got ", stages));
  if (chunks < 1 || chunks > ir::kMaxChunks) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.virtual_stages is ", chunks, "; it must be in [1, ", ir::kMaxChunks, "]"));
  }
  std::string layout = layout_;
  if (layout.empty()) layout = ir::IsVSchedule(plan.config().schedule()) ? "v" : "round-robin";
  if (layout != "v" && layout != "round-robin") {
    return absl::InvalidArgumentError(absl::StrCat("unknown partition layout '", layout, "'; use round-robin or v"));
  }
  if (layout == "v" && chunks != 2) {
    return absl::InvalidArgumentError(absl::StrCat("the v layout places 2 virtual stages per stage; config.virtual_stages is ",
                                                   chunks));
  }
  // Every virtual stage gets a range of layers.
  const int p = stages * chunks;
  if (p > n) {
    return absl::InvalidArgumentError(absl::StrCat("cannot give each of ", p, " virtual stages (", stages,
                                                   " stages x ", chunks, ") a layer: the model has only ", n,
                                                   " layers"));
  }
  std::string method = method_;
  if (method.empty()) method = plan.config().partition_method();
  if (method.empty()) method = "parameters";
  std::vector<int> starts;
  std::vector<int64_t> weights(n, 1);
  if (method == "parameters") {
    for (int i = 0; i < n; ++i) weights[i] = plan.model().layers(i).param_count();
    starts = BalancedSplit(weights, p);
  } else if (method == "flops") {
    std::vector<ir::TensorSpec> in{plan.model().input()};
    for (int i = 0; i < n; ++i) {
      auto info = ir::InferGroup(plan.model().layers(i), in);
      if (!info.ok()) return info.status();
      weights[i] = std::max<int64_t>(1, info->flops);
      in = info->outputs;
    }
    starts = BalancedSplit(weights, p);
  } else if (method == "uniform") {
    starts = BalancedSplit(weights, p);
  } else if (absl::StartsWith(method, "type:")) {
    std::string pattern = method.substr(5);
    std::regex re;
    try {
      re = std::regex(pattern, std::regex::icase);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(absl::StrCat("partition method '", method, "': bad regex: ", e.what()));
    }
    int matched = 0;
    for (int i = 0; i < n; ++i) {
      weights[i] = std::regex_search(plan.model().layers(i).kind(), re) ? 1 : 0;
      matched += weights[i];
    }
    if (matched == 0) {
      return absl::InvalidArgumentError(absl::StrCat("partition method '", method, "' matches no layer kind"));
    }
    starts = BalancedSplit(weights, p);
  } else if (absl::StartsWith(method, "explicit:") || method == "explicit") {
    std::vector<std::string> parts = absl::StrSplit(method.substr(std::min<size_t>(9, method.size())), ':',
                                                    absl::SkipEmpty());
    if (static_cast<int>(parts.size()) != p - 1) {
      return absl::InvalidArgumentError(absl::StrCat("partition method '", method, "' gives ", parts.size(),
                                                     " boundaries; ", p, " virtual stages need ", p - 1));
    }
    starts.push_back(0);
    for (const std::string& s : parts) {
      int b;
      if (!absl::SimpleAtoi(s, &b)) {
        return absl::InvalidArgumentError(absl::StrCat("partition method '", method, "': '", s, "' is not a layer index"));
      }
      starts.push_back(b);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown partition method '", method, "'; use parameters, flops, uniform, type:REGEX or explicit:A:B:..."));
  }
  // Every virtual stage must own at least one layer.
  for (int v = 0; v < p; ++v) {
    int begin = starts[v];
    int end = v + 1 < p ? starts[v + 1] : n;
    if (begin < 0 || end > n || begin >= end) {
      return absl::InvalidArgumentError(absl::StrCat("partition '", method, "' leaves virtual stage ", v,
                                                     " without layers (range [", begin, ", ", end, ") of ", n, ")"));
    }
  }
  ir::Placement placement;
  for (int v = 0; v < p; ++v) {
    auto* r = placement.add_virtual_stages();
    r->set_begin(starts[v]);
    r->set_end(v + 1 < p ? starts[v + 1] : n);
  }
  if (layout == "v") {
    ir::Grid::VShape(stages, &placement);
  } else {
    ir::Grid::RoundRobin(stages, chunks, &placement);
  }
  plan.clear_boundaries();
  for (int v = 0; v + 1 < p; ++v) {
    ir::Boundary* b = plan.add_boundaries();
    const auto& group = plan.model().layers(placement.virtual_stages(v).end() - 1).outputs();
    *b->mutable_tensors() = group;
    bool differentiable = false;
    for (const auto& t : group) differentiable |= t.dtype() == ir::FLOAT32;
    if (!differentiable && plan.config().schedule() != "inference") {
      return absl::InvalidArgumentError(absl::StrCat(
          "partition '", method, "' cuts the model after layer ", placement.virtual_stages(v).end() - 1, " ('",
          plan.model().layers(placement.virtual_stages(v).end() - 1).name(),
          "') where no FLOAT32 tensor crosses, so no gradient could flow back; cut elsewhere"));
    }
  }
  *plan.mutable_placement() = placement;
  return absl::OkStatus();
}

}  // namespace ppc::passes
