#include "runtime/memory_meter.h"

#include <thread>

#include <torch/torch.h>

#include "gtest/gtest.h"

namespace ppc::runtime {
namespace {

TEST(MemoryMeter, CountsWhatTheThreadAllocatesUntilItIsFreed) {
  MemoryMeter::Install();
  MemoryMeter::Install();  // idempotent
  auto meter = std::make_shared<MemoryMeter>();
  torch::Tensor before = torch::ones({1000});  // no meter yet: not counted
  {
    ScopedMeter scope(meter);
    EXPECT_EQ(MemoryMeter::Current(), meter.get());
    torch::Tensor a = torch::zeros({256, 4});  // 4 KiB
    EXPECT_EQ(meter->live(), 4096);
    torch::Tensor b = torch::empty({10}, torch::kFloat64);
    EXPECT_EQ(meter->live(), 4096 + 80);
    torch::Tensor view = a.narrow(0, 0, 3);  // a view allocates nothing
    EXPECT_EQ(meter->live(), 4096 + 80);
    a = torch::Tensor();
    EXPECT_EQ(meter->live(), 4096 + 80) << "the view still holds the storage";
    view = torch::Tensor();
    EXPECT_EQ(meter->live(), 80);
    EXPECT_EQ(meter->peak(), 4096 + 80);
    meter->ResetPeak();
    EXPECT_EQ(meter->peak(), 80);
    torch::Tensor c = torch::ones({5}) + torch::ones({5});  // two temporaries freed, one kept
    EXPECT_EQ(meter->live(), 80 + 20);
    EXPECT_EQ(meter->peak(), 80 + 60);
    // Freed on another thread: still this meter's.
    std::thread([moved = std::move(c)]() mutable { moved = torch::Tensor(); }).join();
    EXPECT_EQ(meter->live(), 80);
    (void)b;
  }
  EXPECT_EQ(MemoryMeter::Current(), nullptr);
  torch::Tensor after = torch::ones({1000});  // the scope ended: not counted
  EXPECT_EQ(meter->live(), 0);
  EXPECT_EQ(before.sum().item<float>(), 1000.0f);
}

TEST(MemoryMeter, EachThreadCountsItsOwn) {
  MemoryMeter::Install();
  auto m1 = std::make_shared<MemoryMeter>(), m2 = std::make_shared<MemoryMeter>();
  torch::Tensor kept;
  std::thread t1([&] {
    ScopedMeter s(m1);
    kept = torch::zeros({100});
  });
  std::thread t2([&] {
    ScopedMeter s(m2);
    torch::Tensor x = torch::zeros({50});
  });
  t1.join();
  t2.join();
  EXPECT_EQ(m1->live(), 400);
  EXPECT_EQ(m2->live(), 0);
  EXPECT_EQ(m2->peak(), 200);
  kept = torch::Tensor();  // the meter outlives its thread's scope
  EXPECT_EQ(m1->live(), 0);
}

}  // namespace
}  // namespace ppc::runtime
