#include "ir/module.h"

#include <algorithm>
#include <cstring>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "ir/instruction_text.h"
#include "ir/module_hash.h"
#include "ir/parallel.h"
#include "ir/status_macros.h"

namespace ppc::ir {

void Program::AddWait(absl::Span<const Ref> waited) {
  Op op = Op::Plain(OpCode::kWait);
  op.index = static_cast<int32_t>(refs.size());
  op.micro_batch = static_cast<int32_t>(waited.size());
  refs.insert(refs.end(), waited.begin(), waited.end());
  ops.push_back(op);
}

void Program::AddCollective(Instruction instruction) {
  Op op = Op::Plain(static_cast<OpCode>(instruction.op_case()));
  op.index = static_cast<int32_t>(collectives.size());
  collectives.push_back(std::move(instruction));
  ops.push_back(op);
}

namespace {

void Append(Program& p, const Instruction& in) {
  switch (in.op_case()) {
    case Instruction::kLoadMicroBatch: {
      const LoadMicroBatch& l = in.load_micro_batch();
      p.ops.push_back(Op::Load(l.micro_batch(), l.slot(), l.inputs(), l.labels()));
      return;
    }
    case Instruction::kCompute: {
      const Compute& c = in.compute();
      p.ops.push_back(Op::Compute(c.kind(), c.virtual_stage(), c.micro_batch(), c.slot(), c.deferred()));
      return;
    }
    case Instruction::kSend: {
      const Send& s = in.send();
      p.ops.push_back(Op::Transfer(true, s.direction(), s.boundary(), s.micro_batch(), s.slot()));
      return;
    }
    case Instruction::kRecv: {
      const Recv& r = in.recv();
      p.ops.push_back(Op::Transfer(false, r.direction(), r.boundary(), r.micro_batch(), r.slot()));
      return;
    }
    case Instruction::kWait: {
      Op op = Op::Plain(OpCode::kWait);
      op.index = static_cast<int32_t>(p.refs.size());
      op.micro_batch = in.wait().ops_size();
      for (const CommRef& r : in.wait().ops()) {
        p.refs.push_back(Ref{r.send(), {0, 0, 0}, r.direction(), r.boundary(), r.micro_batch()});
      }
      p.ops.push_back(op);
      return;
    }
    case Instruction::kReduceTiedGrads:
    case Instruction::kClipGradNorm:
      p.AddCollective(in);
      return;
    case Instruction::kOptimizerStep:
      p.ops.push_back(Op::Plain(OpCode::kOptimizerStep, in.optimizer_step().sharded() ? Op::kSharded : 0));
      return;
    case Instruction::kReduceGrads:
    case Instruction::kGatherParams:
    case Instruction::OP_NOT_SET:
      p.ops.push_back(Op::Plain(static_cast<OpCode>(in.op_case())));
      return;
  }
}

template <typename Msg>
void FillTransfer(Msg* m, const Op& op) {
  m->set_direction(op.direction());
  m->set_boundary(op.index);
  m->set_micro_batch(op.micro_batch);
  m->set_slot(op.slot);
}

void FillInstruction(const Program& p, const Op& op, Instruction* in) {
  switch (op.code) {
    case OpCode::kLoadMicroBatch: {
      LoadMicroBatch* l = in->mutable_load_micro_batch();
      l->set_micro_batch(op.micro_batch);
      l->set_slot(op.slot);
      l->set_inputs(op.inputs());
      l->set_labels(op.labels());
      return;
    }
    case OpCode::kCompute: {
      Compute* c = in->mutable_compute();
      c->set_kind(op.compute_kind());
      c->set_virtual_stage(op.index);
      c->set_micro_batch(op.micro_batch);
      c->set_slot(op.slot);
      c->set_deferred(op.deferred());
      return;
    }
    case OpCode::kSend:
      FillTransfer(in->mutable_send(), op);
      return;
    case OpCode::kRecv:
      FillTransfer(in->mutable_recv(), op);
      return;
    case OpCode::kWait: {
      Wait* w = in->mutable_wait();
      for (const Ref& r : p.RefsOf(op)) {
        CommRef* ref = w->add_ops();
        ref->set_send(r.send);
        ref->set_direction(r.dir());
        ref->set_boundary(r.boundary);
        ref->set_micro_batch(r.micro_batch);
      }
      return;
    }
    case OpCode::kReduceTiedGrads:
    case OpCode::kClipGradNorm:
      *in = p.CollectiveOf(op);
      return;
    case OpCode::kReduceGrads:
      in->mutable_reduce_grads();
      return;
    case OpCode::kOptimizerStep:
      in->mutable_optimizer_step()->set_sharded(op.sharded());
      return;
    case OpCode::kGatherParams:
      in->mutable_gather_params();
      return;
    case OpCode::kNone:
      return;
  }
}

std::vector<Program> ToPrograms(const google::protobuf::RepeatedPtrField<StageProgram>& programs) {
  std::vector<Program> out;
  out.reserve(programs.size());
  for (const StageProgram& p : programs) out.push_back(ToProgram(p));
  return out;
}

// --- EncodePlan: protobuf's wire format, written by hand for the programs. ---

// Varint of a uint64 (int32 and enum values are sign-extended to 64 bits first, as
// protobuf encodes them: a negative one takes 10 bytes).
inline size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}
inline uint64_t Int32Bits(int32_t v) { return static_cast<uint64_t>(static_cast<int64_t>(v)); }
inline char* PutVarint(char* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

// Tags of the fields the encoder writes: (field number << 3) | wire type.
constexpr uint8_t kVarint = 0, kLengthDelimited = 2;
constexpr uint8_t Tag(int field, uint8_t wire) { return static_cast<uint8_t>((field << 3) | wire); }

// A proto3 int32/enum/bool field with implicit presence: written when not 0.
inline size_t FieldSize(int32_t v) { return v == 0 ? 0 : 1 + VarintSize(Int32Bits(v)); }
inline char* PutField(char* p, int field, int32_t v) {
  if (v == 0) return p;
  *p++ = static_cast<char>(Tag(field, kVarint));
  return PutVarint(p, Int32Bits(v));
}

// The body of the sub-message an Op is (LoadMicroBatch, Compute, Send, ...), not its tag.
size_t BodySize(const Program& prog, const Op& op, std::string* collective) {
  switch (op.code) {
    case OpCode::kLoadMicroBatch:
      return FieldSize(op.micro_batch) + FieldSize(op.slot) + FieldSize(op.inputs()) + FieldSize(op.labels());
    case OpCode::kCompute:
      return FieldSize(op.kind) + FieldSize(op.index) + FieldSize(op.micro_batch) + FieldSize(op.slot) +
             FieldSize(op.deferred());
    case OpCode::kSend:
    case OpCode::kRecv:
      return FieldSize(op.kind) + FieldSize(op.index) + FieldSize(op.micro_batch) + FieldSize(op.slot);
    case OpCode::kWait: {
      size_t n = 0;
      for (const Ref& r : prog.RefsOf(op)) {
        const size_t ref = FieldSize(r.send) + FieldSize(r.direction) + FieldSize(r.boundary) + FieldSize(r.micro_batch);
        n += 1 + VarintSize(ref) + ref;
      }
      return n;
    }
    case OpCode::kReduceTiedGrads:
    case OpCode::kClipGradNorm: {
      const Instruction& in = prog.CollectiveOf(op);
      const google::protobuf::Message& body = op.code == OpCode::kReduceTiedGrads
                                                  ? static_cast<const google::protobuf::Message&>(in.reduce_tied_grads())
                                                  : in.clip_grad_norm();
      collective->clear();
      body.SerializeToString(collective);  // no map fields: deterministic as it is
      return collective->size();
    }
    case OpCode::kOptimizerStep:
      return FieldSize(op.sharded());
    case OpCode::kReduceGrads:
    case OpCode::kGatherParams:
    case OpCode::kNone:
      return 0;
  }
  return 0;
}

// Instruction message size (the oneof field's tag, length and body), 0 for an empty one.
inline size_t InstructionSize(size_t body, OpCode code) {
  return code == OpCode::kNone ? 0 : 1 + VarintSize(body) + body;
}

char* PutBody(char* p, const Program& prog, const Op& op, const std::string& collective) {
  switch (op.code) {
    case OpCode::kLoadMicroBatch:
      p = PutField(p, 1, op.micro_batch);
      p = PutField(p, 2, op.slot);
      p = PutField(p, 3, op.inputs());
      return PutField(p, 4, op.labels());
    case OpCode::kCompute:
      p = PutField(p, 1, op.kind);
      p = PutField(p, 2, op.index);
      p = PutField(p, 3, op.micro_batch);
      p = PutField(p, 4, op.slot);
      return PutField(p, 5, op.deferred());
    case OpCode::kSend:
    case OpCode::kRecv:
      p = PutField(p, 1, op.kind);
      p = PutField(p, 2, op.index);
      p = PutField(p, 3, op.micro_batch);
      return PutField(p, 4, op.slot);
    case OpCode::kWait:
      for (const Ref& r : prog.RefsOf(op)) {
        const size_t ref = FieldSize(r.send) + FieldSize(r.direction) + FieldSize(r.boundary) + FieldSize(r.micro_batch);
        *p++ = static_cast<char>(Tag(1, kLengthDelimited));
        p = PutVarint(p, ref);
        p = PutField(p, 1, r.send);
        p = PutField(p, 2, r.direction);
        p = PutField(p, 3, r.boundary);
        p = PutField(p, 4, r.micro_batch);
      }
      return p;
    case OpCode::kReduceTiedGrads:
    case OpCode::kClipGradNorm:
      std::memcpy(p, collective.data(), collective.size());
      return p + collective.size();
    case OpCode::kOptimizerStep:
      return PutField(p, 1, op.sharded());
    case OpCode::kReduceGrads:
    case OpCode::kGatherParams:
    case OpCode::kNone:
      return p;
  }
  return p;
}

// Encodes `prog` as field `field` of a Plan (tag, length, StageProgram bytes) into
// `out`, in one pass: the instructions with small bodies (all but Waits and collectives:
// at most 4 fields of 11 bytes) are written with one-byte lengths patched in after their
// bodies; the program's length prefix goes in front once the body is written. Returns
// where in `out` the encoding starts (it ends at out->size()).
size_t EncodeProgram(const Program& prog, int field, std::string* out) {
  constexpr size_t kFront = 16;  // room for the program's tag and length
  std::string scratch;
  size_t bound = kFront + 2 * 11 + 48 * prog.ops.size() + 48 * prog.refs.size();
  for (const Instruction& c : prog.collectives) bound += c.ByteSizeLong() + 24;
  out->resize(bound);
  char* const base = out->data() + kFront;
  char* p = base;
  p = PutField(p, StageProgram::kStageFieldNumber, prog.stage);
  p = PutField(p, StageProgram::kNumSlotsFieldNumber, prog.num_slots);
  constexpr char kInstructionTag = static_cast<char>(Tag(StageProgram::kInstructionsFieldNumber, kLengthDelimited));
  for (const Op& op : prog.ops) {
    *p++ = kInstructionTag;
    if (op.code == OpCode::kNone) {
      *p++ = 0;
      continue;
    }
    if (op.code == OpCode::kWait || op.code == OpCode::kReduceTiedGrads || op.code == OpCode::kClipGradNorm) {
      const size_t b = BodySize(prog, op, &scratch);
      p = PutVarint(p, InstructionSize(b, op.code));
      *p++ = static_cast<char>(Tag(static_cast<int>(op.code), kLengthDelimited));
      p = PutVarint(p, b);
      p = PutBody(p, prog, op, scratch);
      continue;
    }
    char* const header = p;  // instruction length, oneof tag, body length
    p += 3;
    p = PutBody(p, prog, op, scratch);
    const size_t b = static_cast<size_t>(p - header - 3);  // <= 44
    header[0] = static_cast<char>(b + 2);
    header[1] = static_cast<char>(Tag(static_cast<int>(op.code), kLengthDelimited));
    header[2] = static_cast<char>(b);
  }
  const size_t body = static_cast<size_t>(p - base);
  const size_t end = kFront + body;
  char prefix[11];
  prefix[0] = static_cast<char>(Tag(field, kLengthDelimited));
  const size_t prefix_size = static_cast<size_t>(PutVarint(prefix + 1, body) - prefix);
  const size_t start = kFront - prefix_size;
  std::memcpy(out->data() + start, prefix, prefix_size);
  out->resize(end);
  return start;
}


// Bytes of a length-delimited message field (tag, length, body) when present.
size_t MessageFieldSize(bool present, const google::protobuf::Message& m) {
  if (!present) return 0;
  const size_t n = m.ByteSizeLong();
  return 1 + VarintSize(n) + n;
}

}  // namespace

std::string DeterministicBytes(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  msg.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

Program ToProgram(const StageProgram& program) {
  Program p;
  p.stage = program.stage();
  p.num_slots = program.num_slots();
  p.ops.reserve(program.instructions_size());
  for (const Instruction& in : program.instructions()) Append(p, in);
  return p;
}

Module ToModule(const Plan& plan) {
  Module m;
  m.programs = ToPrograms(plan.programs());
  m.eval_programs = ToPrograms(plan.eval_programs());
  m.header = PlanHeader(plan);
  return m;
}

Module ToModule(Plan&& plan) {
  Module m;
  m.programs = ToPrograms(plan.programs());
  m.eval_programs = ToPrograms(plan.eval_programs());
  plan.clear_programs();
  plan.clear_eval_programs();
  m.header = std::move(plan);
  return m;
}

Plan PlanHeader(const Plan& plan) {
  // Every field of Plan but programs (7) and eval_programs (8); module_test checks that
  // this list covers the message.
  Plan h;
  h.set_format_version(plan.format_version());
  h.set_fingerprint(plan.fingerprint());
  h.set_unverified(plan.unverified());
  if (plan.has_model()) *h.mutable_model() = plan.model();
  if (plan.has_topology()) *h.mutable_topology() = plan.topology();
  if (plan.has_config()) *h.mutable_config() = plan.config();
  if (plan.has_placement()) *h.mutable_placement() = plan.placement();
  *h.mutable_boundaries() = plan.boundaries();
  h.set_level(plan.level());
  h.GetReflection()->MutableUnknownFields(&h)->MergeFrom(plan.GetReflection()->GetUnknownFields(plan));
  return h;
}

Instruction ToInstruction(const Program& program, int i) {
  Instruction in;
  FillInstruction(program, program.ops[i], &in);
  return in;
}

std::string PrintOp(const Program& program, int i) { return PrintInstruction(ToInstruction(program, i)); }

std::string RefText(const Ref& ref) {
  CommRef r;
  r.set_send(ref.send);
  r.set_direction(ref.dir());
  r.set_boundary(ref.boundary);
  r.set_micro_batch(ref.micro_batch);
  return CommRefText(r);
}

StageProgram ToStageProgram(const Program& program) {
  StageProgram out;
  out.set_stage(program.stage);
  out.set_num_slots(program.num_slots);
  out.mutable_instructions()->Reserve(program.size());
  for (const Op& op : program.ops) FillInstruction(program, op, out.add_instructions());
  return out;
}

Plan ToPlan(const Module& module) {
  Plan plan = module.header;
  plan.clear_programs();
  plan.clear_eval_programs();
  for (const Program& p : module.programs) *plan.add_programs() = ToStageProgram(p);
  for (const Program& p : module.eval_programs) *plan.add_eval_programs() = ToStageProgram(p);
  return plan;
}

absl::Status EncodePlan(const Module& module, const std::function<absl::Status(absl::string_view)>& sink) {
  // The header's bytes are fields 1-5 (version, fingerprint, model, topology, config),
  // then 9-12 (unverified, placement, boundaries, level) and any unknown fields; the
  // programs (7) and eval programs (8) go between, as protobuf orders fields by number.
  static_assert(Plan::kConfigFieldNumber == 5 && Plan::kProgramsFieldNumber == 7 &&
                    Plan::kEvalProgramsFieldNumber == 8 && Plan::kUnverifiedFieldNumber == 9,
                "EncodePlan splices the programs between fields 5 and 9");
  const Plan& h = module.header;
  const std::string header = DeterministicBytes(h);
  const size_t split = (h.format_version() == 0 ? 0 : 1 + VarintSize(h.format_version())) +
                       (h.fingerprint().empty() ? 0 : 1 + VarintSize(h.fingerprint().size()) + h.fingerprint().size()) +
                       MessageFieldSize(h.has_model(), h.model()) + MessageFieldSize(h.has_topology(), h.topology()) +
                       MessageFieldSize(h.has_config(), h.config());
  RETURN_IF_ERROR(sink(absl::string_view(header).substr(0, split)));
  // The programs in batches, each program encoded on its own (on the machine's cores):
  // its size first (the length prefix), then its bytes; the batch then goes to the sink
  // in order.
  std::vector<std::pair<const Program*, int>> all;  // program, its field
  for (const Program& p : module.programs) all.push_back({&p, Plan::kProgramsFieldNumber});
  for (const Program& p : module.eval_programs) all.push_back({&p, Plan::kEvalProgramsFieldNumber});
  constexpr size_t kBatch = 16;
  std::vector<std::string> bytes(kBatch);
  std::vector<size_t> start(kBatch);
  for (size_t first = 0; first < all.size(); first += kBatch) {
    const int n = static_cast<int>(std::min(kBatch, all.size() - first));
    ParallelFor(n, [&](int i) { start[i] = EncodeProgram(*all[first + i].first, all[first + i].second, &bytes[i]); });
    for (int i = 0; i < n; ++i) RETURN_IF_ERROR(sink(absl::string_view(bytes[i]).substr(start[i])));
  }
  return sink(absl::string_view(header).substr(split));
}

std::string EncodePlan(const Module& module) {
  std::string out;
  EncodePlan(module, [&out](absl::string_view bytes) {
    out.append(bytes.data(), bytes.size());
    return absl::OkStatus();
  }).IgnoreError();  // the sink never fails
  return out;
}

uint64_t HashHeader(const Plan& header) {
  // The deterministic bytes without the fingerprint field, which follows format_version
  // (field 1) alone.
  static_assert(Plan::kFormatVersionFieldNumber == 1 && Plan::kFingerprintFieldNumber == 2,
                "HashHeader skips field 2 after field 1");
  Plan copy;  // programs in a header (only by mistake) are not part of it
  const Plan* h = &header;
  if (header.programs_size() > 0 || header.eval_programs_size() > 0) {
    copy = PlanHeader(header);
    h = &copy;
  }
  const std::string bytes = DeterministicBytes(*h);
  const absl::string_view all(bytes);
  const size_t head = h->format_version() == 0 ? 0 : 1 + VarintSize(h->format_version());
  const size_t fp =
      h->fingerprint().empty() ? 0 : 1 + VarintSize(h->fingerprint().size()) + h->fingerprint().size();
  Hasher hasher(0x68656164 /* "head" */);
  hasher.Bytes(all.substr(0, head));
  hasher.Bytes(all.substr(std::min(all.size(), head + fp)));
  return hasher.Finish();
}

namespace {

uint64_t HashProgram(const Program& p) {
  Hasher h(0x70726f67 /* "prog" */);
  h.Word((uint64_t(uint32_t(p.stage)) << 32) | uint32_t(p.num_slots));
  h.Word(p.ops.size());
  std::string scratch;
  for (const Op& op : p.ops) {
    uint64_t w[3];
    std::memcpy(w, &op, sizeof(Op) - 4);
    w[2] = uint32_t(op.slot);
    const bool indexed = op.code == OpCode::kWait || op.code == OpCode::kReduceTiedGrads || op.code == OpCode::kClipGradNorm;
    if (indexed) w[1] = uint64_t(uint32_t(op.micro_batch)) << 32;  // not the index: where its data sits
    h.Op3(w[0], w[1], w[2]);
    if (op.code == OpCode::kWait) {
      for (const Ref& r : p.RefsOf(op)) {
        uint64_t rw[2];
        std::memcpy(rw, &r, sizeof(Ref));
        h.Word(rw[0]);
        h.Word(rw[1]);
      }
    } else if (indexed) {
      scratch = DeterministicBytes(p.CollectiveOf(op));
      h.Word(scratch.size());
      h.Bytes(scratch);
    }
  }
  return h.Finish();
}

}  // namespace

uint64_t HashPrograms(const std::vector<Program>& programs) {
  // Each program on its own (on the machine's cores), then the list of their hashes.
  std::vector<uint64_t> each(programs.size());
  ParallelFor(static_cast<int>(programs.size()), [&](int i) { each[i] = HashProgram(programs[i]); });
  Hasher h(0x70726f67 /* "prog" */);
  h.Word(programs.size());
  for (uint64_t x : each) h.Word(x);
  return h.Finish();
}

PartHashes HashParts(const Module& module) {
  return PartHashes{HashHeader(module.header), HashPrograms(module.programs), HashPrograms(module.eval_programs)};
}

}  // namespace ppc::ir
