// An ordered list of passes with MLIR-style textual form, e.g.
//   infer-shapes,partition{method=parameters},schedule-1f1b,assign-buffers
// The pipeline owns the verifier (given at construction; there is no pipeline without
// one) and runs it on the input and after every pass that changed the plan, telling it
// which parts (programs, eval programs) are as it last passed them. A pass's change is
// detected here, by hashing the plan's parts before and after it (ir::HashParts). The pipeline prints
// or dumps IR when asked, times passes, and on failure says "failed after <pass>" and
// writes a reproducer (input plan + exact pipeline).
#ifndef PPC_COMPILER_PASS_PIPELINE_H_
#define PPC_COMPILER_PASS_PIPELINE_H_

#include <functional>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/pass_registry.h"

namespace ppc {

struct PipelineElement {
  std::string name;
  PassOptions options;
};

// Parses "a{k=v,k2=v2},b". Values may not contain ',', '{' or '}'.
absl::StatusOr<std::vector<PipelineElement>> ParsePipeline(const std::string& text);
// Canonical form: options sorted by key. ParsePipeline(PrintPipeline(x)) == x.
std::string PrintPipeline(const std::vector<PipelineElement>& elements);

struct PipelineOptions {
  bool print_ir_after_all = false;
  bool print_ir_after_change = false;
  bool print_ir_after_failure = false;
  bool verify_each = true;
  bool time_passes = false;
  // When set, writes <dir>/<NN>-<pass>.txt after every pass, and the reproducer on failure.
  std::string dump_to;
  std::set<std::string> disabled;
  // Where IR printing and timing go; passes never print.
  std::ostream* out = nullptr;
};

// The parts of a module that are exactly as they were when the verifier last passed it
// (the same header and the same programs, or the same eval programs): the verifier need
// not prove them again. A verifier may ignore it and check everything.
struct Unchanged {
  bool programs = false;
  bool eval_programs = false;
};
using Verifier = std::function<absl::Status(const ir::Module&, const Unchanged&)>;

class PassPipeline {
 public:
  // InvalidArgument when `verifier` is empty.
  static absl::StatusOr<PassPipeline> Create(const std::string& text, const PassRegistry& registry,
                                             Verifier verifier);

  std::string ToString() const { return PrintPipeline(elements_); }
  // Runs every pass in order; returns whether any changed the plan.
  // `verified`, when given, is set to whether the verifier passed the plan as returned
  // (verify_each on and the verifier ran after the last pass that changed it, or on the
  // input when none did), so that a caller need not verify it again.
  absl::StatusOr<bool> Run(ir::Module& module, const PipelineOptions& options, bool* verified = nullptr) const;

 private:
  std::vector<PipelineElement> elements_;
  std::vector<std::shared_ptr<Pass>> passes_;
  Verifier verifier_;
};

}  // namespace ppc

#endif  // PPC_COMPILER_PASS_PIPELINE_H_
