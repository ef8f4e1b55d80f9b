// A compiler pass over a plan in the compiler's form (ir::Module: the Plan's header, and
// its stage programs as flat arrays of ops). Passes never print, read flags or detect
// their own changes: the PassPipeline owns order, dumping, timing, change detection (a
// hash of the plan before and after) and verification. A pass states the plan level it
// needs (header.level) and the level it leaves, and refuses any other input.
#ifndef PPC_COMPILER_PASS_H_
#define PPC_COMPILER_PASS_H_

#include <string>

#include "absl/status/status.h"
#include "ir/module.h"

namespace ppc {

class Pass {
 public:
  virtual ~Pass() = default;
  // Stable kebab-case name, as written in textual pipelines.
  virtual std::string name() const = 0;
  // On error the plan may be partly rewritten; the pipeline reports it together with
  // the pass name.
  virtual absl::Status Run(ir::Module& module) = 0;
};

}  // namespace ppc

#endif  // PPC_COMPILER_PASS_H_
