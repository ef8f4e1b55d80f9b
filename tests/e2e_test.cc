// End-to-end correctness contract (README.md): training with any schedule, partition
// and topology gives the same per-step losses and final weights, to float32 rounding,
// as training the unpartitioned model in one process with the same global batch.
// Real processes: each run is `pprun PLAN --nproc N` over Gloo on loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "ir/plan_io.h"
#include "passes/registry.h"
#include "passes/test_util.h"
#include "tests/pprun_util.h"

extern char** environ;

namespace ppc {
namespace {

using e2e::CompileTo;
using e2e::Exec;
using e2e::kPprun;
using e2e::RunResult;
using e2e::Tmp;

const char kModel[] = "examples/mlp/mlp.textproto";
constexpr int kSteps = 10;
constexpr int kMicroBatchSize = 4;

ir::Plan MlpPlan(int stages, int dp, int micro_batches, const std::string& schedule, const std::string& optimizer) {
  ir::Plan plan;
  EXPECT_TRUE(ir::ParseTextProtoFile(kModel, plan.mutable_model()).ok());
  plan.mutable_topology()->set_num_stages(stages);
  plan.mutable_topology()->set_data_parallel(dp);
  auto* c = plan.mutable_config();
  c->set_micro_batches(micro_batches);
  c->set_micro_batch_size(kMicroBatchSize);
  c->set_schedule(schedule);
  c->set_seed(1138);
  c->set_steps(kSteps);
  c->mutable_optimizer()->set_type(optimizer);
  c->mutable_optimizer()->set_lr(optimizer == "sgd" ? 0.2 : 0.01);
  c->mutable_optimizer()->set_momentum(optimizer == "sgd" ? 0.9 : 0);
  return plan;
}

RunResult Train(const std::string& plan_path, int nproc, const std::string& name) {
  return e2e::Pprun(plan_path, nproc, name);
}

void ExpectSameTraining(const RunResult& ref, const RunResult& got, double loss_rtol, double weight_tol) {
  ASSERT_EQ(got.exit_code, 0) << got.output;
  ASSERT_EQ(got.losses.size(), static_cast<size_t>(kSteps)) << got.output;
  for (int i = 0; i < kSteps; ++i) {
    EXPECT_NEAR(got.losses[i], ref.losses[i], loss_rtol * std::abs(ref.losses[i])) << "step " << i + 1;
  }
  ASSERT_EQ(got.weights.size(), ref.weights.size()) << "every layer's parameters must be written once";
  for (const auto& [name, want] : ref.weights) {
    auto it = got.weights.find(name);
    ASSERT_NE(it, got.weights.end()) << name;
    ASSERT_EQ(it->second.size(), want.size()) << name;
    double worst = 0;
    for (size_t k = 0; k < want.size(); ++k) worst = std::max(worst, double(std::abs(it->second[k] - want[k])));
    EXPECT_LE(worst, weight_tol) << name;
  }
}

class Equivalence : public ::testing::TestWithParam<std::tuple<std::string, int, int>> {};

TEST_P(Equivalence, SameLossesAndWeightsAsOneProcess) {
  auto [schedule, stages, dp] = GetParam();
  constexpr int kMicroBatches = 4;
  std::string tag = absl::StrCat(schedule, "_p", stages, "_d", dp);
  // Reference: one process, the same global batch as D replicas x M micro-batches.
  RunResult ref = Train(CompileTo(MlpPlan(1, 1, kMicroBatches * dp, "1f1b", "sgd"), "ref_" + tag), 1, "ref_" + tag);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ASSERT_EQ(ref.losses.size(), static_cast<size_t>(kSteps));
  EXPECT_LT(ref.losses.back(), ref.losses.front()) << "training should make progress";
  RunResult got = Train(CompileTo(MlpPlan(stages, dp, kMicroBatches, schedule, "sgd"), tag), stages * dp, tag);
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Schedules, Equivalence,
                         ::testing::Combine(::testing::Values("1f1b", "gpipe"), ::testing::Values(2, 4),
                                            ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return absl::StrCat(std::get<0>(info.param), "_P", std::get<1>(info.param), "_D",
                                               std::get<2>(info.param));
                         });

// Megatron's interleaved 1F1B: V virtual stages per stage, round-robin.
class Interleaved : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(Interleaved, SameLossesAndWeightsAsOneProcess) {
  auto [stages, dp] = GetParam();
  constexpr int kMicroBatches = 4;
  const std::string tag = absl::StrCat("interleaved_p", stages, "_d", dp);
  RunResult ref = Train(CompileTo(MlpPlan(1, 1, kMicroBatches * dp, "1f1b", "sgd"), "ref_" + tag), 1, "ref_" + tag);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ir::Plan plan = MlpPlan(stages, dp, kMicroBatches, "interleaved-1f1b", "sgd");
  plan.mutable_config()->set_virtual_stages(2);
  plan.mutable_config()->set_partition_method("uniform");
  RunResult got = Train(CompileTo(plan, tag), stages * dp, tag);
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(VirtualStages, Interleaved,
                         ::testing::Combine(::testing::Values(2, 4), ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return absl::StrCat("P", std::get<0>(info.param), "_V2_D", std::get<1>(info.param));
                         });

// The zero-bubble schedules in real processes over Gloo: split backward everywhere, and
// for ZB-V and DualPipeV the V placement, whose turn hands tensors over inside the last
// rank. P = 4 and more micro-batch counts run in tests/interpreter_test.cc.
class ZeroBubble : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ZeroBubble, SameLossesAndWeightsAsOneProcess) {
  auto [schedule, dp] = GetParam();
  constexpr int kStages = 2, kMicroBatches = 4;
  const std::string tag = absl::StrCat(schedule, "_p2_d", dp);
  RunResult ref = Train(CompileTo(MlpPlan(1, 1, kMicroBatches * dp, "1f1b", "sgd"), "ref_" + tag), 1, "ref_" + tag);
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ir::Plan plan = MlpPlan(kStages, dp, kMicroBatches, schedule, "sgd");
  plan.mutable_config()->set_partition_method("uniform");
  RunResult got = Train(CompileTo(plan, tag), kStages * dp, tag);
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Schedules, ZeroBubble,
                         ::testing::Combine(::testing::Values("zb-h1", "zb-v", "dualpipev"), ::testing::Values(1, 2)),
                         [](const auto& info) {
                           std::string name = absl::StrCat(std::get<0>(info.param), "_P2_D", std::get<1>(info.param));
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

// A residual block whose skip branch crosses stage boundaries: two tensors per boundary
// (the block's main branch and the skip), and at P=3 one of them twice over.
TEST(Equivalence, TensorsThatCrossStagesInGroupsMatchOneProcess) {
  auto plan = [](int stages, const std::string& partition) {
    ir::Plan p = MlpPlan(stages, 1, 4, "1f1b", "sgd");
    p.clear_model();
    EXPECT_TRUE(ir::ParseTextProtoFile("tests/testdata/residual_mlp.textproto", p.mutable_model()).ok());
    if (!partition.empty()) p.mutable_config()->set_partition_method(partition);
    return p;
  };
  RunResult ref = Train(CompileTo(plan(1, ""), "res_ref"), 1, "res_ref");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  EXPECT_LT(ref.losses.back(), ref.losses.front());
  // Layers: 0 fc_in, 1 skip (Fork), 2 fc_a, 3 act_a, 4 fc_b, 5 add (Add), 6 head.
  ir::Plan two = plan(2, "explicit:3");  // boundary {fc_a, skip}
  auto compiled = passes::Compile(two);
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  ASSERT_EQ(compiled->boundaries(0).tensors_size(), 2);
  EXPECT_EQ(compiled->boundaries(0).tensors(1).name(), "skip");
  ExpectSameTraining(ref, Train(CompileTo(two, "res_p2"), 2, "res_p2"), 1e-5, 1e-5);
  // Boundaries {fc_in, skip} (one tensor twice, forked) and {act_a, skip}.
  ExpectSameTraining(ref, Train(CompileTo(plan(3, "explicit:2:4"), "res_p3"), 3, "res_p3"), 1e-5, 1e-5);
}

TEST(Equivalence, DataParallelScheduleMatchesOneProcess) {
  RunResult ref = Train(CompileTo(MlpPlan(1, 1, 6, "1f1b", "sgd"), "dp_ref"), 1, "dp_ref");
  RunResult got = Train(CompileTo(MlpPlan(1, 2, 3, "data-parallel", "sgd"), "dp"), 2, "dp");
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
}

TEST(Equivalence, AdamWithPipelineMatchesOneProcess) {
  RunResult ref = Train(CompileTo(MlpPlan(1, 1, 4, "1f1b", "adam"), "adam_ref"), 1, "adam_ref");
  RunResult got = Train(CompileTo(MlpPlan(2, 1, 4, "1f1b", "adam"), "adam_p2"), 2, "adam_p2");
  // Adam divides by sqrt(v): gradients that differ in the last bit move weights by
  // up to ~lr * 1e-6 per step.
  ExpectSameTraining(ref, got, 1e-5, 1e-4);
}

TEST(Equivalence, TiedEmbeddingAcrossStagesMatchesOneProcess) {
  auto plan = [](int stages, int dp, int m) {
    ir::Plan p = MlpPlan(stages, dp, m, "1f1b", "sgd");
    p.clear_model();
    EXPECT_TRUE(ir::ParseTextProtoFile("tests/testdata/tied_lm.textproto", p.mutable_model()).ok());
    p.mutable_config()->set_partition_method(stages == 2 ? "explicit:3" : "parameters");
    p.mutable_config()->mutable_optimizer()->set_lr(0.5);
    return p;
  };
  RunResult ref = Train(CompileTo(plan(1, 1, 4), "tied_ref"), 1, "tied_ref");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  EXPECT_LT(ref.losses.back(), ref.losses.front());
  RunResult got = Train(CompileTo(plan(2, 1, 4), "tied_p2"), 2, "tied_p2");
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
  // Both copies of the tied weight were trained identically.
  EXPECT_EQ(got.weights.at("layer0.weight.f32"), got.weights.at("layer4.weight.f32"));
  RunResult dp = Train(CompileTo(plan(2, 2, 2), "tied_p2d2"), 4, "tied_p2d2");
  ExpectSameTraining(ref, dp, 1e-5, 1e-5);
}

TEST(Equivalence, GradientClippingMatchesOneProcess) {
  auto plan = [](int stages, int dp, int m, double clip) {
    ir::Plan p = MlpPlan(stages, dp, m, "1f1b", "sgd");
    p.mutable_config()->set_gradient_clipping(clip);
    return p;
  };
  RunResult ref = Train(CompileTo(plan(1, 1, 4, 0.05), "clip_ref"), 1, "clip_ref");
  RunResult unclipped = Train(CompileTo(plan(1, 1, 4, 0), "clip_none"), 1, "clip_none");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  // The clip is active: training differs from unclipped training after step 1.
  EXPECT_EQ(ref.losses[0], unclipped.losses[0]);
  EXPECT_GT(std::abs(ref.losses[3] - unclipped.losses[3]), 1e-4);
  RunResult got = Train(CompileTo(plan(2, 2, 2, 0.05), "clip_p2d2"), 4, "clip_p2d2");
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
  RunResult p4 = Train(CompileTo(plan(4, 1, 4, 0.05), "clip_p4"), 4, "clip_p4");
  ExpectSameTraining(ref, p4, 1e-5, 1e-5);
}

TEST(Equivalence, ClippingCountsATiedWeightOnce) {
  auto plan = [](int stages) {
    ir::Plan p = MlpPlan(stages, 1, 4, "1f1b", "sgd");
    p.clear_model();
    EXPECT_TRUE(ir::ParseTextProtoFile("tests/testdata/tied_lm.textproto", p.mutable_model()).ok());
    p.mutable_config()->set_partition_method(stages == 2 ? "explicit:3" : "parameters");
    p.mutable_config()->mutable_optimizer()->set_lr(0.5);
    p.mutable_config()->set_gradient_clipping(0.1);
    return p;
  };
  RunResult ref = Train(CompileTo(plan(1), "tiedclip_ref"), 1, "tiedclip_ref");
  RunResult got = Train(CompileTo(plan(2), "tiedclip_p2"), 2, "tiedclip_p2");
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
}

TEST(Equivalence, ActivationCheckpointingMatchesOneProcess) {
  RunResult ref = Train(CompileTo(MlpPlan(1, 1, 4, "1f1b", "sgd"), "ckpt_ref"), 1, "ckpt_ref");
  for (int interval : {1, 3}) {
    ir::Plan p = MlpPlan(2, 1, 4, "1f1b", "sgd");
    p.mutable_config()->set_activation_checkpoint_interval(interval);
    std::string tag = absl::StrCat("ckpt_", interval);
    RunResult got = Train(CompileTo(p, tag), 2, tag);
    SCOPED_TRACE(tag);
    ExpectSameTraining(ref, got, 1e-5, 1e-5);
  }
}

TEST(Equivalence, MseLossMatchesOneProcess) {
  auto plan = [](int stages) {
    ir::Plan p = MlpPlan(stages, 1, 4, "gpipe", "sgd");
    p.mutable_model()->set_loss(ir::MSE);
    // MSE targets have the output's shape: the MLP's head gives 10 values.
    p.mutable_model()->mutable_label()->clear_shape();
    p.mutable_model()->mutable_label()->add_shape(10);
    p.mutable_model()->mutable_label()->set_dtype(ir::FLOAT32);
    p.mutable_config()->mutable_optimizer()->set_lr(0.05);
    return p;
  };
  RunResult ref = Train(CompileTo(plan(1), "mse_ref"), 1, "mse_ref");
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  EXPECT_LT(ref.losses.back(), ref.losses.front());
  RunResult got = Train(CompileTo(plan(2), "mse_p2"), 2, "mse_p2");
  ExpectSameTraining(ref, got, 1e-5, 1e-5);
}

// A free loopback port (another process could take it before use; tests accept that).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

TEST(Pprun, RunsUnderATorchrunStyleLauncher) {
  // Each rank is its own pprun process reading RANK, WORLD_SIZE, LOCAL_RANK,
  // MASTER_ADDR and MASTER_PORT; rank 0 hosts the store.
  std::string plan = CompileTo(MlpPlan(2, 1, 4, "1f1b", "sgd"), "torchrun");
  RunResult launched = Train(plan, 2, "torchrun_ref");
  ASSERT_EQ(launched.exit_code, 0) << launched.output;
  const int port = FreePort();
  std::string metrics = Tmp("torchrun.metrics");
  std::string cmd;
  for (int r = 1; r >= 0; --r) {
    absl::StrAppend(&cmd, "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 RANK=", r, " LOCAL_RANK=", r,
                    " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=", port, " ", kPprun, " ", plan,
                    " --quiet --timeout-s 60 --metrics-out ", metrics, r == 1 ? " > /dev/null 2>&1 & " : " ");
  }
  absl::StrAppend(&cmd, "; rc=$?; wait; exit $rc");
  RunResult r = Exec({"bash", "-c", cmd});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(metrics);
  std::string line;
  std::vector<double> losses;
  while (std::getline(in, line)) losses.push_back(std::stod(std::vector<std::string>(absl::StrSplit(line, ' '))[1]));
  EXPECT_EQ(losses, launched.losses);
}

TEST(Pprun, RefusesAMismatchedWorldSize) {
  std::string plan = CompileTo(MlpPlan(2, 1, 2, "1f1b", "sgd"), "world");
  RunResult r = Exec({kPprun, plan, "--nproc", "3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("the plan needs 2 ranks (2 stages x 1 data-parallel), --nproc is 3"), std::string::npos)
      << r.output;
  RunResult env = Exec({kPprun, plan}, {{"RANK", "0"}, {"WORLD_SIZE", "3"}, {"MASTER_PORT", "1"}});
  EXPECT_NE(env.exit_code, 0);
  EXPECT_NE(env.output.find("WORLD_SIZE is 3"), std::string::npos) << env.output;
}

TEST(Pprun, RefusesAPlanEditedAfterCompilation) {
  std::string path = CompileTo(MlpPlan(1, 1, 2, "1f1b", "sgd"), "edited");
  auto plan = ir::LoadPlan(path);
  plan->mutable_config()->set_micro_batch_size(99);
  ASSERT_TRUE(ir::SavePlan(*plan, path).ok());
  RunResult r = Exec({kPprun, path, "--nproc", "1"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("does not match its contents"), std::string::npos) << r.output;
}

TEST(Pprun, ReportsEveryProblemAtOnceAndRunsNothingUnverified) {
  std::string path = CompileTo(MlpPlan(1, 1, 2, "1f1b", "sgd"), "broken");
  auto plan = ir::LoadPlan(path);
  auto* prog = plan->mutable_programs(0);
  prog->mutable_instructions(1)->mutable_compute()->set_slot(5);
  prog->mutable_instructions(2)->mutable_compute()->set_micro_batch(9);
  ir::Instruction* wait = prog->add_instructions();
  wait->mutable_wait()->add_ops()->set_direction(ir::GRADIENT);  // no boundary at P = 1
  ir::Stamp(*plan);  // a consistent stamp: only the rules can catch it
  ASSERT_TRUE(ir::SavePlan(*plan, path).ok());
  RunResult r = Exec({kPprun, path, "--nproc", "1"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("the verifier rejects the plan, so it does not run"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stage 0 instruction 1 (compute kind=FORWARD vs=0 mb=0 slot=5): slot 5 is out of range [0, 1)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("instruction 2 (compute kind=BACKWARD vs=0 mb=9"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("waits for a transfer that cannot exist"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("step:"), std::string::npos) << "no rank may start";
  // --allow-unverified skips the verifier but not the structural rules of the load.
  RunResult allowed = Exec({kPprun, path, "--nproc", "1", "--allow-unverified"});
  EXPECT_NE(allowed.exit_code, 0);
  EXPECT_NE(allowed.output.find("cannot load the plan"), std::string::npos) << allowed.output;
  EXPECT_NE(allowed.output.find("slot 5 is out of range [0, 1)"), std::string::npos) << allowed.output;
}

TEST(Pprun, ADeadPeerGivesAClearErrorNotAHang) {
  std::string plan = CompileTo(MlpPlan(2, 1, 4, "1f1b", "sgd"), "dead");
  auto start = std::chrono::steady_clock::now();
  // Rank 1 (stage 1) exits abruptly at the start of step 3.
  RunResult r = Exec({kPprun, plan, "--nproc", "2", "--steps", "5", "--timeout-s", "5"},
                    {{"PPRUN_FAULT_INJECT", "1:3"}});
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(seconds, 30);
  // Rank 0 names itself, its stage, the step, the instruction and the peer.
  EXPECT_NE(r.output.find("pprun: rank 0: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 0 stage 0 step 3 instruction"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("peer stage 1 rank 1"), std::string::npos) << r.output;
}

TEST(Pprun, InferencePlanReportsTheForwardLoss) {
  // A two-stage inference plan reports the same forward loss as a one-stage inference
  // plan (same initial weights and data, dropout off), every step.
  ir::Plan inf = MlpPlan(2, 1, 2, "inference", "sgd");
  RunResult r = Train(CompileTo(inf, "inference"), 2, "inference");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(r.losses.size(), static_cast<size_t>(kSteps));
  ir::Plan one = MlpPlan(1, 1, 2, "inference", "sgd");
  RunResult ref = Train(CompileTo(one, "inference_ref"), 1, "inference_ref");
  for (int i = 0; i < kSteps; ++i) EXPECT_NEAR(r.losses[i], ref.losses[i], 1e-5 * ref.losses[i]);
  // No optimizer step: the weights are the initial ones, so step losses differ only by data.
  EXPECT_NE(r.losses[0], r.losses[1]);
  EXPECT_GT(r.losses[0], 1.0);
}

}  // namespace
}  // namespace ppc
