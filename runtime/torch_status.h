// The one adapter from LibTorch exceptions to absl::Status: no exception crosses
// ppc's API. Gloo timeouts become DeadlineExceeded, a lost peer Unavailable.
#ifndef PPC_RUNTIME_TORCH_STATUS_H_
#define PPC_RUNTIME_TORCH_STATUS_H_

#include <exception>
#include <string>

#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace ppc::runtime {

inline absl::Status StatusFromMessage(const std::string& what) {
  std::string first_line = what.substr(0, what.find('\n'));
  if (absl::StrContains(what, "imed out") || absl::StrContains(what, "imeout")) {
    return absl::DeadlineExceededError(first_line);
  }
  if (absl::StrContains(what, "onnection closed") || absl::StrContains(what, "onnection reset") ||
      absl::StrContains(what, "Connection refused") || absl::StrContains(what, "Broken pipe")) {
    return absl::UnavailableError(first_line);
  }
  return absl::InternalError(first_line);
}

// Runs `f`, converting any exception it throws into a Status.
template <typename F>
absl::Status TorchCall(F&& f) {
  try {
    f();
    return absl::OkStatus();
  } catch (const c10::Error& e) {
    return StatusFromMessage(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return StatusFromMessage(e.what());
  }
}

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_TORCH_STATUS_H_
