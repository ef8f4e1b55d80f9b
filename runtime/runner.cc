#include "runtime/runner.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <torch/utils.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/status_macros.h"

namespace ppc::runtime {

absl::Status DumpWeights(const std::vector<NamedParameter>& params, const std::string& dir) {
  mkdir(dir.c_str(), 0755);
  for (const auto& p : params) {
    std::string path = absl::StrCat(dir, "/layer", p.layer, ".", p.name, ".f32");
    torch::Tensor t = p.value.detach().contiguous().to(torch::kFloat32);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) return absl::NotFoundError(absl::StrCat("cannot write '", path, "'"));
    out.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
    if (!out) return absl::DataLossError(absl::StrCat("short write to '", path, "'"));
  }
  return absl::OkStatus();
}

namespace {

// PPRUN_FAULT_INJECT="RANK:STEP" makes that rank exit abruptly at the start of that
// (1-based) step: a testing hook for dead-peer handling.
void MaybeInjectFault(int rank, int step) {
  const char* spec = std::getenv("PPRUN_FAULT_INJECT");
  int r, s;
  if (spec != nullptr && std::sscanf(spec, "%d:%d", &r, &s) == 2 && r == rank && s == step) {
    std::fprintf(stderr, "pprun: rank %d: PPRUN_FAULT_INJECT: exiting at step %d\n", rank, step);
    std::_Exit(3);
  }
}

// Ranks on one machine share its cores: LibTorch's intra-op threads default to every
// core in every rank, which oversubscribes. OMP_NUM_THREADS, when set, wins.
void SetThreads() {
  if (std::getenv("OMP_NUM_THREADS") != nullptr) return;
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  int ranks = local ? std::max(1, std::atoi(local)) : 1;
  int cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(std::max(1, cores / ranks));
}

}  // namespace

absl::StatusOr<std::vector<StepRecord>> RunRank(const ir::Plan& plan, const RendezvousOptions& rendezvous,
                                                const RunOptions& options) {
  SetThreads();
  ASSIGN_OR_RETURN(std::unique_ptr<Transport> transport, CreateGlooTransport(rendezvous));
  ASSIGN_OR_RETURN(std::unique_ptr<StageRuntime> rt, StageRuntime::Load(plan, transport.get(), options.runtime));
  const int steps = options.steps > 0 ? options.steps : std::max(1, plan.config().steps());
  const bool leader = transport->rank() == 0;
  const int print_every = options.print_every > 0                  ? options.print_every
                          : plan.config().steps_per_print() > 0 ? plan.config().steps_per_print()
                                                                 : 1;
  const bool bar = leader && options.print && isatty(STDERR_FILENO);
  std::vector<StepRecord> records;
  std::FILE* metrics = nullptr;
  if (leader && !options.metrics_out.empty()) {
    metrics = std::fopen(options.metrics_out.c_str(), "w");
    if (metrics == nullptr) return absl::NotFoundError(absl::StrCat("cannot write metrics to '", options.metrics_out, "'"));
  }
  for (int step = 0; step < steps; ++step) {
    MaybeInjectFault(transport->rank(), step + 1);
    auto start = std::chrono::steady_clock::now();
    auto result = rt->RunStep(step);
    if (!result.ok()) {
      if (metrics) std::fclose(metrics);
      return result.status();
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    StepRecord rec{step + 1, result->loss, result->samples / std::max(seconds, 1e-9)};
    records.push_back(rec);
    if (leader && options.print) {
      if (bar) std::fprintf(stderr, "\r\033[K");
      if (rec.step % print_every == 0 || rec.step == steps) {
        std::printf("step: %3lld / %3d loss: %.6f samples/s: %.1f\n", static_cast<long long>(rec.step), steps, rec.loss,
                    rec.samples_per_s);
        std::fflush(stdout);
      }
      if (bar) {
        int filled = (step + 1) * 30 / steps;
        std::fprintf(stderr, "[%.*s%*s] %d/%d", filled, "==============================", 30 - filled, "", step + 1,
                     steps);
        std::fflush(stderr);
      }
    }
    if (metrics) {
      std::fprintf(metrics, "%lld %.9g %.3f\n", static_cast<long long>(rec.step), rec.loss, rec.samples_per_s);
      std::fflush(metrics);
    }
  }
  if (bar) std::fprintf(stderr, "\r\033[K");
  if (metrics) std::fclose(metrics);
  if (!options.dump_weights.empty() && rt->replica() == 0) {
    RETURN_IF_ERROR(DumpWeights(rt->Parameters(), options.dump_weights));
  }
  return records;
}

}  // namespace ppc::runtime
