#ifndef PPC_PASSES_LOWER_INSERT_LOADS_H_
#define PPC_PASSES_LOWER_INSERT_LOADS_H_

#include "compiler/pass.h"

namespace ppc::passes {

// Inserts LoadMicroBatch before each forward on the first stage (inputs) and on the last stage (labels).
class InsertLoads : public Pass {
 public:
  std::string name() const override { return "insert-loads"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_INSERT_LOADS_H_
