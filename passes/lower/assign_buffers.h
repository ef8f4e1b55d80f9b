#ifndef PPC_PASSES_LOWER_ASSIGN_BUFFERS_H_
#define PPC_PASSES_LOWER_ASSIGN_BUFFERS_H_

#include "compiler/pass.h"

namespace ppc::passes {

// Gives every Forward/Backward an activation buffer slot: a micro-batch holds its slot from its forward to its last backward part (training) or for two forwards (inference); the lowest free slot is taken. Sets num_slots. 1F1B stage s needs min(P-s, M) slots; GPipe M.
class AssignBuffers : public Pass {
 public:
  std::string name() const override { return "assign-buffers"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_ASSIGN_BUFFERS_H_
