#include "passes/lower/assign_buffers.h"

#include <functional>
#include <queue>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/instruction_text.h"
#include "ir/parallel.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::Status AssignSlots(const ir::Grid& grid, int micro_batches, ir::Program& prog) {
  bool training = false;
  for (const ir::Op& op : prog.ops) training |= op.is(ir::OpCode::kCompute) && op.kind != ir::FORWARD;
  // The smallest free slot first.
  std::priority_queue<int, std::vector<int>, std::greater<int>> free_slots;
  int num_slots = 0;
  const int m = micro_batches;
  // Live (virtual stage, micro-batch) -> slot, by (chunk, micro-batch); -1: not live.
  std::vector<int> slot_of(static_cast<size_t>(grid.chunks()) * m, -1);
  std::vector<size_t> forwards;  // keys in order, for two-deep forward-only buffering
  auto take = [&]() {
    if (free_slots.empty()) return num_slots++;
    const int s = free_slots.top();
    free_slots.pop();
    return s;
  };
  auto name = [&](int i) { return ir::OpName(ir::ToInstruction(prog, i)); };
  for (int i = 0; i < prog.size(); ++i) {
    ir::Op& c = prog.ops[i];
    if (!c.is(ir::OpCode::kCompute)) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", prog.stage, ": assign-buffers found '",
                                                     ir::PrintOp(prog, i), "' in a COMPUTE_ONLY program"));
    }
    RETURN_IF_ERROR(RequireOwnOp(grid, prog, i, c.virtual_stage(), m, "assign-buffers"));
    const size_t key = static_cast<size_t>(grid.ChunkOf(c.virtual_stage())) * m + c.micro_batch;
    if (c.compute_kind() == ir::FORWARD) {
      if (!training && forwards.size() >= 2) {
        // Forward-only: the forward two back has posted its send (which keeps its own
        // reference to the data); its slot is free again.
        int& old = slot_of[forwards[forwards.size() - 2]];
        if (old >= 0) {
          free_slots.push(old);
          old = -1;
        }
      }
      if (slot_of[key] >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("stage ", prog.stage, ": ", name(i), " forwards a micro-batch that is still live"));
      }
      c.slot = take();
      slot_of[key] = c.slot;
      forwards.push_back(key);
      continue;
    }
    if (slot_of[key] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("stage ", prog.stage, ": ", name(i), " has no live forward to take its slot from"));
    }
    c.slot = slot_of[key];
    if (c.compute_kind() != ir::BACKWARD_INPUT) {  // B and W end the micro-batch's life here
      free_slots.push(slot_of[key]);
      slot_of[key] = -1;
    }
  }
  prog.num_slots = std::max(1, num_slots);
  return absl::OkStatus();
}

absl::Status AssignBuffers::Run(ir::Module& module) {
  RETURN_IF_ERROR(RequireLevel(module.header, ir::COMPUTE_ONLY, "assign-buffers"));
  RETURN_IF_ERROR(RequirePlacement(module.header, "assign-buffers"));
  ASSIGN_OR_RETURN(ir::Grid grid, ir::Grid::Of(module.header));
  const int m = module.header.config().micro_batches();
  // Stage by stage on the machine's cores; the first stage with an error reports it.
  std::vector<absl::Status> done(module.programs.size());
  ir::ParallelFor(static_cast<int>(done.size()), [&](int s) { done[s] = AssignSlots(grid, m, module.programs[s]); });
  for (const absl::Status& st : done) RETURN_IF_ERROR(st);
  module.header.set_level(ir::BUFFERED);
  return absl::OkStatus();
}

}  // namespace ppc::passes
