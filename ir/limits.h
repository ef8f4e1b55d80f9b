// Documented maxima of plans and model specs. Anything beyond them is refused, naming
// the field and the limit, before anything is allocated or iterated over: they keep
// every size computation inside int64 and every tool's work bounded.
#ifndef PPC_IR_LIMITS_H_
#define PPC_IR_LIMITS_H_

#include <cstdint>

namespace ppc::ir {

inline constexpr int64_t kMaxStages = 1024;
inline constexpr int64_t kMaxDataParallel = 4096;
inline constexpr int64_t kMaxChunks = 64;               // virtual stages per stage
inline constexpr int64_t kMaxGroupTensors = 16;         // tensors in a layer's output group
inline constexpr int64_t kMaxRanks = 65536;             // stages x replicas
inline constexpr int64_t kMaxMicroBatches = 65536;      // per replica per step
inline constexpr int64_t kMaxMicroBatchSize = 1 << 20;  // samples
inline constexpr int64_t kMaxLayers = 65536;
inline constexpr int64_t kMaxInstructions = 1 << 24;    // per program
inline constexpr int64_t kMaxTensorRank = 8;            // dimensions of a per-sample tensor
inline constexpr int64_t kMaxDim = 1 << 30;             // one dimension, one layer attribute
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 40;  // one tensor, batch included
inline constexpr int64_t kMaxParameters = int64_t{1} << 40;      // the whole model

// a * b, or false when it overflows int64 (or either is negative).
inline bool CheckedMul(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0) return false;
  return !__builtin_mul_overflow(a, b, out);
}
inline bool CheckedAdd(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }

}  // namespace ppc::ir

#endif  // PPC_IR_LIMITS_H_
