#include "ir/plan_io.h"

#include <cstdio>
#include <set>

#include "gtest/gtest.h"
#include "ir/instruction_text.h"
#include "ir/layer_shapes.h"

namespace ppc::ir {
namespace {

TEST(InstructionText, RoundTripsEveryField) {
  const char* lines[] = {
      "compute kind=FORWARD vs=0 mb=3 slot=1",
      "compute kind=BACKWARD vs=1 mb=2 slot=0",
      "compute kind=BACKWARD_INPUT vs=3 mb=2 slot=1",
      "compute kind=BACKWARD_WEIGHT vs=3 mb=2 slot=1",
      "compute kind=BACKWARD_WEIGHT vs=3 mb=2 slot=1 deferred=true",  // a mark: printed only when set
      "send direction=ACTIVATION boundary=0 mb=0 slot=0",
      "recv direction=GRADIENT boundary=2 mb=1 slot=3",
      "wait ops=[recv/activation/0/0,send/gradient/1/0]",
      "reduce_tied_grads tie_key=\"embed\" stages=[0,3]",
      "reduce_grads",
      "load_micro_batch mb=1 slot=0 inputs=true labels=false",
      "optimizer_step sharded=false",
      "optimizer_step sharded=true",
      "gather_params",
      "clip_grad_norm max_norm=0.1 stages=[0,1,2]",
      "clip_grad_norm max_norm=1.0000000000000002 stages=[0]",
  };
  for (const char* line : lines) {
    auto parsed = ParseInstruction(line);
    ASSERT_TRUE(parsed.ok()) << line << ": " << parsed.status();
    EXPECT_EQ(PrintInstruction(*parsed), line);
  }
  // Every op of the oneof has a line above: a new instruction needs a round-trip case.
  std::set<std::string> covered;
  for (const char* line : lines) covered.insert(std::string(line).substr(0, std::string(line).find(' ')));
  const auto* oneof = Instruction::descriptor()->oneof_decl(0);
  for (int i = 0; i < oneof->field_count(); ++i) {
    EXPECT_TRUE(covered.count(oneof->field(i)->name())) << oneof->field(i)->name();
  }
}

TEST(InstructionText, RejectsUnknownsWithNames) {
  auto a = ParseInstruction("fwd mb=1");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("unknown instruction 'fwd'"), std::string::npos);
  auto b = ParseInstruction("compute mb=1 colour=2");
  EXPECT_NE(b.status().message().find("compute has no field 'colour'"), std::string::npos) << b.status();
  auto c = ParseInstruction("compute kind=SIDEWAYS vs=0 mb=1 slot=0");
  EXPECT_NE(c.status().message().find("bad value 'SIDEWAYS'"), std::string::npos) << c.status();
  auto d = ParseInstruction("wait ops=[recv/sideways/0/0]");
  EXPECT_NE(d.status().message().find("bad transfer reference 'recv/sideways/0/0'"), std::string::npos) << d.status();
  auto e = ParseInstruction("send direction=ACTIVATION boundary=x mb=0 slot=0");
  EXPECT_NE(e.status().message().find("bad value 'x' for field boundary"), std::string::npos) << e.status();
  // Format v3's instructions and fields are gone: named, not silently dropped.
  auto f = ParseInstruction("forward mb=0 chunk=0 slot=0");
  EXPECT_NE(f.status().message().find("unknown instruction 'forward'"), std::string::npos) << f.status();
  auto g = ParseInstruction("recv_activation mb=0 chunk=0 slot=0 peer=0 shape=[1,64] dtype=FLOAT32");
  EXPECT_NE(g.status().message().find("unknown instruction 'recv_activation'"), std::string::npos) << g.status();
  auto h = ParseInstruction("recv direction=ACTIVATION boundary=0 mb=0 slot=0 peer=1");
  EXPECT_NE(h.status().message().find("recv has no field 'peer'"), std::string::npos) << h.status();
}

Plan SmallPlan() {
  Plan plan;
  auto* layer = plan.mutable_model()->add_layers();
  layer->set_name("fc1");
  layer->set_kind("Linear");
  (*layer->mutable_attrs())["in_features"].set_i(8);
  (*layer->mutable_attrs())["out_features"].set_i(4);
  plan.mutable_model()->mutable_input()->add_shape(8);
  plan.mutable_topology()->set_num_stages(1);
  plan.mutable_config()->set_micro_batches(2);
  plan.mutable_placement()->set_chunks_per_stage(1);
  plan.mutable_placement()->add_virtual_stages()->set_end(1);
  plan.set_level(LOWERED);
  auto* p = plan.add_programs();
  p->set_num_slots(1);
  *p->add_instructions() = *ParseInstruction("compute kind=FORWARD vs=0 mb=0 slot=0");
  *p->add_instructions() = *ParseInstruction("compute kind=BACKWARD vs=0 mb=0 slot=0");
  Stamp(plan);
  return plan;
}

TEST(PlanText, PrintsAndParsesBackExactly) {
  Plan plan = SmallPlan();
  std::string text = PrintPlan(plan);
  EXPECT_EQ(text.rfind("ppc-plan v5 fingerprint=", 0), 0u) << text;
  auto parsed = ParsePlan(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(PrintPlan(*parsed), text);
  EXPECT_TRUE(CheckStamp(*parsed, "test").ok());
  // The placement, the boundary table, the level and layer output groups too.
  Plan two = plan;
  auto* vs = two.mutable_placement()->add_virtual_stages();
  vs->set_begin(1);
  vs->set_end(2);
  vs->set_stage(1);
  auto* t = two.add_boundaries()->add_tensors();
  t->add_shape(4);
  t->set_dtype(FLOAT32);
  t->set_name("fc1");
  *two.mutable_model()->mutable_layers(0)->add_outputs() = *t;
  Stamp(two);
  text = PrintPlan(two);
  EXPECT_NE(text.find("boundaries {\n  tensors {\n    shape: 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("level: LOWERED\n"), std::string::npos) << text;
  parsed = ParsePlan(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(PrintPlan(*parsed), text);
  EXPECT_TRUE(CheckStamp(*parsed, "test").ok());
}

TEST(PlanText, AnOlderFormatIsRefusedWithRecompile) {
  std::string text = PrintPlan(SmallPlan());
  text.replace(0, text.find(' ', 9), "ppc-plan v3");
  auto parsed = ParsePlan(text);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kFailedPrecondition) << parsed.status();
  EXPECT_NE(parsed.status().message().find("plan format version 3 is not supported (this build reads version 5)"),
            std::string::npos)
      << parsed.status();
  EXPECT_NE(parsed.status().message().find("recompile"), std::string::npos);
}

TEST(PlanText, EvalProgramsPrintAfterTheTrainingProgramsAndParseBack) {
  Plan plan = SmallPlan();
  auto* e = plan.add_eval_programs();
  e->set_num_slots(2);
  *e->add_instructions() = *ParseInstruction("compute kind=FORWARD vs=0 mb=1 slot=1");
  std::string text = PrintPlan(plan);
  EXPECT_NE(text.find("== stage 0 num_slots=1\ncompute kind=FORWARD vs=0 mb=0 slot=0\n"
                      "compute kind=BACKWARD vs=0 mb=0 slot=0\n"
                      "== eval stage 0 num_slots=2\ncompute kind=FORWARD vs=0 mb=1 slot=1\n"),
            std::string::npos)
      << text;
  auto parsed = ParsePlan(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->eval_programs_size(), 1);
  EXPECT_EQ(parsed->eval_programs(0).num_slots(), 2);
  EXPECT_EQ(parsed->programs(0).instructions_size(), 2);
  EXPECT_EQ(PrintPlan(*parsed), text);
  // A training stage after an eval stage is refused.
  auto bad = ParsePlan(text + "== stage 1 num_slots=1\n");
  EXPECT_NE(bad.status().message().find("training stages come before eval stages"), std::string::npos) << bad.status();
}

TEST(Fingerprint, ModelFingerprintIgnoresEverythingButTheModel) {
  Plan a = SmallPlan();
  Plan b = a;
  b.mutable_topology()->set_num_stages(4);
  b.mutable_config()->set_micro_batches(7);
  b.mutable_model()->mutable_layers(0)->set_forward_cost(3.5);  // measured costs are not the model
  EXPECT_EQ(ModelFingerprint(a.model()), ModelFingerprint(b.model()));
  EXPECT_NE(Fingerprint(a), Fingerprint(b));
  (*b.mutable_model()->mutable_layers(0)->mutable_attrs())["out_features"].set_i(5);
  EXPECT_NE(ModelFingerprint(a.model()), ModelFingerprint(b.model()));
  EXPECT_EQ(ModelFingerprint(a.model()).size(), 16u);
}

TEST(PlanText, ParseErrorsNameTheLine) {
  std::string text = PrintPlan(SmallPlan());
  text += "compute kind=FORWARD vs=0 mb=x slot=0\n";
  auto parsed = ParsePlan(text);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("bad value 'x' for field micro_batch"), std::string::npos)
      << parsed.status();
  EXPECT_NE(parsed.status().message().find("line "), std::string::npos);
}

TEST(PlanStamp, DetectsEditsAfterCompilation) {
  Plan plan = SmallPlan();
  plan.mutable_config()->set_micro_batches(3);
  auto status = CheckStamp(plan, "rank 0");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("does not match"), std::string::npos);
}

TEST(PlanFiles, BinaryAndTextRoundTripAndVersionIsChecked) {
  std::string dir = ::testing::TempDir();
  Plan plan = SmallPlan();
  for (std::string name : {"/p.pb", "/p.txt"}) {
    ASSERT_TRUE(SavePlan(plan, dir + name).ok());
    auto loaded = LoadPlan(dir + name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(PrintPlan(*loaded), PrintPlan(plan));
  }
  plan.set_format_version(99);
  ASSERT_TRUE(SavePlan(plan, dir + "/v99.pb").ok());
  auto old = LoadPlan(dir + "/v99.pb");
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(old.status().message().find("version 99"), std::string::npos);

  ASSERT_TRUE(WriteFile(dir + "/junk.pb", "hello").ok());
  EXPECT_EQ(LoadPlan(dir + "/junk.pb").status().code(), absl::StatusCode::kInvalidArgument);
  std::string good = *ReadFile(dir + "/p.pb");
  ASSERT_TRUE(WriteFile(dir + "/cut.pb", good.substr(0, good.size() - 7)).ok());
  auto cut = LoadPlan(dir + "/cut.pb");
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss) << cut.status();
  EXPECT_EQ(LoadPlan(dir + "/missing.pb").status().code(), absl::StatusCode::kNotFound);
}

TEST(PlanJson, UsesProtoFieldNames) {
  auto json = PlanToJson(SmallPlan());
  ASSERT_TRUE(json.ok());
  EXPECT_NE(json->find("\"micro_batches\": 2"), std::string::npos) << *json;
}

LayerSpec Layer(const std::string& kind, std::map<std::string, int64_t> ints) {
  LayerSpec l;
  l.set_name("l");
  l.set_kind(kind);
  for (auto& [k, v] : ints) (*l.mutable_attrs())[k].set_i(v);
  return l;
}

TensorSpec Spec(std::vector<int64_t> shape, DType dtype = FLOAT32) {
  TensorSpec s;
  for (auto d : shape) s.add_shape(d);
  s.set_dtype(dtype);
  return s;
}

TEST(LayerShapes, MatchesTorchvisionAlexNetFirstConv) {
  // torchvision: Conv2d(3, 64, kernel_size=11, stride=4, padding=2) on 224x224 gives 55x55.
  auto info = InferLayer(
      Layer("Conv2d", {{"in_channels", 3}, {"out_channels", 64}, {"kernel_size", 11}, {"stride", 4}, {"padding", 2}}),
      Spec({3, 224, 224}));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(ShapeString(info->output), "FLOAT32[64,55,55]");
  EXPECT_EQ(info->param_count, 64 * 3 * 11 * 11 + 64);
  auto pool = InferLayer(Layer("MaxPool2d", {{"kernel_size", 3}, {"stride", 2}}), info->output);
  EXPECT_EQ(ShapeString(pool->output), "FLOAT32[64,27,27]");
}

TEST(LayerShapes, RejectsMismatchesNamingLayerAndShape) {
  auto bad = InferLayer(Layer("Linear", {{"in_features", 5}, {"out_features", 2}}), Spec({4}));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("in_features=5 does not match input FLOAT32[4]"), std::string::npos)
      << bad.status();
  auto unknown = InferLayer(Layer("Conv3d", {}), Spec({4}));
  EXPECT_NE(unknown.status().message().find("unknown layer kind"), std::string::npos);
  auto emb = InferLayer(Layer("Embedding", {{"num_embeddings", 10}, {"embedding_dim", 3}}), Spec({5}, INT64));
  EXPECT_EQ(ShapeString(emb->output), "FLOAT32[5,3]");
  EXPECT_EQ(emb->param_count, 30);
}


TEST(LayerShapes, ForkAndAddCarryAResidualGroup) {
  // Fork pushes a copy named after it; layers in between transform the first tensor only;
  // Add pops the last and sums it into the first.
  std::vector<TensorSpec> group{Spec({4})};
  group[0].set_name("input");
  LayerSpec fork = Layer("Fork", {});
  fork.set_name("skip");
  auto forked = InferGroup(fork, group);
  ASSERT_TRUE(forked.ok()) << forked.status();
  ASSERT_EQ(forked->outputs.size(), 2u);
  EXPECT_EQ(forked->outputs[1].name(), "skip");
  LayerSpec fc = Layer("Linear", {{"in_features", 4}, {"out_features", 4}});
  fc.set_name("fc");
  auto mid = InferGroup(fc, forked->outputs);
  ASSERT_TRUE(mid.ok()) << mid.status();
  ASSERT_EQ(mid->outputs.size(), 2u);
  EXPECT_EQ(mid->outputs[0].name(), "fc");
  EXPECT_EQ(mid->outputs[1].name(), "skip");
  LayerSpec add = Layer("Add", {});
  add.set_name("add");
  auto added = InferGroup(add, mid->outputs);
  ASSERT_TRUE(added.ok()) << added.status();
  ASSERT_EQ(added->outputs.size(), 1u);
  EXPECT_EQ(added->outputs[0].name(), "add");
  EXPECT_EQ(ShapeString(added->outputs[0]), "FLOAT32[4]");
  // Add needs two tensors.
  EXPECT_FALSE(InferGroup(add, group).ok());
}

TEST(LayerShapes, RefusesAttributeKeysTheKindDoesNotRead) {
  // A misspelled key would otherwise leave the default in place (p=0.5, bias=true).
  LayerSpec drop = Layer("Dropout", {});
  drop.set_name("drop");
  (*drop.mutable_attrs())["q"].set_f(0.1);
  auto d = InferLayer(drop, Spec({4}));
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("layer 'drop' (Dropout): unknown attribute 'q' (known: p)"), std::string::npos)
      << d.status();
  LayerSpec fc = Layer("Linear", {{"in_features", 4}, {"out_features", 2}});
  (*fc.mutable_attrs())["biass"].set_b(false);
  auto f = InferLayer(fc, Spec({4}));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("unknown attribute 'biass' (known: bias, in_features, out_features)"),
            std::string::npos)
      << f.status();
  auto relu = InferLayer(Layer("ReLU", {{"inplace", 1}}), Spec({4}));
  EXPECT_NE(relu.status().message().find("unknown attribute 'inplace' (known: none)"), std::string::npos)
      << relu.status();
  // Every key a kind lists is read, not refused as unknown.
  for (const std::string& kind : LayerKinds()) {
    for (const std::string& key : LayerAttributes(kind)) {
      auto status = InferLayer(Layer(kind, {{key, 1}}), Spec({4})).status();
      EXPECT_EQ(status.message().find("unknown attribute"), std::string::npos) << kind << "." << key << ": " << status;
    }
  }
  EXPECT_EQ(LayerAttributes("Conv2d"), (std::vector<std::string>{"bias", "dilation", "in_channels", "kernel_size",
                                                                  "out_channels", "padding", "stride"}));
}

}  // namespace
}  // namespace ppc::ir
