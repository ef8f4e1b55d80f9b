// The zero-bubble orders (passes/schedule/zero_bubble.h): torch's own orders as golden
// files, validity for every shape the checks accept (order rules, then lowered and
// simulated), the bubble and memory claims at unit costs, and the checks' refusals.
//
// Plans are built here by hand (layers, placement, boundary table), then scheduled,
// given slots and lowered by the real passes: the V placement needs no partition pass.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "ir/instruction_text.h"
#include "ir/plan_io.h"
#include "ir/topology.h"
#include "passes/analysis/simulate.h"
#include "passes/analysis/verifier.h"
#include "passes/lower/assign_buffers.h"
#include "passes/lower/lower.h"
#include "passes/schedule/schedule.h"
#include "passes/schedule/zero_bubble.h"

namespace ppc::passes {
namespace {

enum class Sched { kZbH1, kZbV, kDualPipeV, kOneFOneB };

struct Schedule {
  const char* name;  // config.schedule
  StageOrder order;
  ScheduleCheck check;
  bool v_layout;
};

Schedule Get(Sched s) {
  switch (s) {
    case Sched::kZbH1:
      return {"zb-h1", ZbH1Order, ZbH1Shape, false};
    case Sched::kZbV:
      return {"zb-v", ZbVOrder, ZbVShape, true};
    case Sched::kDualPipeV:
      return {"dualpipev", DualPipeVOrder, DualPipeVShape, true};
    case Sched::kOneFOneB:
      break;
  }
  return {"1f1b", OneFOneBOrder, OneChunk, false};
}

ir::Grid GridFor(int p, bool v_layout) {
  return v_layout ? ir::Grid(p, 1, 2, ir::Grid::Layout::kV) : ir::Grid(p, 1, 1);
}

std::string Label(const ComputeOp& op) {
  return absl::StrCat(op.virtual_stage, ir::ComputeLetter(op.kind), op.micro_batch);
}

std::string Text(const std::vector<ComputeOp>& ops) {
  std::vector<std::string> labels;
  for (const ComputeOp& op : ops) labels.push_back(Label(op));
  return absl::StrJoin(labels, " ");
}

// ---------------------------------------------------------------------------------
// Golden files: "# ..." comment lines (the first says where the order came from), then
// "stage R: <action> ..." per rank, an action in torch's _Action repr: "<vs><F|I|B|W><mb>"
// or an overlapped pair "(<vs>F<mb>;<vs>B<mb>)OVERLAP_F_B".

struct Golden {
  std::vector<std::string> comments;
  std::vector<std::vector<std::string>> stages;  // per rank, its actions as written
};

Golden ReadGolden(const std::string& name) {
  Golden g;
  auto text = ir::ReadFile("passes/testdata/orders/" + name);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return g;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) {
      g.comments.emplace_back(line);
      continue;
    }
    const std::string prefix = absl::StrCat("stage ", g.stages.size(), ": ");
    EXPECT_TRUE(absl::StartsWith(line, prefix)) << name << ": '" << line << "' should start with '" << prefix << "'";
    line.remove_prefix(std::min(line.size(), prefix.size()));
    g.stages.push_back(absl::StrSplit(line, ' ', absl::SkipEmpty()));
  }
  return g;
}

// One action as the compute ops it stands for: an OVERLAP_F_B as its two sub-actions in
// order (forward, then backward), back to back.
std::vector<std::string> Expand(const std::string& action) {
  absl::string_view a = action;
  if (absl::ConsumePrefix(&a, "(") && absl::ConsumeSuffix(&a, ")OVERLAP_F_B")) return absl::StrSplit(a, ';');
  return {action};
}

struct GoldenCase {
  const char* file;
  const char* torch_class;
  Sched sched;
  int p, m;
};

const GoldenCase kGolden[] = {
    {"zb_h1_p2_m4.txt", "ScheduleInterleavedZeroBubble", Sched::kZbH1, 2, 4},
    {"zb_h1_p4_m8.txt", "ScheduleInterleavedZeroBubble", Sched::kZbH1, 4, 8},
    {"zb_h1_p4_m3.txt", "ScheduleInterleavedZeroBubble", Sched::kZbH1, 4, 3},
    {"zb_v_p2_m4.txt", "ScheduleZBVZeroBubble", Sched::kZbV, 2, 4},
    {"zb_v_p4_m8.txt", "ScheduleZBVZeroBubble", Sched::kZbV, 4, 8},
    {"zb_v_p3_m2.txt", "ScheduleZBVZeroBubble", Sched::kZbV, 3, 2},
    {"zb_v_p3_m9.txt", "ScheduleZBVZeroBubble", Sched::kZbV, 3, 9},
    {"dualpipev_p2_m4.txt", "ScheduleDualPipeV", Sched::kDualPipeV, 2, 4},
    {"dualpipev_p4_m8.txt", "ScheduleDualPipeV", Sched::kDualPipeV, 4, 8},
    {"dualpipev_p3_m7.txt", "ScheduleDualPipeV", Sched::kDualPipeV, 3, 7},
    {"dualpipev_p4_m10.txt", "ScheduleDualPipeV", Sched::kDualPipeV, 4, 10},
};

TEST(ZeroBubbleOrder, EqualsTorchGoldenOrders) {
  for (const GoldenCase& c : kGolden) {
    SCOPED_TRACE(c.file);
    const Golden g = ReadGolden(c.file);
    ASSERT_FALSE(g.comments.empty());
    EXPECT_TRUE(absl::StartsWith(g.comments[0], absl::StrCat("# generated from torch.distributed.pipelining.",
                                                             c.torch_class, " (pytorch commit ")))
        << g.comments[0];
    EXPECT_TRUE(absl::StrContains(g.comments[0], absl::StrCat(c.p, " ranks and ", c.m, " micro-batches")))
        << g.comments[0];
    ASSERT_EQ(g.stages.size(), static_cast<size_t>(c.p));
    const Schedule s = Get(c.sched);
    const ir::Grid grid = GridFor(c.p, s.v_layout);
    ASSERT_TRUE(s.check(grid, c.m).ok()) << s.check(grid, c.m);
    for (int r = 0; r < c.p; ++r) {
      std::vector<std::string> want;
      for (const std::string& action : g.stages[r]) {
        for (const std::string& op : Expand(action)) want.push_back(op);
      }
      EXPECT_EQ(Text(s.order(grid, r, c.m)), absl::StrJoin(want, " ")) << "stage " << r;
    }
  }
}

// Torch's OVERLAP_F_B pairs a forward with a FULL backward (B, not I) of the other
// chunk; the order has them back to back.
TEST(ZeroBubbleOrder, DualPipeVOverlapsAForwardWithAFullBackward) {
  int overlaps = 0;
  for (const GoldenCase& c : kGolden) {
    if (c.sched != Sched::kDualPipeV) continue;
    for (const auto& stage : ReadGolden(c.file).stages) {
      for (const std::string& action : stage) {
        std::vector<std::string> ops = Expand(action);
        if (ops.size() == 1) continue;
        ++overlaps;
        ASSERT_EQ(ops.size(), 2u) << action;
        EXPECT_TRUE(absl::StrContains(ops[0], "F")) << action;
        EXPECT_TRUE(absl::StrContains(ops[1], "B")) << action;
      }
    }
  }
  EXPECT_GT(overlaps, 0);
}

// ---------------------------------------------------------------------------------
// Validity of an order, from the ops alone.

// Each (virtual stage, micro-batch) of the stage: one F, then one B or one I followed
// later by one W; every op on a virtual stage of this stage and a micro-batch in range.
std::string CheckOrderRules(const ir::Grid& grid, int stage, int m, const std::vector<ComputeOp>& ops) {
  std::map<std::pair<int, int>, std::string> seen;  // (vs, mb) -> kinds so far, e.g. "FI"
  for (size_t i = 0; i < ops.size(); ++i) {
    const ComputeOp& op = ops[i];
    const std::string where = absl::StrCat("op ", i, " (", Label(op), "): ");
    if (op.virtual_stage < 0 || op.virtual_stage >= grid.virtual_stages() || grid.StageOf(op.virtual_stage) != stage) {
      return where + "virtual stage not on this stage";
    }
    if (op.micro_batch < 0 || op.micro_batch >= m) return where + "micro-batch out of range";
    std::string& kinds = seen[{op.virtual_stage, op.micro_batch}];
    const std::string k = ir::ComputeLetter(op.kind);
    const bool ok =
        (k == "F" && kinds.empty()) || ((k == "B" || k == "I") && kinds == "F") || (k == "W" && kinds == "FI");
    if (!ok) return absl::StrCat(where, "after '", kinds, "'");
    kinds += k;
  }
  for (int c = 0; c < grid.chunks(); ++c) {
    for (int mb = 0; mb < m; ++mb) {
      const int v = grid.VirtualOf(stage, c);
      auto it = seen.find({v, mb});
      const std::string kinds = it == seen.end() ? "" : it->second;
      if (kinds != "FB" && kinds != "FIW") return absl::StrCat(v, "/", mb, ": ran '", kinds, "'");
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------
// Plans: `p` stages x `chunks` virtual stages (V placement when v_layout) of
// `layers_per_vs` Linear layers each, micro-batches of 2 samples.

ir::Plan MakePlan(int p, int chunks, bool v_layout, int m, const std::string& schedule, int layers_per_vs = 1) {
  constexpr int kWidth = 4;
  ir::Plan plan;
  ir::ModelSpec* model = plan.mutable_model();
  model->set_name("mlp");
  model->mutable_input()->add_shape(kWidth);
  model->mutable_input()->set_dtype(ir::FLOAT32);
  model->mutable_input()->set_name("input");
  const int nv = p * chunks;
  for (int l = 0; l < nv * layers_per_vs; ++l) {
    ir::LayerSpec* layer = model->add_layers();
    layer->set_name(absl::StrCat("fc", l));
    layer->set_kind("Linear");
    (*layer->mutable_attrs())["in_features"].set_i(kWidth);
    (*layer->mutable_attrs())["out_features"].set_i(kWidth);
    layer->set_param_count(int64_t{kWidth} * kWidth + kWidth);
    ir::TensorSpec* out = layer->add_outputs();
    out->add_shape(kWidth);
    out->set_dtype(ir::FLOAT32);
    out->set_name(layer->name());
  }
  model->set_loss(ir::MSE);
  plan.mutable_topology()->set_num_stages(p);
  plan.mutable_topology()->set_data_parallel(1);
  plan.mutable_config()->set_micro_batches(m);
  plan.mutable_config()->set_micro_batch_size(2);
  plan.mutable_config()->set_virtual_stages(chunks);
  plan.mutable_config()->set_schedule(schedule);
  plan.mutable_config()->mutable_optimizer()->set_type("sgd");
  plan.mutable_config()->mutable_optimizer()->set_lr(0.1);
  for (int v = 0; v < nv; ++v) {
    ir::VirtualStage* vs = plan.mutable_placement()->add_virtual_stages();
    vs->set_begin(v * layers_per_vs);
    vs->set_end((v + 1) * layers_per_vs);
  }
  if (v_layout) {
    ir::Grid::VShape(p, plan.mutable_placement());
  } else {
    ir::Grid::RoundRobin(p, chunks, plan.mutable_placement());
  }
  for (int b = 0; b + 1 < nv; ++b) {
    *plan.add_boundaries()->mutable_tensors() = model->layers((b + 1) * layers_per_vs - 1).outputs();
  }
  return plan;
}

// Schedule, assign slots, lower, verify (which also simulates).
absl::StatusOr<ir::Plan> Lowered(Sched sched, int p, int m, int layers_per_vs = 1) {
  const Schedule s = Get(sched);
  ir::Module module = ir::ToModule(MakePlan(p, s.v_layout ? 2 : 1, s.v_layout, m, s.name, layers_per_vs));
  SchedulePass schedule(absl::StrCat("schedule-", s.name), s.order, s.check);
  if (absl::Status st = schedule.Run(module); !st.ok()) return st;
  if (absl::Status st = AssignBuffers().Run(module); !st.ok()) return st;
  if (absl::Status st = Lower().Run(module); !st.ok()) return st;
  if (absl::Status st = VerifyPlan(module); !st.ok()) return st;
  return ir::ToPlan(module);
}

Simulation SimulateUnit(const ir::Plan& plan) {
  auto sim = Simulate(plan, plan.programs(), CostModel::Unit(plan));
  EXPECT_TRUE(sim.ok()) << sim.status();
  if (!sim.ok()) return {};
  EXPECT_TRUE(sim->errors.empty()) << absl::StrJoin(sim->errors, "\n");
  return *sim;
}

std::vector<int> Ms(Sched sched, int p) {
  std::set<int> ms;
  for (int m = 1; m <= 2 * p + 3; ++m) ms.insert(m);
  ms.insert(3 * p);
  ms.insert(4 * p);
  ms.insert(4 * p + 1);
  std::vector<int> out;
  const Schedule s = Get(sched);
  for (int m : ms)
    if (s.check(GridFor(p, s.v_layout), m).ok()) out.push_back(m);
  return out;
}

TEST(ZeroBubbleOrder, EveryAcceptedShapeIsValidAndRuns) {
  for (Sched sched : {Sched::kZbH1, Sched::kZbV, Sched::kDualPipeV}) {
    const Schedule s = Get(sched);
    for (int p = 1; p <= 6; ++p) {
      const std::vector<int> ms = Ms(sched, p);
      EXPECT_FALSE(ms.empty()) << s.name << " P=" << p;
      for (int m : ms) {
        SCOPED_TRACE(absl::StrCat(s.name, " P=", p, " M=", m));
        const ir::Grid grid = GridFor(p, s.v_layout);
        for (int r = 0; r < p; ++r) {
          const std::vector<ComputeOp> ops = s.order(grid, r, m);
          EXPECT_EQ(CheckOrderRules(grid, r, m, ops), "") << "stage " << r << ": " << Text(ops);
        }
        auto plan = Lowered(sched, p, m);
        ASSERT_TRUE(plan.ok()) << plan.status();
        EXPECT_EQ(plan->level(), ir::LOWERED);
        SimulateUnit(*plan);
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// Bubbles and memory at unit costs (F = 1, I = 1, W = 1, B = 2 per virtual stage).

TEST(ZeroBubbleOrder, ZbH1BubbleIsAboutAThirdOf1F1B) {
  for (auto [p, m] : std::vector<std::pair<int, int>>{{4, 8}, {2, 4}, {4, 16}, {6, 12}, {6, 24}}) {
    SCOPED_TRACE(absl::StrCat("P=", p, " M=", m));
    auto zb = Lowered(Sched::kZbH1, p, m);
    auto base = Lowered(Sched::kOneFOneB, p, m);
    ASSERT_TRUE(zb.ok()) << zb.status();
    ASSERT_TRUE(base.ok()) << base.status();
    const Simulation z = SimulateUnit(*zb), b = SimulateUnit(*base);
    // 1F1B (B = 2): makespan 3 (M + P - 1), bubble (P - 1) / (M + P - 1).
    EXPECT_NEAR(b.makespan, 3.0 * (m + p - 1), 1e-9);
    EXPECT_NEAR(b.bubble_fraction, double(p - 1) / (m + p - 1), 1e-9);
    // ZB-H1: every stage ends at 3M + P - 1, idle P - 1 in all (the paper's
    // (P - 1)(T_F + T_I - T_W)): bubble (P - 1) / (3M + P - 1), which is
    // (M + P - 1) / (3M + P - 1) of 1F1B's: 11/27 = 0.407 at P = 4, M = 8 (0.111 against
    // 0.273), tending to 1/3 as M grows.
    EXPECT_NEAR(z.makespan, 3.0 * m + p - 1, 1e-9);
    EXPECT_NEAR(z.bubble_fraction, double(p - 1) / (3 * m + p - 1), 1e-9);
    EXPECT_NEAR(z.bubble_fraction / b.bubble_fraction, double(m + p - 1) / (3 * m + p - 1), 1e-9);
    if (p == 4 && m == 8) {
      EXPECT_LE(z.bubble_fraction, 0.41 * b.bubble_fraction);
    }
    EXPECT_LE(z.bubble_fraction, 0.42 * b.bubble_fraction);
  }
}

// ZB-V at F = I = W = 1 per chunk: each stage r computes without a gap from time r (when
// micro-batch 0 reaches it) for 6M, torch's "parallelogram"; the only idle time is the
// fill, r at the start of stage r and P - 1 - r at its end. Bubble (P - 1) / (6M + P - 1):
// 0.059 at P = 4, M = 8, under 1/13 at M = 2P, under 0.04 from M = 4P.
TEST(ZeroBubbleOrder, ZbVBubbleIsOnlyThePipelineFill) {
  for (int p : {2, 3, 4, 6}) {
    for (int m : {2 * p, 2 * p + 1, 4 * p, 8 * p}) {
      SCOPED_TRACE(absl::StrCat("P=", p, " M=", m));
      auto zbv = Lowered(Sched::kZbV, p, m);
      ASSERT_TRUE(zbv.ok()) << zbv.status();
      const Simulation z = SimulateUnit(*zbv);
      EXPECT_NEAR(z.makespan, 6.0 * m + p - 1, 1e-9);
      EXPECT_NEAR(z.bubble_fraction, double(p - 1) / (6 * m + p - 1), 1e-9);
      EXPECT_LT(z.bubble_fraction, 1.0 / 13);
      if (m >= 4 * p) {
        EXPECT_LT(z.bubble_fraction, 0.04);
      }
      ASSERT_EQ(z.compute.size(), static_cast<size_t>(p));
      for (int r = 0; r < p; ++r) {
        ASSERT_FALSE(z.compute[r].empty());
        EXPECT_NEAR(z.compute[r].front().start, r, 1e-9) << "stage " << r;
        EXPECT_NEAR(z.compute[r].back().end - z.compute[r].front().start, z.busy[r], 1e-9)
            << "stage " << r << " has a gap";
      }
      // Against the same model in 1F1B (P stages, each chunk half a stage: the fractions
      // do not depend on the unit) and ZB-H1.
      auto base = Lowered(Sched::kOneFOneB, p, m, 2);
      auto h1 = Lowered(Sched::kZbH1, p, m, 2);
      ASSERT_TRUE(base.ok() && h1.ok());
      EXPECT_LT(z.bubble_fraction, SimulateUnit(*h1).bubble_fraction);
      EXPECT_LT(z.bubble_fraction, SimulateUnit(*base).bubble_fraction / 4);
    }
  }
}

// DualPipeV's gain is overlapping one micro-batch's forward with another's backward
// (communication under compute), which the simulator does not model: the pair runs as
// F then B. At these unit costs it idles P - 1 per stage, as ZB-V.
TEST(ZeroBubbleOrder, DualPipeVBubbleAtUnitCosts) {
  for (int p : {2, 3, 4, 6}) {
    for (int m : {2 * p, 4 * p}) {
      SCOPED_TRACE(absl::StrCat("P=", p, " M=", m));
      auto plan = Lowered(Sched::kDualPipeV, p, m);
      ASSERT_TRUE(plan.ok()) << plan.status();
      const Simulation d = SimulateUnit(*plan);
      EXPECT_NEAR(d.makespan, 6.0 * m + p - 1, 1e-9);
      EXPECT_NEAR(d.bubble_fraction, double(p - 1) / (6 * m + p - 1), 1e-9);
    }
  }
}

// Memory as the simulator counts it: peak_live_slots, a slot being one (virtual stage,
// micro-batch) from its F (or the receive before it) to its W or B. An I keeps the slot
// (W needs the saved inputs), so ZB's deferred W's hold memory.
//
// ZB-H1 (one chunk of 2 layers per stage) against 1F1B on the same plan: 1F1B holds
// min(P - s, M) on stage s; ZB-H1 holds min(P, M) on every stage. Equal on stage 0, the
// largest, so the peak over the stages is 1F1B's (the paper's claim: the first worker
// does not exceed 1F1B, all workers hold P micro-batches in flight); the later stages
// hold more than under 1F1B.
TEST(ZeroBubbleOrder, ZbH1PeakMemoryIs1F1BsPeak) {
  for (int p : {2, 3, 4, 6}) {
    for (int m : {p - 1, p, 2 * p, 4 * p}) {
      if (m < 1) continue;
      SCOPED_TRACE(absl::StrCat("P=", p, " M=", m));
      auto zb = Lowered(Sched::kZbH1, p, m, 2);
      auto base = Lowered(Sched::kOneFOneB, p, m, 2);
      ASSERT_TRUE(zb.ok() && base.ok());
      const std::vector<int> z = SimulateUnit(*zb).peak_live_slots, b = SimulateUnit(*base).peak_live_slots;
      ASSERT_EQ(z.size(), static_cast<size_t>(p));
      ASSERT_EQ(b.size(), static_cast<size_t>(p));
      for (int s = 0; s < p; ++s) {
        EXPECT_EQ(b[s], std::min(p - s, m)) << "1F1B stage " << s;
        EXPECT_EQ(z[s], std::min(p, m)) << "ZB-H1 stage " << s;
      }
      EXPECT_EQ(z[0], b[0]);
      EXPECT_EQ(*std::max_element(z.begin(), z.end()), *std::max_element(b.begin(), b.end()));
    }
  }
}

// ZB-V and DualPipeV split the model (2P layers) into 2P chunks of 1 layer, 1F1B into P
// stages of 2: a ZB-V slot holds half of a 1F1B slot (equal layer widths). In whole-stage
// units ZB-V holds P on every stage (2P chunk slots), 1F1B's peak (its stage 0), balanced
// over the stages; DualPipeV holds 2P + 1 chunk slots, half a stage more than that.
TEST(ZeroBubbleOrder, VSchedulesPeakMemoryAgainst1F1B) {
  for (int p : {2, 3, 4, 6}) {
    for (int m : {2 * p, 4 * p}) {
      SCOPED_TRACE(absl::StrCat("P=", p, " M=", m));
      auto base = Lowered(Sched::kOneFOneB, p, m, 2);
      auto zbv = Lowered(Sched::kZbV, p, m, 1);
      auto dpv = Lowered(Sched::kDualPipeV, p, m, 1);
      ASSERT_TRUE(base.ok() && zbv.ok() && dpv.ok());
      const std::vector<int> b = SimulateUnit(*base).peak_live_slots;
      const std::vector<int> z = SimulateUnit(*zbv).peak_live_slots, d = SimulateUnit(*dpv).peak_live_slots;
      const int base_peak = *std::max_element(b.begin(), b.end());  // whole stages
      EXPECT_EQ(base_peak, p);
      for (int s = 0; s < p; ++s) {
        EXPECT_EQ(z[s], 2 * p) << "ZB-V stage " << s;  // chunk slots
        EXPECT_LE(z[s], 2 * base_peak) << "ZB-V stage " << s << " holds more than 1F1B's peak";
        EXPECT_EQ(d[s], 2 * p + 1) << "DualPipeV stage " << s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// Refusals.

TEST(ZeroBubbleOrder, ChecksRefuseUnsupportedShapes) {
  auto expect_refused = [](const absl::Status& st, const std::string& needle) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), needle)) << st;
  };
  expect_refused(ZbH1Shape(ir::Grid(4, 1, 2), 8), "one virtual stage per stage");
  expect_refused(ZbH1Shape(ir::Grid(4, 1, 2, ir::Grid::Layout::kV), 8), "one virtual stage per stage");
  EXPECT_TRUE(ZbH1Shape(ir::Grid(4, 1, 1), 1).ok());

  expect_refused(ZbVShape(ir::Grid(4, 1, 1), 8), "V placement");
  expect_refused(ZbVShape(ir::Grid(4, 1, 2), 8), "V placement");  // round-robin
  expect_refused(ZbVShape(ir::Grid(4, 1, 3), 8), "V placement");
  EXPECT_TRUE(ZbVShape(ir::Grid(4, 1, 2, ir::Grid::Layout::kV), 1).ok());

  expect_refused(DualPipeVShape(ir::Grid(4, 1, 2), 8), "V placement");
  expect_refused(DualPipeVShape(ir::Grid(4, 1, 2, ir::Grid::Layout::kV), 7), "micro_batches >= 2 x num_stages (8");
  EXPECT_TRUE(DualPipeVShape(ir::Grid(4, 1, 2, ir::Grid::Layout::kV), 8).ok());

  // Through the schedule pass, which names itself.
  const Schedule zbv = Get(Sched::kZbV);
  ir::Module module = ir::ToModule(MakePlan(4, 2, /*v_layout=*/false, 8, "zb-v"));
  absl::Status st = SchedulePass("schedule-zb-v", zbv.order, zbv.check).Run(module);
  expect_refused(st, "schedule-zb-v: ZB-V needs two chunks per stage in the V placement");
  auto small = Lowered(Sched::kDualPipeV, 3, 5);
  ASSERT_FALSE(small.ok());
  expect_refused(small.status(), "schedule-dualpipev: DualPipeV needs micro_batches >= 2 x num_stages (6");
}

}  // namespace
}  // namespace ppc::passes
