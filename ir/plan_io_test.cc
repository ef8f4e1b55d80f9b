#include "ir/plan_io.h"

#include <cstdio>

#include "gtest/gtest.h"
#include "ir/instruction_text.h"
#include "ir/layer_shapes.h"

namespace ppc::ir {
namespace {

TEST(InstructionText, RoundTripsEveryField) {
  const char* lines[] = {
      "forward mb=3 chunk=0 slot=1",
      "backward mb=2 chunk=1 slot=0 part=INPUT_ONLY",
      "send_activation mb=0 chunk=0 slot=0 peer=1 shape=[4,16] dtype=FLOAT32",
      "wait ops=[recv_activation/0/0,send_grad/1/0]",
      "reduce_tied_grads tie_key=\"embed\" stages=[0,3]",
      "load_micro_batch mb=1 slot=0 inputs=true labels=false",
      "optimizer_step sharded=false",
      "optimizer_step sharded=true",
      "gather_params chunk=0",
      "clip_grad_norm max_norm=0.1 stages=[0,1,2]",
      "clip_grad_norm max_norm=1.0000000000000002 stages=[0]",
  };
  for (const char* line : lines) {
    auto parsed = ParseInstruction(line);
    ASSERT_TRUE(parsed.ok()) << line << ": " << parsed.status();
    EXPECT_EQ(PrintInstruction(*parsed), line);
  }
}

TEST(InstructionText, RejectsUnknownsWithNames) {
  auto a = ParseInstruction("fwd mb=1");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("unknown instruction 'fwd'"), std::string::npos);
  auto b = ParseInstruction("forward mb=1 colour=2");
  EXPECT_NE(b.status().message().find("no field 'colour'"), std::string::npos);
  auto c = ParseInstruction("backward mb=1 part=SIDEWAYS");
  EXPECT_NE(c.status().message().find("bad value 'SIDEWAYS'"), std::string::npos);
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
  auto* p = plan.add_programs();
  p->set_num_slots(1);
  *p->add_instructions() = *ParseInstruction("forward mb=0 chunk=0 slot=0");
  *p->add_instructions() = *ParseInstruction("backward mb=0 chunk=0 slot=0 part=FULL");
  Stamp(plan);
  return plan;
}

TEST(PlanText, PrintsAndParsesBackExactly) {
  Plan plan = SmallPlan();
  std::string text = PrintPlan(plan);
  EXPECT_EQ(text.rfind("ppc-plan v3 fingerprint=", 0), 0u) << text;
  auto parsed = ParsePlan(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(PrintPlan(*parsed), text);
  EXPECT_TRUE(CheckStamp(*parsed, "test").ok());
}

TEST(PlanText, EvalProgramsPrintAfterTheTrainingProgramsAndParseBack) {
  Plan plan = SmallPlan();
  auto* e = plan.add_eval_programs();
  e->set_num_slots(2);
  *e->add_instructions() = *ParseInstruction("forward mb=1 chunk=0 slot=1");
  std::string text = PrintPlan(plan);
  EXPECT_NE(text.find("== stage 0 num_slots=1\nforward mb=0 chunk=0 slot=0\nbackward mb=0 chunk=0 slot=0 part=FULL\n"
                      "== eval stage 0 num_slots=2\nforward mb=1 chunk=0 slot=1\n"),
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
  text += "forward mb=x\n";
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
