// schedule-interleaved-1f1b: Megatron-LM's interleaved 1F1B (virtual pipeline), V chunks
// per stage placed round-robin (virtual stage v = chunk * P + stage).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "ir/topology.h"
#include "passes/analysis/simulate.h"
#include "passes/analysis/verifier.h"
#include "passes/test_util.h"

namespace ppc::passes {
namespace {

// 2 * (widths - 1) + 1 layers: enough for P x V virtual stages of at least one layer.
std::vector<int> Widths(int layers_needed) {
  std::vector<int> widths{16};
  while (2 * (static_cast<int>(widths.size()) - 1) + 1 < layers_needed) widths.push_back(16);
  return widths;
}

ir::Plan InterleavedPlan(int p, int v, int d, int m, const std::string& schedule = "interleaved-1f1b") {
  ir::Plan plan = MlpPlan(p, d, m, schedule, Widths(p * v));
  plan.mutable_config()->set_virtual_stages(v);
  return plan;
}

// An independent transcription of Megatron-LM's forward_backward_pipelining_with_interleaving
// (megatron/core/pipeline_parallel/schedules.py), one pipeline rank's compute order:
//   total_num_microbatches = num_microbatches * num_model_chunks
//   if num_microbatches == pipeline_parallel_size: all warm-up
//   else: num_warmup = (pp_size - pp_rank - 1) * 2 + (num_model_chunks - 1) * pp_size, capped at total
//   get_model_chunk_id(k, forward): (k % (pp_size * chunks)) // pp_size, reversed for backward
//   the micro-batch of a chunk's k-th op: the ops of that chunk before it
//   warm-up forwards; steady state forward(k + num_warmup) then backward(k); cool-down backwards.
std::string MegatronOrder(int p, int chunks, int m, int rank) {
  const int total = m * chunks;
  int warmup = 0;
  if (m == p) {
    warmup = total;
  } else {
    warmup = std::min(total, (p - rank - 1) * 2 + (chunks - 1) * p);
  }
  std::vector<int> forwards_done(chunks, 0), backwards_done(chunks, 0);
  std::vector<std::string> ops;
  auto chunk_id = [&](int k, bool forward) {
    int c = (k % (p * chunks)) / p;
    return forward ? c : chunks - c - 1;
  };
  auto forward = [&](int k) {
    const int c = chunk_id(k, true);
    ops.push_back(absl::StrCat(c * p + rank, "F", forwards_done[c]++));
  };
  auto backward = [&](int k) {
    const int c = chunk_id(k, false);
    ops.push_back(absl::StrCat(c * p + rank, "B", backwards_done[c]++));
  };
  for (int k = 0; k < warmup; ++k) forward(k);
  const int remaining = total - warmup;
  for (int k = 0; k < remaining; ++k) {
    forward(k + warmup);
    backward(k);
  }
  for (int k = remaining; k < total; ++k) backward(k);
  return absl::StrJoin(ops, " ");
}

absl::StatusOr<ir::Plan> CompileIt(const ir::Plan& plan) { return Compile(plan); }

TEST(Interleaved1F1B, GoldenOrderP2V2M4) {
  auto plan = CompileIt(InterleavedPlan(2, 2, 1, 4));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(ComputeOrder(*plan, 0), "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3");
  EXPECT_EQ(ComputeOrder(*plan, 1), "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3");
  // The reference transcription gives the same golden order.
  EXPECT_EQ(MegatronOrder(2, 2, 4, 0), ComputeOrder(*plan, 0));
  EXPECT_EQ(MegatronOrder(2, 2, 4, 1), ComputeOrder(*plan, 1));
}

TEST(Interleaved1F1B, MatchesMegatronForOtherShapes) {
  struct Shape {
    int p, v, m;
  };
  for (Shape s : std::vector<Shape>{{2, 2, 2}, {2, 3, 6}, {4, 2, 4}, {4, 2, 8}, {4, 3, 8}, {4, 2, 12}, {3, 2, 9}}) {
    SCOPED_TRACE(absl::StrCat("P=", s.p, " V=", s.v, " M=", s.m));
    auto plan = CompileIt(InterleavedPlan(s.p, s.v, 1, s.m));
    ASSERT_TRUE(plan.ok()) << plan.status();
    for (int stage = 0; stage < s.p; ++stage) {
      EXPECT_EQ(ComputeOrder(*plan, stage), MegatronOrder(s.p, s.v, s.m, stage)) << "stage " << stage;
    }
  }
}

TEST(Interleaved1F1B, NeedsMicroBatchesAMultipleOfStages) {
  auto plan = CompileIt(InterleavedPlan(2, 2, 1, 3));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << plan.status();
  EXPECT_NE(plan.status().message().find("multiple"), std::string::npos) << plan.status();
  EXPECT_NE(plan.status().message().find("schedule-interleaved-1f1b"), std::string::npos) << plan.status();
}

TEST(Interleaved1F1B, OneFOneBRefusesVirtualStagesAndPointsToInterleaved) {
  auto plan = CompileIt(InterleavedPlan(2, 2, 1, 4, "1f1b"));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << plan.status();
  EXPECT_NE(plan.status().message().find("schedule-1f1b"), std::string::npos) << plan.status();
  EXPECT_NE(plan.status().message().find("use schedule interleaved-1f1b"), std::string::npos) << plan.status();
}

TEST(Interleaved1F1B, CompiledPlansVerify) {
  for (int p : {2, 4}) {
    for (int d : {1, 2}) {
      for (int m : {4, 8}) {
        SCOPED_TRACE(absl::StrCat("P=", p, " V=2 D=", d, " M=", m));
        auto plan = CompileIt(InterleavedPlan(p, 2, d, m));
        ASSERT_TRUE(plan.ok()) << plan.status();
        EXPECT_FALSE(plan->unverified());
        EXPECT_TRUE(VerifyRunnablePlan(*plan).ok()) << VerifyRunnablePlan(*plan);
        EXPECT_EQ(plan->placement().chunks_per_stage(), 2);
        ASSERT_EQ(plan->placement().virtual_stages_size(), 2 * p);
        auto grid = ir::Grid::Of(*plan);
        ASSERT_TRUE(grid.ok()) << grid.status();
        for (int v = 0; v < 2 * p; ++v) {
          EXPECT_EQ(plan->placement().virtual_stages(v).stage(), v % p);
          EXPECT_EQ(plan->placement().virtual_stages(v).chunk(), v / p);
          // The numbering MegatronOrder assumes: v = chunk * P + stage.
          EXPECT_EQ(grid->VirtualOf(v % p, v / p), v);
        }
        // The eval programs run the same placement forward-only, and verify too.
        EXPECT_EQ(plan->eval_programs_size(), p);
      }
    }
  }
}

TEST(Interleaved1F1B, BubbleAtUnitCostsIsPMinus1OverVMPlusPMinus1) {
  struct Shape {
    int p, v, m;
  };
  for (Shape s : std::vector<Shape>{{2, 2, 4}, {4, 2, 8}, {4, 3, 8}}) {
    SCOPED_TRACE(absl::StrCat("P=", s.p, " V=", s.v, " M=", s.m));
    auto plan = CompileIt(InterleavedPlan(s.p, s.v, 1, s.m));
    ASSERT_TRUE(plan.ok()) << plan.status();
    auto sim = Simulate(*plan, plan->programs(), CostModel::Unit(*plan));
    ASSERT_TRUE(sim.ok()) << sim.status();
    EXPECT_TRUE(sim->errors.empty()) << absl::StrJoin(sim->errors, "\n");
    const double want = double(s.p - 1) / (s.v * s.m + s.p - 1);
    EXPECT_NEAR(sim->bubble_fraction, want, 1e-9) << "makespan " << sim->makespan;
    // F = 1 and B = 2 per virtual stage: makespan 3 (V M + P - 1).
    EXPECT_NEAR(sim->makespan, 3.0 * (s.v * s.m + s.p - 1), 1e-9);
  }
}

}  // namespace
}  // namespace ppc::passes
