// ppc: compile, inspect and transform pipeline-parallel training plans.
//
//   ppc compile --model M.textproto --stages P [--data-parallel D] [--micro-batches M]
//               [--micro-batch-size B] [--schedule 1f1b|gpipe|inference|data-parallel]
//               [--partition METHOD] [--config C.textproto] --out PLAN
//   ppc inspect PLAN [--json]
//   ppc verify PLAN
//   ppc opt --passes=a,b{k=v} IN OUT
//   ppc export CHECKPOINT_DIR [--tag T] --out FILE   (runs ppc-export, next to ppc)
//   ppc --list-passes
//
// Flags are defined here only; they become a Plan (model, topology, config) at the edge.
#include <cstdio>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cmath>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "compiler/deepspeed_config.h"
#include "compiler/pass_pipeline.h"
#include "ir/layer_shapes.h"
#include "ir/limits.h"
#include "google/protobuf/text_format.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "passes/analysis/timeline.h"
#include "passes/analysis/verifier.h"
#include "passes/registry.h"
#include "tools/flag_names.h"

ABSL_FLAG(std::string, model, "", "model spec (ppc.ir.ModelSpec text proto)");
ABSL_FLAG(std::string, config, "", "training config (ppc.ir.TrainingConfig text proto); flags override it");
ABSL_FLAG(std::string, deepspeed_config, "", "DeepSpeed JSON config (batch sizes, optimizer, clipping, pipeline); "
          "applied after --config, flags override it");
ABSL_FLAG(int64_t, stages, 1, "pipeline stages P");
ABSL_FLAG(int64_t, data_parallel, 1, "data-parallel replicas D of each stage");
ABSL_FLAG(std::optional<int64_t>, micro_batches, std::nullopt,
          "micro-batches per replica per step (default: config, else 1)");
ABSL_FLAG(std::optional<int64_t>, micro_batch_size, std::nullopt, "samples per micro-batch (default: config, else 1)");
ABSL_FLAG(std::string, schedule, "", "1f1b | gpipe | inference | data-parallel (default: config, else 1f1b)");
ABSL_FLAG(std::string, partition, "", "parameters | uniform | type:REGEX | explicit:A:B (default: parameters)");
ABSL_FLAG(std::string, optimizer, "", "sgd | adam | adamw (default: config, else sgd)");
ABSL_FLAG(std::optional<int64_t>, zero_stage, std::nullopt,
          "ZeRO stage: 0, or 1 to shard optimizer state over data-parallel replicas (default: config, else 0)");
ABSL_FLAG(std::optional<double>, lr, std::nullopt, "learning rate (default: config, else 0.01)");
ABSL_FLAG(std::optional<int64_t>, seed, std::nullopt, "seed for weights, data and dropout (default: config, else 1138)");
ABSL_FLAG(std::optional<int64_t>, steps, std::nullopt, "training steps pprun runs by default (default: config, else 10)");
ABSL_FLAG(std::string, out, "", "where to write the plan (.txt: text form; otherwise binary)");
ABSL_FLAG(std::string, passes, "", "ppc opt: the pipeline to run; ppc compile: overrides the default pipeline");
ABSL_FLAG(bool, json, false, "ppc inspect: print JSON");
ABSL_FLAG(bool, list_passes, false, "list every pass and exit");
ABSL_FLAG(bool, print_ir_after_all, false, "print the plan after every pass");
ABSL_FLAG(bool, print_ir_after_change, false, "print the plan after every pass that changed it");
ABSL_FLAG(bool, print_ir_after_failure, false, "print the plan when a pass or the verifier fails");
ABSL_FLAG(bool, verify_each, true, "run the verifier after every pass that changed the plan");
ABSL_FLAG(bool, time_passes, false, "print the time each pass took");
ABSL_FLAG(std::string, dump_to, "", "write the plan after every pass, and a reproducer on failure, to this directory");
ABSL_FLAG(std::string, disable_passes, "", "comma-separated passes to skip");

namespace ppc {
namespace {

PipelineOptions OptionsFromFlags() {
  PipelineOptions o;
  o.print_ir_after_all = absl::GetFlag(FLAGS_print_ir_after_all);
  o.print_ir_after_change = absl::GetFlag(FLAGS_print_ir_after_change);
  o.print_ir_after_failure = absl::GetFlag(FLAGS_print_ir_after_failure);
  o.verify_each = absl::GetFlag(FLAGS_verify_each);
  o.time_passes = absl::GetFlag(FLAGS_time_passes);
  o.dump_to = absl::GetFlag(FLAGS_dump_to);
  for (auto p : absl::StrSplit(absl::GetFlag(FLAGS_disable_passes), ',', absl::SkipEmpty())) o.disabled.insert(std::string(p));
  o.out = &std::cout;
  return o;
}

absl::Status RunPipelineText(const std::string& text, ir::Plan& plan) {
  ASSIGN_OR_RETURN(PassPipeline pipeline, PassPipeline::Create(text, passes::GlobalPassRegistry()));
  pipeline.set_verifier(passes::VerifyPlan);
  RETURN_IF_ERROR(pipeline.Run(plan, OptionsFromFlags()).status());
  return absl::OkStatus();
}

absl::StatusOr<ir::Plan> PlanFromFlags() {
  ir::Plan plan;
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return absl::InvalidArgumentError("--model is required (a ppc.ir.ModelSpec text proto)");
  RETURN_IF_ERROR(ir::ParseTextProtoFile(model, plan.mutable_model()));
  ir::TrainingConfig* c = plan.mutable_config();
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    RETURN_IF_ERROR(ir::ParseTextProtoFile(path, c));
    // In a config, an absent count means "the default"; a count written as 0 is an error,
    // not the default (proto3 alone cannot tell them apart; the parser's locations can).
    ASSIGN_OR_RETURN(std::string text, ir::ReadFile(path));
    google::protobuf::TextFormat::Parser parser;
    google::protobuf::TextFormat::ParseInfoTree where;
    parser.WriteLocationsTo(&where);
    ir::TrainingConfig again;
    if (parser.ParseFromString(text, &again)) {
      for (const char* name : {"micro_batches", "micro_batch_size", "steps"}) {
        const auto* field = again.GetDescriptor()->FindFieldByName(name);
        const auto at = where.GetLocation(field, -1);
        if (at.line >= 0 && again.GetReflection()->GetInt32(again, field) == 0) {
          return absl::InvalidArgumentError(absl::StrCat(path, ":", at.line + 1, ": ", name,
                                                         " is 0; it must be >= 1 (leave it out for the default)"));
        }
      }
    }
  }
  if (!absl::GetFlag(FLAGS_deepspeed_config).empty()) {
    const int64_t dp = absl::GetFlag(FLAGS_data_parallel);
    if (dp < 1 || dp > ir::kMaxDataParallel) return absl::InvalidArgumentError("--data-parallel is out of range");
    ASSIGN_OR_RETURN(DeepSpeedConfig ds, ReadDeepSpeedConfig(absl::GetFlag(FLAGS_deepspeed_config),
                                                             static_cast<int>(dp)));
    for (const std::string& w : ds.warnings) std::cerr << "warning: " << w << "\n";
    c->MergeFrom(ds.config);
  }
  // Numeric flags: range-checked, never quietly replaced.
  auto ranged = [](const char* flag, int64_t v, int64_t lo, int64_t hi) -> absl::Status {
    if (v < lo || v > hi) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is ", v, "; it must be in [", lo, ", ", hi, "]"));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(ranged("stages", absl::GetFlag(FLAGS_stages), 1, ir::kMaxStages));
  RETURN_IF_ERROR(ranged("data-parallel", absl::GetFlag(FLAGS_data_parallel), 1, ir::kMaxDataParallel));
  if (auto v = absl::GetFlag(FLAGS_micro_batches)) {
    RETURN_IF_ERROR(ranged("micro-batches", *v, 1, ir::kMaxMicroBatches));
    c->set_micro_batches(static_cast<int>(*v));
  }
  if (auto v = absl::GetFlag(FLAGS_micro_batch_size)) {
    RETURN_IF_ERROR(ranged("micro-batch-size", *v, 1, ir::kMaxMicroBatchSize));
    c->set_micro_batch_size(static_cast<int>(*v));
  }
  if (!absl::GetFlag(FLAGS_schedule).empty()) c->set_schedule(absl::GetFlag(FLAGS_schedule));
  if (!absl::GetFlag(FLAGS_partition).empty()) c->set_partition_method(absl::GetFlag(FLAGS_partition));
  if (!absl::GetFlag(FLAGS_optimizer).empty()) c->mutable_optimizer()->set_type(absl::GetFlag(FLAGS_optimizer));
  if (auto v = absl::GetFlag(FLAGS_lr)) {
    if (!std::isfinite(*v) || *v < 0) {
      return absl::InvalidArgumentError(absl::StrCat("--lr is ", *v, "; it must be finite and >= 0"));
    }
    c->mutable_optimizer()->set_lr(*v);
  }
  if (auto v = absl::GetFlag(FLAGS_zero_stage)) {
    if (*v != 0 && *v != 1) {
      return absl::InvalidArgumentError(absl::StrCat("ZeRO stage ", *v, " is not supported with pipeline "
                                                     "parallelism (as in DeepSpeed); use 0 or 1"));
    }
    c->set_zero_stage(static_cast<int>(*v));
  }
  if (auto v = absl::GetFlag(FLAGS_seed)) {
    RETURN_IF_ERROR(ranged("seed", *v, 0, std::numeric_limits<int64_t>::max()));
    c->set_seed(static_cast<uint64_t>(*v));
  }
  if (auto v = absl::GetFlag(FLAGS_steps)) {
    RETURN_IF_ERROR(ranged("steps", *v, 1, std::numeric_limits<int32_t>::max()));
    c->set_steps(static_cast<int>(*v));
  }
  // Defaults for what neither the flags nor the configs gave (0 in a config: not given).
  if (c->micro_batches() == 0) c->set_micro_batches(1);
  if (c->micro_batch_size() == 0) c->set_micro_batch_size(1);
  if (c->schedule().empty()) c->set_schedule(absl::GetFlag(FLAGS_stages) == 1 && absl::GetFlag(FLAGS_data_parallel) > 1
                                                 ? "data-parallel" : "1f1b");
  if (c->optimizer().type().empty()) c->mutable_optimizer()->set_type("sgd");
  if (!c->optimizer().has_lr()) c->mutable_optimizer()->set_lr(0.01);
  if (c->seed() == 0 && !absl::GetFlag(FLAGS_seed)) c->set_seed(1138);
  if (c->steps() == 0) c->set_steps(10);
  plan.mutable_topology()->set_num_stages(static_cast<int>(absl::GetFlag(FLAGS_stages)));
  plan.mutable_topology()->set_data_parallel(static_cast<int>(absl::GetFlag(FLAGS_data_parallel)));
  return plan;
}

// Stamps the plan for writing. The whole plan is verified once more, whatever the
// pipeline did: a plan that fails (verification was turned off) is written marked
// unverified, which pprun refuses unless told --allow-unverified.
void StampVerified(ir::Plan& plan) {
  plan.set_unverified(false);
  absl::Status verified = passes::VerifyPlan(plan);
  if (!verified.ok()) {
    plan.set_unverified(true);
    std::cerr << "ppc: warning: the plan fails verification and is written marked unverified "
                 "(pprun refuses it without --allow-unverified):\n  "
              << verified.message() << "\n";
  }
  ir::Stamp(plan);
}

absl::Status Compile() {
  // Checked first: a compile is not wasted on an output that cannot be written.
  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) RETURN_IF_ERROR(ir::CheckOutputPath(out, "--out"));
  ASSIGN_OR_RETURN(ir::Plan plan, PlanFromFlags());
  std::string pipeline = absl::GetFlag(FLAGS_passes);
  if (pipeline.empty()) {
    ASSIGN_OR_RETURN(pipeline, passes::DefaultPipeline(plan.config()));
  }
  RETURN_IF_ERROR(RunPipelineText(pipeline, plan));
  StampVerified(plan);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::cout << ir::PrintPlan(plan);
  } else {
    RETURN_IF_ERROR(ir::SavePlan(plan, out));
    std::cerr << absl::StrFormat("ppc: wrote %s (%d stages x %d replicas, %s, fingerprint %s)\n", out,
                                 plan.topology().num_stages(), plan.topology().data_parallel(),
                                 plan.config().schedule(), plan.fingerprint());
  }
  return absl::OkStatus();
}

// ppc verify: the stamp, the structural rules and the verifier; OK or every problem.
absl::Status Verify(const std::string& path) {
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(path));
  RETURN_IF_ERROR(ir::CheckStamp(plan, path));
  if (plan.unverified()) {
    std::cerr << "ppc verify: note: " << path << " is marked unverified (written with verification off)\n";
  }
  absl::Status verified = passes::VerifyPlan(plan);
  if (!verified.ok()) return Annotate(verified, path);
  // Correct so far; `verified` means pprun can run it.
  absl::Status runnable = passes::VerifyRunnablePlan(plan);
  if (!runnable.ok()) {
    return Annotate(runnable, absl::StrCat(path, ": a correct intermediate plan, but not one pprun can run"));
  }
  std::cout << path << ": verified (fingerprint " << plan.fingerprint() << ")\n";
  return absl::OkStatus();
}

std::string HumanBytes(int64_t b) {
  if (b >= (1 << 20)) return absl::StrFormat("%.2f MiB", b / 1048576.0);
  if (b >= 1024) return absl::StrFormat("%.2f KiB", b / 1024.0);
  return absl::StrCat(b, " B");
}

absl::Status Inspect(const std::string& path) {
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(path));
  // A plan that fails its stamp or its checks is described, never analysed: the timeline
  // and the per-stage figures assume a valid plan.
  absl::Status stamp = ir::CheckStamp(plan, path);
  absl::Status verified = passes::VerifyPlan(plan);
  if (!stamp.ok() || !verified.ok()) {
    const absl::Status& failed = stamp.ok() ? verified : stamp;
    if (absl::GetFlag(FLAGS_json)) {
      nlohmann::json j = {{"stats", {{"verified", verified.ok()}, {"fingerprint_ok", stamp.ok()},
                                     {"unverified_mark", plan.unverified()},
                                     {"error", std::string(failed.message())}}}};
      std::cout << j.dump(2) << "\n";
      return failed;
    }
    std::cout << absl::StrFormat("plan %s: model '%s' (%d layers), format v%d, fingerprint %s%s\n", path,
                                 plan.model().name(), plan.model().layers_size(), plan.format_version(),
                                 plan.fingerprint(), plan.unverified() ? " (marked unverified)" : "");
    std::cout << "not analysed: " << failed.message() << "\n";
    return failed;
  }
  auto timeline = passes::SimulateTimeline(plan);
  if (absl::GetFlag(FLAGS_json)) {
    ASSIGN_OR_RETURN(std::string plan_json, ir::PlanToJson(plan));
    std::string stats = absl::StrFormat("{\"verified\": %s, \"fingerprint_ok\": %s", verified.ok() ? "true" : "false",
                                        stamp.ok() ? "true" : "false");
    if (timeline.ok()) {
      std::vector<std::string> st;
      for (size_t s = 0; s < timeline->stages.size(); ++s) {
        const auto& x = timeline->stages[s];
        st.push_back(absl::StrFormat(
            "{\"stage\": %d, \"params\": %d, \"live_activation_buffers\": %d, \"activation_bytes\": %d, "
            "\"bytes_sent_per_step\": %d, \"busy_units\": %d, \"optimizer_state_bytes_per_rank\": %d, "
            "\"optimizer_state_bytes_per_rank_unsharded\": %d}",
            s, x.params, x.num_slots, x.activation_bytes, x.bytes_sent, x.busy, x.optimizer_state_bytes,
            x.optimizer_state_bytes_unsharded));
      }
      absl::StrAppend(&stats, absl::StrFormat(", \"makespan_units\": %d, \"bubble_fraction\": %.6f, "
                                              "\"bytes_sent_per_step\": %d, \"stages\": [%s]",
                                              timeline->makespan, timeline->bubble_fraction,
                                              timeline->bytes_sent_per_step, absl::StrJoin(st, ", ")));
    }
    std::cout << "{\"stats\": " << stats << "},\n\"plan\": " << plan_json << "}\n";
    return verified;
  }
  const auto& t = plan.topology();
  const auto& c = plan.config();
  std::cout << absl::StrFormat(
      "plan %s: model '%s' (%d layers), %d stages x %d data-parallel = %d ranks\n"
      "schedule %s, %d micro-batches of %d per replica (global batch %d), optimizer %s lr=%g, seed %d\n"
      "format v%d, fingerprint %s (%s), verifier: %s\n\n",
      path, plan.model().name(), plan.model().layers_size(), t.num_stages(), t.data_parallel(),
      t.num_stages() * t.data_parallel(), c.schedule(), c.micro_batches(), c.micro_batch_size(),
      c.micro_batches() * c.micro_batch_size() * t.data_parallel(), c.optimizer().type(), c.optimizer().lr(), c.seed(),
      plan.format_version(), plan.fingerprint(), stamp.ok() ? "matches" : "MISMATCH",
      verified.ok() ? "ok" : std::string(verified.message()));
  std::cout << "partition:\n";
  for (int s = 0; s < plan.partition().stages_size(); ++s) {
    const auto& r = plan.partition().stages(s);
    int64_t params = 0;
    std::vector<std::string> names;
    for (int l = r.begin(); l < r.end(); ++l) {
      params += plan.model().layers(l).param_count();
      names.push_back(plan.model().layers(l).name());
    }
    std::cout << absl::StrFormat("  stage %d: layers [%d, %d) %s, %d params, output %s\n", s, r.begin(), r.end(),
                                 absl::StrJoin(names, " "), params,
                                 ir::ShapeString(plan.model().layers(r.end() - 1).output()));
  }
  for (const auto& prog : plan.programs()) {
    std::cout << absl::StrFormat("\n== stage %d (ranks %d..%d), %d instructions, %d activation slots\n", prog.stage(),
                                 prog.stage() * t.data_parallel(), prog.stage() * t.data_parallel() + t.data_parallel() - 1,
                                 prog.instructions_size(), prog.num_slots())
              << ir::PrintProgram(prog, true);
  }
  for (const auto& prog : plan.eval_programs()) {
    std::cout << absl::StrFormat("\n== eval stage %d (forward only), %d instructions, %d activation slots\n",
                                 prog.stage(), prog.instructions_size(), prog.num_slots())
              << ir::PrintProgram(prog, true);
  }
  if (timeline.ok()) {
    std::cout << "\ntimeline (unit time: F=1, B=2; '.' = idle):\n" << passes::RenderTimeline(*timeline);
    std::cout << absl::StrFormat("\nmakespan %d units, bubble fraction %.4f\n", timeline->makespan,
                                 timeline->bubble_fraction);
    std::cout << "stage  params        live act. buffers   activation memory   bytes sent/step (per replica)\n";
    for (size_t s = 0; s < timeline->stages.size(); ++s) {
      const auto& x = timeline->stages[s];
      std::cout << absl::StrFormat("%-6d %-13d %-19d %-19s %s\n", s, x.params, x.num_slots,
                                   HumanBytes(x.activation_bytes), HumanBytes(x.bytes_sent));
    }
    std::cout << absl::StrFormat("total bytes sent per step, all ranks: %s\n", HumanBytes(timeline->bytes_sent_per_step));
    std::cout << absl::StrFormat("optimizer state per rank (%s, ZeRO stage %d):\n", c.optimizer().type(),
                                 c.zero_stage());
    std::cout << "stage  this plan        without ZeRO-1   with ZeRO-1 (D=" << t.data_parallel() << ")\n";
    for (size_t s = 0; s < timeline->stages.size(); ++s) {
      const auto& x = timeline->stages[s];
      const int64_t d = std::max(1, t.data_parallel());
      std::cout << absl::StrFormat("%-6d %-16s %-16s %s\n", s, HumanBytes(x.optimizer_state_bytes),
                                   HumanBytes(x.optimizer_state_bytes_unsharded),
                                   HumanBytes((x.optimizer_state_bytes_unsharded + d - 1) / d));
    }
  } else {
    std::cout << "\ntimeline: " << timeline.status().message() << "\n";
  }
  return verified;
}

absl::Status Opt(const std::string& in, const std::string& out) {
  const std::string pipeline = absl::GetFlag(FLAGS_passes);
  if (pipeline.empty()) return absl::InvalidArgumentError("ppc opt needs --passes=a,b{k=v},...");
  RETURN_IF_ERROR(ir::CheckOutputPath(out, "OUT"));
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(in));
  // An input edited after it was stamped is allowed (editing text plans is a way to
  // experiment), but never silently: the output is re-verified and stamped anew.
  if (!plan.fingerprint().empty() && !ir::CheckStamp(plan, in).ok()) {
    std::cerr << "ppc opt: note: " << in << " was edited after it was stamped (its fingerprint "
              << plan.fingerprint() << " does not match its contents); " << out
              << " is verified and stamped from the edited contents\n";
  }
  RETURN_IF_ERROR(RunPipelineText(pipeline, plan));
  StampVerified(plan);
  return ir::SavePlan(plan, out);
}

void ListPasses() {
  for (const PassInfo& p : passes::GlobalPassRegistry().passes()) {
    std::cout << absl::StrFormat("%-24s %s\n", p.name, p.summary);
  }
}

// `ppc export ...` is ppc-export, a sibling program: reading PyTorch files needs
// LibTorch, which ppc does not link.
int ExecExport(int argc, char** argv) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string dir = n > 0 ? std::string(self, n) : std::string(argv[0]);
  dir = dir.substr(0, dir.rfind('/') + 1);
  const std::string tool = dir + "ppc-export";
  std::vector<char*> args{const_cast<char*>(tool.c_str())};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(tool.c_str(), args.data());
  std::cerr << "ppc export: cannot run " << tool << " (" << std::strerror(errno)
            << "); build it with: bazel build //tools/ppc:ppc-export\n";
  return 1;
}

int Main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "export") return ExecExport(argc, argv);
  absl::SetProgramUsageMessage(
      "compile, inspect and transform pipeline-parallel training plans.\n"
      "  ppc compile --model M.textproto --stages P [--data-parallel D] [--micro-batches M]\n"
      "              [--micro-batch-size B] [--schedule 1f1b|gpipe|inference|data-parallel] --out PLAN\n"
      "  ppc inspect PLAN [--json]\n"
      "  ppc verify PLAN\n"
      "  ppc opt --passes=a,b{k=v} IN OUT\n"
      "  ppc export CHECKPOINT_DIR [--tag T] --out FILE [--model M.textproto]\n"
      "  ppc --list-passes");
  std::vector<std::string> storage;
  if (const std::string e = NormalizeFlagNames(argc, argv, storage); !e.empty()) {
    std::fprintf(stderr, "%s: %s\n", "ppc", e.c_str());
    return 2;
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_list_passes)) {
    ListPasses();
    return 0;
  }
  if (args.size() < 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string cmd = args[1];
  absl::Status status;
  if (cmd == "compile" && args.size() == 2) {
    status = Compile();
  } else if (cmd == "inspect" && args.size() == 3) {
    status = Inspect(args[2]);
  } else if (cmd == "verify" && args.size() == 3) {
    status = Verify(args[2]);
  } else if (cmd == "opt" && args.size() == 4) {
    status = Opt(args[2], args[3]);
  } else if (cmd == "list-passes") {
    ListPasses();
  } else {
    std::cerr << "ppc: unknown command or wrong arguments: " << absl::StrJoin(args.begin() + 1, args.end(), " ")
              << "\n" << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  if (!status.ok()) {
    std::cerr << "ppc " << cmd << ": " << status << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ppc

int main(int argc, char** argv) { return ppc::Main(argc, argv); }
