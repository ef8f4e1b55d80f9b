// The compiler's in-memory plan. A Module is a Plan (ir/program.proto) whose stage
// programs are flat arrays of 20-byte Ops instead of protobuf messages: the passes, the
// verifier and the simulator read and write them, and protobuf is only the file format
// (and what the runtime loads). An Op is what an ir::Instruction is, field for field, with
// nothing allocated per instruction, so lowering a pipeline of 256 stages x 4096
// micro-batches (12.6M instructions) costs a few hundred milliseconds, not tens of seconds.
//
// The two forms convert both ways without loss (ToModule, ToPlan): every int32 field and
// every enum value, valid or not, survives, so the structural checks and the verifier
// see in a Module exactly what the runtime would see in the Plan. EncodePlan writes a
// Module as the bytes the Plan's deterministic protobuf serialization would be, without
// building the Plan.
#ifndef PPC_IR_MODULE_H_
#define PPC_IR_MODULE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "ir/program.pb.h"

namespace ppc::ir {

// The instruction kinds, numbered as Instruction::OpCase (0: an empty instruction).
enum class OpCode : uint8_t {
  kNone = Instruction::OP_NOT_SET,
  kLoadMicroBatch = Instruction::kLoadMicroBatch,
  kCompute = Instruction::kCompute,
  kSend = Instruction::kSend,
  kRecv = Instruction::kRecv,
  kWait = Instruction::kWait,
  kReduceTiedGrads = Instruction::kReduceTiedGrads,
  kReduceGrads = Instruction::kReduceGrads,
  kClipGradNorm = Instruction::kClipGradNorm,
  kOptimizerStep = Instruction::kOptimizerStep,
  kGatherParams = Instruction::kGatherParams,
};

// One posted transfer as a Wait names it (ir::CommRef).
struct Ref {
  bool send = false;
  uint8_t unused[3] = {0, 0, 0};  // always 0 (Ops and Refs are hashed as they are)
  int32_t direction = 0;          // ir::Direction
  int32_t boundary = 0;
  int32_t micro_batch = 0;

  Direction dir() const { return static_cast<Direction>(direction); }
  bool operator==(const Ref& o) const {
    return send == o.send && direction == o.direction && boundary == o.boundary && micro_batch == o.micro_batch;
  }
};

// One instruction. Which fields mean what depends on `code`:
//   kLoadMicroBatch  micro_batch, slot; flags: kInputs, kLabels
//   kCompute         kind (ComputeKind), index = virtual stage, micro_batch, slot;
//                    flags: kDeferred
//   kSend, kRecv     kind (Direction), index = boundary, micro_batch, slot
//   kWait            index = its first Ref in Program::refs, micro_batch = how many
//   kReduceTiedGrads, kClipGradNorm
//                    index = its message in Program::collectives (the rare instructions
//                    with strings and lists stay protobuf messages)
//   kOptimizerStep   flags: kSharded
//   kReduceGrads, kGatherParams  nothing
// Unused fields are 0. Build Ops with the factories below and Program::AddWait /
// Program::AddCollective.
struct Op {
  static constexpr uint8_t kInputs = 1, kLabels = 2, kSharded = 1, kDeferred = 1;

  OpCode code = OpCode::kNone;
  uint8_t flags = 0;
  uint16_t unused = 0;  // always 0
  int32_t kind = 0;
  int32_t index = 0;
  int32_t micro_batch = 0;
  int32_t slot = 0;

  static Op Load(int micro_batch, int slot, bool inputs, bool labels) {
    Op op;
    op.code = OpCode::kLoadMicroBatch;
    op.flags = static_cast<uint8_t>((inputs ? kInputs : 0) | (labels ? kLabels : 0));
    op.micro_batch = micro_batch;
    op.slot = slot;
    return op;
  }
  static Op Compute(ComputeKind kind, int virtual_stage, int micro_batch, int slot = 0, bool deferred = false) {
    return Op{OpCode::kCompute, static_cast<uint8_t>(deferred ? kDeferred : 0), 0, kind, virtual_stage, micro_batch,
              slot};
  }
  static Op Transfer(bool send, Direction direction, int boundary, int micro_batch, int slot) {
    return Op{send ? OpCode::kSend : OpCode::kRecv, 0, 0, direction, boundary, micro_batch, slot};
  }
  static Op Plain(OpCode code, uint8_t flags = 0) { return Op{code, flags, 0, 0, 0, 0, 0}; }

  bool is(OpCode c) const { return code == c; }
  bool is_transfer() const { return code == OpCode::kSend || code == OpCode::kRecv; }
  ComputeKind compute_kind() const { return static_cast<ComputeKind>(kind); }
  Direction direction() const { return static_cast<Direction>(kind); }
  int virtual_stage() const { return index; }
  int boundary() const { return index; }
  bool inputs() const { return flags & kInputs; }
  bool labels() const { return flags & kLabels; }
  bool sharded() const { return flags & kSharded; }
  bool deferred() const { return flags & kDeferred; }  // kCompute: a W whose batch computes later
  // The transfer a Send/Recv posts, as a Wait names it.
  Ref AsRef() const { return Ref{code == OpCode::kSend, {0, 0, 0}, kind, index, micro_batch}; }

  bool operator==(const Op& o) const {
    return code == o.code && flags == o.flags && kind == o.kind && index == o.index && micro_batch == o.micro_batch &&
           slot == o.slot;
  }
};
static_assert(sizeof(Op) == 20, "Op is hashed as raw bytes: no padding");
static_assert(sizeof(Ref) == 16, "Ref is hashed as raw bytes: no padding");

// One pipeline stage's program (ir::StageProgram).
struct Program {
  int32_t stage = 0;
  int32_t num_slots = 0;
  std::vector<Op> ops;
  // The refs of every Wait, each Wait's contiguous (in any order across Waits).
  std::vector<Ref> refs;
  // ReduceTiedGrads and ClipGradNorm, as Instructions holding that op.
  std::vector<Instruction> collectives;

  int size() const { return static_cast<int>(ops.size()); }
  absl::Span<const Ref> RefsOf(const Op& wait) const {
    return absl::MakeConstSpan(refs.data() + wait.index, static_cast<size_t>(wait.micro_batch));
  }
  const Instruction& CollectiveOf(const Op& op) const { return collectives[op.index]; }
  void Add(const Op& op) { ops.push_back(op); }
  // Appends a Wait on `waited`.
  void AddWait(absl::Span<const Ref> waited);
  // Appends a ReduceTiedGrads or ClipGradNorm held by `instruction`.
  void AddCollective(Instruction instruction);
};

// A Plan in the compiler's form. `header` is everything but the programs: model,
// topology, config, placement, boundary table, level, version, fingerprint, the
// unverified mark; its programs and eval_programs fields are always empty.
struct Module {
  Plan header;
  std::vector<Program> programs;
  std::vector<Program> eval_programs;
};

// Protobuf <-> Module, without loss.
Program ToProgram(const StageProgram& program);
Module ToModule(const Plan& plan);
Module ToModule(Plan&& plan);  // moves the header
// Everything of `plan` but its programs and eval programs (a copy of the header alone).
Plan PlanHeader(const Plan& plan);
StageProgram ToStageProgram(const Program& program);
Plan ToPlan(const Module& module);
// Instruction i of `program` as a protobuf message (for printing and errors).
Instruction ToInstruction(const Program& program, int i);
// ir::PrintInstruction of instruction i.
std::string PrintOp(const Program& program, int i);
// ir::CommRefText of a ref, e.g. "recv/activation/0/3".
std::string RefText(const Ref& ref);

// A message's deterministic protobuf serialization (map entries sorted by key).
std::string DeterministicBytes(const google::protobuf::Message& message);

// The bytes of ToPlan(module)'s deterministic protobuf serialization, written directly.
std::string EncodePlan(const Module& module);
// The same bytes handed to `sink` in pieces (at most one program at a time), so that a
// large plan is never whole in memory twice; stops at the first error of `sink`.
absl::Status EncodePlan(const Module& module, const std::function<absl::Status(absl::string_view)>& sink);

// 64-bit hashes of a Module's parts, for the pipeline's change detection and the
// fingerprint (ir/plan_io.h). Each covers the part's canonical contents: the header as its
// deterministic serialization less the fingerprint field, a program section as its
// programs' stage, num_slots and instructions in order (a Wait with its refs, a
// collective with its message), so where a Wait's refs sit in Program::refs is not part
// of it.
uint64_t HashHeader(const Plan& header);
uint64_t HashPrograms(const std::vector<Program>& programs);

// The three hashes of a module's parts, which is how the pass pipeline sees what a pass
// changed (and what it did not).
struct PartHashes {
  uint64_t header = 0, programs = 0, eval_programs = 0;
  bool operator==(const PartHashes& o) const {
    return header == o.header && programs == o.programs && eval_programs == o.eval_programs;
  }
  bool operator!=(const PartHashes& o) const { return !(*this == o); }
};
PartHashes HashParts(const Module& module);

}  // namespace ppc::ir

#endif  // PPC_IR_MODULE_H_
