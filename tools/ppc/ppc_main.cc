// ppc: compile, inspect and transform pipeline-parallel training plans.
//
//   ppc compile --model M.textproto --stages P [--data-parallel D] [--micro-batches M]
//               [--micro-batch-size B] [--schedule 1f1b|gpipe|inference|data-parallel]
//               [--partition METHOD] [--config C.textproto] --out PLAN
//   ppc inspect PLAN [--json]
//   ppc opt --passes=a,b{k=v} IN OUT
//   ppc export CHECKPOINT_DIR [--tag T] --out FILE   (runs ppc-export, next to ppc)
//   ppc --list-passes
//
// Flags are defined here only; they become a Plan (model, topology, config) at the edge.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <sstream>

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
ABSL_FLAG(int, stages, 1, "pipeline stages P");
ABSL_FLAG(int, data_parallel, 1, "data-parallel replicas D of each stage");
ABSL_FLAG(int, micro_batches, 0, "micro-batches per replica per step (default: config, else 1)");
ABSL_FLAG(int, micro_batch_size, 0, "samples per micro-batch (default: config, else 1)");
ABSL_FLAG(std::string, schedule, "", "1f1b | gpipe | inference | data-parallel (default: config, else 1f1b)");
ABSL_FLAG(std::string, partition, "", "parameters | uniform | type:REGEX | explicit:A:B (default: parameters)");
ABSL_FLAG(std::string, optimizer, "", "sgd | adam | adamw (default: config, else sgd)");
ABSL_FLAG(int, zero_stage, -1, "ZeRO stage: 0, or 1 to shard optimizer state over data-parallel replicas "
          "(default: config, else 0)");
ABSL_FLAG(double, lr, 0, "learning rate (default: config, else 0.01)");
ABSL_FLAG(int64_t, seed, -1, "seed for weights, data and dropout (default: config, else 1138)");
ABSL_FLAG(int, steps, 0, "training steps pprun runs by default (default: config, else 10)");
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
  if (!absl::GetFlag(FLAGS_config).empty()) RETURN_IF_ERROR(ir::ParseTextProtoFile(absl::GetFlag(FLAGS_config), c));
  if (!absl::GetFlag(FLAGS_deepspeed_config).empty()) {
    ASSIGN_OR_RETURN(DeepSpeedConfig ds, ReadDeepSpeedConfig(absl::GetFlag(FLAGS_deepspeed_config),
                                                             absl::GetFlag(FLAGS_data_parallel)));
    for (const std::string& w : ds.warnings) std::cerr << "warning: " << w << "\n";
    c->MergeFrom(ds.config);
  }
  if (absl::GetFlag(FLAGS_micro_batches) > 0) c->set_micro_batches(absl::GetFlag(FLAGS_micro_batches));
  if (absl::GetFlag(FLAGS_micro_batch_size) > 0) c->set_micro_batch_size(absl::GetFlag(FLAGS_micro_batch_size));
  if (!absl::GetFlag(FLAGS_schedule).empty()) c->set_schedule(absl::GetFlag(FLAGS_schedule));
  if (!absl::GetFlag(FLAGS_partition).empty()) c->set_partition_method(absl::GetFlag(FLAGS_partition));
  if (!absl::GetFlag(FLAGS_optimizer).empty()) c->mutable_optimizer()->set_type(absl::GetFlag(FLAGS_optimizer));
  if (absl::GetFlag(FLAGS_lr) > 0) c->mutable_optimizer()->set_lr(absl::GetFlag(FLAGS_lr));
  if (absl::GetFlag(FLAGS_zero_stage) != -1) c->set_zero_stage(absl::GetFlag(FLAGS_zero_stage));
  if (c->zero_stage() != 0 && c->zero_stage() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("ZeRO stage ", c->zero_stage(), " is not supported with pipeline "
                                                   "parallelism (as in DeepSpeed); use 0 or 1"));
  }
  if (absl::GetFlag(FLAGS_seed) >= 0) c->set_seed(absl::GetFlag(FLAGS_seed));
  if (absl::GetFlag(FLAGS_steps) > 0) c->set_steps(absl::GetFlag(FLAGS_steps));
  if (c->micro_batches() == 0) c->set_micro_batches(1);
  if (c->micro_batch_size() == 0) c->set_micro_batch_size(1);
  if (c->schedule().empty()) c->set_schedule(absl::GetFlag(FLAGS_stages) == 1 && absl::GetFlag(FLAGS_data_parallel) > 1
                                                 ? "data-parallel" : "1f1b");
  if (c->optimizer().type().empty()) c->mutable_optimizer()->set_type("sgd");
  if (c->optimizer().lr() == 0) c->mutable_optimizer()->set_lr(0.01);
  if (c->seed() == 0 && absl::GetFlag(FLAGS_seed) < 0) c->set_seed(1138);
  if (c->steps() == 0) c->set_steps(10);
  const std::string& opt = c->optimizer().type();
  if (opt != "sgd" && opt != "adam" && opt != "adamw") {
    return absl::InvalidArgumentError(absl::StrCat("optimizer type '", opt, "' is not one of sgd, adam, adamw"));
  }
  if (absl::GetFlag(FLAGS_stages) < 1 || absl::GetFlag(FLAGS_data_parallel) < 1) {
    return absl::InvalidArgumentError("--stages and --data-parallel must be >= 1");
  }
  plan.mutable_topology()->set_num_stages(absl::GetFlag(FLAGS_stages));
  plan.mutable_topology()->set_data_parallel(absl::GetFlag(FLAGS_data_parallel));
  return plan;
}

absl::Status Compile() {
  ASSIGN_OR_RETURN(ir::Plan plan, PlanFromFlags());
  std::string pipeline = absl::GetFlag(FLAGS_passes);
  if (pipeline.empty()) {
    ASSIGN_OR_RETURN(pipeline, passes::DefaultPipeline(plan.config()));
  }
  RETURN_IF_ERROR(RunPipelineText(pipeline, plan));
  ir::Stamp(plan);
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

std::string HumanBytes(int64_t b) {
  if (b >= (1 << 20)) return absl::StrFormat("%.2f MiB", b / 1048576.0);
  if (b >= 1024) return absl::StrFormat("%.2f KiB", b / 1024.0);
  return absl::StrCat(b, " B");
}

absl::Status Inspect(const std::string& path) {
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(path));
  absl::Status verified = passes::VerifyPlan(plan);
  absl::Status stamp = ir::CheckStamp(plan, path);
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
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(in));
  RETURN_IF_ERROR(RunPipelineText(pipeline, plan));
  ir::Stamp(plan);
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
      "  ppc opt --passes=a,b{k=v} IN OUT\n"
      "  ppc export CHECKPOINT_DIR [--tag T] --out FILE [--model M.textproto]\n"
      "  ppc --list-passes");
  std::vector<std::string> storage;
  NormalizeFlagNames(argc, argv, storage);
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
