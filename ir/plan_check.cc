#include "ir/plan_check.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/instruction_text.h"
#include "ir/error_list.h"
#include "ir/layer_shapes.h"
#include "ir/limits.h"
#include "ir/parallel.h"
#include "ir/topology.h"

namespace ppc::ir {

bool IsVSchedule(const std::string& schedule) { return schedule == "zb-v" || schedule == "dualpipev"; }

namespace {

bool KebabCase(const std::string& s) {
  if (s.empty() || s.size() > 64 || s.front() == '-' || s.back() == '-') return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}


bool SameGroup(const google::protobuf::RepeatedPtrField<TensorSpec>& a, const std::vector<TensorSpec>& b) {
  if (a.size() != static_cast<int>(b.size())) return false;
  for (int i = 0; i < a.size(); ++i) {
    if (a.Get(i).SerializeAsString() != b[i].SerializeAsString()) return false;
  }
  return true;
}

bool SameGroup(const google::protobuf::RepeatedPtrField<TensorSpec>& a,
               const google::protobuf::RepeatedPtrField<TensorSpec>& b) {
  return SameGroup(a, std::vector<TensorSpec>(b.begin(), b.end()));
}

template <typename Group>
std::string GroupString(const Group& group) {
  std::vector<std::string> parts;
  for (const TensorSpec& t : group) parts.push_back(absl::StrCat(t.name(), ":", ShapeString(t)));
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

bool Trains(const std::vector<Program>& programs) {
  for (const Program& prog : programs) {
    for (const Op& op : prog.ops) {
      if (op.is(OpCode::kOptimizerStep) || (op.is(OpCode::kCompute) && op.kind != FORWARD)) return true;
    }
  }
  return false;
}

// `plan_` is the header (its programs fields unused); `programs_` and `eval_programs_`
// the programs. With `only_stage` >= 0, only that stage's programs are checked (the
// others may be placeholders holding their stage number alone) and `trains` says
// whether the whole plan trains.
class Checker {
 public:
  Checker(const Plan& header, const std::vector<Program>& programs, const std::vector<Program>& eval_programs,
          bool complete, int only_stage, bool trains, bool check_programs = true, bool check_eval_programs = true)
      : check_programs_(check_programs),
        check_eval_programs_(check_eval_programs),
        plan_(header),
        programs_(programs),
        eval_programs_(eval_programs),
        complete_(complete),
        only_stage_(only_stage),
        trains_(trains) {}

  absl::Status Run() {
    if (plan_.programs_size() > 0 || plan_.eval_programs_size() > 0) {
      return absl::InternalError("a module's header holds programs; they belong in Module::programs");
    }
    CheckTopology();
    CheckConfig();
    if (errors_.empty()) CheckModel();
    if (errors_.empty()) CheckPlacement();
    if (errors_.empty()) CheckBoundaries();
    if (errors_.empty()) CheckLevel();
    if (errors_.empty()) {
      if (check_programs_) CheckPrograms(programs_, "");
      if (check_eval_programs_) CheckPrograms(eval_programs_, "eval ");
    }
    return errors_.ToStatus();
  }

 private:
  void Error(std::string msg) { errors_.Add(std::move(msg)); }

  bool InRange(const std::string& field, int64_t v, int64_t lo, int64_t hi) { return InRange(errors_, field, v, lo, hi); }
  static bool InRange(ErrorList& errors, const std::string& field, int64_t v, int64_t lo, int64_t hi) {
    if (v >= lo && v <= hi) return true;
    errors.Add(absl::StrCat(field, " is ", v, "; it must be in [", lo, ", ", hi, "]"));
    return false;
  }

  // finite and >= lo (and < hi when given).
  void Real(const std::string& field, double v, double lo, double hi = INFINITY, bool hi_open = true) {
    if (std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi)) return;
    Error(absl::StrCat(field, " is ", v, "; it must be finite and in [", lo, ", ", hi, hi_open ? ")" : "]"));
  }

  void CheckTopology() {
    const auto& t = plan_.topology();
    const bool p_ok = InRange("topology.num_stages", t.num_stages(), 1, kMaxStages);
    const bool d_ok = InRange("topology.data_parallel", t.data_parallel(), 1, kMaxDataParallel);
    if (p_ok && d_ok) InRange("ranks (num_stages x data_parallel)", int64_t{t.num_stages()} * t.data_parallel(), 1, kMaxRanks);
  }

  void CheckConfig() {
    const auto& c = plan_.config();
    InRange("config.micro_batches", c.micro_batches(), 1, kMaxMicroBatches);
    InRange("config.micro_batch_size", c.micro_batch_size(), 1, kMaxMicroBatchSize);
    // 0 in a spec means "not given" (ppc fills it); a complete plan says how many steps it runs.
    InRange("config.steps", c.steps(), complete_ ? 1 : 0, std::numeric_limits<int32_t>::max());
    InRange("config.steps_per_print", c.steps_per_print(), 0, std::numeric_limits<int32_t>::max());
    InRange("config.activation_checkpoint_interval", c.activation_checkpoint_interval(), 0, kMaxLayers);
    InRange("config.zero_stage", c.zero_stage(), 0, 1);
    InRange("config.virtual_stages", c.virtual_stages(), 0, kMaxChunks);
    Real("config.gradient_clipping", c.gradient_clipping(), 0);
    if (c.schedule().empty()) {
      if (complete_) {
        Error(absl::StrCat("config.schedule is missing; it must be one of ", absl::StrJoin(kSchedules, ", ")));
      }
    } else if (!KebabCase(c.schedule())) {
      Error(absl::StrCat("config.schedule '", c.schedule(),
                         "' is not a schedule name (kebab-case, e.g. one of the built-in ", absl::StrJoin(kSchedules, ", "),
                         ")"));
    }
    const auto& o = c.optimizer();
    if (o.type() != "" && o.type() != "sgd" && o.type() != "adam" && o.type() != "adamw") {
      Error(absl::StrCat("config.optimizer.type '", o.type(), "' is not one of sgd, adam, adamw"));
    }
    if (o.has_lr()) Real("config.optimizer.lr", o.lr(), 0);
    Real("config.optimizer.momentum", o.momentum(), 0);
    Real("config.optimizer.weight_decay", o.weight_decay(), 0);
    if (o.has_beta1()) Real("config.optimizer.beta1", o.beta1(), 0, 1);
    if (o.has_beta2()) Real("config.optimizer.beta2", o.beta2(), 0, 1);
    if (o.has_eps()) Real("config.optimizer.eps", o.eps(), 0);
    const bool trains = trains_;
    if (trains && o.type().empty()) Error("config.optimizer.type is missing; a training plan needs sgd, adam or adamw");
    if (trains && !o.has_lr()) Error("config.optimizer.lr is missing; a training plan needs a learning rate");
  }

  void CheckModel() {
    const ModelSpec& m = plan_.model();
    if (!InRange("model.layers (count)", m.layers_size(), 1, kMaxLayers)) return;
    absl::Status input = CheckTensorSpec(m.input(), "model.input");
    if (!input.ok()) {
      Error(std::string(input.message()));
      return;
    }
    if (m.loss() != CROSS_ENTROPY && m.loss() != MSE) {
      Error(absl::StrCat("model.loss is ", LossKind_Name(m.loss()), "; it must be CROSS_ENTROPY or MSE"));
    }
    if (m.loss() == CROSS_ENTROPY) InRange("model.num_classes", m.num_classes(), 2, kMaxDim);
    std::vector<TensorSpec> current{m.input()};
    current[0].set_name("input");
    int64_t total = 0;
    bool all_recorded = true;
    std::map<std::string, std::pair<int, std::vector<int64_t>>> ties;  // key -> first layer, weight shape
    const int64_t mbs = std::max(1, plan_.config().micro_batch_size());
    std::map<std::string, int> names;  // name -> first layer
    for (int l = 0; l < m.layers_size(); ++l) {
      const LayerSpec& layer = m.layers(l);
      // Checkpoints and exports key parameters by layer name.
      if (layer.name().empty()) {
        Error(absl::StrCat("model layer ", l, " (", layer.kind(), "): name is empty; every layer needs a unique name"));
      } else if (auto [it, first] = names.emplace(layer.name(), l); !first) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "': name is also layer ", it->second,
                           "'s; layer names must be unique"));
      }
      auto info = InferGroup(layer, current);
      if (!info.ok()) {
        Error(absl::StrCat("model layer ", l, ": ", info.status().message()));
        return;  // the rest depends on this layer's output
      }
      const bool recorded = layer.outputs_size() > 0;
      all_recorded &= recorded;
      if (recorded && !SameGroup(layer.outputs(), info->outputs)) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "': recorded outputs ", GroupString(layer.outputs()),
                           " are not what its input and attributes give, ", GroupString(info->outputs)));
      } else if (!recorded && complete_) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "' has no inferred shape; compile the plan with ppc"));
      }
      if ((layer.param_count() != 0 || complete_) && layer.param_count() != info->param_count) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "': param_count ", layer.param_count(),
                           " is not the layer's ", info->param_count));
      }
      for (const TensorSpec& out : info->outputs) {
        int64_t batch;
        if (!CheckedMul(NumElements(out), mbs, &batch) || batch > kMaxTensorElements) {
          Error(absl::StrCat("model layer ", l, " '", layer.name(), "': a micro-batch of ", mbs, " x ",
                             ShapeString(out), " is more than ", kMaxTensorElements, " elements"));
        }
      }
      if (!CheckedAdd(total, info->param_count, &total) || total > kMaxParameters) {
        Error(absl::StrCat("the model has more than ", kMaxParameters, " parameters (at layer ", l, ")"));
        return;
      }
      if (!layer.tie_key().empty()) {
        if (info->weight_shape.empty()) {
          Error(absl::StrCat("model layer ", l, " '", layer.name(), "' is tied ('", layer.tie_key(),
                             "') but has no weight"));
        } else {
          auto [it, first] = ties.emplace(layer.tie_key(), std::make_pair(l, info->weight_shape));
          if (!first && it->second.second != info->weight_shape) {
            Error(absl::StrCat("model layer ", l, " '", layer.name(), "': weight [",
                               absl::StrJoin(info->weight_shape, ","), "] cannot be tied ('", layer.tie_key(),
                               "') to layer ", it->second.first, "'s [", absl::StrJoin(it->second.second, ","), "]"));
          }
        }
      }
      current = info->outputs;
    }
    if (current.size() != 1) {
      Error(absl::StrCat("the model's last layer leaves ", current.size(),
                         " tensors; the loss takes one (every Fork needs its Add)"));
      return;
    }
    if (m.loss() == CROSS_ENTROPY && current[0].shape_size() > 0 &&
        current[0].shape(current[0].shape_size() - 1) != m.num_classes()) {
      Error(absl::StrCat("model.num_classes is ", m.num_classes(), " but the last layer gives ",
                         ShapeString(current[0]), " (one score per class in the last dimension)"));
    }
    CheckLabel(m, current[0]);
    inferred_ = all_recorded;  // the recorded shapes are usable for boundary checks
  }

  // The labels the loss compares the model's output with: CROSS_ENTROPY takes a class
  // index (INT64) per score vector, so the label's shape is the output's without its last
  // dimension; MSE takes a FLOAT32 target of the output's shape (or no label spec: the
  // targets then take the output's shape).
  void CheckLabel(const ModelSpec& m, const TensorSpec& output) {
    const TensorSpec& label = m.label();
    std::vector<int64_t> want(output.shape().begin(), output.shape().end());
    ir::DType want_dtype = FLOAT32;
    if (m.loss() == CROSS_ENTROPY) {
      if (want.empty()) return;  // reported above (no class dimension)
      want.pop_back();
      want_dtype = INT64;
    } else if (m.loss() != MSE || !m.has_label()) {
      return;
    }
    const std::vector<int64_t> got(label.shape().begin(), label.shape().end());
    if (!m.has_label() || label.dtype() != want_dtype || got != want) {
      TensorSpec expected;
      for (int64_t d : want) expected.add_shape(d);
      expected.set_dtype(want_dtype);
      Error(absl::StrCat("model.label is ", m.has_label() ? ShapeString(label) : "missing", " but ",
                         LossKind_Name(m.loss()), " on the last layer's output ", ShapeString(output), " needs ",
                         ShapeString(expected),
                         m.loss() == CROSS_ENTROPY ? " (one class index per score vector)" : " (the output's shape)"));
    }
  }

  void CheckPlacement() {
    const auto& pl = plan_.placement();
    const int want_chunks = std::max(1, plan_.config().virtual_stages());
    if (pl.virtual_stages_size() == 0) {
      // Programs are written for a placement: they may not come without one.
      if (complete_ || !programs_.empty()) Error("the plan has no placement; compile it with ppc");
      return;
    }
    if (pl.chunks_per_stage() != want_chunks) {
      Error(absl::StrCat("placement.chunks_per_stage is ", pl.chunks_per_stage(), " but config.virtual_stages gives ",
                         want_chunks));
      return;
    }
    auto grid = Grid::Of(plan_);
    if (!grid.ok()) {
      Error(std::string(grid.status().message()));
      return;
    }
    const int n = plan_.model().layers_size();
    int expect = 0;
    for (int v = 0; v < pl.virtual_stages_size(); ++v) {
      const auto& r = pl.virtual_stages(v);
      if (r.begin() != expect || r.end() <= r.begin() || r.end() > n) {
        Error(absl::StrCat("placement virtual stage ", v, " is layers [", r.begin(), ", ", r.end(),
                           "); expected a non-empty range starting at ", expect, " within [0, ", n, ")"));
        return;
      }
      expect = r.end();
    }
    if (expect != n) {
      Error(absl::StrCat("placement covers layers [0, ", expect, ") of ", n));
      return;
    }
    grid_ = *grid;
  }

  // The output group of virtual stage b's last layer is what crosses boundary b.
  void CheckBoundaries() {
    if (!grid_) {
      if (plan_.boundaries_size() > 0) Error("the plan has a boundary table but no placement");
      return;
    }
    const int want = grid_->boundaries();
    if (plan_.boundaries_size() == 0 && !complete_ && programs_.empty()) return;
    if (plan_.boundaries_size() != want) {
      Error(absl::StrCat("the boundary table has ", plan_.boundaries_size(), " boundaries; ",
                         grid_->virtual_stages(), " virtual stages need ", want));
      return;
    }
    if (!inferred_) return;
    for (int b = 0; b < want; ++b) {
      const auto& produced = plan_.model().layers(plan_.placement().virtual_stages(b).end() - 1).outputs();
      if (!SameGroup(plan_.boundaries(b).tensors(), produced)) {
        Error(absl::StrCat("boundary ", b, " lists ", GroupString(plan_.boundaries(b).tensors()),
                           " but virtual stage ", b, " produces ", GroupString(produced)));
      }
    }
    bounded_ = errors_.empty();
    if (bounded_) {
      differentiable_.assign(want, false);
      for (int b = 0; b < want; ++b) {
        for (const auto& t : plan_.boundaries(b).tensors()) differentiable_[b] = differentiable_[b] || t.dtype() == FLOAT32;
      }
    }
  }

  void CheckLevel() {
    const PlanLevel level = plan_.level();
    if (!PlanLevel_IsValid(level)) {
      Error(absl::StrCat("plan level ", static_cast<int>(level), " is not a level"));
      return;
    }
    if (programs_.empty() && level != LEVEL_NONE) {
      Error(absl::StrCat("plan level is ", PlanLevel_Name(level), " but the plan has no programs"));
    } else if (!programs_.empty() && level == LEVEL_NONE) {
      Error("the plan has programs but level LEVEL_NONE");
    } else if (complete_ && level != LOWERED) {
      Error(absl::StrCat("plan level is ", PlanLevel_Name(level), "; a runnable plan is LOWERED (compile it with ppc)"));
    }
  }

  static std::string Where(const std::string& kind, int s, int i, const Program& prog) {
    return absl::StrCat(kind, "stage ", s, " instruction ", i, " (", PrintOp(prog, i), ")");
  }

  // A transfer across `boundary` posted on stage s: the right end of the boundary is here,
  // the other end on another stage.
  template <typename Where>
  void CheckTransfer(const Where& where, bool send, Direction direction, int boundary, int s, ErrorList& errors) const {
    if (direction != ACTIVATION && direction != GRADIENT) {
      errors.Add(absl::StrCat(where(), ": direction must be ACTIVATION or GRADIENT"));
      return;
    }
    if (!grid_) return;
    if (boundary < 0 || boundary >= grid_->boundaries()) {
      errors.Add(absl::StrCat(where(), ": boundary ", boundary, " is out of range [0, ", grid_->boundaries(), ")"));
      return;
    }
    const int here = send ? grid_->SenderOf(direction, boundary) : grid_->ReceiverOf(direction, boundary);
    if (grid_->StageOf(here) != s) {
      errors.Add(absl::StrCat(where(), ": virtual stage ", here, " ", send ? "sends" : "receives",
                              " this transfer, and it runs on stage ", grid_->StageOf(here), ", not ", s));
    }
    if (direction == GRADIENT && bounded_ && !differentiable_[boundary]) {
      errors.Add(absl::StrCat(where(), ": boundary ", boundary, " has no FLOAT32 tensor to carry a gradient"));
    }
  }

  void CheckPrograms(const std::vector<Program>& programs, const std::string& kind) {
    const int p = plan_.topology().num_stages();
    if (programs.empty()) {
      if (complete_ && kind.empty()) Error("the plan has no programs; compile it with ppc");
      return;
    }
    if (static_cast<int>(programs.size()) != p) {
      Error(absl::StrCat("plan has ", programs.size(), " ", kind, "programs for ", p, " stages"));
      return;
    }
    std::vector<ErrorList> stage_errors(p);
    ParallelFor(p, [&](int s) {
      if (only_stage_ >= 0 && s != only_stage_) return;
      CheckStageProgram(programs[s], s, kind, stage_errors[s]);
    });
    for (const ErrorList& e : stage_errors) errors_.Merge(e);
  }

  // One stage's program (CheckPrograms has checked the programs' count); on several
  // threads at once for different stages, so it reports into `errors` alone.
  void CheckStageProgram(const Program& prog, int s, const std::string& kind, ErrorList& errors) const {
    const int p = plan_.topology().num_stages();
    const int m = plan_.config().micro_batches();
    const bool sharded = plan_.config().zero_stage() == 1 && plan_.topology().data_parallel() > 1;
    const int vlast = grid_ ? grid_->virtual_stages() - 1 : 0;
    const int64_t max_slots = std::max<int64_t>(1, int64_t{m} * (grid_ ? grid_->chunks() : 1));
    if (prog.stage != s) errors.Add(absl::StrCat(kind, "program ", s, " says it is stage ", prog.stage));
    const int slots = prog.num_slots;
    const bool buffered = plan_.level() >= BUFFERED;
    if (!InRange(errors, absl::StrCat(kind, "stage ", s, " num_slots"), slots, buffered ? 1 : 0, buffered ? max_slots : 0)) {
      return;
    }
    if (!InRange(errors, absl::StrCat(kind, "stage ", s, " instruction count"), prog.size(), 0, kMaxInstructions)) {
      return;
    }
    const int slot_limit = std::max(slots, 1);
    for (int i = 0; i < prog.size(); ++i) {
      const Op& op = prog.ops[i];
      if (op.is(OpCode::kNone)) {
        errors.Add(absl::StrCat(kind, "stage ", s, " instruction ", i, " is empty"));
        continue;
      }
      // Built only when an error is reported: formatting every instruction dominates otherwise.
      auto where = [&] { return Where(kind, s, i, prog); };
      const bool data_op = op.is(OpCode::kLoadMicroBatch) || op.is(OpCode::kCompute) || op.is_transfer();
      if (data_op && (op.micro_batch < 0 || op.micro_batch >= m)) {
        errors.Add(absl::StrCat(where(), ": micro-batch ", op.micro_batch, " is out of range [0, ", m, ")"));
      }
      if (data_op && (op.slot < 0 || op.slot >= slot_limit)) {
        errors.Add(absl::StrCat(where(), ": slot ", op.slot, " is out of range [0, ", slot_limit, ")"));
      }
      if (!op.is(OpCode::kCompute) && plan_.level() < LOWERED) {
        errors.Add(absl::StrCat(where(), ": a ", PlanLevel_Name(plan_.level()), " plan holds compute ops only"));
      }
      auto training_only = [&] {
        if (!kind.empty()) errors.Add(absl::StrCat(where(), ": an eval program must be forward-only"));
      };
      switch (op.code) {
        case OpCode::kLoadMicroBatch: {
          if (!op.inputs() && !op.labels()) errors.Add(absl::StrCat(where(), ": loads neither inputs nor labels"));
          if (grid_ && op.inputs() && grid_->StageOf(0) != s) {
            errors.Add(absl::StrCat(where(), ": inputs belong to virtual stage 0 on stage ", grid_->StageOf(0)));
          }
          if (grid_ && op.labels() && grid_->StageOf(vlast) != s) {
            errors.Add(absl::StrCat(where(), ": labels belong to the last virtual stage, on stage ", grid_->StageOf(vlast)));
          }
          break;
        }
        case OpCode::kCompute: {
          if (op.kind < FORWARD || op.kind > BACKWARD_WEIGHT) {
            errors.Add(absl::StrCat(where(), ": kind must be FORWARD, BACKWARD, BACKWARD_INPUT or BACKWARD_WEIGHT"));
          } else if (op.kind != FORWARD) {
            training_only();
          }
          if (op.deferred() && op.kind != BACKWARD_WEIGHT) {
            errors.Add(absl::StrCat(where(), ": only a BACKWARD_WEIGHT may be deferred"));
          }
          if (grid_) {
            const int v = op.virtual_stage();
            if (v < 0 || v > vlast) {
              errors.Add(absl::StrCat(where(), ": virtual stage ", v, " is out of range [0, ", vlast + 1, ")"));
            } else if (grid_->StageOf(v) != s) {
              errors.Add(absl::StrCat(where(), ": virtual stage ", v, " runs on stage ", grid_->StageOf(v), ", not ", s));
            }
          }
          break;
        }
        case OpCode::kSend:
        case OpCode::kRecv:
          CheckTransfer(where, op.is(OpCode::kSend), op.direction(), op.boundary(), s, errors);
          if (op.direction() == GRADIENT) training_only();
          break;
        case OpCode::kWait:
          if (op.micro_batch == 0) errors.Add(absl::StrCat(where(), ": waits for nothing"));
          for (const Ref& ref : prog.RefsOf(op)) {
            if ((ref.direction != ACTIVATION && ref.direction != GRADIENT) || ref.micro_batch < 0 ||
                ref.micro_batch >= m || ref.boundary < 0 || (grid_ && ref.boundary >= grid_->boundaries())) {
              errors.Add(absl::StrCat(where(), ": waits for a transfer that cannot exist (", RefText(ref), ")"));
            }
          }
          break;
        case OpCode::kReduceTiedGrads: {
          const auto& r = prog.CollectiveOf(op).reduce_tied_grads();
          std::set<int> holders;
          if (grid_) {
            for (int v = 0; v <= vlast; ++v) {
              const auto& vs = plan_.placement().virtual_stages(v);
              for (int l = vs.begin(); l < vs.end(); ++l)
                if (plan_.model().layers(l).tie_key() == r.tie_key()) holders.insert(grid_->StageOf(v));
            }
          }
          const std::set<int> listed(r.stages().begin(), r.stages().end());
          if (r.tie_key().empty() || (grid_ && (holders != listed || !listed.count(s))) ||
              static_cast<int>(listed.size()) != r.stages_size()) {
            errors.Add(absl::StrCat(where(), ": tie '", r.tie_key(), "' is held by stages [", absl::StrJoin(holders, ","),
                               "], instruction lists [", absl::StrJoin(r.stages(), ","), "]"));
          }
          training_only();
          break;
        }
        case OpCode::kReduceGrads:
          training_only();
          break;
        case OpCode::kClipGradNorm: {
          const auto& c = prog.CollectiveOf(op).clip_grad_norm();
          std::set<int> listed(c.stages().begin(), c.stages().end());
          if (static_cast<int>(listed.size()) != p || c.stages_size() != p || *listed.begin() != 0 ||
              *listed.rbegin() != p - 1) {
            errors.Add(absl::StrCat(where(), ": must list every stage 0..", p - 1, " exactly once"));
          }
          if (!(std::isfinite(c.max_norm()) && c.max_norm() > 0)) {
            errors.Add(absl::StrCat(where(), ": max_norm must be finite and > 0"));
          }
          training_only();
          break;
        }
        case OpCode::kOptimizerStep:
          if (op.sharded() != sharded) {
            errors.Add(absl::StrCat(where(), sharded ? ": must be sharded (config.zero_stage 1 with data_parallel > 1)"
                                              : ": is sharded but config.zero_stage is 0 or data_parallel is 1"));
          }
          training_only();
          break;
        case OpCode::kGatherParams:
          if (!sharded) errors.Add(absl::StrCat(where(), ": gathers parameters but the plan's optimizer is not sharded"));
          training_only();
          break;
        case OpCode::kNone:
          break;
      }
      if (errors.full()) return;
    }
  }

  const bool check_programs_, check_eval_programs_;
  const Plan& plan_;
  const std::vector<Program>& programs_;
  const std::vector<Program>& eval_programs_;
  const bool complete_;
  const int only_stage_;  // >= 0: check that stage's programs only
  const bool trains_;
  bool inferred_ = false;
  bool bounded_ = false;  // the boundary table matches the model
  std::vector<bool> differentiable_;  // when bounded_: boundary b has a FLOAT32 tensor
  std::optional<Grid> grid_;  // set once the placement is valid
  ErrorList errors_;
};

}  // namespace

absl::Status CheckPlanStructure(const Module& module, bool complete, bool check_programs, bool check_eval_programs) {
  return Checker(module.header, module.programs, module.eval_programs, complete, -1, Trains(module.programs),
                 check_programs, check_eval_programs)
      .Run();
}

absl::Status CheckPlanStructure(const Plan& plan, bool complete) { return CheckPlanStructure(ToModule(plan), complete); }

absl::Status CheckStageStructure(const Plan& plan, int stage) {
  const int p = plan.topology().num_stages();
  if (stage < 0 || stage >= std::max(p, 1)) {
    return absl::InvalidArgumentError(absl::StrCat("stage ", stage, " is out of range (", p, " stages)"));
  }
  // Only this stage's programs are converted and checked; the others are placeholders.
  auto own = [stage](const google::protobuf::RepeatedPtrField<StageProgram>& from) {
    std::vector<Program> out(from.size());
    for (int s = 0; s < from.size(); ++s) {
      if (s == stage) {
        out[s] = ToProgram(from.Get(s));
      } else {
        out[s].stage = from.Get(s).stage();
      }
    }
    return out;
  };
  bool trains = false;
  for (const StageProgram& prog : plan.programs()) {
    for (const Instruction& in : prog.instructions()) {
      trains |= in.has_optimizer_step() || (in.has_compute() && in.compute().kind() != FORWARD);
    }
  }
  const Plan header = PlanHeader(plan);
  return Checker(header, own(plan.programs()), own(plan.eval_programs()), /*complete=*/true, stage, trains).Run();
}

}  // namespace ppc::ir
