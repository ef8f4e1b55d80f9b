#include "passes/registry.h"

#include "absl/strings/str_cat.h"
#include "passes/analysis/infer_shapes.h"
#include "passes/analysis/verifier.h"
#include "passes/lower/assign_buffers.h"
#include "passes/lower/insert_grad_reduction.h"
#include "passes/lower/insert_loads.h"
#include "passes/lower/insert_p2p.h"
#include "passes/lower/lower_eval.h"
#include "passes/partition/partition.h"
#include "passes/schedule/schedule_1f1b.h"
#include "passes/schedule/schedule_data_parallel.h"
#include "passes/schedule/schedule_gpipe.h"
#include "passes/schedule/schedule_inference.h"

namespace ppc::passes {
namespace {

template <typename T>
PassInfo Simple(const char* name, const char* summary) {
  return {name, summary, {}, [](const PassOptions&) -> absl::StatusOr<std::unique_ptr<Pass>> {
            return std::make_unique<T>();
          }};
}

}  // namespace

const PassRegistry& GlobalPassRegistry() {
  static const auto* registry = new PassRegistry({
      Simple<AssignBuffers>("assign-buffers", "give forwards/backwards activation buffer slots"),
      Simple<InferShapes>("infer-shapes", "fill layer output shapes and parameter counts"),
      Simple<InsertGradReduction>("insert-grad-reduction", "append tied/data-parallel reductions and the optimizer step"),
      Simple<InsertLoads>("insert-loads", "load inputs on the first stage and labels on the last"),
      Simple<InsertP2P>("insert-p2p", "insert non-blocking sends/receives and their waits"),
      Simple<LowerEval>("lower-eval", "give a training plan forward-only eval programs (inference schedule)"),
      {"partition", "split layers into stages {method=parameters|flops|uniform|type:REGEX|explicit:A:B}", {"method"},
       [](const PassOptions& o) -> absl::StatusOr<std::unique_ptr<Pass>> {
         auto it = o.find("method");
         return std::make_unique<PartitionPass>(it == o.end() ? "" : it->second);
       }},
      Simple<Schedule1F1B>("schedule-1f1b", "one-forward-one-backward (DeepSpeed's TrainSchedule)"),
      Simple<ScheduleDataParallel>("schedule-data-parallel", "P=1 gradient accumulation"),
      Simple<ScheduleGPipe>("schedule-gpipe", "all forwards, then all backwards"),
      Simple<ScheduleInference>("schedule-inference", "forward only"),
      Simple<VerifyPass>("verify", "check the plan; never changes it"),
  });
  return *registry;
}

absl::StatusOr<std::string> DefaultPipeline(const ir::TrainingConfig& config) {
  const std::string schedule = config.schedule().empty() ? "1f1b" : config.schedule();
  if (!GlobalPassRegistry().Find("schedule-" + schedule)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown schedule '", schedule,
                                                   "'; use 1f1b, gpipe, inference or data-parallel"));
  }
  std::string partition = "partition";
  if (!config.partition_method().empty()) partition = absl::StrCat("partition{method=", config.partition_method(), "}");
  // lower-eval runs last: it lowers the inference schedule over the final partition
  // (a no-op on an inference plan, whose programs already are forward-only).
  return absl::StrCat("infer-shapes,", partition, ",schedule-", schedule,
                      ",assign-buffers,insert-loads,insert-p2p,insert-grad-reduction,lower-eval");
}

}  // namespace ppc::passes
