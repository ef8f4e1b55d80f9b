#include "runtime/memory_meter.h"

#include <mutex>
#include <unordered_map>
#include <utility>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

namespace ppc::runtime {

namespace {

// The meter of this thread. A storage keeps its meter alive (shared) until it is freed,
// so a meter may be dropped by its thread while tensors it counted live on.
thread_local std::shared_ptr<MemoryMeter> current;

// Every allocation made through the counting allocator, by data pointer: LibTorch's raw
// interface (raw_allocate/raw_deallocate, which some kernels use for buffers) needs the
// context of a DataPtr to be its data pointer and one deleter for all of them.
struct Allocation {
  c10::DataPtr inner;
  int64_t bytes;
  std::shared_ptr<MemoryMeter> meter;  // null: not counted
};
std::mutex table_mu;
c10::Allocator* base_allocator = nullptr;  // set once by Install, before any use
std::unordered_map<void*, Allocation>& Table() {
  static auto* table = new std::unordered_map<void*, Allocation>();
  return *table;
}

void Free(void* data) {
  if (data == nullptr) return;
  Allocation a;
  bool ours = false;
  {
    std::lock_guard<std::mutex> lock(table_mu);
    auto it = Table().find(data);
    if (it != Table().end()) {
      ours = true;
      a = std::move(it->second);
      Table().erase(it);
    }
  }
  if (!ours) {
    // A raw allocation the base allocator made before Install, handed back through the
    // raw interface.
    if (c10::DeleterFnPtr d = base_allocator->raw_deleter()) d(data);
    return;
  }
  if (a.meter) a.meter->Sub(a.bytes);
  // `a.inner` frees the allocation through the base allocator's deleter here.
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) const override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    if (data == nullptr) return c10::DataPtr(nullptr, nullptr, &Free, device);
    const int64_t bytes = static_cast<int64_t>(n);
    if (current) current->Add(bytes);
    {
      std::lock_guard<std::mutex> lock(table_mu);
      Allocation a{std::move(inner), bytes, current};
      auto it = Table().find(data);
      if (it == Table().end()) {
        Table().emplace(data, std::move(a));
      } else {
        // A stale entry (freed behind our back): forget it without freeing its memory,
        // which is this allocation now.
        it->second.inner.release_context();
        if (it->second.meter) it->second.meter->Sub(it->second.bytes);
        it->second = std::move(a);
      }
    }
    return c10::DataPtr(data, data, &Free, device);
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Free; }

 private:
  c10::Allocator* base_;
};

}  // namespace

void MemoryMeter::Add(int64_t bytes) {
  const int64_t now = live_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  int64_t p = peak_.load(std::memory_order_relaxed);
  while (now > p && !peak_.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
}

void MemoryMeter::Install() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Leaked on purpose: storages allocated through it may outlive any scope.
    base_allocator = c10::GetCPUAllocator();
    static auto* counting = new CountingAllocator(base_allocator);
    c10::SetCPUAllocator(counting, /*priority=*/UINT8_MAX);
  });
}

MemoryMeter* MemoryMeter::Current() { return current.get(); }

ScopedMeter::ScopedMeter(std::shared_ptr<MemoryMeter> meter) : previous_(std::move(current)) {
  current = std::move(meter);
}

ScopedMeter::~ScopedMeter() { current = std::move(previous_); }

}  // namespace ppc::runtime
