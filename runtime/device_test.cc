#include "runtime/device.h"

#include "gtest/gtest.h"

namespace ppc::runtime {
namespace {

DeviceInventory Gpus(int n, bool nccl = true) {
  DeviceInventory inv;
  inv.cuda_devices = n;
  inv.nccl_built = nccl;
  return inv;
}

std::string Error(const absl::StatusOr<DeviceChoice>& c) { return c.ok() ? "ok" : std::string(c.status().message()); }

TEST(ChooseDevice, AutoIsCudaWhenAGpuIsVisibleElseCpuOverGloo) {
  auto cpu = ChooseDevice("auto", "auto", 0, 0, 2, Gpus(0, /*nccl=*/false));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(cpu->device, torch::Device(torch::kCPU));
  EXPECT_EQ(cpu->backend, "gloo");
  EXPECT_EQ(cpu->Text(), "cpu over gloo");
  // A GPU per local rank: rank with local rank r on cuda:r, over NCCL.
  auto own = ChooseDevice("auto", "auto", 5, 1, 2, Gpus(2));
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->device, torch::Device(torch::kCUDA, 1));
  EXPECT_EQ(own->backend, "nccl");
  EXPECT_EQ(own->Text(), "cuda:1 over nccl");
}

TEST(ChooseDevice, RanksSharingAGpuUseGlooAndNcclIsRefused) {
  // Three local ranks, one GPU: all on cuda:0, over Gloo (NCCL refuses two ranks on one GPU).
  for (int r = 0; r < 3; ++r) {
    auto c = ChooseDevice("cuda", "auto", r, r, 3, Gpus(1));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->device, torch::Device(torch::kCUDA, 0));
    EXPECT_EQ(c->backend, "gloo");
  }
  // Four local ranks on two GPUs: r mod 2.
  auto c = ChooseDevice("cuda", "gloo", 3, 3, 4, Gpus(2));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->device, torch::Device(torch::kCUDA, 1));
  EXPECT_EQ(Error(ChooseDevice("cuda", "nccl", 2, 2, 3, Gpus(1))),
            "rank 2: --backend nccl needs a GPU per local rank, but 3 local ranks share 1 GPU(s) (NCCL refuses two "
            "ranks of one communicator on one GPU); use --backend gloo");
}

TEST(ChooseDevice, WhatCannotBeHonouredIsRefusedNamingTheRank) {
  auto no_gpu = ChooseDevice("cuda", "auto", 1, 1, 2, Gpus(0));
  EXPECT_EQ(no_gpu.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Error(no_gpu), "rank 1: --device cuda, but this process sees no GPU (none is visible, or this LibTorch "
                           "has no CUDA); use --device cpu");
  EXPECT_EQ(Error(ChooseDevice("cpu", "nccl", 0, 0, 1, Gpus(1))),
            "rank 0: --backend nccl needs --device cuda (NCCL moves GPU memory); use --backend gloo on cpu");
  EXPECT_EQ(Error(ChooseDevice("cuda", "nccl", 0, 0, 1, Gpus(1, /*nccl=*/false))),
            "rank 0: --backend nccl, but this build has no NCCL transport (build with bazel --config=cuda or with "
            "CMake against a CUDA LibTorch); use --backend gloo");
  // Without the NCCL transport, auto falls back to Gloo even with a GPU per rank.
  auto fallback = ChooseDevice("auto", "auto", 0, 0, 1, Gpus(1, /*nccl=*/false));
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_EQ(fallback->Text(), "cuda:0 over gloo");
}

TEST(ChooseDevice, OddValuesAreInvalidArguments) {
  for (const auto& [device, backend] : std::vector<std::pair<std::string, std::string>>{
           {"gpu", "auto"}, {"", "auto"}, {"CUDA", "auto"}, {"cuda:1", "auto"}, {"auto", "mpi"}, {"auto", ""}}) {
    auto c = ChooseDevice(device, backend, 0, 0, 1, Gpus(1));
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << device << " " << backend;
  }
  EXPECT_EQ(Error(ChooseDevice("auto", "auto", 0, 2, 2, Gpus(1))), "rank 0: LOCAL_RANK 2 is not in [0, LOCAL_WORLD_SIZE 2)");
  EXPECT_EQ(ChooseDevice("auto", "auto", 0, -1, 2, Gpus(1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChooseDevice("auto", "auto", 0, 0, 0, Gpus(1)).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ppc::runtime
