#include "ir/instruction_text.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "ir/status_macros.h"

namespace ppc::ir {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// A mark: a bool that singles out a variant of an instruction (Compute's deferred), printed
// only when set, so that the plain instruction's text does not change.
bool IsMark(const FieldDescriptor* f) { return f == Compute::descriptor()->FindFieldByName("deferred"); }

std::string ShortName(const std::string& field) {
  if (field == "micro_batch") return "mb";
  if (field == "virtual_stage") return "vs";
  return field;
}
std::string LongName(const std::string& key) {
  if (key == "mb") return "micro_batch";
  if (key == "vs") return "virtual_stage";
  return key;
}

}  // namespace

std::string CommRefText(const CommRef& ref) {
  return absl::StrCat(ref.send() ? "send" : "recv", "/", absl::AsciiStrToLower(Direction_Name(ref.direction())), "/",
                      ref.boundary(), "/", ref.micro_batch());
}

namespace {

absl::StatusOr<CommRef> ParseCommRef(absl::string_view text) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  CommRef ref;
  Direction direction;
  int boundary, mb;
  if (parts.size() != 4 || (parts[0] != "send" && parts[0] != "recv") ||
      !Direction_Parse(absl::AsciiStrToUpper(parts[1]), &direction) || direction == DIRECTION_UNSPECIFIED ||
      !absl::SimpleAtoi(parts[2], &boundary) || !absl::SimpleAtoi(parts[3], &mb)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad transfer reference '", text, "' (want send|recv/activation|gradient/boundary/micro_batch)"));
  }
  ref.set_send(parts[0] == "send");
  ref.set_direction(direction);
  ref.set_boundary(boundary);
  ref.set_micro_batch(mb);
  return ref;
}

// Shortest decimal that parses back to exactly `v`.
std::string DoubleText(double v) {
  for (int precision = 6; precision <= 17; ++precision) {
    std::string s = absl::StrFormat("%.*g", precision, v);
    double back;
    if (absl::SimpleAtod(s, &back) && back == v) return s;
  }
  return absl::StrFormat("%.17g", v);
}

std::string ScalarText(const Message& msg, const FieldDescriptor* f, int index) {
  const Reflection* r = msg.GetReflection();
  bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(rep ? r->GetRepeatedInt32(msg, f, index) : r->GetInt32(msg, f));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(rep ? r->GetRepeatedInt64(msg, f, index) : r->GetInt64(msg, f));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(rep ? r->GetRepeatedUInt32(msg, f, index) : r->GetUInt32(msg, f));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(rep ? r->GetRepeatedUInt64(msg, f, index) : r->GetUInt64(msg, f));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return DoubleText(rep ? r->GetRepeatedDouble(msg, f, index) : r->GetDouble(msg, f));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return DoubleText(rep ? r->GetRepeatedFloat(msg, f, index) : r->GetFloat(msg, f));
    case FieldDescriptor::CPPTYPE_BOOL:
      return (rep ? r->GetRepeatedBool(msg, f, index) : r->GetBool(msg, f)) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return rep ? r->GetRepeatedEnum(msg, f, index)->name() : r->GetEnum(msg, f)->name();
    case FieldDescriptor::CPPTYPE_STRING:
      return absl::StrCat("\"", absl::CEscape(rep ? r->GetRepeatedString(msg, f, index) : r->GetString(msg, f)),
                          "\"");
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      const Message& m = rep ? r->GetRepeatedMessage(msg, f, index) : r->GetMessage(msg, f);
      if (m.GetDescriptor() == CommRef::descriptor()) return CommRefText(static_cast<const CommRef&>(m));
      return "<unsupported>";
    }
    default:
      return "<unsupported>";
  }
}

absl::Status SetScalar(Message* msg, const FieldDescriptor* f, absl::string_view text) {
  const Reflection* r = msg->GetReflection();
  bool rep = f->is_repeated();
  auto bad = [&]() {
    return absl::InvalidArgumentError(absl::StrCat("bad value '", text, "' for field ", f->name()));
  };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddInt32(msg, f, v) : r->SetInt32(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddInt64(msg, f, v) : r->SetInt64(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddUInt32(msg, f, v) : r->SetUInt32(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(text, &v)) return bad();
      rep ? r->AddUInt64(msg, f, v) : r->SetUInt64(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!absl::SimpleAtod(text, &v)) return bad();
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
        rep ? r->AddFloat(msg, f, static_cast<float>(v)) : r->SetFloat(msg, f, static_cast<float>(v));
      } else {
        rep ? r->AddDouble(msg, f, v) : r->SetDouble(msg, f, v);
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      if (text != "true" && text != "false") return bad();
      rep ? r->AddBool(msg, f, text == "true") : r->SetBool(msg, f, text == "true");
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const auto* v = f->enum_type()->FindValueByName(std::string(text));
      if (v == nullptr) return bad();
      rep ? r->AddEnum(msg, f, v) : r->SetEnum(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      if (text.size() < 2 || text.front() != '"' || text.back() != '"') return bad();
      std::string out;
      if (!absl::CUnescape(text.substr(1, text.size() - 2), &out)) return bad();
      rep ? r->AddString(msg, f, out) : r->SetString(msg, f, out);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE: {
      if (f->message_type() != CommRef::descriptor()) return bad();
      ASSIGN_OR_RETURN(CommRef ref, ParseCommRef(text));
      Message* m = rep ? r->AddMessage(msg, f) : r->MutableMessage(msg, f);
      m->CopyFrom(ref);
      return absl::OkStatus();
    }
    default:
      return bad();
  }
}

}  // namespace

std::string PrintInstruction(const Instruction& instruction) {
  const Reflection* r = instruction.GetReflection();
  const FieldDescriptor* op = r->GetOneofFieldDescriptor(instruction, Instruction::descriptor()->oneof_decl(0));
  if (op == nullptr) return "<empty>";
  const Message& body = r->GetMessage(instruction, op);
  std::string out = op->name();
  const Descriptor* d = body.GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (IsMark(f) && !body.GetReflection()->GetBool(body, f)) continue;
    absl::StrAppend(&out, " ", ShortName(f->name()), "=");
    if (f->is_repeated()) {
      std::vector<std::string> items;
      for (int j = 0; j < body.GetReflection()->FieldSize(body, f); ++j) items.push_back(ScalarText(body, f, j));
      absl::StrAppend(&out, "[", absl::StrJoin(items, ","), "]");
    } else {
      absl::StrAppend(&out, ScalarText(body, f, 0));
    }
  }
  return out;
}

absl::StatusOr<Instruction> ParseInstruction(const std::string& line) {
  std::vector<std::string> tokens = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (tokens.empty()) return absl::InvalidArgumentError("empty instruction");
  Instruction instruction;
  const FieldDescriptor* op = Instruction::descriptor()->FindFieldByName(tokens[0]);
  if (op == nullptr || op->containing_oneof() == nullptr) {
    std::vector<std::string> names;
    const auto* oneof = Instruction::descriptor()->oneof_decl(0);
    for (int i = 0; i < oneof->field_count(); ++i) names.push_back(oneof->field(i)->name());
    return absl::InvalidArgumentError(absl::StrCat("unknown instruction '", tokens[0],
                                                   "'; known: ", absl::StrJoin(names, ", ")));
  }
  Message* body = instruction.GetReflection()->MutableMessage(&instruction, op);
  for (size_t i = 1; i < tokens.size(); ++i) {
    size_t eq = tokens[i].find('=');
    if (eq == std::string::npos)
      return absl::InvalidArgumentError(absl::StrCat("expected key=value, got '", tokens[i], "'"));
    std::string key = LongName(tokens[i].substr(0, eq));
    absl::string_view value = absl::string_view(tokens[i]).substr(eq + 1);
    const FieldDescriptor* f = body->GetDescriptor()->FindFieldByName(key);
    if (f == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(op->name(), " has no field '", key, "'"));
    if (f->is_repeated()) {
      if (value.size() < 2 || value.front() != '[' || value.back() != ']')
        return absl::InvalidArgumentError(absl::StrCat("field ", key, " wants [a,b,...], got '", value, "'"));
      body->GetReflection()->ClearField(body, f);
      for (absl::string_view item : absl::StrSplit(value.substr(1, value.size() - 2), ',', absl::SkipEmpty())) {
        RETURN_IF_ERROR(SetScalar(body, f, item));
      }
    } else {
      RETURN_IF_ERROR(SetScalar(body, f, value));
    }
  }
  return instruction;
}

bool MicroBatchOf(const Instruction& in, int* mb) {
  switch (in.op_case()) {
    case Instruction::kLoadMicroBatch: *mb = in.load_micro_batch().micro_batch(); return true;
    case Instruction::kCompute: *mb = in.compute().micro_batch(); return true;
    case Instruction::kSend: *mb = in.send().micro_batch(); return true;
    case Instruction::kRecv: *mb = in.recv().micro_batch(); return true;
    default: return false;
  }
}

bool SlotOf(const Instruction& in, int* slot) {
  switch (in.op_case()) {
    case Instruction::kLoadMicroBatch: *slot = in.load_micro_batch().slot(); return true;
    case Instruction::kCompute: *slot = in.compute().slot(); return true;
    case Instruction::kSend: *slot = in.send().slot(); return true;
    case Instruction::kRecv: *slot = in.recv().slot(); return true;
    default: return false;
  }
}

const char* ComputeLetter(ComputeKind kind) {
  switch (kind) {
    case FORWARD: return "F";
    case BACKWARD: return "B";
    case BACKWARD_INPUT: return "I";
    case BACKWARD_WEIGHT: return "W";
    default: return "?";
  }
}

std::string OpName(const Instruction& in) {
  switch (in.op_case()) {
    case Instruction::kCompute:
      // A deferred W (its batch computes later) is a lowercase w.
      return absl::StrCat(in.compute().virtual_stage(), in.compute().deferred() ? "w" : ComputeLetter(in.compute().kind()),
                          in.compute().micro_batch());
    case Instruction::kSend:
    case Instruction::kRecv: {
      const bool send = in.has_send();
      const Direction d = send ? in.send().direction() : in.recv().direction();
      return absl::StrCat(send ? "send" : "recv", d == GRADIENT ? " grad" : " act", " b",
                          send ? in.send().boundary() : in.recv().boundary(), " mb=",
                          send ? in.send().micro_batch() : in.recv().micro_batch());
    }
    default: {
      int mb;
      const Reflection* r = in.GetReflection();
      const FieldDescriptor* op = r->GetOneofFieldDescriptor(in, Instruction::descriptor()->oneof_decl(0));
      std::string name = op ? op->name() : "<empty>";
      if (MicroBatchOf(in, &mb)) absl::StrAppend(&name, " mb=", mb);
      return name;
    }
  }
}

}  // namespace ppc::ir
