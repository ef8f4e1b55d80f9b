// The errors a checker collects before reporting them together (the structural rules,
// the verifier): at most kMaxErrors are kept, so a plan broken everywhere costs a few
// messages, not one per instruction.
#ifndef PPC_IR_ERROR_LIST_H_
#define PPC_IR_ERROR_LIST_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ppc::ir {

class ErrorList {
 public:
  static constexpr int kMaxErrors = 25;

  void Add(std::string msg) {
    if (static_cast<int>(errors_.size()) >= kMaxErrors) {
      truncated_ = true;
      return;
    }
    errors_.push_back(std::move(msg));
  }
  bool empty() const { return errors_.empty(); }
  // Nothing more will be kept: checkers may stop looking.
  bool full() const { return truncated_; }
  // Adds `other`'s errors after these, as if they had been added here (a checker that
  // works on stages in parallel merges the stages' lists in stage order).
  void Merge(const ErrorList& other) {
    for (const std::string& e : other.errors_) Add(e);
    if (other.truncated_) truncated_ = true;
  }

  // OK when empty; else InvalidArgument with one error per line.
  absl::Status ToStatus() const {
    if (errors_.empty()) return absl::OkStatus();
    std::string msg = absl::StrJoin(errors_, "\n  ");
    if (truncated_) absl::StrAppend(&msg, "\n  ... (more errors not shown)");
    return absl::InvalidArgumentError(absl::StrCat(errors_.size() == 1 ? "" : "plan has errors:\n  ", msg));
  }

 private:
  std::vector<std::string> errors_;
  bool truncated_ = false;
};

}  // namespace ppc::ir

#endif  // PPC_IR_ERROR_LIST_H_
