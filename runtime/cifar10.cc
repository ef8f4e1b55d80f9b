#include "runtime/cifar10.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>

#include <torch/nn/functional/upsampling.h>

#include "absl/strings/str_cat.h"
#include "ir/plan_io.h"
#include "runtime/layers.h"

namespace ppc::runtime {
namespace {
constexpr uint64_t kShuffleDomain = 0x5f1e;
}  // namespace

absl::StatusOr<std::unique_ptr<Cifar10Data>> Cifar10Data::Open(const std::string& dir, bool test, int image_size,
                                                               int mbs, int64_t global_batch, uint64_t seed,
                                                               bool shuffle) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("CIFAR-10 directory '", dir, "' does not exist (want data_batch_1.bin ... "
                                            "data_batch_5.bin from the binary version of CIFAR-10)"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--data '", dir, "' is not a directory (give 'synthetic', or the directory holding data_batch_1.bin ... "
        "data_batch_5.bin and test_batch.bin)"));
  }
  if (image_size < 8) return absl::InvalidArgumentError(absl::StrCat("image size ", image_size, " is too small"));
  auto d = std::unique_ptr<Cifar10Data>(new Cifar10Data());
  d->image_size_ = image_size;
  d->mbs_ = mbs;
  d->global_batch_ = global_batch;
  d->seed_ = seed;
  d->shuffle_ = shuffle;
  std::vector<std::string> files;
  if (test) {
    files.push_back(dir + "/test_batch.bin");
  } else {
    for (int i = 1; i <= 5; ++i) files.push_back(absl::StrCat(dir, "/data_batch_", i, ".bin"));
  }
  for (const std::string& path : files) {
    // A regular file of at most 1 GiB (CIFAR-10's are 30 MB): a directory, a FIFO or a
    // device is an error, never a hang or an endless read.
    auto read = ir::ReadFile(path, int64_t{1} << 30);
    if (!read.ok()) {
      if (absl::IsNotFound(read.status())) {
        return absl::NotFoundError(absl::StrCat("CIFAR-10 file '", path, "' is missing or unreadable"));
      }
      return absl::InvalidArgumentError(absl::StrCat("CIFAR-10 file: ", read.status().message()));
    }
    const std::string& bytes = *read;
    if (bytes.empty()) return absl::DataLossError(absl::StrCat("CIFAR-10 file '", path, "' is empty"));
    if (bytes.size() % kCifarRecordBytes != 0) {
      return absl::DataLossError(absl::StrCat("CIFAR-10 file '", path, "' is truncated: ", bytes.size(),
                                              " bytes is not a whole number of ", kCifarRecordBytes,
                                              "-byte records (record ", bytes.size() / kCifarRecordBytes,
                                              " is incomplete)"));
    }
    const size_t records = bytes.size() / kCifarRecordBytes;
    for (size_t r = 0; r < records; ++r) {
      const uint8_t* rec = reinterpret_cast<const uint8_t*>(bytes.data()) + r * kCifarRecordBytes;
      if (rec[0] > 9) {
        return absl::DataLossError(
            absl::StrCat("CIFAR-10 file '", path, "' record ", r, " has label ", int(rec[0]), " (labels are 0..9)"));
      }
      d->labels_.push_back(rec[0]);
      d->pixels_.insert(d->pixels_.end(), rec + 1, rec + kCifarRecordBytes);
    }
  }
  return d;
}

int64_t Cifar10Data::SampleAt(int64_t pos) {
  const int64_t n = size();
  if (!shuffle_) return pos % n;
  const int64_t epoch = pos / n;
  auto it = permutations_.find(epoch);
  if (it == permutations_.end()) {
    if (permutations_.size() > 4) permutations_.erase(permutations_.begin());
    torch::Generator g = MakeGenerator({kShuffleDomain, seed_, uint64_t(epoch)});
    it = permutations_.emplace(epoch, torch::randperm(n, g)).first;
  }
  return it->second[pos % n].item<int64_t>();
}

torch::Tensor Cifar10Data::Image(int64_t index) const {
  torch::Tensor img = torch::from_blob(const_cast<uint8_t*>(pixels_.data() + index * 3072), {1, 3, 32, 32},
                                       torch::kUInt8)
                          .to(torch::kFloat32)
                          .div_(255.0);
  // Resize(256) then CenterCrop(224), scaled to the requested size.
  const int64_t resized = std::lround(image_size_ * 256.0 / 224.0);
  img = torch::nn::functional::interpolate(img, torch::nn::functional::InterpolateFuncOptions()
                                                    .size(std::vector<int64_t>{resized, resized})
                                                    .mode(torch::kBilinear)
                                                    .align_corners(false));
  const int64_t off = (resized - image_size_) / 2;
  img = img.slice(2, off, off + image_size_).slice(3, off, off + image_size_);
  const torch::Tensor mean = torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1});
  const torch::Tensor std = torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1});
  return ((img - mean) / std).squeeze(0);
}

absl::StatusOr<MicroBatch> Cifar10Data::Load(int64_t step, int64_t global_mb, bool inputs, bool labels) {
  MicroBatch b;
  std::vector<torch::Tensor> images;
  std::vector<int64_t> ys;
  for (int i = 0; i < mbs_; ++i) {
    int64_t index = SampleAt(start_position_ + (step - start_step_) * global_batch_ + global_mb * mbs_ + i);
    if (inputs) images.push_back(Image(index));
    ys.push_back(labels_[index]);
  }
  if (inputs) b.inputs = torch::stack(images);
  if (labels) b.labels = torch::tensor(ys, torch::kInt64);
  return b;
}

DataPosition Cifar10Data::PositionAt(int64_t step) const {
  DataPosition p;
  p.samples = start_position_ + (step - start_step_) * global_batch_;
  p.dataset_size = size();
  p.epoch = p.samples / size();
  p.cursor = p.samples % size();
  p.shuffle_seed = seed_;
  return p;
}

absl::Status Cifar10Data::Resume(int64_t step, const DataPosition& position) {
  if (position.samples < 0 || step < 0) {
    return absl::InvalidArgumentError(absl::StrCat("data position ", position.samples, " at step ", step));
  }
  start_step_ = step;
  start_position_ = position.samples;
  if (position.shuffle_seed != seed_) permutations_.clear();
  seed_ = position.shuffle_seed;
  return absl::OkStatus();
}

}  // namespace ppc::runtime
