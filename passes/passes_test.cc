// Property tests of the schedules, buffers and the verifier's negative cases.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ir/instruction_text.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "passes/analysis/timeline.h"
#include "passes/analysis/verifier.h"
#include "passes/registry.h"
#include "passes/test_util.h"

namespace ppc::passes {
namespace {

ir::Plan MustCompile(ir::Plan plan) {
  auto out = Compile(std::move(plan));
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : ir::Plan();
}

TEST(Schedule1F1B, MatchesDeepSpeedTrainScheduleOrder) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 4, "1f1b"));
  EXPECT_EQ(ComputeOrder(plan, 0), "F0 F1 B0 F2 B1 F3 B2 B3");
  EXPECT_EQ(ComputeOrder(plan, 1), "F0 B0 F1 B1 F2 B2 F3 B3");
}

TEST(ScheduleGPipe, AllForwardsThenAllBackwards) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 3, "gpipe"));
  EXPECT_EQ(ComputeOrder(plan, 0), "F0 F1 F2 B0 B1 B2");
  EXPECT_EQ(ComputeOrder(plan, 1), "F0 F1 F2 B0 B1 B2");
}

TEST(AssignBuffers, LiveActivationsPerStage) {
  for (int p : {2, 4}) {
    for (int m : {1, 2, 3, 8}) {
      ir::Plan one = MustCompile(MlpPlan(p, 1, m, "1f1b", {16, 16, 16, 16, 16}));
      ir::Plan gp = MustCompile(MlpPlan(p, 1, m, "gpipe", {16, 16, 16, 16, 16}));
      for (int s = 0; s < p; ++s) {
        EXPECT_EQ(one.programs(s).num_slots(), std::min(p - s, m)) << "1f1b P=" << p << " M=" << m << " s=" << s;
        EXPECT_EQ(gp.programs(s).num_slots(), m) << "gpipe P=" << p << " M=" << m << " s=" << s;
      }
    }
  }
}

TEST(Timeline, BubbleFractionOf1F1BIsPMinus1OverMPlusPMinus1) {
  ir::Plan plan = MustCompile(MlpPlan(4, 1, 8, "1f1b", {16, 16, 16, 16, 16}));
  auto t = SimulateTimeline(plan);
  ASSERT_TRUE(t.ok()) << t.status();
  // Unit costs F=1, B=2: makespan (M + P - 1) * 3, bubble (P-1)/(M+P-1).
  EXPECT_EQ(t->makespan, (8 + 3) * 3);
  EXPECT_NEAR(t->bubble_fraction, 3.0 / 11.0, 1e-9);
  // Stage 0 sends 8 activations of [2,16] float32 per step.
  EXPECT_EQ(t->stages[0].bytes_sent, 8 * 2 * 16 * 4);
  EXPECT_EQ(t->stages[0].num_slots, 4);
  std::string chart = RenderTimeline(*t);
  EXPECT_EQ(chart.substr(0, 20), "stage 0  |F0|F1|F2|F") << chart;
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

TEST(DefaultPipeline, NamesEveryLoweringStep) {
  ir::TrainingConfig c;
  c.set_schedule("gpipe");
  c.set_partition_method("uniform");
  EXPECT_EQ(*DefaultPipeline(c),
            "infer-shapes,partition{method=uniform},schedule-gpipe,assign-buffers,insert-loads,insert-p2p,"
            "insert-grad-reduction,lower-eval");
  c.set_schedule("zigzag");
  EXPECT_NE(DefaultPipeline(c).status().message().find("unknown schedule 'zigzag'"), std::string::npos);
}

TEST(Registry, IsAlphabetical) {
  const auto& passes = GlobalPassRegistry().passes();
  ASSERT_GE(passes.size(), 10u);
  for (size_t i = 1; i < passes.size(); ++i) EXPECT_LT(passes[i - 1].name, passes[i].name);
}

TEST(Partition, ReportsStagesWithoutLayers) {
  auto out = RunPipeline(MlpPlan(3, 1, 1, "1f1b"), "infer-shapes,partition{method=explicit:4:4}");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("leaves stage 1 without layers"), std::string::npos) << out.status();
  auto bad_regex = RunPipeline(MlpPlan(2, 1, 1, "1f1b"), "infer-shapes,partition{method=type:conv}");
  EXPECT_NE(bad_regex.status().message().find("matches no layer kind"), std::string::npos) << bad_regex.status();
}

// Rewrites stage `s` of a compiled plan from assembly lines.
void SetProgram(ir::Plan& plan, int s, const std::vector<std::string>& lines) {
  auto* prog = plan.mutable_programs(s);
  prog->clear_instructions();
  for (const auto& l : lines) {
    auto in = ir::ParseInstruction(l);
    ASSERT_TRUE(in.ok()) << l;
    *prog->add_instructions() = *in;
  }
}

// Index of the first instruction on stage s whose text starts with `prefix`.
int Find(const ir::Plan& plan, int s, const std::string& prefix) {
  const auto& ins = plan.programs(s).instructions();
  for (int i = 0; i < ins.size(); ++i)
    if (ir::PrintInstruction(ins[i]).rfind(prefix, 0) == 0) return i;
  return -1;
}

void Erase(ir::Plan& plan, int s, int index) {
  auto* ins = plan.mutable_programs(s)->mutable_instructions();
  ins->erase(ins->begin() + index);
}

std::string VerifyMessage(const ir::Plan& plan) {
  absl::Status s = VerifyPlan(plan);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  return std::string(s.message());
}

TEST(Verifier, AcceptsEveryCompiledSchedule) {
  for (const char* s : {"1f1b", "gpipe", "inference"}) {
    for (int p : {1, 2, 4}) {
      for (int d : {1, 2}) {
        auto plan = Compile(MlpPlan(p, d, 5, s));
        EXPECT_TRUE(plan.ok()) << s << " P=" << p << " D=" << d << ": " << plan.status();
      }
    }
  }
}

TEST(Verifier, RejectsASendWithoutReceive) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  int i = Find(plan, 1, "recv_activation mb=1");
  ASSERT_GE(i, 0);
  Erase(plan, 1, i);
  std::string msg = VerifyMessage(plan);
  EXPECT_NE(msg.find("stage 0 instruction"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no matching recv_activation on stage 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("waits for recv_activation mb=1 which was not posted before"), std::string::npos) << msg;
}

TEST(Verifier, RejectsMismatchedShapes) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 1, "1f1b"));
  int i = Find(plan, 1, "recv_activation mb=0");
  plan.mutable_programs(1)->mutable_instructions(i)->mutable_recv_activation()->set_shape(1, 31);
  std::string msg = VerifyMessage(plan);
  EXPECT_NE(msg.find("stage 1 instruction " + std::to_string(i)), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not match the stage boundary FLOAT32[2,32]"), std::string::npos) << msg;
}

TEST(Verifier, FindsACycleOfWaits) {
  // Both stages wait for the other's data before posting their own: a deadlock that
  // blocking transports would hang on.
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 1, "1f1b"));
  const std::string act = "shape=[2,32] dtype=FLOAT32";
  SetProgram(plan, 0, {"load_micro_batch mb=0 slot=0 inputs=true labels=false",
                       "recv_grad mb=0 chunk=0 slot=0 peer=1 " + act, "wait ops=[recv_grad/0/0]",
                       "forward mb=0 chunk=0 slot=0", "send_activation mb=0 chunk=0 slot=0 peer=1 " + act,
                       "backward mb=0 chunk=0 slot=0 part=FULL", "wait ops=[send_activation/0/0]", "optimizer_step"});
  std::string msg = VerifyMessage(plan);
  EXPECT_NE(msg.find("deadlock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stage 0 instruction 2 (wait ops=[recv_grad/0/0]) needs stage 1 to post send_grad mb=0"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("stage 1 instruction 2 (wait ops=[recv_activation/0/0]) needs stage 0 to post send_activation"),
            std::string::npos)
      << msg;
}

TEST(Verifier, RejectsOverwritingALiveBuffer) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  // Stage 0 holds micro-batches 0 and 1 in slots 0 and 1; force both into slot 0.
  plan.mutable_programs(0)->set_num_slots(1);
  for (auto& in : *plan.mutable_programs(0)->mutable_instructions()) {
    if (in.has_forward()) in.mutable_forward()->set_slot(0);
    if (in.has_backward()) in.mutable_backward()->set_slot(0);
    if (in.has_load_micro_batch()) in.mutable_load_micro_batch()->set_slot(0);
    if (in.has_send_activation()) in.mutable_send_activation()->set_slot(0);
    if (in.has_recv_grad()) in.mutable_recv_grad()->set_slot(0);
  }
  std::string msg = VerifyMessage(plan);
  EXPECT_NE(msg.find("overwrites slot 0 with micro-batch 1 while micro-batch 0 still needs it"), std::string::npos)
      << msg;
}

TEST(Verifier, RejectsBackwardBeforeForwardAndMissingMicroBatches) {
  ir::Plan plan = MustCompile(MlpPlan(1, 1, 2, "1f1b"));
  SetProgram(plan, 0, {"backward mb=0 chunk=0 slot=0 part=FULL", "load_micro_batch mb=0 slot=0 inputs=true labels=true",
                       "forward mb=0 chunk=0 slot=0", "optimizer_step"});
  std::string msg = VerifyMessage(plan);
  EXPECT_NE(msg.find("stage 0 instruction 0 (backward mb=0 chunk=0 slot=0 part=FULL): backward of micro-batch 0 "
                     "before its forward"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("micro-batch 1 is never forwarded"), std::string::npos) << msg;
}

TEST(Verifier, RejectsOptimizerStepBeforeBackwardAndMissingReduction) {
  ir::Plan plan = MustCompile(MlpPlan(1, 2, 1, "1f1b"));
  SetProgram(plan, 0, {"load_micro_batch mb=0 slot=0 inputs=true labels=true", "forward mb=0 chunk=0 slot=0",
                       "optimizer_step", "backward mb=0 chunk=0 slot=0 part=FULL"});
  std::string msg = VerifyMessage(plan);
  EXPECT_NE(msg.find("optimizer step before the backward at instruction 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gradients are never reduced"), std::string::npos) << msg;
}

TEST(Verifier, ChecksTheZeroStage1Lowering) {
  ir::Plan zero = MlpPlan(2, 2, 2, "1f1b");
  zero.mutable_config()->set_zero_stage(1);
  ir::Plan plan = MustCompile(zero);
  EXPECT_GE(Find(plan, 1, "optimizer_step sharded=true"), 0);
  const int gather = Find(plan, 1, "gather_params chunk=0");
  ASSERT_EQ(gather, plan.programs(1).instructions_size() - 1) << "gather_params ends the step";
  // Without the gather the replicas' parameters would diverge.
  ir::Plan no_gather = plan;
  Erase(no_gather, 1, gather);
  std::string msg = VerifyMessage(no_gather);
  EXPECT_NE(msg.find("sharded optimizer step is never followed by GatherParams"), std::string::npos) << msg;
  // An unsharded step under ZeRO-1, and a sharded one (with its gather) without ZeRO.
  ir::Plan unsharded = plan;
  unsharded.mutable_programs(0)->mutable_instructions(Find(plan, 0, "optimizer_step"))->mutable_optimizer_step()->set_sharded(false);
  msg = VerifyMessage(unsharded);
  EXPECT_NE(msg.find("must be sharded (config.zero_stage 1 with data_parallel > 1)"), std::string::npos) << msg;
  // A gather with no sharded step before it.
  ir::Plan early = plan;
  auto* ins = early.mutable_programs(1)->mutable_instructions();
  std::swap(*ins->Mutable(gather), *ins->Mutable(gather - 1));
  msg = VerifyMessage(early);
  EXPECT_NE(msg.find("gathers parameters without a sharded optimizer step before it"), std::string::npos) << msg;
  ir::Plan stage0 = plan;
  stage0.mutable_config()->set_zero_stage(0);
  msg = VerifyMessage(stage0);
  EXPECT_NE(msg.find("is sharded but config.zero_stage is 0 or data_parallel is 1"), std::string::npos) << msg;
  ir::Plan stage2 = plan;
  stage2.mutable_config()->set_zero_stage(2);
  msg = VerifyMessage(stage2);
  EXPECT_NE(msg.find("config.zero_stage is 2; it must be in [0, 1]"), std::string::npos) << msg;
  // D = 1: nothing to shard over, so ZeRO-1 lowers to a plain step.
  ir::Plan one = MlpPlan(2, 1, 2, "1f1b");
  one.mutable_config()->set_zero_stage(1);
  ir::Plan single = MustCompile(one);
  EXPECT_GE(Find(single, 0, "optimizer_step sharded=false"), 0);
  EXPECT_LT(Find(single, 0, "gather_params"), 0);
}

TEST(Verifier, ChecksTheEvalPrograms) {
  ir::Plan plan = MustCompile(MlpPlan(2, 2, 3, "1f1b"));
  ASSERT_EQ(plan.eval_programs_size(), 2);
  std::string order;
  for (const auto& in : plan.eval_programs(1).instructions()) {
    EXPECT_FALSE(in.has_backward() || in.has_optimizer_step() || in.has_reduce_grads()) << ir::PrintInstruction(in);
    if (in.has_forward()) absl::StrAppend(&order, "F", in.forward().micro_batch(), " ");
  }
  EXPECT_EQ(order, "F0 F1 F2 ");
  // An inference plan needs none: its programs already are forward-only.
  EXPECT_EQ(MustCompile(MlpPlan(2, 1, 2, "inference")).eval_programs_size(), 0);
  ir::Plan missing = plan;
  auto* ins = missing.mutable_eval_programs(1)->mutable_instructions();
  for (int i = 0; i < ins->size(); ++i) {
    if (ins->Get(i).has_forward() && ins->Get(i).forward().micro_batch() == 2) {
      ins->erase(ins->begin() + i);
      break;
    }
  }
  std::string msg = VerifyMessage(missing);
  EXPECT_NE(msg.find("eval programs: stage 1: micro-batch 2 is never forwarded"), std::string::npos) << msg;
  // Eval programs must be as lowered as the training programs: without their receives
  // the last stage would forward nothing.
  ir::Plan unlowered = plan;
  auto* last = unlowered.mutable_eval_programs(1)->mutable_instructions();
  last->erase(std::remove_if(last->begin(), last->end(),
                             [](const ir::Instruction& in) { return in.has_recv_activation() || in.has_wait(); }),
              last->end());
  auto* first = unlowered.mutable_eval_programs(0)->mutable_instructions();
  first->erase(std::remove_if(first->begin(), first->end(),
                              [](const ir::Instruction& in) { return in.has_send_activation() || in.has_wait(); }),
               first->end());
  msg = VerifyMessage(unlowered);
  EXPECT_NE(msg.find("eval programs: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("activation of micro-batch 0 from stage 0 was not received and waited for"), std::string::npos)
      << msg;
  ir::Plan training = plan;
  *training.mutable_eval_programs(0)->add_instructions() = *ir::ParseInstruction("backward mb=0 chunk=0 slot=0 part=FULL");
  msg = VerifyMessage(training);
  EXPECT_NE(msg.find("eval stage 0 instruction"), std::string::npos) << msg;
  EXPECT_NE(msg.find("an eval program must be forward-only"), std::string::npos) << msg;
}

TEST(Verifier, RejectsOutOfRangeIndices) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  int i = Find(plan, 0, "forward mb=1");
  plan.mutable_programs(0)->mutable_instructions(i)->mutable_forward()->set_micro_batch(7);
  std::string msg = VerifyMessage(plan);
  EXPECT_NE(msg.find("micro-batch 7 is out of range [0, 2)"), std::string::npos) << msg;
}

// The structural rules the compiler's verifier and the runtime's load share
// (ir/plan_check.h): what a red-team pass found accepted with a default in its place.
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

TEST(PlanStructure, RefusesAScheduleTheCompilerDoesNotKnow) {
  ir::Plan plan = MustCompile(MlpPlan(2, 1, 2, "1f1b"));
  plan.mutable_config()->set_schedule("zzz");
  ExpectRefused(Structure(plan), "config.schedule 'zzz' is not one of 1f1b, data-parallel, gpipe, inference");
  ExpectRefused(VerifyPlan(plan), "config.schedule 'zzz'");
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

}  // namespace
}  // namespace ppc::passes

namespace ppc::passes {
namespace {

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
  EXPECT_EQ(by_params->partition().stages(1).begin(), 17);
  EXPECT_EQ(by_flops->partition().stages(1).begin(), 7);
}

}  // namespace
}  // namespace ppc::passes
