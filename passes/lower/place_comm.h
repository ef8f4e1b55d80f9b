#ifndef PPC_PASSES_LOWER_PLACE_COMM_H_
#define PPC_PASSES_LOWER_PLACE_COMM_H_

#include "compiler/pass.h"
#include "ir/topology.h"

namespace ppc::passes {

// LOWERED -> LOWERED. Posts each receive early, so the transfer overlaps compute. A
// receive fills a buffer of its own and moves it into its slot at its Wait, so it can be
// posted while the slot still holds the previous (virtual stage, micro-batch): the pass
// moves it to just before that occupant's last compute op and the waits right before
// that op (so at most one receive per slot runs ahead of its occupant: double
// buffering), never before an earlier receive from the same rank (transfers between two
// ranks match in order), and never later than it was. Its Wait stays where it was, right
// before the data is used. Posts never block, so moving them cannot deadlock; the
// verifier checks it. Idempotent.
class PlaceComm : public Pass {
 public:
  std::string name() const override { return "place-comm"; }
  absl::Status Run(ir::Module& module) override;
};

absl::Status PlaceReceives(const ir::Plan& plan, const ir::Grid& grid, ir::Program& program);

}  // namespace ppc::passes

#endif  // PPC_PASSES_LOWER_PLACE_COMM_H_
