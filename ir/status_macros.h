// RETURN_IF_ERROR / ASSIGN_OR_RETURN: Debian's Abseil 20220623 ships no
// status_macros.h, so ppc defines them once, here.
#ifndef PPC_IR_STATUS_MACROS_H_
#define PPC_IR_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PPC_CONCAT_INNER_(a, b) a##b
#define PPC_CONCAT_(a, b) PPC_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status ppc_status_ = (expr);       \
    if (!ppc_status_.ok()) return ppc_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(PPC_CONCAT_(ppc_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(var, lhs, expr) \
  auto var = (expr);                           \
  if (!var.ok()) return var.status();          \
  lhs = std::move(var).value()

namespace ppc {

// Returns `status` with `context` prepended to its message, same code.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(status.message()));
}

}  // namespace ppc

#endif  // PPC_IR_STATUS_MACROS_H_
