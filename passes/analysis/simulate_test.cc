#include "passes/analysis/simulate.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ir/instruction_text.h"
#include "ir/topology.h"

namespace ppc::passes {
namespace {

// Plans are built by hand here: the passes are not needed and not used.

// `stages` x `chunks` virtual stages of `layers_per_vs` Linear layers of width `width`
// each (round-robin placement), micro-batches of 2 samples, no programs yet.
ir::Plan MakePlan(int stages, int chunks, int micro_batches, int layers_per_vs = 1, int width = 4) {
  ir::Plan plan;
  ir::ModelSpec* model = plan.mutable_model();
  model->set_name("mlp");
  model->mutable_input()->add_shape(width);
  model->mutable_input()->set_dtype(ir::FLOAT32);
  model->mutable_input()->set_name("input");
  const int nv = stages * chunks;
  for (int l = 0; l < nv * layers_per_vs; ++l) {
    ir::LayerSpec* layer = model->add_layers();
    layer->set_name("fc" + std::to_string(l));
    layer->set_kind("Linear");
    (*layer->mutable_attrs())["in_features"].set_i(width);
    (*layer->mutable_attrs())["out_features"].set_i(width);
    layer->set_param_count(int64_t{width} * width + width);
    ir::TensorSpec* out = layer->add_outputs();
    out->add_shape(width);
    out->set_dtype(ir::FLOAT32);
    out->set_name(layer->name());
  }
  model->set_loss(ir::MSE);
  plan.mutable_topology()->set_num_stages(stages);
  plan.mutable_topology()->set_data_parallel(1);
  plan.mutable_config()->set_micro_batches(micro_batches);
  plan.mutable_config()->set_micro_batch_size(2);
  plan.mutable_config()->set_virtual_stages(chunks);
  for (int v = 0; v < nv; ++v) {
    ir::VirtualStage* vs = plan.mutable_placement()->add_virtual_stages();
    vs->set_begin(v * layers_per_vs);
    vs->set_end((v + 1) * layers_per_vs);
  }
  ir::Grid::RoundRobin(stages, chunks, plan.mutable_placement());
  for (int b = 0; b + 1 < nv; ++b) {
    *plan.add_boundaries()->mutable_tensors() = model->layers((b + 1) * layers_per_vs - 1).outputs();
  }
  plan.set_level(ir::LOWERED);
  return plan;
}

ir::Instruction ComputeOp(ir::ComputeKind kind, int vs, int mb, int slot) {
  ir::Instruction in;
  in.mutable_compute()->set_kind(kind);
  in.mutable_compute()->set_virtual_stage(vs);
  in.mutable_compute()->set_micro_batch(mb);
  in.mutable_compute()->set_slot(slot);
  return in;
}
ir::Instruction SendOp(ir::Direction direction, int boundary, int mb, int slot) {
  ir::Instruction in;
  in.mutable_send()->set_direction(direction);
  in.mutable_send()->set_boundary(boundary);
  in.mutable_send()->set_micro_batch(mb);
  in.mutable_send()->set_slot(slot);
  return in;
}
ir::Instruction RecvOp(ir::Direction direction, int boundary, int mb, int slot) {
  ir::Instruction in;
  in.mutable_recv()->set_direction(direction);
  in.mutable_recv()->set_boundary(boundary);
  in.mutable_recv()->set_micro_batch(mb);
  in.mutable_recv()->set_slot(slot);
  return in;
}
ir::CommRef Ref(bool send, ir::Direction direction, int boundary, int mb) {
  ir::CommRef ref;
  ref.set_send(send);
  ref.set_direction(direction);
  ref.set_boundary(boundary);
  ref.set_micro_batch(mb);
  return ref;
}
ir::Instruction WaitOp(const std::vector<ir::CommRef>& refs) {
  ir::Instruction in;
  for (const auto& r : refs) *in.mutable_wait()->add_ops() = r;
  return in;
}
ir::Instruction LoadOp(int mb, int slot, bool inputs, bool labels) {
  ir::Instruction in;
  in.mutable_load_micro_batch()->set_micro_batch(mb);
  in.mutable_load_micro_batch()->set_slot(slot);
  in.mutable_load_micro_batch()->set_inputs(inputs);
  in.mutable_load_micro_batch()->set_labels(labels);
  return in;
}
ir::Instruction ClipOp(const std::vector<int>& stages) {
  ir::Instruction in;
  in.mutable_clip_grad_norm()->set_max_norm(1.0);
  for (int s : stages) in.mutable_clip_grad_norm()->add_stages(s);
  return in;
}

struct Step {
  ir::ComputeKind kind;
  int vs, mb;
};
using Order = std::vector<std::vector<Step>>;  // per stage, its compute ops in order

// Lowers per-stage compute orders the simplest way: a compute that needs a neighbour's
// tensor posts its receive and waits for it just before; a produced tensor is sent just
// after; a stage waits for all its sends at its end. Slot of (vs, mb): chunk * M + mb.
void Lower(ir::Plan& plan, const Order& order) {
  const int p = plan.topology().num_stages(), m = plan.config().micro_batches();
  const int nv = plan.placement().virtual_stages_size(), chunks = nv / p;
  plan.clear_programs();
  for (int s = 0; s < p; ++s) {
    ir::StageProgram* prog = plan.add_programs();
    prog->set_stage(s);
    prog->set_num_slots(chunks * m);
    auto add = [&](const ir::Instruction& in) { *prog->add_instructions() = in; };
    std::vector<ir::CommRef> sends;
    for (const Step& st : order[s]) {
      const int slot = (st.vs / p) * m + st.mb;
      if (st.kind == ir::FORWARD) {
        if (st.vs == 0) add(LoadOp(st.mb, slot, true, nv == 1));
        if (st.vs == nv - 1 && nv > 1) add(LoadOp(st.mb, slot, false, true));
        if (st.vs > 0) {
          add(RecvOp(ir::ACTIVATION, st.vs - 1, st.mb, slot));
          add(WaitOp({Ref(false, ir::ACTIVATION, st.vs - 1, st.mb)}));
        }
        add(ComputeOp(st.kind, st.vs, st.mb, slot));
        if (st.vs < nv - 1) {
          add(SendOp(ir::ACTIVATION, st.vs, st.mb, slot));
          sends.push_back(Ref(true, ir::ACTIVATION, st.vs, st.mb));
        }
      } else if (st.kind == ir::BACKWARD_WEIGHT) {
        add(ComputeOp(st.kind, st.vs, st.mb, slot));
      } else {
        if (st.vs < nv - 1) {
          add(RecvOp(ir::GRADIENT, st.vs, st.mb, slot));
          add(WaitOp({Ref(false, ir::GRADIENT, st.vs, st.mb)}));
        }
        add(ComputeOp(st.kind, st.vs, st.mb, slot));
        if (st.vs > 0) {
          add(SendOp(ir::GRADIENT, st.vs - 1, st.mb, slot));
          sends.push_back(Ref(true, ir::GRADIENT, st.vs - 1, st.mb));
        }
      }
    }
    if (!sends.empty()) add(WaitOp(sends));
  }
}

Order GPipe(int p, int m) {
  Order order(p);
  for (int s = 0; s < p; ++s) {
    for (int mb = 0; mb < m; ++mb) order[s].push_back({ir::FORWARD, s, mb});
    for (int mb = 0; mb < m; ++mb) order[s].push_back({ir::BACKWARD, s, mb});
  }
  return order;
}

Order OneFOneB(int p, int m) {
  Order order(p);
  for (int s = 0; s < p; ++s) {
    const int warmup = std::min(p - s - 1, m);
    for (int mb = 0; mb < warmup; ++mb) order[s].push_back({ir::FORWARD, s, mb});
    for (int i = 0; i + warmup < m; ++i) {
      order[s].push_back({ir::FORWARD, s, warmup + i});
      order[s].push_back({ir::BACKWARD, s, i});
    }
    for (int mb = std::max(0, m - warmup); mb < m; ++mb) order[s].push_back({ir::BACKWARD, s, mb});
  }
  return order;
}

std::string Spans(const std::vector<Span>& spans) {
  std::string out;
  for (const Span& sp : spans) {
    if (!out.empty()) out += " ";
    out += sp.label + "@" + std::to_string(static_cast<int>(sp.start)) + "-" + std::to_string(static_cast<int>(sp.end));
  }
  return out;
}

absl::StatusOr<Simulation> RunUnit(const ir::Plan& plan) {
  return Simulate(plan, plan.programs(), CostModel::Unit(plan));
}

TEST(Simulate, GPipeTwoStagesUnitCosts) {
  ir::Plan plan = MakePlan(2, 1, 4);
  Lower(plan, GPipe(2, 4));
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty()) << sim->errors[0];
  // (M + P - 1) * (F + B) = 5 * 3; bubble (P - 1) / (M + P - 1).
  EXPECT_EQ(sim->makespan, 15);
  EXPECT_DOUBLE_EQ(sim->bubble_fraction, 0.2);
  EXPECT_EQ(sim->busy, std::vector<double>({12, 12}));
  EXPECT_EQ(Spans(sim->compute[0]), "0F0@0-1 0F1@1-2 0F2@2-3 0F3@3-4 0B0@7-9 0B1@9-11 0B2@11-13 0B3@13-15");
  EXPECT_EQ(Spans(sim->compute[1]), "1F0@1-2 1F1@2-3 1F2@3-4 1F3@4-5 1B0@5-7 1B1@7-9 1B2@9-11 1B3@11-13");
  EXPECT_EQ(sim->peak_live_slots, std::vector<int>({4, 4}));
  EXPECT_EQ(sim->compute[1][0].instruction, 3);  // load labels, recv, wait, compute
}

TEST(Simulate, OneFOneBTwoStagesUnitCosts) {
  ir::Plan plan = MakePlan(2, 1, 4);
  Lower(plan, OneFOneB(2, 4));
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty()) << sim->errors[0];
  EXPECT_EQ(sim->makespan, 15);
  EXPECT_DOUBLE_EQ(sim->bubble_fraction, 0.2);
  EXPECT_EQ(Spans(sim->compute[0]), "0F0@0-1 0F1@1-2 0B0@4-6 0F2@6-7 0B1@7-9 0F3@9-10 0B2@10-12 0B3@13-15");
  EXPECT_EQ(Spans(sim->compute[1]), "1F0@1-2 1B0@2-4 1F1@4-5 1B1@5-7 1F2@7-8 1B2@8-10 1F3@10-11 1B3@11-13");
  // 1F1B keeps at most P - s micro-batches in flight on stage s.
  EXPECT_EQ(sim->peak_live_slots, std::vector<int>({2, 1}));
}

TEST(Simulate, OneFOneBAndGPipeMakespanIsThreeTimesMPlusPMinusOne) {
  for (int p : {1, 2, 3, 4, 8}) {
    for (int m : {1, 2, 3, 8, 16}) {
      for (bool gpipe : {false, true}) {
        ir::Plan plan = MakePlan(p, 1, m);
        Lower(plan, gpipe ? GPipe(p, m) : OneFOneB(p, m));
        auto sim = RunUnit(plan);
        ASSERT_TRUE(sim.ok()) << sim.status();
        ASSERT_TRUE(sim->errors.empty()) << sim->errors[0];
        EXPECT_EQ(sim->makespan, 3 * (m + p - 1)) << "P=" << p << " M=" << m << " gpipe=" << gpipe;
        EXPECT_DOUBLE_EQ(sim->bubble_fraction, 1.0 - double(m) / (m + p - 1)) << "P=" << p << " M=" << m;
        for (int s = 0; s < p; ++s) {
          EXPECT_EQ(sim->peak_live_slots[s], gpipe ? m : std::min(p - s, m)) << "P=" << p << " M=" << m;
        }
      }
    }
  }
}

TEST(Simulate, TwoChunksPerStage) {
  // Virtual stages 0..3 round-robin on 2 stages: 0, 2 on stage 0; 1, 3 on stage 1.
  ir::Plan plan = MakePlan(2, 2, 2);
  Order order(2);
  for (int s = 0; s < 2; ++s) {
    for (int vs : {s, s + 2})
      for (int mb = 0; mb < 2; ++mb) order[s].push_back({ir::FORWARD, vs, mb});
    for (int vs : {s + 2, s})
      for (int mb = 0; mb < 2; ++mb) order[s].push_back({ir::BACKWARD, vs, mb});
  }
  Lower(plan, order);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty()) << sim->errors[0];
  EXPECT_EQ(sim->makespan, 15);
  EXPECT_DOUBLE_EQ(sim->bubble_fraction, 0.2);
  EXPECT_EQ(Spans(sim->compute[0]), "0F0@0-1 0F1@1-2 2F0@2-3 2F1@3-4 2B0@7-9 2B1@9-11 0B0@11-13 0B1@13-15");
  EXPECT_EQ(Spans(sim->compute[1]), "1F0@1-2 1F1@2-3 3F0@3-4 3F1@4-5 3B0@5-7 3B1@7-9 1B0@9-11 1B1@11-13");
  EXPECT_EQ(sim->peak_live_slots, std::vector<int>({4, 4}));
}

TEST(Simulate, SplitBackwardCostsInputAndWeightGradients) {
  // Zero-bubble style on 2 stages, M=1: stage 1 runs I then W; stage 0's I needs only
  // stage 1's I.
  ir::Plan plan = MakePlan(2, 1, 1);
  Order order(2);
  for (int s = 0; s < 2; ++s) {
    order[s] = {{ir::FORWARD, s, 0}, {ir::BACKWARD_INPUT, s, 0}, {ir::BACKWARD_WEIGHT, s, 0}};
  }
  Lower(plan, order);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty()) << sim->errors[0];
  EXPECT_EQ(Spans(sim->compute[0]), "0F0@0-1 0I0@3-4 0W0@4-5");
  EXPECT_EQ(Spans(sim->compute[1]), "1F0@1-2 1I0@2-3 1W0@3-4");
  EXPECT_EQ(sim->makespan, 5);
}

TEST(Simulate, ReportsASendReceiveOrderMismatch) {
  ir::Plan plan = MakePlan(2, 1, 2);
  Order order = {{{ir::FORWARD, 0, 0}, {ir::FORWARD, 0, 1}}, {{ir::FORWARD, 1, 1}, {ir::FORWARD, 1, 0}}};
  Lower(plan, order);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_EQ(sim->errors.size(), 1u);
  EXPECT_EQ(sim->errors[0],
            "stage 0 -> stage 1 transfer 0: stage 0 sends send/activation/0/0 but stage 1's receive 0 is "
            "recv/activation/0/1");
}

TEST(Simulate, ReportsADeadlockOnAReceiveNeverSent) {
  ir::Plan plan = MakePlan(2, 1, 1);
  ir::StageProgram* p0 = plan.add_programs();
  p0->set_stage(0);
  *p0->add_instructions() = ComputeOp(ir::FORWARD, 0, 0, 0);
  ir::StageProgram* p1 = plan.add_programs();
  p1->set_stage(1);
  *p1->add_instructions() = RecvOp(ir::ACTIVATION, 0, 0, 0);
  *p1->add_instructions() = WaitOp({Ref(false, ir::ACTIVATION, 0, 0)});
  *p1->add_instructions() = ComputeOp(ir::FORWARD, 1, 0, 0);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_EQ(sim->errors.size(), 1u);
  EXPECT_EQ(sim->errors[0],
            "deadlock: no stage can proceed:\n"
            "    stage 1 instruction 1 (wait ops=[recv/activation/0/0]) waits for stage 0 to post "
            "send/activation/0/0");
  EXPECT_EQ(sim->makespan, 1);
  EXPECT_EQ(sim->compute[1].size(), 0u);
}

TEST(Simulate, ReportsADeadlockOnASendNeverReceived) {
  // Rendezvous: waiting on a send blocks until the peer posts the receive.
  ir::Plan plan = MakePlan(2, 1, 1);
  ir::StageProgram* p0 = plan.add_programs();
  p0->set_stage(0);
  *p0->add_instructions() = ComputeOp(ir::FORWARD, 0, 0, 0);
  *p0->add_instructions() = SendOp(ir::ACTIVATION, 0, 0, 0);
  *p0->add_instructions() = WaitOp({Ref(true, ir::ACTIVATION, 0, 0)});
  plan.add_programs()->set_stage(1);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_EQ(sim->errors.size(), 1u);
  EXPECT_EQ(sim->errors[0],
            "deadlock: no stage can proceed:\n"
            "    stage 0 instruction 2 (wait ops=[send/activation/0/0]) waits for stage 1 to post "
            "recv/activation/0/0");
}

TEST(Simulate, ReportsAnUnmatchedSendThatIsNeverWaitedFor) {
  ir::Plan plan = MakePlan(2, 1, 1);
  ir::StageProgram* p0 = plan.add_programs();
  p0->set_stage(0);
  *p0->add_instructions() = SendOp(ir::ACTIVATION, 0, 0, 0);
  plan.add_programs()->set_stage(1);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_EQ(sim->errors.size(), 1u);
  EXPECT_EQ(sim->errors[0],
            "stage 0 -> stage 1: stage 0's send 0 (send/activation/0/0) has no matching receive on stage 1");
}

TEST(Simulate, ClipGradNormJoinsTheStagesClocks) {
  ir::Plan plan = MakePlan(2, 1, 4);
  ir::StageProgram* p0 = plan.add_programs();
  p0->set_stage(0);
  *p0->add_instructions() = ComputeOp(ir::FORWARD, 0, 0, 0);
  *p0->add_instructions() = ClipOp({0, 1});
  *p0->add_instructions() = ComputeOp(ir::FORWARD, 0, 1, 0);
  ir::StageProgram* p1 = plan.add_programs();
  p1->set_stage(1);
  for (int mb = 0; mb < 3; ++mb) *p1->add_instructions() = ComputeOp(ir::FORWARD, 1, mb, 0);
  *p1->add_instructions() = ClipOp({0, 1});
  *p1->add_instructions() = ComputeOp(ir::BACKWARD, 1, 3, 0);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty()) << sim->errors[0];
  EXPECT_EQ(Spans(sim->compute[0]), "0F0@0-1 0F1@3-4");
  EXPECT_EQ(Spans(sim->compute[1]), "1F0@0-1 1F1@1-2 1F2@2-3 1B3@3-5");
  EXPECT_EQ(sim->makespan, 5);
  EXPECT_EQ(sim->busy, std::vector<double>({2, 5}));
  EXPECT_DOUBLE_EQ(sim->bubble_fraction, 1.0 - 7.0 / 10.0);
}

TEST(Simulate, ReportsACollectiveThatAStageNeverReaches) {
  ir::Plan plan = MakePlan(2, 1, 1);
  ir::StageProgram* p0 = plan.add_programs();
  p0->set_stage(0);
  *p0->add_instructions() = ClipOp({0, 1});
  ir::StageProgram* p1 = plan.add_programs();
  p1->set_stage(1);
  ir::Instruction tied;
  tied.mutable_reduce_tied_grads()->set_tie_key("emb");
  tied.mutable_reduce_tied_grads()->add_stages(0);
  tied.mutable_reduce_tied_grads()->add_stages(1);
  *p1->add_instructions() = tied;
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_EQ(sim->errors.size(), 1u);
  EXPECT_EQ(sim->errors[0],
            "deadlock: no stage can proceed:\n"
            "    stage 0 instruction 0 (clip_grad_norm max_norm=1 stages=[0,1]) needs stage 1 at the same collective\n"
            "    stage 1 instruction 0 (reduce_tied_grads tie_key=\"emb\" stages=[0,1]) needs stage 0 at the same "
            "collective");
}

TEST(Simulate, TransferCostDelaysTheReceiver) {
  ir::Plan plan = MakePlan(2, 1, 1);
  Lower(plan, {{{ir::FORWARD, 0, 0}}, {{ir::FORWARD, 1, 0}}});
  CostModel costs = CostModel::Unit(plan);
  costs.latency = 0.5;
  auto sim = Simulate(plan, plan.programs(), costs);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty()) << sim->errors[0];
  ASSERT_EQ(sim->compute[1].size(), 1u);
  EXPECT_EQ(sim->compute[1][0].start, 1.5);
  EXPECT_EQ(sim->compute[1][0].end, 2.5);
  EXPECT_EQ(sim->makespan, 2.5);
  // Bytes: 2 samples x 4 float32 = 32; at 1/32 time unit per byte one more unit.
  EXPECT_EQ(TransferBytes(plan, ir::ACTIVATION, 0), 32);
  costs.seconds_per_byte = 1.0 / 32;
  sim = Simulate(plan, plan.programs(), costs);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_EQ(sim->compute[1][0].start, 2.5);
  EXPECT_EQ(sim->makespan, 3.5);
}

TEST(Simulate, TransferBytesCountsOnlyFloatGradients) {
  ir::Plan plan = MakePlan(2, 1, 1);
  ir::TensorSpec* ids = plan.mutable_boundaries(0)->add_tensors();
  ids->add_shape(3);
  ids->set_dtype(ir::INT64);
  EXPECT_EQ(TransferBytes(plan, ir::ACTIVATION, 0), 2 * (4 * 4 + 3 * 8));
  EXPECT_EQ(TransferBytes(plan, ir::GRADIENT, 0), 2 * 4 * 4);
  EXPECT_EQ(TransferBytes(plan, ir::GRADIENT, 1), 0);
}

TEST(Simulate, RefusesMalformedPrograms) {
  ir::Plan plan = MakePlan(2, 1, 1);
  ir::StageProgram* p0 = plan.add_programs();
  p0->set_stage(0);
  *p0->add_instructions() = WaitOp({Ref(false, ir::GRADIENT, 0, 0)});
  plan.add_programs()->set_stage(1);
  auto sim = RunUnit(plan);
  EXPECT_EQ(sim.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(sim.status().message()),
            "stage 0 instruction 0 (wait ops=[recv/gradient/0/0]): waits for recv/gradient/0/0, which stage 0 has "
            "not posted before");

  *p0->mutable_instructions(0) = ComputeOp(ir::FORWARD, 1, 0, 0);
  sim = RunUnit(plan);
  EXPECT_EQ(std::string(sim.status().message()),
            "stage 0 instruction 0 (compute kind=FORWARD vs=1 mb=0 slot=0): virtual stage 1 runs on stage 1");

  *p0->mutable_instructions(0) = RecvOp(ir::ACTIVATION, 0, 0, 0);
  sim = RunUnit(plan);
  EXPECT_EQ(std::string(sim.status().message()),
            "stage 0 instruction 0 (recv direction=ACTIVATION boundary=0 mb=0 slot=0): virtual stage 1 receives "
            "this transfer but runs on stage 1");

  plan.mutable_programs()->RemoveLast();
  sim = RunUnit(plan);
  EXPECT_EQ(std::string(sim.status().message()), "simulate: 1 programs for 2 pipeline stages");

  CostModel bad = CostModel::Unit(plan);
  bad.forward.pop_back();
  EXPECT_EQ(Simulate(plan, plan.programs(), bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Simulate, EmptyProgramsHaveNoMakespan) {
  ir::Plan plan = MakePlan(3, 1, 1);
  for (int s = 0; s < 3; ++s) plan.add_programs()->set_stage(s);
  auto sim = RunUnit(plan);
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty());
  EXPECT_EQ(sim->makespan, 0);
  EXPECT_EQ(sim->bubble_fraction, 0);
  EXPECT_EQ(sim->busy, std::vector<double>({0, 0, 0}));
}

TEST(CostModel, UnitCosts) {
  ir::Plan plan = MakePlan(2, 2, 1);
  CostModel c = CostModel::Unit(plan);
  EXPECT_EQ(c.forward, std::vector<double>({1, 1, 1, 1}));
  EXPECT_EQ(c.backward, std::vector<double>({2, 2, 2, 2}));
  EXPECT_EQ(c.backward_input, std::vector<double>({1, 1, 1, 1}));
  EXPECT_EQ(c.backward_weight, std::vector<double>({1, 1, 1, 1}));
  EXPECT_EQ(c.latency, 0);
  EXPECT_EQ(c.seconds_per_byte, 0);
}

TEST(CostModel, FromPlanSumsMeasuredAndEstimatedLayerCosts) {
  // Two virtual stages of two layers each: 20 parameters, 4 outputs, 2 samples.
  ir::Plan plan = MakePlan(2, 1, 1, /*layers_per_vs=*/2);
  plan.mutable_model()->mutable_layers(2)->set_forward_cost(5);
  plan.mutable_model()->mutable_layers(3)->set_backward_cost(7);
  auto c = CostModel::FromPlan(plan);
  ASSERT_TRUE(c.ok()) << c.status();
  const double est = (2 * 20 + 4) * 2;  // 88
  EXPECT_EQ(c->forward, std::vector<double>({2 * est, 5 + est}));
  EXPECT_EQ(c->backward, std::vector<double>({4 * est, 10 + 7}));
  EXPECT_EQ(c->backward_input, std::vector<double>({2 * est, 8.5}));
  EXPECT_EQ(c->backward_weight, std::vector<double>({2 * est, 8.5}));

  plan.mutable_model()->mutable_layers(0)->clear_outputs();
  EXPECT_EQ(CostModel::FromPlan(plan).status().code(), absl::StatusCode::kFailedPrecondition);
  plan.clear_placement();
  EXPECT_EQ(CostModel::FromPlan(plan).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Simulate, LargeOneFOneBIsFast) {
  const int p = 64, m = 512;
  ir::Plan plan = MakePlan(p, 1, m);
  Lower(plan, OneFOneB(p, m));
  const CostModel costs = CostModel::Unit(plan);
  auto start = std::chrono::steady_clock::now();
  auto sim = Simulate(plan, plan.programs(), costs);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(sim.ok()) << sim.status();
  EXPECT_TRUE(sim->errors.empty());
  EXPECT_EQ(sim->makespan, 3 * (m + p - 1));
  start = std::chrono::steady_clock::now();
  SimulateOptions options;
  options.record_spans = false;
  auto quiet = Simulate(plan, plan.programs(), costs, options);
  const double quiet_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(quiet.ok());
  EXPECT_EQ(quiet->makespan, sim->makespan);
  int64_t instructions = 0;
  for (const auto& prog : plan.programs()) instructions += prog.instructions_size();
  std::cout << "P=" << p << " M=" << m << " 1F1B, " << instructions << " instructions: " << seconds << " s with spans, "
            << quiet_seconds << " s without\n";
  EXPECT_LT(seconds, 2.0);  // generous for sanitizer builds; about 0.03 s optimized
}

}  // namespace
}  // namespace ppc::passes
