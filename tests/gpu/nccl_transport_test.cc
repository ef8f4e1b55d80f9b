// The transports on a GPU (each test is skipped without one):
//  - NCCL in a world of one rank: transfers to itself (send and receive issued together
//    in one NCCL group), collectives, host and non-contiguous tensors, and an unmatched
//    receive that fails at once instead of hanging;
//  - NCCL creation bounded when a rank joins the rendezvous but never connects;
//  - NCCL with two ranks on two GPUs (skipped with fewer): both directions of a pair at
//    once, collectives, and a receive whose sender never sends, caught by the watchdog;
//  - Gloo with CUDA tensors, staged through pinned host memory: two ranks (threads)
//    sharing the one GPU, which NCCL refuses.
// The watchdog aborting an operation that started but cannot finish is in
// nccl_watchdog_test.cc (its own process: it leaves the device in a state no later test
// should inherit).
#include "runtime/nccl_transport.h"

#include <nccl.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "runtime/gloo_transport.h"

namespace ppc::runtime {
namespace {

// These tests run on a GPU machine only (tools/gpu_check.sh): too few GPUs is a failure,
// never a skip. gpu_check leaves out NcclTwoGpus.* (and says so) on a one-GPU machine.
#define REQUIRE_GPUS(n)                                                                 \
  do {                                                                                  \
    if (static_cast<int>(torch::cuda::device_count()) < (n)) {                          \
      FAIL() << "needs " << (n) << " CUDA device(s), this process sees "                \
             << torch::cuda::device_count();                                            \
    }                                                                                   \
  } while (0)

at::TensorOptions Cuda(at::ScalarType type = at::kFloat, int device = 0) {
  return at::TensorOptions().dtype(type).device(at::kCUDA, static_cast<c10::DeviceIndex>(device));
}

bool Same(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && torch::equal(a.to(at::kCPU).contiguous(), b.to(at::kCPU).contiguous());
}

std::unique_ptr<Transport> NcclWorldOfOne() {
  RendezvousOptions o;
  o.world_size = 1;
  o.rank = 0;
  o.master_port = 0;
  o.timeout = absl::Seconds(60);
  absl::StatusOr<std::unique_ptr<Transport>> t = CreateNcclTransport(o, 0);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// Runs `body` on `world` threads, rank r's transport from `connect` (the rendezvous at a
// launcher-style store server), and returns each rank's status.
std::vector<absl::Status> RunRanks(
    int world, const std::function<absl::StatusOr<std::unique_ptr<Transport>>(const RendezvousOptions&, int)>& connect,
    const std::function<absl::Status(Transport&)>& body) {
  absl::StatusOr<std::unique_ptr<StoreServer>> server = StoreServer::Start(world, absl::Seconds(60));
  if (!server.ok()) return {server.status()};
  std::vector<absl::Status> results(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      RendezvousOptions o;
      o.master_port = (*server)->port();
      o.rank = r;
      o.world_size = world;
      o.rank0_hosts_store = false;
      o.timeout = absl::Seconds(60);
      absl::StatusOr<std::unique_ptr<Transport>> t = connect(o, r);
      results[r] = t.ok() ? body(**t) : t.status();
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

// --- NCCL, a world of one -------------------------------------------------------------

TEST(NcclWorldOfOne, SendsToItselfInPostOrder) {
  REQUIRE_GPUS(1);
  std::unique_ptr<Transport> t = NcclWorldOfOne();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->rank(), 0);
  EXPECT_EQ(t->world_size(), 1);
  at::Tensor a1 = torch::arange(1000, Cuda()), a2 = a1 * 2;
  at::Tensor b1 = torch::zeros({1000}, Cuda()), b2 = torch::zeros({1000}, Cuda());
  // Two messages of the channel, sends first: the k-th send matches the k-th receive.
  auto s1 = t->PostSend(a1, 0, 0);
  auto s2 = t->PostSend(a2, 0, 1);
  auto r1 = t->PostRecv(b1, 0, 0);
  auto r2 = t->PostRecv(b2, 0, 1);
  ASSERT_TRUE(s1.ok() && s2.ok() && r1.ok() && r2.ok()) << s1.status() << s2.status() << r1.status() << r2.status();
  ASSERT_TRUE(t->Wait(*r2, absl::Seconds(30)).ok());
  ASSERT_TRUE(t->Wait(*r1, absl::Seconds(30)).ok());
  ASSERT_TRUE(t->Wait(*s1, absl::Seconds(30)).ok());
  ASSERT_TRUE(t->Wait(*s2, absl::Seconds(30)).ok());
  // Stream-ordered: work issued after Wait sees the data without a host sync.
  at::Tensor sum = b1 + b2;
  EXPECT_TRUE(Same(sum, a1 * 3));
  EXPECT_TRUE(Same(b1, a1));
  EXPECT_TRUE(Same(b2, a2));

  // A receive posted before its send.
  at::Tensor c = torch::empty({7, 3}, Cuda(at::kLong));
  at::Tensor d = torch::arange(21, Cuda(at::kLong)).reshape({7, 3});
  auto r3 = t->PostRecv(c, 0, 2);
  ASSERT_TRUE(r3.ok()) << r3.status();
  auto s3 = t->PostSend(d, 0, 2);
  ASSERT_TRUE(s3.ok()) << s3.status();
  ASSERT_TRUE(t->Wait(*s3, absl::Seconds(30)).ok());
  ASSERT_TRUE(t->Wait(*r3, absl::Seconds(30)).ok());
  EXPECT_TRUE(Same(c, d));
  EXPECT_TRUE(t->Barrier({0}, absl::Seconds(30)).ok());
}

TEST(NcclWorldOfOne, HostAndNonContiguousTensorsAreStaged) {
  REQUIRE_GPUS(1);
  std::unique_ptr<Transport> t = NcclWorldOfOne();
  ASSERT_NE(t, nullptr);
  // Host to host, through the device.
  at::Tensor from = torch::arange(12, torch::kFloat).reshape({3, 4});
  at::Tensor to = torch::zeros({3, 4});
  auto s = t->PostSend(from, 0, 0);
  auto r = t->PostRecv(to, 0, 0);
  ASSERT_TRUE(s.ok() && r.ok()) << s.status() << r.status();
  ASSERT_TRUE(t->Wait(*s, absl::Seconds(30)).ok());
  ASSERT_TRUE(t->Wait(*r, absl::Seconds(30)).ok());
  EXPECT_TRUE(torch::equal(to, from));  // on the host when Wait returns
  // Non-contiguous device views, both ways.
  at::Tensor base = torch::arange(24, Cuda()).reshape({4, 6});
  at::Tensor view_from = base.t();                         // 6 x 4, not contiguous
  at::Tensor into_base = torch::zeros({4, 6}, Cuda());
  at::Tensor view_to = into_base.t();                      // 6 x 4, not contiguous
  s = t->PostSend(view_from, 0, 1);
  r = t->PostRecv(view_to, 0, 1);
  ASSERT_TRUE(s.ok() && r.ok()) << s.status() << r.status();
  ASSERT_TRUE(t->Wait(*s, absl::Seconds(30)).ok());
  ASSERT_TRUE(t->Wait(*r, absl::Seconds(30)).ok());
  EXPECT_TRUE(Same(view_to, view_from));
  EXPECT_TRUE(Same(into_base, base));
}

TEST(NcclWorldOfOne, Collectives) {
  REQUIRE_GPUS(1);
  std::unique_ptr<Transport> t = NcclWorldOfOne();
  ASSERT_NE(t, nullptr);
  const std::vector<int> world{0};
  EXPECT_TRUE(t->CreateGroup(world, absl::Seconds(30)).ok());
  EXPECT_EQ(t->CreateGroup({0, 1}, absl::Seconds(5)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t->CreateGroup({1}, absl::Seconds(5)).code(), absl::StatusCode::kInvalidArgument);

  // All-reduce over one rank: the values stay; several tensors and types at once, one
  // on the host.
  at::Tensor f = torch::full({5}, 3.5, Cuda());
  at::Tensor l = torch::arange(4, Cuda(at::kLong));
  at::Tensor h = torch::full({2}, 7.0);
  std::vector<at::Tensor> v{f, l, h};
  absl::Status s = t->AllReduceSum(v, world, absl::Seconds(30));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(Same(f, torch::full({5}, 3.5)));
  EXPECT_TRUE(Same(l, torch::arange(4, torch::kLong)));
  EXPECT_TRUE(torch::equal(h, torch::full({2}, 7.0)));

  // Posted, with compute in between.
  at::Tensor g = torch::ones({1 << 20}, Cuda());
  std::vector<at::Tensor> w{g};
  auto handle = t->PostAllReduceSum(w, world);
  ASSERT_TRUE(handle.ok()) << handle.status();
  at::Tensor m = torch::randn({256, 256}, Cuda());
  at::Tensor mm = torch::mm(m, m);
  ASSERT_TRUE(t->Wait(*handle, absl::Seconds(30)).ok());
  EXPECT_EQ(g.sum().item<double>(), double(1 << 20));
  EXPECT_TRUE(Same(mm, torch::mm(m, m)));

  at::Tensor in = torch::arange(6, Cuda());
  at::Tensor out = torch::zeros({6}, Cuda());
  s = t->AllGather(in, out, world, absl::Seconds(30));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(Same(out, in));
  at::Tensor gathered = torch::zeros({6}, Cuda());
  s = t->Gather(in, gathered, 0, world, absl::Seconds(30));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(Same(gathered, in));
  at::Tensor b = torch::arange(9, Cuda(at::kInt));
  s = t->Broadcast(b, 0, world, absl::Seconds(30));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(Same(b, torch::arange(9, torch::kInt)));
  EXPECT_TRUE(t->Barrier(world, absl::Seconds(30)).ok());
  // A group that was never created.
  std::vector<at::Tensor> none{f};
  EXPECT_EQ(t->AllReduceSum(none, {0, 1}, absl::Seconds(5)).code(), absl::StatusCode::kInternal);
}

TEST(NcclWorldOfOne, UnmatchedReceiveFailsInsteadOfHanging) {
  REQUIRE_GPUS(1);
  std::unique_ptr<Transport> t = NcclWorldOfOne();
  ASSERT_NE(t, nullptr);
  at::Tensor x = torch::zeros({16}, Cuda());
  auto r = t->PostRecv(x, 0, 7);
  ASSERT_TRUE(r.ok()) << r.status();
  const absl::Time start = absl::Now();
  absl::Status s = t->Wait(*r, absl::Seconds(2));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "rank 0: receive from rank 0 (tag 7)")) << s;
  // Every later call reports it.
  auto again = t->PostSend(x, 0, 8);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kDeadlineExceeded) << again.status();
}

TEST(NcclCreation, BoundedWhenAPeerNeverConnects) {
  REQUIRE_GPUS(1);
  // Rank 1 joins the rendezvous and publishes the id of its channel to rank 0 (the key
  // CreateNcclTransport reads), but never creates a communicator: rank 0's
  // initialization must give up at its timeout, naming rank 1.
  absl::StatusOr<std::unique_ptr<StoreServer>> server = StoreServer::Start(2, absl::Seconds(30));
  ASSERT_TRUE(server.ok()) << server.status();
  RendezvousOptions o;
  o.master_port = (*server)->port();
  o.world_size = 2;
  o.rank0_hosts_store = false;
  o.timeout = absl::Seconds(3);
  std::atomic<bool> done{false};
  std::thread silent([&] {
    RendezvousOptions mine = o;
    mine.rank = 1;
    absl::StatusOr<std::unique_ptr<RendezvousStore>> store = JoinRendezvous(mine);
    if (!store.ok()) return;
    ncclUniqueId id;
    if (ncclGetUniqueId(&id) == ncclSuccess) {
      (void)(*store)->Set("ppc/nccl/p2p/1-0", std::string(reinterpret_cast<const char*>(&id), sizeof(id)));
    }
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  });
  o.rank = 0;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Transport>> t = CreateNcclTransport(o, 0);
  const absl::Duration took = absl::Now() - start;
  done = true;
  silent.join();
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDeadlineExceeded) << t.status();
  EXPECT_TRUE(absl::StrContains(t.status().message(), "rank 1")) << t.status();
  EXPECT_LT(took, absl::Seconds(30));
}

// --- NCCL, two ranks on two GPUs ------------------------------------------------------

TEST(NcclTwoGpus, ChannelsAreIndependentAndAStalledPeerIsCaught) {
  REQUIRE_GPUS(2);
  std::atomic<int> finished{0};
  auto connect = [](const RendezvousOptions& o, int r) { return CreateNcclTransport(o, r); };
  std::vector<absl::Status> results = RunRanks(2, connect, [&](Transport& t) -> absl::Status {
    const int me = t.rank(), peer = 1 - me;
    // Both directions posted before either is waited for: 64 MiB each way, more than
    // NCCL buffers, so one stream for both directions would deadlock.
    at::Tensor out = torch::full({16 << 20}, float(me + 1), Cuda(at::kFloat, me));
    at::Tensor in = torch::zeros({16 << 20}, Cuda(at::kFloat, me));
    auto s = t.PostSend(out, peer, 0);
    auto r = t.PostRecv(in, peer, 0);
    if (!s.ok()) return s.status();
    if (!r.ok()) return r.status();
    absl::Status st = t.Wait(*s, absl::Seconds(60));
    if (st.ok()) st = t.Wait(*r, absl::Seconds(60));
    if (!st.ok()) return st;
    if (in.min().item<float>() != float(peer + 1) || in.max().item<float>() != float(peer + 1)) {
      return absl::InternalError("wrong data received");
    }
    at::Tensor x = torch::full({3}, float(me + 1), Cuda(at::kFloat, me));
    std::vector<at::Tensor> v{x};
    st = t.AllReduceSum(v, {0, 1}, absl::Seconds(60));
    if (!st.ok()) return st;
    if (!Same(x, torch::full({3}, 3.0f))) return absl::InternalError("wrong all-reduce");
    st = t.Barrier({0, 1}, absl::Seconds(60));
    if (!st.ok()) return st;
    if (me == 0) {
      // Rank 1 never sends this one: Wait returns (stream-ordered), the watchdog aborts,
      // and a later call says what happened.
      at::Tensor never = torch::zeros({4}, Cuda(at::kFloat, me));
      auto h = t.PostRecv(never, 1, 99);
      if (!h.ok()) return h.status();
      const absl::Time start = absl::Now();
      st = t.Wait(*h, absl::Seconds(1));
      while (st.ok() && absl::Now() - start < absl::Seconds(30)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        st = t.CreateGroup({0, 1}, absl::Seconds(1));
      }
      finished = 1;
      if (st.code() != absl::StatusCode::kDeadlineExceeded ||
          !absl::StrContains(st.message(), "receive from rank 1 (tag 99)")) {
        return absl::InternalError(absl::StrCat("expected the watchdog's DeadlineExceeded, got: ", st.ToString()));
      }
      return absl::OkStatus();
    }
    while (finished == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return absl::OkStatus();
  });
  for (size_t r = 0; r < results.size(); ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

// --- Gloo with CUDA tensors: two ranks sharing one GPU --------------------------------

std::vector<absl::Status> RunGloo(const std::function<absl::Status(Transport&)>& body) {
  return RunRanks(2, [](const RendezvousOptions& o, int) { return CreateGlooTransport(o); }, body);
}

TEST(GlooCudaStaging, SendAndReceive) {
  REQUIRE_GPUS(1);
  std::vector<absl::Status> results = RunGloo([](Transport& t) -> absl::Status {
    at::Tensor x = torch::arange(12, Cuda()).reshape({3, 4});
    if (t.rank() == 0) {
      auto s = t.PostSend(x, 1, 0);
      // Into a non-contiguous view of a device tensor.
      at::Tensor base = torch::zeros({4, 3}, Cuda());
      at::Tensor y = base.t();
      auto r = t.PostRecv(y, 1, 0);
      if (!s.ok()) return s.status();
      if (!r.ok()) return r.status();
      absl::Status st = t.Wait(*s, absl::Seconds(30));
      if (st.ok()) st = t.Wait(*r, absl::Seconds(30));
      if (!st.ok()) return st;
      if (!y.is_cuda() || !Same(y, x * 10)) return absl::InternalError("rank 0 received wrong data");
      return absl::OkStatus();
    }
    at::Tensor z = torch::zeros({3, 4}, Cuda());
    auto r = t.PostRecv(z, 0, 0);
    if (!r.ok()) return r.status();
    absl::Status st = t.Wait(*r, absl::Seconds(30));
    if (!st.ok()) return st;
    if (!Same(z, x)) return absl::InternalError("rank 1 received wrong data");
    at::Tensor back = (z * 10).t().contiguous().t();  // not contiguous
    auto s = t.PostSend(back, 0, 0);
    if (!s.ok()) return s.status();
    return t.Wait(*s, absl::Seconds(30));
  });
  for (size_t r = 0; r < results.size(); ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

TEST(GlooCudaStaging, Collectives) {
  REQUIRE_GPUS(1);
  std::vector<absl::Status> results = RunGloo([](Transport& t) -> absl::Status {
    const int me = t.rank();
    const std::vector<int> world{0, 1};
    at::Tensor x = torch::full({5}, float(me + 1), Cuda());
    std::vector<at::Tensor> v{x};
    absl::Status st = t.AllReduceSum(v, world, absl::Seconds(30));
    if (!st.ok()) return st;
    if (!x.is_cuda() || !Same(x, torch::full({5}, 3.0f))) return absl::InternalError("wrong all-reduce");

    at::Tensor y = torch::full({1 << 16}, int64_t(me + 1), Cuda(at::kLong));
    std::vector<at::Tensor> w{y};
    auto h = t.PostAllReduceSum(w, world);
    if (!h.ok()) return h.status();
    at::Tensor busy = torch::mm(torch::ones({64, 64}, Cuda()), torch::ones({64, 64}, Cuda()));
    st = t.Wait(*h, absl::Seconds(30));
    if (!st.ok()) return st;
    if (y.min().item<int64_t>() != 3 || y.max().item<int64_t>() != 3) return absl::InternalError("wrong posted all-reduce");
    if (busy.sum().item<float>() != 64.0f * 64 * 64) return absl::InternalError("compute disturbed");

    at::Tensor b = me == 0 ? torch::arange(4, Cuda()) : torch::zeros({4}, Cuda());
    st = t.Broadcast(b, 0, world, absl::Seconds(30));
    if (!st.ok()) return st;
    if (!Same(b, torch::arange(4, torch::kFloat))) return absl::InternalError("wrong broadcast");

    at::Tensor in = torch::full({3}, float(me), Cuda());
    at::Tensor out = torch::zeros({6}, Cuda());
    st = t.AllGather(in, out, world, absl::Seconds(30));
    if (!st.ok()) return st;
    at::Tensor expect = torch::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 1.f});
    if (!Same(out, expect)) return absl::InternalError("wrong all-gather");

    at::Tensor gathered = torch::zeros({6}, Cuda());
    st = t.Gather(in, gathered, 0, world, absl::Seconds(30));
    if (!st.ok()) return st;
    if (me == 0 && !Same(gathered, expect)) return absl::InternalError("wrong gather");
    return t.Barrier(world, absl::Seconds(30));
  });
  for (size_t r = 0; r < results.size(); ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

}  // namespace
}  // namespace ppc::runtime
