#include "passes/schedule/zero_bubble.h"

#include <algorithm>
#include <deque>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ppc::passes {

// The three orders follow torch.distributed.pipelining's schedules.py step by step (the
// golden files in passes/testdata/orders/ are torch's output).

std::vector<ComputeOp> ZbH1Order(const ir::Grid& grid, int s, int m) {
  const int p = grid.stages();
  const int v = grid.VirtualOf(s, 0);
  // torch: _get_warmup_ops(multiply_factor=1) with one local stage, capped at M;
  // _get_1f1b_rank_ops(enable_zero_bubble=True, num_1f1b_microbatches=rank).
  const int warmup = std::max(0, std::min(p - s - 1, m));
  std::vector<ComputeOp> ops;
  int next_f = 0, next_i = 0;
  std::deque<int> pending_w;  // micro-batches whose I ran, in order
  auto input = [&](int step) {
    ops.push_back({ir::BACKWARD_INPUT, v, next_i});
    pending_w.push_back(next_i++);
    if (step >= s) {  // after `s` steps without a W, one W per step
      ops.push_back({ir::BACKWARD_WEIGHT, v, pending_w.front()});
      pending_w.pop_front();
    }
  };
  for (int k = 0; k < warmup; ++k) ops.push_back({ir::FORWARD, v, next_f++});
  for (int step = 0; step < m; ++step) {  // M - warmup steps "F I", then warmup steps "I"
    if (next_f < m) ops.push_back({ir::FORWARD, v, next_f++});
    input(step);
  }
  for (int mb : pending_w) ops.push_back({ir::BACKWARD_WEIGHT, v, mb});
  return ops;
}

absl::Status ZbH1Shape(const ir::Grid& grid, int) {
  if (grid.chunks() == 1) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("ZB-H1 runs one virtual stage per stage (config.virtual_stages = 1), got ", grid.chunks(),
                   "; use schedule zb-v or dualpipev for two chunks per stage in a V"));
}

std::vector<ComputeOp> ZbVOrder(const ir::Grid& grid, int r, int m) {
  const int p = grid.stages();
  const int chunk0 = grid.VirtualOf(r, 0), chunk1 = grid.VirtualOf(r, 1);
  // torch pads to 2P - 1 micro-batches so the pipeline fills, then drops the padding.
  const int n_micro = std::max(2 * p - 1, m);
  std::vector<ComputeOp> ops;
  int f0 = 0, f1 = 0, b0 = 0, b1 = 0;
  auto add = [&](ir::ComputeKind kind, int v, int mb) {
    if (mb < m) ops.push_back({kind, v, mb});
  };
  for (int k = 0; k < 2 * (p - r) - 1; ++k) add(ir::FORWARD, chunk0, f0++);
  for (int k = 0; k < r; ++k) {
    add(ir::FORWARD, chunk1, f1++);
    add(ir::FORWARD, chunk0, f0++);
  }
  for (int k = 0; k < p - r; ++k) {
    add(ir::FORWARD, chunk1, f1++);
    add(ir::BACKWARD_INPUT, chunk1, b1);
    add(ir::BACKWARD_WEIGHT, chunk1, b1++);
  }
  while (f1 < f0 || f0 < n_micro) {
    if (f0 < n_micro) add(ir::FORWARD, chunk0, f0++);
    add(ir::BACKWARD_INPUT, chunk0, b0);
    add(ir::BACKWARD_WEIGHT, chunk0, b0++);
    add(ir::FORWARD, chunk1, f1++);
    add(ir::BACKWARD_INPUT, chunk1, b1);
    add(ir::BACKWARD_WEIGHT, chunk1, b1++);
  }
  int w0 = b0, w1 = b1;
  for (int k = 0; k < r; ++k) {
    add(ir::BACKWARD_INPUT, chunk0, b0++);
    add(ir::BACKWARD_INPUT, chunk1, b1++);
  }
  for (int k = 0; k < p - r; ++k) {
    add(ir::BACKWARD_INPUT, chunk0, b0++);
    add(ir::BACKWARD_WEIGHT, chunk0, w0++);
  }
  while (w1 < b1) add(ir::BACKWARD_WEIGHT, chunk1, w1++);
  while (w0 < b0) add(ir::BACKWARD_WEIGHT, chunk0, w0++);
  return ops;
}

namespace {

absl::Status NeedsV(const char* schedule, const ir::Grid& grid) {
  if (grid.IsV()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(schedule,
                   " needs two chunks per stage in the V placement (stage r holds virtual stages r and 2P-1-r; "
                   "config.virtual_stages = 2, partition layout v), got ",
                   grid.chunks(), grid.chunks() == 2 ? " chunks placed round-robin" : " chunk(s) per stage"));
}

}  // namespace

absl::Status ZbVShape(const ir::Grid& grid, int) { return NeedsV("ZB-V", grid); }

std::vector<ComputeOp> DualPipeVOrder(const ir::Grid& grid, int r, int m) {
  const int p = grid.stages();
  const int chunk0 = grid.VirtualOf(r, 0), chunk1 = grid.VirtualOf(r, 1);
  std::vector<ComputeOp> ops;
  // torch's counters: (virtual stage, kind) -> next micro-batch. A B advances the I and
  // W counters; an I queues its W.
  std::map<std::pair<int, ir::ComputeKind>, int> next;
  std::deque<std::pair<int, int>> weight_queue;  // (virtual stage, micro-batch)
  auto forward = [&](int v) { ops.push_back({ir::FORWARD, v, next[{v, ir::FORWARD}]++}); };
  auto full_backward = [&](int v) {
    ops.push_back({ir::BACKWARD, v, next[{v, ir::BACKWARD_INPUT}]++});
    ++next[{v, ir::BACKWARD_WEIGHT}];
  };
  auto input_backward = [&](int v) {
    const int mb = next[{v, ir::BACKWARD_INPUT}]++;
    ops.push_back({ir::BACKWARD_INPUT, v, mb});
    weight_queue.push_back({v, mb});
  };
  auto backward = [&](int v, bool zero_bubble) { zero_bubble ? input_backward(v) : full_backward(v); };
  auto pending_weight = [&]() {
    if (weight_queue.empty()) return;
    auto [v, mb] = weight_queue.front();
    weight_queue.pop_front();
    ops.push_back({ir::BACKWARD_WEIGHT, v, mb});
    ++next[{v, ir::BACKWARD_WEIGHT}];
  };
  // OVERLAP_F_B: torch's sub-actions are (F of `f`, FULL_BACKWARD of `b`), in that order.
  auto overlap = [&](int f, int b) {
    forward(f);
    full_backward(b);
  };

  for (int k = 0; k < 2 * (p - r - 1); ++k) forward(chunk0);  // 1: F0
  for (int k = 0; k < r + 1; ++k) {                           // 2: F0 F1
    forward(chunk0);
    forward(chunk1);
  }
  for (int k = 0; k < p - r - 1; ++k) {  // 3: I1 W F1
    input_backward(chunk1);
    pending_weight();
    forward(chunk1);
  }
  for (int i = 0; i < m - 2 * p + r + 1; ++i) {  // 4: F0+B1, F1+B0
    if (i == 0 && r == p - 1) {
      forward(chunk0);  // not overlapped, to shorten the bubble
      full_backward(chunk1);
    } else {
      overlap(chunk0, chunk1);
    }
    overlap(chunk1, chunk0);
  }
  for (int k = 0; k < p - r - 1; ++k) {  // 5: B1, F1+B0
    full_backward(chunk1);
    overlap(chunk1, chunk0);
  }
  bool zero_bubble = false;  // 6: B1 B0, the second half as I (W deferred)
  const int step6 = r + 1;
  for (int i = 0; i < step6; ++i) {
    if (i == step6 / 2 && r % 2 == 1) zero_bubble = true;
    backward(chunk1, zero_bubble);
    if (i == step6 / 2 && r % 2 == 0) zero_bubble = true;
    backward(chunk0, zero_bubble);
  }
  for (int k = 0; k < p - r - 1; ++k) {  // 7: W, B0
    pending_weight();
    backward(chunk0, zero_bubble);
  }
  for (int k = 0; k < r + 1; ++k) pending_weight();  // 8: W
  return ops;
}

absl::Status DualPipeVShape(const ir::Grid& grid, int m) {
  if (absl::Status v = NeedsV("DualPipeV", grid); !v.ok()) return v;
  if (m < 2 * grid.stages()) {
    return absl::InvalidArgumentError(absl::StrCat("DualPipeV needs micro_batches >= 2 x num_stages (",
                                                   2 * grid.stages(), ", one per virtual stage), got ", m));
  }
  return absl::OkStatus();
}

}  // namespace ppc::passes
