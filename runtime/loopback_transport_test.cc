#include "runtime/loopback_transport.h"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ppc::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kLong = absl::Seconds(20);  // for waits that must succeed

std::vector<double> Values(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// 1-D float tensor of `values`.
at::Tensor Floats(std::vector<float> values) {
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kFloat);
  for (size_t i = 0; i < values.size(); ++i) t.data_ptr<float>()[i] = values[i];
  return t;
}

std::vector<int> World(int n) {
  std::vector<int> all(n);
  for (int r = 0; r < n; ++r) all[r] = r;
  return all;
}

#define CHECK_OK_OR_RETURN(expr)            \
  do {                                      \
    absl::Status s_ = (expr);               \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_; \
    if (!s_.ok()) return s_;                \
  } while (0)

#define ASSIGN_OK_OR_RETURN(lhs, expr)                                 \
  auto lhs##_or = (expr);                                              \
  EXPECT_TRUE(lhs##_or.ok()) << #expr << ": " << lhs##_or.status();    \
  if (!lhs##_or.ok()) return lhs##_or.status();                        \
  auto lhs = *lhs##_or

TEST(LoopbackTransport, SendRecvInOrderBetweenTwoRanks) {
  absl::Status s = RunLoopbackWorld(2, [](Transport& t) -> absl::Status {
    // Rank 0 -> 1: four messages of different sizes and dtypes, all posted before any wait.
    // Rank 1 -> 0 at the same time: one message. Rendezvous sends cannot deadlock this.
    if (t.rank() == 0) {
      std::vector<at::Tensor> out = {Floats({1.5f, -2.f}), Floats({10, 20, 30}),
                                     at::arange(4, at::kLong).mul_(7), Floats({42})};
      std::vector<Transport::Handle> hs;
      for (uint32_t k = 0; k < out.size(); ++k) {
        ASSIGN_OK_OR_RETURN(h, t.PostSend(out[k], 1, k));
        hs.push_back(h);
      }
      at::Tensor back = at::zeros({2, 2}, at::kFloat);
      ASSIGN_OK_OR_RETURN(hb, t.PostRecv(back, 1, 0));
      for (auto h : hs) CHECK_OK_OR_RETURN(t.Wait(h, kLong));
      CHECK_OK_OR_RETURN(t.Wait(hb, kLong));
      EXPECT_THAT(Values(back), ElementsAre(5, 6, 7, 8));
    } else {
      std::vector<at::Tensor> in = {at::zeros({2}, at::kFloat), at::zeros({3}, at::kFloat),
                                    at::zeros({2, 2}, at::kLong), at::zeros({1}, at::kFloat)};
      std::vector<Transport::Handle> hs;
      for (uint32_t k = 0; k < in.size(); ++k) {
        ASSIGN_OK_OR_RETURN(h, t.PostRecv(in[k], 0, k));
        hs.push_back(h);
      }
      at::Tensor back = Floats({5, 6, 7, 8});
      ASSIGN_OK_OR_RETURN(hb, t.PostSend(back, 0, 0));
      // Waited in reverse order: completion does not depend on the order of the waits.
      for (size_t i = hs.size(); i-- > 0;) CHECK_OK_OR_RETURN(t.Wait(hs[i], kLong));
      CHECK_OK_OR_RETURN(t.Wait(hb, kLong));
      EXPECT_THAT(Values(in[0]), ElementsAre(1.5, -2));
      EXPECT_THAT(Values(in[1]), ElementsAre(10, 20, 30));
      EXPECT_THAT(Values(in[2]), ElementsAre(0, 7, 14, 21));
      EXPECT_EQ(in[2].scalar_type(), at::kLong);
      EXPECT_THAT(Values(in[3]), ElementsAre(42));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(LoopbackTransport, SendRecvInOrderBetweenThreeRanks) {
  // A ring (r -> r+1) of three messages per channel, plus rank 0 -> 2 interleaved with
  // rank 0 -> 1: channels are independent, each in its own order.
  absl::Status s = RunLoopbackWorld(3, [](Transport& t) -> absl::Status {
    const int r = t.rank(), next = (r + 1) % 3, prev = (r + 2) % 3;
    std::vector<at::Tensor> out, in, extra;
    std::vector<Transport::Handle> hs;
    for (uint32_t k = 0; k < 3; ++k) {
      out.push_back(Floats({float(100 * r + 10 * k), float(100 * r + 10 * k + 1)}));
      in.push_back(at::zeros({2}, at::kFloat));
      ASSIGN_OK_OR_RETURN(hs_send, t.PostSend(out.back(), next, k));
      ASSIGN_OK_OR_RETURN(hs_recv, t.PostRecv(in.back(), prev, k));
      hs.push_back(hs_send);
      hs.push_back(hs_recv);
      if (r == 0) {
        extra.push_back(Floats({float(-1 - int(k))}));
        ASSIGN_OK_OR_RETURN(he, t.PostSend(extra.back(), 2, k));
        hs.push_back(he);
      }
    }
    if (r == 2) {
      for (uint32_t k = 0; k < 3; ++k) {
        extra.push_back(at::zeros({1}, at::kFloat));
        ASSIGN_OK_OR_RETURN(he, t.PostRecv(extra.back(), 0, k));
        hs.push_back(he);
      }
    }
    for (auto h : hs) CHECK_OK_OR_RETURN(t.Wait(h, kLong));
    for (uint32_t k = 0; k < 3; ++k) {
      EXPECT_THAT(Values(in[k]), ElementsAre(100 * prev + 10 * k, 100 * prev + 10 * k + 1)) << "rank " << r;
    }
    if (r == 2) {
      EXPECT_THAT(Values(extra[0]), ElementsAre(-1));
      EXPECT_THAT(Values(extra[1]), ElementsAre(-2));
      EXPECT_THAT(Values(extra[2]), ElementsAre(-3));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(LoopbackTransport, OutOfOrderTagsFailWithFailedPrecondition) {
  std::vector<absl::Status> recv_status(2), send_status(2);
  at::Tensor first = at::zeros({1}, at::kFloat);
  at::Tensor second = at::zeros({1}, at::kFloat);
  absl::Status s = RunLoopbackWorld(2, [&](Transport& t) -> absl::Status {
    if (t.rank() == 0) {
      at::Tensor a = Floats({1}), b = Floats({2});
      ASSIGN_OK_OR_RETURN(h0, t.PostSend(a, 1, 0));
      ASSIGN_OK_OR_RETURN(h1, t.PostSend(b, 1, 1));
      send_status[0] = t.Wait(h0, kLong);
      send_status[1] = t.Wait(h1, kLong);
    } else {
      // The receiver believes the messages come the other way round.
      ASSIGN_OK_OR_RETURN(h1, t.PostRecv(first, 0, 1));
      ASSIGN_OK_OR_RETURN(h0, t.PostRecv(second, 0, 0));
      recv_status[0] = t.Wait(h1, kLong);
      recv_status[1] = t.Wait(h0, kLong);
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(recv_status[0].code(), absl::StatusCode::kFailedPrecondition) << recv_status[0];
  EXPECT_EQ(recv_status[0].message(),
            "rank 0 -> rank 1: message 0 was posted with tag 0 by the sender but tag 1 by the receiver");
  EXPECT_EQ(recv_status[1].code(), absl::StatusCode::kFailedPrecondition) << recv_status[1];
  EXPECT_EQ(recv_status[1].message(),
            "rank 0 -> rank 1: message 1 was posted with tag 1 by the sender but tag 0 by the receiver");
  // The sender learns it too, and nothing was delivered.
  EXPECT_EQ(send_status[0], recv_status[0]);
  EXPECT_EQ(send_status[1], recv_status[1]);
  EXPECT_THAT(Values(first), ElementsAre(0));
  EXPECT_THAT(Values(second), ElementsAre(0));
}

TEST(LoopbackTransport, RecvWithoutSenderTimesOut) {
  absl::Status recv_status, late_send_status;
  absl::Duration waited;
  absl::Status s = RunLoopbackWorld(2, [&](Transport& t) -> absl::Status {
    if (t.rank() == 1) {
      at::Tensor in = at::zeros({3}, at::kFloat);
      ASSIGN_OK_OR_RETURN(h, t.PostRecv(in, 0, 0));
      const absl::Time start = absl::Now();
      recv_status = t.Wait(h, absl::Milliseconds(200));
      waited = absl::Now() - start;
      EXPECT_THAT(Values(in), ElementsAre(0, 0, 0));
    }
    // Rank 0 stays connected (in the barrier) while rank 1 times out, then sends the
    // message rank 1 gave up on.
    CHECK_OK_OR_RETURN(t.Barrier(World(2), kLong));
    if (t.rank() == 0) {
      at::Tensor out = Floats({1, 2, 3});
      ASSIGN_OK_OR_RETURN(h, t.PostSend(out, 1, 0));
      late_send_status = t.Wait(h, kLong);
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(recv_status.code(), absl::StatusCode::kDeadlineExceeded) << recv_status;
  EXPECT_EQ(recv_status.message(), "rank 1: receive from rank 0 (message 0, tag 0) did not complete within 200ms");
  EXPECT_GE(waited, absl::Milliseconds(190));
  EXPECT_LT(waited, absl::Seconds(5));
  EXPECT_EQ(late_send_status.code(), absl::StatusCode::kAborted) << late_send_status;
  EXPECT_THAT(std::string(late_send_status.message()), HasSubstr("rank 0 -> rank 1: message 0 (tag 0) was abandoned by the receiver"));
}

TEST(LoopbackTransport, SendTimesOutWithoutReceiver) {
  absl::Status send_status;
  absl::Status s = RunLoopbackWorld(2, [&](Transport& t) -> absl::Status {
    if (t.rank() == 0) {
      at::Tensor out = Floats({1});
      ASSIGN_OK_OR_RETURN(h, t.PostSend(out, 1, 5));
      send_status = t.Wait(h, absl::Milliseconds(100));
    }
    return t.Barrier(World(2), kLong);
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(send_status.code(), absl::StatusCode::kDeadlineExceeded) << send_status;
  EXPECT_EQ(send_status.message(), "rank 0: send to rank 1 (message 0, tag 5) did not complete within 100ms");
}

TEST(LoopbackTransport, WaitingForADisconnectedRankFailsFast) {
  absl::Status recv_status;
  absl::Duration waited;
  absl::Status s = RunLoopbackWorld(2, [&](Transport& t) -> absl::Status {
    if (t.rank() == 0) return absl::OkStatus();  // leaves without sending
    at::Tensor in = at::zeros({1}, at::kFloat);
    ASSIGN_OK_OR_RETURN(h, t.PostRecv(in, 0, 0));
    const absl::Time start = absl::Now();
    recv_status = t.Wait(h, absl::Seconds(60));
    waited = absl::Now() - start;
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(recv_status.code(), absl::StatusCode::kUnavailable) << recv_status;
  EXPECT_EQ(recv_status.message(), "rank 1: receive from rank 0 (message 0, tag 0): rank 0 disconnected before it sent it");
  EXPECT_LT(waited, absl::Seconds(30));
}

TEST(LoopbackTransport, WrongSizeOrDtypeReceiveIsAnError) {
  std::vector<absl::Status> st(4);
  at::Tensor small = at::zeros({3}, at::kFloat);
  at::Tensor ints = at::zeros({4}, at::kInt);
  at::Tensor good = at::zeros({2, 2}, at::kFloat);
  absl::Status s = RunLoopbackWorld(2, [&](Transport& t) -> absl::Status {
    if (t.rank() == 0) {
      at::Tensor a = Floats({1, 2, 3, 4}), b = Floats({5, 6, 7, 8}), c = Floats({9, 10, 11, 12});
      ASSIGN_OK_OR_RETURN(h0, t.PostSend(a, 1, 0));
      ASSIGN_OK_OR_RETURN(h1, t.PostSend(b, 1, 1));
      ASSIGN_OK_OR_RETURN(h2, t.PostSend(c, 1, 2));
      st[0] = t.Wait(h0, kLong);
      st[1] = t.Wait(h1, kLong);
      CHECK_OK_OR_RETURN(t.Wait(h2, kLong));
    } else {
      ASSIGN_OK_OR_RETURN(h0, t.PostRecv(small, 0, 0));
      ASSIGN_OK_OR_RETURN(h1, t.PostRecv(ints, 0, 1));
      ASSIGN_OK_OR_RETURN(h2, t.PostRecv(good, 0, 2));  // a different shape, same count: fine
      st[2] = t.Wait(h0, kLong);
      st[3] = t.Wait(h1, kLong);
      CHECK_OK_OR_RETURN(t.Wait(h2, kLong));
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(st[2].code(), absl::StatusCode::kInvalidArgument) << st[2];
  EXPECT_EQ(st[2].message(),
            "rank 0 -> rank 1: message 0 (tag 0): the sender posted 4 values of Float but the receiver expects 3 "
            "values of Float");
  EXPECT_EQ(st[3].code(), absl::StatusCode::kInvalidArgument) << st[3];
  EXPECT_EQ(st[3].message(),
            "rank 0 -> rank 1: message 1 (tag 1): the sender posted 4 values of Float but the receiver expects 4 "
            "values of Int");
  EXPECT_EQ(st[0], st[2]);
  EXPECT_EQ(st[1], st[3]);
  EXPECT_THAT(Values(small), ElementsAre(0, 0, 0));
  EXPECT_THAT(Values(ints), ElementsAre(0, 0, 0, 0));
  EXPECT_THAT(Values(good), ElementsAre(9, 10, 11, 12));
}

TEST(LoopbackTransport, BadPeersAndGroupsAreRejected) {
  absl::Status s = RunLoopbackWorld(3, [](Transport& t) -> absl::Status {
    at::Tensor x = Floats({1});
    EXPECT_EQ(t.PostSend(x, t.rank(), 0).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(t.PostRecv(x, 3, 0).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(t.CreateGroup({2, 1}, kLong).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(t.CreateGroup({0, 3}, kLong).code(), absl::StatusCode::kInvalidArgument);
    if (t.rank() != 1) {
      absl::Status not_member = t.CreateGroup({1}, kLong);
      EXPECT_EQ(not_member.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(not_member.message(), absl::StrCat("rank ", t.rank(), " is not in group [1]"));
    }
    if (t.rank() != 2) {
      std::vector<at::Tensor> v{x};
      absl::Status uncreated = t.AllReduceSum(v, {0, 1}, kLong);
      EXPECT_EQ(uncreated.code(), absl::StatusCode::kFailedPrecondition) << uncreated;
    }
    EXPECT_EQ(t.Wait(12345, kLong).code(), absl::StatusCode::kInvalidArgument);
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  auto hub = LoopbackHub::Create(2);
  ASSERT_TRUE(hub.ok());
  auto first = (*hub)->Connect(0);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ((*hub)->Connect(0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*hub)->Connect(2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoopbackHub::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LoopbackTransport, AllReduceSumOverTheWorldAndOverSubGroups) {
  absl::Status s = RunLoopbackWorld(4, [](Transport& t) -> absl::Status {
    const int r = t.rank();
    // World: rank r contributes (r+1, 10(r+1), 100(r+1)) and an int64 r^2.
    std::vector<at::Tensor> v{Floats({float(r + 1), float(10 * (r + 1)), float(100 * (r + 1))}),
                              at::full({1}, int64_t{r} * r, at::kLong)};
    CHECK_OK_OR_RETURN(t.AllReduceSum(v, World(4), kLong));
    EXPECT_THAT(Values(v[0]), ElementsAre(10, 100, 1000));
    EXPECT_THAT(Values(v[1]), ElementsAre(0 + 1 + 4 + 9));
    EXPECT_EQ(v[1].scalar_type(), at::kLong);
    // Sub-groups {0,2} and {1,3} at the same time.
    const std::vector<int> group = r % 2 == 0 ? std::vector<int>{0, 2} : std::vector<int>{1, 3};
    CHECK_OK_OR_RETURN(t.CreateGroup(group, kLong));
    std::vector<at::Tensor> w{Floats({float(r), float(-3 * r)})};
    CHECK_OK_OR_RETURN(t.AllReduceSum(w, group, kLong));
    if (r % 2 == 0) {
      EXPECT_THAT(Values(w[0]), ElementsAre(2, -6));
    } else {
      EXPECT_THAT(Values(w[0]), ElementsAre(4, -12));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(LoopbackTransport, PostAllReduceSumThenWait) {
  absl::Status s = RunLoopbackWorld(3, [](Transport& t) -> absl::Status {
    const int r = t.rank();
    std::vector<at::Tensor> a{Floats({float(r), 1})};
    std::vector<at::Tensor> b{Floats({float(10 * r)}), Floats({0.5f})};
    ASSIGN_OK_OR_RETURN(ha, t.PostAllReduceSum(a, World(3)));
    ASSIGN_OK_OR_RETURN(hb, t.PostAllReduceSum(b, World(3)));
    // Point-to-point traffic in between does not disturb the collectives.
    at::Tensor out = Floats({float(r)}), in = at::zeros({1}, at::kFloat);
    ASSIGN_OK_OR_RETURN(hs, t.PostSend(out, (r + 1) % 3, 0));
    ASSIGN_OK_OR_RETURN(hr, t.PostRecv(in, (r + 2) % 3, 0));
    CHECK_OK_OR_RETURN(t.Wait(hb, kLong));
    CHECK_OK_OR_RETURN(t.Wait(hs, kLong));
    CHECK_OK_OR_RETURN(t.Wait(hr, kLong));
    CHECK_OK_OR_RETURN(t.Wait(ha, kLong));
    EXPECT_THAT(Values(a[0]), ElementsAre(3, 3));
    EXPECT_THAT(Values(b[0]), ElementsAre(30));
    EXPECT_THAT(Values(b[1]), ElementsAre(1.5));
    EXPECT_THAT(Values(in), ElementsAre((r + 2) % 3));
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(LoopbackTransport, AllGatherGatherAndBroadcast) {
  absl::Status s = RunLoopbackWorld(4, [](Transport& t) -> absl::Status {
    const int r = t.rank();
    at::Tensor in = Floats({float(10 * r), float(10 * r + 1)});
    at::Tensor all = at::zeros({8}, at::kFloat);
    CHECK_OK_OR_RETURN(t.AllGather(in, all, World(4), kLong));
    EXPECT_THAT(Values(all), ElementsAre(0, 1, 10, 11, 20, 21, 30, 31));

    // Gather to rank 3 over {1, 2, 3}; rank 0 is not a member.
    if (r != 0) {
      CHECK_OK_OR_RETURN(t.CreateGroup({1, 2, 3}, kLong));
      at::Tensor gathered = at::full({6}, -1.f, at::kFloat);
      CHECK_OK_OR_RETURN(t.Gather(in, gathered, 3, {1, 2, 3}, kLong));
      if (r == 3) {
        EXPECT_THAT(Values(gathered), ElementsAre(10, 11, 20, 21, 30, 31));
      } else {
        EXPECT_THAT(Values(gathered), ElementsAre(-1, -1, -1, -1, -1, -1));
      }
    }

    // Broadcast from rank 2 over the world.
    at::Tensor b = r == 2 ? Floats({7, 8, 9}) : at::zeros({3}, at::kFloat);
    CHECK_OK_OR_RETURN(t.Broadcast(b, 2, World(4), kLong));
    EXPECT_THAT(Values(b), ElementsAre(7, 8, 9));
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
}

TEST(LoopbackTransport, MismatchedCollectivesFail) {
  std::vector<absl::Status> kind(2), size(2);
  absl::Status s = RunLoopbackWorld(2, [&](Transport& t) -> absl::Status {
    const int r = t.rank();
    at::Tensor x = Floats({1, 2});
    if (r == 0) {
      std::vector<at::Tensor> v{x};
      kind[r] = t.AllReduceSum(v, World(2), kLong);
    } else {
      kind[r] = t.Broadcast(x, 0, World(2), kLong);
    }
    std::vector<at::Tensor> v{r == 0 ? Floats({1, 2}) : Floats({1, 2, 3})};
    size[r] = t.AllReduceSum(v, World(2), kLong);
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(kind[r].code(), absl::StatusCode::kFailedPrecondition) << kind[r];
    EXPECT_EQ(kind[r].message(),
              "collective call #0 over ranks [0,1]: rank 0 called all-reduce but rank 1 called broadcast from rank 0");
    EXPECT_EQ(size[r].code(), absl::StatusCode::kInvalidArgument) << size[r];
    EXPECT_EQ(size[r].message(),
              "all-reduce #1 over ranks [0,1]: tensor 0 has 2 values of Float on rank 0 but 3 values of Float on "
              "rank 1");
  }
}

TEST(LoopbackTransport, CollectiveTimesOutNamingTheMissingRanks) {
  absl::Status early;
  std::vector<absl::Status> late(3);
  std::atomic<bool> gave_up{false};
  absl::Status s = RunLoopbackWorld(3, [&](Transport& t) -> absl::Status {
    if (t.rank() == 0) {
      early = t.Barrier(World(3), absl::Milliseconds(150));
      gave_up = true;
      // Stays connected until the others have joined the barrier it gave up on.
      CHECK_OK_OR_RETURN(t.Barrier(World(3), kLong));
      return absl::OkStatus();
    }
    // Ranks 1 and 2 join the barrier after rank 0 gave up on it: it fails for them too.
    while (!gave_up) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    late[t.rank()] = t.Barrier(World(3), kLong);
    return t.Barrier(World(3), kLong);
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(early.code(), absl::StatusCode::kDeadlineExceeded) << early;
  EXPECT_EQ(early.message(),
            "rank 0: barrier #0 over ranks [0,1,2] did not complete within 150ms: rank(s) [1,2] have not joined it");
  for (int r = 1; r < 3; ++r) {
    EXPECT_EQ(late[r].code(), absl::StatusCode::kAborted) << late[r];
    EXPECT_THAT(std::string(late[r].message()), HasSubstr("barrier #0 over ranks [0,1,2]: rank(s) [0] gave up on it"));
  }
}

TEST(LoopbackTransport, RunLoopbackWorldReportsTheFirstError) {
  absl::Status s = RunLoopbackWorld(3, [](Transport& t) -> absl::Status {
    if (t.rank() == 2) return absl::NotFoundError("no such thing");
    // The others wait for rank 2, which leaves: they fail after rank 2 did.
    return t.Barrier(World(3), kLong);
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(s.message(), "rank 2: no such thing");

  absl::Status thrown = RunLoopbackWorld(2, [](Transport& t) -> absl::Status {
    if (t.rank() == 1) throw std::runtime_error("thrown by the body");
    return absl::OkStatus();
  });
  EXPECT_FALSE(thrown.ok());
  EXPECT_EQ(thrown.message(), "rank 1: thrown by the body");
}

}  // namespace
}  // namespace ppc::runtime
