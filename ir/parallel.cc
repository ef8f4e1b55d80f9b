#include "ir/parallel.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace ppc::ir {

void ParallelFor(int n, const std::function<void(int)>& fn, int min_per_thread, int max_threads) {
  if (n <= 0) return;
  const int cores =
      max_threads > 0 ? max_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = std::min({cores, 16, std::max(1, n / std::max(1, min_per_thread))});
  if (threads <= 1) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int> next{0};
  auto work = [&]() {
    for (int i = next.fetch_add(1, std::memory_order_relaxed); i < n; i = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(i);
    }
  };
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (std::thread& t : helpers) t.join();
}

}  // namespace ppc::ir
