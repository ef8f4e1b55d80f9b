#include "passes/lower/insert_p2p.h"

#include <vector>

#include "ir/status_macros.h"
#include "passes/plan_util.h"

namespace ppc::passes {
namespace {

template <typename Msg>
void FillComm(Msg* m, int mb, int slot, int peer, const std::vector<int64_t>& shape, ir::DType dtype) {
  m->set_micro_batch(mb);
  m->set_chunk(0);
  m->set_slot(slot);
  m->set_peer(peer);
  for (int64_t d : shape) m->add_shape(d);
  m->set_dtype(dtype);
}

struct Pending {
  ir::CommKind kind;
  int mb;
  int slot;
};

ir::Instruction MakeWait(const std::vector<Pending>& ops) {
  ir::Instruction in;
  for (const Pending& p : ops) {
    ir::CommRef* ref = in.mutable_wait()->add_ops();
    ref->set_kind(p.kind);
    ref->set_micro_batch(p.mb);
    ref->set_chunk(0);
  }
  return in;
}

}  // namespace

absl::StatusOr<bool> InsertP2P::Run(ir::Plan& plan) {
  RETURN_IF_ERROR(RequireSchedule(plan, "insert-p2p"));
  RETURN_IF_ERROR(RequireShapes(plan, "insert-p2p"));
  const int p = plan.topology().num_stages();
  if (p == 1) return false;
  bool changed = false;
  for (ir::StageProgram& prog : *plan.mutable_programs()) {
    const int s = prog.stage();
    bool already = false;
    for (const auto& in : prog.instructions()) already |= in.has_wait();
    if (already) continue;
    const ir::TensorSpec in_spec = StageInput(plan, s);
    const ir::TensorSpec out_spec = StageOutput(plan, s);
    const std::vector<int64_t> in_shape = BatchShape(plan, in_spec);
    const std::vector<int64_t> out_shape = BatchShape(plan, out_spec);
    google::protobuf::RepeatedPtrField<ir::Instruction> out;
    std::vector<Pending> pending;  // posted sends not yet waited
    std::vector<bool> grad_received;
    // Waits for pending sends that hold `slot` for another micro-batch.
    auto flush_slot = [&](int slot, int mb) {
      std::vector<Pending> done, keep;
      for (const Pending& q : pending) (q.slot == slot && q.mb != mb ? done : keep).push_back(q);
      if (!done.empty()) *out.Add() = MakeWait(done);
      pending = keep;
    };
    for (const ir::Instruction& in : prog.instructions()) {
      if (in.has_load_micro_batch()) flush_slot(in.load_micro_batch().slot(), in.load_micro_batch().micro_batch());
      if (in.has_forward()) {
        const int mb = in.forward().micro_batch(), slot = in.forward().slot();
        flush_slot(slot, mb);
        if (s > 0) {
          ir::Instruction recv;
          FillComm(recv.mutable_recv_activation(), mb, slot, s - 1, in_shape, in_spec.dtype());
          *out.Add() = recv;
          *out.Add() = MakeWait({{ir::RECV_ACTIVATION, mb, slot}});
        }
        *out.Add() = in;
        if (s < p - 1) {
          ir::Instruction send;
          FillComm(send.mutable_send_activation(), mb, slot, s + 1, out_shape, out_spec.dtype());
          *out.Add() = send;
          pending.push_back({ir::SEND_ACTIVATION, mb, slot});
        }
        changed = true;
        continue;
      }
      if (in.has_backward()) {
        const int mb = in.backward().micro_batch(), slot = in.backward().slot();
        flush_slot(slot, mb);
        if (static_cast<int>(grad_received.size()) <= mb) grad_received.resize(mb + 1, false);
        if (s < p - 1 && !grad_received[mb]) {
          ir::Instruction recv;
          FillComm(recv.mutable_recv_grad(), mb, slot, s + 1, out_shape, ir::FLOAT32);
          *out.Add() = recv;
          *out.Add() = MakeWait({{ir::RECV_GRAD, mb, slot}});
          grad_received[mb] = true;
        }
        *out.Add() = in;
        if (s > 0 && in.backward().part() != ir::WEIGHT_ONLY) {
          ir::Instruction send;
          FillComm(send.mutable_send_grad(), mb, slot, s - 1, in_shape, ir::FLOAT32);
          *out.Add() = send;
          pending.push_back({ir::SEND_GRAD, mb, slot});
        }
        continue;
      }
      *out.Add() = in;
    }
    if (!pending.empty()) *out.Add() = MakeWait(pending);
    prog.mutable_instructions()->Swap(&out);
  }
  return changed;
}

}  // namespace ppc::passes
