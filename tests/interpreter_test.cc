// Fast interpreter tests: every rank of a world is a thread of this process, talking
// over the loopback transport (runtime/loopback_transport.h), so that schedules,
// partitions and data parallelism are checked against one-process training in seconds
// (tests/e2e_test.cc checks the same contract with real pprun processes over Gloo), and
// so are the runtime's errors on plans the verifier would reject.
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "ir/plan_io.h"
#include "passes/analysis/timeline.h"
#include "passes/compile.h"
#include "passes/registry.h"
#include "runtime/interpreter.h"
#include "runtime/loopback_transport.h"
#include "runtime/memory_meter.h"
#include "runtime/runner.h"
#include "runtime/stage_model.h"

namespace ppc {
namespace {

using ::testing::HasSubstr;

constexpr int kSteps = 10;

ir::Plan ModelPlan(const std::string& model, int stages, int dp, int micro_batches, const std::string& schedule) {
  ir::Plan plan;
  EXPECT_TRUE(ir::ParseTextProtoFile(model, plan.mutable_model()).ok()) << model;
  plan.mutable_topology()->set_num_stages(stages);
  plan.mutable_topology()->set_data_parallel(dp);
  auto* c = plan.mutable_config();
  c->set_micro_batches(micro_batches);
  c->set_micro_batch_size(4);
  c->set_schedule(schedule);
  c->set_seed(1138);
  c->set_steps(kSteps);
  c->mutable_optimizer()->set_type("sgd");
  c->mutable_optimizer()->set_lr(0.2);
  c->mutable_optimizer()->set_momentum(0.9);
  return plan;
}

ir::Plan Mlp(int stages, int dp, int micro_batches, const std::string& schedule) {
  return ModelPlan("examples/mlp/mlp.textproto", stages, dp, micro_batches, schedule);
}

// The residual MLP at P=2 cut after layer 3, where two tensors cross (the skip branch).
ir::Plan ResidualP2() {
  ir::Plan plan = ModelPlan("tests/testdata/residual_mlp.textproto", 2, 1, 4, "1f1b");
  plan.mutable_config()->set_partition_method("explicit:3");
  return plan;
}

ir::Plan Compiled(const ir::Plan& plan) {
  auto compiled = passes::CompilePlan(plan.model(), plan.topology(), plan.config());
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return compiled.ok() ? *compiled : ir::Plan();
}

int WorldSize(const ir::Plan& plan) { return plan.topology().num_stages() * plan.topology().data_parallel(); }

struct Trained {
  std::vector<double> losses;  // per step
  double eval_loss = 0;        // one held-out batch after the last step
  std::map<std::string, std::vector<float>> weights;  // "layerL.name" -> values
};

// Runs every rank of `plan` on its own thread through runtime::RunRank, connected by
// `hub`; each rank's result, by rank.
std::vector<absl::StatusOr<runtime::RunRecords>> RunAllRanks(const ir::Plan& plan, runtime::LoopbackHub& hub,
                                                             const runtime::RunOptions& options) {
  const int world = WorldSize(plan);
  std::vector<absl::StatusOr<runtime::RunRecords>> results(world, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] { results[r] = runtime::RunRank(plan, r, [&] { return hub.Connect(r); }, options); });
  }
  for (auto& t : threads) t.join();
  return results;
}

// Trains `plan` for kSteps on WorldSize(plan) threads through runtime::RunRank, then
// evaluates one held-out batch; the weights come back through --dump-weights' files.
// Fails with the first rank's error (by rank) when any rank fails.
absl::StatusOr<Trained> Train(const ir::Plan& plan, const std::string& name) {
  const int world = WorldSize(plan);
  auto hub = runtime::LoopbackHub::Create(world);
  if (!hub.ok()) return hub.status();
  const std::string dir = absl::StrCat(testing::TempDir(), "/", name);
  runtime::RunOptions options;
  options.steps = kSteps;
  options.print = false;
  options.eval_every = kSteps;
  options.dump_weights = dir;
  options.runtime.timeout = absl::Seconds(60);
  const std::vector<absl::StatusOr<runtime::RunRecords>> results = RunAllRanks(plan, **hub, options);
  for (int r = 0; r < world; ++r) {
    if (!results[r].ok()) return results[r].status();
  }
  Trained out;
  for (const auto& s : results[0]->steps) out.losses.push_back(s.loss);
  if (results[0]->evals.size() != 1) return absl::InternalError("expected one evaluation");
  out.eval_loss = results[0]->evals[0].result.loss;
  for (int l = 0; l < plan.model().layers_size(); ++l) {
    for (const char* param : {"weight", "bias"}) {
      const std::string key = absl::StrCat("layer", l, ".", param);
      std::ifstream in(absl::StrCat(dir, "/", key, ".f32"), std::ios::binary);
      if (!in) continue;
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::vector<float>& values = out.weights[key];
      values.resize(bytes.size() / sizeof(float));
      std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
    }
  }
  return out;
}

void ExpectSameTraining(const Trained& want, const Trained& got, double tol = 1e-5) {
  ASSERT_EQ(got.losses.size(), want.losses.size());
  for (size_t i = 0; i < want.losses.size(); ++i) {
    EXPECT_NEAR(got.losses[i], want.losses[i], tol * std::abs(want.losses[i])) << "step " << i + 1;
  }
  EXPECT_NEAR(got.eval_loss, want.eval_loss, tol * std::abs(want.eval_loss)) << "evaluation";
  ASSERT_EQ(got.weights.size(), want.weights.size()) << "every layer's parameters must be written once";
  for (const auto& [key, values] : want.weights) {
    auto it = got.weights.find(key);
    ASSERT_NE(it, got.weights.end()) << key;
    ASSERT_EQ(it->second.size(), values.size()) << key;
    double worst = 0;
    for (size_t k = 0; k < values.size(); ++k) worst = std::max(worst, double(std::abs(it->second[k] - values[k])));
    EXPECT_LE(worst, tol) << key;
  }
}

// One-process training of the same global batch: the reference. `learns`: its loss must
// fall over the steps (not every small model learns the synthetic labels in 10 steps).
Trained Reference(const ir::Plan& like, const std::string& name, bool learns = true) {
  ir::Plan one = like;
  one.mutable_topology()->set_num_stages(1);
  one.mutable_topology()->set_data_parallel(1);
  auto* c = one.mutable_config();
  c->set_micro_batches(like.config().micro_batches() * like.topology().data_parallel());
  c->set_schedule("1f1b");
  c->set_virtual_stages(1);
  c->clear_partition_method();
  c->set_activation_checkpoint_interval(0);
  auto ref = Train(Compiled(one), name);
  EXPECT_TRUE(ref.ok()) << ref.status();
  if (!ref.ok()) return {};
  EXPECT_EQ(ref->losses.size(), static_cast<size_t>(kSteps));
  if (learns) EXPECT_LT(ref->losses.back(), ref->losses.front()) << "training should make progress";
  return *ref;
}

void ExpectMatchesOneProcess(const ir::Plan& plan, const std::string& name, double tol = 1e-5) {
  const Trained ref = Reference(plan, name + "_ref");
  auto got = Train(Compiled(plan), name);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameTraining(ref, *got, tol);
}

TEST(Interpreter, OneFOneBMatchesOneProcess) { ExpectMatchesOneProcess(Mlp(2, 1, 4, "1f1b"), "1f1b_p2"); }

TEST(Interpreter, GPipeMatchesOneProcess) { ExpectMatchesOneProcess(Mlp(2, 1, 4, "gpipe"), "gpipe_p2"); }

TEST(Interpreter, InterleavedMatchesOneProcess) {
  ir::Plan plan = Mlp(2, 1, 4, "interleaved-1f1b");
  plan.mutable_config()->set_virtual_stages(2);
  plan.mutable_config()->set_partition_method("uniform");
  ExpectMatchesOneProcess(plan, "interleaved_p2_v2");
}

TEST(Interpreter, DataParallelMatchesOneProcess) {
  ExpectMatchesOneProcess(Mlp(1, 2, 2, "data-parallel"), "dp_d2");
  ExpectMatchesOneProcess(Mlp(2, 2, 2, "1f1b"), "1f1b_p2_d2");
}

TEST(Interpreter, ZeroOneMatchesOneProcess) {
  ir::Plan plan = Mlp(2, 2, 2, "1f1b");
  plan.mutable_config()->set_zero_stage(1);
  ExpectMatchesOneProcess(plan, "zero1_p2_d2");
}

// residual_mlp's skip branch crosses the cut: every boundary carries two tensors.
// The V placement (stage r holds virtual stages r and 2P-1-r): the transfers at the
// turn, between virtual stages P-1 and P, stay on the last stage (handed over in
// memory). GPipe's order runs on any placement.
TEST(Interpreter, VPlacementMatchesOneProcess) {
  for (int stages : {1, 2}) {
    ir::Plan plan = Mlp(stages, 1, 4, "gpipe");
    plan.mutable_config()->set_virtual_stages(2);
    passes::CompileOptions options;
    options.pipeline = "infer-shapes,partition{method=uniform,layout=v},schedule-gpipe,assign-buffers,lower,lower-eval,place-comm";
    auto compiled = passes::CompilePlan(plan.model(), plan.topology(), plan.config(), options);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    const int turn = stages - 1;  // the stage that holds virtual stages P-1 and P
    EXPECT_EQ(compiled->placement().virtual_stages(stages).stage(), turn);
    int local = 0;
    for (const auto& in : compiled->programs(turn).instructions()) {
      local += in.has_send() && (in.send().boundary() == stages - 1);
    }
    EXPECT_EQ(local, 2 * 4) << "an activation and a gradient per micro-batch cross the turn on stage " << turn;
    const Trained ref = Reference(plan, absl::StrCat("v_ref_p", stages));
    auto got = Train(*compiled, absl::StrCat("v_p", stages));
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectSameTraining(ref, *got);
  }
}

// The zero-bubble schedules (split backward; ZB-V and DualPipeV on the V placement with
// two chunks per stage): same losses and weights as one process, at P = 2 and 4, two
// micro-batch counts each, with and without data parallelism.
TEST(Interpreter, ZeroBubbleSchedulesMatchOneProcess) {
  for (const char* schedule : {"zb-h1", "zb-v", "dualpipev"}) {
    for (int stages : {2, 4}) {
      // DualPipeV needs M >= 2P.
      for (int m : {2 * stages, 3 * stages}) {
        for (int dp : {1, 2}) {
          SCOPED_TRACE(absl::StrCat(schedule, " P=", stages, " M=", m, " D=", dp));
          ir::Plan plan = Mlp(stages, dp, m, schedule);
          plan.mutable_config()->set_partition_method("uniform");
          const ir::Plan compiled = Compiled(plan);
          ASSERT_EQ(compiled.placement().chunks_per_stage(), std::string(schedule) == "zb-h1" ? 1 : 2);
          int inputs = 0;
          for (const auto& program : compiled.programs())
            for (const auto& in : program.instructions()) inputs += in.has_compute() && in.compute().kind() == ir::BACKWARD_INPUT;
          EXPECT_GT(inputs, 0) << "the schedule splits backwards";
          ExpectMatchesOneProcess(plan, absl::StrCat(schedule, "_p", stages, "_m", m, "_d", dp));
        }
      }
    }
  }
}

// ZB-V capped at 1F1B's peak: the replay's free choice reorders every stage (forwards of
// the last chunk before more of the first, backwards out of torch's order), and the plan
// still trains as one process does.
TEST(Interpreter, ZbVCappedAtOneFOneBsPeakMatchesOneProcess) {
  for (int stages : {2, 4}) {
    SCOPED_TRACE(absl::StrCat("P=", stages));
    ir::Plan plan = Mlp(stages, 1, 2 * stages, "zb-v");
    plan.mutable_config()->set_partition_method("uniform");
    passes::CompileOptions capped, uncapped;
    const std::string rest = ",assign-buffers,lower,lower-eval,place-comm";
    capped.pipeline = "infer-shapes,partition,schedule-zb-v{max_activations=1f1b}" + rest;
    uncapped.pipeline = "infer-shapes,partition,schedule-zb-v{max_activations=none}" + rest;
    auto a = passes::CompilePlan(plan.model(), plan.topology(), plan.config(), capped);
    auto b = passes::CompilePlan(plan.model(), plan.topology(), plan.config(), uncapped);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    auto order = [](const ir::Plan& p, int s) {
      std::string out;
      for (const auto& in : p.programs(s).instructions()) {
        if (in.has_compute()) absl::StrAppend(&out, in.compute().virtual_stage(), ":", in.compute().micro_batch(), " ");
      }
      return out;
    };
    bool moved = false;
    for (int s = 0; s < stages; ++s) moved |= order(*a, s) != order(*b, s);
    EXPECT_TRUE(moved) << "the cap should reorder torch's V";
    const Trained ref = Reference(plan, absl::StrCat("zbv_capped_ref_p", stages));
    auto got = Train(*a, absl::StrCat("zbv_capped_p", stages));
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectSameTraining(ref, *got);
  }
}

TEST(Interpreter, GroupsOfTensorsAcrossStagesMatchOneProcess) {
  ir::Plan plan = ResidualP2();
  ASSERT_EQ(Compiled(plan).boundaries(0).tensors_size(), 2);
  ExpectMatchesOneProcess(plan, "residual_p2");
}

TEST(Interpreter, ActivationCheckpointingMatchesOneProcess) {
  ir::Plan plan = Mlp(2, 1, 4, "1f1b");
  plan.mutable_config()->set_activation_checkpoint_interval(1);
  ExpectMatchesOneProcess(plan, "checkpointed_p2");
  ir::Plan residual = ResidualP2();
  residual.mutable_config()->set_activation_checkpoint_interval(2);
  ExpectMatchesOneProcess(residual, "checkpointed_residual_p2");
}

// `plan` compiled with every B split into I then W: in place (W right after its I), or
// with every W deferred to the end of its stage's compute (what I keeps lives until
// then). Built at the compute-only level and lowered by the real passes.
ir::Plan SplitBackwards(const ir::Plan& plan, bool defer) {
  ir::Plan p = plan;
  passes::CanonicalizeConfig(p.topology(), p.mutable_config());
  auto scheduled = passes::RunPipeline(
      p, absl::StrCat("infer-shapes,partition,schedule-", p.config().schedule()));
  EXPECT_TRUE(scheduled.ok()) << scheduled.status();
  if (!scheduled.ok()) return ir::Plan();
  for (auto& program : *scheduled->mutable_programs()) {
    ir::StageProgram split = program;
    split.clear_instructions();
    std::vector<ir::Instruction> weights;
    for (const ir::Instruction& in : program.instructions()) {
      *split.add_instructions() = in;
      if (!in.has_compute() || in.compute().kind() != ir::BACKWARD) continue;
      split.mutable_instructions()->rbegin()->mutable_compute()->set_kind(ir::BACKWARD_INPUT);
      ir::Instruction w = in;
      w.mutable_compute()->set_kind(ir::BACKWARD_WEIGHT);
      if (defer) {
        weights.push_back(w);
      } else {
        *split.add_instructions() = w;
      }
    }
    for (const auto& w : weights) *split.add_instructions() = w;
    program = split;
  }
  auto lowered = passes::RunPipeline(*scheduled, "assign-buffers,lower,lower-eval,place-comm");
  EXPECT_TRUE(lowered.ok()) << lowered.status();
  return lowered.ok() ? *lowered : ir::Plan();
}

// I computes the input gradients only, keeping each layer's graph for W; W then the
// weight gradients from it. Both orders must train as the same plan with full
// backwards does (the same kernels, summed in another order at most) and as one process.
void ExpectSplitMatchesFull(const ir::Plan& plan, const std::string& name) {
  const Trained full = [&] {
    auto t = Train(Compiled(plan), name + "_full");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : Trained();
  }();
  const Trained ref = Reference(plan, name + "_ref");
  for (bool defer : {false, true}) {
    SCOPED_TRACE(defer ? "every W at the end" : "W right after I");
    ir::Plan split = SplitBackwards(plan, defer);
    int inputs = 0, weights = 0, fulls = 0;
    for (const auto& program : split.programs()) {
      for (const auto& in : program.instructions()) {
        if (!in.has_compute()) continue;
        inputs += in.compute().kind() == ir::BACKWARD_INPUT;
        weights += in.compute().kind() == ir::BACKWARD_WEIGHT;
        fulls += in.compute().kind() == ir::BACKWARD;
      }
    }
    ASSERT_EQ(fulls, 0);
    ASSERT_EQ(inputs, plan.config().micro_batches() * split.placement().virtual_stages_size());
    ASSERT_EQ(weights, inputs);
    auto got = Train(split, absl::StrCat(name, defer ? "_deferred" : "_inplace"));
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectSameTraining(full, *got, 1e-6);
    ExpectSameTraining(ref, *got);
  }
}

// At the model level: I leaves every weight gradient untouched and returns the input
// gradients of a full backward; W then adds exactly the full backward's weight
// gradients and returns nothing; I keeps only the layers with weights for W.
TEST(StageModel, InputBackwardComputesNoWeightGradientAndWeightBackwardNoInputGradient) {
  const ir::Plan plan = Compiled(Mlp(2, 1, 4, "1f1b"));
  auto grid = ir::Grid::Of(plan);
  ASSERT_TRUE(grid.ok());
  const int vs = 1;  // stage 1: has an input gradient and the loss
  auto build = [&] {
    std::vector<std::string> problems;
    auto model = runtime::StageModel::Build(plan, *grid, 1, problems);
    EXPECT_TRUE(problems.empty());
    model->Flatten(model->NumParameters(), torch::kCPU);
    return model;
  };
  std::vector<int64_t> shape{4};
  for (int64_t d : plan.boundaries(0).tensors(0).shape()) shape.push_back(d);
  torch::manual_seed(7);
  const torch::Tensor x = torch::randn(shape);
  const torch::Tensor labels = torch::randint(0, plan.model().num_classes(), {4});
  const runtime::ForwardContext ctx{1, 0, 0, true};
  auto full_model = build(), split_model = build();
  runtime::SavedForward full, split;
  torch::Tensor loss;
  full_model->Forward(vs, {x.clone()}, labels, ctx, &full, &loss, /*split=*/false);
  const runtime::Group full_in = full_model->Backward(ir::BACKWARD, vs, full, {});
  split_model->Forward(vs, {x.clone()}, labels, ctx, &split, &loss, /*split=*/true);
  ASSERT_TRUE(split.split);
  const runtime::Group split_in = split_model->Backward(ir::BACKWARD_INPUT, vs, split, {});
  EXPECT_EQ(split_model->flat_grads().abs().sum().item<float>(), 0.0f) << "I computed weight gradients";
  ASSERT_EQ(split_in.size(), full_in.size());
  EXPECT_TRUE(torch::allclose(split_in[0], full_in[0], 1e-6, 1e-7));
  EXPECT_TRUE(split.input_done);
  EXPECT_TRUE(split.roots.empty() && split.weighted.empty());
  int with_weights = 0;
  for (int l = plan.placement().virtual_stages(vs).begin(); l < plan.placement().virtual_stages(vs).end(); ++l) {
    with_weights += plan.model().layers(l).param_count() > 0;
  }
  EXPECT_EQ(static_cast<int>(split.weight_work.size()), with_weights);
  const runtime::Group none = split_model->Backward(ir::BACKWARD_WEIGHT, vs, split, {});
  EXPECT_TRUE(none.empty());
  EXPECT_FALSE(split.has_forward());
  EXPECT_GT(full_model->flat_grads().abs().sum().item<float>(), 0.0f);
  EXPECT_TRUE(torch::allclose(split_model->flat_grads(), full_model->flat_grads(), 1e-6, 1e-7));
}

// The bytes a forward keeps for its backward, what I keeps for W, and nothing after W,
// as a MemoryMeter counts the runtime's tensors, equal to the model `ppc inspect`
// reports them with (passes::SavedActivations), on every virtual stage.
void ExpectSavedBytesAsModeled(const ir::Plan& plan, const std::string& name) {
  SCOPED_TRACE(name);
  auto grid = ir::Grid::Of(plan);
  ASSERT_TRUE(grid.ok());
  const std::vector<passes::SavedActivationBytes> modeled = passes::SavedActivations(plan);
  ASSERT_EQ(static_cast<int>(modeled.size()), grid->virtual_stages());
  runtime::MemoryMeter::Install();
  const int64_t mbs = plan.config().micro_batch_size();
  auto batch = [&](const ir::TensorSpec& spec, int64_t high) {
    std::vector<int64_t> shape{mbs};
    for (int64_t d : spec.shape()) shape.push_back(d);
    return spec.dtype() == ir::INT64 ? torch::randint(0, high, shape, torch::kInt64) : torch::randn(shape);
  };
  torch::manual_seed(3);
  for (int s = 0; s < grid->stages(); ++s) {
    std::vector<std::string> problems;
    auto model = runtime::StageModel::Build(plan, *grid, s, problems);
    ASSERT_TRUE(problems.empty()) << problems[0];
    model->Flatten(model->NumParameters(), torch::kCPU);
    for (int c = 0; c < grid->chunks(); ++c) {
      const int v = grid->VirtualOf(s, c);
      SCOPED_TRACE(absl::StrCat("virtual stage ", v));
      const auto& range = plan.placement().virtual_stages(v);
      const bool last = v + 1 == grid->virtual_stages();
      auto meter = std::make_shared<runtime::MemoryMeter>();
      runtime::ScopedMeter scope(meter);
      runtime::Group inputs;
      if (range.begin() == 0) {
        inputs.push_back(batch(plan.model().input(), 2));
      } else {
        for (const auto& t : plan.model().layers(range.begin() - 1).outputs()) inputs.push_back(batch(t, 2));
      }
      torch::Tensor labels;
      if (last) labels = batch(plan.model().label(), plan.model().num_classes());
      runtime::SavedForward saved;
      torch::Tensor loss;
      const runtime::ForwardContext ctx{1, 0, 0, true};
      runtime::Group y = model->Forward(v, std::move(inputs), labels, ctx, &saved, &loss, /*split=*/true);
      loss = torch::Tensor();
      if (last) y.clear();  // the runtime keeps a non-last stage's outputs for their send
      EXPECT_EQ(meter->live(), modeled[v].forward) << "kept by the forward";
      runtime::Group grads;
      for (const auto& t : y)
        if (t.is_floating_point()) grads.push_back(torch::ones_like(t));
      y.clear();
      runtime::Group input_grads = model->Backward(ir::BACKWARD_INPUT, v, saved, grads);
      grads.clear();
      input_grads.clear();
      labels = torch::Tensor();
      EXPECT_EQ(meter->live(), modeled[v].weights) << "kept by I for W";
      model->Backward(ir::BACKWARD_WEIGHT, v, saved, {});
      EXPECT_EQ(meter->live(), 0) << "left after W";
    }
  }
}

TEST(StageModel, KeepsTheBytesThatInspectModels) {
  ExpectSavedBytesAsModeled(Compiled(Mlp(2, 1, 4, "1f1b")), "mlp (Linear, ReLU, GELU, Dropout, Tanh)");
  ExpectSavedBytesAsModeled(Compiled(ResidualP2()), "residual mlp (Fork, Add)");
  ExpectSavedBytesAsModeled(Compiled(ModelPlan("tests/testdata/tiny_cnn.textproto", 2, 1, 4, "1f1b")),
                            "tiny cnn (Conv2d, MaxPool2d, Flatten)");
  ExpectSavedBytesAsModeled(Compiled(ModelPlan("tests/testdata/tied_lm.textproto", 2, 1, 4, "1f1b")),
                            "tied lm (Embedding, LayerNorm, sequence labels)");
  ExpectSavedBytesAsModeled(Compiled(Mlp(2, 1, 4, "zb-v")), "mlp on the V (two chunks per stage)");
  for (int interval : {1, 2}) {
    ir::Plan plan = Mlp(2, 1, 4, "1f1b");
    plan.mutable_config()->set_activation_checkpoint_interval(interval);
    ExpectSavedBytesAsModeled(Compiled(plan), absl::StrCat("mlp, activation checkpointing every ", interval));
  }
}

// pprun --memory-report's measurement (RunOptions.memory_report): every rank's most
// bytes held between instructions, and its step peak.
std::vector<runtime::RunRecords> TrainMeasuringMemory(const ir::Plan& plan) {
  auto hub = runtime::LoopbackHub::Create(WorldSize(plan));
  EXPECT_TRUE(hub.ok()) << hub.status();
  if (!hub.ok()) return {};
  runtime::RunOptions options;
  options.steps = 2;
  options.print = false;
  options.memory_report = true;
  options.runtime.timeout = absl::Seconds(60);
  std::vector<runtime::RunRecords> out;
  for (auto& r : RunAllRanks(plan, **hub, options)) {
    EXPECT_TRUE(r.ok()) << r.status();
    out.push_back(r.ok() ? *r : runtime::RunRecords());
  }
  return out;
}

// On one stage nothing is in flight between ranks, so what a step holds is what the
// activation model says: GPipe's two forwards, then I's state for W under zb-h1. With
// transfers, the receive buffers posted ahead and the sends not yet waited for come on
// top of the model, never below it.
TEST(Interpreter, MeasuredActivationsAreWhatInspectModels) {
  for (const char* schedule : {"gpipe", "zb-h1"}) {
    SCOPED_TRACE(schedule);
    ir::Plan plan = Compiled(Mlp(1, 1, 2, schedule));
    if (std::string(schedule) == "zb-h1") {
      // Uncapped: capped at 1F1B's peak, an I here would run as a full B.
      auto uncapped = passes::RunPipeline(Mlp(1, 1, 2, schedule), "infer-shapes,partition,schedule-zb-h1{max_activations=none},"
                                                                "assign-buffers,lower,lower-eval,place-comm");
      ASSERT_TRUE(uncapped.ok()) << uncapped.status();
      plan = *uncapped;
      int weights = 0;
      for (const auto& in : plan.programs(0).instructions()) {
        weights += in.has_compute() && in.compute().kind() == ir::BACKWARD_WEIGHT;
      }
      ASSERT_EQ(weights, 2) << "the case needs I's state held for W";
    }
    auto t = passes::SimulateTimeline(plan);
    ASSERT_TRUE(t.ok()) << t.status();
    const std::vector<runtime::RunRecords> got = TrainMeasuringMemory(plan);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_GT(got[0].activation_bytes, 0);
    EXPECT_EQ(got[0].activation_bytes, t->stages[0].peak_activation_bytes);
    EXPECT_GE(got[0].step_peak_bytes, got[0].activation_bytes);
  }
  const ir::Plan p2 = Compiled(Mlp(2, 1, 4, "1f1b"));
  auto t = passes::SimulateTimeline(p2);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<runtime::RunRecords> got = TrainMeasuringMemory(p2);
  ASSERT_EQ(got.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    EXPECT_GE(got[s].activation_bytes, t->stages[s].peak_activation_bytes) << "stage " << s;
    EXPECT_GE(got[s].step_peak_bytes, got[s].activation_bytes) << "stage " << s;
  }
}

TEST(Interpreter, SplitBackwardMatchesFullBackward) { ExpectSplitMatchesFull(Mlp(2, 1, 4, "1f1b"), "split_p2"); }

TEST(Interpreter, SplitBackwardOfGroupsMatchesFullBackward) {
  // Tensors passed through layers unchanged (the residual branch) take the gradient
  // straight through in the I pass.
  ir::Plan plan = ResidualP2();
  ExpectSplitMatchesFull(plan, "split_residual_p2");
}

// Weighted layers back to back with a weight tied between them (nothing without
// weights in between): each W walks its own layer only, so the tied weight's gradient
// gets each layer's share once. And a first virtual stage with no parameters, whose
// outputs need no gradient, still takes its (empty) backward.
TEST(Interpreter, SplitBackwardOfTiedAdjacentLayersMatchesFullBackward) {
  ir::Plan plan = Mlp(2, 1, 4, "1f1b");
  auto* layers = plan.mutable_model()->mutable_layers();
  // A 64 -> 64 Linear inserted right after fc2 (64 -> 64), tied to it.
  int fc2 = -1;
  for (int l = 0; l < layers->size(); ++l)
    if (layers->Get(l).name() == "fc2") fc2 = l;
  ASSERT_GE(fc2, 0);
  ir::LayerSpec twin = layers->Get(fc2);
  twin.set_name("fc2_twin");
  twin.set_tie_key("fc2_tie");
  layers->Mutable(fc2)->set_tie_key("fc2_tie");
  layers->Add();
  for (int l = layers->size() - 1; l > fc2 + 1; --l) *layers->Mutable(l) = layers->Get(l - 1);
  *layers->Mutable(fc2 + 1) = twin;
  plan.mutable_config()->set_partition_method(absl::StrCat("explicit:", fc2));  // both on stage 1
  ExpectSplitMatchesFull(plan, "split_tied_adjacent");
}

TEST(Interpreter, FirstStageWithoutParametersTrains) {
  ir::Plan plan = Mlp(2, 1, 4, "1f1b");
  // Stage 0 holds no layer with weights: one ReLU in front of the model.
  auto* layers = plan.mutable_model()->mutable_layers();
  layers->Add();
  for (int l = layers->size() - 1; l > 0; --l) *layers->Mutable(l) = layers->Get(l - 1);
  ir::LayerSpec relu;
  relu.set_name("pre");
  relu.set_kind("ReLU");
  *layers->Mutable(0) = relu;
  plan.mutable_config()->set_partition_method("explicit:1");
  ExpectMatchesOneProcess(plan, "no_params_stage0");
  ExpectSplitMatchesFull(plan, "split_no_params_stage0");
}

TEST(Interpreter, SplitBackwardWithActivationCheckpointingMatchesFullBackward) {
  ir::Plan plan = Mlp(2, 1, 4, "1f1b");
  plan.mutable_config()->set_activation_checkpoint_interval(1);
  ExpectSplitMatchesFull(plan, "split_checkpointed_p2");
  ir::Plan residual = ResidualP2();
  residual.mutable_config()->set_activation_checkpoint_interval(2);
  ExpectSplitMatchesFull(residual, "split_checkpointed_residual_p2");
}

// `plan` compiled with batch-weight-grads{group=GROUP} after its schedule pass.
ir::Plan CompiledBatched(const ir::Plan& plan, const std::string& group) {
  ir::Plan p = plan;
  passes::CanonicalizeConfig(p.topology(), p.mutable_config());
  auto pipeline = passes::DefaultPipeline(p.config());
  EXPECT_TRUE(pipeline.ok()) << pipeline.status();
  if (!pipeline.ok()) return ir::Plan();
  auto with = passes::WithBatchWeightGrads(*pipeline, group);
  EXPECT_TRUE(with.ok()) << with.status();
  if (!with.ok()) return ir::Plan();
  passes::CompileOptions options;
  options.pipeline = *with;
  auto compiled = passes::CompilePlan(p.model(), p.topology(), p.config(), options);
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  return compiled.ok() ? *compiled : ir::Plan();
}

// Counts of full backwards, W's and deferred W's over a plan's training programs.
struct BackwardCounts {
  int full = 0, weights = 0, deferred = 0;
};
BackwardCounts CountBackwards(const ir::Plan& plan) {
  BackwardCounts n;
  for (const auto& program : plan.programs()) {
    for (const auto& in : program.instructions()) {
      if (!in.has_compute()) continue;
      n.full += in.compute().kind() == ir::BACKWARD;
      n.weights += in.compute().kind() == ir::BACKWARD_WEIGHT;
      n.deferred += in.compute().deferred();
    }
  }
  return n;
}

// With the weight gradients of K micro-batches computed in one call per layer (K = all
// and K = 2 of 4), a plan trains as the same plan unbatched does (the same products,
// summed in another order) and as one process.
void ExpectBatchedMatchesUnbatched(const ir::Plan& plan, const std::string& name, bool learns = true) {
  const Trained unbatched = [&] {
    auto t = Train(Compiled(plan), name + "_unbatched");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : Trained();
  }();
  const Trained ref = Reference(plan, name + "_ref", learns);
  const int m = plan.config().micro_batches();
  for (int k : {m, 2}) {
    SCOPED_TRACE(absl::StrCat("group ", k));
    const ir::Plan batched = CompiledBatched(plan, k == m ? "all" : absl::StrCat(k));
    const BackwardCounts n = CountBackwards(batched);
    const int nv = batched.placement().virtual_stages_size();
    ASSERT_EQ(n.full, 0) << "every B is split";
    ASSERT_EQ(n.weights, nv * m);
    ASSERT_EQ(n.deferred, nv * (m - (m + k - 1) / k)) << "all but the last W of each group is deferred";
    auto got = Train(batched, absl::StrCat(name, "_batched", k));
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectSameTraining(unbatched, *got);
    ExpectSameTraining(ref, *got);
  }
}

TEST(Interpreter, BatchedWeightGradsMatchUnbatchedAndOneProcess) {
  ExpectBatchedMatchesUnbatched(Mlp(1, 1, 4, "1f1b"), "batched_p1");
  ExpectBatchedMatchesUnbatched(Mlp(1, 2, 4, "data-parallel"), "batched_d2");
  ExpectBatchedMatchesUnbatched(Mlp(2, 1, 4, "1f1b"), "batched_p2");
  ExpectBatchedMatchesUnbatched(Mlp(2, 1, 4, "gpipe"), "batched_gpipe_p2");
  ExpectBatchedMatchesUnbatched(Mlp(2, 2, 4, "1f1b"), "batched_p2_d2");
  ExpectBatchedMatchesUnbatched(Mlp(2, 1, 4, "zb-h1"), "batched_zb_h1_p2");
}

// Conv2d (with dropout), a Linear head tied to an embedding (the tied weight gets both
// layers' shares: one batched, one micro-batch by micro-batch), and activation
// checkpointing (I recomputes each segment; the batch works from what it kept).
TEST(Interpreter, BatchedWeightGradsOfConvolutionsTiedWeightsAndCheckpointsMatch) {
  for (const char* model : {"tiny_cnn", "tied_lm"}) {
    ir::Plan plan = ModelPlan(absl::StrCat("tests/testdata/", model, ".textproto"), 2, 1, 4, "1f1b");
    // Their losses on the synthetic labels wander in 10 steps; the comparison holds all the same.
    ExpectBatchedMatchesUnbatched(plan, absl::StrCat("batched_", model), /*learns=*/false);
  }
  ir::Plan checkpointed = Mlp(2, 1, 4, "1f1b");
  checkpointed.mutable_config()->set_activation_checkpoint_interval(1);
  ExpectBatchedMatchesUnbatched(checkpointed, "batched_checkpointed");
}

// On one stage the batch holds every micro-batch's W state until its W: the measured
// activation bytes are what inspect models, which is above the unbatched plan's.
TEST(Interpreter, MeasuredActivationsOfABatchedPlanAreWhatInspectModels) {
  const ir::Plan unbatched = Compiled(Mlp(1, 1, 4, "1f1b"));
  const ir::Plan batched = CompiledBatched(Mlp(1, 1, 4, "1f1b"), "all");
  auto tu = passes::SimulateTimeline(unbatched);
  auto tb = passes::SimulateTimeline(batched);
  ASSERT_TRUE(tu.ok()) << tu.status();
  ASSERT_TRUE(tb.ok()) << tb.status();
  EXPECT_GT(tb->stages[0].peak_activation_bytes, tu->stages[0].peak_activation_bytes);
  const std::vector<runtime::RunRecords> got = TrainMeasuringMemory(batched);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].activation_bytes, tb->stages[0].peak_activation_bytes);
}

// --- errors ---------------------------------------------------------------------

// Runs each rank's `body` (given its transport) on its own thread; the statuses by rank.
std::vector<absl::Status> RunWorld(int world, const std::function<absl::Status(runtime::Transport&)>& body) {
  auto hub = runtime::LoopbackHub::Create(world);
  EXPECT_TRUE(hub.ok());
  std::vector<absl::Status> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto transport = (*hub)->Connect(r);
      results[r] = transport.ok() ? body(**transport) : transport.status();
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

absl::Status LoadAndStep(const ir::Plan& plan, runtime::Transport& transport, absl::Duration timeout) {
  runtime::RuntimeOptions options;
  options.timeout = timeout;
  auto rt = runtime::StageRuntime::Load(plan, &transport, options);
  if (!rt.ok()) return rt.status();
  return (*rt)->RunStep(0).status();
}

int FindInstruction(const ir::Plan& plan, int stage, const std::function<bool(const ir::Instruction&)>& pred) {
  for (int i = 0; i < plan.programs(stage).instructions_size(); ++i)
    if (pred(plan.programs(stage).instructions(i))) return i;
  ADD_FAILURE() << "stage " << stage << " has no such instruction";
  return 0;
}

// A structurally valid plan the verifier would reject: stage 1 backwards micro-batch 0
// twice. The runtime must say so, not crash.
TEST(Interpreter, TraceHasEveryInstructionAndEveryTransferOfEveryStep) {
  const ir::Plan plan = Compiled(Mlp(2, 1, 4, "1f1b"));
  auto hub = runtime::LoopbackHub::Create(2);
  ASSERT_TRUE(hub.ok()) << hub.status();
  runtime::RunOptions options;
  options.steps = 3;
  options.print = false;
  options.trace_dir = testing::TempDir();
  options.runtime.timeout = absl::Seconds(60);
  std::vector<absl::StatusOr<runtime::RunRecords>> results(2, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] { results[r] = runtime::RunRank(plan, r, [&] { return (*hub)->Connect(r); }, options); });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    std::ifstream in(absl::StrCat(testing::TempDir(), "/rank", r, ".json"));
    ASSERT_TRUE(in) << "rank " << r << " wrote no trace";
    const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto count = [&](const std::string& what) {
      int n = 0;
      for (size_t at = json.find(what); at != std::string::npos; at = json.find(what, at + 1)) ++n;
      return n;
    };
    int transfers = 0;
    for (const auto& in : plan.programs(r).instructions()) transfers += in.has_send() || in.has_recv();
    ASSERT_GT(transfers, 0);
    EXPECT_EQ(json.rfind("{\"traceEvents\":[", 0), 0u);
    EXPECT_EQ(count("\"ph\":\"X\""), options.steps * plan.programs(r).instructions_size()) << "rank " << r;
    EXPECT_EQ(count("\"ph\":\"b\""), options.steps * transfers) << "rank " << r;
    EXPECT_EQ(count("\"ph\":\"e\""), options.steps * transfers) << "rank " << r;
    EXPECT_NE(json.find(absl::StrCat("\"name\":\"rank ", r, " stage ", r, " (cpu)\"")), std::string::npos);
  }
}

TEST(Interpreter, BackwardTwiceIsAFailedPreconditionNamingTheInstruction) {
  ir::Plan plan = Compiled(Mlp(2, 1, 2, "1f1b"));
  const int i = FindInstruction(plan, 1, [](const ir::Instruction& in) {
    return in.has_compute() && in.compute().kind() == ir::BACKWARD;
  });
  auto* ins = plan.mutable_programs(1)->mutable_instructions();
  ins->Add()->CopyFrom(ins->Get(i));
  for (int k = ins->size() - 1; k > i + 1; --k) ins->SwapElements(k, k - 1);
  ir::Stamp(plan);
  const auto statuses = RunWorld(2, [&](runtime::Transport& t) { return LoadAndStep(plan, t, absl::Seconds(20)); });
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kFailedPrecondition) << statuses[1];
  EXPECT_THAT(statuses[1].message(), HasSubstr(absl::StrCat("rank 1 stage 1 step 1 instruction ", i + 1,
                                                            " (compute kind=BACKWARD vs=1 mb=0 slot=0)")));
  EXPECT_THAT(statuses[1].message(), HasSubstr("virtual stage 1 micro-batch 0 in slot 0 is already backwarded"));
  // Rank 0 learns that its peer is gone, without waiting for its timeout.
  EXPECT_FALSE(statuses[0].ok());
}

// A deferred W whose batch no plain W computes before the optimizer step would lose its
// weight gradients: the runtime refuses the plan at load, naming the instruction.
TEST(Interpreter, ADeferredWeightBackwardThatNoWComputesIsRefusedAtLoad) {
  ir::Plan plan = CompiledBatched(Mlp(1, 1, 4, "1f1b"), "2");
  int last_w = -1, open = -1;  // the last W, and the deferred W that opens its group (mb 2)
  for (int i = 0; i < plan.programs(0).instructions_size(); ++i) {
    const auto& in = plan.programs(0).instructions(i);
    if (!in.has_compute() || in.compute().kind() != ir::BACKWARD_WEIGHT) continue;
    last_w = i;
    if (in.compute().deferred() && in.compute().micro_batch() == 2) open = i;
  }
  ASSERT_GE(open, 0);
  ASSERT_TRUE(RunWorld(1, [&](runtime::Transport& t) { return LoadAndStep(plan, t, absl::Seconds(20)); })[0].ok());
  plan.mutable_programs(0)->mutable_instructions(last_w)->mutable_compute()->set_deferred(true);
  ir::Stamp(plan);
  const auto statuses = RunWorld(1, [&](runtime::Transport& t) { return LoadAndStep(plan, t, absl::Seconds(20)); });
  EXPECT_EQ(statuses[0].code(), absl::StatusCode::kInvalidArgument) << statuses[0];
  EXPECT_THAT(statuses[0].message(), HasSubstr("cannot load the plan"));
  EXPECT_THAT(statuses[0].message(),
              HasSubstr(absl::StrCat("instruction ", open, " (compute kind=BACKWARD_WEIGHT vs=0 mb=2")));
  EXPECT_THAT(statuses[0].message(), HasSubstr("defers the weight backward of virtual stage 0"));
}

// A send that reads a slot holding another micro-batch (or nothing) is refused before
// anything is posted.
TEST(Interpreter, SendFromTheWrongSlotIsAFailedPrecondition) {
  ir::Plan plan = Compiled(Mlp(2, 1, 4, "1f1b"));
  const int i = FindInstruction(plan, 0, [](const ir::Instruction& in) {
    return in.has_send() && in.send().micro_batch() == 0;
  });
  plan.mutable_programs(0)->mutable_instructions(i)->mutable_send()->set_slot(1);
  ir::Stamp(plan);
  const auto statuses = RunWorld(2, [&](runtime::Transport& t) { return LoadAndStep(plan, t, absl::Seconds(20)); });
  EXPECT_EQ(statuses[0].code(), absl::StatusCode::kFailedPrecondition) << statuses[0];
  EXPECT_THAT(statuses[0].message(), HasSubstr(absl::StrCat("rank 0 stage 0 step 1 instruction ", i,
                                                            " (send direction=ACTIVATION boundary=0 mb=0 slot=1) "
                                                            "peer stage 1 rank 1: slot 1 holds ")));
  EXPECT_THAT(statuses[0].message(), HasSubstr(", not virtual stage 0 micro-batch 0"));
}

// Two ranks that disagree on the order of their transfers would match messages of
// different transfers (over Gloo, one of another size aborts the process): Load
// compares each channel with the peer's program and refuses.
TEST(Interpreter, ChannelsInAnotherOrderThanThePeersAreRefusedAtLoad) {
  ir::Plan plan = Mlp(2, 1, 4, "interleaved-1f1b");
  plan.mutable_config()->set_virtual_stages(2);
  plan = Compiled(plan);
  auto* ins = plan.mutable_programs(0)->mutable_instructions();
  std::vector<int> sends;
  for (int i = 0; i < ins->size(); ++i)
    if (ins->Get(i).has_send() && ins->Get(i).send().direction() == ir::ACTIVATION) sends.push_back(i);
  ASSERT_GE(sends.size(), 2u);
  ins->SwapElements(sends[0], sends[1]);
  ir::Stamp(plan);
  const auto statuses = RunWorld(2, [&](runtime::Transport& t) { return LoadAndStep(plan, t, absl::Seconds(20)); });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(statuses[r].code(), absl::StatusCode::kInvalidArgument) << statuses[r];
    EXPECT_THAT(statuses[r].message(), HasSubstr(absl::StrCat("rank ", r, " stage ", r, ": cannot load the plan")));
    EXPECT_THAT(statuses[r].message(), HasSubstr("the channel from stage 0 (rank 0) to stage 1 (rank 1) disagrees "
                                                 "on the order of its transfers"));
  }
}

// Stage 1's rank is connected but never runs: stage 0 gives up after the configured
// timeout with DeadlineExceeded naming the transfer and the peer.
TEST(Interpreter, AMissingPeerIsDeadlineExceededWithinTheTimeout) {
  const ir::Plan plan = Compiled(Mlp(2, 1, 4, "1f1b"));
  const absl::Duration timeout = absl::Seconds(2);
  std::promise<void> done;
  std::shared_future<void> finished = done.get_future().share();
  double seconds = 0;
  const auto statuses = RunWorld(2, [&](runtime::Transport& t) -> absl::Status {
    if (t.rank() == 1) {
      finished.wait();  // alive (its transport connected) but silent
      return absl::OkStatus();
    }
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = LoadAndStep(plan, t, timeout);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    done.set_value();
    return s;
  });
  EXPECT_EQ(statuses[0].code(), absl::StatusCode::kDeadlineExceeded) << statuses[0];
  EXPECT_THAT(statuses[0].message(), HasSubstr("rank 0 stage 0 step 1 instruction "));
  EXPECT_THAT(statuses[0].message(), HasSubstr("with peer stage 1 rank 1"));
  EXPECT_GE(seconds, 1.9);
  EXPECT_LT(seconds, 2 + 5.0) << "one wait may time out, not several in a row";
}

}  // namespace
}  // namespace ppc
