// The micro-batch state slots of one program (StageProgram.num_slots): each holds one
// (virtual stage, micro-batch) from its first use to its last. A slot records which one
// it holds: loads and received data claim it, compute ops and sends check it, so that a
// schedule the verifier would reject (run with pprun --allow-unverified) fails with
// FailedPrecondition instead of reading an empty group or another micro-batch's tensors.
#ifndef PPC_RUNTIME_SLOT_TABLE_H_
#define PPC_RUNTIME_SLOT_TABLE_H_

#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "runtime/stage_model.h"

namespace ppc::runtime {

struct Slot {
  int index = 0;
  // What the slot holds in this run; -1: nothing yet.
  int virtual_stage = -1;
  int micro_batch = -1;
  bool forwarded = false;  // its forward ran
  Group inputs;            // loaded or received, for the forward
  torch::Tensor labels;    // the last virtual stage's, loaded
  Group outputs;           // the forward's output group, to send (not on the last virtual stage)
  SavedForward saved;      // training: what the backward needs; empty once consumed
  Group grad_in;           // received gradients of the FLOAT32 outputs, in order
  Group grad_out;          // gradients of the FLOAT32 inputs, to send

  bool Holds(int vs, int mb) const { return virtual_stage == vs && micro_batch == mb; }
  // Makes the slot hold (vs, mb), emptying it first if it held anything else.
  void Claim(int vs, int mb);
  // FailedPrecondition unless the slot holds (vs, mb), naming what it holds instead.
  absl::Status Expect(int vs, int mb) const;
  // "virtual stage V micro-batch M in slot S".
  std::string Name() const;
};

// "virtual stage V micro-batch M".
std::string DescribeMicroBatch(int vs, int mb);

class SlotTable {
 public:
  explicit SlotTable(int size = 0);
  SlotTable(SlotTable&&) = default;
  SlotTable& operator=(SlotTable&&) = default;

  int size() const { return static_cast<int>(slots_.size()); }
  // Stable for the table's lifetime (handlers keep it). `index` in range (Load checked).
  Slot* at(int index) { return &slots_[index]; }
  // Empties every slot: each run claims its slots afresh, so nothing of the previous
  // run can pass for this run's (virtual stage, micro-batch).
  void Clear();

 private:
  std::vector<Slot> slots_;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_SLOT_TABLE_H_
