// The word hash behind ir::HashHeader, ir::HashPrograms and plan fingerprints (format v5).
// Four independent lanes, each step a bijection of the lane for a fixed input word and
// of the word for a fixed lane, so changing any one word always changes the hash; the
// lanes only combine at the end. Not cryptographic: it detects edits and corruption,
// as the fingerprint promises, not adversaries.
#ifndef PPC_IR_MODULE_HASH_H_
#define PPC_IR_MODULE_HASH_H_

#include <cstdint>
#include <cstring>

#include "absl/strings/string_view.h"

namespace ppc::ir {

class Hasher {
 public:
  explicit Hasher(uint64_t seed) : a_(seed), b_(~seed), c_(seed ^ kC), d_(seed + kK) {}

  void Word(uint64_t w) { a_ = Step(a_, w); Rotate(); }
  // Three words at once, one per lane (an Op).
  void Op3(uint64_t w0, uint64_t w1, uint64_t w2) {
    a_ = Step(a_, w0);
    b_ = Step(b_, w1);
    c_ = Step(c_, w2);
  }
  void Bytes(absl::string_view s) {
    Word(s.size());
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      Word(w);
    }
    uint64_t tail = 0;
    std::memcpy(&tail, s.data() + i, s.size() - i);
    Word(tail);
  }
  uint64_t Finish() const {
    uint64_t h = Mix(a_);
    h = Mix(h ^ b_);
    h = Mix(h ^ c_);
    return Mix(h ^ d_);
  }

 private:
  static constexpr uint64_t kK = 0x9E3779B97F4A7C15ull, kC = 0xC2B2AE3D27D4EB4Full;
  static uint64_t Step(uint64_t lane, uint64_t w) {
    lane = (lane ^ w) * kK;
    return lane ^ (lane >> 29);
  }
  // A word goes into lane a; the lanes rotate so consecutive words use all four.
  void Rotate() {
    const uint64_t t = a_;
    a_ = b_;
    b_ = c_;
    c_ = d_;
    d_ = t;
  }
  static uint64_t Mix(uint64_t h) {  // murmur3's finaliser
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
  }
  uint64_t a_, b_, c_, d_;
};

}  // namespace ppc::ir

#endif  // PPC_IR_MODULE_HASH_H_
