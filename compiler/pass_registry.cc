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

absl::Status PassRegistry::Add(PassInfo info) {
  bool kebab = !info.name.empty() && info.name.front() != '-' && info.name.back() != '-';
  for (char c : info.name) kebab = kebab && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (!kebab) {
    return absl::InvalidArgumentError(
        absl::StrCat("pass name '", info.name, "' is not kebab-case (lowercase letters, digits and inner '-')"));
  }
  if (!info.create) return absl::InvalidArgumentError(absl::StrCat("pass '", info.name, "' has no factory"));
  if (Find(info.name) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("a pass named '", info.name, "' is already registered"));
  }
  auto at = std::lower_bound(passes_.begin(), passes_.end(), info.name,
                             [](const PassInfo& p, const std::string& name) { return p.name < name; });
  passes_.insert(at, std::move(info));
  return absl::OkStatus();
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
