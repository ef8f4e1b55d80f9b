// Plan serialization: the canonical text form (golden tests are text in, text out),
// versioned binary load/save, protobuf JSON, and the model+topology+config fingerprint.
//
// Canonical text form:
//   ppc-plan v<format_version> fingerprint=<hex or empty>
//   <protobuf text format of the plan without programs, version and fingerprint>
//   == stage <s> num_slots=<n>
//   <one instruction per line in assembly form, see ir/instruction_text.h>
//   ...
//   == eval stage <s> num_slots=<n>       (the forward-only eval programs, if any)
//   ...
// PrintPlan(ParsePlan(t)) == t for every t that PrintPlan produced.
#ifndef PPC_IR_PLAN_IO_H_
#define PPC_IR_PLAN_IO_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ir/module.h"
#include "ir/program.pb.h"

namespace ppc::ir {

// Bumped on any change an older runtime would misread. Version 1: first release.
// Version 2: eval programs; ZeRO stage 1 (OptimizerStep.sharded, GatherParams).
// Version 3: the fingerprint covers the whole plan; Plan.unverified; optional lr/betas/eps.
// Version 4 (IR v2): virtual stages (Placement), the boundary table, Plan.level,
// Compute{F,B,I,W} ops, one Send/Recv keyed by (direction, boundary, micro-batch),
// layer output groups.
// Version 5: the fingerprint is a word hash of the header's bytes and the programs'
// instructions (ir/module.h: HashHeader, HashPrograms) instead of FNV-1a over the
// whole serialization; the messages are those of version 4.
// Plans of other versions are refused with "recompile".
inline constexpr uint32_t kFormatVersion = 5;

std::string PrintPlan(const Plan& plan);
absl::StatusOr<Plan> ParsePlan(const std::string& text);

// One stage's program in assembly form, with instruction indices when `numbered`.
std::string PrintProgram(const StageProgram& program, bool numbered);

// 16 hex digits over the whole plan but its fingerprint: model, topology, config,
// placement, boundaries, level, programs, eval programs, version and the unverified mark
// (HashHeader and HashPrograms of ir/module.h). Any edit changes it; a Plan and its
// Module have the same.
std::string Fingerprint(const Module& module);
std::string Fingerprint(const Plan& plan);
// 16 hex digits over the model alone (layers, their kinds, attributes and ties, input,
// label and loss; not measured costs): what a checkpoint must match, whatever the
// partition, topology, schedule or config of the plan that loads it.
std::string ModelFingerprint(const ModelSpec& model);
// Sets format_version and fingerprint.
void Stamp(Module& module);
void Stamp(Plan& plan);
// FailedPrecondition if version or fingerprint do not match the plan's contents.
absl::Status CheckStamp(const Plan& plan, const std::string& where);

// Files ending in .txt or .pbtxt are the canonical text form; anything else binary.
absl::Status SavePlan(const Plan& plan, const std::string& path);
// The same file as SavePlan(ToPlan(module)), without building the Plan.
absl::Status SavePlan(const Module& module, const std::string& path);
// Refuses unknown versions and corrupt files with an error naming the path.
absl::StatusOr<Plan> LoadPlan(const std::string& path);
// LoadPlan, as a Module.
absl::StatusOr<Module> LoadModule(const std::string& path);

absl::StatusOr<std::string> PlanToJson(const Plan& plan);
// Any message as protobuf JSON (field names as in the .proto), and back.
absl::StatusOr<std::string> MessageToJson(const google::protobuf::Message& msg);
absl::Status JsonToMessage(const std::string& json, const std::string& where, google::protobuf::Message* msg);

// A regular file of at most `max_bytes` (FIFOs, devices and directories are errors,
// never a hang or an endless read).
absl::StatusOr<std::string> ReadFile(const std::string& path, int64_t max_bytes = int64_t{1} << 34);
// Writes through a temporary file in the same directory and a rename; checks the path
// with CheckOutputPath first and removes the temporary file on any failure.
absl::Status WriteFile(const std::string& path, const std::string& contents);

// WriteFile's protocol for contents written in pieces: Open checks the path and creates
// the temporary file, Append writes to it, Commit renames it into place. Destroyed
// without a successful Commit, it removes the temporary file and leaves the path as it
// was.
class FileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<FileWriter>> Open(const std::string& path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  absl::Status Append(absl::string_view bytes);
  absl::Status Commit();

 private:
  FileWriter(std::string path, std::string tmp, int fd) : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  std::string path_, tmp_;
  int fd_;
  bool committed_ = false;
};

// An output path ppc may create or replace: not empty, its directory exists, and if
// something is there already it is a regular file (never a directory, a device, a FIFO,
// a socket or a symbolic link, which a rename would replace or a write would block on).
// `what` names the flag or file in the error, e.g. "--out".
absl::Status CheckOutputPath(const std::string& path, const std::string& what);

// Parses a protobuf text-format message from a file; errors name the path and line.
absl::Status ParseTextProtoFile(const std::string& path, google::protobuf::Message* msg);

}  // namespace ppc::ir

#endif  // PPC_IR_PLAN_IO_H_
