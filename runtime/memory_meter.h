// Counting the bytes of CPU tensors: what `pprun --memory-report` measures activations
// with. MemoryMeter::Install() puts a counting allocator in front of LibTorch's CPU
// allocator (once per process, for the rest of it); from then on every CPU tensor
// storage allocated on a thread that has a meter (ScopedMeter) is counted by that
// meter until the storage is freed, on whichever thread frees it. Threads without a
// meter allocate as before, uncounted. CUDA memory is not counted here.
#ifndef PPC_RUNTIME_MEMORY_METER_H_
#define PPC_RUNTIME_MEMORY_METER_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace ppc::runtime {

class MemoryMeter {
 public:
  // Installs the counting allocator; idempotent and thread-safe.
  static void Install();
  // The meter of the calling thread, or null.
  static MemoryMeter* Current();

  int64_t live() const { return live_.load(std::memory_order_relaxed); }
  int64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  // Starts a new peak from what is live now.
  void ResetPeak() { peak_.store(live(), std::memory_order_relaxed); }

  void Add(int64_t bytes);
  void Sub(int64_t bytes) { live_.fetch_sub(bytes, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> live_{0}, peak_{0};
};

// Gives the calling thread `meter` for its lifetime (restoring the previous one).
class ScopedMeter {
 public:
  explicit ScopedMeter(std::shared_ptr<MemoryMeter> meter);
  ~ScopedMeter();
  ScopedMeter(const ScopedMeter&) = delete;
  ScopedMeter& operator=(const ScopedMeter&) = delete;

 private:
  std::shared_ptr<MemoryMeter> previous_;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_MEMORY_METER_H_
