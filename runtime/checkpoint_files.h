// The file level of checkpoints (runtime/checkpoint.h): names, durable writes, bounded
// reads, typed JSON fields, and a reader that checks every file against the manifest.
// Nothing here knows about models or optimizers.
#ifndef PPC_RUNTIME_CHECKPOINT_FILES_H_
#define PPC_RUNTIME_CHECKPOINT_FILES_H_

#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/torch_file.h"

namespace ppc::runtime {

inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kJobFile[] = "job.json";
inline constexpr char kLatestFile[] = "latest";
inline constexpr int kCheckpointVersion = 1;
// manifest.json's "checksum": the one algorithm this build writes and verifies.
inline constexpr char kChecksumAlgorithm[] = "crc32 (zlib)";

// layer_XX-<kind>_states.pt, XX the global layer index in at least two digits.
std::string LayerFile(int layer, const char* kind);
// job.json or a layer file name: what a manifest may list.
bool IsCheckpointFileName(const std::string& name);
// A tag is one path component that is not hidden and not a staging directory.
bool ValidTag(const std::string& tag);
// Whether `name` is a staging directory name (`<tag>.partial-<16 hex digits>`).
bool IsStagingName(const std::string& name);
// For messages: bytes outside printable ASCII as \xHH, cut to `max` characters.
std::string Printable(absl::string_view s, size_t max = 80);
// The tag a checkpoint directory stands for: its name ("DIR/global_step5/" and "." inside
// it included).
std::string TagOfDirectory(const std::string& tag_dir);
// Whether `tag_dir` is the directory of `tag`: named so, or a link to a directory named so.
bool IsDirectoryOfTag(const std::string& tag_dir, const std::string& tag);

struct FileRecord {
  std::string name;
  int64_t bytes = 0;
  uint32_t crc32 = 0;
};

uint32_t Crc32(absl::string_view bytes);
absl::Status FsyncDir(const std::string& dir);
// Temporary name, write, fsync, rename, fsync of the directory; refuses to replace
// anything but a regular file. With `die_mid_write` (testing) the process exits after
// writing half the bytes.
absl::StatusOr<FileRecord> WriteDurable(const std::string& path, absl::string_view bytes, bool die_mid_write);
// A regular file of at most `max_bytes` (FIFOs, devices, directories and larger files
// are errors, never a hang or an unbounded read).
absl::StatusOr<std::string> ReadBoundedFile(const std::string& path, int64_t max_bytes);

// Typed fields of a JSON object; errors name the file and the key.
class JsonFields {
 public:
  JsonFields(const nlohmann::json& object, std::string where) : j_(object), where_(std::move(where)) {}
  static absl::StatusOr<nlohmann::json> Parse(const std::string& text, const std::string& where);
  bool Has(const char* key) const { return j_.contains(key); }
  // An integer in [min, 2^63).
  absl::StatusOr<int64_t> Int(const char* key, int64_t min = 0) const;
  absl::StatusOr<uint64_t> Uint(const char* key) const;
  absl::StatusOr<std::string> String(const char* key) const;
  absl::StatusOr<JsonFields> Object(const char* key) const;
  absl::StatusOr<std::vector<std::string>> Strings(const char* key) const;
  // DataLoss unless every key of the object is one of `keys` (nothing is ignored).
  absl::Status Only(std::initializer_list<const char*> keys) const;
  const nlohmann::json& value() const { return j_; }
  const std::string& where() const { return where_; }
  // DataLoss "<where>: '<key>' <what>".
  absl::Status Bad(const char* key, const std::string& what) const;

 private:
  const nlohmann::json& j_;
  std::string where_;
};

// Reads the files of one checkpoint directory. With a manifest, Open checks its fields
// (format, version, the tag of its directory, the checksum algorithm, no other fields)
// and that every listed file exists with its size, and Bytes() checks the crc32 of what
// it reads; without one (an import) files are read as they are.
class CheckpointReader {
 public:
  static absl::StatusOr<CheckpointReader> Open(const std::string& tag_dir);
  bool has_manifest() const { return has_manifest_; }
  const std::string& dir() const { return dir_; }
  const std::map<std::string, FileRecord>& manifest() const { return manifest_; }
  // NotFound when `name` does not exist and is not listed.
  absl::StatusOr<std::string> Bytes(const std::string& name) const;
  // A parsed state-dict file (a dict at the top), cached.
  absl::StatusOr<const PyValue*> Dict(const std::string& name);

 private:
  std::string dir_;
  bool has_manifest_ = false;
  std::map<std::string, FileRecord> manifest_;
  std::map<std::string, PyValue> cache_;
};

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_CHECKPOINT_FILES_H_
