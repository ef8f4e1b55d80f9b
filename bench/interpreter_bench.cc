// Prints samples/s of the ppc interpreter with P=1 against a plain LibTorch training
// loop over the same model, weights, data and optimizer, and the interpreter's
// overhead per instruction: (interpreter step time - plain step time) / instructions.
//
//   bazel run -c opt //bench:interpreter_bench -- [--steps 30] [--repeats 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/optim.h>
#include <torch/utils.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "ir/plan_io.h"
#include "passes/compile.h"
#include "passes/test_util.h"
#include "runtime/data.h"
#include "runtime/gloo_transport.h"
#include "runtime/interpreter.h"
#include "runtime/layers.h"
#include "tools/flag_names.h"

ABSL_FLAG(int, steps, 30, "timed steps per measurement");
ABSL_FLAG(int, repeats, 5, "measurements per configuration (the median is reported)");

namespace ppc {
namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  std::string name;
  std::vector<int> widths;
  int micro_batches;
  int micro_batch_size;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds per step of a hand-written LibTorch loop doing what the plan does.
double PlainLoop(const ir::Plan& plan, int steps) {
  std::vector<std::unique_ptr<runtime::Layer>> layers;
  std::vector<torch::Tensor> params;
  for (int l = 0; l < plan.model().layers_size(); ++l) {
    layers.push_back(*runtime::BuildLayer(plan.model().layers(l), l, plan.config().seed()));
    for (auto& [n, p] : layers.back()->params()) params.push_back(p);
  }
  auto data = *runtime::SyntheticData::Create(plan.model(), plan.model().layers().rbegin()->outputs(0),
                                              plan.config().micro_batch_size(),
                                              int64_t(plan.config().micro_batches()) * plan.config().micro_batch_size(),
                                              plan.config().seed());
  torch::optim::SGD opt(params, torch::optim::SGDOptions(plan.config().optimizer().lr()));
  const int m = plan.config().micro_batches();
  auto run = [&](int step) {
    for (int k = 0; k < m; ++k) {
      auto b = *data->Load(step, k, true, true);
      torch::Tensor x = b.inputs;
      runtime::ForwardContext ctx{plan.config().seed(), step, k, true};
      for (auto& layer : layers) x = layer->Forward(x, ctx);
      torch::Tensor loss = torch::nn::functional::cross_entropy(x, b.labels);
      (void)loss.item<double>();
      (loss / m).backward();
    }
    opt.step();
    opt.zero_grad();
  };
  run(0);  // warm-up
  auto start = Clock::now();
  for (int s = 1; s <= steps; ++s) run(s);
  return std::chrono::duration<double>(Clock::now() - start).count() / steps;
}

double Interpreter(const ir::Plan& plan, runtime::Transport* transport, int steps, int64_t* instructions) {
  auto rt = runtime::StageRuntime::Load(plan, transport, {});
  if (!rt.ok()) {
    std::fprintf(stderr, "load failed: %s\n", std::string(rt.status().message()).c_str());
    std::exit(1);
  }
  (void)(*rt)->RunStep(0);  // warm-up
  int64_t before = (*rt)->instructions_executed();
  auto start = Clock::now();
  for (int s = 1; s <= steps; ++s) (void)(*rt)->RunStep(s);
  double sec = std::chrono::duration<double>(Clock::now() - start).count() / steps;
  *instructions = ((*rt)->instructions_executed() - before) / steps;
  return sec;
}

int Main(int argc, char** argv) {
  std::vector<std::string> storage;
  if (const std::string e = NormalizeFlagNames(argc, argv, storage); !e.empty()) {
    std::fprintf(stderr, "%s: %s\n", "interpreter_bench", e.c_str());
    return 2;
  }
  absl::ParseCommandLine(argc, argv);
  const int steps = absl::GetFlag(FLAGS_steps), repeats = absl::GetFlag(FLAGS_repeats);
  torch::set_num_threads(1);
  auto transport = runtime::CreateGlooTransport({});
  if (!transport.ok()) return 1;
  std::vector<Config> configs = {
      {"tiny mlp 4-4-4-4", {4, 4, 4, 4}, 16, 1},
      {"tiny mlp 4-4 (1 layer)", {4, 4}, 32, 1},
      {"mlp 32-64-64-32 b8", {32, 64, 64, 32}, 8, 8},
      {"mlp 256-1024-1024-256 b32", {256, 1024, 1024, 256}, 4, 32},
  };
  std::printf("interpreter vs plain LibTorch loop, P=1, 1 intra-op thread, %d steps x %d repeats (median)\n\n", steps,
              repeats);
  std::printf("| model | micro-batches x size | plain samples/s | ppc samples/s | ppc/plain | instr/step | "
              "overhead us/instr | step us/instr (upper bound) |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const Config& c : configs) {
    ir::Plan plan = passes::MlpPlan(1, 1, c.micro_batches, "1f1b", c.widths);
    plan.mutable_model()->mutable_input()->set_shape(0, c.widths[0]);
    plan.mutable_config()->set_micro_batch_size(c.micro_batch_size);
    auto compiled = passes::CompilePlan(plan.model(), plan.topology(), plan.config());
    if (!compiled.ok()) {
      std::fprintf(stderr, "%s\n", std::string(compiled.status().message()).c_str());
      return 1;
    }
    std::vector<double> plain, interp;
    int64_t instr = 0;
    for (int r = 0; r < repeats; ++r) {
      plain.push_back(PlainLoop(*compiled, steps));
      interp.push_back(Interpreter(*compiled, transport->get(), steps, &instr));
    }
    const double samples = double(c.micro_batches) * c.micro_batch_size;
    const double p = Median(plain), q = Median(interp);
    // overhead: (interpreter - plain) step time per instruction, a difference of two
    // medians (can be within noise of 0); upper bound: the whole interpreter step time
    // per instruction, compute included.
    std::printf("| %s | %d x %d | %.0f | %.0f | %.3f | %lld | %.2f | %.2f |\n", c.name.c_str(), c.micro_batches,
                c.micro_batch_size, samples / p, samples / q, p / q, static_cast<long long>(instr),
                (q - p) / instr * 1e6, q / instr * 1e6);
  }
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) { return ppc::Main(argc, argv); }
