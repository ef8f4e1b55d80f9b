// A scheduling pass from outside the tree, as a ppc pass plugin: memory-capped 1F1B.
//
//   schedule-memcap-1f1b{k=K}: 1F1B (DeepSpeed's TrainSchedule) in which every stage
//   keeps at most K micro-batches in flight, i.e. forwarded but not yet backwarded.
//
// 1F1B's stage s of P holds up to min(P - s, M) micro-batches' activations at once (its
// warm-up forwards plus the one of the steady state); the first stage holds the most.
// Capping it at K trades pipeline bubble for activation memory: stage s runs
// min(K, P - s, M) - 1 warm-up forwards, then one forward and one backward, then the
// remaining backwards. K = 1 is fully sequential (each micro-batch goes forward through
// every stage and back before the next starts); K >= P is plain 1F1B.
//
// The order is deadlock-free because the warm-up depth never grows from one stage to the
// next (min(K, P - s, M) does not increase with s), as in 1F1B; the verifier proves every
// plan anyway. Everything after the order (slots, loads, transfers, reductions, the
// optimizer step) is done by ppc's own passes; the pass itself is ppc's SchedulePass,
// resolved against the ppc executable when ppc loads this library.
//
//   ppc --pass-plugin=libmemcap_1f1b.so compile --model M --stages 4 --micro-batches 8
//       --schedule memcap-1f1b
//       --passes='infer-shapes,partition,schedule-memcap-1f1b{k=2},assign-buffers,lower,lower-eval,place-comm'
//       --out plan.pb
//
// README.md next to this file builds and runs it; docs/writing-a-pass.md explains it.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/pass_plugin.h"
#include "ir/limits.h"
#include "passes/schedule/schedule.h"

// Everything of the plugin's own in an anonymous namespace: ppc exports its symbols, and a
// plugin function with the same (external) name as one of ppc's would bind to ppc's.
namespace {

using ppc::passes::ComputeOp;

constexpr char kName[] = "schedule-memcap-1f1b";

// Stage s's compute ops: at most min(k, P - s, M) micro-batches in flight.
std::vector<ComputeOp> MemcapOneFOneBOrder(const ppc::ir::Grid& grid, int s, int m, int64_t k) {
  const int p = grid.stages();
  const int v = grid.VirtualOf(s, 0);  // one chunk per stage (checked by OneChunk)
  const int in_flight = static_cast<int>(std::min<int64_t>({k, p - s, m}));
  std::vector<ComputeOp> ops;
  int next_f = 0, next_b = 0;
  for (; next_f < in_flight - 1; ++next_f) ops.push_back({ppc::ir::FORWARD, v, next_f});
  while (next_f < m) {
    ops.push_back({ppc::ir::FORWARD, v, next_f++});
    ops.push_back({ppc::ir::BACKWARD, v, next_b++});
  }
  while (next_b < m) ops.push_back({ppc::ir::BACKWARD, v, next_b++});
  return ops;
}

// k from the pass's options: `schedule-memcap-1f1b{k=2}` -> 2.
absl::StatusOr<int64_t> ParseK(const ppc::PassOptions& options) {
  const std::string usage = std::string(" (k: the most micro-batches in flight per stage, an integer in [1, ") +
                            std::to_string(ppc::ir::kMaxMicroBatches) + "]; e.g. " + kName + "{k=2})";
  auto it = options.find("k");
  if (it == options.end()) {
    return absl::InvalidArgumentError(
        std::string(kName) + " needs option k" + usage +
        "; with ppc compile: --schedule memcap-1f1b --passes='infer-shapes,partition," + kName +
        "{k=2},assign-buffers,lower,lower-eval,place-comm'");
  }
  const std::string& text = it->second;
  const std::string given = std::string(kName) + "{k=" + text + "}: ";
  bool digits = !text.empty();
  for (char c : text) digits = digits && c >= '0' && c <= '9';
  if (!digits) {
    bool negative = text.size() > 1 && text[0] == '-';
    for (size_t i = 1; negative && i < text.size(); ++i) negative = text[i] >= '0' && text[i] <= '9';
    return absl::InvalidArgumentError(given + (negative ? "k must be >= 1" : "k is not a whole number") + usage);
  }
  // At most 9 significant digits fit an int64 easily; anything longer is out of range.
  const size_t first = std::min(text.find_first_not_of('0'), text.size());
  if (text.size() - first > 9) return absl::InvalidArgumentError(given + "k is too large" + usage);
  const int64_t k = std::stoll(text);
  if (k < 1) return absl::InvalidArgumentError(given + "k must be >= 1" + usage);
  if (k > ppc::ir::kMaxMicroBatches) return absl::InvalidArgumentError(given + "k is too large" + usage);
  return k;
}

absl::StatusOr<std::unique_ptr<ppc::Pass>> CreateMemcap(const ppc::PassOptions& options) {
  absl::StatusOr<int64_t> k = ParseK(options);
  if (!k.ok()) return k.status();
  // The option reaches the order through the closure; SchedulePass calls it per stage.
  return std::make_unique<ppc::passes::SchedulePass>(
      kName,
      [k = *k](const ppc::ir::Grid& grid, int stage, int micro_batches) {
        return MemcapOneFOneBOrder(grid, stage, micro_batches, k);
      },
      ppc::passes::OneChunk);
}

}  // namespace

PPC_PASS_PLUGIN(registrar) {
  registrar->AddPass({kName, "1F1B with at most k micro-batches in flight per stage {k=K}", {"k"}, CreateMemcap});
}
