#include "runtime/slot_table.h"

#include "absl/strings/str_cat.h"

namespace ppc::runtime {

std::string DescribeMicroBatch(int vs, int mb) { return absl::StrCat("virtual stage ", vs, " micro-batch ", mb); }

void Slot::Claim(int vs, int mb) {
  if (Holds(vs, mb)) return;
  const int keep = index;
  *this = Slot();
  index = keep;
  virtual_stage = vs;
  micro_batch = mb;
}

absl::Status Slot::Expect(int vs, int mb) const {
  if (Holds(vs, mb)) return absl::OkStatus();
  const std::string held = virtual_stage < 0 ? "nothing" : DescribeMicroBatch(virtual_stage, micro_batch);
  return absl::FailedPreconditionError(absl::StrCat("slot ", index, " holds ", held, ", not ", DescribeMicroBatch(vs, mb),
                                                    " (it was not loaded or received there)"));
}

std::string Slot::Name() const {
  return absl::StrCat(DescribeMicroBatch(virtual_stage, micro_batch), " in slot ", index);
}

SlotTable::SlotTable(int size) : slots_(size) {
  for (int i = 0; i < size; ++i) slots_[i].index = i;
}

void SlotTable::Clear() {
  for (Slot& slot : slots_) {
    const int index = slot.index;
    slot = Slot();
    slot.index = index;
  }
}

}  // namespace ppc::runtime
