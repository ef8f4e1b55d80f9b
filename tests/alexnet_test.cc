// The seed's example end to end: AlexNet (57M parameters) at a small image size on
// CPU, in pipeline mode (P=2, P=2 x D=2) and base mode (D=2), against one process
// with the same global batch; synthetic data and CIFAR-10 files in the real format.
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "ir/plan_io.h"

namespace ppc {
namespace {

const char kTrain[] = "examples/alexnet_cifar10/train";
constexpr int kSteps = 5;

std::string Tmp(const std::string& name) { return ::testing::TempDir() + "/" + name; }

struct Result {
  int exit_code = -1;
  std::string output;
  std::vector<double> losses;
};

Result Train(const std::string& name, const std::vector<std::string>& flags) {
  std::string metrics = Tmp(name + ".metrics"), log = Tmp(name + ".log");
  std::string cmd = absl::StrCat("OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ", kTrain, " --steps ", kSteps,
                                 " --image-size 64 --timeout-s 120 --plan-out ", Tmp(name + ".pb"), " --metrics-out ",
                                 metrics);
  for (const auto& f : flags) absl::StrAppend(&cmd, " '", f, "'");
  absl::StrAppend(&cmd, " > ", log, " 2>&1");
  Result r;
  int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = ir::ReadFile(log).value_or("");
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() == 3) r.losses.push_back(std::stod(parts[1]));
  }
  return r;
}

std::string SmallConfig() {
  std::string path = Tmp("ds_small.json");
  EXPECT_TRUE(ir::WriteFile(path, R"({
    "train_batch_size": 8,
    "train_micro_batch_size_per_gpu": 2,
    "optimizer": {"type": "Adam", "params": {"lr": 0.0001, "betas": [0.9, 0.999], "eps": 1e-8}},
    "steps_per_print": 1
  })").ok());
  return path;
}

void ExpectSameLosses(const Result& ref, const Result& got) {
  ASSERT_EQ(got.exit_code, 0) << got.output;
  ASSERT_EQ(got.losses.size(), static_cast<size_t>(kSteps)) << got.output;
  for (int i = 0; i < kSteps; ++i) EXPECT_NEAR(got.losses[i], ref.losses[i], 1e-5 * ref.losses[i]) << "step " << i + 1;
}

TEST(AlexNet, PipelineAndBaseModeMatchOneProcess) {
  const std::string config = SmallConfig();
  Result ref = Train("ref", {"--pipeline-parallel-size", "1", "--deepspeed_config", config});
  ASSERT_EQ(ref.exit_code, 0) << ref.output;
  ASSERT_EQ(ref.losses.size(), static_cast<size_t>(kSteps));
  EXPECT_NE(ref.output.find("step:   5 /   5 loss: "), std::string::npos) << ref.output;
  EXPECT_NE(ref.output.find("4 micro-batches of 2"), std::string::npos) << ref.output;
  // The seed's 57,044,810 parameters, split over two stages by parameter count.
  Result pipe = Train("pipe", {"-p", "2", "--deepspeed_config", config});
  ExpectSameLosses(ref, pipe);
  auto plan = ir::LoadPlan(Tmp("pipe.pb"));
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t params = 0;
  for (const auto& l : plan->model().layers()) params += l.param_count();
  EXPECT_EQ(params, 57044810);
  EXPECT_EQ(plan->topology().num_stages(), 2);
  // Base mode: the seed's train_base, plain data-parallel over two ranks.
  Result base = Train("base", {"--pipeline-parallel-size", "0", "--nproc", "2", "--deepspeed_config", config});
  ExpectSameLosses(ref, base);
  EXPECT_NE(base.output.find("base mode (data-parallel): 1 stage(s) x 2 replica(s), 2 micro-batches of 2"),
            std::string::npos)
      << base.output;
  // Both axes at once: P=2 x D=2.
  Result grid = Train("grid", {"-p", "2", "--nproc", "4", "--deepspeed_config", config});
  ExpectSameLosses(ref, grid);
}

TEST(AlexNet, TrainsOnCifar10FilesInTheRealFormat) {
  std::string dir = Tmp("cifar");
  mkdir(dir.c_str(), 0755);
  for (int f = 1; f <= 5; ++f) {
    std::ofstream out(absl::StrCat(dir, "/data_batch_", f, ".bin"), std::ios::binary);
    for (int r = 0; r < 8; ++r) {
      out.put(static_cast<char>((3 * f + r) % 10));
      for (int k = 0; k < 3072; ++k) out.put(static_cast<char>((f * 97 + r * 13 + k * 7) % 256));
    }
  }
  const std::string config = SmallConfig();
  Result one = Train("cifar_ref", {"-p", "1", "--data", dir, "--deepspeed_config", config});
  ASSERT_EQ(one.exit_code, 0) << one.output;
  // Evaluation reads test_batch.bin; without it, the error says so.
  Result no_test = Train("cifar_no_test", {"-p", "2", "--data", dir, "--deepspeed_config", config, "--eval-every", "5"});
  EXPECT_NE(no_test.exit_code, 0);
  EXPECT_NE(no_test.output.find("test_batch.bin' is missing or unreadable"), std::string::npos) << no_test.output;
  EXPECT_EQ(no_test.output.find("step: "), std::string::npos) << "found before training, not after";
  {
    std::ofstream out(dir + "/test_batch.bin", std::ios::binary);
    for (int r = 0; r < 8; ++r) {
      out.put(static_cast<char>(r % 10));
      for (int k = 0; k < 3072; ++k) out.put(static_cast<char>((r * 29 + k * 3) % 256));
    }
  }
  Result two = Train("cifar_p2", {"-p", "2", "--data", dir, "--deepspeed_config", config, "--eval-every", "5"});
  ExpectSameLosses(one, two);
  // --eval-every evaluates the held-out batch (8 samples) after step 5, during training.
  EXPECT_NE(two.output.find("eval step:   5 loss: "), std::string::npos) << two.output;
  EXPECT_NE(two.output.find(" acc: "), std::string::npos) << two.output;
  EXPECT_NE(two.output.find(" samples: 8\n"), std::string::npos) << two.output;
  Result synthetic = Train("cifar_synth", {"-p", "1", "--deepspeed_config", config});
  ASSERT_EQ(synthetic.exit_code, 0);
  EXPECT_NE(one.losses[0], synthetic.losses[0]) << "the files were not used";

  Result missing = Train("cifar_missing", {"-p", "2", "--data", Tmp("nope"), "--deepspeed_config", config});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("CIFAR-10 directory '" + Tmp("nope") + "' does not exist"), std::string::npos)
      << missing.output;
}

TEST(AlexNet, RejectsUnsupportedBackendsAndBadConfigs) {
  // Refused before any rank starts (the rules themselves: runtime/device_test.cc).
  Result nccl = Train("nccl", {"--backend", "nccl", "--device", "cpu"});
  EXPECT_EQ(nccl.exit_code, 2);
  EXPECT_NE(nccl.output.find("--backend nccl needs --device cuda"), std::string::npos) << nccl.output;
  Result mpi = Train("mpi", {"--backend", "mpi"});
  EXPECT_EQ(mpi.exit_code, 2);
  EXPECT_NE(mpi.output.find("--backend 'mpi' is not gloo, nccl or auto"), std::string::npos) << mpi.output;
  std::string bad = Tmp("bad.json");
  ASSERT_TRUE(ir::WriteFile(bad, R"({"train_batch_size": 8, "optimizer": {"type": "Adam", "params": {"lr": "fast"}}})")
                  .ok());
  Result cfg = Train("badcfg", {"--deepspeed_config", bad});
  EXPECT_NE(cfg.exit_code, 0);
  EXPECT_NE(cfg.output.find("'optimizer.params.lr' must be a number, got \"fast\""), std::string::npos) << cfg.output;
  Result nproc = Train("nproc", {"-p", "2", "--nproc", "3"});
  EXPECT_NE(nproc.output.find("--nproc 3 is not a multiple of --pipeline-parallel-size 2"), std::string::npos)
      << nproc.output;
}

}  // namespace
}  // namespace ppc
