// ppc: compile, inspect and transform pipeline-parallel training plans.
//
//   ppc compile --model M.textproto --stages P [--data-parallel D] [--virtual-stages V]
//               [--micro-batches M] [--micro-batch-size B]
//               [--schedule 1f1b|interleaved-1f1b|gpipe|inference|data-parallel]
//               [--partition METHOD] [--config C.textproto] --out PLAN
//   ppc inspect PLAN [--json] [--unit-costs]
//   ppc verify PLAN
//   ppc opt --passes=a,b{k=v} IN OUT
//   ppc export CHECKPOINT_DIR [--tag T] --out FILE   (runs ppc-export, next to ppc)
//   ppc --list-passes
//   ppc --pass-plugin=lib.so[,lib2.so] COMMAND ...   (any command; the flag may be repeated)
//
// --pass-plugin loads pass plugins (compiler/pass_plugin.h) before anything else; their
// passes join the registry, so --list-passes shows them, --passes pipelines can name
// them and `--schedule NAME` runs a plugin's `schedule-NAME` pass.
//
// Flags are defined here only; they become a model, topology and config at the edge, and
// passes::CompilePlan does the rest (config defaults, pipeline, verification, stamp).
#include <cstdio>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <malloc.h>

#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "compiler/deepspeed_config.h"
#include "compiler/pass_pipeline.h"
#include "compiler/pass_plugin.h"
#include "ir/layer_shapes.h"
#include "google/protobuf/text_format.h"
#include "ir/instruction_text.h"
#include "ir/limits.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/analysis/simulate.h"
#include "passes/analysis/timeline.h"
#include "passes/analysis/verifier.h"
#include "passes/compile.h"
#include "passes/registry.h"
#include "tools/flag_names.h"

ABSL_FLAG(std::string, model, "", "model spec (ppc.ir.ModelSpec text proto)");
ABSL_FLAG(std::string, config, "", "training config (ppc.ir.TrainingConfig text proto); flags override it");
ABSL_FLAG(std::string, deepspeed_config, "", "DeepSpeed JSON config (batch sizes, optimizer, clipping, pipeline); "
          "applied after --config, flags override it");
ABSL_FLAG(int64_t, stages, 1, "pipeline stages P");
ABSL_FLAG(int64_t, data_parallel, 1, "data-parallel replicas D of each stage");
ABSL_FLAG(std::optional<int64_t>, virtual_stages, std::nullopt,
          "virtual stages V per pipeline stage, in [1, 64]; V > 1 needs --schedule interleaved-1f1b "
          "(default: config, else 1)");
ABSL_FLAG(std::optional<int64_t>, micro_batches, std::nullopt,
          "micro-batches per replica per step (default: config, else 1)");
ABSL_FLAG(std::optional<int64_t>, micro_batch_size, std::nullopt, "samples per micro-batch (default: config, else 1)");
ABSL_FLAG(std::string, schedule, "",
          "1f1b | interleaved-1f1b (with --virtual-stages V) | gpipe | inference | data-parallel, or NAME "
          "for a pass plugin's schedule-NAME (default: config, else the one schedule pass --passes names, "
          "else data-parallel when P = 1 and D > 1, otherwise 1f1b)");
ABSL_FLAG(std::string, partition, "",
          "parameters | flops | uniform | type:REGEX | explicit:A:B:... (where virtual stages 1.. start) "
          "(default: config, else parameters)");
ABSL_FLAG(std::string, optimizer, "", "sgd | adam | adamw (default: config, else sgd)");
ABSL_FLAG(std::optional<int64_t>, zero_stage, std::nullopt,
          "ZeRO stage: 0, or 1 to shard optimizer state over data-parallel replicas (default: config, else 0)");
ABSL_FLAG(std::optional<double>, lr, std::nullopt, "learning rate (default: config, else 0.01)");
ABSL_FLAG(std::optional<int64_t>, seed, std::nullopt,
          "seed for weights, data and dropout (default: config, else 1138)");
ABSL_FLAG(std::optional<int64_t>, steps, std::nullopt,
          "training steps pprun runs by default (default: config, else 10)");
ABSL_FLAG(std::string, batch_weight_grads, "",
          "ppc compile: compute each virtual stage's weight gradients K micro-batches at a time, one call per layer "
          "(all | K; adds pass batch-weight-grads{group=K} after the schedule; default: off)");
ABSL_FLAG(std::string, out, "", "where to write the plan (.txt: text form; otherwise binary)");
ABSL_FLAG(std::string, passes, "", "ppc opt: the pipeline to run; ppc compile: overrides the default pipeline");
ABSL_FLAG(bool, json, false, "ppc inspect: print JSON");
ABSL_FLAG(bool, unit_costs, false,
          "ppc inspect: simulate with unit costs (F=1, B=2, I=W=1) instead of the plan's cost model "
          "(measured layer costs, else estimates from parameters and output sizes)");
ABSL_FLAG(bool, list_passes, false, "list every pass and exit");
ABSL_FLAG(bool, print_ir_after_all, false, "print the plan after every pass");
ABSL_FLAG(bool, print_ir_after_change, false, "print the plan after every pass that changed it");
ABSL_FLAG(bool, print_ir_after_failure, false, "print the plan when a pass or the verifier fails");
ABSL_FLAG(bool, verify_each, true, "run the verifier after every pass that changed the plan");
ABSL_FLAG(bool, time_passes, false, "print the time each pass took");
ABSL_FLAG(std::string, dump_to, "", "write the plan after every pass, and a reproducer on failure, to this directory");
ABSL_FLAG(std::string, disable_passes, "", "comma-separated passes to skip");
// Read (and removed from the command line) before the flags are parsed: see TakePassPlugins.
ABSL_FLAG(std::string, pass_plugin, "",
          "load a pass plugin (a shared library, compiler/pass_plugin.h) before anything else; "
          "repeat the flag or separate paths with ',' for several");

namespace ppc {
namespace {

// What `ppc compile` seeds with when neither --seed nor the configs give a seed.
constexpr uint64_t kDefaultSeed = 1138;
static_assert(ir::kMaxChunks == 64, "the --virtual-stages help names the limit");

// "1 slot", "3 slots".
std::string Count(int64_t n, const char* singular, const char* plural) {
  return absl::StrCat(n, " ", n == 1 ? singular : plural);
}

PipelineOptions OptionsFromFlags() {
  PipelineOptions o;
  o.print_ir_after_all = absl::GetFlag(FLAGS_print_ir_after_all);
  o.print_ir_after_change = absl::GetFlag(FLAGS_print_ir_after_change);
  o.print_ir_after_failure = absl::GetFlag(FLAGS_print_ir_after_failure);
  o.verify_each = absl::GetFlag(FLAGS_verify_each);
  o.time_passes = absl::GetFlag(FLAGS_time_passes);
  o.dump_to = absl::GetFlag(FLAGS_dump_to);
  for (auto p : absl::StrSplit(absl::GetFlag(FLAGS_disable_passes), ',', absl::SkipEmpty())) {
    o.disabled.insert(std::string(p));
  }
  o.out = &std::cout;
  return o;
}

// The model, topology and config the flags describe (a Plan holds them; nothing else is
// set). Defaults for what neither the flags nor the configs give are CanonicalizeConfig's,
// inside CompilePlan; the seed's is ppc's own.
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
      for (const char* name : {"micro_batches", "micro_batch_size", "steps", "virtual_stages"}) {
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
    if (v < lo || v > hi) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, " is ", v, "; it must be in [", lo, ", ", hi, "]"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(ranged("stages", absl::GetFlag(FLAGS_stages), 1, ir::kMaxStages));
  RETURN_IF_ERROR(ranged("data-parallel", absl::GetFlag(FLAGS_data_parallel), 1, ir::kMaxDataParallel));
  if (auto v = absl::GetFlag(FLAGS_virtual_stages)) {
    RETURN_IF_ERROR(ranged("virtual-stages", *v, 1, ir::kMaxChunks));
    c->set_virtual_stages(static_cast<int>(*v));
  }
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
  } else if (c->seed() == 0) {
    c->set_seed(kDefaultSeed);  // ppc's own default; a config's seed 0 reads as "not given"
  }
  if (auto v = absl::GetFlag(FLAGS_steps)) {
    RETURN_IF_ERROR(ranged("steps", *v, 1, std::numeric_limits<int32_t>::max()));
    c->set_steps(static_cast<int>(*v));
  }
  plan.mutable_topology()->set_num_stages(static_cast<int>(absl::GetFlag(FLAGS_stages)));
  plan.mutable_topology()->set_data_parallel(static_cast<int>(absl::GetFlag(FLAGS_data_parallel)));
  return plan;
}

// A plan that failed the final verification (per-pass verification was off) comes back
// marked unverified; it is written so, with the verifier's reason on stderr. pprun
// refuses it unless told --allow-unverified.
void WarnIfUnverified(const ir::Module& module) {
  if (!module.header.unverified()) return;
  absl::Status verified = passes::VerifyPlan(module);
  std::cerr << "ppc: warning: the plan fails verification and is written marked unverified "
               "(pprun refuses it without --allow-unverified):\n  "
            << (verified.ok() ? "the final check failed" : std::string(verified.message())) << "\n";
}

// config.schedule names the schedule pass that wrote the programs. With --passes and
// no schedule given (flag or config), that is the one schedule-NAME pass the pipeline
// runs (options and all: `schedule-memcap-1f1b{k=2}` is NAME memcap-1f1b); a given
// schedule that differs from it is kept, with a warning.
void RecordScheduleOfPipeline(const std::string& pipeline, ir::TrainingConfig* config) {
  if (pipeline.empty()) return;
  absl::StatusOr<std::vector<PipelineElement>> elements = ParsePipeline(pipeline);
  if (!elements.ok()) return;  // the pipeline reports its own errors
  std::set<std::string> schedules;
  for (const PipelineElement& e : *elements) {
    if (absl::StartsWith(e.name, "schedule-")) schedules.insert(e.name.substr(std::strlen("schedule-")));
  }
  if (schedules.size() != 1) return;
  const std::string& ran = *schedules.begin();
  if (config->schedule().empty()) {
    config->set_schedule(ran);
  } else if (config->schedule() != ran) {
    std::cerr << "ppc compile: warning: --passes runs schedule-" << ran << " but the plan will record schedule '"
              << config->schedule() << "' (--schedule or the config); give --schedule " << ran << "\n";
  }
}

absl::Status Compile() {
  // Checked first: a compile is not wasted on an output that cannot be written.
  if (const std::string out = absl::GetFlag(FLAGS_out); !out.empty()) {
    RETURN_IF_ERROR(ir::CheckOutputPath(out, "--out"));
  }
  ASSIGN_OR_RETURN(ir::Plan given, PlanFromFlags());
  RecordScheduleOfPipeline(absl::GetFlag(FLAGS_passes), given.mutable_config());
  passes::CompileOptions options;
  options.pipeline = absl::GetFlag(FLAGS_passes);  // empty: the schedule's default pipeline
  if (const std::string k = absl::GetFlag(FLAGS_batch_weight_grads); !k.empty()) {
    if (!options.pipeline.empty()) {
      return absl::InvalidArgumentError(
          "--batch-weight-grads adds a pass to the default pipeline; with --passes, name "
          "batch-weight-grads{group=K} in the pipeline instead");
    }
    ASSIGN_OR_RETURN(std::string pipeline, passes::DefaultPipeline(given.config()));
    ASSIGN_OR_RETURN(options.pipeline, passes::WithBatchWeightGrads(pipeline, k));
  }
  options.pipeline_options = OptionsFromFlags();
  ASSIGN_OR_RETURN(ir::Module module, passes::CompileModule(given.model(), given.topology(), given.config(), options));
  WarnIfUnverified(module);
  const ir::Plan& plan = module.header;
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::cout << ir::PrintPlan(ir::ToPlan(module));
  } else {
    RETURN_IF_ERROR(ir::SavePlan(module, out));
    std::cerr << absl::StrFormat("ppc: wrote %s (%d stages x %d replicas, %s per stage, %s, fingerprint %s)\n", out,
                                 plan.topology().num_stages(), plan.topology().data_parallel(),
                                 Count(plan.config().virtual_stages(), "virtual stage", "virtual stages"),
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

std::string JsonString(const std::string& s) { return nlohmann::json(s).dump(); }

// What a program holds: its instructions by kind (the Instruction oneof's field names,
// compute ops by action letter), in field order.
std::vector<std::pair<std::string, int>> InstructionCounts(const ir::StageProgram& program) {
  const auto* oneof = ir::Instruction::descriptor()->FindOneofByName("op");
  std::vector<std::pair<std::string, int>> counts;
  std::map<std::string, int> index;
  auto bump = [&](const std::string& name) {
    auto [it, added] = index.emplace(name, static_cast<int>(counts.size()));
    if (added) counts.emplace_back(name, 0);
    ++counts[it->second].second;
  };
  // Field order first, so that the listing does not depend on the program's order.
  for (int f = 0; f < oneof->field_count(); ++f) {
    const std::string name = oneof->field(f)->name();
    if (name == "compute") {
      for (ir::ComputeKind k : {ir::FORWARD, ir::BACKWARD, ir::BACKWARD_INPUT, ir::BACKWARD_WEIGHT}) {
        index.emplace(absl::StrCat("compute ", ir::ComputeLetter(k)), static_cast<int>(counts.size()));
        counts.emplace_back(absl::StrCat("compute ", ir::ComputeLetter(k)), 0);
      }
    } else {
      index.emplace(name, static_cast<int>(counts.size()));
      counts.emplace_back(name, 0);
    }
  }
  for (const ir::Instruction& in : program.instructions()) {
    if (in.has_compute()) {
      bump(absl::StrCat("compute ", ir::ComputeLetter(in.compute().kind())));
    } else if (const auto* field = in.GetReflection()->GetOneofFieldDescriptor(in, oneof)) {
      bump(field->name());
    }
  }
  std::vector<std::pair<std::string, int>> present;
  for (const auto& c : counts) {
    if (c.second > 0) present.push_back(c);
  }
  return present;
}

std::string CountsText(const std::vector<std::pair<std::string, int>>& counts) {
  std::vector<std::string> parts;
  for (const auto& [name, n] : counts) parts.push_back(absl::StrCat(n, " ", name));
  return absl::StrJoin(parts, ", ");
}

std::string CountsJson(const std::vector<std::pair<std::string, int>>& counts) {
  std::vector<std::string> parts;
  for (const auto& [name, n] : counts) parts.push_back(absl::StrCat(JsonString(name), ": ", n));
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

int64_t LayerParams(const ir::Plan& plan, const ir::VirtualStage& vs) {
  int64_t params = 0;
  for (int l = vs.begin(); l < vs.end(); ++l) params += plan.model().layers(l).param_count();
  return params;
}

std::string TensorsText(const google::protobuf::RepeatedPtrField<ir::TensorSpec>& tensors) {
  std::vector<std::string> parts;
  for (const ir::TensorSpec& t : tensors) parts.push_back(absl::StrCat(t.name(), " ", ir::ShapeString(t)));
  return absl::StrJoin(parts, ", ");
}

std::string TensorsJson(const google::protobuf::RepeatedPtrField<ir::TensorSpec>& tensors) {
  std::vector<std::string> parts;
  for (const ir::TensorSpec& t : tensors) {
    parts.push_back(absl::StrFormat("{\"name\": %s, \"dtype\": %s, \"shape\": [%s]}", JsonString(t.name()),
                                    JsonString(ir::DType_Name(t.dtype())), absl::StrJoin(t.shape(), ", ")));
  }
  return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
}

// The ranks of a stage's replicas, "R" or "R..S" (ir::Grid maps them).
std::string RanksText(const ir::Grid& grid, int stage) {
  const std::vector<int> ranks = grid.DataParallelGroup(stage);
  if (ranks.size() == 1) return absl::StrCat("rank ", ranks.front());
  return absl::StrCat("ranks ", ranks.front(), "..", ranks.back());
}

// A simulated time or cost: whole numbers without a fraction, others in the shortest form
// that reads back exactly (valid JSON either way).
std::string JsonNumber(double x) {
  if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 1e15) return absl::StrCat(static_cast<int64_t>(x));
  return nlohmann::json(x).dump();
}

// One replica's training programs simulated under unit costs (F=1, B=2, I=W=1) or the
// plan's own cost model (passes/analysis/simulate.h).
absl::StatusOr<passes::Timeline> TimelineOf(const ir::Plan& plan, bool unit_costs) {
  if (unit_costs) return passes::SimulateTimeline(plan, passes::CostModel::Unit(plan));
  ASSIGN_OR_RETURN(passes::CostModel costs, passes::CostModel::FromPlan(plan));
  return passes::SimulateTimeline(plan, costs);
}

std::string CostsText(bool unit_costs) {
  return unit_costs ? "unit costs F=1, B=2, I=W=1" : "the plan's cost model; --unit-costs for F=1, B=2";
}

// The whole-plan timeline figures, as JSON members (", \"k\": v, ...").
std::string TimelineJson(const passes::Timeline& timeline) {
  return absl::StrFormat(", \"makespan_units\": %s, \"bubble_fraction\": %.6f, \"bytes_sent_per_step\": %d",
                         JsonNumber(timeline.makespan), timeline.bubble_fraction, timeline.bytes_sent_per_step);
}

// Stage `s`'s timeline figures, as JSON members; empty when the timeline has no such stage.
std::string StageTimelineJson(const passes::Timeline& timeline, int s) {
  if (s >= static_cast<int>(timeline.stages.size())) return "";
  const passes::StageStats& x = timeline.stages[s];
  return absl::StrFormat(
      ", \"params\": %d, \"peak_live_slots\": %d, \"activation_bytes\": %d, \"peak_activation_bytes\": %d, "
      "\"bytes_sent_per_step\": %d, "
      "\"busy_units\": %s, \"optimizer_state_bytes_per_rank\": %d, \"optimizer_state_bytes_per_rank_unsharded\": %d",
      x.params, x.peak_live_slots, x.activation_bytes, x.peak_activation_bytes, x.bytes_sent, JsonNumber(x.busy), x.optimizer_state_bytes,
      x.optimizer_state_bytes_unsharded);
}

std::string TimelineText(const ir::Plan& plan, const passes::Timeline& timeline, bool unit_costs) {
  const auto& c = plan.config();
  const int64_t d = std::max(1, plan.topology().data_parallel());
  std::string out = absl::StrCat("\ntimeline (", CostsText(unit_costs), "; '.' = idle):\n",
                                 passes::RenderTimeline(timeline));
  absl::StrAppend(&out, absl::StrFormat("\nmakespan %s units, bubble fraction %.4f\n", JsonNumber(timeline.makespan),
                                        timeline.bubble_fraction));
  if (timeline.stages.empty()) return out;
  absl::StrAppend(&out, "stage  params        slots (peak live)   activation memory   peak activations   "
                        "busy units   bytes sent/step (per replica)\n");
  for (size_t s = 0; s < timeline.stages.size(); ++s) {
    const passes::StageStats& x = timeline.stages[s];
    absl::StrAppend(&out, absl::StrFormat("%-6d %-13d %-19s %-19s %-18s %-12s %s\n", s, x.params,
                                          absl::StrCat(x.num_slots, " (", x.peak_live_slots, ")"),
                                          HumanBytes(x.activation_bytes), HumanBytes(x.peak_activation_bytes),
                                          JsonNumber(x.busy),
                                          HumanBytes(x.bytes_sent)));
  }
  absl::StrAppend(&out, absl::StrFormat("total bytes sent per step, all ranks: %s\n",
                                        HumanBytes(timeline.bytes_sent_per_step)));
  absl::StrAppend(&out, absl::StrFormat("optimizer state per rank (%s, ZeRO stage %d):\n", c.optimizer().type(),
                                        c.zero_stage()));
  absl::StrAppend(&out, "stage  this plan        without ZeRO-1   with ZeRO-1 (D=", d, ")\n");
  for (size_t s = 0; s < timeline.stages.size(); ++s) {
    const passes::StageStats& x = timeline.stages[s];
    absl::StrAppend(&out, absl::StrFormat("%-6d %-16s %-16s %s\n", s, HumanBytes(x.optimizer_state_bytes),
                                          HumanBytes(x.optimizer_state_bytes_unsharded),
                                          HumanBytes((x.optimizer_state_bytes_unsharded + d - 1) / d)));
  }
  return out;
}

absl::Status Inspect(const std::string& path) {
  ASSIGN_OR_RETURN(ir::Plan plan, ir::LoadPlan(path));
  // A plan that fails its stamp or its checks is described, never analysed: the timeline
  // and the per-stage figures assume a valid plan.
  absl::Status stamp = ir::CheckStamp(plan, path);
  absl::Status verified = passes::VerifyPlan(plan);
  absl::StatusOr<ir::Grid> grid_or = ir::Grid::Of(plan);
  if (!stamp.ok() || !verified.ok() || !grid_or.ok()) {
    const absl::Status& failed = !stamp.ok() ? stamp : !verified.ok() ? verified : grid_or.status();
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
  const ir::Grid& grid = *grid_or;
  // Before the partition pass the plan has no placement (and no boundaries) to show.
  const bool placed = plan.placement().virtual_stages_size() == grid.virtual_stages();
  const int boundaries = placed ? std::min(plan.boundaries_size(), grid.boundaries()) : 0;
  // Virtual stages of each pipeline stage, in chunk order.
  std::vector<std::vector<int>> stage_vs(grid.stages());
  for (int s = 0; s < grid.stages(); ++s) {
    for (int k = 0; placed && k < grid.chunks(); ++k) stage_vs[s].push_back(grid.VirtualOf(s, k));
  }
  const bool unit_costs = absl::GetFlag(FLAGS_unit_costs);
  absl::StatusOr<passes::Timeline> timeline = TimelineOf(plan, unit_costs);
  const auto& t = plan.topology();
  const auto& c = plan.config();
  const auto& placement = plan.placement();

  if (absl::GetFlag(FLAGS_json)) {
    ASSIGN_OR_RETURN(std::string plan_json, ir::PlanToJson(plan));
    std::string stats = absl::StrFormat(
        "{\"verified\": %s, \"fingerprint_ok\": %s, \"level\": %s, \"num_stages\": %d, \"data_parallel\": %d, "
        "\"virtual_stages_per_stage\": %d, \"world_size\": %d, \"costs\": %s",
        verified.ok() ? "true" : "false", stamp.ok() ? "true" : "false", JsonString(ir::PlanLevel_Name(plan.level())),
        grid.stages(), grid.replicas(), grid.chunks(), grid.world_size(), JsonString(unit_costs ? "unit" : "plan"));
    if (timeline.ok()) {
      absl::StrAppend(&stats, TimelineJson(*timeline));
    } else {
      absl::StrAppend(&stats, ", \"timeline_error\": ", JsonString(std::string(timeline.status().message())));
    }
    std::vector<std::string> st;
    for (int s = 0; s < grid.stages(); ++s) {
      std::vector<std::string> vs;
      for (int v : stage_vs[s]) {
        const ir::VirtualStage& r = placement.virtual_stages(v);
        vs.push_back(absl::StrFormat("{\"virtual_stage\": %d, \"chunk\": %d, \"layers\": [%d, %d], \"params\": %d}", v,
                                     grid.ChunkOf(v), r.begin(), r.end(), LayerParams(plan, r)));
      }
      std::string stage = absl::StrFormat("{\"stage\": %d", s);
      if (timeline.ok()) absl::StrAppend(&stage, StageTimelineJson(*timeline, s));
      absl::StrAppend(&stage, absl::StrFormat(", \"ranks\": [%s], \"virtual_stages\": [%s]",
                                              absl::StrJoin(grid.DataParallelGroup(s), ", "), absl::StrJoin(vs, ", ")));
      if (s < plan.programs_size()) {
        absl::StrAppend(&stage, absl::StrFormat(", \"instructions\": %d, \"num_slots\": %d, \"instruction_counts\": %s",
                                                plan.programs(s).instructions_size(), plan.programs(s).num_slots(),
                                                CountsJson(InstructionCounts(plan.programs(s)))));
      }
      if (s < plan.eval_programs_size()) {
        absl::StrAppend(&stage, absl::StrFormat(", \"eval_instructions\": %d, \"eval_num_slots\": %d",
                                                plan.eval_programs(s).instructions_size(),
                                                plan.eval_programs(s).num_slots()));
      }
      st.push_back(absl::StrCat(stage, "}"));
    }
    std::vector<std::string> bs;
    for (int b = 0; b < boundaries; ++b) {
      const int from = grid.SenderOf(ir::ACTIVATION, b), to = grid.ReceiverOf(ir::ACTIVATION, b);
      bs.push_back(absl::StrFormat(
          "{\"boundary\": %d, \"from_virtual_stage\": %d, \"to_virtual_stage\": %d, \"from_stage\": %d, "
          "\"to_stage\": %d, \"tensors\": %s, \"activation_bytes\": %d, \"gradient_bytes\": %d}",
          b, from, to, grid.StageOf(from), grid.StageOf(to), TensorsJson(plan.boundaries(b).tensors()),
          passes::TransferBytes(plan, ir::ACTIVATION, b), passes::TransferBytes(plan, ir::GRADIENT, b)));
    }
    absl::StrAppend(&stats, ",\n \"stages\": [\n  ", absl::StrJoin(st, ",\n  "), "],\n \"boundaries\": [\n  ",
                    absl::StrJoin(bs, ",\n  "), "]");
    std::cout << "{\"stats\": " << stats << "},\n\"plan\": " << plan_json << "}\n";
    return verified;
  }

  std::cout << absl::StrFormat(
      "plan %s: model '%s' (%d layers), %d stages x %d data-parallel = %d ranks, %s per stage\n"
      "schedule %s, %d micro-batches of %d per replica (global batch %d), optimizer %s lr=%g, seed %d\n"
      "format v%d, level %s, fingerprint %s (%s), verifier: %s\n\n",
      path, plan.model().name(), plan.model().layers_size(), grid.stages(), grid.replicas(), grid.world_size(),
      Count(grid.chunks(), "virtual stage", "virtual stages"), c.schedule(), c.micro_batches(), c.micro_batch_size(),
      int64_t{c.micro_batches()} * c.micro_batch_size() * t.data_parallel(), c.optimizer().type(), c.optimizer().lr(),
      c.seed(), plan.format_version(), ir::PlanLevel_Name(plan.level()), plan.fingerprint(),
      stamp.ok() ? "matches" : "MISMATCH", verified.ok() ? "ok" : std::string(verified.message()));
  std::cout << (placed ? "placement:\n" : "placement: none yet (the partition pass places the virtual stages)\n");
  for (int s = 0; placed && s < grid.stages(); ++s) {
    std::cout << absl::StrFormat("  stage %d (%s):\n", s, RanksText(grid, s));
    for (int v : stage_vs[s]) {
      const ir::VirtualStage& r = placement.virtual_stages(v);
      std::vector<std::string> names;
      for (int l = r.begin(); l < r.end(); ++l) names.push_back(plan.model().layers(l).name());
      std::cout << absl::StrFormat("    virtual stage %d (chunk %d): layers [%d, %d) %s, %d params\n", v,
                                   grid.ChunkOf(v), r.begin(), r.end(), absl::StrJoin(names, " "),
                                   LayerParams(plan, r));
    }
  }
  if (boundaries > 0) {
    std::cout << "boundaries (activations forward, gradients of the FLOAT32 tensors back; per micro-batch):\n";
    for (int b = 0; b < boundaries; ++b) {
      const int from = grid.SenderOf(ir::ACTIVATION, b), to = grid.ReceiverOf(ir::ACTIVATION, b);
      std::cout << absl::StrFormat("  b%d: virtual stage %d -> %d (stage %d -> %d): %s; %s forward, %s back\n", b, from,
                                   to, grid.StageOf(from), grid.StageOf(to), TensorsText(plan.boundaries(b).tensors()),
                                   HumanBytes(passes::TransferBytes(plan, ir::ACTIVATION, b)),
                                   HumanBytes(passes::TransferBytes(plan, ir::GRADIENT, b)));
    }
  }
  for (const auto& prog : plan.programs()) {
    std::cout << absl::StrFormat("\n== stage %d (%s; virtual stages %s), %s (%s), %s\n", prog.stage(),
                                 RanksText(grid, prog.stage()), absl::StrJoin(stage_vs[prog.stage()], ", "),
                                 Count(prog.instructions_size(), "instruction", "instructions"),
                                 CountsText(InstructionCounts(prog)), Count(prog.num_slots(), "slot", "slots"))
              << ir::PrintProgram(prog, true);
  }
  for (const auto& prog : plan.eval_programs()) {
    std::cout << absl::StrFormat("\n== eval stage %d (forward only), %s (%s), %s\n", prog.stage(),
                                 Count(prog.instructions_size(), "instruction", "instructions"),
                                 CountsText(InstructionCounts(prog)), Count(prog.num_slots(), "slot", "slots"))
              << ir::PrintProgram(prog, true);
  }
  if (timeline.ok()) {
    std::cout << TimelineText(plan, *timeline, unit_costs);
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
  ASSIGN_OR_RETURN(ir::Module result,
                   passes::RunPipeline(ir::ToModule(std::move(plan)), pipeline, OptionsFromFlags()));
  WarnIfUnverified(result);
  return ir::SavePlan(result, out);
}

// Pass name -> the plugin that registered it.
std::map<std::string, std::string>& PluginOfPass() {
  static auto* plugins = new std::map<std::string, std::string>;
  return *plugins;
}

void ListPasses() {
  for (const PassInfo& p : passes::GlobalPassRegistry().passes()) {
    auto plugin = PluginOfPass().find(p.name);
    std::cout << absl::StrFormat("%-26s %s%s\n", p.name, p.summary,
                                 plugin == PluginOfPass().end() ? "" : absl::StrCat(" [plugin ", plugin->second, "]"));
  }
}

// --pass-plugin=a.so[,b.so] or --pass-plugin a.so, any number of times (also spelt
// --pass_plugin): the paths in order, taken out of argv before Abseil parses it (Abseil
// keeps a flag's last value; NormalizeFlagNames refuses a repeated flag).
absl::StatusOr<std::vector<std::string>> TakePassPlugins(int& argc, char** argv) {
  std::vector<std::string> plugins;
  int kept = 1;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") flags_done = true;
    std::optional<std::string> value;
    for (const char* name : {"--pass-plugin", "--pass_plugin", "-pass-plugin", "-pass_plugin"}) {
      if (flags_done) break;
      const std::string flag = name;
      if (a == flag) {
        if (i + 1 >= argc) return absl::InvalidArgumentError("--pass-plugin needs a value: a plugin's path");
        value = argv[++i];
      } else if (absl::StartsWith(a, flag + "=")) {
        value = a.substr(flag.size() + 1);
      }
      if (value) break;
    }
    if (!value) {
      argv[kept++] = argv[i];
      continue;
    }
    if (value->empty()) return absl::InvalidArgumentError("--pass-plugin is empty");
    for (absl::string_view path : absl::StrSplit(*value, ',')) {
      if (path.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("--pass-plugin=", *value, " has an empty path"));
      }
      plugins.emplace_back(path);
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  return plugins;
}

// Loads every --pass-plugin, in order, into the pass registry.
absl::Status LoadPassPlugins(const std::vector<std::string>& plugins) {
  for (const std::string& path : plugins) {
    std::vector<std::string> names;
    RETURN_IF_ERROR(LoadPassPlugin(path, passes::RegisterPass, &names));
    for (const std::string& name : names) PluginOfPass()[name] = path;
  }
  return absl::OkStatus();
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
  // Plugins first: every command, and the flags' help, sees their passes.
  absl::StatusOr<std::vector<std::string>> plugins = TakePassPlugins(argc, argv);
  if (!plugins.ok()) {
    std::cerr << "ppc: " << plugins.status().message() << "\n";
    return 2;
  }
  if (absl::Status loaded = LoadPassPlugins(*plugins); !loaded.ok()) {
    std::cerr << "ppc: " << loaded << "\n";
    return 1;
  }
  if (argc >= 2 && std::string(argv[1]) == "export") return ExecExport(argc, argv);
  absl::SetProgramUsageMessage(
      "compile, inspect and transform pipeline-parallel training plans.\n"
      "  ppc compile --model M.textproto --stages P [--data-parallel D] [--virtual-stages V]\n"
      "              [--micro-batches M] [--micro-batch-size B]\n"
      "              [--schedule 1f1b|interleaved-1f1b|gpipe|inference|data-parallel|NAME] --out PLAN\n"
      "              (V > 1 virtual stages per stage: --schedule interleaved-1f1b)\n"
      "  ppc inspect PLAN [--json] [--unit-costs]\n"
      "  ppc verify PLAN\n"
      "  ppc opt --passes=a,b{k=v} IN OUT\n"
      "  ppc export CHECKPOINT_DIR [--tag T] --out FILE [--model M.textproto]\n"
      "  ppc --list-passes\n"
      "  ppc --pass-plugin=lib.so[,lib2.so] COMMAND ...   (with any command, repeatable; loads pass\n"
      "      plugins first: a plugin's schedule-NAME is --schedule NAME; docs/writing-a-pass.md)");
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

int main(int argc, char** argv) {
  // The compiler builds and drops large arrays pass after pass. Keep what it frees in the
  // heap (no mmap for big blocks, no trimming) rather than handing it back to the kernel:
  // every page handed back is a fresh zeroed page and a page fault when touched again,
  // which cost about a fifth of a large compile.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return ppc::Main(argc, argv);
}
