#include "runtime/data.h"

#include "absl/strings/str_cat.h"
#include "ir/layer_shapes.h"
#include "runtime/layers.h"

namespace ppc::runtime {
namespace {
constexpr uint64_t kInputDomain = 0xda7a;
constexpr uint64_t kTeacherDomain = 0x7eac;
constexpr uint64_t kTargetDomain = 0x7a96;

std::vector<int64_t> Batched(int64_t n, const ir::TensorSpec& s) {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), s.shape().begin(), s.shape().end());
  return shape;
}
}  // namespace

absl::StatusOr<std::unique_ptr<SyntheticData>> SyntheticData::Create(const ir::ModelSpec& model,
                                                                     const ir::TensorSpec& output, int mbs,
                                                                     int64_t global_batch, uint64_t seed,
                                                                     bool held_out) {
  auto d = std::unique_ptr<SyntheticData>(new SyntheticData());
  d->model_ = model;
  d->output_ = output;
  d->mbs_ = mbs;
  d->global_batch_ = global_batch;
  d->seed_ = seed;
  d->domain_ = held_out ? 0x4e1d : 0;
  if (model.input().dtype() == ir::INT64) {
    if (model.layers_size() == 0 || model.layers(0).kind() != "Embedding") {
      return absl::InvalidArgumentError("synthetic int64 inputs need an Embedding first layer to bound token ids");
    }
    auto v = ir::IntAttr(model.layers(0), "num_embeddings");
    if (!v.ok()) return v.status();
    d->vocab_ = *v;
  }
  if (model.loss() == ir::CROSS_ENTROPY) {
    if (model.num_classes() < 2) return absl::InvalidArgumentError("model.num_classes must be >= 2 for CROSS_ENTROPY");
    if (model.input().dtype() == ir::FLOAT32) {
      torch::Generator g = MakeGenerator({kTeacherDomain, seed});
      d->teacher_ = torch::randn({ir::NumElements(model.input()), model.num_classes()}, g);
    }
  } else if (model.loss() != ir::MSE) {
    return absl::InvalidArgumentError("model.loss must be CROSS_ENTROPY or MSE");
  }
  return d;
}

torch::Tensor SyntheticData::Inputs(int64_t step, int64_t global_mb) {
  torch::Generator g = MakeGenerator({kInputDomain ^ domain_, seed_, uint64_t(step), uint64_t(global_mb)});
  if (model_.input().dtype() == ir::INT64) return torch::randint(0, vocab_, Batched(mbs_, model_.input()), g);
  return torch::randn(Batched(mbs_, model_.input()), g);
}

absl::StatusOr<MicroBatch> SyntheticData::Load(int64_t step, int64_t global_mb, bool inputs, bool labels) {
  MicroBatch b;
  torch::Tensor x;
  if (inputs || (labels && teacher_.defined())) x = Inputs(step, global_mb);
  if (inputs) b.inputs = x;
  if (labels) {
    if (model_.loss() == ir::CROSS_ENTROPY) {
      if (teacher_.defined()) {
        b.labels = torch::matmul(x.reshape({mbs_, -1}), teacher_).argmax(1);
      } else {
        torch::Generator g = MakeGenerator({kTargetDomain ^ domain_, seed_, uint64_t(step), uint64_t(global_mb)});
        b.labels = torch::randint(0, model_.num_classes(), Batched(mbs_, model_.label()), g);
      }
    } else {
      torch::Generator g = MakeGenerator({kTargetDomain ^ domain_, seed_, uint64_t(step), uint64_t(global_mb)});
      b.labels = torch::randn(Batched(mbs_, output_), g);
    }
  }
  return b;
}

DataPosition SyntheticData::PositionAt(int64_t step) const {
  DataPosition p;
  p.samples = step * global_batch_;
  p.shuffle_seed = seed_;
  return p;
}

}  // namespace ppc::runtime
