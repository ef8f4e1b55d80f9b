#include "passes/lower/assign_buffers.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {

absl::StatusOr<bool> AssignBuffers::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireSchedule(plan, "assign-buffers"));
  bool changed = false;
  for (ir::StageProgram& prog : *plan.mutable_programs()) {
    bool training = false;
    for (const auto& in : prog.instructions()) training |= in.has_backward();
    std::set<int> free_slots;
    int num_slots = 0;
    std::map<int, int> slot_of;  // live micro-batch -> slot
    std::map<int, bool> input_done;  // mb -> INPUT_ONLY seen (WEIGHT_ONLY frees)
    std::vector<int> inference_order;  // forwards so far, for two-deep inference buffering
    auto take = [&]() {
      if (free_slots.empty()) return num_slots++;
      int s = *free_slots.begin();
      free_slots.erase(free_slots.begin());
      return s;
    };
    for (ir::Instruction& in : *prog.mutable_instructions()) {
      int slot = -1;
      if (in.has_forward()) {
        const int mb = in.forward().micro_batch();
        if (!training && inference_order.size() >= 2) {
          // Inference: the forward two micro-batches back has been sent; reuse its slot.
          int old = inference_order[inference_order.size() - 2];
          if (slot_of.count(old)) {
            free_slots.insert(slot_of[old]);
            slot_of.erase(old);
          }
        }
        slot = take();
        slot_of[mb] = slot;
        inference_order.push_back(mb);
        if (in.forward().slot() != slot) changed = true;
        in.mutable_forward()->set_slot(slot);
      } else if (in.has_backward()) {
        const int mb = in.backward().micro_batch();
        auto it = slot_of.find(mb);
        if (it == slot_of.end()) {
          return absl::InvalidArgumentError(absl::StrCat("stage ", prog.stage(), ": backward of micro-batch ", mb,
                                                         " has no live forward to take its buffer from"));
        }
        slot = it->second;
        if (in.backward().slot() != slot) changed = true;
        in.mutable_backward()->set_slot(slot);
        if (in.backward().part() != ir::INPUT_ONLY) {
          free_slots.insert(slot);
          slot_of.erase(it);
        }
      }
    }
    if (prog.num_slots() != num_slots) changed = true;
    prog.set_num_slots(num_slots);
  }
  return changed;
}

}  // namespace ppc::passes
