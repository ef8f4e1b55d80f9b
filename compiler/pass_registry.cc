#include "compiler/pass_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppc {

PassRegistry::PassRegistry(std::vector<PassInfo> passes) : passes_(std::move(passes)) {}

const PassInfo* PassRegistry::Find(const std::string& name) const {
  for (const PassInfo& p : passes_)
    if (p.name == name) return &p;
  return nullptr;
}

absl::StatusOr<std::unique_ptr<Pass>> PassRegistry::Create(const std::string& name,
                                                           const PassOptions& options) const {
  const PassInfo* info = Find(name);
  if (info == nullptr) {
    std::vector<std::string> names;
    for (const PassInfo& p : passes_) names.push_back(p.name);
    return absl::InvalidArgumentError(
        absl::StrCat("unknown pass '", name, "'; known passes: ", absl::StrJoin(names, ", ")));
  }
  for (const auto& [key, value] : options) {
    if (std::find(info->options.begin(), info->options.end(), key) == info->options.end()) {
      return absl::InvalidArgumentError(absl::StrCat("pass '", name, "' has no option '", key, "'; it accepts: ",
                                                     info->options.empty() ? "none" : absl::StrJoin(info->options, ", ")));
    }
  }
  return info->create(options);
}

}  // namespace ppc
