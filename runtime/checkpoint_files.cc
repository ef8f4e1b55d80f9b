#include "runtime/checkpoint_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"

namespace ppc::runtime {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// manifest.json lists a few entries per layer: far below this.
constexpr int64_t kMaxManifestBytes = 64 << 20;

absl::Status Errno(const std::string& what, const std::string& path) {
  const int e = errno;
  std::string msg = absl::StrCat(what, " '", path, "': ", std::strerror(e));
  switch (e) {
    case ENOENT: return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS: return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT: return absl::ResourceExhaustedError(msg);
    default: return absl::DataLossError(msg);
  }
}

bool ParseCrc(const std::string& hex, uint32_t* crc) {
  if (hex.size() != 8) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  *crc = static_cast<uint32_t>(std::strtoul(hex.c_str(), nullptr, 16));
  return true;
}

}  // namespace

std::string LayerFile(int layer, const char* kind) { return absl::StrFormat("layer_%02d-%s_states.pt", layer, kind); }

bool IsCheckpointFileName(const std::string& name) {
  if (name == kJobFile) return true;
  int layer = -1, end = 0;
  char kind[8] = {0};
  if (std::sscanf(name.c_str(), "layer_%d-%5[a-z]_states.pt%n", &layer, kind, &end) != 2) return false;
  return layer >= 0 && static_cast<size_t>(end) == name.size() && name == LayerFile(layer, kind) &&
         (std::string(kind) == "model" || std::string(kind) == "optim");
}

bool ValidTag(const std::string& tag) {
  return !tag.empty() && tag.size() <= 255 && tag[0] != '.' && tag.find('/') == std::string::npos &&
         tag.find('\0') == std::string::npos && !IsStagingName(tag);
}

bool IsStagingName(const std::string& name) {
  const size_t at = name.rfind(".partial-");
  if (at == std::string::npos || name.size() != at + 9 + 16) return false;
  for (size_t i = at + 9; i < name.size(); ++i) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(name[i]))) return false;
  }
  return true;
}

std::string Printable(absl::string_view s, size_t max) {
  std::string escaped;
  for (unsigned char c : s.substr(0, max)) {
    if (c >= 0x20 && c < 0x7f) {
      escaped.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&escaped, absl::StrFormat("\\x%02x", c));
    }
  }
  if (s.size() > max) absl::StrAppend(&escaped, "... (", s.size(), " bytes)");
  return escaped;
}

std::string TagOfDirectory(const std::string& tag_dir) {
  const fs::path p = fs::path(tag_dir).lexically_normal();
  std::string name = p.filename().string();
  if (name.empty() && p.has_parent_path()) name = p.parent_path().filename().string();  // "DIR/tag/"
  if (name.empty() || name == "." || name == "..") {
    std::error_code ec;
    const fs::path c = fs::weakly_canonical(tag_dir, ec);
    if (!ec) name = c.filename().string();
  }
  return name;
}

bool IsDirectoryOfTag(const std::string& tag_dir, const std::string& tag) {
  if (TagOfDirectory(tag_dir) == tag) return true;
  std::error_code ec;
  const fs::path c = fs::canonical(tag_dir, ec);
  return !ec && c.filename().string() == tag;
}

uint32_t Crc32(absl::string_view bytes) {
  return static_cast<uint32_t>(
      crc32_z(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open directory", dir);
  int rc = fsync(fd);
  close(fd);
  if (rc != 0) return Errno("cannot fsync directory", dir);
  return absl::OkStatus();
}

absl::StatusOr<FileRecord> WriteDurable(const std::string& path, absl::string_view bytes, bool die_mid_write) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", path, "' exists and is not a regular file; it is left alone"));
  }
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return Errno("cannot create", tmp);
  const size_t n = die_mid_write ? bytes.size() / 2 : bytes.size();
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, bytes.data() + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      absl::Status s = Errno("cannot write", tmp);
      close(fd);
      unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(w);
  }
  if (die_mid_write) {
    fsync(fd);
    std::fprintf(stderr, "ppc: PPRUN_FAULT_INJECT: exiting halfway through writing '%s'\n", tmp.c_str());
    std::_Exit(3);
  }
  if (fsync(fd) != 0) {
    absl::Status s = Errno("cannot fsync", tmp);
    close(fd);
    unlink(tmp.c_str());
    return s;
  }
  if (close(fd) != 0) {
    absl::Status s = Errno("cannot close", tmp);
    unlink(tmp.c_str());
    return s;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("cannot rename into place", path);
    unlink(tmp.c_str());
    return s;
  }
  const std::string parent = fs::path(path).parent_path().string();
  RETURN_IF_ERROR(FsyncDir(parent.empty() ? "." : parent));
  return FileRecord{fs::path(path).filename().string(), static_cast<int64_t>(bytes.size()), Crc32(bytes)};
}

absl::StatusOr<std::string> ReadBoundedFile(const std::string& path, int64_t max_bytes) {
  return ir::ReadFile(path, max_bytes);
}

absl::StatusOr<json> JsonFields::Parse(const std::string& text, const std::string& where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(absl::StrCat(where, ": not a JSON object"));
  return j;
}

absl::Status JsonFields::Bad(const char* key, const std::string& what) const {
  return absl::DataLossError(absl::StrCat(where_, ": '", key, "' ", what));
}

absl::Status JsonFields::Only(std::initializer_list<const char*> keys) const {
  for (const auto& [key, value] : j_.items()) {
    bool known = false;
    for (const char* k : keys) known |= key == k;
    if (!known) {
      std::string expected;
      for (const char* k : keys) absl::StrAppend(&expected, expected.empty() ? "" : ", ", k);
      return absl::DataLossError(absl::StrCat(where_, ": unexpected field '", Printable(key), "' (a version ",
                                              kCheckpointVersion, " checkpoint has ", expected, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JsonFields::Int(const char* key, int64_t min) const {
  if (!j_.contains(key)) return Bad(key, "is missing");
  const json& v = j_[key];
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))) {
    return Bad(key, absl::StrCat("must be an integer, not ", Printable(v.dump())));
  }
  const int64_t n = v.get<int64_t>();
  if (n < min) return Bad(key, absl::StrCat("must be >= ", min, ", not ", n));
  return n;
}

absl::StatusOr<uint64_t> JsonFields::Uint(const char* key) const {
  if (!j_.contains(key)) return Bad(key, "is missing");
  const json& v = j_[key];
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    return Bad(key, absl::StrCat("must be a non-negative integer, not ", Printable(v.dump())));
  }
  return v.get<uint64_t>();
}

absl::StatusOr<std::string> JsonFields::String(const char* key) const {
  if (!j_.contains(key)) return Bad(key, "is missing");
  if (!j_[key].is_string()) return Bad(key, absl::StrCat("must be a string, not ", Printable(j_[key].dump())));
  return j_[key].get<std::string>();
}

absl::StatusOr<JsonFields> JsonFields::Object(const char* key) const {
  if (!j_.contains(key)) return Bad(key, "is missing");
  if (!j_[key].is_object()) return Bad(key, absl::StrCat("must be an object, not ", Printable(j_[key].dump())));
  return JsonFields(j_[key], absl::StrCat(where_, " ", key));
}

absl::StatusOr<std::vector<std::string>> JsonFields::Strings(const char* key) const {
  if (!j_.contains(key)) return Bad(key, "is missing");
  const json& v = j_[key];
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& x : v) {
      if (!x.is_string()) break;
      out.push_back(x.get<std::string>());
    }
  }
  if (!v.is_array() || out.size() != v.size()) {
    return Bad(key, absl::StrCat("must be a list of strings, not ", Printable(v.dump())));
  }
  return out;
}

absl::StatusOr<CheckpointReader> CheckpointReader::Open(const std::string& tag_dir) {
  CheckpointReader r;
  r.dir_ = tag_dir;
  std::error_code ec;
  const std::string manifest = tag_dir + "/" + kManifestFile;
  if (fs::exists(manifest, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadBoundedFile(manifest, kMaxManifestBytes));
    ASSIGN_OR_RETURN(json m, JsonFields::Parse(text, manifest));
    JsonFields fields(m, manifest);
    ASSIGN_OR_RETURN(std::string format, fields.String("format"));
    ASSIGN_OR_RETURN(int64_t version, fields.Int("version"));
    if (format != "ppc-checkpoint-manifest" || version != kCheckpointVersion) {
      return absl::FailedPreconditionError(absl::StrCat(manifest, ": format '", Printable(format), "' version ",
                                                        version, " (this build reads ppc-checkpoint-manifest version ",
                                                        kCheckpointVersion, ")"));
    }
    RETURN_IF_ERROR(fields.Only({"format", "version", "tag", "checksum", "files"}));
    ASSIGN_OR_RETURN(std::string tag, fields.String("tag"));
    if (!IsDirectoryOfTag(tag_dir, tag)) {
      return absl::DataLossError(absl::StrCat(manifest, ": 'tag' is '", Printable(tag),
                                              "' but the checkpoint's directory is '",
                                              Printable(TagOfDirectory(tag_dir)),
                                              "' (a checkpoint's tag is the name of its directory)"));
    }
    ASSIGN_OR_RETURN(std::string checksum, fields.String("checksum"));
    if (checksum != kChecksumAlgorithm) {
      return absl::FailedPreconditionError(absl::StrCat(manifest, ": 'checksum' is '", Printable(checksum),
                                                        "'; this build writes and verifies '", kChecksumAlgorithm,
                                                        "' only"));
    }
    if (!m.contains("files") || !m["files"].is_object() || m["files"].empty()) {
      return absl::DataLossError(absl::StrCat(manifest, ": 'files' must be an object listing the files"));
    }
    for (const auto& [name, e] : m["files"].items()) {
      if (!IsCheckpointFileName(name)) {
        return absl::DataLossError(
            absl::StrCat(manifest, ": lists '", Printable(name), "', which is not a checkpoint file name"));
      }
      if (!e.is_object()) return absl::DataLossError(absl::StrCat(manifest, ": entry '", name, "' is not an object"));
      JsonFields entry(e, absl::StrCat(manifest, " entry '", name, "'"));
      RETURN_IF_ERROR(entry.Only({"bytes", "crc32"}));
      FileRecord rec{name, 0, 0};
      ASSIGN_OR_RETURN(rec.bytes, entry.Int("bytes"));
      ASSIGN_OR_RETURN(std::string crc, entry.String("crc32"));
      if (!ParseCrc(crc, &rec.crc32)) {
        return absl::DataLossError(absl::StrCat(manifest, " entry '", name, "': 'crc32' must be 8 hex digits, not '",
                                                Printable(crc), "'"));
      }
      r.manifest_[name] = rec;
    }
    // Every listed file is there, whole, whoever reads it.
    for (const auto& [name, rec] : r.manifest_) {
      const std::string path = tag_dir + "/" + name;
      struct stat st;
      if (stat(path.c_str(), &st) != 0) {
        return absl::DataLossError(absl::StrCat(path, " is missing (listed in ", kManifestFile, ")"));
      }
      if (!S_ISREG(st.st_mode)) return absl::DataLossError(absl::StrCat(path, " is not a regular file"));
      if (st.st_size != rec.bytes) {
        return absl::DataLossError(absl::StrCat(path, " is ", st.st_size < rec.bytes ? "truncated" : "too long", ": ",
                                                st.st_size, " bytes, ", kManifestFile, " says ", rec.bytes));
      }
    }
    r.has_manifest_ = true;
  } else if (fs::exists(tag_dir + "/" + kJobFile, ec)) {
    return absl::DataLossError(absl::StrCat(tag_dir, ": incomplete checkpoint (", kJobFile, " without ", kManifestFile,
                                            "): its save was interrupted; load an earlier tag"));
  }
  return r;
}

absl::StatusOr<std::string> CheckpointReader::Bytes(const std::string& name) const {
  const std::string path = dir_ + "/" + name;
  auto it = manifest_.find(name);
  if (has_manifest_ && it == manifest_.end()) {
    return absl::NotFoundError(absl::StrCat(path, " is not part of this checkpoint (not in its ", kManifestFile, ")"));
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (it != manifest_.end()) {
      return absl::DataLossError(absl::StrCat(path, " is missing (listed in ", kManifestFile, ")"));
    }
    return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  }
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  const int64_t expected = it != manifest_.end() ? it->second.bytes : static_cast<int64_t>(st.st_size);
  if (st.st_size != expected) {
    return absl::DataLossError(absl::StrCat(path, " is ", st.st_size < expected ? "truncated" : "too long", ": ",
                                            st.st_size, " bytes, ", kManifestFile, " says ", expected));
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadBoundedFile(path, expected));
  if (it != manifest_.end()) {
    const uint32_t crc = Crc32(bytes);
    if (static_cast<int64_t>(bytes.size()) != expected || crc != it->second.crc32) {
      return absl::DataLossError(absl::StrFormat("%s: checksum mismatch (crc32 %08x, %s says %08x): the file is corrupt",
                                                 path, crc, kManifestFile, it->second.crc32));
    }
  }
  return bytes;
}

absl::StatusOr<const PyValue*> CheckpointReader::Dict(const std::string& name) {
  auto it = cache_.find(name);
  if (it != cache_.end()) return &it->second;
  ASSIGN_OR_RETURN(std::string bytes, Bytes(name));
  const std::string path = dir_ + "/" + name;
  ASSIGN_OR_RETURN(PyValue v, ParseTorchFile(bytes, path));
  if (v.kind != PyValue::Kind::kDict) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": holds a ", v.TypeName(), ", not a state dict"));
  }
  return &cache_.emplace(name, std::move(v)).first->second;
}

}  // namespace ppc::runtime
