#include "passes/schedule/schedule.h"

#include "absl/strings/str_cat.h"
#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::Status SchedulePass::Run(ir::Module& module) {
  ir::Plan& plan = module.header;
  const char* pass = name_.c_str();
  RETURN_IF_ERROR(RequireLevel(plan, ir::LEVEL_NONE, pass));
  RETURN_IF_ERROR(RequirePlacement(plan, pass));
  const int m = plan.config().micro_batches();
  if (m < 1) return absl::InvalidArgumentError(absl::StrCat(pass, ": config.micro_batches must be >= 1, got ", m));
  if (plan.config().micro_batch_size() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(pass, ": config.micro_batch_size must be >= 1, got ",
                                                   plan.config().micro_batch_size()));
  }
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(plan));
  absl::Status fits = check_(grid, m);
  if (!fits.ok()) return absl::InvalidArgumentError(absl::StrCat(pass, ": ", fits.message()));
  module.programs.assign(grid.stages(), ir::Program());
  for (int s = 0; s < grid.stages(); ++s) {
    ir::Program& prog = module.programs[s];
    prog.stage = s;
    const std::vector<ComputeOp> order = order_(grid, s, m);
    prog.ops.reserve(order.size());
    for (const ComputeOp& op : order) prog.Add(ir::Op::Compute(op.kind, op.virtual_stage, op.micro_batch));
  }
  plan.set_level(ir::COMPUTE_ONLY);
  return absl::OkStatus();
}

absl::Status OneChunk(const ir::Grid& grid, int) {
  if (grid.chunks() == 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("runs one virtual stage per stage, got ", grid.chunks(),
                                                 "; use schedule interleaved-1f1b for virtual stages"));
}

absl::Status OneStageOneChunk(const ir::Grid& grid, int m) {
  if (grid.stages() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("needs num_stages == 1, got ", grid.stages(), "; use schedule 1f1b or gpipe"));
  }
  return OneChunk(grid, m);
}

absl::Status AnyShape(const ir::Grid&, int) { return absl::OkStatus(); }

absl::Status InterleavedShape(const ir::Grid& grid, int m) {
  if (grid.stages() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("needs num_stages >= 2, got ", grid.stages()));
  }
  if (m % grid.stages() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("needs micro_batches a multiple of num_stages (", grid.stages(),
                                                   "), got ", m));
  }
  return absl::OkStatus();
}

std::vector<ComputeOp> OneFOneBOrder(const ir::Grid& grid, int s, int m) {
  const int p = grid.stages();
  const int v = grid.VirtualOf(s, 0);
  std::vector<ComputeOp> ops;
  const int warmup = std::min(p - s - 1, m);
  int next_f = 0, next_b = 0;
  for (; next_f < warmup; ++next_f) ops.push_back({ir::FORWARD, v, next_f});
  while (next_f < m) {
    ops.push_back({ir::FORWARD, v, next_f++});
    ops.push_back({ir::BACKWARD, v, next_b++});
  }
  while (next_b < m) ops.push_back({ir::BACKWARD, v, next_b++});
  return ops;
}

std::vector<ComputeOp> InferenceOrder(const ir::Grid& grid, int s, int m) {
  std::vector<ComputeOp> ops;
  for (int mb = 0; mb < m; ++mb)
    for (int c = 0; c < grid.chunks(); ++c) ops.push_back({ir::FORWARD, grid.VirtualOf(s, c), mb});
  return ops;
}

std::vector<ComputeOp> GPipeOrder(const ir::Grid& grid, int s, int m) {
  std::vector<ComputeOp> ops = InferenceOrder(grid, s, m);
  for (int mb = 0; mb < m; ++mb)
    for (int c = grid.chunks() - 1; c >= 0; --c) ops.push_back({ir::BACKWARD, grid.VirtualOf(s, c), mb});
  return ops;
}

std::vector<ComputeOp> DataParallelOrder(const ir::Grid& grid, int s, int m) {
  std::vector<ComputeOp> ops;
  const int v = grid.VirtualOf(s, 0);
  for (int mb = 0; mb < m; ++mb) {
    ops.push_back({ir::FORWARD, v, mb});
    ops.push_back({ir::BACKWARD, v, mb});
  }
  return ops;
}

std::vector<ComputeOp> Interleaved1F1BOrder(const ir::Grid& grid, int s, int m) {
  const int p = grid.stages(), chunks = grid.chunks();
  const int total = m * chunks;
  // The k-th forward (backward) of this stage: chunk and micro-batch, as Megatron's
  // get_model_chunk_id / microbatch id (groups of P micro-batches per chunk).
  auto chunk_of = [&](int k, bool forward) {
    const int c = (k % (p * chunks)) / p;
    return forward ? c : chunks - 1 - c;
  };
  auto mb_of = [&](int k) { return (k / (p * chunks)) * p + k % p; };
  int warmup = m == p ? total : std::min(total, (p - s - 1) * 2 + (chunks - 1) * p);
  std::vector<ComputeOp> ops;
  auto forward = [&](int k) { ops.push_back({ir::FORWARD, grid.VirtualOf(s, chunk_of(k, true)), mb_of(k)}); };
  auto backward = [&](int k) { ops.push_back({ir::BACKWARD, grid.VirtualOf(s, chunk_of(k, false)), mb_of(k)}); };
  for (int k = 0; k < warmup; ++k) forward(k);
  for (int k = 0; k < total - warmup; ++k) {
    forward(k + warmup);
    backward(k);
  }
  for (int k = total - warmup; k < total; ++k) backward(k);
  return ops;
}

}  // namespace ppc::passes
