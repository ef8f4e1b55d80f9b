// The baseline for the interpreter's overhead: AlexNet(num_classes=10) trained by a plain
// LibTorch loop (torch::nn, torch::optim::Adam), the work of one pprun rank at P=1 with the
// seed's ds_config.json: 32 micro-batches of 8 per step (gradient accumulation), each
// micro-batch's synthetic images drawn on the CPU and copied to the device as pprun's
// data source does, loss scaled by 1/32, one optimizer step. Prints one line per step
// ("step N loss L samples/s X", the loss read on the host once per step, as pprun does)
// and the median samples/s of steps 2.. (step 1 includes warm-up).
//
//   libtorch_loop [--device cpu|cuda] [--image_size 224] [--steps 6]
//                 [--micro_batch 8] [--micro_batches 32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"

ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(int, image_size, 224, "image side (AlexNet needs at least 63)");
ABSL_FLAG(int, steps, 6, "optimizer steps");
ABSL_FLAG(int, micro_batch, 8, "samples per micro-batch");
ABSL_FLAG(int, micro_batches, 32, "micro-batches per step (gradient accumulation)");

namespace {

torch::nn::Sequential AlexNet() {
  using namespace torch::nn;
  return Sequential(
      Conv2d(Conv2dOptions(3, 64, 11).stride(4).padding(2)), ReLU(), MaxPool2d(MaxPool2dOptions(3).stride(2)),
      Conv2d(Conv2dOptions(64, 192, 5).padding(2)), ReLU(), MaxPool2d(MaxPool2dOptions(3).stride(2)),
      Conv2d(Conv2dOptions(192, 384, 3).padding(1)), ReLU(), Conv2d(Conv2dOptions(384, 256, 3).padding(1)), ReLU(),
      Conv2d(Conv2dOptions(256, 256, 3).padding(1)), ReLU(), MaxPool2d(MaxPool2dOptions(3).stride(2)),
      AdaptiveAvgPool2d(AdaptiveAvgPool2dOptions({6, 6})), Flatten(), Dropout(0.5), Linear(256 * 6 * 6, 4096),
      ReLU(), Dropout(0.5), Linear(4096, 4096), ReLU(), Linear(4096, 10));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dev = absl::GetFlag(FLAGS_device);
  const int size = absl::GetFlag(FLAGS_image_size), steps = absl::GetFlag(FLAGS_steps);
  const int mbs = absl::GetFlag(FLAGS_micro_batch), m = absl::GetFlag(FLAGS_micro_batches);
  if (dev != "cpu" && dev != "cuda") {
    std::fprintf(stderr, "libtorch_loop: --device '%s' is not cpu or cuda\n", dev.c_str());
    return 2;
  }
  if (dev == "cuda" && !torch::cuda::is_available()) {
    std::fprintf(stderr, "libtorch_loop: --device cuda, but no GPU is visible\n");
    return 2;
  }
  if (size < 63 || size > 4096 || steps < 1 || steps > 100000 || mbs < 1 || mbs > 4096 || m < 1 || m > 4096) {
    std::fprintf(stderr, "libtorch_loop: --image-size in [63, 4096], --steps, --micro-batch, --micro-batches >= 1\n");
    return 2;
  }
  const torch::Device device = dev == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  torch::manual_seed(1138);
  torch::nn::Sequential model = AlexNet();
  model->to(device);
  model->train();
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-3).betas({0.9, 0.999}).eps(1e-8));
  std::vector<double> rates;
  for (int step = 0; step < steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    torch::Tensor loss_sum = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    for (int mb = 0; mb < m; ++mb) {
      torch::Tensor x = torch::randn({mbs, 3, size, size}).to(device);
      torch::Tensor y = torch::randint(0, 10, {mbs}, torch::kInt64).to(device);
      torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      (loss / m).backward();
      loss_sum += loss.detach();
    }
    opt.step();
    opt.zero_grad();
    const double loss = loss_sum.item<double>() / m;  // the one host sync of a step
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rates.push_back(double(m) * mbs / s);
    std::printf("step %d loss %.6f samples/s %.2f\n", step + 1, loss, rates.back());
  }
  std::vector<double> timed(rates.begin() + (rates.size() > 1 ? 1 : 0), rates.end());
  std::sort(timed.begin(), timed.end());
  const size_t n = timed.size();
  const double median = n % 2 ? timed[n / 2] : (timed[n / 2 - 1] + timed[n / 2]) / 2;
  std::printf("median samples/s %.2f\n", median);
  return 0;
}
