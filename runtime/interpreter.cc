#include "runtime/interpreter.h"

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "ir/instruction_text.h"
#include "ir/layer_shapes.h"
#include "ir/limits.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "ir/topology.h"
#include "runtime/cifar10.h"
#include "runtime/comm_engine.h"
#include "runtime/memory_meter.h"
#include "runtime/slot_table.h"
#include "runtime/torch_status.h"

namespace ppc::runtime {

struct StageRuntime::Program {
  ir::StageProgram code;
  SlotTable slots;
  std::vector<Handler> handlers;  // handlers[i] runs code.instructions(i)
  bool training = false;  // has backwards: forwards keep the autograd graph
  bool eval = false;      // evaluation: dropout off, accuracy and predictions kept
  // The (virtual stage, micro-batch)s whose backward is split into I and W: their
  // forwards note the layers with parameters for the I.
  std::set<std::pair<int, int>> split;
  // The first instruction past the compute and transfers (a reduction, clipping, the
  // optimizer), or the end: where measuring activations stops.
  int backwards_end = 0;
};

StageRuntime::StageRuntime() : train_(std::make_unique<Program>()), eval_(std::make_unique<Program>()) {}
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
  auto grid = ir::Grid::Of(plan);
  if (!grid.ok()) return Annotate(grid.status(), absl::StrCat(who, ": cannot load the plan"));
  rt->grid_ = *grid;
  rt->num_stages_ = rt->grid_.stages();
  rt->dp_ = plan.topology().data_parallel();
  rt->m_ = plan.config().micro_batches();
  const int world = rt->grid_.world_size();
  if (world != transport->world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": the plan needs ", world, " ranks (", rt->num_stages_,
                                                   " stages x ", rt->dp_, " data-parallel) but the world has ",
                                                   transport->world_size()));
  }
  rt->stage_ = rt->grid_.StageOfRank(rt->rank_);
  // The same structural rules the verifier applies, for the shared parts of the plan
  // and this stage's programs (the launcher verified the whole plan once), before
  // anything is allocated: everything below may index, size and allocate from them.
  absl::Status structure = ir::CheckStageStructure(plan, rt->stage_);
  if (!structure.ok()) {
    return Annotate(structure, absl::StrCat(who, " stage ", rt->stage_, ": cannot load the plan"));
  }
  rt->replica_ = rt->grid_.ReplicaOfRank(rt->rank_);
  rt->first_ = rt->grid_.StageOf(0) == rt->stage_;
  rt->last_ = rt->grid_.StageOf(rt->grid_.virtual_stages() - 1) == rt->stage_;
  Program& train = *rt->train_;
  train.code = plan.programs(rt->stage_);
  for (const auto& in : train.code.instructions()) {
    train.training |= in.has_compute() && in.compute().kind() != ir::FORWARD;
  }
  if (plan.eval_programs_size() > 0) {
    rt->eval_->code = plan.eval_programs(rt->stage_);
  } else if (!train.training) {
    rt->eval_->code = train.code;  // an inference plan evaluates with its own programs
  }
  rt->eval_->eval = true;
  RETURN_IF_ERROR(rt->Validate(plan));
  return rt;
}

absl::Status StageRuntime::Validate(const ir::Plan& plan) {
  std::vector<std::string> problems;
  const std::string who = absl::StrCat("rank ", rank_, " stage ", stage_);
  RETURN_IF_ERROR(CheckMemory(plan, who));
  model_ = StageModel::Build(plan, grid_, stage_, problems);
  device_ = options_.device;
  comm_ = std::make_unique<CommEngine>(transport_, plan, grid_, replica_, options_.timeout, device_);

  // Instructions of the training program and, when there is one, the eval program.
  std::vector<std::vector<int>> tie_groups;
  Compile(*train_, problems, tie_groups);
  CommEngine::CheckChannels(plan, grid_, stage_, replica_, /*eval=*/false, problems);
  if (can_eval()) {
    Compile(*eval_, problems, tie_groups);
    if (plan.eval_programs_size() > 0) CommEngine::CheckChannels(plan, grid_, stage_, replica_, /*eval=*/true, problems);
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
  for (const auto& in : train_->code.instructions()) sharded |= in.has_optimizer_step() && in.optimizer_step().sharded();
  const int64_t numel = model_->NumParameters();
  const int64_t shard = sharded ? std::max<int64_t>(1, (numel + dp_ - 1) / dp_) : numel;
  model_->Flatten(sharded ? shard * dp_ : numel, device_);
  if (train_->training) {
    auto opt = StageOptimizer::Create(plan.config().optimizer(), model_->distinct_params(), model_->flat_params(),
                                      model_->flat_grads(), sharded ? replica_ : 0, sharded ? dp_ : 1);
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
  for (const auto& in : train_->code.instructions()) clips |= in.has_clip_grad_norm();
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

void StageRuntime::Compile(Program& program, std::vector<std::string>& problems,
                           std::vector<std::vector<int>>& tie_groups) {
  // ir::CheckPlanStructure has checked every index, virtual stage, boundary and slot.
  // What is left is what this runtime relies on to run: the groups of tied weights,
  // every post followed by one wait, every sharded step by its gather.
  const ir::StageProgram& code = program.code;
  const std::string who = absl::StrCat("rank ", rank_, " stage ", stage_, program.eval ? " eval program" : "");
  program.slots = SlotTable(code.num_slots());
  using CommKey = std::tuple<bool, int, int, int>;  // (send, direction, boundary, micro-batch)
  std::set<CommKey> posted;  // not yet waited
  Program* saved = running_;
  running_ = &program;  // so that Where names the program
  program.split.clear();
  program.backwards_end = code.instructions_size();
  for (int i = code.instructions_size() - 1; i >= 0; --i) {
    const ir::Instruction& in = code.instructions(i);
    if (in.has_compute() && in.compute().kind() == ir::BACKWARD_INPUT) {
      program.split.insert({in.compute().virtual_stage(), in.compute().micro_batch()});
    }
    if (in.has_reduce_tied_grads() || in.has_reduce_grads() || in.has_clip_grad_norm() || in.has_optimizer_step() ||
        in.has_gather_params()) {
      program.backwards_end = i;
    }
  }
  // Every deferred W's batch is computed by a later W of its virtual stage without the
  // mark, before the gradients are reduced, clipped or stepped.
  std::map<int, int> open_batch;  // virtual stage -> its first deferred W not yet computed
  for (int i = 0; i < program.backwards_end; ++i) {
    const ir::Instruction& in = code.instructions(i);
    if (!in.has_compute() || in.compute().kind() != ir::BACKWARD_WEIGHT) continue;
    if (in.compute().deferred()) {
      open_batch.try_emplace(in.compute().virtual_stage(), i);
    } else {
      open_batch.erase(in.compute().virtual_stage());
    }
  }
  for (const auto& [vs, i] : open_batch) {
    problems.push_back(absl::StrCat(Where(i, code.instructions(i), -1), ": defers the weight backward of virtual stage ",
                                    vs, " but no W of it without the deferred mark computes the batch before the "
                                    "gradients are reduced or stepped"));
  }
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
        if (model_->TiedWeight(r.tie_key()) == nullptr) {
          bad(absl::StrCat("this stage holds no weight tied as '", r.tie_key(), "'"));
        }
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
    program.handlers.push_back(Resolve(program, in));
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

StageRuntime::Handler StageRuntime::Resolve(Program& program, const ir::Instruction& in) {
  // Everything an instruction names is looked up here, once; a handler only checks what
  // Load cannot know (what its slot holds when it runs) and does the work.
  SlotTable& slots = program.slots;
  switch (in.op_case()) {
    case ir::Instruction::kLoadMicroBatch: {
      const auto& l = in.load_micro_batch();
      Slot* slot = slots.at(l.slot());
      const int mb = l.micro_batch();
      const bool inputs = l.inputs(), labels = l.labels();
      // Inputs are the first virtual stage's, labels the last's (one on a single stage).
      const int vs = inputs ? 0 : grid_.virtual_stages() - 1;
      return [this, &program, slot, mb, vs, inputs, labels](int64_t step) -> absl::Status {
        // Looked up per run: RunEval opens the held-out data on first use.
        DataSource* data = program.eval ? eval_data_.get() : data_.get();
        if (data == nullptr) {  // the structural checks put loads on the stages that have data
          return absl::InternalError("unreachable: a load on a stage without data passed Load");
        }
        ASSIGN_OR_RETURN(MicroBatch b, data->Load(step, int64_t(replica_) * m_ + mb, inputs, labels));
        slot->Claim(vs, mb);
        // Data is made (or read) on the CPU, the same values whatever the device.
        if (inputs) slot->inputs = {b.inputs.to(device_)};
        if (labels) slot->labels = b.labels.to(device_);
        return absl::OkStatus();
      };
    }
    case ir::Instruction::kCompute: {
      const auto& c = in.compute();
      Slot* slot = slots.at(c.slot());
      const int vs = c.virtual_stage(), mb = c.micro_batch();
      if (c.kind() == ir::FORWARD) {
        return [this, &program, slot, vs, mb](int64_t step) { return Forward(program, *slot, vs, mb, step); };
      }
      // Gradients of every FLOAT32 output arrive before a backward, except on the last
      // virtual stage (whose root is the loss).
      const size_t output_grads =
          grid_.IsLast(vs) ? 0 : comm_->Resolve(false, ir::GRADIENT, grid_.OutputBoundary(vs), mb).shapes->size();
      const ir::ComputeKind kind = c.kind();
      const bool deferred = c.deferred();
      return [this, slot, kind, vs, mb, output_grads, deferred](int64_t) {
        return Backward(*slot, kind, vs, mb, output_grads, deferred);
      };
    }
    // Posts never block; the Wait that the verifier placed completes them.
    case ir::Instruction::kSend: {
      const auto& s = in.send();
      Slot* slot = slots.at(s.slot());
      const CommEngine::Transfer t = comm_->Resolve(true, s.direction(), s.boundary(), s.micro_batch());
      const int vs = grid_.SenderOf(s.direction(), s.boundary());
      return [this, slot, t, vs](int64_t) -> absl::Status {
        // A send reads what the slot holds: it must be this transfer's micro-batch.
        RETURN_IF_ERROR(slot->Expect(vs, t.micro_batch));
        return comm_->PostSend(t, t.direction == ir::ACTIVATION ? slot->outputs : slot->grad_out, slot->Name());
      };
    }
    case ir::Instruction::kRecv: {
      const auto& r = in.recv();
      const CommEngine::Transfer t = comm_->Resolve(false, r.direction(), r.boundary(), r.micro_batch());
      const int slot = r.slot();
      return [this, t, slot](int64_t) { return comm_->PostRecv(t, slot); };
    }
    case ir::Instruction::kWait: {
      std::vector<CommEngine::Transfer> transfers;
      for (const auto& ref : in.wait().ops()) {
        transfers.push_back(comm_->Resolve(ref.send(), ref.direction(), ref.boundary(), ref.micro_batch()));
      }
      return [this, &slots, transfers](int64_t) -> absl::Status {
        for (const CommEngine::Transfer& t : transfers) {
          ASSIGN_OR_RETURN(CommEngine::Received r, comm_->Wait(t));
          if (t.send) continue;
          // The data lands at the wait, claiming the slot for the receiving virtual stage.
          Slot* slot = slots.at(r.slot);
          slot->Claim(grid_.ReceiverOf(t.direction, t.boundary), t.micro_batch);
          (t.direction == ir::ACTIVATION ? slot->inputs : slot->grad_in) = std::move(r.tensors);
        }
        return absl::OkStatus();
      };
    }
    case ir::Instruction::kReduceTiedGrads: {
      const auto& r = in.reduce_tied_grads();
      const torch::Tensor* weight = model_->TiedWeight(r.tie_key());  // Compile reports a missing one
      const std::vector<int> group = grid_.StagesGroup({r.stages().begin(), r.stages().end()}, replica_);
      return [this, weight, group](int64_t) {
        std::vector<at::Tensor> t{weight->grad()};
        return transport_->AllReduceSum(t, group, options_.timeout);
      };
    }
    case ir::Instruction::kReduceGrads:
      return [this](int64_t) -> absl::Status {
        // Every gradient is a view of the flat buffer: one all-reduce, in place.
        std::vector<at::Tensor> t{model_->flat_grads()};
        RETURN_IF_ERROR(transport_->AllReduceSum(t, dp_group_, options_.timeout));
        model_->flat_grads().div_(dp_);
        return absl::OkStatus();
      };
    case ir::Instruction::kClipGradNorm: {
      const double max_norm = in.clip_grad_norm().max_norm();
      return [this, max_norm](int64_t) -> absl::Status {
        // This stage's share of the squared norm (each tied weight counted once), summed
        // over the pipeline.
        torch::Tensor sq = model_->SquaredGradNorm();
        if (num_stages_ > 1) {
          std::vector<at::Tensor> t{sq};
          RETURN_IF_ERROR(transport_->AllReduceSum(t, pipeline_group_, options_.timeout));
        }
        // On the device, without a host sync: coef = max_norm / (norm + 1e-6) in float64,
        // capped at 1 (x * 1 = x exactly), then applied as float32, as a scalar would be.
        torch::NoGradGuard no_grad;
        last_grad_norm_ = sq.sqrt();
        torch::Tensor coef = (max_norm / (last_grad_norm_ + 1e-6)).clamp_max(1.0).to(torch::kFloat32).reshape({});
        model_->ScaleGrads(coef);
        return absl::OkStatus();
      };
    }
    case ir::Instruction::kOptimizerStep:
      return [this](int64_t) {
        // Sharded (ZeRO-1): updates this replica's slice; GatherParams follows.
        optimizer_->Step();
        return absl::OkStatus();
      };
    case ir::Instruction::kGatherParams:
      return [this](int64_t) {
        // Every replica keeps only its own updated slice and zeroes the rest; one in-place
        // sum over the replicas then leaves every replica with every slice (x + 0 = x
        // exactly), without a second parameter-sized buffer.
        const int64_t shard = optimizer_->shard_size();
        const torch::Tensor& flat = model_->flat_params();
        torch::NoGradGuard no_grad;
        if (replica_ > 0) flat.narrow(0, 0, replica_ * shard).zero_();
        if (replica_ + 1 < dp_) flat.narrow(0, (replica_ + 1) * shard, (dp_ - replica_ - 1) * shard).zero_();
        std::vector<at::Tensor> t{flat};
        return transport_->AllReduceSum(t, dp_group_, options_.timeout);
      };
    case ir::Instruction::OP_NOT_SET:
      break;
  }
  return [](int64_t) { return absl::InternalError("unreachable: empty instruction passed Load"); };
}

absl::Status StageRuntime::Execute(Program& program, int64_t step) {
  running_ = &program;
  // Accumulated on the device: the host reads them once, after the program.
  loss_sum_ = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  correct_ = torch::zeros({1}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  predictions_ = 0;
  comm_->Reset();
  program.slots.Clear();
  deferred_w_.clear();
  // Measuring activations: what is held between instructions above what was live at
  // the start, up to program.backwards_end (reductions and the optimizer's buffers are
  // not activations); and the peak within instructions (with the kernels' temporaries,
  // e.g. a weight gradient before it is accumulated).
  MemoryMeter* meter = &program == train_.get() ? MemoryMeter::Current() : nullptr;
  const int64_t base = meter != nullptr ? meter->live() : 0;
  if (meter != nullptr) meter->ResetPeak();
  auto measure = [&](size_t done) {  // after `done` instructions
    if (meter == nullptr) return;
    measured_activation_bytes_ = std::max(measured_activation_bytes_, meter->live() - base);
    if (done == static_cast<size_t>(program.backwards_end)) {
      measured_peak_bytes_ = std::max(measured_peak_bytes_, meter->peak() - base);
      meter = nullptr;
    }
  };
  measure(0);
  const bool inject = options_.fault_signal != 0 && &program == train_.get() && step == options_.fault_step;
  const bool trace = options_.trace && &program == train_.get();
  auto now_us = [this] {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - trace_origin_).count();
  };
  std::map<std::string, double> posted_at;  // a transfer's CommRef text -> when it was posted
  for (size_t i = 0; i < program.handlers.size(); ++i) {
    const double began = trace ? now_us() : 0;
    if (inject && program.code.instructions(i).op_case() == options_.fault_op) {
      std::fprintf(stderr, "pprun: rank %d: PPRUN_FAULT_INJECT: signal %d at instruction %zu of step %lld\n", rank_,
                   options_.fault_signal, i, static_cast<long long>(step + 1));
      raise(options_.fault_signal);
    }
    absl::Status s;
    absl::Status thrown = TorchCall([&] { s = program.handlers[i](step); });
    if (!thrown.ok()) s = thrown;
    if (!s.ok()) return Annotate(s, Where(static_cast<int>(i), program.code.instructions(i), step));
    ++executed_;
    measure(i + 1);
    if (trace) {
      const ir::Instruction& in = program.code.instructions(i);
      const double ended = now_us();
      trace_.push_back(absl::StrFormat(
          R"json({"name":"%s","ph":"X","pid":%d,"tid":0,"ts":%.1f,"dur":%.1f,"args":{"step":%d,"index":%d}})json",
          absl::StrReplaceAll(ir::PrintInstruction(in), {{"\\", "\\\\"}, {"\"", "\\\""}}), rank_, began, ended - began,
          step + 1, i));
      if (in.has_send() || in.has_recv()) {
        ir::CommRef ref;
        ref.set_send(in.has_send());
        ref.set_direction(in.has_send() ? in.send().direction() : in.recv().direction());
        ref.set_boundary(in.has_send() ? in.send().boundary() : in.recv().boundary());
        ref.set_micro_batch(in.has_send() ? in.send().micro_batch() : in.recv().micro_batch());
        posted_at[ir::CommRefText(ref)] = began;
      }
      for (const auto& ref : in.wait().ops()) {  // none unless a wait
        const std::string name = ir::CommRefText(ref);
        auto it = posted_at.find(name);
        if (it == posted_at.end()) continue;
        const std::string id = absl::StrCat(step + 1, ":", name);
        trace_.push_back(absl::StrFormat(R"json({"name":"%s","cat":"transfer","ph":"b","id":"%s","pid":%d,"tid":1,"ts":%.1f})json",
                                         name, id, rank_, it->second));
        trace_.push_back(absl::StrFormat(R"json({"name":"%s","cat":"transfer","ph":"e","id":"%s","pid":%d,"tid":1,"ts":%.1f})json",
                                         name, id, rank_, ended));
        posted_at.erase(it);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status StageRuntime::Forward(const Program& program, Slot& slot, int vs, int mb, int64_t step) {
  RETURN_IF_ERROR(slot.Expect(vs, mb));
  const bool last = grid_.IsLast(vs);
  if (slot.forwarded) return absl::FailedPreconditionError(absl::StrCat(slot.Name(), " is already forwarded"));
  if (slot.inputs.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        slot.Name(), " has no inputs (", grid_.IsFirst(vs) ? "not loaded" : "its receive is not waited for", ")"));
  }
  if (last && !slot.labels.defined()) {
    return absl::FailedPreconditionError(absl::StrCat(slot.Name(), " has no labels (not loaded)"));
  }
  slot.forwarded = true;
  // Dropout only while training.
  const ForwardContext ctx{plan_.config().seed(), step, int64_t(replica_) * m_ + mb, program.training};
  torch::Tensor loss;
  const bool split = program.split.count({vs, mb}) > 0;
  Group y = model_->Forward(vs, std::move(slot.inputs), slot.labels, ctx, program.training ? &slot.saved : nullptr,
                            &loss, split);
  slot.inputs.clear();
  if (!last) {
    slot.outputs = std::move(y);
    return absl::OkStatus();
  }
  loss_sum_ += loss.detach();  // float32, summed in float64
  if (program.eval) {
    const torch::Tensor& out = y[0];
    if (plan_.model().loss() == ir::CROSS_ENTROPY) {
      correct_ += out.reshape({-1, out.size(-1)}).argmax(1).eq(slot.labels.reshape({-1})).sum();
      predictions_ += out.numel() / out.size(-1);
    }
    if (options_.keep_predictions) {
      predicted_.push_back(out.detach().clone());
      predicted_labels_.push_back(slot.labels);
    }
  }
  return absl::OkStatus();
}

absl::Status StageRuntime::Backward(Slot& slot, ir::ComputeKind kind, int vs, int mb, size_t output_grads,
                                    bool deferred) {
  RETURN_IF_ERROR(slot.Expect(vs, mb));
  if (!slot.forwarded) return absl::FailedPreconditionError(absl::StrCat(slot.Name(), " is not forwarded"));
  if (!slot.saved.has_forward()) {
    return absl::FailedPreconditionError(absl::StrCat(slot.Name(), " is already backwarded"));
  }
  if (kind == ir::BACKWARD_WEIGHT && !slot.saved.input_done) {
    return absl::FailedPreconditionError(absl::StrCat(slot.Name(), ": W before its I (input backward)"));
  }
  if (kind != ir::BACKWARD_WEIGHT && slot.saved.input_done) {
    return absl::FailedPreconditionError(absl::StrCat(slot.Name(), ": its I already ran; only W may follow"));
  }
  if (kind == ir::BACKWARD_INPUT && !slot.saved.split) {
    return absl::InternalError(absl::StrCat(slot.Name(), ": I on a forward that was not run for a split backward"));
  }
  if (kind != ir::BACKWARD_WEIGHT && slot.grad_in.size() != output_grads) {
    return absl::FailedPreconditionError(absl::StrCat(slot.Name(), " has ", slot.grad_in.size(),
                                                      " received gradients, not ", output_grads,
                                                      " (its gradient receive is not waited for)"));
  }
  auto batch = deferred_w_.find(vs);
  if (kind == ir::BACKWARD_WEIGHT && (deferred || batch != deferred_w_.end())) {
    // A deferred W hands over what its I kept; the next plain W of the virtual stage
    // computes the batch: every deferred one before it and itself.
    std::vector<WeightWork>& work = deferred_w_[vs];
    for (WeightWork& w : slot.saved.weight_work) work.push_back(std::move(w));
    slot.saved.Clear();
    if (!deferred) {
      model_->BatchedWeightBackward(work);
      deferred_w_.erase(vs);
    }
    return absl::OkStatus();
  }
  Group input_grads = model_->Backward(kind, vs, slot.saved, slot.grad_in);
  if (kind != ir::BACKWARD_WEIGHT) slot.grad_out = std::move(input_grads);
  // I consumed the received gradients and the labels (W works from what I kept).
  if (kind == ir::BACKWARD_INPUT) {
    slot.grad_in.clear();
    slot.outputs.clear();
    slot.labels = torch::Tensor();
  }
  if (kind != ir::BACKWARD_INPUT) {
    // The forward state is consumed; the outputs were sent (a send keeps its own copy).
    slot.outputs.clear();
    slot.grad_in.clear();
    slot.labels = torch::Tensor();
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
  const int64_t bytes = mul(4, add(add(mul(3, params), state), mul(std::max(1, train_->code.num_slots()), activations)));
  const int64_t available = AvailableMemory();
  if (available >= 0 && bytes > available) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s needs about %.1f GiB (%d parameters with their gradients and %s optimizer state, activations of %d "
        "micro-batches of %d) but the machine has %.1f GiB available; use more stages, a smaller "
        "micro_batch_size or fewer micro-batches in flight",
        who, bytes / 1073741824.0, params, o.type().empty() ? "sgd" : o.type(), train_->code.num_slots(), mbs,
        available / 1073741824.0));
  }
  return absl::OkStatus();
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

absl::StatusOr<StepResult> StageRuntime::RunStep(int64_t step) {
  RETURN_IF_ERROR(Execute(*train_, step));
  // Every rank reports the same loss: the last stage's mean over micro-batches,
  // averaged over replicas by one all-reduce across the world.
  StepResult result;
  result.samples = int64_t(m_) * plan_.config().micro_batch_size() * dp_;
  // The one host sync of a step: reading the loss at the end.
  torch::Tensor loss = last_ ? loss_sum_ / m_ / dp_ : torch::zeros_like(loss_sum_);
  if (transport_->world_size() > 1) {
    std::vector<at::Tensor> t{loss};
    absl::Status s = transport_->AllReduceSum(t, world_group_, options_.timeout);
    if (!s.ok()) return Annotate(s, absl::StrCat("rank ", rank_, " stage ", stage_, " step ", step + 1, " loss all-reduce"));
  }
  result.loss = loss[0].item<double>();
  return result;
}

bool StageRuntime::can_eval() const { return eval_->code.instructions_size() > 0; }

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
  RETURN_IF_ERROR(Execute(*eval_, index));
  // Sums over the world: the last stage's per-micro-batch mean losses and correct
  // predictions, so every rank reports the same numbers.
  EvalResult result;
  result.samples = int64_t(m_) * plan_.config().micro_batch_size() * dp_;
  torch::Tensor sums = torch::zeros({3}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  if (last_) {
    sums.narrow(0, 0, 1).copy_(loss_sum_);
    sums.narrow(0, 1, 1).copy_(correct_);
    sums[2].fill_(static_cast<double>(predictions_));
  }
  if (transport_->world_size() > 1) {
    std::vector<at::Tensor> t{sums};
    absl::Status s = transport_->AllReduceSum(t, world_group_, options_.timeout);
    if (!s.ok()) return Annotate(s, absl::StrCat(who, " eval batch ", index + 1, " all-reduce"));
  }
  torch::Tensor host = sums.cpu();
  result.loss = host[0].item<double>() / m_ / dp_;
  // Per prediction: a sample of a classifier, a position of a sequence model.
  if (plan_.model().loss() == ir::CROSS_ENTROPY) result.accuracy = host[1].item<double>() / host[2].item<double>();
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
  p.outputs = outputs.reshape(out_shape).cpu();
  const int64_t label_dims = labels.dim() - (dp_ > 1 ? 4 : 2);
  std::vector<int64_t> label_shape{-1};
  label_shape.insert(label_shape.end(), labels.sizes().end() - label_dims, labels.sizes().end());
  p.labels = labels.reshape(label_shape).cpu();
  return std::optional<Predictions>(std::move(p));
}

std::vector<int> StageRuntime::HeldLayers() const { return model_->HeldLayers(); }

std::vector<NamedParameter> StageRuntime::Parameters() const { return model_->Parameters(); }

std::vector<NamedParameter> StageRuntime::DistinctParameters() const { return model_->DistinctParameters(); }

absl::Status StageRuntime::SetParameter(int layer, const std::string& name, const torch::Tensor& value) {
  return model_->SetParameter(layer, name, value, absl::StrCat("stage ", stage_));
}

absl::StatusOr<std::vector<std::map<std::string, torch::Tensor>>> StageRuntime::OptimizerStatePerParameter() {
  std::vector<std::map<std::string, torch::Tensor>> out(model_->distinct_params().size());
  if (!optimizer_) return out;
  if (!optimizer_->sharded()) {
    for (size_t i = 0; i < model_->distinct_params().size(); ++i) out[i] = optimizer_->ParameterState(i);
    return out;
  }
  for (const std::string& name : optimizer_->StateNames()) {
    torch::Tensor local = optimizer_->LocalState(name);
    // Only replica 0 (which writes the stage's files) holds the whole state, briefly.
    torch::Tensor all = replica_ == 0 ? torch::empty({local.numel() * dp_}, local.options()) : torch::Tensor();
    absl::Status s = transport_->Gather(local, all, dp_group_[0], dp_group_, options_.timeout);
    if (!s.ok()) return Annotate(s, absl::StrCat("rank ", rank_, " stage ", stage_, ": gathering optimizer state"));
    if (replica_ != 0) continue;
    int64_t off = 0;
    for (size_t i = 0; i < model_->distinct_params().size(); ++i) {
      const int64_t n = model_->distinct_params()[i].numel();
      out[i][name] = all.narrow(0, off, n).view(model_->distinct_params()[i].sizes());
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

absl::Status StageRuntime::WriteTrace(const std::string& path) const {
  std::string json = "{\"traceEvents\":[\n";
  absl::StrAppend(&json, absl::StrFormat(R"json({"name":"process_name","ph":"M","pid":%d,"args":{"name":"rank %d stage %d (%s)"}},)json",
                                         rank_, rank_, stage_, device_.str()),
                  "\n");
  absl::StrAppend(&json, absl::StrFormat(R"json({"name":"thread_name","ph":"M","pid":%d,"tid":0,"args":{"name":"program"}},)json",
                                         rank_),
                  "\n");
  absl::StrAppend(&json,
                  absl::StrFormat(R"json({"name":"thread_name","ph":"M","pid":%d,"tid":1,"args":{"name":"in flight"}})json", rank_));
  for (const std::string& e : trace_) absl::StrAppend(&json, ",\n", e);
  absl::StrAppend(&json, "\n]}\n");
  return ir::WriteFile(path, json);
}

int64_t StageRuntime::ParameterBytes() const { return model_->ParameterBytes(); }

int64_t StageRuntime::OptimizerStateBytes() const { return optimizer_ ? optimizer_->StateBytes() : 0; }

}  // namespace ppc::runtime
