#ifndef PPC_PASSES_LOWER_INSERT_P2P_H_
#define PPC_PASSES_LOWER_INSERT_P2P_H_

#include "compiler/pass.h"

namespace ppc::passes {

// Inserts activation and gradient sends/receives between adjacent stages. A receive is posted and waited right before the instruction that needs it; a send is posted right after the instruction that produced it and waited only before its buffer slot is reused (or at the end of the program), so posts never block and waits only block on data that an earlier instruction of the peer produces.
class InsertP2P : public Pass {
 public:
  std::string name() const override { return "insert-p2p"; }
  absl::StatusOr<bool> Run(ir::Plan& plan) override;
};

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_INSERT_P2P_H_
