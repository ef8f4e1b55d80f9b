// Profiles a compiled plan's compute ops on this machine and simulates its step with
// the measured costs: per virtual stage the median time of F, B (after a plain F), and
// I and W (after an F run for a split backward), on one thread, with the plan's micro-batch size. Then
// the event simulator runs the plan's programs under those costs (communication free)
// and prints one line:
//
//   schedule S  P p  M m  simulated step X ms  bubble Y  F/B/I/W ms (sum over virtual stages) ...
//
//   bazel run -c opt //bench:schedule_costs -- --plan PLAN [--repeats 7]
// bench/zero_bubble_bench.sh runs it next to pprun for every schedule.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "ir/plan_io.h"
#include "ir/topology.h"
#include "passes/analysis/simulate.h"
#include "passes/analysis/timeline.h"
#include "runtime/stage_model.h"

ABSL_FLAG(std::string, plan, "", "a compiled plan");
ABSL_FLAG(int, repeats, 7, "timed runs of each op (the median is used)");

namespace ppc {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Run() {
  torch::set_num_threads(1);
  auto plan = ir::LoadPlan(absl::GetFlag(FLAGS_plan));
  if (!plan.ok()) {
    std::fprintf(stderr, "schedule_costs: %s\n", std::string(plan.status().message()).c_str());
    return 1;
  }
  auto grid = ir::Grid::Of(*plan);
  if (!grid.ok()) {
    std::fprintf(stderr, "schedule_costs: %s\n", std::string(grid.status().message()).c_str());
    return 1;
  }
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  const int64_t mbs = plan->config().micro_batch_size();
  const int nv = grid->virtual_stages();
  passes::CostModel costs;
  costs.forward.assign(nv, 0);
  costs.backward.assign(nv, 0);
  costs.backward_input.assign(nv, 0);
  costs.backward_weight.assign(nv, 0);
  for (int s = 0; s < grid->stages(); ++s) {
    std::vector<std::string> problems;
    auto model = runtime::StageModel::Build(*plan, *grid, s, problems);
    if (!problems.empty()) {
      std::fprintf(stderr, "schedule_costs: stage %d: %s\n", s, problems[0].c_str());
      return 1;
    }
    model->Flatten(model->NumParameters(), torch::kCPU);
    for (int c = 0; c < grid->chunks(); ++c) {
      const int v = grid->VirtualOf(s, c);
      const bool last = grid->IsLast(v);
      // The input group of the virtual stage and the gradients of its output group.
      const int begin = plan->placement().virtual_stages(v).begin();
      std::vector<ir::TensorSpec> in_specs;
      if (begin == 0) {
        in_specs.push_back(plan->model().input());
      } else {
        for (const auto& t : plan->model().layers(begin - 1).outputs()) in_specs.push_back(t);
      }
      auto make = [&](const ir::TensorSpec& t) {
        std::vector<int64_t> shape{mbs};
        shape.insert(shape.end(), t.shape().begin(), t.shape().end());
        return t.dtype() == ir::INT64 ? torch::zeros(shape, torch::kLong) : torch::randn(shape);
      };
      runtime::Group inputs, grads;
      for (const auto& t : in_specs) inputs.push_back(make(t));
      if (!last) {
        const int end = plan->placement().virtual_stages(v).end();
        for (const auto& t : plan->model().layers(end - 1).outputs())
          if (t.dtype() == ir::FLOAT32) grads.push_back(make(t));
      }
      torch::Tensor labels = torch::zeros({mbs}, torch::kLong);
      if (plan->model().loss() == ir::MSE) labels = make(plan->model().label());
      const runtime::ForwardContext ctx{plan->config().seed(), 0, 0, true};
      std::vector<double> f, b, i, w;
      for (int r = 0; r <= repeats; ++r) {  // the first run warms up, untimed
        runtime::SavedForward saved;
        torch::Tensor loss;
        runtime::Group x;
        for (const auto& t : inputs) x.push_back(t.clone());
        auto t0 = Clock::now();
        model->Forward(v, x, labels, ctx, &saved, &loss, /*split=*/false);
        auto t1 = Clock::now();
        model->Backward(ir::BACKWARD, v, saved, grads);
        auto t2 = Clock::now();
        x.clear();
        for (const auto& t : inputs) x.push_back(t.clone());
        model->Forward(v, x, labels, ctx, &saved, &loss, /*split=*/true);
        auto t3 = Clock::now();
        model->Backward(ir::BACKWARD_INPUT, v, saved, grads);
        auto t4 = Clock::now();
        model->Backward(ir::BACKWARD_WEIGHT, v, saved, grads);
        auto t5 = Clock::now();
        if (r == 0) continue;
        auto sec = [](auto a, auto z) { return std::chrono::duration<double>(z - a).count(); };
        f.push_back(sec(t0, t1));
        b.push_back(sec(t1, t2));
        i.push_back(sec(t3, t4));
        w.push_back(sec(t4, t5));
      }
      costs.forward[v] = Median(f);
      costs.backward[v] = Median(b);
      costs.backward_input[v] = Median(i);
      costs.backward_weight[v] = Median(w);
    }
  }
  auto t = passes::SimulateTimeline(*plan, costs);
  if (!t.ok()) {
    std::fprintf(stderr, "schedule_costs: %s\n", std::string(t.status().message()).c_str());
    return 1;
  }
  double sf = 0, sb = 0, si = 0, sw = 0;
  for (int v = 0; v < nv; ++v) {
    sf += costs.forward[v];
    sb += costs.backward[v];
    si += costs.backward_input[v];
    sw += costs.backward_weight[v];
  }
  int64_t peak = 0;
  for (const auto& st : t->stages) peak = std::max(peak, st.peak_activation_bytes);
  std::printf(
      "schedule %s P %d M %d simulated_step_ms %.2f bubble %.4f F_ms %.2f B_ms %.2f I_ms %.2f W_ms %.2f "
      "peak_activation_bytes %lld\n",
      plan->config().schedule().c_str(), grid->stages(), plan->config().micro_batches(), t->makespan * 1e3,
      t->bubble_fraction, sf * 1e3, sb * 1e3, si * 1e3, sw * 1e3, static_cast<long long>(peak));
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return ppc::Run();
}
