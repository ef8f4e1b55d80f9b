#include "runtime/runner.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include <torch/utils.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "runtime/checkpoint.h"
#include "runtime/memory_meter.h"
#include "runtime/nccl_transport.h"
#include "runtime/torch_file.h"

namespace ppc::runtime {

absl::Status DumpWeights(const std::vector<NamedParameter>& params, const std::string& dir) {
  mkdir(dir.c_str(), 0755);
  for (const auto& p : params) {
    std::string path = absl::StrCat(dir, "/layer", p.layer, ".", p.name, ".f32");
    torch::Tensor t = p.value.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) return absl::NotFoundError(absl::StrCat("cannot write '", path, "'"));
    out.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
    if (!out) return absl::DataLossError(absl::StrCat("short write to '", path, "'"));
  }
  return absl::OkStatus();
}

namespace {

// Testing hooks, PPRUN_FAULT_INJECT:
//   "RANK:STEP"               that rank exits abruptly at the start of that (1-based) step;
//   "RANK:save:STEP"          it dies halfway through writing its first file of the
//                             checkpoint saved after that step;
//   "RANK:PHASE:STEP:SIGNAL"  it raises SIGNAL (KILL, TERM, STOP) to itself at PHASE of
//                             that step: rendezvous (before joining; STEP is ignored),
//                             forward (its first forward), reduce (the data-parallel
//                             gradient reduction) or optimizer (the optimizer step).
struct Fault {
  int rank = -1, step = -1;
  bool in_save = false;
  bool malformed = false;  // set but not one of the forms below: an error
  std::string phase;
  int signal = 0;
};

Fault InjectedFault() {
  Fault f;
  const char* spec = std::getenv("PPRUN_FAULT_INJECT");
  if (spec == nullptr) return f;
  // Whole-string matches only: a malformed hook is refused loudly (it is a test's intent).
  char phase[16] = {0}, sig[8] = {0};
  int used = 0;
  const size_t n = std::strlen(spec);
  if (std::sscanf(spec, "%d:%15[a-z]:%d:%7[A-Z]%n", &f.rank, phase, &f.step, sig, &used) == 4 &&
      static_cast<size_t>(used) == n) {
    f.phase = phase;
    f.signal = std::string(sig) == "KILL" ? SIGKILL : std::string(sig) == "TERM" ? SIGTERM
             : std::string(sig) == "STOP" ? SIGSTOP : 0;
    if (f.signal == 0 || (f.phase != "rendezvous" && f.phase != "forward" && f.phase != "reduce" &&
                          f.phase != "optimizer")) {
      f = Fault();
      f.malformed = true;
    }
  } else if (used = 0, std::sscanf(spec, "%d:save:%d%n", &f.rank, &f.step, &used) == 2 &&
                           static_cast<size_t>(used) == n) {
    f.in_save = true;
  } else if (used = 0, !(std::sscanf(spec, "%d:%d%n", &f.rank, &f.step, &used) == 2 &&
                         static_cast<size_t>(used) == n)) {
    f = Fault();
    f.malformed = true;
  }
  if (f.rank < 0 || f.step < 0) {
    f = Fault();
    f.malformed = true;
  }
  return f;
}

void MaybeInjectFault(const Fault& fault, int rank, int step) {
  if (!fault.in_save && fault.phase.empty() && fault.rank == rank && fault.step == step) {
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

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

int64_t DirectoryBytes(const std::string& dir) {
  std::error_code ec;
  int64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) bytes += static_cast<int64_t>(e.file_size(ec));
  }
  return bytes;
}

// Peak resident set size of this process (VmHWM), in bytes.
int64_t PeakRss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    long long kb;
    if (std::sscanf(line.c_str(), "VmHWM: %lld kB", &kb) == 1) return kb * 1024;
  }
  return 0;
}

std::string EvalLine(const EvalResult& e) {
  std::string line = absl::StrFormat("loss: %.6f", e.loss);
  if (e.accuracy >= 0) absl::StrAppend(&line, absl::StrFormat(" acc: %.4f", e.accuracy));
  absl::StrAppend(&line, absl::StrFormat(" samples: %d", e.samples));
  return line;
}

// Evaluates `batches` held-out batches; the mean over them (every batch has the same
// number of samples).
absl::StatusOr<EvalResult> Evaluate(StageRuntime& rt, int batches) {
  EvalResult total;
  double correct = 0;
  for (int b = 0; b < batches; ++b) {
    ASSIGN_OR_RETURN(EvalResult r, rt.RunEval(b));
    total.loss += r.loss / batches;
    total.samples += r.samples;
    correct += r.accuracy * r.samples;
    total.accuracy = r.accuracy;  // -1 when the loss has no accuracy
  }
  if (total.accuracy >= 0) total.accuracy = correct / total.samples;
  return total;
}

}  // namespace

absl::StatusOr<RunRecords> RunRankUnguarded(const ir::Plan& plan, int rank, const TransportFactory& connect,
                                            const RunOptions& options);

absl::StatusOr<RunRecords> RunRank(const ir::Plan& plan, int rank, const TransportFactory& connect,
                                   const RunOptions& options) {
  // The interpreter turns LibTorch and Gloo errors into statuses where it calls them; this
  // is the net for the rest (an allocation failing mid-step): an error, never an abort.
  try {
    return RunRankUnguarded(plan, rank, connect, options);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("rank ", rank, ": out of memory (an allocation failed while running the plan)"));
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (what.size() > 2000) what = what.substr(0, 2000) + "...";
    const bool oom = what.find("can't allocate memory") != std::string::npos ||
                     what.find("out of memory") != std::string::npos;
    const std::string msg = absl::StrCat("rank ", rank, ": ", oom ? "out of memory: " : "", what);
    return oom ? absl::ResourceExhaustedError(msg) : absl::InternalError(msg);
  }
}

absl::StatusOr<RunRecords> RunRank(const ir::Plan& plan, const RendezvousOptions& rendezvous,
                                   const RunOptions& options) {
  if (options.backend != "gloo" && options.backend != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rendezvous.rank, ": backend '", options.backend,
                                                   "' is not gloo or nccl"));
  }
  if (options.backend == "nccl" && !options.runtime.device.is_cuda()) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rendezvous.rank, ": the nccl backend needs a CUDA device, not ",
                                                   options.runtime.device.str()));
  }
  auto join = [&plan, &rendezvous, &options]() -> absl::StatusOr<std::unique_ptr<Transport>> {
    RendezvousOptions joining = rendezvous;
    joining.plan_fingerprint = ir::Fingerprint(plan);
    if (options.backend == "nccl") return CreateNcclTransport(joining, options.runtime.device.index());
    return CreateGlooTransport(joining);
  };
  return RunRank(plan, rendezvous.rank, join, options);
}

absl::StatusOr<RunRecords> RunRankUnguarded(const ir::Plan& plan, int rank, const TransportFactory& connect,
                                            const RunOptions& options) {
  SetThreads();
  // --memory-report: count this rank's CPU tensors (the thread's for the whole run).
  std::optional<ScopedMeter> meter;
  if (options.memory_report) {
    MemoryMeter::Install();
    meter.emplace(std::make_shared<MemoryMeter>());
  }
  const Fault fault = InjectedFault();
  if (fault.malformed) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PPRUN_FAULT_INJECT='", std::getenv("PPRUN_FAULT_INJECT"),
        "' is not RANK:STEP, RANK:save:STEP or RANK:PHASE:STEP:SIGNAL (PHASE rendezvous|forward|reduce|optimizer, "
        "SIGNAL KILL|TERM|STOP)"));
  }
  if (fault.phase == "rendezvous" && fault.rank == rank) raise(fault.signal);
  RuntimeOptions runtime = options.runtime;
  if (!fault.phase.empty() && fault.phase != "rendezvous" && fault.rank == rank) {
    runtime.fault_step = fault.step - 1;
    runtime.fault_signal = fault.signal;
    runtime.fault_op = fault.phase == "forward"  ? ir::Instruction::kCompute
                       : fault.phase == "reduce" ? ir::Instruction::kReduceGrads
                                                 : ir::Instruction::kOptimizerStep;
  }
  runtime.trace = !options.trace_dir.empty();
  runtime.keep_predictions = options.eval_only && !options.predict_path.empty();
  runtime.evaluates = options.eval_only || options.eval_every > 0;
  ASSIGN_OR_RETURN(std::unique_ptr<Transport> transport, connect());
  if (transport->rank() != rank) {
    return absl::InternalError(absl::StrCat("rank ", rank, ": the transport says it is rank ", transport->rank()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<StageRuntime> rt, StageRuntime::Load(plan, transport.get(), runtime));
  const bool leader = rank == 0;
  const absl::Duration timeout = runtime.timeout;
  RunRecords records;

  // Resume (or import weights) before anything runs.
  int64_t start = 0;
  if (!options.load_dir.empty()) {
    auto started = std::chrono::steady_clock::now();
    LoadOptions load{options.load_dir, options.load_tag, options.load_module_only};
    auto loaded = LoadCheckpoint(*rt, plan, load);
    absl::Status ok = loaded.status();
    if (loaded.ok() && loaded->data) ok = rt->ResumeData(loaded->step, *loaded->data);
    RETURN_IF_ERROR(AgreeOnStatus(*transport, ok, "loading the checkpoint", timeout));
    start = loaded->step;
    if (leader && options.print) {
      for (const auto& note : loaded->notes) std::fprintf(stderr, "ppc: note: %s\n", note.c_str());
      std::fprintf(stderr, "ppc: loaded %s (step %lld) in %.2f s\n", loaded->tag_dir.c_str(),
                   static_cast<long long>(start), Seconds(started));
    }
  }

  auto save = [&](int64_t step) -> absl::Status {
    auto started = std::chrono::steady_clock::now();
    SaveOptions o;
    o.dir = options.save_dir;
    o.timeout = timeout;
    o.die_mid_write = fault.in_save && fault.rank == rank && fault.step == step;
    ASSIGN_OR_RETURN(std::string tag_dir, SaveCheckpoint(*rt, plan, step, o));
    if (leader && options.print) {
      const double seconds = Seconds(started);
      const double mb = DirectoryBytes(tag_dir) / 1e6;
      std::fprintf(stderr, "ppc: saved %s (%.1f MB in %.2f s, %.0f MB/s)\n", tag_dir.c_str(), mb, seconds,
                   mb / std::max(seconds, 1e-9));
    }
    return absl::OkStatus();
  };
  auto evaluate = [&](int64_t after_step) -> absl::Status {
    ASSIGN_OR_RETURN(EvalResult e, Evaluate(*rt, options.eval_steps));
    records.evals.push_back({after_step, e});
    return absl::OkStatus();
  };

  std::FILE* metrics = nullptr;
  if (leader && !options.metrics_out.empty()) {
    RETURN_IF_ERROR(ir::CheckOutputPath(options.metrics_out, "--metrics-out"));
    metrics = std::fopen(options.metrics_out.c_str(), "w");
    if (metrics == nullptr) {
      return absl::PermissionDeniedError(
          absl::StrCat("--metrics-out: cannot write '", options.metrics_out, "': ", std::strerror(errno)));
    }
  }
  // A metrics line that did not reach the file is an error, not a silent loss.
  auto metrics_written = [&]() -> absl::Status {
    if (metrics == nullptr || (std::fflush(metrics) == 0 && !std::ferror(metrics))) return absl::OkStatus();
    return absl::DataLossError(
        absl::StrCat("--metrics-out: cannot write '", options.metrics_out, "': ", std::strerror(errno)));
  };
  struct Closer {
    std::FILE*& f;
    ~Closer() {
      if (f) std::fclose(f);
    }
  } closer{metrics};

  if (options.eval_only) {
    RETURN_IF_ERROR(evaluate(start));
    const EvalResult& e = records.evals.back().result;
    // The result of --eval, printed by every rank (they agree), even when quiet.
    std::printf("rank %d eval %s (%d batches)\n", rank, EvalLine(e).c_str(), options.eval_steps);
    std::fflush(stdout);
    if (metrics) std::fprintf(metrics, "eval %lld %.17g %.17g %lld\n", static_cast<long long>(start), e.loss, e.accuracy,
                              static_cast<long long>(e.samples));
    RETURN_IF_ERROR(metrics_written());
    if (!options.predict_path.empty()) {
      auto predictions = rt->GatherPredictions();
      absl::Status written = predictions.status();
      if (predictions.ok() && predictions->has_value()) {
        c10::Dict<std::string, at::Tensor> d;
        d.insert("outputs", (*predictions)->outputs);
        d.insert("labels", (*predictions)->labels);
        auto bytes = SerializeTorchFile(d);
        written = bytes.ok() ? WriteFileDurably(options.predict_path, absl::string_view(bytes->data(), bytes->size()))
                             : bytes.status();
      }
      RETURN_IF_ERROR(AgreeOnStatus(*transport, written, "writing predictions", timeout));
    }
  } else {
    const int steps = options.steps > 0 ? options.steps : std::max(1, plan.config().steps());
    const int print_every = options.print_every > 0                  ? options.print_every
                            : plan.config().steps_per_print() > 0 ? plan.config().steps_per_print()
                                                                   : 1;
    const bool bar = leader && options.print && isatty(STDERR_FILENO);
    if (start >= steps && leader && options.print) {
      std::fprintf(stderr, "ppc: note: the checkpoint is at step %lld, --steps is %d: nothing to train\n",
                   static_cast<long long>(start), steps);
    }
    int64_t saved_at = -1;
    for (int64_t step = start; step < steps; ++step) {
      MaybeInjectFault(fault, rank, static_cast<int>(step + 1));
      auto started = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(StepResult result, rt->RunStep(step));
      StepRecord rec{step + 1, result.loss, result.samples / std::max(Seconds(started), 1e-9)};
      records.steps.push_back(rec);
      if (leader && options.print) {
        if (bar) std::fprintf(stderr, "\r\033[K");
        if (rec.step % print_every == 0 || rec.step == steps) {
          std::printf("step: %3lld / %3d loss: %.6f samples/s: %.1f\n", static_cast<long long>(rec.step), steps,
                      rec.loss, rec.samples_per_s);
          std::fflush(stdout);
        }
        if (bar) {
          int filled = static_cast<int>((step + 1) * 30 / steps);
          std::fprintf(stderr, "[%.*s%*s] %lld/%d", filled, "==============================", 30 - filled, "",
                       static_cast<long long>(step + 1), steps);
          std::fflush(stderr);
        }
      }
      if (metrics) {
        std::fprintf(metrics, "%lld %.17g %.3f\n", static_cast<long long>(rec.step), rec.loss, rec.samples_per_s);
        RETURN_IF_ERROR(metrics_written());
      }
      if (!options.save_dir.empty() && options.save_every > 0 && rec.step % options.save_every == 0) {
        RETURN_IF_ERROR(save(rec.step));
        saved_at = rec.step;
      }
      if (options.eval_every > 0 && rec.step % options.eval_every == 0) {
        RETURN_IF_ERROR(evaluate(rec.step));
        const EvalResult& e = records.evals.back().result;
        if (leader && options.print) {
          if (bar) std::fprintf(stderr, "\r\033[K");
          std::printf("eval step: %3lld %s\n", static_cast<long long>(rec.step), EvalLine(e).c_str());
          std::fflush(stdout);
        }
        if (metrics) {
          std::fprintf(metrics, "eval %lld %.17g %.17g %lld\n", static_cast<long long>(rec.step), e.loss, e.accuracy,
                       static_cast<long long>(e.samples));
          RETURN_IF_ERROR(metrics_written());
        }
      }
    }
    if (bar) std::fprintf(stderr, "\r\033[K");
    if (!options.save_dir.empty() && steps > start && saved_at != steps) {
      RETURN_IF_ERROR(save(steps));
    }
  }

  if (!options.export_path.empty()) {
    RETURN_IF_ERROR(ExportModel(*rt, plan, options.export_path, timeout));
    if (leader && options.print) std::fprintf(stderr, "ppc: exported %s\n", options.export_path.c_str());
  }
  if (!options.dump_weights.empty() && rt->replica() == 0) {
    RETURN_IF_ERROR(DumpWeights(rt->Parameters(), options.dump_weights));
  }
  if (!options.trace_dir.empty()) {
    RETURN_IF_ERROR(rt->WriteTrace(absl::StrCat(options.trace_dir, "/rank", rank, ".json")));
  }
  if (options.memory_report) {
    records.activation_bytes = rt->measured_activation_bytes();
    records.step_peak_bytes = rt->measured_peak_bytes();
    std::printf(
        "memory: rank %d stage %d replica %d parameters %lld bytes optimizer_state %lld bytes peak_rss %lld bytes "
        "activations %lld bytes step_peak %lld bytes\n",
        rank, rt->stage(), rt->replica(), static_cast<long long>(rt->ParameterBytes()),
        static_cast<long long>(rt->OptimizerStateBytes()), static_cast<long long>(PeakRss()),
        static_cast<long long>(rt->measured_activation_bytes()), static_cast<long long>(rt->measured_peak_bytes()));
    std::fflush(stdout);
  }
  if (metrics != nullptr) {
    std::FILE* f = metrics;
    metrics = nullptr;
    if (std::fclose(f) != 0) {
      return absl::DataLossError(
          absl::StrCat("--metrics-out: cannot write '", options.metrics_out, "': ", std::strerror(errno)));
    }
  }
  return records;
}

}  // namespace ppc::runtime
