#include "passes/schedule/batch_weight_grads.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/analysis/activations.h"
#include "passes/plan_util.h"

namespace ppc::passes {

void BatchWeightGrads(ir::Module& module, int k) {
  k = std::max(1, k);
  for (ir::Program& prog : module.programs) {
    std::vector<ir::Op> ops;
    ops.reserve(prog.ops.size() * 2);
    for (const ir::Op& op : prog.ops) {
      if (op.is(ir::OpCode::kCompute) && op.compute_kind() == ir::BACKWARD) {
        ops.push_back(ir::Op::Compute(ir::BACKWARD_INPUT, op.virtual_stage(), op.micro_batch, op.slot));
        ops.push_back(ir::Op::Compute(ir::BACKWARD_WEIGHT, op.virtual_stage(), op.micro_batch, op.slot));
      } else {
        ops.push_back(op);
      }
    }
    // Per virtual stage, its W's in program order, K to a group.
    std::map<int, std::vector<size_t>> ws;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].is(ir::OpCode::kCompute) && ops[i].compute_kind() == ir::BACKWARD_WEIGHT) {
        ws[ops[i].virtual_stage()].push_back(i);
      }
    }
    for (const auto& [v, at] : ws) {
      for (size_t j = 0; j < at.size(); ++j) {
        const bool last_of_group = (j + 1) % static_cast<size_t>(k) == 0 || j + 1 == at.size();
        ops[at[j]] = ir::Op::Compute(ir::BACKWARD_WEIGHT, v, ops[at[j]].micro_batch, ops[at[j]].slot, !last_of_group);
      }
    }
    prog.ops = std::move(ops);
  }
}

namespace {

// The largest peak over the stages of the programs' activation bytes.
struct Peak {
  int64_t bytes = 0;
  int stage = 0;
};

Peak PeakOf(const ir::Module& module, const std::vector<SavedActivationBytes>& saved) {
  Peak peak;
  for (const ir::Program& prog : module.programs) {
    ActivationWalk walk(saved);
    for (const ir::Op& op : prog.ops)
      if (op.is(ir::OpCode::kCompute)) walk.Apply(op.compute_kind(), op.virtual_stage(), op.deferred());
    if (walk.peak() > peak.bytes) peak = {walk.peak(), prog.stage};
  }
  return peak;
}

}  // namespace

absl::Status BatchWeightGradsPass::Run(ir::Module& module) {
  const char* pass = "batch-weight-grads";
  RETURN_IF_ERROR(RequireLevel(module.header, ir::COMPUTE_ONLY, pass));
  RETURN_IF_ERROR(RequirePlacement(module.header, pass));
  const int m = module.header.config().micro_batches();
  int group = m;
  if (!group_.empty() && group_ != "all" && (!absl::SimpleAtoi(group_, &group) || group < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(pass, ": group must be all or a number of micro-batches >= 1, got '", group_, "'"));
  }
  int64_t budget = 0;  // none
  if (!max_activations_.empty() && max_activations_ != "none" &&
      (!absl::SimpleAtoi(max_activations_, &budget) || budget <= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        pass, ": max_activations must be none or a number of bytes > 0, got '", max_activations_, "'"));
  }
  if (!IsTraining(module)) {
    return absl::InvalidArgumentError(absl::StrCat(pass, ": the plan does not train (schedule '",
                                                   module.header.config().schedule(), "' has no backward)"));
  }
  for (const ir::Program& prog : module.programs) {
    for (int i = 0; i < prog.size(); ++i) {
      const ir::Op& op = prog.ops[i];
      if (!op.is(ir::OpCode::kCompute)) {
        return absl::InvalidArgumentError(absl::StrCat("stage ", prog.stage, ": ", pass, " found '",
                                                       ir::PrintOp(prog, i), "' in a COMPUTE_ONLY program"));
      }
      if (op.deferred()) {
        return absl::InvalidArgumentError(absl::StrCat("stage ", prog.stage, " instruction ", i, ": ", pass,
                                                       " found a deferred W (the pass has run already)"));
      }
    }
  }
  group = std::min(group, std::max(1, m));
  if (budget <= 0) {
    BatchWeightGrads(module, group);
    return absl::OkStatus();
  }
  const std::vector<SavedActivationBytes> saved = SavedActivations(module.header);
  if (saved.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(pass, ": max_activations needs the layers' output shapes (run infer-shapes first)"));
  }
  // The peak grows with K: the largest K that fits.
  const std::vector<ir::Program> original = module.programs;
  for (int k = group; k >= 1; --k) {
    module.programs = original;
    BatchWeightGrads(module, k);
    const Peak peak = PeakOf(module, saved);
    if (peak.bytes <= budget) return absl::OkStatus();
    if (k == 1) {
      module.programs = original;
      return absl::FailedPreconditionError(absl::StrCat(
          pass, ": max_activations=", budget, " bytes: stage ", peak.stage, " keeps ", peak.bytes,
          " bytes of activations even with one micro-batch per group (no batching); raise the budget"));
    }
  }
  return absl::OkStatus();
}

}  // namespace ppc::passes
