#include "passes/registry.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/plan_check.h"
#include "passes/analysis/infer_shapes.h"
#include "passes/analysis/verifier.h"
#include "passes/lower/assign_buffers.h"
#include "passes/lower/lower.h"
#include "passes/lower/lower_eval.h"
#include "passes/lower/place_comm.h"
#include "passes/partition/partition.h"
#include "passes/schedule/schedule.h"
#include "passes/schedule/activation_cap.h"
#include "passes/schedule/batch_weight_grads.h"
#include "passes/schedule/zero_bubble.h"

namespace ppc::passes {
namespace {

template <typename T>
PassInfo Simple(const char* name, const char* summary) {
  return {name, summary, {}, [](const PassOptions&) -> absl::StatusOr<std::unique_ptr<Pass>> {
            return std::make_unique<T>();
          }};
}

PassInfo Schedule(const char* name, const char* summary, StageOrder order, ScheduleCheck check) {
  return {name, summary, {}, [name, order, check](const PassOptions&) -> absl::StatusOr<std::unique_ptr<Pass>> {
            return std::make_unique<SchedulePass>(name, order, check);
          }};
}

// A split-backward schedule: option max_activations=none|1f1b|BYTES, `cap` by default.
PassInfo SplitSchedule(const char* name, const char* summary, StageOrder order, ScheduleCheck check,
                       const char* cap) {
  return {name, summary, {"max_activations"},
          [name, order, check, cap](const PassOptions& o) -> absl::StatusOr<std::unique_ptr<Pass>> {
            auto it = o.find("max_activations");
            return std::make_unique<CappedSchedulePass>(name, order, check, it == o.end() ? cap : it->second);
          }};
}

// A pass option's value; "" when not given.
std::string OptionOr(const PassOptions& o, const char* key) {
  auto it = o.find(key);
  return it == o.end() ? "" : it->second;
}

}  // namespace

namespace {

PassRegistry* MutableRegistry() {
  static auto* registry = new PassRegistry({
      Simple<AssignBuffers>("assign-buffers", "give every compute op its micro-batch's slot (COMPUTE_ONLY -> BUFFERED)"),
      {"batch-weight-grads",
       "split every B into I and W and compute the W's of a virtual stage K micro-batches at a time, one call per "
       "layer (COMPUTE_ONLY) {group=all|K, max_activations=none|BYTES}",
       {"group", "max_activations"},
       [](const PassOptions& o) -> absl::StatusOr<std::unique_ptr<Pass>> {
         return std::make_unique<BatchWeightGradsPass>(OptionOr(o, "group"), OptionOr(o, "max_activations"));
       }},
      Simple<InferShapes>("infer-shapes", "fill layer output groups and parameter counts"),
      Simple<Lower>("lower", "loads, ordered sends/receives/waits, reductions, optimizer step (BUFFERED -> LOWERED)"),
      Simple<LowerEval>("lower-eval", "give a training plan forward-only eval programs (inference schedule)"),
      {"partition",
       "split layers into P x V virtual stages and write the boundary table "
       "{method=parameters|flops|uniform|type:REGEX|explicit:A:B, layout=round-robin|v}",
       {"layout", "method"},
       [](const PassOptions& o) -> absl::StatusOr<std::unique_ptr<Pass>> {
         return std::make_unique<PartitionPass>(OptionOr(o, "method"), OptionOr(o, "layout"));
       }},
      Simple<PlaceComm>("place-comm", "post each receive as early as its slot is free"),
      Schedule("schedule-1f1b", "one-forward-one-backward (DeepSpeed's TrainSchedule)", OneFOneBOrder, OneChunk),
      Schedule("schedule-data-parallel", "P=1 gradient accumulation", DataParallelOrder, OneStageOneChunk),
      SplitSchedule("schedule-dualpipev",
                    "DeepSeek's DualPipe in a V (torch's ScheduleDualPipeV): F of one micro-batch and B of another "
                    "back to back {max_activations=none|1f1b|BYTES, default none}",
                    DualPipeVOrder, DualPipeVShape, "none"),
      Schedule("schedule-gpipe", "all forwards, then all backwards", GPipeOrder, AnyShape),
      Schedule("schedule-inference", "forward only", InferenceOrder, AnyShape),
      Schedule("schedule-interleaved-1f1b", "Megatron's interleaved 1F1B over V virtual stages per stage",
               Interleaved1F1BOrder, InterleavedShape),
      SplitSchedule("schedule-zb-h1",
                    "zero-bubble ZB-H1: 1F1B with backward split into I and W, W's in the bubbles "
                    "{max_activations=none|1f1b|BYTES, default 1f1b}",
                    ZbH1Order, ZbH1Shape, "1f1b"),
      SplitSchedule("schedule-zb-v",
                    "zero-bubble ZB-V: two chunks per stage in a V, split backward (torch's ScheduleZBVZeroBubble) "
                    "{max_activations=none|1f1b|BYTES, default none}",
                    ZbVOrder, ZbVShape, "none"),
      Simple<VerifyPass>("verify", "check the plan; never changes it"),
  });
  return registry;
}

}  // namespace

const PassRegistry& GlobalPassRegistry() { return *MutableRegistry(); }

absl::Status RegisterPass(PassInfo info) { return MutableRegistry()->Add(std::move(info)); }

absl::StatusOr<std::string> DefaultPipeline(const ir::TrainingConfig& config) {
  const std::string schedule = config.schedule().empty() ? "1f1b" : config.schedule();
  if (!GlobalPassRegistry().Find("schedule-" + schedule)) {
    std::vector<std::string> known;  // built-in and plugin schedules alike
    for (const PassInfo& p : GlobalPassRegistry().passes()) {
      if (absl::StartsWith(p.name, "schedule-")) known.push_back(p.name.substr(9));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unknown schedule '", schedule, "'; use ", absl::StrJoin(known, ", ")));
  }
  std::string partition = "partition";
  if (!config.partition_method().empty()) partition = absl::StrCat("partition{method=", config.partition_method(), "}");
  // lower-eval lowers the inference schedule over the final placement (a no-op on an
  // inference plan); place-comm then moves the receives of both program sets.
  return absl::StrCat("infer-shapes,", partition, ",schedule-", schedule,
                      ",assign-buffers,lower,lower-eval,place-comm");
}

absl::StatusOr<std::string> WithBatchWeightGrads(const std::string& pipeline, const std::string& group) {
  int k = 0;
  if (group != "all" && (!absl::SimpleAtoi(group, &k) || k < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch-weight-grads must be all or a number of micro-batches >= 1, got '", group, "'"));
  }
  const std::string at = ",assign-buffers";
  const size_t pos = pipeline.find(at);
  if (pos == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch-weight-grads goes before assign-buffers, which pipeline '", pipeline, "' does not run"));
  }
  return absl::StrCat(pipeline.substr(0, pos), ",batch-weight-grads{group=", group, "}", pipeline.substr(pos));
}

}  // namespace ppc::passes
