#include "runtime/interpreter.h"

#include <signal.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <tuple>

#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/instruction_text.h"
#include "ir/layer_shapes.h"
#include "ir/limits.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "runtime/cifar10.h"
#include "runtime/torch_status.h"

namespace ppc::runtime {

// The state of one (virtual stage, micro-batch) while it is live.
struct StageRuntime::Slot {
  std::vector<torch::Tensor> inputs;      // the virtual stage's input group (FLOAT32 ones require grad)
  std::vector<torch::Tensor> outputs;     // its output group, or {scaled loss} on the last virtual stage
  torch::Tensor labels;
  std::vector<torch::Tensor> grad_in;     // received gradients of the FLOAT32 outputs, in order
  std::vector<torch::Tensor> grad_out;    // gradients of the FLOAT32 inputs, to send
  // With activation checkpointing: the input group of every segment of layers and the
  // context to recompute it with.
  std::vector<std::vector<torch::Tensor>> segment_inputs;
  ForwardContext ctx;
};

namespace {

at::ScalarType Torch(ir::DType d) { return d == ir::INT64 ? torch::kInt64 : torch::kFloat32; }

std::vector<int64_t> BatchShape(int64_t batch, const ir::TensorSpec& spec) {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), spec.shape().begin(), spec.shape().end());
  return shape;
}

// The FLOAT32 members of a group (what gradients flow through), in order.
std::vector<torch::Tensor> Differentiable(const std::vector<torch::Tensor>& group) {
  std::vector<torch::Tensor> out;
  for (const auto& t : group)
    if (t.is_floating_point()) out.push_back(t);
  return out;
}

}  // namespace

StageRuntime::~StageRuntime() = default;

std::string StageRuntime::Where(int index, const ir::Instruction& in, int64_t step) const {
  // step < 0: at load. Steps are printed 1-based, as pprun's per-step lines.
  std::string s = absl::StrCat("rank ", rank_, " stage ", stage_);
  if (step >= 0) absl::StrAppend(&s, " step ", step + 1);
  absl::StrAppend(&s, running_ != nullptr && running_->eval ? " eval instruction " : " instruction ",
                  index, " (", ir::PrintInstruction(in), ")");
  if (in.has_send() || in.has_recv()) {
    const bool send = in.has_send();
    const int peer = grid_.PeerStage(send, send ? in.send().direction() : in.recv().direction(),
                                     send ? in.send().boundary() : in.recv().boundary());
    absl::StrAppend(&s, " peer stage ", peer, " rank ", grid_.Rank(peer, replica_));
  }
  return s;
}

absl::StatusOr<std::unique_ptr<StageRuntime>> StageRuntime::Load(const ir::Plan& plan, Transport* transport,
                                                                 const RuntimeOptions& options) {
  std::unique_ptr<StageRuntime> rt(new StageRuntime());
  rt->plan_ = plan;
  rt->transport_ = transport;
  rt->options_ = options;
  rt->rank_ = transport->rank();
  const std::string who = absl::StrCat("rank ", rt->rank_);
  RETURN_IF_ERROR(ir::CheckStamp(plan, who));
  // The same structural rules the verifier applies, before anything is allocated:
  // everything below may index, size and allocate from the plan.
  absl::Status structure = ir::CheckPlanStructure(plan, /*complete=*/true);
  if (!structure.ok()) return Annotate(structure, absl::StrCat(who, ": cannot load the plan"));
  rt->num_stages_ = plan.topology().num_stages();
  rt->dp_ = plan.topology().data_parallel();
  rt->m_ = plan.config().micro_batches();
  auto grid = ir::Grid::Of(plan);
  if (!grid.ok()) return Annotate(grid.status(), absl::StrCat(who, ": cannot load the plan"));
  rt->grid_ = *grid;
  const int world = rt->grid_.world_size();
  if (world != transport->world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": the plan needs ", world, " ranks (", rt->num_stages_,
                                                   " stages x ", rt->dp_, " data-parallel) but the world has ",
                                                   transport->world_size()));
  }
  rt->stage_ = rt->grid_.StageOfRank(rt->rank_);
  rt->replica_ = rt->grid_.ReplicaOfRank(rt->rank_);
  rt->first_ = rt->grid_.StageOf(0) == rt->stage_;
  rt->last_ = rt->grid_.StageOf(rt->grid_.virtual_stages() - 1) == rt->stage_;
  rt->train_.code = plan.programs(rt->stage_);
  for (const auto& in : rt->train_.code.instructions()) {
    rt->train_.training |= in.has_compute() && in.compute().kind() != ir::FORWARD;
  }
  if (plan.eval_programs_size() > 0) {
    rt->eval_.code = plan.eval_programs(rt->stage_);
  } else if (!rt->train_.training) {
    rt->eval_.code = rt->train_.code;  // an inference plan evaluates with its own programs
  }
  rt->eval_.eval = true;
  RETURN_IF_ERROR(rt->Validate(plan));
  return rt;
}

absl::Status StageRuntime::Validate(const ir::Plan& plan) {
  std::vector<std::string> problems;
  const std::string who = absl::StrCat("rank ", rank_, " stage ", stage_);
  const uint64_t seed = plan.config().seed();
  RETURN_IF_ERROR(CheckMemory(plan, who));
  // This stage's virtual stages, in chunk order (ascending layers).
  for (int c = 0; c < grid_.chunks(); ++c) {
    const int v = grid_.VirtualOf(stage_, c);
    const auto& vs = plan.placement().virtual_stages(v);
    chunks_.push_back({v, vs.begin(), vs.end(), 0, 0});
  }
  auto holds = [&](int layer) {
    for (const Chunk& c : chunks_)
      if (layer >= c.begin && layer < c.end) return true;
    return false;
  };
  // Layers, with tied weights shared within the stage and initialised from the
  // first layer of each tie group, wherever that layer lives.
  std::map<std::string, int> first_of_tie;
  for (int l = 0; l < plan.model().layers_size(); ++l) {
    const auto& key = plan.model().layers(l).tie_key();
    if (!key.empty() && !first_of_tie.count(key)) first_of_tie[key] = l;
  }
  for (Chunk& chunk : chunks_) {
  chunk.first_layer = static_cast<int>(layers_.size());
  for (int l = chunk.begin; l < chunk.end; ++l) {
    const ir::LayerSpec& spec = plan.model().layers(l);
    auto layer = BuildLayer(spec, l, seed);
    if (!layer.ok()) {
      problems.push_back(std::string(layer.status().message()));
      continue;
    }
    int64_t count = 0;
    for (auto& [name, p] : (*layer)->params()) count += p.numel();
    if (count != spec.param_count()) {
      problems.push_back(absl::StrCat("layer ", l, " '", spec.name(), "' has ", count,
                                      " parameters but the plan says ", spec.param_count()));
    }
    if (!spec.tie_key().empty()) {
      auto it = tied_.find(spec.tie_key());
      if (it == tied_.end()) {
        torch::Tensor w = (*layer)->params()["weight"];
        int first = first_of_tie[spec.tie_key()];
        if (first != l) {
          auto origin = BuildLayer(plan.model().layers(first), first, seed);
          if (!origin.ok()) {
            problems.push_back(std::string(origin.status().message()));
            continue;
          }
          w = (*origin)->params()["weight"];
        }
        it = tied_.emplace(spec.tie_key(), w).first;
      }
      if (!holds(first_of_tie[spec.tie_key()])) not_owned_.insert(it->second.unsafeGetTensorImpl());
      if (it->second.sizes() != (*layer)->params()["weight"].sizes()) {
        problems.push_back(absl::StrCat("layer ", l, " tie '", spec.tie_key(), "' weight shape differs"));
      } else {
        (*layer)->params()["weight"] = it->second;
      }
    }
    layers_.push_back(*std::move(layer));
  }
  chunk.end_layer = static_cast<int>(layers_.size());
  }
  std::set<const void*> seen;
  for (auto& layer : layers_)
    for (auto& [name, p] : layer->params())
      if (seen.insert(p.unsafeGetTensorImpl()).second) unique_params_.push_back(p);
  for (Chunk& chunk : chunks_) {
    std::set<const void*> in_chunk;
    for (int l = chunk.first_layer; l < chunk.end_layer; ++l)
      for (auto& [name, p] : layers_[l]->params())
        if (in_chunk.insert(p.unsafeGetTensorImpl()).second) chunk.params.push_back(p);
  }

  // Instructions of the training program and, when there is one, the eval program.
  std::vector<std::vector<int>> tie_groups;
  ValidateProgram(train_, problems, tie_groups);
  if (can_eval()) ValidateProgram(eval_, problems, tie_groups);
  checkpoint_interval_ = plan.config().activation_checkpoint_interval();
  if (checkpoint_interval_ > 0) {
    for (const auto& in : train_.code.instructions()) {
      if (in.has_compute() && (in.compute().kind() == ir::BACKWARD_INPUT || in.compute().kind() == ir::BACKWARD_WEIGHT)) {
        problems.push_back("activation checkpointing supports full backward only (this plan splits backward)");
        break;
      }
    }
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": cannot load the plan (", problems.size(), " problems):\n  ", absl::StrJoin(problems, "\n  ")));
  }

  // Data on the stages of the first and last virtual stages.
  if (first_ || last_) {
    auto data = OpenData(/*eval=*/false);
    if (!data.ok()) return Annotate(data.status(), who);
    data_ = *std::move(data);
    if (options_.evaluates && can_eval()) {
      auto held_out = OpenData(/*eval=*/true);
      if (!held_out.ok()) return Annotate(held_out.status(), absl::StrCat(who, ": evaluation data"));
      eval_data_ = *std::move(held_out);
    }
  }
  if (options_.evaluates && !can_eval()) {
    return absl::FailedPreconditionError(absl::StrCat(who, ": the plan has no forward-only program to evaluate with "
                                                      "(recompile it: training plans carry eval programs)"));
  }

  // Optimizer over this stage's distinct parameters, sharded over the replicas when the
  // program's step is (ZeRO stage 1).
  bool sharded = false;
  for (const auto& in : train_.code.instructions()) sharded |= in.has_optimizer_step() && in.optimizer_step().sharded();
  int64_t numel = 0;
  for (const auto& p : unique_params_) numel += p.numel();
  const int64_t shard = sharded ? std::max<int64_t>(1, (numel + dp_ - 1) / dp_) : numel;
  Flatten(sharded ? shard * dp_ : numel);
  if (train_.training) {
    auto opt = StageOptimizer::Create(plan.config().optimizer(), unique_params_, flat_params_, flat_grads_,
                                      sharded ? replica_ : 0, sharded ? dp_ : 1);
    if (!opt.ok()) return Annotate(opt.status(), who);
    optimizer_ = *std::move(opt);
  }

  // Communication groups, every rank creating its groups in one global order so that
  // group construction cannot deadlock: the data-parallel group of each stage, then
  // tie groups (sorted).
  world_group_ = grid_.World();
  dp_group_ = grid_.DataParallelGroup(stage_);
  pipeline_group_ = grid_.PipelineGroup(replica_);
  std::vector<std::vector<int>> all_groups;
  if (dp_ > 1) all_groups.push_back(dp_group_);
  bool clips = false;
  for (const auto& in : train_.code.instructions()) clips |= in.has_clip_grad_norm();
  if (clips && num_stages_ > 1) all_groups.push_back(pipeline_group_);
  std::sort(tie_groups.begin(), tie_groups.end());
  tie_groups.erase(std::unique(tie_groups.begin(), tie_groups.end()), tie_groups.end());
  for (auto& g : tie_groups) all_groups.push_back(g);
  // Groups of other stages are created by their members; ordering by the smallest
  // rank keeps every member's creation order consistent.
  std::sort(all_groups.begin(), all_groups.end());
  for (const auto& g : all_groups) {
    absl::Status s = transport_->CreateGroup(g, options_.timeout);
    if (!s.ok()) return Annotate(s, absl::StrCat(who, ": creating group [", absl::StrJoin(g, ","), "]"));
  }
  return absl::OkStatus();
}

namespace {

// Bytes of memory the machine can still give (MemAvailable + SwapFree), or -1.
int64_t AvailableMemory() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  int64_t total = -1;
  while (std::getline(in, line)) {
    long long kb;
    if (std::sscanf(line.c_str(), "MemAvailable: %lld kB", &kb) == 1 || std::sscanf(line.c_str(), "SwapFree: %lld kB", &kb) == 1) {
      total = std::max<int64_t>(total, 0) + kb * 1024;
    }
  }
  return total;
}

}  // namespace

absl::Status StageRuntime::CheckMemory(const ir::Plan& plan, const std::string& who) const {
  // Saturating arithmetic: an estimate, sized from the plan before any allocation.
  auto mul = [](int64_t a, int64_t b) {
    int64_t r;
    return ir::CheckedMul(a, b, &r) ? r : std::numeric_limits<int64_t>::max();
  };
  auto add = [](int64_t a, int64_t b) {
    int64_t r;
    return ir::CheckedAdd(a, b, &r) ? r : std::numeric_limits<int64_t>::max();
  };
  const int64_t mbs = plan.config().micro_batch_size();
  int64_t params = 0, activations = 0;
  for (int c = 0; c < grid_.chunks(); ++c) {
    const auto& vs = plan.placement().virtual_stages(grid_.VirtualOf(stage_, c));
    int64_t chunk_activations = vs.begin() == 0 ? mul(mbs, ir::NumElements(plan.model().input())) : 0;
    for (int l = vs.begin(); l < vs.end(); ++l) {
      params = add(params, plan.model().layers(l).param_count());
      for (const auto& t : plan.model().layers(l).outputs()) chunk_activations = add(chunk_activations, mul(mbs, ir::NumElements(t)));
    }
    activations = std::max(activations, chunk_activations);
  }
  const auto& o = plan.config().optimizer();
  int64_t state = (o.type() == "adam" || o.type() == "adamw") ? mul(2, params) : o.momentum() != 0 ? params : 0;
  if (plan.config().zero_stage() == 1) state /= std::max(1, dp_);
  // Parameters (briefly twice while they move into the flat buffer), gradients, optimizer
  // state, and every live micro-batch's activations, in float32.
  const int64_t bytes = mul(4, add(add(mul(3, params), state), mul(std::max(1, train_.code.num_slots()), activations)));
  const int64_t available = AvailableMemory();
  if (available >= 0 && bytes > available) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s needs about %.1f GiB (%d parameters with their gradients and %s optimizer state, activations of %d "
        "micro-batches of %d) but the machine has %.1f GiB available; use more stages, a smaller "
        "micro_batch_size or fewer micro-batches in flight",
        who, bytes / 1073741824.0, params, o.type().empty() ? "sgd" : o.type(), train_.code.num_slots(), mbs,
        available / 1073741824.0));
  }
  return absl::OkStatus();
}

void StageRuntime::ValidateProgram(Program& program, std::vector<std::string>& problems,
                                   std::vector<std::vector<int>>& tie_groups) {
  // ir::CheckPlanStructure has checked every index, virtual stage, boundary and slot.
  // What is left is what this runtime relies on to run: the groups of tied weights,
  // every post followed by one wait, every sharded step by its gather.
  const ir::StageProgram& code = program.code;
  const std::string who = absl::StrCat("rank ", rank_, " stage ", stage_, program.eval ? " eval program" : "");
  auto& slots = program.slots;
  for (int s = 0; s < code.num_slots(); ++s) slots.push_back(std::make_unique<Slot>());
  std::set<CommKey> posted;  // not yet waited
  Program* saved = running_;
  running_ = &program;  // so that Where names the program
  bool sharded_step = false;  // a sharded step not yet followed by its gather
  for (int i = 0; i < code.instructions_size(); ++i) {
    const ir::Instruction& in = code.instructions(i);
    auto bad = [&](const std::string& what) { problems.push_back(absl::StrCat(Where(i, in, -1), ": ", what)); };
    switch (in.op_case()) {
      case ir::Instruction::kSend:
      case ir::Instruction::kRecv: {
        const bool send = in.has_send();
        CommKey key{send, send ? in.send().direction() : in.recv().direction(),
                    send ? in.send().boundary() : in.recv().boundary(),
                    send ? in.send().micro_batch() : in.recv().micro_batch()};
        if (!posted.insert(key).second) bad("posted again before its wait");
        break;
      }
      case ir::Instruction::kWait:
        for (const auto& ref : in.wait().ops()) {
          if (!posted.erase(CommKey{ref.send(), ref.direction(), ref.boundary(), ref.micro_batch()})) {
            bad(absl::StrCat("waits for ", ir::CommRefText(ref), " which is not posted before it (or is waited twice)"));
          }
        }
        break;
      case ir::Instruction::kReduceTiedGrads: {
        const auto& r = in.reduce_tied_grads();
        if (!tied_.count(r.tie_key())) bad(absl::StrCat("this stage holds no weight tied as '", r.tie_key(), "'"));
        tie_groups.push_back(grid_.StagesGroup({r.stages().begin(), r.stages().end()}, replica_));
        break;
      }
      case ir::Instruction::kOptimizerStep:
        if (!program.training) bad("optimizer step in a program without backwards");
        if (sharded_step) bad("a second sharded step before the gather of the first");
        sharded_step = in.optimizer_step().sharded();
        break;
      case ir::Instruction::kGatherParams:
        if (!program.training) bad("gathers parameters in a program without backwards");
        if (!sharded_step) bad("gathers parameters without a sharded optimizer step before it");
        sharded_step = false;
        break;
      case ir::Instruction::kReduceGrads:
        if (!program.training) bad("reduces gradients in a program without backwards");
        break;
      default:
        break;
    }
  }
  running_ = saved;
  if (sharded_step) {
    problems.push_back(absl::StrCat(who, ": the sharded optimizer step is never followed by gather_params, so the "
                                    "replicas' parameters would diverge"));
  }
  for (const auto& [send, direction, boundary, mb] : posted) {
    ir::CommRef ref;
    ref.set_send(send);
    ref.set_direction(static_cast<ir::Direction>(direction));
    ref.set_boundary(boundary);
    ref.set_micro_batch(mb);
    problems.push_back(absl::StrCat(who, ": ", ir::CommRefText(ref), " is posted but never waited for"));
  }
}

absl::StatusOr<std::unique_ptr<DataSource>> StageRuntime::OpenData(bool eval) const {
  const ir::Plan& plan = plan_;
  const uint64_t seed = plan.config().seed();
  const int64_t global_batch = int64_t(m_) * plan.config().micro_batch_size() * dp_;
  if (options_.data.empty() || options_.data == "synthetic") {
    ASSIGN_OR_RETURN(auto data, SyntheticData::Create(plan.model(), plan.model().layers().rbegin()->outputs(0),
                                                      plan.config().micro_batch_size(), global_batch, seed, eval));
    return std::unique_ptr<DataSource>(std::move(data));
  }
  const auto& in = plan.model().input();
  if (in.dtype() != ir::FLOAT32 || in.shape_size() != 3 || in.shape(0) != 3 || in.shape(1) != in.shape(2) ||
      plan.model().loss() != ir::CROSS_ENTROPY) {
    return absl::InvalidArgumentError(absl::StrCat("CIFAR-10 data needs a model with FLOAT32 input [3,S,S] "
                                                   "and CROSS_ENTROPY loss, this one takes ", ir::ShapeString(in)));
  }
  // Evaluation reads the test set in order; training a seeded shuffle of the training set.
  ASSIGN_OR_RETURN(auto data, Cifar10Data::Open(options_.data, /*test=*/eval, static_cast<int>(in.shape(1)),
                                                plan.config().micro_batch_size(), global_batch, seed,
                                                /*shuffle=*/!eval));
  return std::unique_ptr<DataSource>(std::move(data));
}

absl::Status StageRuntime::Run(Program& program, int64_t step) {
  running_ = &program;
  loss_sum_ = 0;
  correct_ = 0;
  predictions_ = 0;
  // Transfers between two ranks match by order: each direction of each pair counts its
  // messages from 0 in every run of a program, on both sides, and uses the count as tag.
  send_seq_.clear();
  recv_seq_.clear();
  for (int i = 0; i < program.code.instructions_size(); ++i) {
    const ir::Instruction& in = program.code.instructions(i);
    if (options_.fault_signal != 0 && &program == &train_ && step == options_.fault_step &&
        in.op_case() == options_.fault_op) {
      std::fprintf(stderr, "pprun: rank %d: PPRUN_FAULT_INJECT: signal %d at instruction %d of step %lld\n", rank_,
                   options_.fault_signal, i, static_cast<long long>(step + 1));
      raise(options_.fault_signal);
    }
    absl::Status s;
    absl::Status thrown = TorchCall([&] { s = Execute(in, step); });
    if (!thrown.ok()) s = thrown;
    if (!s.ok()) return Annotate(s, Where(i, in, step));
    ++executed_;
  }
  return absl::OkStatus();
}

absl::StatusOr<StepResult> StageRuntime::RunStep(int64_t step) {
  RETURN_IF_ERROR(Run(train_, step));
  // Every rank reports the same loss: the last stage's mean over micro-batches,
  // averaged over replicas by one all-reduce across the world.
  StepResult result;
  result.samples = int64_t(m_) * plan_.config().micro_batch_size() * dp_;
  torch::Tensor loss = torch::zeros({1}, torch::kFloat64);
  if (last_) loss[0] = loss_sum_ / m_ / dp_;
  if (transport_->world_size() > 1) {
    std::vector<at::Tensor> t{loss};
    absl::Status s = transport_->AllReduceSum(t, world_group_, options_.timeout);
    if (!s.ok()) return Annotate(s, absl::StrCat("rank ", rank_, " stage ", stage_, " step ", step + 1, " loss all-reduce"));
  }
  result.loss = loss[0].item<double>();
  return result;
}

bool StageRuntime::can_eval() const { return eval_.code.instructions_size() > 0; }

absl::StatusOr<EvalResult> StageRuntime::RunEval(int64_t index) {
  const std::string who = absl::StrCat("rank ", rank_, " stage ", stage_);
  if (!can_eval()) {
    return absl::FailedPreconditionError(absl::StrCat(who, ": the plan has no forward-only program to evaluate with "
                                                      "(recompile it: training plans carry eval programs)"));
  }
  if ((first_ || last_) && eval_data_ == nullptr) {
    auto data = OpenData(/*eval=*/true);
    if (!data.ok()) return Annotate(data.status(), absl::StrCat(who, ": evaluation data"));
    eval_data_ = *std::move(data);
  }
  RETURN_IF_ERROR(Run(eval_, index));
  // Sums over the world: the last stage's per-micro-batch mean losses and correct
  // predictions, so every rank reports the same numbers.
  EvalResult result;
  result.samples = int64_t(m_) * plan_.config().micro_batch_size() * dp_;
  torch::Tensor sums = torch::zeros({3}, torch::kFloat64);
  if (last_) {
    sums[0] = loss_sum_;
    sums[1] = static_cast<double>(correct_);
    sums[2] = static_cast<double>(predictions_);
  }
  if (transport_->world_size() > 1) {
    std::vector<at::Tensor> t{sums};
    absl::Status s = transport_->AllReduceSum(t, world_group_, options_.timeout);
    if (!s.ok()) return Annotate(s, absl::StrCat(who, " eval batch ", index + 1, " all-reduce"));
  }
  result.loss = sums[0].item<double>() / m_ / dp_;
  // Per prediction: a sample of a classifier, a position of a sequence model.
  if (plan_.model().loss() == ir::CROSS_ENTROPY) result.accuracy = sums[1].item<double>() / sums[2].item<double>();
  return result;
}

absl::StatusOr<std::optional<Predictions>> StageRuntime::GatherPredictions() {
  if (!last_) return std::optional<Predictions>();
  if (predicted_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("rank ", rank_, ": no predictions were kept"));
  }
  // Per replica: [eval batches * micro-batches, micro-batch size, ...] in run order.
  torch::Tensor outputs = torch::stack(predicted_).to(torch::kFloat32);
  torch::Tensor labels = torch::stack(predicted_labels_);
  if (dp_ > 1) {
    auto gather = [&](const torch::Tensor& local) -> absl::StatusOr<torch::Tensor> {
      torch::Tensor flat = local.contiguous().reshape({-1});
      torch::Tensor all = torch::empty({flat.numel() * dp_}, flat.options());
      RETURN_IF_ERROR(transport_->AllGather(flat, all, dp_group_, options_.timeout));
      // [replica, batch, micro-batch, ...] -> [batch, replica, micro-batch, ...]
      std::vector<int64_t> shape{dp_, local.size(0) / m_, m_};
      shape.insert(shape.end(), local.sizes().begin() + 1, local.sizes().end());
      return all.view(shape).transpose(0, 1).contiguous();
    };
    ASSIGN_OR_RETURN(outputs, gather(outputs));
    ASSIGN_OR_RETURN(labels, gather(labels));
  }
  if (replica_ != 0) return std::optional<Predictions>();
  Predictions p;
  // Flatten everything before the per-sample dimensions into one sample axis.
  const int64_t out_dims = outputs.dim() - (dp_ > 1 ? 4 : 2);
  std::vector<int64_t> out_shape{-1};
  out_shape.insert(out_shape.end(), outputs.sizes().end() - out_dims, outputs.sizes().end());
  p.outputs = outputs.reshape(out_shape);
  const int64_t label_dims = labels.dim() - (dp_ > 1 ? 4 : 2);
  std::vector<int64_t> label_shape{-1};
  label_shape.insert(label_shape.end(), labels.sizes().end() - label_dims, labels.sizes().end());
  p.labels = labels.reshape(label_shape);
  return std::optional<Predictions>(std::move(p));
}

const StageRuntime::Chunk& StageRuntime::ChunkOf(int virtual_stage) const {
  return chunks_[grid_.ChunkOf(virtual_stage)];
}

std::vector<torch::Tensor> StageRuntime::RunLayers(int begin, int end, std::vector<torch::Tensor> x,
                                                   const ForwardContext& ctx) {
  for (int l = begin; l < end; ++l) x = layers_[l]->ForwardGroup(std::move(x), ctx);
  return x;
}

absl::Status StageRuntime::Forward(const ir::Compute& c, Slot& slot, int64_t step) {
  const bool training = running_->training;
  const Chunk& chunk = ChunkOf(c.virtual_stage());
  const bool last = grid_.IsLast(c.virtual_stage());
  // Dropout only while training.
  ForwardContext ctx{plan_.config().seed(), step, int64_t(replica_) * m_ + c.micro_batch(), training};
  std::optional<torch::NoGradGuard> no_grad;
  if (!training) no_grad.emplace();
  slot.ctx = ctx;
  std::vector<torch::Tensor> x = slot.inputs;
  if (checkpoint_interval_ > 0 && training) {
    // Keep only each segment's inputs; the backward recomputes the segment. Dropout
    // masks are a pure function of (seed, step, micro-batch, layer), so recomputation matches.
    torch::NoGradGuard no_grad_segments;
    slot.segment_inputs.clear();
    for (int b = chunk.first_layer; b < chunk.end_layer; b += checkpoint_interval_) {
      slot.segment_inputs.push_back(x);
      x = RunLayers(b, std::min(chunk.end_layer, b + checkpoint_interval_), std::move(x), ctx);
    }
    if (last) {
      loss_sum_ += Loss(x[0], slot.labels).item<double>();
      slot.outputs.clear();
    } else {
      slot.outputs = std::move(x);
    }
    return absl::OkStatus();
  }
  x = RunLayers(chunk.first_layer, chunk.end_layer, std::move(x), ctx);
  if (last && running_->eval) {
    const torch::Tensor& y = x[0];
    loss_sum_ += Loss(y, slot.labels).item<double>();
    if (plan_.model().loss() == ir::CROSS_ENTROPY) {
      correct_ += y.reshape({-1, y.size(-1)}).argmax(1).eq(slot.labels.reshape({-1})).sum().item<int64_t>();
      predictions_ += y.numel() / y.size(-1);
    }
    if (options_.keep_predictions) {
      predicted_.push_back(y.detach().clone());
      predicted_labels_.push_back(slot.labels);
    }
    slot.outputs.clear();
  } else if (last) {
    torch::Tensor loss = Loss(x[0], slot.labels);
    loss_sum_ += loss.item<double>();
    // Gradient accumulation: each micro-batch contributes 1/M of the step's gradient.
    slot.outputs = {loss / m_};
  } else {
    slot.outputs = std::move(x);
  }
  return absl::OkStatus();
}

absl::Status StageRuntime::Backward(const ir::Compute& c, Slot& slot) {
  const Chunk& chunk = ChunkOf(c.virtual_stage());
  const bool last = grid_.IsLast(c.virtual_stage());
  // The roots and their incoming gradients: the scaled loss on the last virtual stage,
  // else every FLOAT32 output that depends on something trainable.
  auto roots = [&](const std::vector<torch::Tensor>& outputs, std::vector<torch::Tensor>* grads) {
    std::vector<torch::Tensor> out;
    if (last) return std::vector<torch::Tensor>{outputs[0]};
    const std::vector<torch::Tensor> floats = Differentiable(outputs);
    for (size_t k = 0; k < floats.size(); ++k) {
      if (!floats[k].requires_grad()) continue;
      out.push_back(floats[k]);
      grads->push_back(slot.grad_in[k]);
    }
    return out;
  };
  // Gradients of the FLOAT32 inputs, zeros where an input did not matter.
  auto input_grads = [&](const std::vector<torch::Tensor>& inputs, std::vector<torch::Tensor> grads) {
    std::vector<torch::Tensor> out;
    for (size_t k = 0; k < inputs.size(); ++k) out.push_back(grads[k].defined() ? grads[k] : torch::zeros_like(inputs[k]));
    return out;
  };
  const bool has_input_grad = !grid_.IsFirst(c.virtual_stage());
  if (checkpoint_interval_ > 0) {
    // Recompute segment by segment from the last, back-propagating through each.
    std::vector<torch::Tensor> grad = slot.grad_in;
    const int segments = static_cast<int>(slot.segment_inputs.size());
    for (int k = segments - 1; k >= 0; --k) {
      std::vector<torch::Tensor> x = slot.segment_inputs[k];
      if (k > 0) {
        for (auto& t : x) t = t.is_floating_point() ? t.detach().requires_grad_(true) : t;
      } else {
        x = slot.inputs;
      }
      const int begin = chunk.first_layer + k * checkpoint_interval_;
      std::vector<torch::Tensor> y = RunLayers(begin, std::min(chunk.end_layer, begin + checkpoint_interval_), x, slot.ctx);
      if (k == segments - 1 && last) {
        torch::autograd::backward({Loss(y[0], slot.labels) / m_});
      } else {
        std::vector<torch::Tensor> roots_k, grads_k;
        const std::vector<torch::Tensor> floats = Differentiable(y);
        for (size_t j = 0; j < floats.size(); ++j) {
          if (!floats[j].requires_grad()) continue;
          roots_k.push_back(floats[j]);
          grads_k.push_back(grad[j]);
        }
        if (!roots_k.empty()) torch::autograd::backward(roots_k, grads_k);
      }
      if (k > 0) {
        grad.clear();
        for (const auto& t : Differentiable(x)) grad.push_back(t.grad().defined() ? t.grad() : torch::zeros_like(t));
      }
    }
    if (has_input_grad) {
      std::vector<torch::Tensor> grads;
      const auto floats = Differentiable(slot.inputs);
      for (const auto& t : floats) grads.push_back(t.grad());
      slot.grad_out = input_grads(floats, grads);
    }
    slot.segment_inputs.clear();
    slot.outputs.clear();
    return absl::OkStatus();
  }
  std::vector<torch::Tensor> grads;
  std::vector<torch::Tensor> outs = roots(slot.outputs, &grads);
  const std::vector<torch::Tensor> inputs = has_input_grad ? Differentiable(slot.inputs) : std::vector<torch::Tensor>{};
  switch (c.kind()) {
    case ir::BACKWARD: {
      if (!outs.empty()) torch::autograd::backward(outs, grads);
      std::vector<torch::Tensor> in_grads;
      for (const auto& t : inputs) in_grads.push_back(t.grad());
      slot.grad_out = input_grads(inputs, in_grads);
      slot.outputs.clear();
      break;
    }
    case ir::BACKWARD_INPUT: {
      std::vector<torch::Tensor> in_grads(inputs.size());
      if (!outs.empty() && !inputs.empty()) {
        in_grads = torch::autograd::grad(outs, inputs, grads, /*retain_graph=*/true, /*create_graph=*/false,
                                         /*allow_unused=*/true);
      }
      slot.grad_out = input_grads(inputs, in_grads);
      break;
    }
    default: {  // BACKWARD_WEIGHT: this virtual stage's parameters only
      if (!outs.empty() && !chunk.params.empty()) {
        auto w = torch::autograd::grad(outs, chunk.params, grads, /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
        // Accumulated in place: every .grad is a view of flat_grads_.
        for (size_t k = 0; k < w.size(); ++k) {
          if (w[k].defined()) chunk.params[k].mutable_grad().add_(w[k]);
        }
      }
      slot.outputs.clear();
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status StageRuntime::Post(bool send, ir::Direction direction, int boundary, int mb, int slot_index) {
  Slot& slot = *running_->slots[slot_index];
  const int peer_stage = grid_.PeerStage(send, direction, boundary);
  const int peer = grid_.Rank(peer_stage, replica_);
  PendingOp op;
  op.slot = slot_index;
  op.peer_stage = peer_stage;
  if (send) {
    // The op keeps its own reference to the data until its Wait: the slot may move on.
    for (const auto& t : direction == ir::ACTIVATION ? slot.outputs : slot.grad_out) {
      op.tensors.push_back(t.detach().contiguous());
    }
  } else {
    const int64_t mbs = plan_.config().micro_batch_size();
    for (const auto& spec : plan_.boundaries(boundary).tensors()) {
      if (direction == ir::GRADIENT && spec.dtype() != ir::FLOAT32) continue;
      op.tensors.push_back(torch::empty(BatchShape(mbs, spec), spec.dtype() == ir::INT64 ? torch::kInt64 : torch::kFloat32));
    }
  }
  for (auto& t : op.tensors) {
    uint32_t& seq = send ? send_seq_[peer] : recv_seq_[peer];
    ASSIGN_OR_RETURN(Transport::Handle h, send ? transport_->PostSend(t, peer, seq) : transport_->PostRecv(t, peer, seq));
    ++seq;
    op.handles.push_back(h);
  }
  pending_[CommKey{send, direction, boundary, mb}] = std::move(op);
  return absl::OkStatus();
}

absl::Status StageRuntime::Execute(const ir::Instruction& in, int64_t step) {
  // Indices, slots, virtual stages and boundaries were validated by Load.
  auto& slots = running_->slots;
  switch (in.op_case()) {
    case ir::Instruction::kLoadMicroBatch: {
      const auto& l = in.load_micro_batch();
      Slot& slot = *slots[l.slot()];
      DataSource* data = running_->eval ? eval_data_.get() : data_.get();
      ASSIGN_OR_RETURN(MicroBatch b, data->Load(step, int64_t(replica_) * m_ + l.micro_batch(), l.inputs(), l.labels()));
      if (l.inputs()) slot.inputs = {b.inputs};
      if (l.labels()) slot.labels = b.labels;
      return absl::OkStatus();
    }
    case ir::Instruction::kCompute: {
      const auto& c = in.compute();
      Slot& slot = *slots[c.slot()];
      if (c.kind() == ir::FORWARD) return Forward(c, slot, step);
      return Backward(c, slot);
    }
    // Posts never block; the Wait that the verifier placed completes them.
    case ir::Instruction::kSend:
      return Post(true, in.send().direction(), in.send().boundary(), in.send().micro_batch(), in.send().slot());
    case ir::Instruction::kRecv:
      return Post(false, in.recv().direction(), in.recv().boundary(), in.recv().micro_batch(), in.recv().slot());
    case ir::Instruction::kWait: {
      for (const auto& ref : in.wait().ops()) {
        auto it = pending_.find(CommKey{ref.send(), ref.direction(), ref.boundary(), ref.micro_batch()});
        // Load checked that every wait follows its post.
        if (it == pending_.end()) return absl::InternalError("unreachable: wait without a post passed Load");
        PendingOp op = std::move(it->second);
        pending_.erase(it);
        for (Transport::Handle h : op.handles) {
          absl::Status waited = transport_->Wait(h, options_.timeout);
          if (!waited.ok()) {
            return Annotate(waited, absl::StrCat("waiting for ", ir::CommRefText(ref), " with peer stage ",
                                                 op.peer_stage, " rank ", grid_.Rank(op.peer_stage, replica_)));
          }
        }
        if (ref.send()) continue;
        Slot& slot = *slots[op.slot];
        if (ref.direction() == ir::ACTIVATION) {
          slot.inputs = std::move(op.tensors);
          if (running_->training) {
            for (auto& t : slot.inputs)
              if (t.is_floating_point()) t.requires_grad_(true);
          }
        } else {
          slot.grad_in = std::move(op.tensors);
        }
      }
      return absl::OkStatus();
    }
    case ir::Instruction::kReduceTiedGrads: {
      const auto& r = in.reduce_tied_grads();
      std::vector<at::Tensor> t{tied_.at(r.tie_key()).grad()};
      return transport_->AllReduceSum(t, grid_.StagesGroup({r.stages().begin(), r.stages().end()}, replica_),
                                      options_.timeout);
    }
    case ir::Instruction::kReduceGrads: {
      // Every gradient is a view of flat_grads_: one all-reduce, in place.
      std::vector<at::Tensor> t{flat_grads_};
      RETURN_IF_ERROR(transport_->AllReduceSum(t, dp_group_, options_.timeout));
      flat_grads_.div_(dp_);
      return absl::OkStatus();
    }
    case ir::Instruction::kClipGradNorm: {
      // This stage's share of the squared norm; tied copies owned by an earlier stage
      // are skipped so each tied weight counts once.
      torch::Tensor sq = torch::zeros({1}, torch::kFloat64);
      for (auto& p : unique_params_) {
        if (!p.grad().defined() || not_owned_.count(p.unsafeGetTensorImpl())) continue;
        sq += p.grad().to(torch::kFloat64).pow(2).sum();
      }
      if (num_stages_ > 1) {
        std::vector<at::Tensor> t{sq};
        RETURN_IF_ERROR(transport_->AllReduceSum(t, pipeline_group_, options_.timeout));
      }
      const double norm = std::sqrt(sq.item<double>());
      last_grad_norm_ = norm;
      const double coef = in.clip_grad_norm().max_norm() / (norm + 1e-6);
      if (coef < 1.0) {
        for (auto& p : unique_params_)
          if (p.grad().defined()) p.mutable_grad().mul_(coef);
      }
      return absl::OkStatus();
    }
    case ir::Instruction::kOptimizerStep:
      // Sharded (ZeRO-1): updates this replica's slice; GatherParams follows.
      optimizer_->Step();
      return absl::OkStatus();
    case ir::Instruction::kGatherParams: {
      // Every replica keeps only its own updated slice and zeroes the rest; one in-place
      // sum over the replicas then leaves every replica with every slice (x + 0 = x
      // exactly), without a second parameter-sized buffer.
      const int64_t shard = optimizer_->shard_size();
      torch::NoGradGuard no_grad;
      if (replica_ > 0) flat_params_.narrow(0, 0, replica_ * shard).zero_();
      if (replica_ + 1 < dp_) flat_params_.narrow(0, (replica_ + 1) * shard, (dp_ - replica_ - 1) * shard).zero_();
      std::vector<at::Tensor> t{flat_params_};
      return transport_->AllReduceSum(t, dp_group_, options_.timeout);
    }
    case ir::Instruction::OP_NOT_SET:
      break;
  }
  return absl::InternalError("unreachable: empty instruction passed Load");
}

torch::Tensor StageRuntime::Loss(const torch::Tensor& out, const torch::Tensor& labels) {
  if (plan_.model().loss() == ir::CROSS_ENTROPY) {
    return torch::nn::functional::cross_entropy(out.reshape({-1, out.size(-1)}), labels.reshape({-1}));
  }
  return torch::mse_loss(out, labels);
}

std::vector<int> StageRuntime::HeldLayers() const {
  std::vector<int> out;
  for (const Chunk& c : chunks_)
    for (int l = c.begin; l < c.end; ++l) out.push_back(l);
  return out;
}

std::vector<NamedParameter> StageRuntime::Parameters() const {
  std::vector<NamedParameter> out;
  for (const auto& layer : layers_)
    for (const auto& [name, p] : layer->params()) out.push_back({layer->global_index(), name, p});
  return out;
}

void StageRuntime::Flatten(int64_t size) {
  torch::NoGradGuard no_grad;
  flat_params_ = torch::zeros({size});
  flat_grads_ = torch::zeros({size});
  std::map<const void*, torch::Tensor> moved;  // old parameter -> its view
  int64_t off = 0;
  for (auto& p : unique_params_) {
    const int64_t n = p.numel();
    // detach(): plain aliases of the buffers (not autograd views), so that the view is a
    // leaf that can require grad and its .grad can be zeroed in place.
    torch::Tensor view = flat_params_.narrow(0, off, n).view(p.sizes()).detach();
    view.copy_(p);
    view.set_requires_grad(true);
    view.mutable_grad() = flat_grads_.narrow(0, off, n).view(p.sizes()).detach();
    moved[p.unsafeGetTensorImpl()] = view;
    off += n;
  }
  auto rebind = [&](torch::Tensor& t) { t = moved.at(t.unsafeGetTensorImpl()); };
  for (auto& layer : layers_)
    for (auto& [name, p] : layer->params()) rebind(p);
  for (auto& [key, w] : tied_) rebind(w);
  std::set<const void*> not_owned;
  for (const void* impl : not_owned_) not_owned.insert(moved.at(impl).unsafeGetTensorImpl());
  not_owned_ = std::move(not_owned);
  for (auto& p : unique_params_) rebind(p);
  for (auto& chunk : chunks_)
    for (auto& p : chunk.params) rebind(p);
}

std::vector<NamedParameter> StageRuntime::DistinctParameters() const {
  std::vector<NamedParameter> out;
  std::set<const void*> seen;
  for (const auto& layer : layers_)
    for (const auto& [name, p] : layer->params())
      if (seen.insert(p.unsafeGetTensorImpl()).second) out.push_back({layer->global_index(), name, p});
  return out;
}

absl::Status StageRuntime::SetParameter(int layer, const std::string& name, const torch::Tensor& value) {
  for (auto& l : layers_) {
    if (l->global_index() != layer) continue;
    auto it = l->params().find(name);
    if (it == l->params().end()) break;
    if (it->second.sizes() != value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " ", name, ": shape ",
                                                     c10::str(value.sizes()), " does not fit the model's ",
                                                     c10::str(it->second.sizes())));
    }
    torch::NoGradGuard no_grad;
    it->second.copy_(value);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("stage ", stage_, " has no parameter ", name, " in layer ", layer));
}

absl::StatusOr<std::vector<std::map<std::string, torch::Tensor>>> StageRuntime::OptimizerStatePerParameter() {
  std::vector<std::map<std::string, torch::Tensor>> out(unique_params_.size());
  if (!optimizer_) return out;
  if (!optimizer_->sharded()) {
    for (size_t i = 0; i < unique_params_.size(); ++i) out[i] = optimizer_->ParameterState(i);
    return out;
  }
  for (const std::string& name : optimizer_->StateNames()) {
    torch::Tensor local = optimizer_->LocalState(name);
    // Only replica 0 (which writes the stage's files) holds the whole state, briefly.
    torch::Tensor all = replica_ == 0 ? torch::empty({local.numel() * dp_}) : torch::Tensor();
    absl::Status s = transport_->Gather(local, all, dp_group_[0], dp_group_, options_.timeout);
    if (!s.ok()) return Annotate(s, absl::StrCat("rank ", rank_, " stage ", stage_, ": gathering optimizer state"));
    if (replica_ != 0) continue;
    int64_t off = 0;
    for (size_t i = 0; i < unique_params_.size(); ++i) {
      const int64_t n = unique_params_[i].numel();
      out[i][name] = all.narrow(0, off, n).view(unique_params_[i].sizes());
      off += n;
    }
  }
  return out;
}

absl::Status StageRuntime::SetOptimizerState(const std::map<std::string, torch::Tensor>& full, int64_t steps) {
  if (!optimizer_) return absl::OkStatus();
  return optimizer_->SetState(full, steps);
}

DataPosition StageRuntime::DataPositionAt(int64_t step) const {
  if (data_) return data_->PositionAt(step);
  DataPosition p;
  p.samples = step * int64_t(m_) * plan_.config().micro_batch_size() * dp_;
  return p;
}

absl::Status StageRuntime::ResumeData(int64_t step, const DataPosition& position) {
  if (!data_) return absl::OkStatus();
  return data_->Resume(step, position);
}

int64_t StageRuntime::ParameterBytes() const {
  int64_t bytes = 0;
  for (const auto& p : unique_params_) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  return bytes;
}

int64_t StageRuntime::OptimizerStateBytes() const { return optimizer_ ? optimizer_->StateBytes() : 0; }

}  // namespace ppc::runtime
