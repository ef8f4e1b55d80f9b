#include "compiler/deepspeed_config.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace ppc {
namespace {

// The seed's examples/alexnet_cifar10/ds_config.json.
const char kSeed[] = R"({
  "train_batch_size" : 256,
  "train_micro_batch_size_per_gpu" : 8,
   "optimizer": {
    "type": "Adam",
    "params": { "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8 }
  },
  "steps_per_print" : 10,
  "wall_clock_breakdown" : false
})";

TEST(DeepSpeedConfig, ReadsTheSeedConfig) {
  auto c = ParseDeepSpeedConfig(kSeed, 1, "ds_config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->config.micro_batch_size(), 8);
  EXPECT_EQ(c->config.micro_batches(), 32);  // 256 / (8 * 1)
  EXPECT_EQ(c->config.optimizer().type(), "adam");
  EXPECT_DOUBLE_EQ(c->config.optimizer().lr(), 0.001);
  EXPECT_DOUBLE_EQ(c->config.optimizer().beta2(), 0.999);
  EXPECT_DOUBLE_EQ(c->config.optimizer().eps(), 1e-8);
  EXPECT_EQ(c->config.steps_per_print(), 10);
  EXPECT_TRUE(c->warnings.empty());
  // Two data-parallel replicas halve the accumulation steps.
  EXPECT_EQ(ParseDeepSpeedConfig(kSeed, 2, "x")->config.micro_batches(), 16);
}

TEST(DeepSpeedConfig, DerivesTheMissingBatchSetting) {
  auto a = ParseDeepSpeedConfig(R"({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3})", 2, "x");
  EXPECT_EQ(a->train_batch_size, 24);
  auto b = ParseDeepSpeedConfig(R"({"train_batch_size": 24, "gradient_accumulation_steps": 3})", 2, "x");
  EXPECT_EQ(b->config.micro_batch_size(), 4);
  auto c = ParseDeepSpeedConfig(R"({"train_batch_size": 24})", 2, "x");
  EXPECT_EQ(c->config.micro_batch_size(), 12);
  EXPECT_EQ(c->config.micro_batches(), 1);
}

TEST(DeepSpeedConfig, RejectsInconsistentBatchSettingsNamingTheKey) {
  auto s = ParseDeepSpeedConfig(
      R"({"train_batch_size": 100, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 4})", 2,
      "ds.json");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(),
            "ds.json: 'train_batch_size' is 100 but train_micro_batch_size_per_gpu * gradient_accumulation_steps * "
            "data-parallel = 8 * 4 * 2 = 64");
  auto d = ParseDeepSpeedConfig(R"({"train_batch_size": 100, "train_micro_batch_size_per_gpu": 8})", 1, "ds.json");
  EXPECT_NE(d.status().message().find("'gradient_accumulation_steps' cannot be derived"), std::string::npos);
  EXPECT_FALSE(ParseDeepSpeedConfig("{}", 1, "x").ok());
}

TEST(DeepSpeedConfig, RejectsWrongTypesAndUnknownOptimizers) {
  auto a = ParseDeepSpeedConfig(R"({"train_batch_size": "256"})", 1, "ds.json");
  EXPECT_EQ(a.status().message(), "ds.json: 'train_batch_size' must be an integer, got \"256\"");
  auto b = ParseDeepSpeedConfig(R"({"train_batch_size": 8, "optimizer": {"type": "Lamb"}})", 1, "ds.json");
  EXPECT_NE(b.status().message().find("'optimizer.type' 'Lamb' is not supported"), std::string::npos);
  auto c = ParseDeepSpeedConfig(R"({"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"betas": [0.9]}}})",
                                1, "ds.json");
  EXPECT_NE(c.status().message().find("'optimizer.params.betas' must be a list of two numbers"), std::string::npos);
  auto d = ParseDeepSpeedConfig("{not json", 1, "ds.json");
  EXPECT_NE(d.status().message().find("ds.json: not valid JSON"), std::string::npos);
}

TEST(DeepSpeedConfig, WarnsOnUnknownKeysAndReadsPipelineSection) {
  auto c = ParseDeepSpeedConfig(
      R"({"train_batch_size": 8, "fp16": {"enabled": true}, "gradient_clipping": 1.5,
          "pipeline": {"partition_method": "type:Conv2d", "activation_checkpoint_interval": 2, "seed_layers": true}})",
      1, "ds.json");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->warnings.size(), 2u);
  EXPECT_EQ(c->warnings[0], "ds.json: unknown key 'pipeline.seed_layers' is ignored");
  EXPECT_EQ(c->warnings[1], "ds.json: unknown key 'fp16' is ignored");
  EXPECT_EQ(c->config.partition_method(), "type:Conv2d");
  EXPECT_EQ(c->config.activation_checkpoint_interval(), 2);
  EXPECT_DOUBLE_EQ(c->config.gradient_clipping(), 1.5);
}

TEST(DeepSpeedConfig, ZeroStage0Or1AndNothingElse) {
  EXPECT_EQ(ParseDeepSpeedConfig(kSeed, 2, "x")->config.zero_stage(), 0);
  auto one = ParseDeepSpeedConfig(R"({"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4,
                                     "zero_optimization": {"stage": 1, "reduce_bucket_size": 5e8}})",
                                  2, "ds.json");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->config.zero_stage(), 1);
  ASSERT_EQ(one->warnings.size(), 1u);
  EXPECT_NE(one->warnings[0].find("zero_optimization.reduce_bucket_size"), std::string::npos) << one->warnings[0];
  for (const char* stage : {"2", "3"}) {
    auto bad = ParseDeepSpeedConfig(absl::StrCat(R"({"train_batch_size": 16, "zero_optimization": {"stage": )", stage,
                                                 "}}"),
                                    2, "ds.json");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("zero_optimization.stage"), std::string::npos) << bad.status();
    EXPECT_NE(bad.status().message().find("not supported with pipeline parallelism"), std::string::npos)
        << bad.status();
  }
  auto text = ParseDeepSpeedConfig(R"({"train_batch_size": 16, "zero_optimization": {"stage": "1"}})", 2, "ds.json");
  EXPECT_NE(text.status().message().find("must be an integer"), std::string::npos) << text.status();
  auto neg = ParseDeepSpeedConfig(R"({"train_batch_size": 16, "zero_optimization": {"stage": -1}})", 2, "ds.json");
  EXPECT_NE(neg.status().message().find("must be 0 or 1, got -1"), std::string::npos) << neg.status();
}

}  // namespace
}  // namespace ppc

namespace ppc {
namespace {

TEST(DeepSpeedConfig, AKeyGivenTwiceIsAnError) {
  auto top = ParseDeepSpeedConfig(R"({"train_batch_size": 8, "train_batch_size": 16})", 1, "ds.json");
  ASSERT_FALSE(top.ok());
  EXPECT_NE(top.status().message().find("ds.json: key 'train_batch_size' is given twice"), std::string::npos)
      << top.status();
  auto nested = ParseDeepSpeedConfig(
      R"({"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"lr": 0.1, "lr": 10}}})", 1, "ds.json");
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.status().message().find("key 'lr' is given twice"), std::string::npos) << nested.status();
  // The same key in different objects is fine.
  auto fine = ParseDeepSpeedConfig(
      R"({"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"lr": 0.1}}, "scheduler": {"params": {"lr": 1}}})",
      1, "ds.json");
  EXPECT_TRUE(fine.ok()) << fine.status();
}

}  // namespace
}  // namespace ppc
