// Checkpoints, evaluation and ZeRO stage 1 end to end, with real pprun processes:
//  - exact resume: N steps equal N/2 steps + save + a new process + load + N/2 steps,
//    bit for bit (losses and weights), for SGD, Adam, dropout and CIFAR files mid-epoch;
//  - re-partitioning: a checkpoint saved at P=2 x D=2 (ZeRO-1) continues at P=1, P=4,
//    D=1, another partition method, another schedule, V=2 virtual stages per stage, and
//    ZeRO-0; one saved with virtual stages resumes exactly;
//  - ZeRO-1 trains as unsharded training does, with half the optimizer state per rank;
//  - a rank killed while it writes leaves the previous checkpoint loadable and `latest`
//    pointing at it; every bad checkpoint is an error naming the file, not a crash;
//  - evaluation: accuracy rises above chance with training; P=2 evaluates as P=1;
//  - tied weights are saved once and restored into every copy; export and ppc export.
#include <sys/stat.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "ir/plan_io.h"
#include "runtime/torch_file.h"
#include "tests/pprun_util.h"

namespace ppc {
namespace {

namespace fs = std::filesystem;
using e2e::CompileTo;
using e2e::Exec;
using e2e::Pprun;
using e2e::RunResult;
using e2e::Tmp;

const char kMlp[] = "examples/mlp/mlp.textproto";
const char kCnn[] = "tests/testdata/tiny_cnn.textproto";
const char kTiedLm[] = "tests/testdata/tied_lm.textproto";

struct Config {
  std::string model = kMlp;
  int stages = 1, dp = 1, micro_batches = 4;
  std::string optimizer = "adam";
  std::string schedule = "1f1b";
  std::string partition;
  int zero = 0;
  int virtual_stages = 1;  // V > 1 with schedule interleaved-1f1b
};

ir::Plan MakePlan(const Config& s) {
  ir::Plan plan;
  EXPECT_TRUE(ir::ParseTextProtoFile(s.model, plan.mutable_model()).ok()) << s.model;
  plan.mutable_topology()->set_num_stages(s.stages);
  plan.mutable_topology()->set_data_parallel(s.dp);
  auto* c = plan.mutable_config();
  c->set_micro_batches(s.micro_batches);
  c->set_micro_batch_size(4);
  c->set_schedule(s.schedule);
  c->set_partition_method(s.partition);
  c->set_seed(1138);
  c->set_steps(10);
  c->set_zero_stage(s.zero);
  c->set_virtual_stages(s.virtual_stages);
  c->mutable_optimizer()->set_type(s.optimizer);
  c->mutable_optimizer()->set_lr(s.optimizer == "sgd" ? 0.1 : 0.01);
  c->mutable_optimizer()->set_momentum(s.optimizer == "sgd" ? 0.9 : 0);
  return plan;
}

std::string Compile(const Config& s, const std::string& name) { return CompileTo(MakePlan(s), name); }
int Ranks(const Config& s) { return s.stages * s.dp; }

std::vector<std::string> Flags(std::initializer_list<std::string> flags, const std::vector<std::string>& more = {}) {
  std::vector<std::string> out(flags);
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

// Writes a CIFAR-10 binary directory: `n` records per training file and in the test
// file, with labels that depend on the pixels (so that there is something to learn).
std::string WriteCifar(const std::string& name, int n) {
  std::string dir = Tmp(name);
  fs::create_directories(dir);
  uint32_t state = 12345;
  auto next = [&] { return (state = state * 1664525u + 1013904223u) >> 24; };
  for (const std::string file : {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                                 "test_batch"}) {
    std::ofstream out(dir + "/" + file + ".bin", std::ios::binary);
    for (int r = 0; r < n; ++r) {
      std::string pixels(3072, 0);
      for (auto& p : pixels) p = static_cast<char>(next());
      out.put(static_cast<char>(static_cast<uint8_t>(pixels[0]) % 10));
      out.write(pixels.data(), pixels.size());
    }
  }
  return dir;
}

std::vector<double> Concat(std::vector<double> a, const std::vector<double>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void ExpectNear(const std::vector<double>& got, const std::vector<double>& want, double rtol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], rtol * std::abs(want[i])) << "step " << i;
}

void ExpectWeightsNear(const RunResult& got, const RunResult& want, double tol) {
  ASSERT_EQ(got.weights.size(), want.weights.size());
  ASSERT_FALSE(want.weights.empty());
  for (const auto& [name, w] : want.weights) {
    const auto& g = got.weights.at(name);
    ASSERT_EQ(g.size(), w.size()) << name;
    double worst = 0;
    for (size_t k = 0; k < w.size(); ++k) worst = std::max(worst, double(std::abs(g[k] - w[k])));
    EXPECT_LE(worst, tol) << name;
  }
}

std::string Latest(const std::string& dir) { return ir::ReadFile(dir + "/latest").value_or("<none>"); }

// ---------------------------------------------------------------------------------
// Exact resume.

struct ResumeCase {
  const char* name;
  Config setup;
  bool cifar;
};

class ExactResume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(ExactResume, HalfPlusSavePlusLoadPlusHalfIsBitIdentical) {
  const ResumeCase& c = GetParam();
  std::vector<std::string> data;
  if (c.cifar) data = {"--data", WriteCifar(absl::StrCat(c.name, "_cifar"), 10)};  // 50 samples: epoch = 6.25 steps
  const std::string plan = Compile(c.setup, c.name);
  const int n = Ranks(c.setup);
  RunResult full = Pprun(plan, n, absl::StrCat(c.name, "_full"), Flags({"--steps", "10"}, data));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  ASSERT_EQ(full.losses.size(), 10u);
  const std::string dir = Tmp(absl::StrCat(c.name, "_ckpt"));
  RunResult first = Pprun(plan, n, absl::StrCat(c.name, "_first"), Flags({"--steps", "5", "--save-dir", dir}, data));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_EQ(Latest(dir), "global_step5");
  // A new process continues from the checkpoint to step 10.
  RunResult second = Pprun(plan, n, absl::StrCat(c.name, "_second"), Flags({"--steps", "10", "--load", dir}, data));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_EQ(Concat(first.losses, second.losses), full.losses);
  ASSERT_FALSE(full.weights.empty());
  EXPECT_EQ(second.weights, full.weights);
  // job.json's partition: one [begin, end] layer range per virtual stage (P x V of them).
  auto saved = nlohmann::json::parse(ir::ReadFile(dir + "/global_step5/job.json").value_or("{}"), nullptr, false);
  ASSERT_TRUE(saved.is_object());
  const auto& partition = saved["topology"]["partition"];
  ASSERT_TRUE(partition.is_array()) << saved.dump(2);
  EXPECT_EQ(partition.size(), static_cast<size_t>(c.setup.stages * c.setup.virtual_stages)) << partition.dump();
  if (c.cifar) {
    // Saved mid-epoch: 5 steps x 8 samples = sample 40 of epoch 0 (of 50).
    std::string job = ir::ReadFile(dir + "/global_step5/job.json").value_or("");
    EXPECT_NE(job.find("\"cursor\": 40"), std::string::npos) << job;
    EXPECT_NE(job.find("\"epoch\": 0"), std::string::npos) << job;
    EXPECT_NE(job.find("\"dataset_size\": 50"), std::string::npos) << job;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Optimizers, ExactResume,
    ::testing::Values(ResumeCase{"sgd_momentum_p2", Config{kMlp, 2, 1, 4, "sgd"}, false},
                      ResumeCase{"adam_p2_d2", Config{kMlp, 2, 2, 2, "adam"}, false},
                      ResumeCase{"adamw_cifar_p2", Config{kCnn, 2, 1, 2, "adamw"}, true},
                      // Two virtual stages per stage: each rank saves and loads two layer ranges.
                      ResumeCase{"adam_p2_v2_interleaved", Config{kMlp, 2, 1, 4, "adam", "interleaved-1f1b", "", 0, 2},
                                 false}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------
// Re-partitioning on load, ZeRO-1.

TEST(Repartition, AP2D2Zero1CheckpointContinuesUnderAnyTopology) {
  Config saved{kMlp, 2, 2, 2, "adam"};
  saved.zero = 1;
  const std::string plan = Compile(saved, "rp_saved");
  RunResult full = Pprun(plan, 4, "rp_full", {"--steps", "10"});
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::string dir = Tmp("rp_ckpt");
  RunResult first = Pprun(plan, 4, "rp_first", {"--steps", "5", "--save-dir", dir});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::vector<double> rest(full.losses.begin() + 5, full.losses.end());
  // The same global batch (D x micro-batches) everywhere.
  std::vector<std::pair<std::string, Config>> targets = {
      {"p1", Config{kMlp, 1, 1, 4, "adam"}},
      {"p4", Config{kMlp, 4, 1, 4, "adam"}},
      {"p2_d1_uniform_gpipe", Config{kMlp, 2, 1, 4, "adam", "gpipe", "uniform"}},
      {"p2_d2_zero0", Config{kMlp, 2, 2, 2, "adam"}},
      {"p1_d2_zero1", Config{kMlp, 1, 2, 2, "adam", "data-parallel", "", 1}},
      {"p2_v2_interleaved", Config{kMlp, 2, 1, 4, "adam", "interleaved-1f1b", "", 0, 2}},
  };
  for (const auto& [name, setup] : targets) {
    SCOPED_TRACE(name);
    RunResult got = Pprun(Compile(setup, "rp_" + name), Ranks(setup), "rp_" + name, {"--steps", "10", "--load", dir});
    ASSERT_EQ(got.exit_code, 0) << got.output;
    ExpectNear(got.losses, rest, 1e-5);
    ExpectWeightsNear(got, full, 1e-4);
  }
}

TEST(Zero1, TrainsLikeUnshardedWithHalfTheOptimizerStatePerRank) {
  for (auto [stages, dp, micro_batches, schedule] :
       {std::tuple<int, int, int, const char*>{2, 2, 2, "1f1b"}, {1, 2, 2, "data-parallel"}}) {
    SCOPED_TRACE(absl::StrCat("P=", stages, " D=", dp));
    Config zero0{kMlp, stages, dp, micro_batches, "adam", schedule};
    Config zero1 = zero0;
    zero1.zero = 1;
    const std::string tag = absl::StrCat("z_p", stages);
    RunResult a = Pprun(Compile(zero0, tag + "_0"), stages * dp, tag + "_0", {"--memory-report"});
    RunResult b = Pprun(Compile(zero1, tag + "_1"), stages * dp, tag + "_1", {"--memory-report"});
    ASSERT_EQ(a.exit_code, 0) << a.output;
    ASSERT_EQ(b.exit_code, 0) << b.output;
    ASSERT_EQ(a.losses.size(), 10u);
    ExpectNear(b.losses, a.losses, 1e-5);
    ExpectWeightsNear(b, a, 1e-4);
    // Rank 0 holds the first stage's Adam state: 2 floats per parameter, halved by ZeRO-1.
    auto state_bytes = [](const std::string& out) -> long long {
      size_t at = out.find("memory: rank 0 ");
      if (at == std::string::npos) return -1;
      return std::stoll(out.substr(out.find("optimizer_state ", at) + 16));
    };
    const long long params = stages == 2 ? 6272 : 8682;  // mlp: 32*64+64 + 64*64+64 on stage 0 of 2
    EXPECT_EQ(state_bytes(a.output), params * 2 * 4) << a.output;
    EXPECT_EQ(state_bytes(b.output), (params + 1) / 2 * 2 * 4) << b.output;
  }
  // The runtime refuses a sharded step that is not followed by its gather (replicas would
  // silently diverge).
  Config zero1{kMlp, 2, 2, 2, "adam"};
  zero1.zero = 1;
  auto plan = ir::LoadPlan(Compile(zero1, "z_nogather"));
  ASSERT_TRUE(plan.ok());
  for (auto& prog : *plan->mutable_programs()) {
    auto* ins = prog.mutable_instructions();
    ins->erase(std::remove_if(ins->begin(), ins->end(), [](const ir::Instruction& in) { return in.has_gather_params(); }),
               ins->end());
  }
  ir::Stamp(*plan);
  const std::string edited = Tmp("z_nogather_edited.pb");
  ASSERT_TRUE(ir::SavePlan(*plan, edited).ok());
  RunResult r = Pprun(edited, 4, "z_nogather", {"--steps", "1"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("sharded optimizer step is never followed by GatherParams"), std::string::npos)
      << r.output;
  EXPECT_TRUE(r.losses.empty());
  // Even with the verifier skipped, the runtime itself refuses it.
  RunResult allowed = Pprun(edited, 4, "z_nogather_allowed", {"--steps", "1", "--allow-unverified"});
  EXPECT_NE(allowed.exit_code, 0);
  EXPECT_NE(allowed.output.find("sharded optimizer step is never followed by gather_params"), std::string::npos)
      << allowed.output;
  EXPECT_TRUE(allowed.losses.empty());
}

// ---------------------------------------------------------------------------------
// Crash safety.

// Every file of a directory tree and its bytes.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files[e.path().string()] = *ir::ReadFile(e.path().string());
  }
  return files;
}

// Directories in `dir` whose name starts with `prefix`.
int CountDirs(const std::string& dir, const std::string& prefix) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.is_directory() && e.path().filename().string().rfind(prefix, 0) == 0;
  return n;
}

TEST(CrashSafety, ARankKilledWhileWritingLeavesThePreviousCheckpoint) {
  Config s{kMlp, 2, 1, 4, "sgd"};
  const std::string plan = Compile(s, "crash");
  RunResult full = Pprun(plan, 2, "crash_full", {"--steps", "6"});
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::string dir = Tmp("crash_ckpt");
  ASSERT_EQ(Pprun(plan, 2, "crash_first", {"--steps", "2", "--save-dir", dir}).exit_code, 0);
  const auto before = Snapshot(dir);
  const std::vector<std::string> resume{"--steps", "6", "--load", dir, "--save-every", "2", "--save-dir", dir};
  // Rank 1 dies halfway through its first file of the checkpoint after step 4: rank 0
  // sees the save fail and removes what it staged.
  RunResult one = Pprun(plan, 2, "crash_rank1", resume, {{"PPRUN_FAULT_INJECT", "1:save:4"}});
  EXPECT_NE(one.exit_code, 0);
  EXPECT_NE(one.output.find("exiting halfway through writing"), std::string::npos) << one.output;
  EXPECT_EQ(Latest(dir), "global_step2");
  EXPECT_EQ(CountDirs(dir, "global_step4"), 0);
  // Rank 0 itself dies: its staging directory stays, never under the tag's name.
  RunResult zero = Pprun(plan, 2, "crash_rank0", resume, {{"PPRUN_FAULT_INJECT", "0:save:4"}});
  EXPECT_NE(zero.exit_code, 0);
  EXPECT_EQ(Latest(dir), "global_step2");
  EXPECT_FALSE(fs::exists(dir + "/global_step4"));
  EXPECT_EQ(CountDirs(dir, "global_step4.partial-"), 1);
  // The previous checkpoint is untouched, byte for byte.
  auto after = Snapshot(dir);
  for (const auto& [path, bytes] : before) EXPECT_EQ(after[path], bytes) << path;
  RunResult resumed = Pprun(plan, 2, "crash_resume", resume);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(resumed.losses, std::vector<double>(full.losses.begin() + 2, full.losses.end()));
  EXPECT_EQ(resumed.weights, full.weights);
  EXPECT_EQ(Latest(dir), "global_step6");
  EXPECT_EQ(CountDirs(dir, "global_step4.partial-"), 0) << "a completed save removes torn ones";
}

// ---------------------------------------------------------------------------------
// Bad checkpoints.

struct JobEdit;  // below, with the edits

class BadCheckpoint : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    plan_ = new std::string(Compile(Config{kMlp, 2, 1, 4, "adam"}, "bad"));
    good_ = new std::string(Tmp("bad_good"));
    RunResult r = Pprun(*plan_, 2, "bad_make", {"--steps", "2", "--save-dir", *good_});
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // A copy of the good checkpoint to damage.
  std::string Copy(const std::string& name) {
    std::string dir = Tmp("bad_" + name);
    fs::remove_all(dir);
    fs::copy(*good_, dir, fs::copy_options::recursive);
    return dir;
  }
  // Loading fails cleanly (an exit status, no signal) with every fragment in the output.
  void ExpectLoadError(const std::string& dir, const std::vector<std::string>& fragments,
                       std::vector<std::string> extra = {}, const std::string* plan = nullptr) {
    std::vector<std::string> flags{"--steps", "3", "--load", dir};
    flags.insert(flags.end(), extra.begin(), extra.end());
    RunResult r = Pprun(plan ? *plan : *plan_, 2, "bad_load", flags);
    EXPECT_GT(r.exit_code, 0) << r.output;
    for (const auto& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << "want '" << f << "' in\n" << r.output;
    EXPECT_EQ(r.losses.size(), 0u) << "no step may run from a bad checkpoint";
  }
  // Applies each edit (with `apply`: EditJob or EditManifest) to a fresh copy of the good
  // checkpoint and expects its error, by a resume or by `ppc export`.
  void ExpectEditsRefused(const std::string& prefix, const std::vector<JobEdit>& edits,
                          void (*apply)(const std::string&, const std::function<void(nlohmann::json&)>&));
  static std::string* plan_;
  static std::string* good_;
};
std::string* BadCheckpoint::plan_ = nullptr;
std::string* BadCheckpoint::good_ = nullptr;

TEST_F(BadCheckpoint, MissingFile) {
  std::string dir = Copy("missing");
  fs::remove(dir + "/global_step2/layer_02-model_states.pt");
  ExpectLoadError(dir, {"global_step2/layer_02-model_states.pt is missing (listed in manifest.json)"});
}

TEST_F(BadCheckpoint, ChecksumMismatch) {
  std::string dir = Copy("checksum");
  const std::string file = dir + "/global_step2/layer_05-model_states.pt";
  std::string bytes = *ir::ReadFile(file);
  bytes[bytes.size() / 2] ^= 0x40;
  ASSERT_TRUE(ir::WriteFile(file, bytes).ok());
  ExpectLoadError(dir, {"layer_05-model_states.pt: checksum mismatch"});
}

TEST_F(BadCheckpoint, TruncatedFile) {
  std::string dir = Copy("truncated");
  const std::string file = dir + "/global_step2/layer_00-optim_states.pt";
  fs::resize_file(file, fs::file_size(file) / 2);
  ExpectLoadError(dir, {"layer_00-optim_states.pt is truncated"});
}

TEST_F(BadCheckpoint, UnknownTagAndDanglingLatest) {
  ExpectLoadError(*good_, {"no checkpoint tag 'global_step99'", "tags there: global_step2"}, {"--tag", "global_step99"});
  std::string dir = Copy("latest");
  ASSERT_TRUE(ir::WriteFile(dir + "/latest", "global_step42").ok());
  ExpectLoadError(dir, {"latest names 'global_step42'"});
  std::string empty = Tmp("bad_empty");
  fs::create_directories(empty);
  ExpectLoadError(empty, {"no checkpoint in"});
}

TEST_F(BadCheckpoint, AnotherModelsCheckpoint) {
  std::string cnn = Compile(Config{kCnn, 2, 1, 4, "adam"}, "bad_cnn");
  ExpectLoadError(*good_, {"the checkpoint is of model 'mlp'", "not of this plan's model 'tiny_cnn'"}, {}, &cnn);
}

TEST_F(BadCheckpoint, ShapeThatDoesNotFitAndIncompleteSave) {
  // Without manifest and job file the directory is an import (DeepSpeed layout): a layer
  // file of the wrong shape is named, with both shapes.
  std::string dir = Copy("shape");
  fs::remove(dir + "/global_step2/manifest.json");
  fs::remove(dir + "/global_step2/job.json");
  fs::copy_file(dir + "/global_step2/layer_00-model_states.pt", dir + "/global_step2/layer_02-model_states.pt",
                fs::copy_options::overwrite_existing);
  ExpectLoadError(dir, {"layer_02-model_states.pt: 'weight' has shape [64,32]", "needs [64,64]"});
  // job.json without manifest.json: a save that did not finish.
  std::string torn = Copy("torn");
  fs::remove(torn + "/global_step2/manifest.json");
  ExpectLoadError(torn, {"incomplete checkpoint", "save was interrupted"});
}

TEST_F(BadCheckpoint, OtherOptimizerNeedsLoadModuleOnly) {
  std::string sgd = Compile(Config{kMlp, 2, 1, 4, "sgd"}, "bad_sgd");
  ExpectLoadError(*good_, {"the checkpoint's optimizer is 'adam', this plan's is 'sgd'", "--load-module-only"}, {},
                  &sgd);
  RunResult r = Pprun(sgd, 2, "bad_module_only", {"--steps", "3", "--load", *good_, "--load-module-only"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.losses.size(), 3u) << "module-only starts at step 1";
}

// Replaces `name` in `tag_dir` and updates manifest.json to match, so that the damage
// reaches the parser instead of stopping at the checksum.
void ReplaceConsistently(const std::string& tag_dir, const std::string& name, const std::string& bytes) {
  ASSERT_TRUE(ir::WriteFile(tag_dir + "/" + name, bytes).ok());
  auto manifest = nlohmann::json::parse(*ir::ReadFile(tag_dir + "/manifest.json"));
  const uint32_t crc = crc32_z(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), bytes.size());
  manifest["files"][name] = {{"bytes", bytes.size()}, {"crc32", absl::StrFormat("%08x", crc)}};
  ASSERT_TRUE(ir::WriteFile(tag_dir + "/manifest.json", manifest.dump(2)).ok());
}

void EditJob(const std::string& tag_dir, const std::function<void(nlohmann::json&)>& edit) {
  auto job = nlohmann::json::parse(*ir::ReadFile(tag_dir + "/job.json"));
  edit(job);
  ReplaceConsistently(tag_dir, "job.json", job.dump(2));
}

// The manifest edited as is (its own entries are not checksummed).
void EditManifest(const std::string& tag_dir, const std::function<void(nlohmann::json&)>& edit) {
  auto manifest = nlohmann::json::parse(*ir::ReadFile(tag_dir + "/manifest.json"));
  edit(manifest);
  ASSERT_TRUE(ir::WriteFile(tag_dir + "/manifest.json", manifest.dump(2)).ok());
}

TEST_F(BadCheckpoint, JobFileOfWrongTypesOrInconsistentOptimizerState) {
  std::string dir = Copy("job_types");
  EditJob(dir + "/global_step2", [](nlohmann::json& j) { j["optimizer"]["steps"] = "x"; });
  ExpectLoadError(dir, {"job.json optimizer: 'steps' must be an integer, not \"x\""});
  dir = Copy("job_negative");
  EditJob(dir + "/global_step2", [](nlohmann::json& j) { j["optimizer"]["steps"] = -1; });
  ExpectLoadError(dir, {"'steps' must be >= 0, not -1"});
  dir = Copy("job_state");
  EditJob(dir + "/global_step2", [](nlohmann::json& j) { j["optimizer"]["state"] = {"exp_avg"}; });
  ExpectLoadError(dir, {"adam after 2 steps has state 'exp_avg_sq', which the checkpoint lacks"});
  // Adam's second moment can never be negative: a file saying so is corrupt.
  dir = Copy("optim_values");
  c10::impl::GenericDict optim(c10::StringType::get(), c10::AnyType::get());
  for (auto [name, shape] : {std::pair<const char*, std::vector<int64_t>>{"weight", {64, 32}}, {"bias", {64}}}) {
    c10::impl::GenericDict entry(c10::StringType::get(), c10::AnyType::get());
    entry.insert("step", c10::IValue(int64_t{2}));
    entry.insert("exp_avg", torch::zeros(shape));
    entry.insert("exp_avg_sq", -torch::ones(shape));
    optim.insert(name, entry);
  }
  auto bytes = runtime::SerializeTorchFile(optim);
  ASSERT_TRUE(bytes.ok());
  ReplaceConsistently(dir + "/global_step2", "layer_00-optim_states.pt", std::string(bytes->begin(), bytes->end()));
  ExpectLoadError(dir, {"layer_00-optim_states.pt ['", "']: 'exp_avg_sq' holds negative or non-finite values"});
}

TEST_F(BadCheckpoint, AFifoIsAnErrorNotAHang) {
  std::string dir = Copy("fifo");
  fs::remove(dir + "/latest");
  ASSERT_EQ(mkfifo((dir + "/latest").c_str(), 0644), 0);
  ExpectLoadError(dir, {"latest' is not a regular file"});
}

// A copy of a model file's tensors with one value of `name` set to `value`, written with
// a consistent manifest entry, so that the damage reaches the finiteness check.
void PoisonTensor(const std::string& tag_dir, const std::string& file, const std::string& name, float value) {
  auto dict = runtime::ReadTorchFile(tag_dir + "/" + file);
  ASSERT_TRUE(dict.ok()) << dict.status();
  c10::Dict<std::string, at::Tensor> out;
  bool found = false;
  for (const auto& [k, v] : dict->dict) {
    at::Tensor t = v->tensor.clone();
    if (k->s == name) {
      t.view({-1})[t.numel() / 2].fill_(value);
      found = true;
    }
    out.insert(k->s, t);
  }
  ASSERT_TRUE(found) << file << " has no '" << name << "'";
  auto bytes = runtime::SerializeTorchFile(out);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ReplaceConsistently(tag_dir, file, std::string(bytes->begin(), bytes->end()));
}

TEST_F(BadCheckpoint, NonFiniteWeightsAreRefusedNamingFileAndTensor) {
  std::string dir = Copy("nan_weight");
  PoisonTensor(dir + "/global_step2", "layer_02-model_states.pt", "weight", NAN);
  ExpectLoadError(dir, {"global_step2/layer_02-model_states.pt: tensor 'weight' has non-finite values "
                        "(1 NaN, 0 infinite",
                        "layer 2 'fc2' (Linear)"});
  // Without the optimizer state too (the weights alone are loaded), and by export.
  ExpectLoadError(dir, {"layer_02-model_states.pt: tensor 'weight' has non-finite values"}, {"--load-module-only"});
  RunResult exported = Exec({"tools/ppc/ppc", "export", dir, "--out", Tmp("bad_nan_export.pt")});
  EXPECT_NE(exported.exit_code, 0);
  EXPECT_NE(exported.output.find("layer_02-model_states.pt: tensor 'weight' has non-finite values"), std::string::npos)
      << exported.output;
  dir = Copy("inf_bias");
  PoisonTensor(dir + "/global_step2", "layer_07-model_states.pt", "bias", -INFINITY);
  ExpectLoadError(dir, {"global_step2/layer_07-model_states.pt: tensor 'bias' has non-finite values "
                        "(0 NaN, 1 infinite"});
  // An import (no manifest, no job file) is checked as well.
  dir = Copy("nan_import");
  PoisonTensor(dir + "/global_step2", "layer_00-model_states.pt", "bias", NAN);
  fs::remove(dir + "/global_step2/manifest.json");
  fs::remove(dir + "/global_step2/job.json");
  ExpectLoadError(dir, {"layer_00-model_states.pt: tensor 'bias' has non-finite values"});
}

// An edit of job.json or manifest.json and the error it must cause. The cases the
// red-team report names are loaded by pprun (the resume path); the others go through
// `ppc export`, which reads and checks the same files in one short process.
struct JobEdit {
  const char* name;
  std::function<void(nlohmann::json&)> edit;
  std::string error;
  bool via_load = false;
};

// `ppc export` of the checkpoint fails (exit status 1) with `fragment` in its output.
void ExpectExportError(const std::string& dir, const std::string& fragment) {
  const std::string out = Tmp("bad_export.pt");
  RunResult r = Exec({"tools/ppc/ppc", "export", dir, "--out", out});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(fragment), std::string::npos) << "want '" << fragment << "' in\n" << r.output;
  EXPECT_FALSE(fs::exists(out));
}

void BadCheckpoint::ExpectEditsRefused(const std::string& prefix, const std::vector<JobEdit>& edits,
                                       void (*apply)(const std::string&, const std::function<void(nlohmann::json&)>&)) {
  for (const auto& e : edits) {
    SCOPED_TRACE(e.name);
    const std::string dir = Copy(prefix + e.name);
    apply(dir + "/global_step2", e.edit);
    if (e.via_load) {
      ExpectLoadError(dir, {e.error});
    } else {
      ExpectExportError(dir, e.error);
    }
  }
}

TEST_F(BadCheckpoint, ImpossibleTopologyOrPartitionInJobFile) {
  using J = nlohmann::json;
  const std::vector<JobEdit> edits = {
      {"num_layers", [](J& j) { j["num_layers"] = 9; },
       "job.json: 'num_layers' is 9 but its 'model' has 8 layers", true},
      {"stages3", [](J& j) { j["topology"]["num_stages"] = 3; },
       "job.json topology: 'partition' must be a list of 3 [begin, end] layer ranges", true},
      {"stages99", [](J& j) { j["topology"]["num_stages"] = 99; },
       "job.json topology: 'num_stages' is 99 but the model has 8 layers", true},
      {"stages0", [](J& j) { j["topology"]["num_stages"] = 0; },
       "job.json topology: 'num_stages' must be >= 1, not 0", true},
      {"stages_str", [](J& j) { j["topology"]["num_stages"] = "two"; },
       "job.json topology: 'num_stages' must be an integer, not \"two\""},
      {"partition_range", [](J& j) { j["topology"]["partition"] = J::parse("[[0,99],[-1,8]]"); },
       "job.json topology: 'partition' virtual stage 0 is [0,99]; each must be a non-empty range", true},
      {"partition_gap", [](J& j) { j["topology"]["partition"] = J::parse("[[0,3],[4,8]]"); },
       "job.json topology: 'partition' virtual stage 1 is [4,8]"},
      // One range per virtual stage: 2 stages x 2 virtual stages need 4.
      {"partition_per_stage_with_virtual_stages", [](J& j) { j["config"]["virtual_stages"] = 2; },
       "job.json topology: 'partition' must be a list of 4 [begin, end] layer ranges (one per virtual stage)"},
      {"partition_virtual_gap",
       [](J& j) {
         j["config"]["virtual_stages"] = 2;
         j["topology"]["partition"] = J::parse("[[0,2],[2,4],[5,6],[6,8]]");
       },
       "job.json topology: 'partition' virtual stage 2 is [5,6]"},
      {"partition_short", [](J& j) { j["topology"]["partition"] = J::parse("[[0,3],[3,7]]"); },
       "job.json topology: 'partition' covers layers [0, 7) of the model's 8"},
      {"dp0", [](J& j) { j["topology"]["data_parallel"] = 0; },
       "job.json topology: 'data_parallel' must be >= 1, not 0"},
      {"schedule", [](J& j) { j["topology"]["schedule"] = "gpipe"; },
       "job.json topology: 'schedule' is 'gpipe' but 'config' says '1f1b'"},
      {"zero7", [](J& j) { j["zero_stage"] = 7; }, "job.json: 'zero_stage' is 7; it must be 0 or 1", true},
      {"zero1", [](J& j) { j["zero_stage"] = 1; }, "job.json: 'zero_stage' is 1 but 'config' says zero_stage 0"},
      {"config", [](J& j) { j["config"]["micro_batches"] = 0; },
       "job.json: the plan it was saved with ('model', 'config', 'topology') is invalid: config.micro_batches is 0"},
  };
  ExpectEditsRefused("job_", edits, EditJob);
}

TEST_F(BadCheckpoint, ImpossibleStepRngOptimizerOrTagInJobFile) {
  using J = nlohmann::json;
  const std::vector<JobEdit> edits = {
      {"next_step_negative", [](J& j) { j["rng"]["next_step"] = -1; },
       "job.json rng: 'next_step' must be >= 0, not -1", true},
      {"next_step", [](J& j) { j["rng"]["next_step"] = 5; }, "job.json rng: 'next_step' is 5 but 'step' is 2"},
      {"step", [](J& j) { j["step"] = 3; }, "job.json rng: 'next_step' is 2 but 'step' is 3"},
      {"rng_kind", [](J& j) { j["rng"]["kind"] = "mt19937"; },
       "job.json rng: 'kind' is 'mt19937'; this build's randomness is 'counter-based'"},
      {"rng_seed", [](J& j) { j["rng"]["seed"] = 7; }, "job.json rng: 'seed' is 7 but 'config' says seed 1138"},
      {"opt_type", [](J& j) { j["optimizer"]["type"] = "lamb"; },
       "job.json optimizer: 'type' is 'lamb'; it must be sgd, adam or adamw"},
      {"opt_config", [](J& j) { j["optimizer"]["type"] = "adamw"; },
       "job.json optimizer: 'type' is 'adamw' but 'config' says 'adam'"},
      {"opt_steps", [](J& j) { j["optimizer"]["steps"] = 1; }, "job.json optimizer: 'steps' is 1 but 'step' is 2"},
      {"opt_state", [](J& j) { j["optimizer"]["state"] = {"exp_avg", "momentum_buffer"}; },
       "job.json optimizer: 'state' names 'momentum_buffer', which is not adam state"},
      {"tag", [](J& j) { j["tag"] = "global_step9"; },
       "job.json: 'tag' is 'global_step9' but the checkpoint's directory is 'global_step2'", true},
      {"unknown", [](J& j) { j["extra"] = 1; }, "job.json: unexpected field 'extra'"},
  };
  ExpectEditsRefused("job_", edits, EditJob);
}

TEST_F(BadCheckpoint, ImpossibleOrForeignDataPositionInJobFile) {
  using J = nlohmann::json;
  const std::vector<JobEdit> edits = {
      {"source", [](J& j) { j["data"]["source"] = "cifar"; },
       "job.json data: 'source' is 'cifar'; it must be 'synthetic' or 'cifar10'", true},
      {"source_size", [](J& j) { j["data"]["source"] = "cifar10"; },
       "job.json data: 'source' is 'cifar10' but 'dataset_size' is 0"},
      {"samples", [](J& j) { j["data"]["samples"] = 31; },
       "job.json: synthetic data position (samples 31, epoch 0, cursor 0, shuffle_seed 1138) is inconsistent with step "
       "2 of 16 samples"},
      {"no_data", [](J& j) { j.erase("data"); }, "job.json: 'data' is missing"},
      {"data_field", [](J& j) { j["data"]["offset"] = 3; }, "job.json data: unexpected field 'offset'"},
  };
  ExpectEditsRefused("job_", edits, EditJob);
  // A consistent CIFAR-10 position (2 steps x 16 of 50 samples) on a synthetic run: the
  // position means nothing here. Refused, unless only the weights are loaded.
  std::string dir = Copy("job_cifar_on_synthetic");
  EditJob(dir + "/global_step2", [](J& j) {
    j["data"] = {{"source", "cifar10"}, {"samples", 32}, {"epoch", 0}, {"cursor", 32}, {"dataset_size", 50},
                 {"shuffle_seed", 1138}};
  });
  ExpectLoadError(dir, {"job.json: 'data' 'source': the checkpoint was trained on CIFAR-10 data ('cifar10', 50 "
                        "training samples), this run reads synthetic data ('synthetic')",
                        "--load-module-only"});
  RunResult r = Pprun(*plan_, 2, "bad_cifar_module_only", {"--steps", "3", "--load", dir, "--load-module-only"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.losses.size(), 3u);
}

TEST_F(BadCheckpoint, ImpossibleManifest) {
  using J = nlohmann::json;
  const std::vector<JobEdit> edits = {
      {"tag", [](J& m) { m["tag"] = "global_step9"; },
       "manifest.json: 'tag' is 'global_step9' but the checkpoint's directory is 'global_step2'", true},
      {"checksum", [](J& m) { m["checksum"] = "sha256"; },
       "manifest.json: 'checksum' is 'sha256'; this build writes and verifies 'crc32 (zlib)' only", true},
      {"no_checksum", [](J& m) { m.erase("checksum"); }, "manifest.json: 'checksum' is missing"},
      {"unknown", [](J& m) { m["signature"] = "x"; }, "manifest.json: unexpected field 'signature'"},
      {"entry_field", [](J& m) { m["files"]["job.json"]["sha256"] = "x"; },
       "manifest.json entry 'job.json': unexpected field 'sha256'"},
      {"unlisted", [](J& m) { m["files"].erase("layer_01-model_states.pt"); },
       "manifest.json: does not list 'layer_01-model_states.pt' (layer 1 'act1' (ReLU))"},
  };
  ExpectEditsRefused("manifest_", edits, EditManifest);
  // Files of layers the model does not have, or optimizer state of a layer without parameters.
  std::string dir = Copy("manifest_layer9");
  ReplaceConsistently(dir + "/global_step2", "layer_09-model_states.pt",
                      *ir::ReadFile(dir + "/global_step2/layer_07-model_states.pt"));
  ExpectLoadError(dir, {"manifest.json: lists 'layer_09-model_states.pt', but the model has 8 layers (0..7)"});
  dir = Copy("manifest_relu_optim");
  ReplaceConsistently(dir + "/global_step2", "layer_01-optim_states.pt",
                      *ir::ReadFile(dir + "/global_step2/layer_00-optim_states.pt"));
  ExpectExportError(dir,
                    "manifest.json: lists 'layer_01-optim_states.pt', but layer 1 'act1' (ReLU) has no parameters");
  // A checkpoint's tag is its directory's name: a renamed copy is another tag's checkpoint.
  dir = Copy("manifest_renamed");
  fs::rename(dir + "/global_step2", dir + "/renamed");
  ExpectLoadError(dir, {"manifest.json: 'tag' is 'global_step2' but the checkpoint's directory is 'renamed'"},
                  {"--tag", "renamed"});
}

TEST(SafeOutputs, SavesAndExportsNeverReplaceWhatIsNotTheirs) {
  const std::string plan = Compile(Config{kMlp, 2, 1, 4, "sgd"}, "safe");
  // A user's file where the checkpoint's tag would go.
  const std::string dir = Tmp("safe_ckpt");
  fs::create_directories(dir);
  ASSERT_TRUE(ir::WriteFile(dir + "/global_step2", "precious").ok());
  RunResult r = Pprun(plan, 2, "safe_save", {"--steps", "2", "--save-dir", dir});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("global_step2' exists and is not a ppc checkpoint"), std::string::npos) << r.output;
  EXPECT_EQ(*ir::ReadFile(dir + "/global_step2"), "precious");
  EXPECT_EQ(CountDirs(dir, "global_step2.partial-"), 0);
  // A FIFO (or a device) as the export is refused, before any rank starts.
  const std::string fifo = Tmp("safe_fifo");
  fs::remove(fifo);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  RunResult e = Pprun(plan, 2, "safe_export", {"--steps", "1", "--export", fifo});
  EXPECT_EQ(e.exit_code, 2);
  EXPECT_NE(e.output.find("--export: '" + fifo + "' is a FIFO"), std::string::npos) << e.output;
  EXPECT_TRUE(fs::is_fifo(fifo));
}

// ---------------------------------------------------------------------------------
// Evaluation.

TEST(Eval, AccuracyRisesAboveChanceAndP2EvaluatesAsP1) {
  Config one{kMlp, 1, 1, 4, "adam"};
  const std::string plan = Compile(one, "eval_p1");
  RunResult before = Pprun(plan, 1, "eval_before", {"--eval", "--eval-steps", "4"});
  ASSERT_EQ(before.exit_code, 0) << before.output;
  ASSERT_EQ(before.evals.size(), 1u);
  const std::string dir = Tmp("eval_ckpt");
  RunResult trained = Pprun(plan, 1, "eval_train",
                            {"--steps", "30", "--save-dir", dir, "--eval-every", "10", "--eval-steps", "4"});
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  ASSERT_EQ(trained.evals.size(), 3u);  // after steps 10, 20, 30
  EXPECT_EQ(trained.evals[2][0], 30);
  RunResult after = Pprun(plan, 1, "eval_after", {"--load", dir, "--eval", "--eval-steps", "4"});
  ASSERT_EQ(after.exit_code, 0) << after.output;
  ASSERT_EQ(after.evals.size(), 1u);
  const double acc0 = before.evals[0][2], acc = after.evals[0][2];
  EXPECT_EQ(after.evals[0][3], 4 * 4 * 4) << "4 batches of 4 micro-batches of 4";
  EXPECT_LT(acc0, 0.2);  // 10 classes: chance is 0.1
  EXPECT_GT(acc, 0.4) << "trained accuracy";
  EXPECT_LT(after.evals[0][1], before.evals[0][1]);
  // The evaluation during training (after step 30) is the evaluation of its checkpoint.
  EXPECT_NEAR(trained.evals[2][1], after.evals[0][1], 1e-9);
  EXPECT_EQ(trained.evals[2][2], acc);
  // The same checkpoint evaluated by 2 stages, and by 2 stages x 2 replicas.
  for (const Config& s : {Config{kMlp, 2, 1, 4, "adam"}, Config{kMlp, 2, 2, 2, "adam"}}) {
    RunResult p2 = Pprun(Compile(s, "eval_p2"), Ranks(s), "eval_p2", {"--load", dir, "--eval", "--eval-steps", "4"});
    ASSERT_EQ(p2.exit_code, 0) << p2.output;
    ASSERT_EQ(p2.evals.size(), 1u);
    EXPECT_NEAR(p2.evals[0][1], after.evals[0][1], 1e-5 * after.evals[0][1]);
    EXPECT_EQ(p2.evals[0][2], acc);
    // Every rank prints the same result.
    EXPECT_NE(p2.output.find(absl::StrCat("rank ", Ranks(s) - 1, " eval loss: ")), std::string::npos) << p2.output;
  }
  // A sequence model predicts per position: its accuracy counts positions, not sequences
  // (11 classes: an untrained model is near 1/11, never above 1).
  Config lm{kTiedLm, 1, 1, 4, "sgd"};
  RunResult tokens = Pprun(Compile(lm, "eval_lm"), 1, "eval_lm", {"--eval", "--eval-steps", "2"});
  ASSERT_EQ(tokens.exit_code, 0) << tokens.output;
  ASSERT_EQ(tokens.evals.size(), 1u);
  EXPECT_LT(tokens.evals[0][2], 0.3);
  // Predictions: the last stage's outputs for every evaluated sample, in sample order.
  const std::string pred = Tmp("eval_pred.pt");
  RunResult predicted = Pprun(Compile(Config{kMlp, 2, 2, 2, "adam"}, "eval_pred"), 4, "eval_pred",
                              {"--load", dir, "--eval", "--eval-steps", "3", "--predict", pred});
  ASSERT_EQ(predicted.exit_code, 0) << predicted.output;
  auto p = runtime::ReadTorchFile(pred);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_NE(p->Find("outputs"), nullptr);
  EXPECT_EQ(p->Find("outputs")->tensor.sizes(), at::IntArrayRef({3 * 16, 10}));
  EXPECT_EQ(p->Find("labels")->tensor.sizes(), at::IntArrayRef({3 * 16}));
  // Their arg-max agrees with the labels as often as the reported accuracy says.
  const double agree = p->Find("outputs")->tensor.argmax(1).eq(p->Find("labels")->tensor).sum().item<double>() / 48;
  EXPECT_NEAR(agree, predicted.evals[0][2], 1e-9);
  // In the same sample order as one process writes them.
  const std::string pred1 = Tmp("eval_pred1.pt");
  RunResult one_rank = Pprun(plan, 1, "eval_pred1", {"--load", dir, "--eval", "--eval-steps", "3", "--predict", pred1});
  ASSERT_EQ(one_rank.exit_code, 0) << one_rank.output;
  auto q = runtime::ReadTorchFile(pred1);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_TRUE(q->Find("labels")->tensor.equal(p->Find("labels")->tensor));
  EXPECT_TRUE(q->Find("outputs")->tensor.allclose(p->Find("outputs")->tensor, 1e-5, 1e-6));
}

// ---------------------------------------------------------------------------------
// Tied weights, export.

TEST(TiedWeights, SavedOnceRestoredIntoEveryCopyAndExportedUnderBothNames) {
  Config s{kTiedLm, 2, 1, 4, "sgd"};
  s.partition = "explicit:3";
  const std::string plan = Compile(s, "tied");
  RunResult full = Pprun(plan, 2, "tied_full", {"--steps", "6"});
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::string dir = Tmp("tied_ckpt");
  ASSERT_EQ(Pprun(plan, 2, "tied_first", {"--steps", "3", "--save-dir", dir}).exit_code, 0);
  // The embedding (layer 0) owns the weight; the output projection (layer 4) stores none.
  auto owner = runtime::ReadTorchFile(dir + "/global_step3/layer_00-model_states.pt");
  auto copy = runtime::ReadTorchFile(dir + "/global_step3/layer_04-model_states.pt");
  ASSERT_TRUE(owner.ok() && copy.ok());
  EXPECT_NE(owner->Find("weight"), nullptr);
  EXPECT_EQ(copy->Find("weight"), nullptr);
  for (const Config& target : {s, Config{kTiedLm, 1, 1, 4, "sgd"}}) {
    RunResult got = Pprun(Compile(target, "tied_to"), Ranks(target), "tied_to", {"--steps", "6", "--load", dir});
    ASSERT_EQ(got.exit_code, 0) << got.output;
    ExpectNear(got.losses, std::vector<double>(full.losses.begin() + 3, full.losses.end()), 1e-5);
    EXPECT_EQ(got.weights.at("layer0.weight.f32"), got.weights.at("layer4.weight.f32"));
    ExpectWeightsNear(got, full, 1e-5);
  }
  // Export: one state dict with the model's names, the tied weight under both.
  const std::string exported = Tmp("tied_export.pt");
  RunResult e = Pprun(plan, 2, "tied_export", {"--steps", "3", "--load", dir, "--export", exported});
  ASSERT_EQ(e.exit_code, 0) << e.output;
  auto sd = runtime::ReadTorchFile(exported);
  ASSERT_TRUE(sd.ok()) << sd.status();
  std::vector<std::string> keys;
  for (const auto& [k, v] : sd->dict) keys.push_back(k->s);
  EXPECT_EQ(keys, std::vector<std::string>(
                      {"embed.weight", "mix.weight", "mix.bias", "norm.weight", "norm.bias", "unembed.weight"}));
  EXPECT_TRUE(sd->Find("embed.weight")->tensor.equal(sd->Find("unembed.weight")->tensor));
  // ppc export writes the same dict from the checkpoint directory.
  const std::string tool_out = Tmp("tied_tool_export.pt");
  RunResult tool = Exec({"tools/ppc/ppc", "export", dir, "--out", tool_out});
  ASSERT_EQ(tool.exit_code, 0) << tool.output;
  EXPECT_EQ(*ir::ReadFile(tool_out), *ir::ReadFile(exported));
  RunResult missing = Exec({"tools/ppc/ppc", "export", dir, "--tag", "global_step9", "--out", tool_out});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("no checkpoint tag 'global_step9'"), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace ppc
