#include "compiler/pass_pipeline.h"

#include <sstream>

#include "gtest/gtest.h"
#include "ir/plan_io.h"

namespace ppc {
namespace {

// Sets micro_batches to its option `n` (a change only when the value differs: the
// pipeline detects it).
class SetMicroBatches : public Pass {
 public:
  explicit SetMicroBatches(int n) : n_(n) {}
  std::string name() const override { return "set-micro-batches"; }
  absl::Status Run(ir::Module& module) override {
    module.header.mutable_config()->set_micro_batches(n_);
    return absl::OkStatus();
  }

 private:
  int n_;
};

// Appends an empty eval program (a change of the eval programs alone).
class AddEvalProgram : public Pass {
 public:
  std::string name() const override { return "add-eval-program"; }
  absl::Status Run(ir::Module& module) override {
    module.eval_programs.emplace_back();
    return absl::OkStatus();
  }
};

// Appends an empty training program.
class AddProgram : public Pass {
 public:
  std::string name() const override { return "add-program"; }
  absl::Status Run(ir::Module& module) override {
    module.programs.emplace_back();
    return absl::OkStatus();
  }
};

class Fails : public Pass {
 public:
  std::string name() const override { return "fails"; }
  absl::Status Run(ir::Module&) override { return absl::InvalidArgumentError("boom"); }
};

absl::Status Accept(const ir::Module&, const Unchanged&) { return absl::OkStatus(); }

PassRegistry TestRegistry() {
  return PassRegistry({
      {"fails", "always fails", {}, [](const PassOptions&) -> absl::StatusOr<std::unique_ptr<Pass>> {
         return std::make_unique<Fails>();
       }},
      {"set-micro-batches", "sets M", {"n"}, [](const PassOptions& o) -> absl::StatusOr<std::unique_ptr<Pass>> {
         return std::make_unique<SetMicroBatches>(std::stoi(o.at("n")));
       }},
      {"add-eval-program", "adds an eval program", {}, [](const PassOptions&) -> absl::StatusOr<std::unique_ptr<Pass>> {
         return std::make_unique<AddEvalProgram>();
       }},
      {"add-program", "adds a program", {}, [](const PassOptions&) -> absl::StatusOr<std::unique_ptr<Pass>> {
         return std::make_unique<AddProgram>();
       }},
  });
}

TEST(PassPipeline, RefusesToExistWithoutAVerifier) {
  PassRegistry registry = TestRegistry();
  auto pipeline = PassPipeline::Create("set-micro-batches{n=4}", registry, nullptr);
  EXPECT_EQ(pipeline.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParsePipeline, PrintsBackCanonically) {
  auto p = ParsePipeline("a,partition{method=parameters},b{z=1,a=2}");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ(p->at(1).options.at("method"), "parameters");
  EXPECT_EQ(PrintPipeline(*p), "a,partition{method=parameters},b{a=2,z=1}");
  EXPECT_EQ(PrintPipeline(*ParsePipeline(PrintPipeline(*p))), PrintPipeline(*p));
}

TEST(ParsePipeline, RejectsMalformedText) {
  for (const char* bad : {"a,", "a{k=v", "Bad_Name", "a{novalue}", "a{k=1,k=2}", "a b"}) {
    EXPECT_EQ(ParsePipeline(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(PassPipeline, RejectsUnknownPassesAndOptions) {
  PassRegistry registry = TestRegistry();
  auto unknown = PassPipeline::Create("nope", registry, Accept);
  EXPECT_NE(unknown.status().message().find("known passes: fails, set-micro-batches"), std::string::npos);
  auto bad_option = PassPipeline::Create("set-micro-batches{m=2}", registry, Accept);
  EXPECT_NE(bad_option.status().message().find("has no option 'm'; it accepts: n"), std::string::npos);
}

TEST(PassPipeline, VerifiesAfterEachChangeAndNamesThePass) {
  PassRegistry registry = TestRegistry();
  int verified = 0;
  auto pipeline = PassPipeline::Create("set-micro-batches{n=4},set-micro-batches{n=7}", registry,
                                       [&](const ir::Module& module, const Unchanged&) {
                                         ++verified;
                                         if (module.header.config().micro_batches() > 5) {
                                           return absl::InvalidArgumentError("too many micro-batches");
                                         }
                                         return absl::OkStatus();
                                       });
  ASSERT_TRUE(pipeline.ok());
  ir::Module plan;
  plan.header.mutable_config()->set_micro_batches(4);
  std::ostringstream out;
  PipelineOptions options;
  options.out = &out;
  options.print_ir_after_change = true;
  auto result = pipeline->Run(plan, options);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().message(), "failed after set-micro-batches: too many micro-batches");
  // Input verified, first pass made no change (not verified), second changed (verified).
  EXPECT_EQ(verified, 2);
}

TEST(PassPipeline, TellsTheVerifierWhichPartsItPassedUnchanged) {
  PassRegistry registry = TestRegistry();
  std::vector<std::string> seen;  // per verification: "P" / "E" for unchanged programs / eval programs
  auto pipeline = PassPipeline::Create(
      "add-program,add-eval-program,add-program,set-micro-batches{n=9},add-eval-program,add-eval-program", registry,
      [&](const ir::Module&, const Unchanged& u) {
        seen.push_back(std::string(u.programs ? "P" : "-") + (u.eval_programs ? "E" : "-"));
        return absl::OkStatus();
      });
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  ir::Module plan;
  ASSERT_TRUE(pipeline->Run(plan, {}).ok());
  // Input: nothing proven yet. add-program: the eval programs are as proven. add-eval:
  // the programs are. The header change (set-micro-batches) proves nothing unchanged.
  EXPECT_EQ(seen, (std::vector<std::string>{"--", "-E", "P-", "-E", "--", "P-", "P-"}));
}

TEST(PassPipeline, PassErrorsCarryThePassNameAndWriteAReproducer) {
  PassRegistry registry = TestRegistry();
  auto pipeline = PassPipeline::Create("set-micro-batches{n=3},fails", registry, Accept);
  ASSERT_TRUE(pipeline.ok());
  ir::Module plan;
  PipelineOptions options;
  options.dump_to = ::testing::TempDir() + "/dump";
  auto result = pipeline->Run(plan, options);
  EXPECT_EQ(result.status().message(), "pass fails failed: boom");
  auto repro = ir::ReadFile(options.dump_to + "/reproducer.pipeline");
  ASSERT_TRUE(repro.ok());
  EXPECT_NE(repro->find("--passes='set-micro-batches{n=3},fails'"), std::string::npos) << *repro;
  auto after_first = ir::LoadPlan(options.dump_to + "/00-set-micro-batches.txt");
  EXPECT_TRUE(ir::ReadFile(options.dump_to + "/00-set-micro-batches.txt").ok());
  auto input = ir::ParsePlan(*ir::ReadFile(options.dump_to + "/reproducer.txt"));
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_EQ(input->config().micro_batches(), 0);  // the input, not the partly rewritten plan
}

}  // namespace
}  // namespace ppc
