// What "verified before it runs" costs: the time pprun's check takes before any rank
// starts (load the plan file, check its fingerprint, the structural rules and the full
// verifier), for AlexNet and for large pipelines. Prints a table; every figure is the
// median of --repeats runs in this process.
//   bazel run -c opt //bench:verify_bench -- --repeats 5
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "google/protobuf/text_format.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "passes/analysis/verifier.h"
#include "passes/compile.h"
#include "passes/test_util.h"

ABSL_FLAG(int, repeats, 5, "timed runs per plan (the median is printed)");

namespace ppc {
namespace {

ir::Plan AlexNet(int stages, int data_parallel, int micro_batches) {
  ir::Plan plan;
  std::string text = *ir::ReadFile("examples/alexnet_cifar10/alexnet.textproto");
  google::protobuf::TextFormat::ParseFromString(text, plan.mutable_model());
  plan.mutable_topology()->set_num_stages(stages);
  plan.mutable_topology()->set_data_parallel(data_parallel);
  auto* c = plan.mutable_config();
  c->set_micro_batches(micro_batches);
  c->set_micro_batch_size(8);
  c->set_schedule("1f1b");
  c->set_seed(1138);
  c->set_steps(1);
  c->mutable_optimizer()->set_type("adam");
  c->mutable_optimizer()->set_lr(0.001);
  return plan;
}

void Row(const std::string& name, const ir::Plan& plan, int repeats) {
  auto compiled = passes::CompilePlan(plan.model(), plan.topology(), plan.config());
  if (!compiled.ok()) {
    std::printf("| %s | compile failed: %s |\n", name.c_str(), std::string(compiled.status().message()).c_str());
    return;
  }
  const std::string path = "/tmp/ppc_verify_bench.pb";
  (void)ir::SavePlan(*compiled, path);
  int64_t instructions = 0;
  for (const auto& p : compiled->programs()) instructions += p.instructions_size();
  for (const auto& p : compiled->eval_programs()) instructions += p.instructions_size();
  std::vector<double> load, structure, verify;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    auto loaded = ir::LoadPlan(path);
    bool ok = loaded.ok() && ir::CheckStamp(*loaded, path).ok();
    auto t1 = std::chrono::steady_clock::now();
    ok = ok && ir::CheckPlanStructure(*loaded, true).ok();
    auto t2 = std::chrono::steady_clock::now();
    ok = ok && passes::VerifyPlan(*loaded).ok();
    auto t3 = std::chrono::steady_clock::now();
    if (!ok) std::printf("(verification failed)\n");
    load.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    structure.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    verify.push_back(std::chrono::duration<double, std::milli>(t3 - t2).count());
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("| %s | %lld | %.2f | %.2f | %.2f | %.2f |\n", name.c_str(), static_cast<long long>(instructions),
              median(load), median(structure), median(verify), median(load) + median(verify));
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  std::printf("| plan | instructions | load + fingerprint ms | structural rules ms | full verifier ms (includes the structural rules) | pprun's check, total ms |\n");
  std::printf("|---|---|---|---|---|---|\n");
  ppc::Row("AlexNet P=2 M=32 (the seed's config)", ppc::AlexNet(2, 1, 32), repeats);
  ppc::Row("AlexNet P=2 x D=2 M=16", ppc::AlexNet(2, 2, 16), repeats);
  ppc::Row("129-layer MLP P=64 M=512", ppc::passes::MlpPlan(64, 1, 512, "1f1b", std::vector<int>(65, 64)), repeats);
  ppc::Row("129-layer MLP P=64 M=4096", ppc::passes::MlpPlan(64, 1, 4096, "1f1b", std::vector<int>(65, 64)),
           repeats);
  return 0;
}
