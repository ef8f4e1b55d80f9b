#ifndef PPC_PASSES_LOWER_PLACE_COMM_H_
#define PPC_PASSES_LOWER_PLACE_COMM_H_

#include "compiler/pass.h"

namespace ppc::passes {

// LOWERED -> LOWERED. Posts each receive as early as its buffer is free, so transfers
// overlap compute: right after the last instruction that uses its slot for another
// (virtual stage, micro-batch) (a compute op, a load, a send, or the wait of a send that
// reads it), and never before an earlier receive from the same rank (transfers between
// two ranks match in order). Its Wait stays where it was, right before the data is
// used. Posts never block, so moving them cannot deadlock; the verifier checks it.
class PlaceComm : public Pass {
 public:
  std::string name() const override { return "place-comm"; }
  absl::Status Run(ir::Plan& plan) override;
};

absl::Status PlaceReceives(const ir::Plan& plan, ir::StageProgram& program);

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_PLACE_COMM_H_
