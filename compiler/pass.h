// A compiler pass over a Plan. Passes never print, read flags or declare
// prerequisites: the PassPipeline owns order, dumping, timing and verification.
#ifndef PPC_COMPILER_PASS_H_
#define PPC_COMPILER_PASS_H_

#include <string>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc {

class Pass {
 public:
  virtual ~Pass() = default;
  // Stable kebab-case name, as written in textual pipelines.
  virtual std::string name() const = 0;
  // Returns whether the plan changed. On error the plan may be partly rewritten;
  // the pipeline reports it together with the pass name.
  virtual absl::StatusOr<bool> Run(ir::Plan& plan) = 0;
};

}  // namespace ppc

#endif  // PPC_COMPILER_PASS_H_
