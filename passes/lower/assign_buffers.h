#ifndef PPC_PASSES_LOWER_ASSIGN_BUFFERS_H_
#define PPC_PASSES_LOWER_ASSIGN_BUFFERS_H_

#include "compiler/pass.h"
#include "ir/topology.h"

namespace ppc::passes {

// COMPUTE_ONLY -> BUFFERED. Gives every compute op the slot of its (virtual stage,
// micro-batch): a forward takes the lowest free slot; a full backward (B) or weight
// backward (W) frees it; an input backward (I) keeps it for the W. In a forward-only
// program a slot is freed two forwards later (the forward's send holds its data), so
// inference needs two slots however many micro-batches there are.
class AssignBuffers : public Pass {
 public:
  std::string name() const override { return "assign-buffers"; }
  absl::Status Run(ir::Module& module) override;
};

// One program's slots (the pass, per stage).
absl::Status AssignSlots(const ir::Grid& grid, int micro_batches, ir::Program& program);

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_ASSIGN_BUFFERS_H_
