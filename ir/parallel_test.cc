#include "ir/parallel.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ir/error_list.h"

namespace ppc::ir {
namespace {

TEST(ParallelFor, RunsEveryIndexExactlyOnce) {
  for (int n : {0, 1, 2, 3, 17, 1000}) {
    std::vector<std::atomic<int>> runs(n);
    std::atomic<int> total{0};
    ParallelFor(n, [&](int i) {
      runs[i].fetch_add(1);
      total.fetch_add(1);
    });
    EXPECT_EQ(total.load(), n);
    for (int i = 0; i < n; ++i) EXPECT_EQ(runs[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ParallelFor, RunsIndicesOnSeveralThreadsAtOnce) {
  // Index 0 waits until another index has started on another thread; on one thread it
  // would wait for ever, so it gives up after two seconds and the test fails.
  std::atomic<bool> other_started{false};
  std::atomic<bool> waited_in_vain{false};
  ParallelFor(
      64,
      [&](int i) {
        if (i != 0) {
          other_started = true;
          return;
        }
        for (int spin = 0; spin < 2000 && !other_started; ++spin) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        waited_in_vain = !other_started;
      },
      /*min_per_thread=*/1, /*max_threads=*/2);
  EXPECT_FALSE(waited_in_vain.load());
}

TEST(ParallelFor, SmallLoopsStayOnTheCallingThread) {
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<std::thread::id> ran(3);
  ParallelFor(3, [&](int i) { ran[i] = std::this_thread::get_id(); }, /*min_per_thread=*/4);
  for (const std::thread::id& id : ran) EXPECT_EQ(id, caller);
}

TEST(ErrorList, StagesMergedInOrderReadAsOneList) {
  // What a checker working on stages in parallel reports is what it would report going
  // through them one by one: the first kMaxErrors in stage order, then "more".
  std::vector<ErrorList> stages(3);
  for (int e = 0; e < 10; ++e) stages[0].Add("s0 e" + std::to_string(e));
  for (int e = 0; e < 30; ++e) stages[2].Add("s2 e" + std::to_string(e));
  ErrorList merged, sequential;
  for (const ErrorList& s : stages) merged.Merge(s);
  for (int e = 0; e < 10; ++e) sequential.Add("s0 e" + std::to_string(e));
  for (int e = 0; e < 30; ++e) sequential.Add("s2 e" + std::to_string(e));
  EXPECT_EQ(merged.ToStatus(), sequential.ToStatus());
  EXPECT_TRUE(merged.full());
  EXPECT_NE(std::string(merged.ToStatus().message()).find("s2 e14\n  ... (more errors not shown)"), std::string::npos)
      << merged.ToStatus();
  ErrorList none;
  none.Merge(ErrorList());
  EXPECT_TRUE(none.ToStatus().ok());
}

}  // namespace
}  // namespace ppc::ir
