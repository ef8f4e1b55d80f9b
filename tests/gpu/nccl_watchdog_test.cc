// The NCCL transport's watchdog on one GPU: an operation whose Wait returned (stream-
// ordered) and that could start, but cannot finish, is aborted at its timeout, and the
// next call reports DeadlineExceeded naming the rank, the peer and the tag, instead of
// anything hanging.
//
// How it cannot finish, on one GPU: a transfer to the rank itself is issued as one NCCL
// group once both its send and its receive are posted. A host function blocks the
// compute stream between the two posts: the send's post is done on the device (its
// clock runs), the pair waits for the receive's post, which never comes while blocked.
//
// The scenario runs in a child process (a death test, re-executed): aborting a
// communicator with work queued behind a blocked stream leaves the device in a state no
// later test should share.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "runtime/nccl_transport.h"

namespace ppc::runtime {
namespace {

std::atomic<bool> release{false};

void CUDART_CB Block(void*) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!release && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

[[noreturn]] void Exit(bool ok, const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(ok ? 0 : 1);
}

// Exits 0 printing "watchdog: ok" when the scenario went as described above.
[[noreturn]] void Scenario() {
  RendezvousOptions o;
  o.world_size = 1;
  o.timeout = absl::Seconds(60);
  absl::StatusOr<std::unique_ptr<Transport>> created = CreateNcclTransport(o, 0);
  if (!created.ok()) Exit(false, "creating: " + created.status().ToString());
  Transport& t = **created;
  const at::TensorOptions cuda = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, 0);
  at::Tensor a = torch::arange(1 << 20, cuda), b = torch::zeros({1 << 20}, cuda);
  auto send = t.PostSend(a, 0, 0);
  if (!send.ok()) Exit(false, "send: " + send.status().ToString());
  torch::cuda::synchronize();  // the send's post is done on the device
  cudaStream_t compute = c10::cuda::getCurrentCUDAStream(0).stream();
  if (cudaLaunchHostFunc(compute, Block, nullptr) != cudaSuccess) Exit(false, "cudaLaunchHostFunc failed");
  auto recv = t.PostRecv(b, 0, 0);
  if (!recv.ok()) Exit(false, "recv: " + recv.status().ToString());
  const absl::Time start = absl::Now();
  absl::Status s = t.Wait(*send, absl::Milliseconds(500));
  if (!s.ok()) Exit(false, "Wait should return at once (stream-ordered), got " + s.ToString());
  if (absl::Now() - start > absl::Seconds(1)) Exit(false, "Wait blocked the host");
  // Any call reports the watchdog's error once it has fired.
  while (s.ok() && absl::Now() - start < absl::Seconds(30)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s = t.CreateGroup({0}, absl::Seconds(1));
  }
  const absl::Duration took = absl::Now() - start;
  release = true;
  if (s.code() != absl::StatusCode::kDeadlineExceeded) Exit(false, "expected DeadlineExceeded, got " + s.ToString());
  if (!absl::StrContains(s.message(), "rank 0: send to rank 0 (tag 0)") ||
      !absl::StrContains(s.message(), "did not complete within 500ms")) {
    Exit(false, "unexpected message: " + s.ToString());
  }
  if (took < absl::Milliseconds(500) || took > absl::Seconds(15)) {
    Exit(false, "fired after " + absl::FormatDuration(took) + ", for a 500ms timeout");
  }
  Exit(true, "watchdog: ok: " + s.ToString());
}

TEST(NcclWatchdog, AbortsAnOperationThatCannotFinish) {
  ASSERT_GE(torch::cuda::device_count(), 1) << "needs a CUDA device (a GPU test: tools/gpu_check.sh)";
#ifdef GTEST_FLAG_SET
  GTEST_FLAG_SET(death_test_style, "threadsafe");
#else
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
#endif
  EXPECT_EXIT(Scenario(), ::testing::ExitedWithCode(0), "watchdog: ok");
}

}  // namespace
}  // namespace ppc::runtime
