// CIFAR-10 in its official binary format (data_batch_1..5.bin; records of 1 label
// byte + 3072 pixel bytes, channel-major 32x32), with the seed's preprocessing:
// resize to 256, centre crop 224 (both scaled by image_size/224 for smaller runs),
// ImageNet mean/std normalisation.
//
// Sampling is deterministic and shared by the first and the last stage: sample i of
// global micro-batch g at step n is position (n * global_batch + g * mbs + i, counted
// from the position a resumed run started at) of an
// endless stream that visits the training set in a fresh seeded permutation each
// epoch (DeepSpeed's RepeatingLoader over a shuffled sampler). Replicas take disjoint
// micro-batches of the same global batch.
#ifndef PPC_RUNTIME_CIFAR10_H_
#define PPC_RUNTIME_CIFAR10_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/data.h"

namespace ppc::runtime {

inline constexpr int kCifarRecordBytes = 1 + 3 * 32 * 32;

class Cifar10Data : public DataSource {
 public:
  // Reads <dir>/data_batch_{1..5}.bin; or <dir>/test_batch.bin when `test`. Without
  // `shuffle` the stream visits the records in file order, every epoch.
  static absl::StatusOr<std::unique_ptr<Cifar10Data>> Open(const std::string& dir, bool test, int image_size,
                                                           int micro_batch_size, int64_t global_batch, uint64_t seed,
                                                           bool shuffle = true);
  absl::StatusOr<MicroBatch> Load(int64_t step, int64_t global_mb, bool inputs, bool labels) override;
  DataPosition PositionAt(int64_t step) const override;
  // Continues the stream at position.samples, in the shuffle of position.shuffle_seed.
  absl::Status Resume(int64_t step, const DataPosition& position) override;

  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  // Index into the dataset of stream position `pos`.
  int64_t SampleAt(int64_t pos);
  // One preprocessed image [3, S, S].
  torch::Tensor Image(int64_t index) const;

 private:
  std::vector<uint8_t> pixels_;  // size() * 3072
  std::vector<int64_t> labels_;
  int image_size_ = 224;
  int mbs_ = 1;
  int64_t global_batch_ = 1;
  uint64_t seed_ = 0;
  bool shuffle_ = true;
  // Stream position of step start_step_'s first sample (moved by Resume).
  int64_t start_step_ = 0, start_position_ = 0;
  std::map<int64_t, torch::Tensor> permutations_;  // epoch -> permutation (a few cached)
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_CIFAR10_H_
