#include "ir/plan_check.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/instruction_text.h"
#include "ir/error_list.h"
#include "ir/layer_shapes.h"
#include "ir/limits.h"

namespace ppc::ir {
namespace {


class Checker {
 public:
  Checker(const Plan& plan, bool complete) : plan_(plan), complete_(complete) {}

  absl::Status Run() {
    CheckTopology();
    CheckConfig();
    if (errors_.empty()) CheckModel();
    if (errors_.empty()) CheckPartition();
    if (errors_.empty()) {
      CheckPrograms(plan_.programs(), "");
      CheckPrograms(plan_.eval_programs(), "eval ");
    }
    return errors_.ToStatus();
  }

 private:
  void Error(std::string msg) { errors_.Add(std::move(msg)); }

  bool InRange(const std::string& field, int64_t v, int64_t lo, int64_t hi) {
    if (v >= lo && v <= hi) return true;
    Error(absl::StrCat(field, " is ", v, "; it must be in [", lo, ", ", hi, "]"));
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
    Real("config.gradient_clipping", c.gradient_clipping(), 0);
    if (c.schedule().empty()) {
      if (complete_) {
        Error(absl::StrCat("config.schedule is missing; it must be one of ", absl::StrJoin(kSchedules, ", ")));
      }
    } else if (std::find(kSchedules.begin(), kSchedules.end(), c.schedule()) == kSchedules.end()) {
      Error(absl::StrCat("config.schedule '", c.schedule(), "' is not one of ", absl::StrJoin(kSchedules, ", ")));
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
    bool trains = false;
    for (const auto& prog : plan_.programs()) {
      for (const auto& in : prog.instructions()) trains |= in.has_optimizer_step() || in.has_backward();
    }
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
    TensorSpec current = m.input();
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
      auto info = InferLayer(layer, current);
      if (!info.ok()) {
        Error(absl::StrCat("model layer ", l, ": ", info.status().message()));
        return;  // the rest depends on this layer's output
      }
      const bool recorded = layer.output().dtype() != DTYPE_UNSPECIFIED;
      all_recorded &= recorded;
      if (recorded && (layer.output().dtype() != info->output.dtype() ||
                       std::vector<int64_t>(layer.output().shape().begin(), layer.output().shape().end()) !=
                           std::vector<int64_t>(info->output.shape().begin(), info->output.shape().end()))) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "': recorded output ", ShapeString(layer.output()),
                           " is not what its input and attributes give, ", ShapeString(info->output)));
      } else if (!recorded && complete_) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "' has no inferred shape; compile the plan with ppc"));
      }
      if ((layer.param_count() != 0 || complete_) && layer.param_count() != info->param_count) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "': param_count ", layer.param_count(),
                           " is not the layer's ", info->param_count));
      }
      int64_t batch;
      if (!CheckedMul(NumElements(info->output), mbs, &batch) || batch > kMaxTensorElements) {
        Error(absl::StrCat("model layer ", l, " '", layer.name(), "': a micro-batch of ", mbs, " x ",
                           ShapeString(info->output), " is more than ", kMaxTensorElements, " elements"));
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
      current = info->output;
    }
    if (m.loss() == CROSS_ENTROPY && current.shape_size() > 0 && current.shape(current.shape_size() - 1) != m.num_classes()) {
      Error(absl::StrCat("model.num_classes is ", m.num_classes(), " but the last layer gives ",
                         ShapeString(current), " (one score per class in the last dimension)"));
    }
    inferred_ = all_recorded;  // the recorded shapes are usable for boundary checks
  }

  void CheckPartition() {
    const int p = plan_.topology().num_stages();
    const auto& part = plan_.partition();
    if (part.stages_size() == 0) {
      // Programs are written for a partition: they may not come without one.
      if (complete_ || plan_.programs_size() > 0) Error("the plan has no partition; compile it with ppc");
      return;
    }
    if (part.stages_size() != p) {
      Error(absl::StrCat("partition has ", part.stages_size(), " stages, topology has ", p));
      return;
    }
    int expect = 0;
    for (int s = 0; s < p; ++s) {
      const auto& r = part.stages(s);
      if (r.begin() != expect || r.end() <= r.begin() || r.end() > plan_.model().layers_size()) {
        Error(absl::StrCat("partition stage ", s, " is [", r.begin(), ", ", r.end(),
                           "); expected a non-empty range of layers starting at ", expect, " within [0, ",
                           plan_.model().layers_size(), ")"));
        return;
      }
      expect = r.end();
    }
    if (expect != plan_.model().layers_size()) {
      Error(absl::StrCat("partition covers layers [0, ", expect, ") of ", plan_.model().layers_size()));
      return;
    }
    partitioned_ = true;
  }

  // [micro_batch_size] + the per-sample tensor entering (input) or leaving stage s.
  const TensorSpec& Boundary(int s, bool output) const {
    const auto& r = plan_.partition().stages(s);
    if (!output) return r.begin() == 0 ? plan_.model().input() : plan_.model().layers(r.begin() - 1).output();
    return plan_.model().layers(r.end() - 1).output();
  }

  std::string Where(const std::string& kind, int s, int i, const Instruction& in) {
    return absl::StrCat(kind, "stage ", s, " instruction ", i, " (", PrintInstruction(in), ")");
  }

  template <typename Comm, typename Where>
  void CheckComm(const Where& where, const Comm& c, int s, bool towards_next, bool activation) {
    const int p = plan_.topology().num_stages();
    const int want = towards_next ? s + 1 : s - 1;
    if (c.peer() != want || want < 0 || want >= p) {
      Error(absl::StrCat(where(), ": peer stage ", c.peer(), " is not valid here (want ", want, " of ", p, " stages)"));
      return;
    }
    if (!partitioned_ || !inferred_) return;
    // Sends to the next stage and receives from it carry this stage's output boundary.
    const TensorSpec& spec = Boundary(s, towards_next);
    const DType want_dtype = activation ? spec.dtype() : FLOAT32;
    bool same = c.dtype() == want_dtype && c.shape_size() == spec.shape_size() + 1 &&
                c.shape(0) == plan_.config().micro_batch_size();
    for (int d = 0; same && d < spec.shape_size(); ++d) same = c.shape(d + 1) == spec.shape(d);
    if (!same) {
      std::vector<int64_t> want_shape{plan_.config().micro_batch_size()};
      want_shape.insert(want_shape.end(), spec.shape().begin(), spec.shape().end());
      Error(absl::StrCat(where(), ": shape ", DType_Name(c.dtype()), "[", absl::StrJoin(c.shape(), ","),
                         "] does not match the stage boundary ", DType_Name(want_dtype), "[",
                         absl::StrJoin(want_shape, ","), "]"));
    }
  }

  void CheckPrograms(const google::protobuf::RepeatedPtrField<StageProgram>& programs, const std::string& kind) {
    const int p = plan_.topology().num_stages();
    const int m = plan_.config().micro_batches();
    if (programs.empty()) {
      if (complete_ && kind.empty()) Error("the plan has no programs; compile it with ppc");
      return;
    }
    if (programs.size() != p) {
      Error(absl::StrCat("plan has ", programs.size(), " ", kind, "programs for ", p, " stages"));
      return;
    }
    const bool sharded = plan_.config().zero_stage() == 1 && plan_.topology().data_parallel() > 1;
    for (int s = 0; s < p; ++s) {
      const StageProgram& prog = programs.Get(s);
      if (prog.stage() != s) Error(absl::StrCat(kind, "program ", s, " says it is stage ", prog.stage()));
      const int slots = prog.num_slots();
      if (!InRange(absl::StrCat(kind, "stage ", s, " num_slots"), slots, complete_ ? 1 : 0, std::max(1, m))) continue;
      if (!InRange(absl::StrCat(kind, "stage ", s, " instruction count"), prog.instructions_size(), 0, kMaxInstructions)) {
        continue;
      }
      for (int i = 0; i < prog.instructions_size(); ++i) {
        const Instruction& in = prog.instructions(i);
        if (in.op_case() == Instruction::OP_NOT_SET) {
          Error(absl::StrCat(kind, "stage ", s, " instruction ", i, " is empty"));
          continue;
        }
        // Built only when an error is reported: formatting every instruction dominates otherwise.
        auto where = [&] { return Where(kind, s, i, in); };
        int mb = 0, chunk = 0;
        if (MicroBatchOf(in, &mb, &chunk)) {
          if (mb < 0 || mb >= m) Error(absl::StrCat(where(), ": micro-batch ", mb, " is out of range [0, ", m, ")"));
          if (chunk != 0) Error(absl::StrCat(where(), ": chunk ", chunk, " is out of range (stage has 1 chunk)"));
        }
        auto slot = [&](int v) {
          if (v < 0 || v >= std::max(slots, 1)) {
            Error(absl::StrCat(where(), ": slot ", v, " is out of range [0, ", std::max(slots, 1), ")"));
          }
        };
        switch (in.op_case()) {
          case Instruction::kLoadMicroBatch:
            slot(in.load_micro_batch().slot());
            if (in.load_micro_batch().inputs() && s != 0) Error(absl::StrCat(where(), ": only the first stage loads inputs"));
            if (in.load_micro_batch().labels() && s != p - 1) {
              Error(absl::StrCat(where(), ": only the last stage loads labels"));
            }
            break;
          case Instruction::kForward: slot(in.forward().slot()); break;
          case Instruction::kBackward:
            slot(in.backward().slot());
            if (!kind.empty()) Error(absl::StrCat(where(), ": an eval program must be forward-only"));
            break;
          case Instruction::kSendActivation:
            slot(in.send_activation().slot());
            CheckComm(where, in.send_activation(), s, true, true);
            break;
          case Instruction::kRecvActivation:
            slot(in.recv_activation().slot());
            CheckComm(where, in.recv_activation(), s, false, true);
            break;
          case Instruction::kSendGrad:
            slot(in.send_grad().slot());
            CheckComm(where, in.send_grad(), s, false, false);
            break;
          case Instruction::kRecvGrad:
            slot(in.recv_grad().slot());
            CheckComm(where, in.recv_grad(), s, true, false);
            break;
          case Instruction::kWait:
            if (in.wait().ops_size() == 0) Error(absl::StrCat(where(), ": waits for nothing"));
            for (const auto& ref : in.wait().ops()) {
              if (ref.kind() < SEND_ACTIVATION || ref.kind() > RECV_GRAD || ref.micro_batch() < 0 ||
                  ref.micro_batch() >= m || ref.chunk() != 0) {
                Error(absl::StrCat(where(), ": waits for an operation that cannot exist"));
              }
            }
            break;
          case Instruction::kReduceTiedGrads: {
            const auto& r = in.reduce_tied_grads();
            std::set<int> holders;
            if (partitioned_) {
              for (int st = 0; st < p; ++st)
                for (int l = plan_.partition().stages(st).begin(); l < plan_.partition().stages(st).end(); ++l)
                  if (plan_.model().layers(l).tie_key() == r.tie_key()) holders.insert(st);
            }
            const std::set<int> listed(r.stages().begin(), r.stages().end());
            if (r.tie_key().empty() || (partitioned_ && (holders != listed || !listed.count(s))) ||
                static_cast<int>(listed.size()) != r.stages_size()) {
              Error(absl::StrCat(where(), ": tie '", r.tie_key(), "' is held by stages [", absl::StrJoin(holders, ","),
                                 "], instruction lists [", absl::StrJoin(r.stages(), ","), "]"));
            }
            if (!kind.empty()) Error(absl::StrCat(where(), ": an eval program must be forward-only"));
            break;
          }
          case Instruction::kReduceGrads:
            if (in.reduce_grads().chunk() != 0) Error(absl::StrCat(where(), ": chunk out of range (1 chunk per stage)"));
            if (!kind.empty()) Error(absl::StrCat(where(), ": an eval program must be forward-only"));
            break;
          case Instruction::kClipGradNorm: {
            const auto& c = in.clip_grad_norm();
            std::set<int> listed(c.stages().begin(), c.stages().end());
            if (static_cast<int>(listed.size()) != p || c.stages_size() != p || *listed.begin() != 0 ||
                *listed.rbegin() != p - 1) {
              Error(absl::StrCat(where(), ": must list every stage 0..", p - 1, " exactly once"));
            }
            if (!(std::isfinite(c.max_norm()) && c.max_norm() > 0)) {
              Error(absl::StrCat(where(), ": max_norm must be finite and > 0"));
            }
            if (!kind.empty()) Error(absl::StrCat(where(), ": an eval program must be forward-only"));
            break;
          }
          case Instruction::kOptimizerStep:
            if (in.optimizer_step().sharded() != sharded) {
              Error(absl::StrCat(where(), sharded ? ": must be sharded (config.zero_stage 1 with data_parallel > 1)"
                                                : ": is sharded but config.zero_stage is 0 or data_parallel is 1"));
            }
            if (!kind.empty()) Error(absl::StrCat(where(), ": an eval program must be forward-only"));
            break;
          case Instruction::kGatherParams:
            if (in.gather_params().chunk() != 0) Error(absl::StrCat(where(), ": chunk out of range (1 chunk per stage)"));
            if (!sharded) Error(absl::StrCat(where(), ": gathers parameters but the plan's optimizer is not sharded"));
            if (!kind.empty()) Error(absl::StrCat(where(), ": an eval program must be forward-only"));
            break;
          case Instruction::OP_NOT_SET:
            break;
        }
      }
    }
  }

  const Plan& plan_;
  const bool complete_;
  bool inferred_ = false;
  bool partitioned_ = false;
  ErrorList errors_;
};

}  // namespace

absl::Status CheckPlanStructure(const Plan& plan, bool complete) { return Checker(plan, complete).Run(); }

}  // namespace ppc::ir
