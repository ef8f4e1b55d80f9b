#include "ir/plan_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "ir/instruction_text.h"
#include "ir/module_hash.h"
#include "ir/status_macros.h"

namespace ppc::ir {
namespace {

// Keeps protobuf's parse errors (with line and column) instead of logging them.
class Collector : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(int line_offset) : line_offset_(line_offset) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (error_.empty()) error_ = absl::StrCat("line ", line + 1 + line_offset_, ":", column + 1, ": ", message);
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& error() const { return error_; }

 private:
  int line_offset_;
  std::string error_;
};

absl::Status ParseTextProto(const std::string& text, int line_offset, const std::string& where,
                            google::protobuf::Message* msg) {
  google::protobuf::TextFormat::Parser parser;
  Collector collector(line_offset);
  parser.RecordErrorsTo(&collector);
  if (!parser.ParseFromString(text, msg)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", collector.error()));
  }
  return absl::OkStatus();
}

uint64_t Fnv1a(absl::string_view bytes, uint64_t h) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}


}  // namespace

std::string PrintProgram(const StageProgram& program, bool numbered) {
  std::string out;
  for (int i = 0; i < program.instructions_size(); ++i) {
    if (numbered) absl::StrAppend(&out, absl::StrFormat("%4d  ", i));
    absl::StrAppend(&out, PrintInstruction(program.instructions(i)), "\n");
  }
  return out;
}

std::string PrintPlan(const Plan& plan) {
  Plan header = plan;
  header.clear_programs();
  header.clear_eval_programs();
  header.clear_format_version();
  header.clear_fingerprint();
  std::string body;
  google::protobuf::TextFormat::Printer printer;
  printer.PrintToString(header, &body);
  std::string out = absl::StrCat("ppc-plan v", plan.format_version(), " fingerprint=", plan.fingerprint(), "\n", body);
  for (const StageProgram& p : plan.programs()) {
    absl::StrAppend(&out, "== stage ", p.stage(), " num_slots=", p.num_slots(), "\n", PrintProgram(p, false));
  }
  for (const StageProgram& p : plan.eval_programs()) {
    absl::StrAppend(&out, "== eval stage ", p.stage(), " num_slots=", p.num_slots(), "\n", PrintProgram(p, false));
  }
  return out;
}

absl::StatusOr<Plan> ParsePlan(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (lines.empty() || !absl::StartsWith(lines[0], "ppc-plan v")) {
    return absl::InvalidArgumentError("line 1: a plan starts with 'ppc-plan v<version> fingerprint=<hex>'");
  }
  Plan plan;
  {
    std::vector<std::string> head = absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
    uint32_t version = 0;
    if (head.size() != 3 || head[0] != "ppc-plan" || !absl::SimpleAtoi(absl::StripPrefix(head[1], "v"), &version) ||
        !absl::StartsWith(head[2], "fingerprint=")) {
      return absl::InvalidArgumentError(absl::StrCat("line 1: bad plan header '", lines[0], "'"));
    }
    if (version != kFormatVersion && version != 0) {  // 0: not stamped yet (a spec, a reproducer)
      // Older formats do not parse as this one (v3 had a per-stage partition and four
      // transfer instructions): say so instead of reporting their first unknown field.
      return absl::FailedPreconditionError(absl::StrCat("line 1: plan format version ", version,
                                                        " is not supported (this build reads version ",
                                                        kFormatVersion, "); recompile the plan with this ppc"));
    }
    plan.set_format_version(version);
    plan.set_fingerprint(std::string(absl::StripPrefix(head[2], "fingerprint=")));
  }
  size_t i = 1;
  std::string header;
  for (; i < lines.size() && !absl::StartsWith(lines[i], "== "); ++i) absl::StrAppend(&header, lines[i], "\n");
  Plan parsed;
  RETURN_IF_ERROR(ParseTextProto(header, 1, "plan header", &parsed));
  if (parsed.programs_size() > 0 || parsed.eval_programs_size() > 0) {
    return absl::InvalidArgumentError(
        "plan header: programs go in '== stage' and '== eval stage' sections, not in the header");
  }
  parsed.set_format_version(plan.format_version());
  parsed.set_fingerprint(plan.fingerprint());
  plan = std::move(parsed);
  StageProgram* current = nullptr;
  for (; i < lines.size(); ++i) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    if (absl::StartsWith(line, "== ")) {
      const bool eval = absl::ConsumePrefix(&line, "== eval stage ");
      const bool train = !eval && absl::ConsumePrefix(&line, "== stage ");
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      int stage, slots;
      if (!(eval || train) || parts.size() != 2 || !absl::SimpleAtoi(parts[0], &stage) ||
          !absl::SimpleAtoi(absl::StripPrefix(parts[1], "num_slots="), &slots)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "line ", i + 1, ": want '== stage <s> num_slots=<n>' or '== eval stage <s> num_slots=<n>', got '",
            lines[i], "'"));
      }
      if (train && plan.eval_programs_size() > 0) {
        return absl::InvalidArgumentError(absl::StrCat("line ", i + 1, ": training stages come before eval stages"));
      }
      current = eval ? plan.add_eval_programs() : plan.add_programs();
      current->set_stage(stage);
      current->set_num_slots(slots);
      continue;
    }
    if (current == nullptr) return absl::InvalidArgumentError(absl::StrCat("line ", i + 1, ": instruction outside a stage"));
    auto instruction = ParseInstruction(std::string(line));
    if (!instruction.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", i + 1, ": ", instruction.status().message()));
    }
    *current->add_instructions() = *std::move(instruction);
  }
  return plan;
}

namespace {

std::string FingerprintOf(const PartHashes& parts) {
  Hasher h(0x66696e67 /* "fing" */);
  h.Word(parts.header);
  h.Word(parts.programs);
  h.Word(parts.eval_programs);
  return absl::StrFormat("%016x", h.Finish());
}

}  // namespace

std::string Fingerprint(const Module& module) { return FingerprintOf(HashParts(module)); }

std::string Fingerprint(const Plan& plan) { return Fingerprint(ToModule(plan)); }

std::string ModelFingerprint(const ModelSpec& model) {
  ModelSpec normalized = model;
  for (LayerSpec& l : *normalized.mutable_layers()) {
    l.clear_forward_cost();
    l.clear_backward_cost();
  }
  return absl::StrFormat("%016x", Fnv1a(DeterministicBytes(normalized), Fnv1a("|model|", 14695981039346656037ull)));
}

void Stamp(Module& module) {
  module.header.set_format_version(kFormatVersion);
  module.header.set_fingerprint(Fingerprint(module));
}

void Stamp(Plan& plan) {
  plan.set_format_version(kFormatVersion);
  plan.set_fingerprint(Fingerprint(plan));
}

absl::Status CheckStamp(const Plan& plan, const std::string& where) {
  if (plan.format_version() != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": plan format version ", plan.format_version(),
                                                      " is not supported (this build reads version ",
                                                      kFormatVersion, "); recompile the plan with this ppc"));
  }
  std::string want = Fingerprint(plan);
  if (plan.fingerprint() != want) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": plan fingerprint ", plan.fingerprint(), " does not match its contents (", want,
        "); the plan was edited or corrupted after compilation"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path, int64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    std::string msg = absl::StrCat("cannot open '", path, "' for reading: ", std::strerror(e));
    return e == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  if (st.st_size > max_bytes) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is ", st.st_size, " bytes; more than the ", max_bytes, " this file may have"));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t r = read(fd, out.data() + done, out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      close(fd);
      return absl::DataLossError(absl::StrCat("cannot read '", path, "': ", std::strerror(e)));
    }
    if (r == 0) break;  // shrank while reading
    done += static_cast<size_t>(r);
  }
  close(fd);
  out.resize(done);
  return out;
}

absl::Status CheckOutputPath(const std::string& path, const std::string& what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": the path is empty"));
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    const char* kind = S_ISREG(st.st_mode)    ? nullptr
                       : S_ISDIR(st.st_mode)  ? "a directory"
                       : S_ISLNK(st.st_mode)  ? "a symbolic link"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                                                                     : "not a regular file";
    if (kind != nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": '", path, "' is ", kind, "; give the path of a regular file to create or replace"));
    }
    if (access(path.c_str(), W_OK) != 0) {
      return absl::PermissionDeniedError(absl::StrCat(what, ": '", path, "' is not writable: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  } else if (errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": cannot check '", path, "': ", std::strerror(errno)));
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(what, ": the directory of '", path, "' does not exist"));
  }
  if (access(dir.c_str(), W_OK) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, ": cannot create files in '", dir, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FileWriter>> FileWriter::Open(const std::string& path) {
  RETURN_IF_ERROR(CheckOutputPath(path, "output"));
  // Written to a temporary file and renamed, so a failure never leaves half a file.
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create a file next to '", path, "': ", std::strerror(errno)));
  }
  return std::unique_ptr<FileWriter>(new FileWriter(path, std::move(tmp), fd));
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) close(fd_);
  if (!committed_) unlink(tmp_.c_str());
}

absl::Status FileWriter::Append(absl::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = write(fd_, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = errno;
      close(fd_);
      fd_ = -1;
      return absl::DataLossError(absl::StrCat("cannot write '", path_, "': ", std::strerror(e)));
    }
    done += static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status FileWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  // mkstemp creates 0600; a plan is as readable as any file the user creates.
  const mode_t mask = umask(0);
  umask(mask);
  fchmod(fd_, 0666 & ~mask);
  const int closed = close(fd_);
  fd_ = -1;
  if (closed != 0) return absl::DataLossError(absl::StrCat("cannot close '", tmp_, "': ", std::strerror(errno)));
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return absl::DataLossError(absl::StrCat("cannot rename '", tmp_, "' to '", path_, "': ", std::strerror(errno)));
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> file, FileWriter::Open(path));
  RETURN_IF_ERROR(file->Append(contents));
  return file->Commit();
}

absl::Status ParseTextProtoFile(const std::string& path, google::protobuf::Message* msg) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseTextProto(text, 0, path, msg);
}

static bool IsTextPath(const std::string& path) {
  return absl::EndsWith(path, ".txt") || absl::EndsWith(path, ".pbtxt");
}

// Binary files start with this magic so a truncated or foreign file is recognised.
static constexpr char kMagic[] = "PPCPLAN\n";

absl::Status SavePlan(const Plan& plan, const std::string& path) {
  if (IsTextPath(path)) return WriteFile(path, PrintPlan(plan));
  return WriteFile(path, kMagic + DeterministicBytes(plan));
}

absl::Status SavePlan(const Module& module, const std::string& path) {
  if (IsTextPath(path)) return WriteFile(path, PrintPlan(ToPlan(module)));
  ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> file, FileWriter::Open(path));
  RETURN_IF_ERROR(file->Append(kMagic));
  RETURN_IF_ERROR(EncodePlan(module, [&file](absl::string_view bytes) { return file->Append(bytes); }));
  return file->Commit();
}

absl::StatusOr<Module> LoadModule(const std::string& path) {
  ASSIGN_OR_RETURN(Plan plan, LoadPlan(path));
  return ToModule(std::move(plan));
}

absl::StatusOr<Plan> LoadPlan(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  Plan plan;
  if (IsTextPath(path)) {
    auto parsed = ParsePlan(bytes);
    if (!parsed.ok()) return Annotate(parsed.status(), path);
    plan = *std::move(parsed);
  } else {
    if (!absl::StartsWith(bytes, kMagic)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not a binary ppc plan (missing PPCPLAN header); text plans end in .txt"));
    }
    if (!plan.ParseFromString(bytes.substr(sizeof(kMagic) - 1))) {
      return absl::DataLossError(absl::StrCat(path, ": corrupt or truncated plan (", bytes.size(), " bytes)"));
    }
  }
  if (plan.format_version() != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": plan format version ", plan.format_version(),
                                                      " is not supported (this build reads version ",
                                                      kFormatVersion, "); recompile the plan with this ppc"));
  }
  return plan;
}

absl::StatusOr<std::string> PlanToJson(const Plan& plan) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  auto status = google::protobuf::util::MessageToJsonString(plan, &out, options);
  if (!status.ok()) return absl::InternalError(std::string(status.message()));
  return out;
}

absl::StatusOr<std::string> MessageToJson(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  auto status = google::protobuf::util::MessageToJsonString(msg, &out, options);
  if (!status.ok()) return absl::InternalError(std::string(status.message()));
  return out;
}

absl::Status JsonToMessage(const std::string& json, const std::string& where, google::protobuf::Message* msg) {
  auto status = google::protobuf::util::JsonStringToMessage(json, msg);
  if (!status.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", std::string(status.message())));
  return absl::OkStatus();
}

}  // namespace ppc::ir
