// Where `ppc compile`'s time goes. Compiles one model as `ppc compile` does (the default
// pipeline for the schedule, the verifier after every pass that changed the plan, the
// final verification and stamp, a binary save), but runs the steps itself so that each
// is timed on its own:
//   - each pass's Run alone;
//   - the pipeline's change detection: ir::HashParts of the plan after every pass
//     (compared with the one after the previous pass);
//   - VerifyPlan after every pass that changed the plan (`--verify-each`, on by default),
//     skipping the parts it passed before, as the pipeline's verifier does;
//   - StampVerified's two parts (the final VerifyPlan, which CompilePlan skips when the
//     pipeline verified the last change; ir::Stamp, the whole-plan fingerprint) and
//     SavePlan.
// Prints a markdown table of the medians of --repeats runs, and the end-to-end time of
// passes::CompileModule in this process for comparison.
//   bazel run //bench:compile_profile -- --model=$PWD/spec.textproto --stages=64 --micro_batches=512
//   bazel run //bench:compile_profile -- --model=... --stages=64 --micro_batches=512 \
//       --virtual_stages=2 --schedule=interleaved-1f1b
// A relative --model is taken from the directory `bazel run` was started in.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "compiler/pass_pipeline.h"
#include "ir/plan_io.h"
#include "passes/analysis/verifier.h"
#include "passes/compile.h"
#include "passes/registry.h"

ABSL_FLAG(std::string, model, "", "model spec (ppc.ir.ModelSpec text proto)");
ABSL_FLAG(int, stages, 64, "pipeline stages P");
ABSL_FLAG(int, data_parallel, 1, "data-parallel replicas D");
ABSL_FLAG(int, micro_batches, 512, "micro-batches M per replica");
ABSL_FLAG(int, virtual_stages, 1, "virtual stages V per stage");
ABSL_FLAG(std::string, schedule, "1f1b", "schedule (the pipeline is the schedule's default one)");
ABSL_FLAG(int, repeats, 3, "timed runs (medians are printed)");
ABSL_FLAG(std::string, out, "/tmp/ppc_compile_profile.pb", "where SavePlan writes (binary)");

namespace ppc {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int Main() {
  std::string model_path = absl::GetFlag(FLAGS_model);
  if (model_path.empty()) {
    std::fprintf(stderr, "compile_profile: --model is required\n");
    return 2;
  }
  if (model_path[0] != '/') {
    if (const char* wd = std::getenv("BUILD_WORKING_DIRECTORY")) model_path = absl::StrCat(wd, "/", model_path);
  }
  ir::Plan given;
  if (absl::Status s = ir::ParseTextProtoFile(model_path, given.mutable_model()); !s.ok()) {
    std::fprintf(stderr, "compile_profile: %s\n", s.ToString().c_str());
    return 1;
  }
  given.mutable_topology()->set_num_stages(absl::GetFlag(FLAGS_stages));
  given.mutable_topology()->set_data_parallel(absl::GetFlag(FLAGS_data_parallel));
  ir::TrainingConfig* c = given.mutable_config();
  c->set_micro_batches(absl::GetFlag(FLAGS_micro_batches));
  c->set_virtual_stages(absl::GetFlag(FLAGS_virtual_stages));
  c->set_schedule(absl::GetFlag(FLAGS_schedule));
  c->set_seed(1138);
  passes::CanonicalizeConfig(given.topology(), c);

  auto pipeline_text = passes::DefaultPipeline(given.config());
  if (!pipeline_text.ok()) {
    std::fprintf(stderr, "compile_profile: %s\n", pipeline_text.status().ToString().c_str());
    return 1;
  }
  auto elements = ParsePipeline(*pipeline_text);
  if (!elements.ok()) {
    std::fprintf(stderr, "compile_profile: %s\n", elements.status().ToString().c_str());
    return 1;
  }
  std::vector<std::unique_ptr<Pass>> pass_list;
  for (const PipelineElement& e : *elements) {
    auto pass = passes::GlobalPassRegistry().Create(e.name, e.options);
    if (!pass.ok()) {
      std::fprintf(stderr, "compile_profile: %s\n", pass.status().ToString().c_str());
      return 1;
    }
    pass_list.push_back(*std::move(pass));
  }

  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  const size_t n = pass_list.size();
  std::vector<std::vector<double>> run(n), fingerprint(n), verify(n);
  std::vector<double> input_verify, final_verify, stamp, save, total, compile_plan;
  int64_t instructions = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t_start = Clock::now();
    ir::Module plan = ir::ToModule(given);
    {
      auto a = Clock::now();
      absl::Status s = passes::VerifyPlan(plan);
      input_verify.push_back(Ms(a, Clock::now()));
      if (!s.ok()) {
        std::fprintf(stderr, "compile_profile: input: %s\n", s.ToString().c_str());
        return 1;
      }
    }
    // As the pipeline does: one set of part hashes per pass, the one after a pass being
    // the one before the next; the verifier skips the parts it passed before.
    ir::PartHashes current = ir::HashParts(plan), proven = current;
    for (size_t i = 0; i < n; ++i) {
      auto a = Clock::now();
      auto b = a;
      absl::Status ran = pass_list[i]->Run(plan);
      auto d = Clock::now();
      if (!ran.ok()) {
        std::fprintf(stderr, "compile_profile: pass %s: %s\n", pass_list[i]->name().c_str(), ran.ToString().c_str());
        return 1;
      }
      const ir::PartHashes after = ir::HashParts(plan);
      const bool changed = after != current;
      current = after;
      auto e = Clock::now();
      run[i].push_back(Ms(b, d));
      fingerprint[i].push_back(Ms(a, b) + Ms(d, e));
      double v = 0;
      if (changed) {
        Unchanged unchanged;
        if (current.header == proven.header) {
          unchanged.programs = current.programs == proven.programs;
          unchanged.eval_programs = current.eval_programs == proven.eval_programs;
        }
        absl::Status s = passes::VerifyPlan(plan, unchanged);
        proven = current;
        v = Ms(e, Clock::now());
        if (!s.ok()) {
          std::fprintf(stderr, "compile_profile: after %s: %s\n", pass_list[i]->name().c_str(), s.ToString().c_str());
          return 1;
        }
      }
      verify[i].push_back(v);
    }
    // passes::StampVerified, in its two parts: the final VerifyPlan (skipped, as in
    // CompilePlan, because every change was verified above), then ir::Stamp (the
    // whole-plan fingerprint).
    auto a = Clock::now();
    plan.header.set_unverified(false);
    absl::Status verified = absl::OkStatus();
    plan.header.set_unverified(!verified.ok());
    auto b = Clock::now();
    ir::Stamp(plan);
    auto b2 = Clock::now();
    absl::Status saved = ir::SavePlan(plan, absl::GetFlag(FLAGS_out));
    auto d = Clock::now();
    if (!verified.ok() || !saved.ok()) {
      std::fprintf(stderr, "compile_profile: %s %s\n", verified.ToString().c_str(), saved.ToString().c_str());
      return 1;
    }
    final_verify.push_back(Ms(a, b));
    stamp.push_back(Ms(b, b2));
    save.push_back(Ms(b2, d));
    total.push_back(Ms(t_start, d));
    instructions = 0;
    for (const auto& p : plan.programs) instructions += p.size();
    for (const auto& p : plan.eval_programs) instructions += p.size();

    auto c0 = Clock::now();
    auto compiled = passes::CompileModule(given.model(), given.topology(), given.config());
    compile_plan.push_back(Ms(c0, Clock::now()));
    if (!compiled.ok()) {
      std::fprintf(stderr, "compile_profile: CompileModule: %s\n", compiled.status().ToString().c_str());
      return 1;
    }
  }

  const double all = Median(total);
  std::printf("P=%d D=%d M=%d V=%d schedule %s, %d layers, %lld instructions (training + eval); median of %d\n",
              absl::GetFlag(FLAGS_stages), absl::GetFlag(FLAGS_data_parallel), absl::GetFlag(FLAGS_micro_batches),
              absl::GetFlag(FLAGS_virtual_stages), given.config().schedule().c_str(), given.model().layers_size(),
              static_cast<long long>(instructions), repeats);
  std::printf("pipeline: %s\n\n", pipeline_text->c_str());
  std::printf("| step | pass ms | hashes ms (change detection; the stamp's fingerprint) | verifier after it ms |\n|---|---|---|---|\n");
  std::printf("| (input) | | | %.1f |\n", Median(input_verify));
  double sum_run = 0, sum_fp = 0, sum_verify = Median(input_verify);
  for (size_t i = 0; i < n; ++i) {
    std::printf("| %s | %.1f | %.1f | %.1f |\n", pass_list[i]->name().c_str(), Median(run[i]), Median(fingerprint[i]),
                Median(verify[i]));
    sum_run += Median(run[i]);
    sum_fp += Median(fingerprint[i]);
    sum_verify += Median(verify[i]);
  }
  std::printf("| final check and stamp | | %.1f | %.1f |\n", Median(stamp), Median(final_verify));
  sum_fp += Median(stamp);
  sum_verify += Median(final_verify);
  std::printf("| **sum** | **%.1f** | **%.1f** | **%.1f** |\n\n", sum_run, sum_fp, sum_verify);
  std::printf("SavePlan (binary): %.1f ms; all of the above: %.1f ms (passes %.0f%%, hashes %.0f%%, "
              "verifier %.0f%%, save %.0f%%)\n",
              Median(save), all, 100 * sum_run / all, 100 * sum_fp / all, 100 * sum_verify / all,
              100 * Median(save) / all);
  std::printf("passes::CompileModule end to end, in process: %.1f ms\n", Median(compile_plan));
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) {
  // As ppc's main: freed memory stays in the heap (tools/ppc/ppc_main.cc says why).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  absl::ParseCommandLine(argc, argv);
  return ppc::Main();
}
