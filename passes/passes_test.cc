// Property tests of the schedules, partitioning, buffers, lowering, plan levels, the
// pipeline's change detection, and the verifier's negative cases: take a correct
// compiled plan, break one thing, and check the verifier's message names the stage and
// instruction.
#include <algorithm>
#include <limits>
#include <sstream>
#include <tuple>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "ir/instruction_text.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "passes/analysis/simulate.h"
#include "passes/analysis/timeline.h"
#include "passes/analysis/verifier.h"
#include "passes/partition/partition.h"
#include "passes/registry.h"
#include "passes/schedule/activation_cap.h"
#include "passes/test_util.h"

namespace ppc::passes {
namespace {

ir::Plan MustCompile(ir::Plan plan) {
  auto out = Compile(std::move(plan));
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : ir::Plan();
}

// The plan after `pipeline` (with the verifier after every pass), config canonicalized
// as CompilePlan does.
ir::Plan MustRun(ir::Plan plan, const std::string& pipeline) {
  CanonicalizeConfig(plan.topology(), plan.mutable_config());
  auto out = RunPipeline(std::move(plan), pipeline);
  EXPECT_TRUE(out.ok()) << pipeline << ": " << out.status();
  return out.ok() ? *out : ir::Plan();
}

std::string Lowering(const std::string& schedule) {
  return absl::StrCat("infer-shapes,partition,schedule-", schedule, ",assign-buffers,lower");
}

const std::vector<int> kWide = {16, 16, 16, 16, 16};  // 9 layers: enough for P = 4

// ---------------------------------------------------------------------------------
// Schedules: the order of compute ops, "<virtual stage><F|B><micro-batch>".

TEST(Schedule1F1B, MatchesDeepSpeedTrainScheduleOrder) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 4, "1f1b"));
  EXPECT_EQ(ComputeOrder(plan, 0), "0F0 0F1 0B0 0F2 0B1 0F3 0B2 0B3");
  EXPECT_EQ(ComputeOrder(plan, 1), "1F0 1B0 1F1 1B1 1F2 1B2 1F3 1B3");
  // P = 4: stage s warms up with P - s - 1 forwards.
  ir::Plan four = MustRun(MlpPlan(4, 1, 4, "1f1b", kWide), Lowering("1f1b"));
  EXPECT_EQ(ComputeOrder(four, 0), "0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3");
  EXPECT_EQ(ComputeOrder(four, 1), "1F0 1F1 1F2 1B0 1F3 1B1 1B2 1B3");
  EXPECT_EQ(ComputeOrder(four, 3), "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3");
}

TEST(ScheduleGPipe, AllForwardsThenAllBackwards) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 3, "gpipe"));
  EXPECT_EQ(ComputeOrder(plan, 0), "0F0 0F1 0F2 0B0 0B1 0B2");
  EXPECT_EQ(ComputeOrder(plan, 1), "1F0 1F1 1F2 1B0 1B1 1B2");
}

TEST(ScheduleDataParallel, ForwardAndBackwardOfEachMicroBatchInTurn) {
  ir::Plan plan = MustCompile(MlpPlan(1, 2, 3, "data-parallel"));
  EXPECT_EQ(ComputeOrder(plan, 0), "0F0 0B0 0F1 0B1 0F2 0B2");
  auto two = Compile(MlpPlan(2, 2, 3, "data-parallel"));
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("schedule-data-parallel: needs num_stages == 1, got 2; use schedule 1f1b or "
                                        "gpipe"),
            std::string::npos)
      << two.status();
}

TEST(ScheduleInference, ForwardOnly) {
  ir::Plan plan = MustCompile(MlpPlan(3, 1, 2, "inference"));
  for (int s = 0; s < 3; ++s) EXPECT_EQ(ComputeOrder(plan, s), absl::StrCat(s, "F0 ", s, "F1"));
  for (const auto& prog : plan.programs()) {
    for (const auto& in : prog.instructions()) {
      EXPECT_FALSE(in.has_optimizer_step() || in.has_reduce_grads() || (in.has_send() && in.send().direction() == ir::GRADIENT))
          << ir::PrintInstruction(in);
    }
  }
}

TEST(DefaultPipeline, NamesEveryLoweringStep) {
  ir::TrainingConfig c;
  c.set_schedule("gpipe");
  c.set_partition_method("uniform");
  EXPECT_EQ(*DefaultPipeline(c),
            "infer-shapes,partition{method=uniform},schedule-gpipe,assign-buffers,lower,lower-eval,place-comm");
  c.set_schedule("zigzag");
  EXPECT_NE(DefaultPipeline(c).status().message().find("unknown schedule 'zigzag'"), std::string::npos);
}

TEST(Registry, IsAlphabetical) {
  const auto& passes = GlobalPassRegistry().passes();
  ASSERT_GE(passes.size(), 12u);
  for (size_t i = 1; i < passes.size(); ++i) EXPECT_LT(passes[i - 1].name, passes[i].name);
  for (const char* name : {"infer-shapes", "partition", "schedule-1f1b", "schedule-gpipe", "schedule-inference",
                           "schedule-data-parallel", "schedule-interleaved-1f1b", "assign-buffers", "lower",
                           "lower-eval", "place-comm", "verify"}) {
    EXPECT_NE(GlobalPassRegistry().Find(name), nullptr) << name;
  }
  // The v3 lowering passes are gone: `lower` does all three.
  for (const char* gone : {"insert-loads", "insert-p2p", "insert-grad-reduction"}) {
    EXPECT_EQ(GlobalPassRegistry().Find(gone), nullptr) << gone;
  }
}

// ---------------------------------------------------------------------------------
// Partition.

// The full dynamic program over every cut, as the partition pass computed splits
// before it restricted each state to cuts within the optimal largest sum.
std::vector<int> FullDynamicProgramSplit(const std::vector<int64_t>& w, int parts) {
  const int n = static_cast<int>(w.size());
  std::vector<int64_t> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + w[i];
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  using Cost = std::pair<int64_t, int64_t>;
  std::vector<std::vector<Cost>> cost(parts + 1, std::vector<Cost>(n + 1, {kInf, kInf}));
  std::vector<std::vector<int>> from(parts + 1, std::vector<int>(n + 1, -1));
  cost[0][0] = {0, 0};
  for (int k = 1; k <= parts; ++k) {
    for (int i = k; i <= n; ++i) {
      for (int j = k - 1; j < i; ++j) {
        if (cost[k - 1][j].first == kInf) continue;
        Cost c{std::max(cost[k - 1][j].first, prefix[i] - prefix[j]), cost[k - 1][j].second + int64_t(i - j) * (i - j)};
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

TEST(Partition, BalancedSplitIsTheFullDynamicProgramsSplit) {
  // Random weights with many zeros (ReLU layers have no parameters) and ties, every
  // number of parts; and the shapes the passes see (parameters of an MLP, all ones).
  uint64_t state = 12345;
  auto next = [&]() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int64_t>(state >> 33);
  };
  int cases = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + next() % 40;
    std::vector<int64_t> w(n);
    const int kind = trial % 3;
    for (int64_t& x : w) x = kind == 0 ? next() % 5 : kind == 1 ? (next() % 3 == 0 ? 0 : next() % 1000) : 1;
    for (int parts = 1; parts <= n; ++parts) {
      ASSERT_EQ(BalancedSplit(w, parts), FullDynamicProgramSplit(w, parts))
          << "n=" << n << " parts=" << parts << " weights " << absl::StrJoin(w, ",");
      ++cases;
    }
  }
  EXPECT_GT(cases, 3000);
  std::vector<int64_t> mlp;
  for (int i = 0; i < 256; ++i) {
    mlp.push_back(16 * 16 + 16);
    mlp.push_back(0);
  }
  mlp.push_back(170);
  for (int parts : {2, 7, 64, 100}) EXPECT_EQ(BalancedSplit(mlp, parts), FullDynamicProgramSplit(mlp, parts)) << parts;
}

TEST(Partition, ReportsVirtualStagesWithoutLayers) {
  ir::Plan plan = MlpPlan(3, 1, 1, "1f1b");
  auto out = RunPipeline(plan, "infer-shapes,partition{method=explicit:4:4}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("leaves virtual stage 1 without layers (range [4, 4) of 7)"), std::string::npos)
      << out.status();
  auto bad_regex = RunPipeline(MlpPlan(2, 1, 1, "1f1b"), "infer-shapes,partition{method=type:conv}");
  EXPECT_NE(bad_regex.status().message().find("partition method 'type:conv' matches no layer kind"), std::string::npos)
      << bad_regex.status();
  auto count = RunPipeline(MlpPlan(3, 1, 1, "1f1b"), "infer-shapes,partition{method=explicit:2}");
  EXPECT_NE(count.status().message().find("gives 1 boundaries; 3 virtual stages need 2"), std::string::npos)
      << count.status();
  auto unknown = RunPipeline(MlpPlan(2, 1, 1, "1f1b"), "infer-shapes,partition{method=random}");
  EXPECT_NE(unknown.status().message().find("unknown partition method 'random'"), std::string::npos) << unknown.status();
  auto many = RunPipeline(MlpPlan(8, 1, 1, "1f1b"), "infer-shapes,partition");
  EXPECT_NE(many.status().message().find("cannot give each of 8 virtual stages (8 stages x 1) a layer: the model has "
                                         "only 7 layers"),
            std::string::npos)
      << many.status();
}

TEST(Partition, PlacesVirtualStagesRoundRobinAndWritesTheBoundaryTable) {
  ir::Plan spec = MlpPlan(2, 1, 2, "interleaved-1f1b");
  spec.mutable_config()->set_virtual_stages(2);
  ir::Plan plan = MustRun(spec, "infer-shapes,partition{method=explicit:2:4:6}");
  ASSERT_EQ(plan.placement().virtual_stages_size(), 4);
  EXPECT_EQ(plan.placement().chunks_per_stage(), 2);
  const int begins[] = {0, 2, 4, 6}, ends[] = {2, 4, 6, 7};
  for (int v = 0; v < 4; ++v) {
    const ir::VirtualStage& vs = plan.placement().virtual_stages(v);
    EXPECT_EQ(vs.begin(), begins[v]);
    EXPECT_EQ(vs.end(), ends[v]);
    EXPECT_EQ(vs.stage(), v % 2) << "virtual stage " << v;
    EXPECT_EQ(vs.chunk(), v / 2) << "virtual stage " << v;
  }
  // Boundary b: the output group of layer virtual_stages[b].end - 1 (relu0, relu1, relu2).
  ASSERT_EQ(plan.boundaries_size(), 3);
  for (int b = 0; b < 3; ++b) {
    ASSERT_EQ(plan.boundaries(b).tensors_size(), 1);
    EXPECT_EQ(plan.boundaries(b).tensors(0).SerializeAsString(),
              plan.model().layers(ends[b] - 1).outputs(0).SerializeAsString());
  }
  EXPECT_EQ(plan.level(), ir::LEVEL_NONE);
  EXPECT_EQ(plan.programs_size(), 0);
}

// ---------------------------------------------------------------------------------
// Buffers.

TEST(AssignBuffers, LiveActivationsPerStage) {
  for (int p : {2, 4}) {
    for (int m : {1, 2, 3, 8}) {
      ir::Plan one = MustRun(MlpPlan(p, 1, m, "1f1b", kWide), "infer-shapes,partition,schedule-1f1b,assign-buffers");
      ir::Plan gp = MustRun(MlpPlan(p, 1, m, "gpipe", kWide), "infer-shapes,partition,schedule-gpipe,assign-buffers");
      ir::Plan inf =
          MustRun(MlpPlan(p, 1, m, "inference", kWide), "infer-shapes,partition,schedule-inference,assign-buffers");
      EXPECT_EQ(one.level(), ir::BUFFERED);
      for (int s = 0; s < p; ++s) {
        EXPECT_EQ(one.programs(s).num_slots(), std::min(p - s, m)) << "1f1b P=" << p << " M=" << m << " s=" << s;
        EXPECT_EQ(gp.programs(s).num_slots(), m) << "gpipe P=" << p << " M=" << m << " s=" << s;
        // Forward-only: a slot is free again two forwards later.
        EXPECT_EQ(inf.programs(s).num_slots(), std::min(2, m)) << "inference P=" << p << " M=" << m << " s=" << s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// Plan levels: each pass needs one level and leaves one; a wrong order fails loudly.

void ExpectLevelRefusal(const std::string& pipeline, const std::string& want) {
  auto out = RunPipeline(MlpPlan(2, 1, 2, "1f1b"), pipeline);
  ASSERT_FALSE(out.ok()) << pipeline;
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition) << out.status();
  EXPECT_NE(out.status().message().find(want), std::string::npos) << pipeline << ": " << out.status();
}

TEST(PlanLevel, EveryPassRefusesAPlanAtTheWrongLevel) {
  ExpectLevelRefusal("infer-shapes,partition,assign-buffers",
                     "pass assign-buffers failed: assign-buffers needs a COMPUTE_ONLY plan; this one is LEVEL_NONE");
  ExpectLevelRefusal("infer-shapes,partition,schedule-1f1b,lower",
                     "pass lower failed: lower needs a BUFFERED plan; this one is COMPUTE_ONLY");
  ExpectLevelRefusal("infer-shapes,partition,schedule-1f1b,assign-buffers,place-comm",
                     "pass place-comm failed: place-comm needs a LOWERED plan; this one is BUFFERED");
  ExpectLevelRefusal("infer-shapes,partition,schedule-1f1b,assign-buffers,lower-eval",
                     "pass lower-eval failed: lower-eval needs a LOWERED plan; this one is BUFFERED");
  ExpectLevelRefusal("infer-shapes,partition,schedule-1f1b,schedule-gpipe",
                     "pass schedule-gpipe failed: schedule-gpipe needs a LEVEL_NONE plan; this one is COMPUTE_ONLY");
  ExpectLevelRefusal("infer-shapes,partition,schedule-1f1b,assign-buffers,assign-buffers",
                     "pass assign-buffers failed: assign-buffers needs a COMPUTE_ONLY plan; this one is BUFFERED");
  ExpectLevelRefusal("infer-shapes,partition,schedule-1f1b,partition",
                     "pass partition failed: partition needs a LEVEL_NONE plan; this one is COMPUTE_ONLY");
  ExpectLevelRefusal("infer-shapes,partition,schedule-1f1b,infer-shapes",
                     "pass infer-shapes failed: infer-shapes needs a LEVEL_NONE plan; this one is COMPUTE_ONLY");
  // A schedule needs the placement partition writes.
  ExpectLevelRefusal("infer-shapes,schedule-1f1b",
                     "schedule-1f1b needs a placement of 2 x 1 virtual stages: run partition first");
}

TEST(PlanLevel, EachLoweringPassLeavesItsLevel) {
  ir::Plan plan = MlpPlan(2, 1, 2, "1f1b");
  CanonicalizeConfig(plan.topology(), plan.mutable_config());
  const std::pair<const char*, ir::PlanLevel> steps[] = {{"infer-shapes,partition", ir::LEVEL_NONE},
                                                         {"schedule-1f1b", ir::COMPUTE_ONLY},
                                                         {"assign-buffers", ir::BUFFERED},
                                                         {"lower", ir::LOWERED},
                                                         {"lower-eval", ir::LOWERED},
                                                         {"place-comm", ir::LOWERED}};
  for (const auto& [pipeline, level] : steps) {
    auto out = RunPipeline(plan, pipeline);
    ASSERT_TRUE(out.ok()) << pipeline << ": " << out.status();
    plan = *out;
    EXPECT_EQ(plan.level(), level) << pipeline;
    // Below LOWERED a program holds compute ops only.
    for (const auto& prog : plan.programs()) {
      for (const auto& in : prog.instructions()) {
        if (level != ir::LOWERED) {
          EXPECT_TRUE(in.has_compute()) << pipeline << ": " << ir::PrintInstruction(in);
        }
      }
    }
  }
  EXPECT_TRUE(VerifyRunnablePlan(plan).ok()) << VerifyRunnablePlan(plan);
  // The structural rules agree: lowering ops in a BUFFERED plan are refused.
  ir::Plan buffered = plan;
  buffered.set_level(ir::BUFFERED);
  absl::Status s = VerifyPlan(buffered);
  EXPECT_NE(s.message().find("a BUFFERED plan holds compute ops only"), std::string::npos) << s;
}

// ---------------------------------------------------------------------------------
// Change detection belongs to the pipeline: passes return a status, never "changed".

static_assert(std::is_same_v<decltype(std::declval<Pass&>().Run(std::declval<ir::Module&>())), absl::Status>,
              "a pass reports success or failure only; the pipeline detects changes");

TEST(PassPipeline, DetectsChangesByItself) {
  ir::Module fresh = ir::ToModule(MlpPlan(2, 1, 2, "1f1b"));
  CanonicalizeConfig(fresh.header.topology(), fresh.header.mutable_config());
  const Verifier verify = [](const ir::Module& m, const Unchanged& u) { return VerifyPlan(m, u); };
  auto scheduling = PassPipeline::Create("infer-shapes,partition,schedule-1f1b", GlobalPassRegistry(), verify);
  ASSERT_TRUE(scheduling.ok()) << scheduling.status();
  auto changed = scheduling->Run(fresh, {});
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_TRUE(*changed);

  // verify never changes a plan; lower-eval does nothing to a plan that has eval programs;
  // place-comm has already posted every receive as early as it can.
  ir::Module plan = ir::ToModule(MustCompile(MlpPlan(2, 1, 4, "1f1b")));
  const std::string before = ir::PrintPlan(ir::ToPlan(plan));
  auto idle = PassPipeline::Create("verify,lower-eval,place-comm", GlobalPassRegistry(), verify);
  ASSERT_TRUE(idle.ok()) << idle.status();
  std::ostringstream log;
  PipelineOptions options;
  options.print_ir_after_all = true;
  options.out = &log;
  auto unchanged = idle->Run(plan, options);
  ASSERT_TRUE(unchanged.ok()) << unchanged.status();
  EXPECT_FALSE(*unchanged);
  EXPECT_EQ(ir::PrintPlan(ir::ToPlan(plan)), before);
  for (const char* pass : {"verify", "lower-eval", "place-comm"}) {
    EXPECT_NE(log.str().find(absl::StrCat("// IR after ", pass, " (no change)")), std::string::npos) << pass;
  }
}

TEST(PassPipeline, RerunningAPipelineOnItsOutputIsRefusedByLevel) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  auto pipeline = DefaultPipeline(plan.config());
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  auto again = RunPipeline(plan, *pipeline);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
  EXPECT_NE(again.status().message().find("pass infer-shapes failed: infer-shapes needs a LEVEL_NONE plan; this one is "
                                          "LOWERED"),
            std::string::npos)
      << again.status();
  // The lowering alone, too.
  auto lower = RunPipeline(plan, "lower");
  EXPECT_EQ(lower.status().code(), absl::StatusCode::kFailedPrecondition) << lower.status();
  EXPECT_NE(lower.status().message().find("lower needs a BUFFERED plan; this one is LOWERED"), std::string::npos)
      << lower.status();
}

// ---------------------------------------------------------------------------------
// Unit-cost simulation of compiled plans.

TEST(Simulate, BubbleFractionOf1F1BIsPMinus1OverMPlusPMinus1) {
  ir::Plan plan = MustCompile(MlpPlan(4, 1, 8, "1f1b", kWide));
  auto sim = Simulate(plan, plan.programs(), CostModel::Unit(plan));
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty()) << absl::StrJoin(sim->errors, "\n");
  // Unit costs F=1, B=2: makespan (M + P - 1) * 3, bubble (P-1)/(M+P-1).
  EXPECT_NEAR(sim->makespan, (8 + 3) * 3, 1e-9);
  EXPECT_NEAR(sim->bubble_fraction, 3.0 / 11.0, 1e-9);
  // Stage 0 holds 4 micro-batches at once, plus the gradient of micro-batch 4, whose
  // receive place-comm posts before the backward of micro-batch 0 frees slot 0; it sends
  // activations of [2,16] float32.
  ASSERT_EQ(sim->peak_live_slots.size(), 4u);
  EXPECT_EQ(sim->peak_live_slots[0], 5);
  EXPECT_EQ(TransferBytes(plan, ir::ACTIVATION, 0), 2 * 16 * 4);
  EXPECT_EQ(TransferBytes(plan, ir::GRADIENT, 0), 2 * 16 * 4);
  ASSERT_FALSE(sim->compute[0].empty());
  EXPECT_EQ(sim->compute[0][0].label, "0F0");
}

TEST(Timeline, ChartsAndCountsA1F1BPlan) {
  ir::Plan plan = MustCompile(MlpPlan(4, 1, 8, "1f1b", kWide));
  auto t = SimulateTimeline(plan);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_NEAR(t->makespan, (8 + 3) * 3, 1e-9);
  EXPECT_NEAR(t->bubble_fraction, 3.0 / 11.0, 1e-9);
  // Stage 0 sends 8 activations of [2,16] float32 per step.
  EXPECT_EQ(t->stages[0].bytes_sent, 8 * 2 * 16 * 4);
  EXPECT_EQ(t->stages[0].num_slots, 4);
  EXPECT_EQ(t->stages[0].peak_live_slots, 5);  // 4 slots + 1 early-posted receive
  const std::string chart = RenderTimeline(*t);
  EXPECT_TRUE(absl::StartsWith(chart, "stage 0  |0F0|0F1|0F2|0F3|")) << chart;
}

TEST(Timeline, CountsActivationsKeptForBackwardsAndWhatIKeepsForW) {
  // fc0 (16 -> 32), fc1 (32 -> 16), head (16 -> 4), no activations between; 2 samples
  // per micro-batch, cross-entropy. An F keeps each Linear's input (16 + 32 + 16 floats,
  // the first being the stage's input) and the log-softmax of the logits (4 floats), per
  // sample, plus the loss's total weight (one float) and the int64 labels: 2 x 68 x 4 +
  // 4 + 2 x 8 = 564 bytes. An I keeps, per layer with weights, its input and its output
  // gradient: (16 + 32) + (32 + 16) + (16 + 4) = 116 floats, 928 bytes.
  auto model = [](int stages, int m, const std::string& schedule, const std::string& passes = "") {
    ir::Plan plan = MlpPlan(stages, 1, m, schedule, {16, 32, 16});
    auto* layers = plan.mutable_model()->mutable_layers();
    layers->DeleteSubrange(3, 1);  // relu1
    layers->DeleteSubrange(1, 1);  // relu0
    return passes.empty() ? MustCompile(plan) : MustRun(plan, passes);
  };
  auto full = SimulateTimeline(model(1, 2, "1f1b"));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->stages[0].peak_activation_bytes, 564);  // F0 B0 F1 B1
  const ir::Plan uncapped =
      model(1, 2, "zb-h1", "infer-shapes,partition,schedule-zb-h1{max_activations=none},assign-buffers,lower");
  EXPECT_EQ(ComputeOrder(uncapped, 0), "0F0 0I0 0W0 0F1 0I1 0W1");
  auto split = SimulateTimeline(uncapped);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->stages[0].peak_activation_bytes, 928);  // after each I; W frees it
  // Capped at 1F1B's peak (the default), each I would cross it: full backwards.
  const ir::Plan capped = model(1, 2, "zb-h1");
  EXPECT_EQ(ComputeOrder(capped, 0), "0F0 0B0 0F1 0B1");
  auto held = SimulateTimeline(capped);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->stages[0].peak_activation_bytes, 564);
  // GPipe keeps both forwards at once.
  auto gpipe = SimulateTimeline(model(1, 2, "gpipe"));
  ASSERT_TRUE(gpipe.ok());
  EXPECT_EQ(gpipe->stages[0].peak_activation_bytes, 2 * 564);  // F0 F1 B0 B1
  // Two micro-batches in flight on stage 0 of 1F1B at P = 2: twice its F's share.
  const ir::Plan p2 = model(2, 4, "1f1b");
  auto two = SimulateTimeline(p2);
  ASSERT_TRUE(two.ok()) << two.status();
  int64_t f0 = 0;
  for (int l = p2.placement().virtual_stages(0).begin(); l < p2.placement().virtual_stages(0).end(); ++l) {
    f0 += l == 0 ? 16 : p2.model().layers(l - 1).outputs(0).shape(0);
  }
  f0 += p2.model().layers(p2.placement().virtual_stages(0).end() - 1).outputs(0).shape(0);
  EXPECT_EQ(two->stages[0].peak_activation_bytes, 2 * f0 * 2 * 4);
  // Inference keeps nothing.
  auto inference = SimulateTimeline(model(2, 4, "inference"));
  ASSERT_TRUE(inference.ok());
  EXPECT_EQ(inference->stages[0].peak_activation_bytes, 0);
}

// The activation cap moves W's earlier, each after its I, only where a pending W is
// what would cross the cap.
// The largest stage's simulated peak activation bytes; -1 (and a failure) when the
// plan does not simulate.
int64_t MaxPeakActivationBytes(const ir::Plan& plan) {
  auto t = SimulateTimeline(plan);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return -1;
  int64_t out = 0;
  for (const auto& st : t->stages) out = std::max(out, st.peak_activation_bytes);
  return out;
}

std::string OrderText(const std::vector<ComputeOp>& ops) {
  std::vector<std::string> out;
  for (const ComputeOp& op : ops) {
    out.push_back(absl::StrCat(op.virtual_stage, ir::ComputeLetter(op.kind), op.micro_batch));
  }
  return absl::StrJoin(out, " ");
}

TEST(ActivationCap, RunsPendingWeightBackwardsThenFullBackwardsBeforeWhatWouldCrossTheCap) {
  const std::vector<SavedActivationBytes> saved = {{10, 15}};
  const std::vector<ComputeOp> order = {{ir::FORWARD, 0, 0},         {ir::BACKWARD_INPUT, 0, 0},
                                        {ir::FORWARD, 0, 1},         {ir::BACKWARD_INPUT, 0, 1},
                                        {ir::BACKWARD_WEIGHT, 0, 0}, {ir::BACKWARD_WEIGHT, 0, 1}};
  auto capped = [&](int64_t cap) {
    auto out = CapActivations({order}, {0}, saved, cap);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? OrderText(out->at(0)) : std::string();
  };
  // Uncapped: F0 10, I0 15, F1 25, I1 30. At 30 nothing moves.
  EXPECT_EQ(capped(30), "0F0 0I0 0F1 0I1 0W0 0W1");
  // At 25, I1 would reach 30 with W0 pending: W0 runs first.
  EXPECT_EQ(capped(25), "0F0 0I0 0F1 0W0 0I1 0W1");
  // At 20, F1 would reach 25 with W0 pending.
  EXPECT_EQ(capped(20), "0F0 0I0 0W0 0F1 0I1 0W1");
  // At 12 an I alone would cross (15): it runs as a full B, and its W goes.
  EXPECT_EQ(capped(12), "0F0 0B0 0F1 0B1");
  // Below one forward nothing can help: refused, naming the stage, the forward and the bytes.
  auto low = CapActivations({order}, {0}, saved, 5);
  ASSERT_FALSE(low.ok());
  EXPECT_EQ(low.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(low.status().message(), "stage 0 cannot hold max_activations=5 bytes: its forward 0F0 "
                                                        "would take its activations to 10 bytes"))
      << low.status();
}

// A forward that would cross waits for the first backward further down its stage's
// order that is ready: GPipe on two stages, capped at two forwards, becomes 1F1B on
// the first stage (the second runs 1F1B already), and the orders still finish.
TEST(ActivationCap, HoldsBackAForwardUntilABackwardCanRun) {
  const std::vector<SavedActivationBytes> saved = {{10, 10}, {10, 10}};
  auto ops = [](const std::string& text, int v) {
    std::vector<ComputeOp> out;
    for (size_t i = 0; i + 1 < text.size(); i += 2) {
      out.push_back({text[i] == 'F' ? ir::FORWARD : ir::BACKWARD, v, text[i + 1] - '0'});
    }
    return out;
  };
  const std::vector<std::vector<ComputeOp>> orders = {ops("F0F1F2B0B1B2", 0), ops("F0B0F1B1F2B2", 1)};
  auto out = CapActivations(orders, {0, 1}, saved, 20);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(OrderText(out->at(0)), "0F0 0F1 0B0 0F2 0B1 0B2");
  EXPECT_EQ(OrderText(out->at(1)), "1F0 1B0 1F1 1B1 1F2 1B2");
  // Uncapped (or never reached), nothing moves.
  out = CapActivations(orders, {0, 1}, saved, 30);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(OrderText(out->at(0)), "0F0 0F1 0F2 0B0 0B1 0B2");
  // An op of a virtual stage the stage does not run, or orders that cannot finish, are refused.
  EXPECT_EQ(CapActivations(orders, {1, 0}, saved, 20).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<std::vector<ComputeOp>> stuck = {ops("F1B1F0B0", 0), ops("F0B0F1B1", 1)};
  auto bad = CapActivations(stuck, {0, 1}, saved, 100);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "stage 0's op 0B1 never becomes ready")) << bad.status();
  // Orders that are not one F, then one B or one I and its W, per micro-batch.
  auto one = [&](std::vector<ComputeOp> order) {
    return CapActivations({std::move(order)}, {0}, {{10, 15}}, 12).status();
  };
  const ComputeOp f{ir::FORWARD, 0, 0}, b{ir::BACKWARD, 0, 0}, i{ir::BACKWARD_INPUT, 0, 0}, w{ir::BACKWARD_WEIGHT, 0, 0};
  for (const auto& [order, why] : std::vector<std::pair<std::vector<ComputeOp>, std::string>>{
           {{f, b, w}, "0W0 does not follow its own I once"},
           {{f, i, w, w}, "0W0 does not follow its own I once"},
           {{f, i, i, w}, "0I0 is not the one backward after its forward"},
           {{b, f}, "0B0 is not the one backward after its forward"},
           {{f, f, b}, "0F0 repeats a forward"},
           {{f, i}, "0I0 has no W after it"},
           {{f, {ir::BACKWARD, 0, 2000000000}}, "has a micro-batch outside [0, 65536)"}}) {
    const absl::Status st = one(order);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_TRUE(absl::StrContains(st.message(), why)) << st;
  }
}

// zb-h1 on an MLP whose W's keep more than its F's (Linear + ReLU: W needs every
// Linear's input and output gradient, F the inputs only): capped at 1F1B's peak by
// default, its peak is no more than 1F1B's (W's run early, I's that would still cross
// run as full B's), where torch's order holds more; the capped plan still verifies and
// still has less bubble than 1F1B.
TEST(ActivationCap, HoldsZbH1AtOneFOneBsPeakWhereWeightBackwardsKeepMore) {
  for (int p : {2, 4}) {
    SCOPED_TRACE(absl::StrCat("P=", p));
    const std::vector<int> widths = {64, 64, 64, 64, 64, 64, 64, 64};
    ir::Plan base = MlpPlan(p, 1, 2 * p, "zb-h1", widths);
    const ir::Plan capped = MustCompile(base);
    const ir::Plan uncapped = MustRun(base, absl::StrCat("infer-shapes,partition,schedule-zb-h1{max_activations=none},"
                                                         "assign-buffers,lower"));
    base.mutable_config()->set_schedule("1f1b");
    const ir::Plan one = MustCompile(base);
    const std::vector<SavedActivationBytes> saved = SavedActivations(capped);
    int64_t excess = 0;
    for (const auto& s : saved) excess = std::max(excess, s.weights - s.forward);
    ASSERT_GT(excess, 0) << "the case needs W's that keep more than F's";
    EXPECT_EQ(OneFOneBPeakActivationBytes(capped), MaxPeakActivationBytes(one));
    EXPECT_LE(MaxPeakActivationBytes(capped), MaxPeakActivationBytes(one));
    EXPECT_GT(MaxPeakActivationBytes(uncapped), MaxPeakActivationBytes(one) + excess);
    EXPECT_NE(ComputeOrder(capped, p - 1), ComputeOrder(uncapped, p - 1));
    std::string all;
    for (int s = 0; s < p; ++s) all += ComputeOrder(capped, s) + " ";
    EXPECT_TRUE(absl::StrContains(all, "B")) << "an I that would cross runs as a B: " << all;
    auto bubble = [](const ir::Plan& plan) {
      auto t = SimulateTimeline(plan);
      EXPECT_TRUE(t.ok()) << t.status();
      return t.ok() ? t->bubble_fraction : 1.0;
    };
    EXPECT_LT(bubble(capped), bubble(one));
    EXPECT_LT(bubble(uncapped), bubble(capped));
  }
  // Bad values are refused, naming the pass and the option.
  for (const char* bad : {"0", "-5", "lots", "1e9"}) {
    auto out = RunPipeline(MlpPlan(2, 1, 4, "zb-h1"), absl::StrCat("infer-shapes,partition,schedule-zb-h1{max_activations=",
                                                                   bad, "}"));
    ASSERT_FALSE(out.ok()) << bad;
    EXPECT_NE(out.status().message().find("schedule-zb-h1: max_activations must be none, 1f1b or a number of bytes"),
              std::string::npos)
        << out.status();
  }
}

// Transformer-like blocks (LayerNorm, Linear, GELU, Dropout): an F keeps more than its
// W needs (the GELU's input, the dropout mask), the zero-bubble paper's assumption.
// There capped ZB-H1 holds exactly 1F1B's peak. At P=2 torch's order already does and
// nothing moves; at P=4 the parameter-balanced cut gives stage 2 more activations per
// micro-batch than stage 0, and torch's order would hold more micro-batches there than
// 1F1B's stage 2 does, so the cap runs some of its W's earlier.
TEST(ActivationCap, HoldsOneFOneBsPeakWhereWeightBackwardsKeepLess) {
  for (int p : {2, 4}) {
    SCOPED_TRACE(absl::StrCat("P=", p));
    ir::Plan base = MlpPlan(p, 1, 2 * p, "zb-h1", {64, 64});
    auto* layers = base.mutable_model()->mutable_layers();
    const ir::LayerSpec head = layers->Get(layers->size() - 1);
    layers->Clear();
    for (int b = 0; b < 8; ++b) {
      auto* ln = layers->Add();
      ln->set_name(absl::StrCat("ln", b));
      ln->set_kind("LayerNorm");
      (*ln->mutable_attrs())["normalized_shape"].set_i(64);
      auto* fc = layers->Add();
      fc->set_name(absl::StrCat("fc", b));
      fc->set_kind("Linear");
      (*fc->mutable_attrs())["in_features"].set_i(64);
      (*fc->mutable_attrs())["out_features"].set_i(64);
      auto* act = layers->Add();
      act->set_name(absl::StrCat("gelu", b));
      act->set_kind("GELU");
      auto* drop = layers->Add();
      drop->set_name(absl::StrCat("drop", b));
      drop->set_kind("Dropout");
      (*drop->mutable_attrs())["p"].set_f(0.1);
    }
    *layers->Add() = head;
    const ir::Plan capped = MustCompile(base);
    const ir::Plan uncapped = MustRun(base, absl::StrCat("infer-shapes,partition,schedule-zb-h1{max_activations=none},"
                                                         "assign-buffers,lower"));
    for (const auto& s : SavedActivations(capped)) EXPECT_LE(s.weights, s.forward);
    if (p == 2) {
      for (int s = 0; s < p; ++s) EXPECT_EQ(ComputeOrder(capped, s), ComputeOrder(uncapped, s));
    } else {
      EXPECT_NE(ComputeOrder(capped, 2), ComputeOrder(uncapped, 2));
    }
    base.mutable_config()->set_schedule("1f1b");
    const int64_t zb_peak = MaxPeakActivationBytes(capped), one_peak = MaxPeakActivationBytes(MustCompile(base));
    EXPECT_EQ(zb_peak, one_peak);
    EXPECT_GT(one_peak, 0);
  }
}

// The V's first chunk on stage 0 needs its last chunk's forward before any backward
// can run there: run in order, a cap of three forwards is refused at 3F0 (the fourth);
// with free choice, stage 0 keeps room for 3F0 and runs it as soon as it is ready.
TEST(ActivationCap, KeepsRoomForTheLastChunkWhenTheOrderCannotHoldTheCap) {
  const std::vector<SavedActivationBytes> saved(4, {10, 10});
  auto ops = [](const std::string& text) {
    std::vector<ComputeOp> out;
    for (size_t i = 0; i + 2 < text.size() + 1; i += 4) {
      out.push_back({text[i + 1] == 'F' ? ir::FORWARD : ir::BACKWARD, text[i] - '0', text[i + 2] - '0'});
    }
    return out;
  };
  const std::vector<std::vector<ComputeOp>> orders = {
      ops("0F0 0F1 0F2 3F0 3B0 0B0 3F1 3B1 0B1 3F2 3B2 0B2"),
      ops("1F0 2F0 1F1 2F1 1F2 2F2 2B0 1B0 2B1 1B1 2B2 1B2")};
  const std::vector<int> stage_of = {0, 1, 1, 0};
  // Where no stage crosses the cap (stage 1 holds six forwards at once), nothing moves.
  auto out = CapActivations(orders, stage_of, saved, 60);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(OrderText(out->at(0)), OrderText(orders[0]));
  out = CapActivations(orders, stage_of, saved, 30);
  ASSERT_TRUE(out.ok()) << out.status();
  // Stage 0 stops at two first-chunk forwards (a third would leave no room for 3F0) and
  // runs 3F0 when stage 1 has sent it.
  EXPECT_TRUE(absl::StartsWith(OrderText(out->at(0)), "0F0 0F1 3F0 3B0")) << OrderText(out->at(0));
  for (int s = 0; s < 2; ++s) {
    ActivationWalk walk(saved);
    for (const ComputeOp& op : out->at(s)) {
      walk.Apply(op.kind, op.virtual_stage);
      EXPECT_LE(walk.now(), 30) << "stage " << s << " after " << OrderText({op});
    }
    EXPECT_EQ(out->at(s).size(), orders[s].size());
  }
  // Below what one forward of each chunk needs, no order holds it.
  auto refused = CapActivations(orders, stage_of, saved, 15);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "stage 0 cannot hold max_activations=15 bytes"))
      << refused.status();
}

// ZB-V at 1F1B's peak (on the V's cuts): torch's order crosses it with its forwards
// alone; the free-choice replay holds it, verified, with more bubble than torch's order
// and, at P=4, less than 1F1B's.
TEST(ActivationCap, HoldsZbVAtOneFOneBsPeakWithFreeChoice) {
  const std::string lower = "assign-buffers,lower";
  auto bubble = [](const ir::Plan& plan) {
    auto t = SimulateTimeline(plan);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->bubble_fraction : 1.0;
  };
  for (int p : {2, 4}) {
    SCOPED_TRACE(absl::StrCat("P=", p));
    ir::Plan base = MlpPlan(p, 1, 4 * p, "zb-v", {64, 64, 64, 64, 64, 64, 64, 64});
    base.mutable_config()->set_virtual_stages(2);
    const ir::Plan torch_order = MustRun(base, "infer-shapes,partition,schedule-zb-v{max_activations=none}," + lower);
    const ir::Plan by_default = MustCompile(base);
    for (int st = 0; st < p; ++st) EXPECT_EQ(ComputeOrder(by_default, st), ComputeOrder(torch_order, st));
    const int64_t one = OneFOneBPeakActivationBytes(torch_order), top = MaxPeakActivationBytes(torch_order);
    ASSERT_GT(top, one);
    const ir::Plan capped =
        MustRun(base, "infer-shapes,partition,schedule-zb-v{max_activations=1f1b}," + lower + ",verify");
    EXPECT_LE(MaxPeakActivationBytes(capped), one);
    EXPECT_GT(bubble(capped), bubble(torch_order));
    if (p == 4) {
      ir::Plan ofob = base;
      ofob.mutable_config()->set_schedule("1f1b");
      ofob.mutable_config()->set_virtual_stages(1);
      EXPECT_LT(bubble(capped), bubble(MustCompile(ofob)));
    }
    // Caps between the two are held.
    for (int k = 1; k < 4; ++k) {
      const int64_t cap = top - (top - one) * k / 4;
      SCOPED_TRACE(absl::StrCat("cap ", cap));
      auto out = RunPipeline(base, absl::StrCat("infer-shapes,partition,schedule-zb-v{max_activations=", cap, "},",
                                                lower, ",verify"));
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_LE(MaxPeakActivationBytes(*out), cap);
    }
  }
}

TEST(Timeline, CountsATiedWeightOncePerStage) {
  // MlpPlan with widths {4, 4, 4}: fc0 4x4+4, fc1 4x4+4, head 4x4+4. Tie fc0 and fc1.
  ir::Plan plan = MlpPlan(1, 1, 2, "1f1b", {4, 4, 4});
  plan.mutable_model()->mutable_layers(0)->set_tie_key("t");
  plan.mutable_model()->mutable_layers(2)->set_tie_key("t");
  plan.mutable_config()->mutable_optimizer()->set_type("adam");
  auto t = SimulateTimeline(MustCompile(plan));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->stages[0].params, 3 * 20 - 16);
  EXPECT_EQ(t->stages[0].optimizer_state_bytes, (3 * 20 - 16) * 2 * 4);
}

// ---------------------------------------------------------------------------------
// Lowering.

// Index of the first instruction on stage s whose text starts with `prefix`; -1 if none.
int Find(const google::protobuf::RepeatedPtrField<ir::StageProgram>& programs, int s, const std::string& prefix,
         int from = 0) {
  const auto& ins = programs.Get(s).instructions();
  for (int i = from; i < ins.size(); ++i)
    if (absl::StartsWith(ir::PrintInstruction(ins[i]), prefix)) return i;
  return -1;
}
int Find(const ir::Plan& plan, int s, const std::string& prefix, int from = 0) {
  return Find(plan.programs(), s, prefix, from);
}

// Index of compute op `name` ("1F3") on stage s.
int FindOp(const ir::Plan& plan, int s, const std::string& name) {
  const auto& ins = plan.programs(s).instructions();
  for (int i = 0; i < ins.size(); ++i)
    if (ins[i].has_compute() && ir::OpName(ins[i]) == name) return i;
  return -1;
}

std::string RecvText(ir::Direction d, int boundary, int mb) {
  return absl::StrCat("recv direction=", ir::Direction_Name(d), " boundary=", boundary, " mb=", mb, " ");
}
std::string SendText(ir::Direction d, int boundary, int mb) {
  return absl::StrCat("send direction=", ir::Direction_Name(d), " boundary=", boundary, " mb=", mb, " ");
}

TEST(Lower, LoadsTransfersReductionsAndTheStepOfAStage) {
  ir::Plan plan = MustRun(MlpPlan(2, 2, 4, "1f1b"), Lowering("1f1b"));
  ASSERT_EQ(plan.programs_size(), 2);
  // Last stage: labels, then the activation received and waited for, before each
  // forward; the input gradient sent right after each backward.
  for (int mb = 0; mb < 4; ++mb) {
    const int f = FindOp(plan, 1, absl::StrCat("1F", mb)), b = FindOp(plan, 1, absl::StrCat("1B", mb));
    ASSERT_GE(f, 3);
    EXPECT_EQ(ir::PrintInstruction(plan.programs(1).instructions(f - 3)),
              absl::StrCat("load_micro_batch mb=", mb, " slot=0 inputs=false labels=true"));
    EXPECT_EQ(ir::PrintInstruction(plan.programs(1).instructions(f - 2)),
              absl::StrCat("recv direction=ACTIVATION boundary=0 mb=", mb, " slot=0"));
    EXPECT_EQ(ir::PrintInstruction(plan.programs(1).instructions(f - 1)),
              absl::StrCat("wait ops=[recv/activation/0/", mb, "]"));
    EXPECT_EQ(ir::PrintInstruction(plan.programs(1).instructions(b + 1)),
              absl::StrCat("send direction=GRADIENT boundary=0 mb=", mb, " slot=0"));
    // First stage: inputs before each forward, the activation sent right after it.
    const int f0 = FindOp(plan, 0, absl::StrCat("0F", mb));
    EXPECT_TRUE(absl::StartsWith(ir::PrintInstruction(plan.programs(0).instructions(f0 - 1)),
                                 absl::StrCat("load_micro_batch mb=", mb, " ")));
    EXPECT_TRUE(absl::StartsWith(ir::PrintInstruction(plan.programs(0).instructions(f0 + 1)),
                                 SendText(ir::ACTIVATION, 0, mb)));
  }
  // Every stage ends with its reduction over the replicas and its optimizer step.
  for (int s = 0; s < 2; ++s) {
    const int n = plan.programs(s).instructions_size();
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 2)), "reduce_grads");
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 1)), "optimizer_step sharded=false");
  }
}

TEST(Lower, ZeroStage1ShardsTheStepAndGathers) {
  ir::Plan zero = MlpPlan(2, 2, 2, "1f1b");
  zero.mutable_config()->set_zero_stage(1);
  ir::Plan plan = MustCompile(zero);
  for (int s = 0; s < 2; ++s) {
    const int n = plan.programs(s).instructions_size();
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 3)), "reduce_grads");
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 2)), "optimizer_step sharded=true");
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 1)), "gather_params") << "gather_params ends the step";
  }
  // D = 1: nothing to shard over, so ZeRO-1 lowers to a plain step.
  ir::Plan one = MlpPlan(2, 1, 2, "1f1b");
  one.mutable_config()->set_zero_stage(1);
  ir::Plan single = MustCompile(one);
  EXPECT_GE(Find(single, 0, "optimizer_step sharded=false"), 0);
  EXPECT_LT(Find(single, 0, "gather_params"), 0);
}

TEST(Lower, ClipsAfterTheReductionOverEveryStage) {
  ir::Plan clip = MlpPlan(2, 2, 2, "1f1b");
  clip.mutable_config()->set_gradient_clipping(1.5);
  ir::Plan plan = MustCompile(clip);
  for (int s = 0; s < 2; ++s) {
    const int n = plan.programs(s).instructions_size();
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 3)), "reduce_grads");
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 2)), "clip_grad_norm max_norm=1.5 stages=[0,1]");
    EXPECT_EQ(ir::PrintInstruction(plan.programs(s).instructions(n - 1)), "optimizer_step sharded=false");
  }
}

// A tiny language model whose embedding and unembedding share one weight, split so that
// each stage holds one copy.
ir::Plan TiedLmPlan() {
  ir::Plan plan;
  ir::ModelSpec* m = plan.mutable_model();
  m->set_name("tiny_lm");
  auto add = [&](const char* name, const char* kind, std::vector<std::pair<const char*, int>> attrs,
                 const char* tie = "") {
    ir::LayerSpec* l = m->add_layers();
    l->set_name(name);
    l->set_kind(kind);
    for (auto [k, v] : attrs) (*l->mutable_attrs())[k].set_i(v);
    l->set_tie_key(tie);
  };
  add("embed", "Embedding", {{"num_embeddings", 11}, {"embedding_dim", 6}}, "embed");
  add("flatten", "Flatten", {});
  add("mix", "Linear", {{"in_features", 18}, {"out_features", 6}});
  add("act", "Tanh", {});
  add("unembed", "Linear", {{"in_features", 6}, {"out_features", 11}}, "embed");
  m->mutable_input()->add_shape(3);
  m->mutable_input()->set_dtype(ir::INT64);
  m->mutable_label()->set_dtype(ir::INT64);
  m->set_loss(ir::CROSS_ENTROPY);
  m->set_num_classes(11);
  plan.mutable_topology()->set_num_stages(2);
  plan.mutable_topology()->set_data_parallel(1);
  auto* c = plan.mutable_config();
  c->set_micro_batches(2);
  c->set_micro_batch_size(2);
  c->set_schedule("1f1b");
  c->set_seed(1);
  c->set_steps(1);
  c->mutable_optimizer()->set_type("sgd");
  c->mutable_optimizer()->set_lr(0.1);
  c->set_partition_method("explicit:3");
  return plan;
}

TEST(Lower, SumsTiedGradientsOverTheStagesHoldingACopy) {
  ir::Plan plan = MustCompile(TiedLmPlan());
  for (int s = 0; s < 2; ++s) {
    const int tie = Find(plan, s, "reduce_tied_grads tie_key=\"embed\" stages=[0,1]");
    ASSERT_GE(tie, 0) << "stage " << s;
    EXPECT_EQ(tie, Find(plan, s, "optimizer_step") - 1) << "stage " << s;
  }
  // Without it on stage 1, stage 0 waits at the collective forever.
  ir::Plan missing = plan;
  const int i = Find(missing, 1, "reduce_tied_grads");
  missing.mutable_programs(1)->mutable_instructions()->DeleteSubrange(i, 1);
  absl::Status s = VerifyPlan(missing);
  const int at = Find(missing, 0, "reduce_tied_grads");
  EXPECT_NE(s.message().find("deadlock: no stage can proceed:"), std::string::npos) << s;
  EXPECT_NE(s.message().find(absl::StrCat("stage 0 instruction ", at,
                                          " (reduce_tied_grads tie_key=\"embed\" stages=[0,1]) needs stage 1 at the "
                                          "same collective")),
            std::string::npos)
      << s;
  // A reduction that does not list every holder.
  ir::Plan partial = plan;
  partial.mutable_programs(0)->mutable_instructions(Find(partial, 0, "reduce_tied_grads"))
      ->mutable_reduce_tied_grads()
      ->mutable_stages()
      ->RemoveLast();
  s = VerifyPlan(partial);
  EXPECT_NE(s.message().find("tie 'embed' is held by stages [0,1], instruction lists [0]"), std::string::npos) << s;
}

// 1F1B, P = 4, M = 8, before and after place-comm (each verified by the pipeline).
struct Placed {
  ir::Plan lowered, placed;
};
Placed PlaceComm1F1B(int p, int m) {
  Placed out;
  out.lowered = MustRun(MlpPlan(p, 1, m, "1f1b", kWide), Lowering("1f1b"));
  auto placed = RunPipeline(out.lowered, "place-comm");
  EXPECT_TRUE(placed.ok()) << placed.status();
  if (placed.ok()) out.placed = *placed;
  return out;
}

// The compute op before instruction i of stage s; -1 if none.
int PrecedingCompute(const ir::Plan& plan, int s, int i) {
  int prev = i - 1;
  while (prev >= 0 && !plan.programs(s).instructions(prev).has_compute()) --prev;
  return prev;
}

TEST(PlaceComm, MovesReceivesOnlyAndStillVerifies) {
  const int p = 4, m = 8;
  Placed r = PlaceComm1F1B(p, m);
  ASSERT_EQ(r.placed.programs_size(), p);
  EXPECT_TRUE(VerifyRunnablePlan(r.placed).ok()) << VerifyRunnablePlan(r.placed);
  bool moved = false;
  for (int s = 0; s < p; ++s) {
    EXPECT_EQ(ComputeOrder(r.placed, s), ComputeOrder(r.lowered, s));
    // Everything but the receives keeps its relative order.
    std::vector<std::string> a, b;
    for (const auto& in : r.lowered.programs(s).instructions())
      if (!in.has_recv()) a.push_back(ir::PrintInstruction(in));
    for (const auto& in : r.placed.programs(s).instructions())
      if (!in.has_recv()) b.push_back(ir::PrintInstruction(in));
    EXPECT_EQ(a, b) << "stage " << s;
    moved |= ir::PrintProgram(r.placed.programs(s), false) != ir::PrintProgram(r.lowered.programs(s), false);
  }
  EXPECT_TRUE(moved);
}

TEST(PlaceComm, IsIdempotent) {
  // Running it again changes nothing: every receive is already as early as it can be
  // (`ppc opt --passes=place-comm` on a compiled plan is a no-op).
  const int p = 4, m = 8;
  Placed r = PlaceComm1F1B(p, m);
  ASSERT_EQ(r.placed.programs_size(), p);
  auto again = RunPipeline(r.placed, "place-comm");
  ASSERT_TRUE(again.ok()) << again.status();
  for (int s = 0; s < p; ++s) {
    EXPECT_EQ(ir::PrintProgram(again->programs(s), true), ir::PrintProgram(r.placed.programs(s), true))
        << "stage " << s;
  }
}

TEST(PlaceComm, PostsGradientReceivesBeforeThePrecedingComputeOp) {
  const int p = 4, m = 8;
  Placed r = PlaceComm1F1B(p, m);
  ASSERT_EQ(r.placed.programs_size(), p);
  for (int s = 0; s + 1 < p; ++s) {
    for (int k = 1; k < m; ++k) {
      SCOPED_TRACE(absl::StrCat("stage ", s, " backward of micro-batch ", k));
      const std::string b = absl::StrCat(s, "B", k);
      // Lowered: the receive right before the backward, after the compute op before it.
      const int lb = FindOp(r.lowered, s, b), lr = Find(r.lowered, s, RecvText(ir::GRADIENT, s, k));
      ASSERT_GE(lr, 0);
      EXPECT_GT(lr, PrecedingCompute(r.lowered, s, lb));
      // Placed: posted before that compute op; its wait still right before the backward.
      const int pb = FindOp(r.placed, s, b), pr = Find(r.placed, s, RecvText(ir::GRADIENT, s, k));
      EXPECT_LT(pr, PrecedingCompute(r.placed, s, pb)) << ir::PrintProgram(r.placed.programs(s), true);
      EXPECT_TRUE(absl::StartsWith(ir::PrintInstruction(r.placed.programs(s).instructions(pb - 1)),
                                   absl::StrCat("wait ops=[recv/gradient/", s, "/", k)));
    }
  }
}

TEST(PlaceComm, PostsActivationReceivesBeforeThePrecedingComputeOp) {
  // In the 1F1B steady state every forward but the first follows a backward; its
  // activation receive should be posted before that backward, so that the transfer
  // overlaps it.
  const int p = 4, m = 8;
  Placed r = PlaceComm1F1B(p, m);
  ASSERT_EQ(r.placed.programs_size(), p);
  for (int s = 1; s < p; ++s) {
    const int warmup = p - s - 1;
    for (int k = warmup + 1; k < m; ++k) {
      SCOPED_TRACE(absl::StrCat("stage ", s, " forward of micro-batch ", k));
      const std::string f = absl::StrCat(s, "F", k);
      const int lf = FindOp(r.lowered, s, f), lr = Find(r.lowered, s, RecvText(ir::ACTIVATION, s - 1, k));
      ASSERT_GE(lr, 0);
      EXPECT_GT(lr, PrecedingCompute(r.lowered, s, lf));
      const int pf = FindOp(r.placed, s, f), prev = PrecedingCompute(r.placed, s, pf);
      ASSERT_GE(prev, 0);
      EXPECT_EQ(r.placed.programs(s).instructions(prev).compute().kind(), ir::BACKWARD);
      const int pr = Find(r.placed, s, RecvText(ir::ACTIVATION, s - 1, k));
      EXPECT_LT(pr, prev) << "recv at " << pr << ", preceding compute op "
                          << ir::OpName(r.placed.programs(s).instructions(prev)) << " at " << prev << "\n"
                          << ir::PrintProgram(r.placed.programs(s), true);
      EXPECT_EQ(ir::PrintInstruction(r.placed.programs(s).instructions(pf - 1)),
                absl::StrCat("wait ops=[recv/activation/", s - 1, "/", k, "]"));
    }
  }
}

// ---------------------------------------------------------------------------------
// The verifier accepts every compiled schedule ...

TEST(Verifier, AcceptsEveryCompiledSchedule) {
  for (const char* s : {"1f1b", "gpipe", "inference"}) {
    for (int p : {1, 2, 4}) {
      for (int d : {1, 2}) {
        auto plan = Compile(MlpPlan(p, d, 5, s, kWide));
        EXPECT_TRUE(plan.ok()) << s << " P=" << p << " D=" << d << ": " << plan.status();
        if (plan.ok()) {
          EXPECT_TRUE(VerifyRunnablePlan(*plan).ok()) << VerifyRunnablePlan(*plan);
        }
      }
    }
  }
  for (int d : {1, 2}) {
    auto plan = Compile(MlpPlan(1, d, 3, "data-parallel"));
    EXPECT_TRUE(plan.ok()) << "data-parallel D=" << d << ": " << plan.status();
  }
}

// ... and rejects each of them broken in one place.

// Rewrites stage `s` of a plan from assembly lines.
void SetProgram(ir::Plan& plan, int s, const std::vector<std::string>& lines) {
  auto* prog = plan.mutable_programs(s);
  prog->clear_instructions();
  for (const auto& l : lines) {
    auto in = ir::ParseInstruction(l);
    ASSERT_TRUE(in.ok()) << l << ": " << in.status();
    *prog->add_instructions() = *in;
  }
}

void Erase(ir::Plan& plan, int s, int index) {
  ASSERT_GE(index, 0);
  plan.mutable_programs(s)->mutable_instructions()->DeleteSubrange(index, 1);
}

// Moves instruction `from` of stage s to sit right after instruction `after` (indices
// before the move).
void MoveAfter(ir::Plan& plan, int s, int from, int after) {
  ASSERT_GE(from, 0);
  ASSERT_GE(after, 0);
  auto* ins = plan.mutable_programs(s)->mutable_instructions();
  ir::Instruction moved = ins->Get(from);
  ins->DeleteSubrange(from, 1);
  if (after > from) --after;
  ins->Add();
  for (int i = ins->size() - 1; i > after + 1; --i) ins->SwapElements(i, i - 1);
  *ins->Mutable(after + 1) = moved;
}

// Removes transfer `ref` (e.g. "send/activation/0/1") from every wait of stage s,
// dropping waits left empty.
void Unwait(ir::Plan& plan, int s, const std::string& ref) {
  auto* ins = plan.mutable_programs(s)->mutable_instructions();
  for (int i = ins->size() - 1; i >= 0; --i) {
    if (!ins->Get(i).has_wait()) continue;
    auto* ops = ins->Mutable(i)->mutable_wait()->mutable_ops();
    for (int j = ops->size() - 1; j >= 0; --j)
      if (ir::CommRefText(ops->Get(j)) == ref) ops->DeleteSubrange(j, 1);
    if (ops->empty()) ins->DeleteSubrange(i, 1);
  }
}

// "stage S instruction I (<text>)", as the verifier names an instruction.
std::string Where(const google::protobuf::RepeatedPtrField<ir::StageProgram>& programs, int s, int i) {
  return absl::StrCat("stage ", s, " instruction ", i, " (", ir::PrintInstruction(programs.Get(s).instructions(i)), ")");
}
std::string Where(const ir::Plan& plan, int s, int i) { return Where(plan.programs(), s, i); }

// Inserts `in` right after instruction `after` of stage s.
void InsertAfter(ir::Plan& plan, int s, int after, const ir::Instruction& in) {
  auto* ins = plan.mutable_programs(s)->mutable_instructions();
  *ins->Add() = in;
  for (int i = ins->size() - 1; i > after + 1; --i) ins->SwapElements(i, i - 1);
}

std::string VerifyMessage(const ir::Plan& plan) {
  absl::Status s = VerifyPlan(plan);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  return std::string(s.message());
}

#define EXPECT_HAS(msg, want) EXPECT_NE((msg).find(want), std::string::npos) << "want: " << (want) << "\ngot: " << (msg)

TEST(StructuralRules, ARankChecksItsOwnStageOnly) {
  // A slot out of range in stage 1's program: the whole-plan check and stage 1's check
  // report it; stage 0's check (what rank 0 runs at load) neither reads nor reports it.
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 4, "1f1b"));
  ASSERT_TRUE(ir::CheckStageStructure(plan, 0).ok());
  ASSERT_TRUE(ir::CheckStageStructure(plan, 1).ok());
  for (auto& in : *plan.mutable_programs(1)->mutable_instructions()) {
    if (in.has_compute()) {
      in.mutable_compute()->set_slot(99);
      break;
    }
  }
  EXPECT_HAS(std::string(ir::CheckPlanStructure(plan, true).message()), "slot 99");
  EXPECT_HAS(std::string(ir::CheckStageStructure(plan, 1).message()), "slot 99");
  EXPECT_TRUE(ir::CheckStageStructure(plan, 0).ok()) << ir::CheckStageStructure(plan, 0);
  // The shared parts (model, placement, boundaries) are every rank's.
  plan.mutable_boundaries(0)->mutable_tensors(0)->set_dtype(ir::INT64);
  EXPECT_HAS(std::string(ir::CheckStageStructure(plan, 0).message()), "boundary 0");
  EXPECT_EQ(ir::CheckStageStructure(plan, 2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ir::CheckStageStructure(plan, -1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Verifier, TakesTheUnchangedPartsAsProvenAndChecksTheRest) {
  ir::Module good = ir::ToModule(MustCompile(MlpPlan(2, 1, 2, "1f1b")));
  ASSERT_FALSE(good.eval_programs.empty());
  ir::Module broken = good;
  broken.programs[1].ops.pop_back();  // its optimizer step
  ir::Module broken_eval = good;
  broken_eval.eval_programs[1].ops.erase(broken_eval.eval_programs[1].ops.begin());
  EXPECT_FALSE(VerifyPlan(broken).ok());
  EXPECT_FALSE(VerifyPlan(broken_eval).ok());
  // Told the programs are as it passed them before, the verifier does not look at them;
  // the eval programs it still checks, and the other way round.
  EXPECT_TRUE(VerifyPlan(broken, {/*programs=*/true, /*eval_programs=*/false}).ok());
  EXPECT_FALSE(VerifyPlan(broken_eval, {/*programs=*/true, /*eval_programs=*/false}).ok());
  EXPECT_TRUE(VerifyPlan(broken_eval, {/*programs=*/false, /*eval_programs=*/true}).ok());
  EXPECT_FALSE(VerifyPlan(broken, {/*programs=*/false, /*eval_programs=*/true}).ok());
  // The header is always checked.
  ir::Module bad_header = good;
  bad_header.header.mutable_config()->set_micro_batch_size(-1);
  EXPECT_FALSE(VerifyPlan(bad_header, {true, true}).ok());
}

// With verification off (ppc opt --verify-each=false), a pass gets whatever it is given:
// a malformed plan is an error naming the pass, never a crash.
TEST(Passes, MalformedUnverifiedInputIsAnErrorNotACrash) {
  PipelineOptions unverified;
  unverified.verify_each = false;
  auto run = [&](ir::Module m, const std::string& pipeline) {
    return RunPipeline(std::move(m), pipeline, unverified).status();
  };
  ir::Module scheduled = ir::ToModule(MustRun(MlpPlan(2, 1, 4, "1f1b"), "infer-shapes,partition,schedule-1f1b"));
  ir::Module buffered =
      ir::ToModule(MustRun(MlpPlan(2, 1, 4, "1f1b"), "infer-shapes,partition,schedule-1f1b,assign-buffers"));
  ir::Module lowered = ir::ToModule(MustCompile(MlpPlan(2, 1, 4, "1f1b")));
  lowered.header.set_level(ir::LOWERED);
  for (const auto& [name, module, pipeline] : std::vector<std::tuple<std::string, ir::Module, std::string>>{
           {"vs on another stage", scheduled, "assign-buffers"},
           {"micro-batch out of range", scheduled, "assign-buffers"},
           {"vs out of range", buffered, "lower"},
           {"a program for another stage", buffered, "lower"},
           {"slot out of range", lowered, "place-comm"},
           {"boundary out of range", lowered, "place-comm"},
       }) {
    ir::Module m = module;
    ir::Op& op = m.programs[0].ops[0];
    if (name == "vs on another stage") op.index = 1;
    if (name == "micro-batch out of range") op.micro_batch = 4;
    if (name == "vs out of range") op.index = -7;
    if (name == "a program for another stage") m.programs[1].stage = 5;
    if (name == "slot out of range") {
      for (ir::Op& o : m.programs[1].ops)
        if (o.is(ir::OpCode::kCompute)) o.slot = 1000;
    }
    if (name == "boundary out of range") {
      for (ir::Op& o : m.programs[1].ops)
        if (o.is(ir::OpCode::kRecv)) o.index = 3;
    }
    absl::Status s = run(std::move(m), pipeline);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name << ": " << s;
    EXPECT_HAS(std::string(s.message()), pipeline) << name;
  }
}

TEST(Verifier, RejectsADroppedWait) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  Erase(plan, 1, Find(plan, 1, "wait ops=[recv/activation/0/1]"));
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, Where(plan, 1, FindOp(plan, 1, "1F1")) +
                      ": the activation across boundary 0 from stage 0 was not received into slot 0 and waited for");
  EXPECT_HAS(msg, Where(plan, 1, Find(plan, 1, RecvText(ir::ACTIVATION, 0, 1))) + ": posted but never waited for");
}

TEST(Verifier, RejectsADroppedReceive) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  Erase(plan, 1, Find(plan, 1, RecvText(ir::ACTIVATION, 0, 1)));
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, Where(plan, 1, Find(plan, 1, "wait ops=[recv/activation/0/1]")) +
                      ": waits for recv/activation/0/1 which was not posted before");
}

TEST(Verifier, RejectsAReceiveWithoutASend) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  Erase(plan, 0, Find(plan, 0, SendText(ir::ACTIVATION, 0, 1)));
  Unwait(plan, 0, "send/activation/0/1");
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, Where(plan, 1, Find(plan, 1, RecvText(ir::ACTIVATION, 0, 1))) +
                      ": no matching send on stage 0 (it posts 1 sends to stage 1, stage 1 posts 2 receives)");
}

TEST(Verifier, RejectsTransfersPostedInAnotherOrderThanTheyAreReceived) {
  // Stage 0 posts its two activation sends to stage 1 in the order mb=1, mb=0; stage 1
  // receives mb=0 first. Each send still follows its forward and every receive has a
  // send of the same (direction, boundary, micro-batch), so a transport that matches by
  // tag (Gloo) would run it; NCCL pairs the k-th send with the k-th receive, so stage 1
  // would take micro-batch 1's activation as micro-batch 0's.
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  const int send0 = Find(plan, 0, SendText(ir::ACTIVATION, 0, 0));
  MoveAfter(plan, 0, send0, Find(plan, 0, SendText(ir::ACTIVATION, 0, 1)));
  ASSERT_LT(Find(plan, 0, SendText(ir::ACTIVATION, 0, 1)), Find(plan, 0, SendText(ir::ACTIVATION, 0, 0)));
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, absl::StrCat("stage 0 -> stage 1 transfer 0: ",
                               Where(plan, 0, Find(plan, 0, SendText(ir::ACTIVATION, 0, 1))),
                               " is stage 1's receive 0, but that is ",
                               Where(plan, 1, Find(plan, 1, RecvText(ir::ACTIVATION, 0, 0))),
                               " (transfers between two ranks match in the order they are posted)"));
  // The simulator pairs by order too, and says so.
  auto sim = Simulate(plan, plan.programs(), CostModel::Unit(plan));
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_FALSE(sim->errors.empty());
  EXPECT_HAS(sim->errors[0], "stage 0 -> stage 1 transfer 0: stage 0 sends send/activation/0/1 but stage 1's "
                             "receive 0 is recv/activation/0/0");
}

TEST(Verifier, FindsACycleOfWaits) {
  // Stage 0 waits for the gradient before it forwards: both stages wait for the other's
  // data before posting their own.
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 1, "1f1b"));
  SetProgram(plan, 0, {"load_micro_batch mb=0 slot=0 inputs=true labels=false",
                       "recv direction=GRADIENT boundary=0 mb=0 slot=0", "wait ops=[recv/gradient/0/0]",
                       "compute kind=FORWARD vs=0 mb=0 slot=0", "send direction=ACTIVATION boundary=0 mb=0 slot=0",
                       "compute kind=BACKWARD vs=0 mb=0 slot=0", "wait ops=[send/activation/0/0]",
                       "optimizer_step sharded=false"});
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "deadlock: no stage can proceed:");
  EXPECT_HAS(msg, "\n    stage 0 instruction 2 (wait ops=[recv/gradient/0/0]) waits for stage 1 to post "
                  "send/gradient/0/0");
  EXPECT_HAS(msg, "\n    " + Where(plan, 1, Find(plan, 1, "wait ops=[recv/activation/0/0]")) +
                      " waits for stage 0 to post send/activation/0/0");
}

TEST(Verifier, RejectsOverwritingALiveBuffer) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  // Stage 0 holds micro-batches 0 and 1 in slots 0 and 1; force both into slot 0.
  plan.mutable_programs(0)->set_num_slots(1);
  for (auto& in : *plan.mutable_programs(0)->mutable_instructions()) {
    if (in.has_compute()) in.mutable_compute()->set_slot(0);
    if (in.has_load_micro_batch()) in.mutable_load_micro_batch()->set_slot(0);
    if (in.has_send()) in.mutable_send()->set_slot(0);
    if (in.has_recv()) in.mutable_recv()->set_slot(0);
  }
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "overwrites slot 0 with virtual stage 0 micro-batch 1 while virtual stage 0 micro-batch 0 still "
                  "needs it");
}

TEST(Verifier, RejectsReusingASlotTooEarly) {
  // 1F1B P=2 M=4: stage 0 holds micro-batch 1 in slot 1 until its backward, and reuses
  // slot 0 (free after the backward of micro-batch 0) for micro-batch 2. Putting
  // micro-batch 2 in slot 1 instead reuses that slot before micro-batch 1 is done.
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 4, "1f1b"));
  // The first instruction that puts micro-batch 2 in a slot (a receive writes its slot
  // at its wait, not when posted).
  int first = -1;
  for (int i = 0; i < plan.programs(0).instructions_size(); ++i) {
    ir::Instruction& in = *plan.mutable_programs(0)->mutable_instructions(i);
    int mb, slot;
    if (!ir::MicroBatchOf(in, &mb) || !ir::SlotOf(in, &slot) || mb != 2) continue;
    ASSERT_EQ(slot, 0) << ir::PrintInstruction(in);
    if (first < 0 && !in.has_recv()) first = i;
    if (in.has_compute()) in.mutable_compute()->set_slot(1);
    if (in.has_load_micro_batch()) in.mutable_load_micro_batch()->set_slot(1);
    if (in.has_send()) in.mutable_send()->set_slot(1);
    if (in.has_recv()) in.mutable_recv()->set_slot(1);
  }
  ASSERT_GE(first, 0);
  const int b1 = FindOp(plan, 0, "0B1");
  ASSERT_GT(b1, first);
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, absl::StrCat(Where(plan, 0, first), ": overwrites slot 1 with virtual stage 0 micro-batch 2 while ",
                               "virtual stage 0 micro-batch 1 still needs it (until instruction ", b1, ")"));
}

TEST(Verifier, RejectsBackwardBeforeForwardAndMissingMicroBatches) {
  ir::Plan plan = MustCompile(MlpPlan(1, 1, 2, "1f1b"));
  SetProgram(plan, 0, {"compute kind=BACKWARD vs=0 mb=0 slot=0", "load_micro_batch mb=0 slot=0 inputs=true labels=true",
                       "compute kind=FORWARD vs=0 mb=0 slot=0", "optimizer_step sharded=false"});
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "stage 0 instruction 0 (compute kind=BACKWARD vs=0 mb=0 slot=0): backward of virtual stage 0 "
                  "micro-batch 0 before its forward");
  EXPECT_HAS(msg, "stage 0: virtual stage 0 micro-batch 1 is never forwarded");
}

TEST(Verifier, RejectsABackwardOnAnotherSlotThanItsForward) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  const int b1 = FindOp(plan, 0, "0B1");
  ASSERT_EQ(plan.programs(0).instructions(b1).compute().slot(), 1);
  plan.mutable_programs(0)->mutable_instructions(b1)->mutable_compute()->set_slot(0);
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, Where(plan, 0, b1) + ": uses slot 0 but the forward of virtual stage 0 micro-batch 1 used slot 1");
}

TEST(Verifier, RejectsASendBeforeItsForward) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  const int f0 = FindOp(plan, 0, "0F0");
  MoveAfter(plan, 0, Find(plan, 0, SendText(ir::ACTIVATION, 0, 0)), f0 - 1);
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, Where(plan, 0, f0) +
                      ": sends the activation of virtual stage 0 micro-batch 0 before its forward on slot 0");
}

TEST(Verifier, RejectsWaitingTwice) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  const int wait = Find(plan, 1, "wait ops=[recv/activation/0/0]");
  ASSERT_GE(wait, 0);
  InsertAfter(plan, 1, wait, ir::Instruction(plan.programs(1).instructions(wait)));
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, Where(plan, 1, wait + 1) + ": waits for recv/activation/0/0 a second time");
}

TEST(Verifier, RejectsAMissingOptimizerStep) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  Erase(plan, 1, Find(plan, 1, "optimizer_step"));
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "stage 1: training plan has no optimizer step");
}

TEST(Verifier, RejectsOptimizerStepBeforeBackwardAndMissingReduction) {
  ir::Plan plan = MustCompile(MlpPlan(1, 2, 1, "1f1b"));
  SetProgram(plan, 0, {"load_micro_batch mb=0 slot=0 inputs=true labels=true", "compute kind=FORWARD vs=0 mb=0 slot=0",
                       "optimizer_step sharded=false", "compute kind=BACKWARD vs=0 mb=0 slot=0"});
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "stage 0 instruction 2 (optimizer_step sharded=false): optimizer step before the backward at "
                  "instruction 3");
  EXPECT_HAS(msg, "stage 0: data_parallel=2 but gradients are never reduced (ReduceGrads)");
}

TEST(Verifier, ChecksTheClipping) {
  ir::Plan clip = MlpPlan(2, 2, 2, "1f1b");
  clip.mutable_config()->set_gradient_clipping(1.5);
  ir::Plan plan = MustCompile(clip);
  // Clipping before the data-parallel reduction would clip each replica's gradients.
  ir::Plan early = plan;
  const int reduce = Find(early, 0, "reduce_grads");
  MoveAfter(early, 0, reduce, Find(early, 0, "clip_grad_norm"));
  ASSERT_EQ(Find(early, 0, "clip_grad_norm"), reduce);
  std::string msg = VerifyMessage(early);
  EXPECT_HAS(msg, Where(early, 0, reduce + 1) + ": reduces gradients after clipping them");
  // The norm is global: every stage takes part.
  ir::Plan local = plan;
  const int c = Find(local, 1, "clip_grad_norm");
  local.mutable_programs(1)->mutable_instructions(c)->mutable_clip_grad_norm()->mutable_stages()->RemoveLast();
  msg = VerifyMessage(local);
  EXPECT_HAS(msg, Where(local, 1, c) + ": must list every stage 0..1 exactly once");
}

TEST(Verifier, ChecksTheZeroStage1Lowering) {
  ir::Plan zero = MlpPlan(2, 2, 2, "1f1b");
  zero.mutable_config()->set_zero_stage(1);
  ir::Plan plan = MustCompile(zero);
  const int gather = Find(plan, 1, "gather_params");
  ASSERT_EQ(gather, plan.programs(1).instructions_size() - 1);
  // Without the gather the replicas' parameters would diverge.
  ir::Plan no_gather = plan;
  Erase(no_gather, 1, gather);
  std::string msg = VerifyMessage(no_gather);
  EXPECT_HAS(msg, "sharded optimizer step is never followed by GatherParams, so the replicas' parameters would "
                  "diverge");
  // An unsharded step under ZeRO-1.
  ir::Plan unsharded = plan;
  unsharded.mutable_programs(0)->mutable_instructions(Find(plan, 0, "optimizer_step"))->mutable_optimizer_step()->set_sharded(false);
  msg = VerifyMessage(unsharded);
  EXPECT_HAS(msg, "must be sharded (config.zero_stage 1 with data_parallel > 1)");
  // A gather with no sharded step before it.
  ir::Plan early = plan;
  auto* ins = early.mutable_programs(1)->mutable_instructions();
  ins->SwapElements(gather, gather - 1);
  msg = VerifyMessage(early);
  EXPECT_HAS(msg, Where(early, 1, gather - 1) + ": gathers parameters without a sharded optimizer step before it");
  // A sharded step (with its gather) without ZeRO.
  ir::Plan stage0 = plan;
  stage0.mutable_config()->set_zero_stage(0);
  msg = VerifyMessage(stage0);
  EXPECT_HAS(msg, "is sharded but config.zero_stage is 0 or data_parallel is 1");
  EXPECT_HAS(msg, "gathers parameters but the plan's optimizer is not sharded");
  ir::Plan stage2 = plan;
  stage2.mutable_config()->set_zero_stage(2);
  msg = VerifyMessage(stage2);
  EXPECT_HAS(msg, "config.zero_stage is 2; it must be in [0, 1]");
}

TEST(Verifier, ChecksTheEvalPrograms) {
  ir::Plan plan = MustCompile(MlpPlan(2, 2, 3, "1f1b"));
  ASSERT_EQ(plan.eval_programs_size(), 2);
  std::vector<std::string> order;
  for (const auto& in : plan.eval_programs(1).instructions()) {
    EXPECT_FALSE((in.has_compute() && in.compute().kind() != ir::FORWARD) || in.has_optimizer_step() ||
                 in.has_reduce_grads())
        << ir::PrintInstruction(in);
    if (in.has_compute()) order.push_back(ir::OpName(in));
  }
  EXPECT_EQ(absl::StrJoin(order, " "), "1F0 1F1 1F2");
  // An inference plan needs none: its programs already are forward-only.
  EXPECT_EQ(MustCompile(MlpPlan(2, 1, 2, "inference")).eval_programs_size(), 0);

  ir::Plan missing = plan;
  auto* ins = missing.mutable_eval_programs(1)->mutable_instructions();
  for (int i = 0; i < ins->size(); ++i) {
    if (ins->Get(i).has_compute() && ins->Get(i).compute().micro_batch() == 2) {
      ins->DeleteSubrange(i, 1);
      break;
    }
  }
  std::string msg = VerifyMessage(missing);
  EXPECT_HAS(msg, "eval programs: stage 1: virtual stage 1 micro-batch 2 is never forwarded");

  // Eval programs must be as lowered as the training programs: without their receives
  // the last stage would forward nothing.
  ir::Plan unlowered = plan;
  for (int s = 0; s < 2; ++s) {
    auto* prog = unlowered.mutable_eval_programs(s)->mutable_instructions();
    prog->erase(std::remove_if(prog->begin(), prog->end(),
                               [](const ir::Instruction& in) { return in.has_recv() || in.has_send() || in.has_wait(); }),
                prog->end());
  }
  int f0 = -1;
  for (int i = 0; i < unlowered.eval_programs(1).instructions_size() && f0 < 0; ++i)
    if (unlowered.eval_programs(1).instructions(i).has_compute()) f0 = i;
  msg = VerifyMessage(unlowered);
  EXPECT_HAS(msg, "eval programs: " + Where(unlowered.eval_programs(), 1, f0) +
                      ": the activation across boundary 0 from stage 0 was not received into slot 0 and waited for");

  ir::Plan training = plan;
  *training.mutable_eval_programs(0)->add_instructions() = *ir::ParseInstruction("compute kind=BACKWARD vs=0 mb=0 slot=0");
  msg = VerifyMessage(training);
  EXPECT_HAS(msg, "eval " + Where(training.eval_programs(), 0, training.eval_programs(0).instructions_size() - 1) +
                      ": an eval program must be forward-only");
}

TEST(Verifier, RejectsOutOfRangeIndices) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  const int i = FindOp(plan, 0, "0F1");
  plan.mutable_programs(0)->mutable_instructions(i)->mutable_compute()->set_micro_batch(7);
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, Where(plan, 0, i) + ": micro-batch 7 is out of range [0, 2)");
  // A compute op of a virtual stage another stage runs.
  ir::Plan moved = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  moved.mutable_programs(0)->mutable_instructions(i)->mutable_compute()->set_virtual_stage(1);
  msg = VerifyMessage(moved);
  EXPECT_HAS(msg, Where(moved, 0, i) + ": virtual stage 1 runs on stage 1, not 0");
}

TEST(Verifier, ChecksTheBoundaryTable) {
  // What crosses a boundary is the output group of the layer before it (format v3 had a
  // shape on every transfer instruction instead).
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 1, "1f1b"));
  plan.mutable_boundaries(0)->mutable_tensors(0)->set_shape(0, 31);
  std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "boundary 0 lists {fc1:FLOAT32[31]} but virtual stage 0 produces {fc1:FLOAT32[32]}");
  plan.mutable_boundaries()->Clear();
  msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "the boundary table has 0 boundaries; 2 virtual stages need 1");
}

// ---------------------------------------------------------------------------------
// The structural rules the compiler's verifier and the runtime's load share
// (ir/plan_check.h).

absl::Status Structure(const ir::Plan& plan) { return ir::CheckPlanStructure(plan, /*complete=*/true); }

void ExpectRefused(const absl::Status& status, const std::string& want) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(want), std::string::npos) << status;
}

TEST(PlanStructure, CompiledPlansPassTheRuntimesChecks) {
  for (const char* s : {"1f1b", "gpipe", "inference"}) {
    ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, s));
    EXPECT_TRUE(Structure(plan).ok()) << s << ": " << Structure(plan);
  }
  EXPECT_TRUE(Structure(MustCompile(MlpPlan(1, 2, 2, "data-parallel"))).ok());
  // Not LOWERED: not runnable.
  ir::Plan buffered = MustRun(MlpPlan(2, 1, 2, "1f1b"), "infer-shapes,partition,schedule-1f1b,assign-buffers");
  buffered.mutable_config()->set_steps(1);
  ExpectRefused(Structure(buffered), "plan level is BUFFERED; a runnable plan is LOWERED (compile it with ppc)");
}

TEST(PlanStructure, RefusesUnknownLayerAttributes) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  (*plan.mutable_model()->mutable_layers(2)->mutable_attrs())["biass"].set_b(false);
  ExpectRefused(Structure(plan), "model layer 2: layer 'fc1' (Linear): unknown attribute 'biass' "
                                 "(known: bias, in_features, out_features)");
  // The compiler refuses it too, naming the key.
  ir::Plan spec = MlpPlan(2, 1, 2, "1f1b");
  ir::LayerSpec* drop = spec.mutable_model()->mutable_layers(1);
  drop->set_name("drop");
  drop->set_kind("Dropout");
  (*drop->mutable_attrs())["q"].set_f(0.1);
  ExpectRefused(Compile(spec).status(), "layer 'drop' (Dropout): unknown attribute 'q' (known: p)");
}

TEST(PlanStructure, RefusesDuplicateAndEmptyLayerNames) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  plan.mutable_model()->mutable_layers(3)->set_name("fc0");
  ExpectRefused(Structure(plan), "model layer 3 'fc0': name is also layer 0's; layer names must be unique");
  ExpectRefused(VerifyPlan(plan), "name is also layer 0's");
  plan.mutable_model()->mutable_layers(3)->set_name("");
  ExpectRefused(Structure(plan), "model layer 3 (ReLU): name is empty");
}

TEST(PlanStructure, RefusesAScheduleNameThatIsNoPassName) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  // A plan records the schedule pass that wrote it, a built-in one or a plugin's: any
  // kebab-case name; the verifier proves the programs whoever wrote them.
  plan.mutable_config()->set_schedule("memcap-1f1b");
  EXPECT_TRUE(Structure(plan).ok()) << Structure(plan);
  for (const char* bad : {"Zzz", "a b", "-x", "x-", "1f1b\n", "schedule/1f1b"}) {
    plan.mutable_config()->set_schedule(bad);
    ExpectRefused(Structure(plan), absl::StrCat("config.schedule '", bad, "' is not a schedule name (kebab-case"));
    ExpectRefused(VerifyPlan(plan), absl::StrCat("config.schedule '", bad, "'"));
  }
  plan.mutable_config()->clear_schedule();
  ExpectRefused(Structure(plan), "config.schedule is missing");
  // Every name the rules accept is one the compiler has a schedule pass for.
  for (const char* name : ir::kSchedules) {
    EXPECT_NE(GlobalPassRegistry().Find(absl::StrCat("schedule-", name)), nullptr) << name;
  }
}

TEST(PlanStructure, CompletePlansGiveStepsAndBatchSettings) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  plan.mutable_config()->set_steps(0);
  ExpectRefused(Structure(plan), "config.steps is 0; it must be in [1, ");
  EXPECT_TRUE(ir::CheckPlanStructure(plan, /*complete=*/false).ok());  // a spec: ppc fills it
  plan.mutable_config()->set_steps(1);
  plan.mutable_config()->set_micro_batches(0);
  ExpectRefused(Structure(plan), "config.micro_batches is 0; it must be in [1, ");
  plan.mutable_config()->set_micro_batches(2);
  plan.mutable_config()->set_micro_batch_size(0);
  ExpectRefused(Structure(plan), "config.micro_batch_size is 0; it must be in [1, ");
}

TEST(Partition, FlopsBalancesAlexNetComputeNotParameters) {
  ir::Plan plan;
  ASSERT_TRUE(ir::ParseTextProtoFile("examples/alexnet_cifar10/alexnet.textproto", plan.mutable_model()).ok());
  plan.mutable_topology()->set_num_stages(2);
  plan.mutable_topology()->set_data_parallel(1);
  plan.mutable_config()->set_micro_batches(1);
  plan.mutable_config()->set_micro_batch_size(1);
  auto by_params = RunPipeline(plan, "infer-shapes,partition{method=parameters}");
  auto by_flops = RunPipeline(plan, "infer-shapes,partition{method=flops}");
  ASSERT_TRUE(by_params.ok()) << by_params.status();
  ASSERT_TRUE(by_flops.ok()) << by_flops.status();
  // Parameters put every convolution on stage 0 (it starts at the second classifier
  // block); at 224x224 the convolutions are the compute, so flops splits among them:
  // conv1-3 (~406M multiply-adds) | conv3's ReLU, conv4-5 + classifier (~304M).
  EXPECT_EQ(by_params->placement().virtual_stages(1).begin(), 17);
  EXPECT_EQ(by_flops->placement().virtual_stages(1).begin(), 7);
}

// ---------------------------------------------------------------------------------
// batch-weight-grads

// The model of Timeline.CountsActivationsKeptForBackwardsAndWhatIKeepsForW: an F keeps
// 564 bytes, an I keeps 928 for its W. One stage, four micro-batches of 2.
ir::Plan BatchModel(int m, const std::string& schedule = "1f1b") {
  ir::Plan plan = MlpPlan(1, 1, m, schedule, {16, 32, 16});
  auto* layers = plan.mutable_model()->mutable_layers();
  layers->DeleteSubrange(3, 1);  // relu1
  layers->DeleteSubrange(1, 1);  // relu0
  return plan;
}

std::string Batched(const std::string& schedule, const std::string& options) {
  return absl::StrCat("infer-shapes,partition,schedule-", schedule, ",batch-weight-grads", options,
                      ",assign-buffers,lower");
}

TEST(BatchWeightGrads, SplitsEveryBackwardAndDefersAllButTheLastWOfEachGroup) {
  const ir::Plan all = MustRun(BatchModel(4), Batched("1f1b", ""));
  EXPECT_EQ(ComputeOrder(all, 0), "0F0 0I0 0w0 0F1 0I1 0w1 0F2 0I2 0w2 0F3 0I3 0W3");
  const ir::Plan two = MustRun(BatchModel(4), Batched("1f1b", "{group=2}"));
  EXPECT_EQ(ComputeOrder(two, 0), "0F0 0I0 0w0 0F1 0I1 0W1 0F2 0I2 0w2 0F3 0I3 0W3");
  const ir::Plan three = MustRun(BatchModel(4), Batched("1f1b", "{group=3}"));
  EXPECT_EQ(ComputeOrder(three, 0), "0F0 0I0 0w0 0F1 0I1 0w1 0F2 0I2 0W2 0F3 0I3 0W3");
  const ir::Plan one = MustRun(BatchModel(4), Batched("1f1b", "{group=1}"));
  EXPECT_EQ(ComputeOrder(one, 0), "0F0 0I0 0W0 0F1 0I1 0W1 0F2 0I2 0W2 0F3 0I3 0W3");
  // A split schedule's W's stay where it put them; only the marks change.
  const std::string zb = "infer-shapes,partition,schedule-zb-h1{max_activations=none}";
  ir::Plan plain = MustRun(MlpPlan(2, 1, 4, "zb-h1", kWide), zb + ",assign-buffers,lower");
  ir::Plan marked = MustRun(MlpPlan(2, 1, 4, "zb-h1", kWide), zb + ",batch-weight-grads,assign-buffers,lower");
  for (int s = 0; s < 2; ++s) {
    std::string order = ComputeOrder(marked, s);
    EXPECT_EQ(std::count(order.begin(), order.end(), 'w'), 3) << order;
    std::replace(order.begin(), order.end(), 'w', 'W');
    EXPECT_EQ(order, ComputeOrder(plain, s));
  }
}

// What each I keeps lives until its group's W: the peak is the group's I's, and a budget
// picks the largest group that fits.
TEST(BatchWeightGrads, HoldsEachGroupsWeightStateAndFitsTheGroupToABudget) {
  auto peak = [](const ir::Plan& plan) {
    auto t = SimulateTimeline(plan);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->stages[0].peak_activation_bytes : -1;
  };
  EXPECT_EQ(peak(MustRun(BatchModel(4), Lowering("1f1b"))), 564);
  EXPECT_EQ(peak(MustRun(BatchModel(4), Batched("1f1b", ""))), 4 * 928);
  EXPECT_EQ(peak(MustRun(BatchModel(4), Batched("1f1b", "{group=2}"))), 2 * 928);
  EXPECT_EQ(peak(MustRun(BatchModel(4), Batched("1f1b", "{group=1}"))), 928);
  const ir::Plan fit3 = MustRun(BatchModel(4), Batched("1f1b", "{max_activations=3000}"));
  EXPECT_EQ(ComputeOrder(fit3, 0), "0F0 0I0 0w0 0F1 0I1 0w1 0F2 0I2 0W2 0F3 0I3 0W3");
  EXPECT_EQ(peak(fit3), 3 * 928);
  const ir::Plan fit2 = MustRun(BatchModel(4), Batched("1f1b", "{group=all,max_activations=2000}"));
  EXPECT_EQ(peak(fit2), 2 * 928);
  ir::Plan plan = BatchModel(4);
  CanonicalizeConfig(plan.topology(), plan.mutable_config());
  auto refused = RunPipeline(plan, Batched("1f1b", "{max_activations=900}"));
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_HAS(std::string(refused.status().message()), "stage 0 keeps 928 bytes");
  // The simulator charges a deferred W nothing and the group's W the group's W's: the
  // step takes as long as unbatched at unit costs.
  auto unit = [](const ir::Plan& p) {
    auto t = SimulateTimeline(p, CostModel::Unit(p));
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->makespan : -1;
  };
  EXPECT_EQ(unit(MustRun(BatchModel(4), Batched("1f1b", ""))), 12);
  EXPECT_EQ(unit(MustRun(BatchModel(4), Lowering("1f1b"))), 12);
}

TEST(BatchWeightGrads, RefusesBadOptionsPlansThatDoNotTrainAndASecondRun) {
  ir::Plan plan = BatchModel(4);
  CanonicalizeConfig(plan.topology(), plan.mutable_config());
  for (const char* bad : {"{group=0}", "{group=-2}", "{group=x}", "{max_activations=-5}", "{max_activations=1f1b}",
                          "{max_activations=nan}"}) {
    auto out = RunPipeline(plan, Batched("1f1b", bad));
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << bad << ": " << out.status();
  }
  ir::Plan inference = BatchModel(4, "inference");
  CanonicalizeConfig(inference.topology(), inference.mutable_config());
  auto forward_only = RunPipeline(inference, Batched("inference", ""));
  EXPECT_EQ(forward_only.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_HAS(std::string(forward_only.status().message()), "does not train");
  auto twice = RunPipeline(plan, "infer-shapes,partition,schedule-1f1b,batch-weight-grads,batch-weight-grads");
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_HAS(std::string(twice.status().message()), "has run already");
  auto lowered = RunPipeline(plan, Lowering("1f1b") + ",batch-weight-grads");
  EXPECT_EQ(lowered.status().code(), absl::StatusCode::kFailedPrecondition) << lowered.status();
  // The flag's helper: the pass before assign-buffers, or a clear refusal.
  auto with = WithBatchWeightGrads("infer-shapes,partition,schedule-1f1b,assign-buffers,lower", "2");
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(*with, "infer-shapes,partition,schedule-1f1b,batch-weight-grads{group=2},assign-buffers,lower");
  for (const char* bad : {"0", "x", "2}", "-1", "all,verify"}) {
    EXPECT_EQ(WithBatchWeightGrads("schedule-1f1b,assign-buffers", bad).status().code(),
              absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(WithBatchWeightGrads("schedule-1f1b", "all").status().code(), absl::StatusCode::kInvalidArgument);
}

// A deferred W whose batch no plain W computes would lose its weight gradients; only a W
// may be deferred.
TEST(Verifier, RejectsADeferredWeightBackwardThatNoWComputes) {
  ir::Plan plan = MustRun(BatchModel(4), Batched("1f1b", "{group=2}"));
  int last_w = -1;
  for (int i = 0; i < plan.programs(0).instructions_size(); ++i) {
    const auto& in = plan.programs(0).instructions(i);
    if (in.has_compute() && in.compute().kind() == ir::BACKWARD_WEIGHT) last_w = i;
  }
  ASSERT_GE(last_w, 0);
  ASSERT_TRUE(VerifyPlan(plan).ok());
  plan.mutable_programs(0)->mutable_instructions(last_w)->mutable_compute()->set_deferred(true);
  const std::string msg = VerifyMessage(plan);
  EXPECT_HAS(msg, "defers the weight backward of virtual stage 0 but no W of that virtual stage without the "
                  "deferred mark follows");
  EXPECT_HAS(msg, "mb=2");  // the group's first deferred W (micro-batches 2 and 3)
  ir::Plan forward = MustRun(BatchModel(4), Lowering("1f1b"));
  for (auto& in : *forward.mutable_programs(0)->mutable_instructions()) {
    if (in.has_compute() && in.compute().kind() == ir::FORWARD) {
      in.mutable_compute()->set_deferred(true);
      break;
    }
  }
  absl::Status structure = ir::CheckPlanStructure(forward, /*complete=*/true);
  EXPECT_EQ(structure.code(), absl::StatusCode::kInvalidArgument) << structure;
  EXPECT_HAS(std::string(structure.message()), "only a BACKWARD_WEIGHT may be deferred");
}

}  // namespace
}  // namespace ppc::passes
