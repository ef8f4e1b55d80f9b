#include "passes/lower/assign_buffers.h"

#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/instruction_text.h"
#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::Status AssignSlots(ir::StageProgram& prog) {
  bool training = false;
  for (const auto& in : prog.instructions()) training |= in.has_compute() && in.compute().kind() != ir::FORWARD;
  std::set<int> free_slots;
  int num_slots = 0;
  std::map<std::pair<int, int>, int> slot_of;  // live (virtual stage, micro-batch) -> slot
  std::vector<std::pair<int, int>> forwards;   // in order, for two-deep forward-only buffering
  auto take = [&]() {
    if (free_slots.empty()) return num_slots++;
    int s = *free_slots.begin();
    free_slots.erase(free_slots.begin());
    return s;
  };
  for (ir::Instruction& in : *prog.mutable_instructions()) {
    if (!in.has_compute()) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", prog.stage(), ": assign-buffers found '",
                                                     ir::PrintInstruction(in), "' in a COMPUTE_ONLY program"));
    }
    ir::Compute& c = *in.mutable_compute();
    const std::pair<int, int> key{c.virtual_stage(), c.micro_batch()};
    if (c.kind() == ir::FORWARD) {
      if (!training && forwards.size() >= 2) {
        // Forward-only: the forward two back has posted its send (which keeps its own
        // reference to the data); its slot is free again.
        auto it = slot_of.find(forwards[forwards.size() - 2]);
        if (it != slot_of.end()) {
          free_slots.insert(it->second);
          slot_of.erase(it);
        }
      }
      if (slot_of.count(key)) {
        return absl::InvalidArgumentError(absl::StrCat("stage ", prog.stage(), ": ", ir::OpName(in),
                                                       " forwards a micro-batch that is still live"));
      }
      c.set_slot(take());
      slot_of[key] = c.slot();
      forwards.push_back(key);
      continue;
    }
    auto it = slot_of.find(key);
    if (it == slot_of.end()) {
      return absl::InvalidArgumentError(absl::StrCat("stage ", prog.stage(), ": ", ir::OpName(in),
                                                     " has no live forward to take its slot from"));
    }
    c.set_slot(it->second);
    if (c.kind() != ir::BACKWARD_INPUT) {  // B and W end the micro-batch's life here
      free_slots.insert(it->second);
      slot_of.erase(it);
    }
  }
  prog.set_num_slots(std::max(1, num_slots));
  return absl::OkStatus();
}

absl::Status AssignBuffers::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireLevel(plan, ir::COMPUTE_ONLY, "assign-buffers"));
  for (ir::StageProgram& prog : *plan.mutable_programs()) RETURN_IF_ERROR(AssignSlots(prog));
  plan.set_level(ir::BUFFERED);
  return absl::OkStatus();
}

}  // namespace ppc::passes
