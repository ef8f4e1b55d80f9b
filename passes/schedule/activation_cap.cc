#include "passes/schedule/activation_cap.h"

#include <deque>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ir/status_macros.h"

namespace ppc::passes {

std::vector<ComputeOp> CapActivations(const std::vector<ComputeOp>& order,
                                      const std::vector<SavedActivationBytes>& saved, int64_t cap) {
  ActivationWalk walk(saved);
  std::vector<ComputeOp> out;
  out.reserve(order.size());
  std::deque<ComputeOp> pending;            // W's whose I ran, oldest first
  std::set<std::pair<int, int>> moved;      // (virtual stage, micro-batch) of W's run early
  auto emit = [&](const ComputeOp& op) {
    out.push_back(op);
    walk.Apply(op.kind, op.virtual_stage);
  };
  for (const ComputeOp& op : order) {
    if (op.kind == ir::BACKWARD_WEIGHT) {
      if (moved.erase({op.virtual_stage, op.micro_batch})) continue;  // ran already
      for (auto it = pending.begin(); it != pending.end(); ++it) {
        if (it->virtual_stage == op.virtual_stage && it->micro_batch == op.micro_batch) {
          pending.erase(it);
          break;
        }
      }
      emit(op);
      continue;
    }
    while (!pending.empty() && walk.After(op.kind, op.virtual_stage) > cap) {
      const ComputeOp w = pending.front();
      pending.pop_front();
      moved.insert({w.virtual_stage, w.micro_batch});
      emit(w);
    }
    emit(op);
    if (op.kind == ir::BACKWARD_INPUT) pending.push_back({ir::BACKWARD_WEIGHT, op.virtual_stage, op.micro_batch});
  }
  return out;
}

absl::Status CappedSchedulePass::Run(ir::Module& module) {
  const std::string pass = name();
  int64_t cap = 0;  // none
  if (max_activations_ != "none") {
    if (max_activations_ != "1f1b" && (!absl::SimpleAtoi(max_activations_, &cap) || cap <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          pass, ": max_activations must be none, 1f1b or a number of bytes > 0, got '", max_activations_, "'"));
    }
  }
  RETURN_IF_ERROR(SchedulePass::Run(module));
  if (max_activations_ == "none") return absl::OkStatus();
  const std::vector<SavedActivationBytes> saved = SavedActivations(module.header);
  if (saved.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(pass, ": max_activations=", max_activations_,
                                                      " needs the layers' output shapes (run infer-shapes first)"));
  }
  if (max_activations_ == "1f1b") cap = OneFOneBPeakActivationBytes(module.header);
  if (cap <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(pass, ": max_activations=1f1b: no 1F1B peak for this plan "
                                                      "(its placement does not give each stage whole virtual stages)"));
  }
  for (ir::Program& prog : module.programs) {
    std::vector<ComputeOp> order;
    order.reserve(prog.ops.size());
    for (const ir::Op& op : prog.ops) order.push_back({op.compute_kind(), op.virtual_stage(), op.micro_batch});
    order = CapActivations(order, saved, cap);
    prog.ops.clear();
    for (const ComputeOp& op : order) prog.Add(ir::Op::Compute(op.kind, op.virtual_stage, op.micro_batch));
  }
  return absl::OkStatus();
}

}  // namespace ppc::passes
