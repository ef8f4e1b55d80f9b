#include "compiler/deepspeed_config.h"

#include <cmath>
#include <limits>
#include <set>

#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/limits.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"

namespace ppc {
namespace {

using nlohmann::json;

class Reader {
 public:
  Reader(std::string where, DeepSpeedConfig* out) : where_(std::move(where)), out_(out) {}

  absl::Status Bad(const std::string& key, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": '", key, "' ", what));
  }

  // An integer in [1, max] (read as int64, never truncated), or absent (0).
  absl::StatusOr<int64_t> PositiveInt(const json& obj, const std::string& key, const std::string& path,
                                      int64_t max = std::numeric_limits<int64_t>::max()) {
    if (!obj.contains(key) || obj[key].is_null()) return 0;
    const json& v = obj[key];
    if (!v.is_number_integer() ||
        (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))) {
      return Bad(path, absl::StrCat("must be an integer, got ", v.dump()));
    }
    int64_t n = v.get<int64_t>();
    if (n < 1 || n > max) return Bad(path, absl::StrCat("must be in [1, ", max, "], got ", n));
    return n;
  }

  // A finite number in [lo, hi) (or [lo, inf)), or `dflt` when absent.
  absl::StatusOr<double> Number(const json& obj, const std::string& key, const std::string& path, double dflt,
                                double lo = 0, double hi = INFINITY) {
    if (!obj.contains(key)) return dflt;
    const json& v = obj[key];
    if (!v.is_number()) return Bad(path, absl::StrCat("must be a number, got ", v.dump()));
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < lo || x >= hi) {
      return Bad(path, absl::StrCat("must be finite and in [", lo, ", ", hi, "), got ", v.dump()));
    }
    return x;
  }

  void Warn(const std::string& msg) { out_->warnings.push_back(absl::StrCat(where_, ": ", msg)); }

  void WarnUnknown(const json& obj, const std::set<std::string>& known, const std::string& prefix) {
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      if (!known.count(it.key())) Warn(absl::StrCat("unknown key '", prefix, it.key(), "' is ignored"));
    }
  }

 private:
  std::string where_;
  DeepSpeedConfig* out_;
};

}  // namespace

absl::StatusOr<DeepSpeedConfig> ParseDeepSpeedConfig(const std::string& text, int data_parallel,
                                                     const std::string& where) {
  DeepSpeedConfig out;
  Reader r(where, &out);
  json root;
  // A key given twice in one object: JSON parsers keep one of them silently (nlohmann the
  // last, Python's json the last); which one was meant is anyone's guess, so it is an error.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  json::parser_callback_t note_keys = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys.emplace_back();
    if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (event == json::parse_event_t::key && !keys.empty() && parsed.is_string() &&
        !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  try {
    root = json::parse(text, note_keys);
  } catch (const json::exception& e) {  // syntax errors, and numbers out of range (1e309)
    return absl::InvalidArgumentError(absl::StrCat(where, ": not valid JSON: ", e.what()));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": key '", duplicate, "' is given twice in one object"));
  }
  if (!root.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": the config must be a JSON object"));
  if (data_parallel < 1) return absl::InvalidArgumentError("data-parallel degree must be >= 1");

  ASSIGN_OR_RETURN(int64_t tbs, r.PositiveInt(root, "train_batch_size", "train_batch_size",
                                              ir::kMaxMicroBatchSize * ir::kMaxMicroBatches * ir::kMaxDataParallel));
  ASSIGN_OR_RETURN(int64_t mbs, r.PositiveInt(root, "train_micro_batch_size_per_gpu", "train_micro_batch_size_per_gpu",
                                              ir::kMaxMicroBatchSize));
  ASSIGN_OR_RETURN(int64_t gas, r.PositiveInt(root, "gradient_accumulation_steps", "gradient_accumulation_steps",
                                              ir::kMaxMicroBatches));
  const int64_t d = data_parallel;
  auto divide = [&](int64_t num, int64_t den, const std::string& key) -> absl::StatusOr<int64_t> {
    if (num % den != 0) {
      return r.Bad(key, absl::StrCat("cannot be derived: train_batch_size ", tbs, " is not divisible by ", den,
                                     " (the other batch settings x ", d, " data-parallel replicas)"));
    }
    return num / den;
  };
  if (tbs && mbs && gas) {
    if (tbs != mbs * gas * d) {
      return r.Bad("train_batch_size",
                   absl::StrCat("is ", tbs, " but train_micro_batch_size_per_gpu * gradient_accumulation_steps * "
                                "data-parallel = ", mbs, " * ", gas, " * ", d, " = ", mbs * gas * d));
    }
  } else if (tbs && mbs) {
    ASSIGN_OR_RETURN(gas, divide(tbs, mbs * d, "gradient_accumulation_steps"));
  } else if (tbs && gas) {
    ASSIGN_OR_RETURN(mbs, divide(tbs, gas * d, "train_micro_batch_size_per_gpu"));
  } else if (mbs && gas) {
    tbs = mbs * gas * d;
  } else if (tbs) {
    gas = 1;
    ASSIGN_OR_RETURN(mbs, divide(tbs, d, "train_micro_batch_size_per_gpu"));
  } else if (mbs) {
    gas = 1;
    tbs = mbs * d;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": either train_batch_size or train_micro_batch_size_per_gpu must be given"));
  }
  if (mbs > ir::kMaxMicroBatchSize) {
    return r.Bad("train_micro_batch_size_per_gpu", absl::StrCat("comes out at ", mbs, ", more than ", ir::kMaxMicroBatchSize));
  }
  if (gas > ir::kMaxMicroBatches) {
    return r.Bad("gradient_accumulation_steps", absl::StrCat("comes out at ", gas, ", more than ", ir::kMaxMicroBatches,
                                                             " micro-batches per step"));
  }
  out.train_batch_size = tbs;
  out.config.set_micro_batch_size(static_cast<int>(mbs));
  out.config.set_micro_batches(static_cast<int>(gas));

  if (root.contains("steps_per_print")) {
    ASSIGN_OR_RETURN(int64_t spp, r.PositiveInt(root, "steps_per_print", "steps_per_print"));
    out.config.set_steps_per_print(static_cast<int>(spp));
  } else {
    out.config.set_steps_per_print(10);  // DeepSpeed's default
  }
  ASSIGN_OR_RETURN(double clip, r.Number(root, "gradient_clipping", "gradient_clipping", 0));
  if (clip < 0) return r.Bad("gradient_clipping", "must be >= 0");
  out.config.set_gradient_clipping(clip);

  auto* opt = out.config.mutable_optimizer();
  opt->set_type("sgd");
  opt->set_lr(0.001);  // DeepSpeed's default learning rate
  if (root.contains("optimizer")) {
    const json& o = root["optimizer"];
    if (!o.is_object()) return r.Bad("optimizer", "must be an object");
    r.WarnUnknown(o, {"type", "params"}, "optimizer.");
    if (!o.contains("type") || !o["type"].is_string()) return r.Bad("optimizer.type", "must be a string");
    std::string type = absl::AsciiStrToLower(o["type"].get<std::string>());
    if (type != "adam" && type != "adamw" && type != "sgd") {
      return r.Bad("optimizer.type", absl::StrCat("'", o["type"].get<std::string>(),
                                                  "' is not supported; use Adam, AdamW or SGD"));
    }
    opt->set_type(type);
    if (o.contains("params")) {
      const json& p = o["params"];
      if (!p.is_object()) return r.Bad("optimizer.params", "must be an object");
      r.WarnUnknown(p, {"lr", "betas", "eps", "weight_decay", "momentum"}, "optimizer.params.");
      // As torch.optim validates them; what is absent keeps PyTorch's default.
      ASSIGN_OR_RETURN(double lr, r.Number(p, "lr", "optimizer.params.lr", 0.001));
      opt->set_lr(lr);
      if (p.contains("eps")) {
        ASSIGN_OR_RETURN(double eps, r.Number(p, "eps", "optimizer.params.eps", 0));
        opt->set_eps(eps);
      }
      ASSIGN_OR_RETURN(double wd, r.Number(p, "weight_decay", "optimizer.params.weight_decay", 0));
      opt->set_weight_decay(wd);
      ASSIGN_OR_RETURN(double momentum, r.Number(p, "momentum", "optimizer.params.momentum", 0));
      opt->set_momentum(momentum);
      if (p.contains("betas")) {
        const json& b = p["betas"];
        if (!b.is_array() || b.size() != 2 || !b[0].is_number() || !b[1].is_number()) {
          return r.Bad("optimizer.params.betas", absl::StrCat("must be a list of two numbers, got ", b.dump()));
        }
        for (int k = 0; k < 2; ++k) {
          const double beta = b[k].get<double>();
          if (!(beta >= 0 && beta < 1)) {
            return r.Bad("optimizer.params.betas", absl::StrCat("must be in [0, 1), got ", b.dump()));
          }
        }
        opt->set_beta1(b[0].get<double>());
        opt->set_beta2(b[1].get<double>());
      }
      if (type == "sgd" && p.contains("betas")) r.Warn("optimizer.params.betas is ignored by SGD");
      if (type != "sgd" && p.contains("momentum")) r.Warn("optimizer.params.momentum is ignored by Adam/AdamW");
    }
  }
  if (root.contains("pipeline")) {
    const json& p = root["pipeline"];
    if (!p.is_object()) return r.Bad("pipeline", "must be an object");
    r.WarnUnknown(p, {"activation_checkpoint_interval", "partition_method"}, "pipeline.");
    if (p.contains("activation_checkpoint_interval")) {
      const json& v = p["activation_checkpoint_interval"];
      if (!v.is_number_integer() || v.get<int64_t>() < 0) {
        return r.Bad("pipeline.activation_checkpoint_interval", absl::StrCat("must be an integer >= 0, got ", v.dump()));
      }
      out.config.set_activation_checkpoint_interval(static_cast<int>(v.get<int64_t>()));
    }
    if (p.contains("partition_method")) {
      if (!p["partition_method"].is_string()) return r.Bad("pipeline.partition_method", "must be a string");
      out.config.set_partition_method(p["partition_method"].get<std::string>());
    }
  }
  if (root.contains("zero_optimization")) {
    const json& z = root["zero_optimization"];
    if (!z.is_object()) return r.Bad("zero_optimization", "must be an object");
    r.WarnUnknown(z, {"stage"}, "zero_optimization.");
    if (z.contains("stage")) {
      const json& v = z["stage"];
      if (!v.is_number_integer()) return r.Bad("zero_optimization.stage", absl::StrCat("must be an integer, got ", v.dump()));
      const int64_t stage = v.get<int64_t>();
      if (stage == 2 || stage == 3) {
        return r.Bad("zero_optimization.stage",
                     absl::StrCat(stage, " is not supported with pipeline parallelism (DeepSpeed's pipeline engine "
                                         "refuses it too); use 0, or 1 to shard optimizer state"));
      }
      if (stage != 0 && stage != 1) return r.Bad("zero_optimization.stage", absl::StrCat("must be 0 or 1, got ", stage));
      out.config.set_zero_stage(static_cast<int>(stage));
    }
  }
  if (root.contains("wall_clock_breakdown") && !root["wall_clock_breakdown"].is_boolean()) {
    return r.Bad("wall_clock_breakdown", "must be a boolean");
  }
  r.WarnUnknown(root,
                {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "steps_per_print",
                 "optimizer", "gradient_clipping", "pipeline", "wall_clock_breakdown", "zero_optimization"},
                "");
  return out;
}

absl::StatusOr<DeepSpeedConfig> ReadDeepSpeedConfig(const std::string& path, int data_parallel) {
  ASSIGN_OR_RETURN(std::string text, ir::ReadFile(path));
  return ParseDeepSpeedConfig(text, data_parallel, path);
}

}  // namespace ppc
