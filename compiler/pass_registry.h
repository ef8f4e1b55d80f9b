// The pass registry: every pass that `ppc --list-passes` shows and `ppc opt
// --passes=...` can run. The list itself is passes/registry.cc (one file, alphabetical).
#ifndef PPC_COMPILER_PASS_REGISTRY_H_
#define PPC_COMPILER_PASS_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/pass.h"

namespace ppc {

// Options of one pass instance: `partition{method=parameters}` -> {"method": "parameters"}.
using PassOptions = std::map<std::string, std::string>;

struct PassInfo {
  std::string name;
  std::string summary;
  // Option names the pass accepts; anything else is rejected when the pipeline is parsed.
  std::vector<std::string> options;
  std::function<absl::StatusOr<std::unique_ptr<Pass>>(const PassOptions&)> create;
};

class PassRegistry {
 public:
  explicit PassRegistry(std::vector<PassInfo> passes);
  const PassInfo* Find(const std::string& name) const;
  const std::vector<PassInfo>& passes() const { return passes_; }
  // Adds a pass (e.g. a plugin's), keeping the list sorted by name. AlreadyExists when
  // the name is taken, InvalidArgument when it is not kebab-case or has no factory.
  absl::Status Add(PassInfo info);
  // Creates a pass, rejecting unknown names and options with the list of known ones.
  absl::StatusOr<std::unique_ptr<Pass>> Create(const std::string& name, const PassOptions& options) const;

 private:
  std::vector<PassInfo> passes_;
};

}  // namespace ppc

#endif  // PPC_COMPILER_PASS_REGISTRY_H_
