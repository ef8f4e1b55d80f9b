#include "runtime/optimizer.h"


#include <torch/optim.h>

#include "absl/strings/str_cat.h"

namespace ppc::runtime {
namespace {

std::string Key(const torch::Tensor& t) { return c10::guts::to_string(t.unsafeGetTensorImpl()); }

}  // namespace

absl::StatusOr<std::unique_ptr<StageOptimizer>> StageOptimizer::Create(const ir::OptimizerConfig& o,
                                                                       std::vector<torch::Tensor> params,
                                                                       torch::Tensor flat_params,
                                                                       torch::Tensor flat_grads, int shard,
                                                                       int num_shards) {
  auto opt = std::unique_ptr<StageOptimizer>(new StageOptimizer());
  opt->type_ = o.type().empty() ? "sgd" : o.type();
  // ir::CheckPlanStructure has validated the values (as torch.optim does); they are used
  // as written. Absent betas and eps are PyTorch's defaults.
  const double lr = o.lr();
  opt->momentum_ = o.momentum();
  opt->params_ = std::move(params);
  for (const auto& p : opt->params_) opt->numel_ += p.numel();
  if (num_shards < 1 || shard < 0 || shard >= num_shards) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer shard ", shard, " of ", num_shards));
  }
  opt->num_shards_ = num_shards;
  opt->flat_grads_ = flat_grads;
  opt->shard_size_ = flat_params.numel() / num_shards;
  if (flat_params.numel() != flat_grads.numel() || opt->shard_size_ * num_shards != flat_params.numel() ||
      opt->numel_ > flat_params.numel()) {
    return absl::InternalError(absl::StrCat("optimizer buffers of ", flat_params.numel(), " and ", flat_grads.numel(),
                                            " values for ", opt->numel_, " parameters in ", num_shards, " shards"));
  }
  if (num_shards > 1) {
    opt->begin_ = std::min(opt->numel_, shard * opt->shard_size_);
    opt->end_ = std::min(opt->numel_, opt->begin_ + opt->shard_size_);
    torch::NoGradGuard no_grad;
    opt->shard_ = flat_params.narrow(0, shard * opt->shard_size_, opt->shard_size_).detach();
    opt->shard_.set_requires_grad(true);
    opt->shard_.mutable_grad() = flat_grads.narrow(0, shard * opt->shard_size_, opt->shard_size_).detach();
  }
  std::vector<torch::Tensor> targets = opt->TargetsOf();
  if (opt->type_ == "sgd") {
    opt->optimizer_ = std::make_unique<torch::optim::SGD>(
        targets, torch::optim::SGDOptions(lr).momentum(o.momentum()).weight_decay(o.weight_decay()));
  } else if (opt->type_ == "adam" || opt->type_ == "adamw") {
    auto betas = std::make_tuple(o.has_beta1() ? o.beta1() : 0.9, o.has_beta2() ? o.beta2() : 0.999);
    const double eps = o.has_eps() ? o.eps() : 1e-8;
    if (opt->type_ == "adam") {
      opt->optimizer_ = std::make_unique<torch::optim::Adam>(
          targets, torch::optim::AdamOptions(lr).betas(betas).eps(eps).weight_decay(o.weight_decay()));
    } else {
      opt->optimizer_ = std::make_unique<torch::optim::AdamW>(
          targets, torch::optim::AdamWOptions(lr).betas(betas).eps(eps).weight_decay(o.weight_decay()));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown optimizer '", opt->type_, "' (sgd, adam or adamw)"));
  }
  return opt;
}

std::vector<torch::Tensor> StageOptimizer::TargetsOf() const {
  return sharded() ? std::vector<torch::Tensor>{shard_} : params_;
}

void StageOptimizer::Step() {
  optimizer_->step();
  torch::NoGradGuard no_grad;
  flat_grads_.zero_();  // every gradient, in one go: they are views of it
  ++steps_;
}

std::vector<std::string> StageOptimizer::StateNames() const {
  if (type_ == "adam" || type_ == "adamw") return {"exp_avg", "exp_avg_sq"};
  if (momentum_ != 0) return {"momentum_buffer"};
  return {};
}

torch::Tensor StageOptimizer::StateOf(const torch::Tensor& target, const std::string& name) const {
  auto it = optimizer_->state().find(Key(target));
  if (it == optimizer_->state().end()) return {};
  auto* st = it->second.get();
  if (type_ == "adam") {
    auto& a = static_cast<torch::optim::AdamParamState&>(*st);
    return name == "exp_avg" ? a.exp_avg() : a.exp_avg_sq();
  }
  if (type_ == "adamw") {
    auto& a = static_cast<torch::optim::AdamWParamState&>(*st);
    return name == "exp_avg" ? a.exp_avg() : a.exp_avg_sq();
  }
  return static_cast<torch::optim::SGDParamState&>(*st).momentum_buffer();
}

torch::Tensor StageOptimizer::LocalState(const std::string& name) const {
  torch::Tensor out = torch::zeros({sharded() ? shard_size_ : numel_}, flat_grads_.options());
  int64_t off = 0;
  for (const auto& t : TargetsOf()) {
    torch::Tensor s = StateOf(t, name);
    if (s.defined()) out.narrow(0, off, t.numel()).copy_(s.reshape({-1}));
    off += t.numel();
  }
  return out;
}

std::map<std::string, torch::Tensor> StageOptimizer::ParameterState(size_t i) const {
  std::map<std::string, torch::Tensor> out;
  for (const std::string& name : StateNames()) {
    torch::Tensor s = StateOf(params_[i], name);
    out[name] = s.defined() ? s : torch::zeros_like(params_[i]);
  }
  return out;
}

absl::Status StageOptimizer::SetState(const std::map<std::string, torch::Tensor>& full, int64_t steps) {
  for (const auto& [name, t] : full) {
    if (t.numel() != numel_) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state '", name, "' has ", t.numel(), " values for ", numel_, " parameters"));
    }
  }
  // Each target's values of a full vector.
  std::vector<std::pair<torch::Tensor, std::map<std::string, torch::Tensor>>> per_target;
  if (sharded()) {
    std::map<std::string, torch::Tensor> slice;
    for (const auto& [name, t] : full) {
      torch::Tensor s = torch::zeros({shard_size_}, flat_grads_.options());
      s.narrow(0, 0, end_ - begin_).copy_(t.narrow(0, begin_, end_ - begin_));
      slice[name] = s;
    }
    per_target.emplace_back(shard_, std::move(slice));
  } else {
    int64_t off = 0;
    for (const auto& p : params_) {
      std::map<std::string, torch::Tensor> mine;
      for (const auto& [name, t] : full) mine[name] = t.narrow(0, off, p.numel()).view(p.sizes()).to(p.device(), /*non_blocking=*/false, /*copy=*/true);
      per_target.emplace_back(p, std::move(mine));
      off += p.numel();
    }
  }
  auto& state = optimizer_->state();
  for (auto& [target, values] : per_target) {
    const std::string key = Key(target);
    state.erase(key);
    if (values.empty()) continue;
    auto get = [&](const char* name) -> torch::Tensor {
      auto it = values.find(name);
      return it == values.end() ? torch::zeros_like(target)
                                : it->second.view(target.sizes()).to(target.device(), /*non_blocking=*/false, /*copy=*/true);
    };
    if (type_ == "adam") {
      auto s = std::make_unique<torch::optim::AdamParamState>();
      s->step(steps);
      s->exp_avg(get("exp_avg"));
      s->exp_avg_sq(get("exp_avg_sq"));
      state[key] = std::move(s);
    } else if (type_ == "adamw") {
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(steps);
      s->exp_avg(get("exp_avg"));
      s->exp_avg_sq(get("exp_avg_sq"));
      state[key] = std::move(s);
    } else if (values.count("momentum_buffer")) {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(get("momentum_buffer"));
      state[key] = std::move(s);
    }
  }
  steps_ = steps;
  return absl::OkStatus();
}

int64_t StageOptimizer::StateBytes() const {
  int64_t bytes = 0;
  for (const auto& [key, st] : optimizer_->state()) {
    std::vector<torch::Tensor> ts;
    if (type_ == "adam") {
      auto& a = static_cast<const torch::optim::AdamParamState&>(*st);
      ts = {a.exp_avg(), a.exp_avg_sq(), a.max_exp_avg_sq()};
    } else if (type_ == "adamw") {
      auto& a = static_cast<const torch::optim::AdamWParamState&>(*st);
      ts = {a.exp_avg(), a.exp_avg_sq(), a.max_exp_avg_sq()};
    } else {
      ts = {static_cast<const torch::optim::SGDParamState&>(*st).momentum_buffer()};
    }
    for (const auto& t : ts)
      if (t.defined()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return bytes;
}

}  // namespace ppc::runtime
