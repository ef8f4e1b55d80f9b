#include "tests/fuzz/targets.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "compiler/deepspeed_config.h"
#include "google/protobuf/text_format.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "passes/analysis/timeline.h"
#include "passes/analysis/verifier.h"
#include "passes/compile.h"

namespace ppc::fuzz {
namespace {

// Fails loudly: the fuzz driver counts an abort as a crash, with the input kept.
void Require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

uint32_t Hash(const uint8_t* data, size_t size) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 16777619u;
  return h;
}

}  // namespace

int PlanTarget(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  ir::Plan plan;
  if (bytes.rfind("PPCPLAN\n", 0) == 0) {
    if (!plan.ParseFromString(bytes.substr(8))) return 1;
  } else {
    auto parsed = ir::ParsePlan(bytes);
    if (!parsed.ok()) return 1;
    plan = *std::move(parsed);
  }
  (void)ir::CheckStamp(plan, "fuzz");
  (void)ir::CheckPlanStructure(plan, /*complete=*/true);
  if (!passes::VerifyPlan(plan).ok()) return 1;
  // What pprun accepts, the runtime's load accepts.
  if (passes::VerifyRunnablePlan(plan).ok()) {
    Require(ir::CheckPlanStructure(plan, /*complete=*/true).ok(), "a runnable plan passes the runtime's checks");
  }
  // What ppc inspect does with a verified plan.
  (void)passes::SimulateTimeline(plan);
  const std::string text = ir::PrintPlan(plan);
  auto again = ir::ParsePlan(text);
  Require(again.ok() && ir::PrintPlan(*again) == text, "a verified plan prints and parses back to itself");
  return 0;
}

int SpecTarget(const uint8_t* data, size_t size) {
  ir::ModelSpec model;
  google::protobuf::TextFormat::Parser parser;
  parser.AllowPartialMessage(false);
  if (!parser.ParseFromString(std::string(reinterpret_cast<const char*>(data), size), &model)) return 1;
  // Topology and config from the input's hash: small, valid ones, every schedule that
  // trains over a pipeline (interleaved 1F1B with 2 virtual stages per stage, so
  // micro-batches a multiple of the stages).
  const uint32_t h = Hash(data, size);
  ir::Topology topology;
  ir::TrainingConfig c;
  topology.set_num_stages(1 + h % 3);
  topology.set_data_parallel(1 + (h >> 4) % 2);
  c.set_micro_batches(1 + (h >> 8) % 4);
  c.set_micro_batch_size(1 + (h >> 12) % 3);
  switch ((h >> 24) % 3) {
    case 0:
      c.set_schedule("gpipe");
      break;
    case 1:
      c.set_schedule("1f1b");
      break;
    default:
      topology.set_num_stages(2 + h % 2);
      c.set_schedule("interleaved-1f1b");
      c.set_virtual_stages(2);
      c.set_micro_batches(topology.num_stages() * (1 + (h >> 8) % 2));
  }
  c.set_zero_stage((h >> 18) % 2);
  c.set_seed(1);
  c.set_steps(1);
  c.mutable_optimizer()->set_type((h >> 19) % 2 ? "adam" : "sgd");
  c.mutable_optimizer()->set_lr(0.01);
  // The compiler's one entry point: the default pipeline for the schedule, the verifier
  // after every pass, the final check and the stamp.
  auto plan = passes::CompilePlan(model, topology, c);
  if (!plan.ok()) return 1;
  // Whatever the compiler accepts, the runtime's load and pprun accept.
  Require(!plan->unverified(), "a compiled plan is not marked unverified");
  Require(ir::CheckPlanStructure(*plan, /*complete=*/true).ok(), "a compiled plan passes the runtime's checks");
  Require(passes::VerifyRunnablePlan(*plan).ok(), "a compiled plan is one pprun runs");
  Require(ir::CheckStamp(*plan, "fuzz").ok(), "a stamped plan matches its stamp");
  return 0;
}

int DsConfigTarget(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  int accepted = 0;
  for (int dp : {1, 2, 3}) {
    auto c = ParseDeepSpeedConfig(text, dp, "fuzz.json");
    if (!c.ok()) continue;
    ++accepted;
    Require(c->config.micro_batches() >= 1 && c->config.micro_batch_size() >= 1, "batch settings are positive");
    Require(c->train_batch_size == int64_t{c->config.micro_batches()} * c->config.micro_batch_size() * dp,
            "train_batch_size = micro x accumulation x replicas");
  }
  return accepted > 0 ? 0 : 1;
}

}  // namespace ppc::fuzz
