#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "runtime/torch_file.h"
#include "runtime/torch_status.h"

namespace ppc::runtime {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kManifest[] = "manifest.json";
constexpr char kJob[] = "job.json";
constexpr char kLatest[] = "latest";
constexpr char kPartial[] = ".partial";
constexpr char kFragmentPrefix[] = ".files-rank";
constexpr int kJobVersion = 1;

std::string LayerFile(int layer, const char* kind) { return absl::StrFormat("layer_%02d-%s_states.pt", layer, kind); }

absl::string_view View(const std::vector<char>& bytes) { return absl::string_view(bytes.data(), bytes.size()); }

struct FileRecord {
  std::string name;
  int64_t bytes = 0;
  uint32_t crc32 = 0;
};

uint32_t Crc32(absl::string_view bytes) {
  return static_cast<uint32_t>(
      crc32_z(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

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

absl::Status FsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open directory", dir);
  int rc = fsync(fd);
  close(fd);
  if (rc != 0) return Errno("cannot fsync directory", dir);
  return absl::OkStatus();
}

// Temporary name, write, fsync, rename, fsync of the directory. With `die_mid_write`
// (testing) the process exits after writing half the bytes.
absl::StatusOr<FileRecord> WriteDurable(const std::string& path, absl::string_view bytes, bool die_mid_write) {
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
  if (close(fd) != 0) return Errno("cannot close", tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("cannot rename into place", path);
    unlink(tmp.c_str());
    return s;
  }
  const std::string parent = fs::path(path).parent_path().string();
  RETURN_IF_ERROR(FsyncDir(parent.empty() ? "." : parent));
  return FileRecord{fs::path(path).filename().string(), static_cast<int64_t>(bytes.size()), Crc32(bytes)};
}

absl::Status AllRanks(Transport& t, std::vector<int>* ranks) {
  ranks->clear();
  for (int r = 0; r < t.world_size(); ++r) ranks->push_back(r);
  return absl::OkStatus();
}

bool ValidTag(const std::string& tag) {
  return !tag.empty() && tag != "." && tag != ".." && tag.find('/') == std::string::npos &&
         !absl::EndsWith(tag, kPartial) && tag[0] != '.';
}

// First global layer of every tie group: the layer whose file holds the tied weight.
std::map<std::string, int> TieOwners(const ir::ModelSpec& model) {
  std::map<std::string, int> owner;
  for (int l = 0; l < model.layers_size(); ++l) {
    const std::string& key = model.layers(l).tie_key();
    if (!key.empty() && !owner.count(key)) owner[key] = l;
  }
  return owner;
}

bool IsTiedCopy(const ir::ModelSpec& model, const std::map<std::string, int>& owners, int layer,
                const std::string& param) {
  const std::string& key = model.layers(layer).tie_key();
  return !key.empty() && param == "weight" && owners.at(key) != layer;
}

// "weight" first, then the rest by name: the order PyTorch modules list them in.
std::vector<NamedParameter> InModuleOrder(std::vector<NamedParameter> params) {
  std::stable_sort(params.begin(), params.end(), [](const NamedParameter& a, const NamedParameter& b) {
    if (a.layer != b.layer) return a.layer < b.layer;
    if ((a.name == "weight") != (b.name == "weight")) return a.name == "weight";
    return a.name < b.name;
  });
  return params;
}

std::string LayerWhat(const ir::ModelSpec& model, int layer) {
  if (layer < 0 || layer >= model.layers_size()) return absl::StrCat("layer ", layer);
  return absl::StrCat("layer ", layer, " '", model.layers(layer).name(), "' (", model.layers(layer).kind(), ")");
}

std::string ShapeOf(const at::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ","), "]"); }

// The data position and RNG of a job, as written in job.json.
json PositionJson(const DataPosition& p, const std::string& source) {
  return json{{"source", source}, {"samples", p.samples}, {"epoch", p.epoch}, {"cursor", p.cursor},
              {"dataset_size", p.dataset_size}, {"shuffle_seed", p.shuffle_seed}};
}

absl::StatusOr<json> ParseJson(const std::string& text, const std::string& where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(absl::StrCat(where, ": not a JSON object"));
  return j;
}

// Reads files of one checkpoint directory, checking each against the manifest.
class CheckpointReader {
 public:
  static absl::StatusOr<CheckpointReader> Open(const std::string& tag_dir) {
    CheckpointReader r;
    r.dir_ = tag_dir;
    const std::string manifest = tag_dir + "/" + kManifest;
    if (fs::exists(manifest)) {
      ASSIGN_OR_RETURN(std::string text, ir::ReadFile(manifest));
      ASSIGN_OR_RETURN(json m, ParseJson(text, manifest));
      if (!m.contains("files") || !m["files"].is_object()) {
        return absl::DataLossError(absl::StrCat(manifest, ": no 'files' object"));
      }
      for (const auto& [name, e] : m["files"].items()) {
        if (!e.is_object() || !e.contains("bytes") || !e["bytes"].is_number_integer() || !e.contains("crc32") ||
            !e["crc32"].is_string()) {
          return absl::DataLossError(absl::StrCat(manifest, ": entry '", name, "' needs 'bytes' and 'crc32'"));
        }
        r.manifest_[name] = {name, e["bytes"].get<int64_t>(), 0};
        unsigned long crc = std::strtoul(e["crc32"].get<std::string>().c_str(), nullptr, 16);
        r.manifest_[name].crc32 = static_cast<uint32_t>(crc);
      }
      r.has_manifest_ = true;
    } else if (fs::exists(tag_dir + "/" + kJob)) {
      return absl::DataLossError(absl::StrCat(tag_dir, ": incomplete checkpoint (", kJob, " without ", kManifest,
                                              "): its save was interrupted; load an earlier tag"));
    }
    return r;
  }

  bool has_manifest() const { return has_manifest_; }
  const std::string& dir() const { return dir_; }
  bool Listed(const std::string& name) const { return manifest_.count(name) > 0; }
  const std::map<std::string, FileRecord>& manifest() const { return manifest_; }

  // The verified bytes of `name`; NotFound when it does not exist (and is not listed).
  absl::StatusOr<std::string> Bytes(const std::string& name) const {
    const std::string path = dir_ + "/" + name;
    auto it = manifest_.find(name);
    if (has_manifest_ && it == manifest_.end()) {
      return absl::NotFoundError(absl::StrCat(path, " is not part of this checkpoint (not in its ", kManifest, ")"));
    }
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      if (it != manifest_.end()) {
        return absl::DataLossError(absl::StrCat(path, " is missing (listed in ", kManifest, ")"));
      }
      return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    }
    if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
    if (it != manifest_.end() && st.st_size != it->second.bytes) {
      return absl::DataLossError(absl::StrCat(path, " is ", st.st_size < it->second.bytes ? "truncated" : "too long",
                                              ": ", st.st_size, " bytes, ", kManifest, " says ", it->second.bytes));
    }
    ASSIGN_OR_RETURN(std::string bytes, ir::ReadFile(path));
    if (it != manifest_.end()) {
      const uint32_t crc = Crc32(bytes);
      if (crc != it->second.crc32) {
        return absl::DataLossError(absl::StrFormat("%s: checksum mismatch (crc32 %08x, %s says %08x): the file is "
                                                   "corrupt",
                                                   path, crc, kManifest, it->second.crc32));
      }
    }
    return bytes;
  }

  // A parsed, verified state-dict file (cached).
  absl::StatusOr<const PyValue*> Dict(const std::string& name) {
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

 private:
  std::string dir_;
  bool has_manifest_ = false;
  std::map<std::string, FileRecord> manifest_;
  std::map<std::string, PyValue> cache_;
};

// A float32 copy of tensor `key` of `dict` (file `path`) with `shape`, or an error
// saying what is wrong.
absl::StatusOr<torch::Tensor> TensorEntry(const PyValue& dict, const std::string& key, const std::string& path,
                                          at::IntArrayRef shape, const std::string& what) {
  const PyValue* v = dict.Find(key);
  if (v == nullptr) {
    std::vector<std::string> have;
    for (const auto& [k, x] : dict.dict) have.push_back(k->kind == PyValue::Kind::kString ? k->s : k->TypeName());
    return absl::InvalidArgumentError(absl::StrCat(path, ": no '", key, "' for ", what, " (the file has [",
                                                   absl::StrJoin(have, ", "), "])"));
  }
  if (v->kind != PyValue::Kind::kTensor) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": '", key, "' is a ", v->TypeName(), ", not a tensor"));
  }
  if (!v->tensor.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": '", key, "' holds ", c10::toString(v->tensor.scalar_type()), ", not floating point"));
  }
  if (v->tensor.sizes() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": '", key, "' has shape ", ShapeOf(v->tensor), " (",
                                                   v->tensor.numel(), " values) but ", what, " needs [",
                                                   absl::StrJoin(shape, ","), "]"));
  }
  return v->tensor.to(torch::kFloat32);
}

}  // namespace

absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes) {
  return WriteDurable(path, bytes, false).status();
}

absl::Status AgreeOnStatus(Transport& transport, const absl::Status& local, const std::string& what,
                           absl::Duration timeout) {
  if (transport.world_size() == 1) return local;
  std::vector<int> all;
  RETURN_IF_ERROR(AllRanks(transport, &all));
  std::vector<at::Tensor> flag{torch::full({1}, local.ok() ? 0.0 : 1.0, torch::kFloat64)};
  absl::Status s = transport.AllReduceSum(flag, all, timeout);
  if (!local.ok()) return local;
  if (!s.ok()) return Annotate(s, absl::StrCat("rank ", transport.rank(), ": ", what));
  const int failed = static_cast<int>(flag[0].item<double>());
  if (failed > 0) {
    return absl::AbortedError(absl::StrCat("rank ", transport.rank(), ": ", what, " failed on ", failed,
                                           " other rank(s); see their errors"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveCheckpoint(const std::string& dir, const std::string& tag) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return absl::NotFoundError(absl::StrCat("checkpoint directory '", dir, "' does not exist"));
  if (!fs::is_directory(dir, ec)) return absl::InvalidArgumentError(absl::StrCat("'", dir, "' is not a directory"));
  auto tags = [&] {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (e.is_directory(ec) && ValidTag(name)) out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out.empty() ? std::string("none") : absl::StrJoin(out, ", ");
  };
  if (!tag.empty()) {
    if (!ValidTag(tag)) return absl::InvalidArgumentError(absl::StrCat("'", tag, "' is not a checkpoint tag"));
    const std::string p = dir + "/" + tag;
    if (!fs::is_directory(p, ec)) {
      return absl::NotFoundError(absl::StrCat("no checkpoint tag '", tag, "' in ", dir, " (tags there: ", tags(), ")"));
    }
    return p;
  }
  const std::string latest = dir + "/" + kLatest;
  if (fs::exists(latest, ec)) {
    ASSIGN_OR_RETURN(std::string text, ir::ReadFile(latest));
    std::string named(absl::StripAsciiWhitespace(text));
    if (!ValidTag(named)) {
      return absl::DataLossError(absl::StrCat(latest, " does not name a tag ('", named.substr(0, 64), "')"));
    }
    const std::string p = dir + "/" + named;
    if (!fs::is_directory(p, ec)) {
      return absl::DataLossError(absl::StrCat(latest, " names '", named, "', which is not in ", dir, " (tags there: ",
                                              tags(), ")"));
    }
    return p;
  }
  if (fs::exists(dir + "/" + kManifest, ec) || fs::exists(dir + "/" + LayerFile(0, "model"), ec)) return dir;
  return absl::NotFoundError(absl::StrCat("no checkpoint in ", dir, ": no '", kLatest, "' file and no ",
                                          LayerFile(0, "model"), " (tags there: ", tags(), ")"));
}

absl::StatusOr<std::string> SaveCheckpoint(StageRuntime& rt, const ir::Plan& plan, int64_t step,
                                           const SaveOptions& options) {
  Transport& t = *rt.transport();
  const std::string tag = options.tag.empty() ? absl::StrCat("global_step", step) : options.tag;
  const std::string who = absl::StrCat("rank ", rt.rank(), " stage ", rt.stage(), ": checkpoint ", tag);
  if (!ValidTag(tag)) return absl::InvalidArgumentError(absl::StrCat(who, ": not a valid tag"));
  const std::string dir = options.dir;
  const std::string staging = dir + "/" + tag + kPartial;
  const bool leader = t.rank() == 0;

  // 1. Rank 0 makes a fresh staging directory; nobody writes before it exists.
  absl::Status prepared;
  if (leader) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir)) {
      prepared = absl::InvalidArgumentError(absl::StrCat("cannot create checkpoint directory '", dir, "'",
                                                         ec ? ": " + ec.message() : ""));
    } else {
      fs::remove_all(staging, ec);
      if (!fs::create_directory(staging, ec)) {
        prepared = absl::PermissionDeniedError(absl::StrCat("cannot create '", staging, "'",
                                                            ec ? ": " + ec.message() : ""));
      }
    }
  }
  RETURN_IF_ERROR(AgreeOnStatus(t, prepared, absl::StrCat(who, ": preparing ", staging), options.timeout));

  // 2. The optimizer state (sharded: gathered from this stage's replicas).
  std::vector<std::map<std::string, torch::Tensor>> state;
  if (!options.model_only) {
    auto per_parameter = rt.OptimizerStatePerParameter();
    if (!per_parameter.ok()) return Annotate(per_parameter.status(), who);
    state = *std::move(per_parameter);
  }

  // 3. Replica 0 of every stage writes its layers, in parallel with the other stages.
  absl::Status wrote;
  if (rt.replica() == 0) {
    wrote = [&]() -> absl::Status {
      const std::map<std::string, int> owners = TieOwners(plan.model());
      const auto& range = plan.partition().stages(rt.stage());
      std::map<int, std::vector<NamedParameter>> by_layer;
      for (auto& p : InModuleOrder(rt.Parameters())) by_layer[p.layer].push_back(p);
      std::map<std::pair<int, std::string>, size_t> distinct;  // (layer, name) -> index into `state`
      for (const auto& p : rt.DistinctParameters()) distinct.emplace(std::make_pair(p.layer, p.name), distinct.size());
      const StageOptimizer* opt = rt.optimizer();
      std::vector<FileRecord> records;
      bool die = options.die_mid_write;
      for (int l = range.begin(); l < range.end(); ++l) {
        c10::Dict<std::string, at::Tensor> model;
        std::vector<NamedParameter> kept;
        for (const auto& p : by_layer[l]) {
          if (IsTiedCopy(plan.model(), owners, l, p.name)) continue;  // saved once, by its owner
          model.insert(p.name, p.value.detach());
          kept.push_back(p);
        }
        ASSIGN_OR_RETURN(std::vector<char> bytes, SerializeTorchFile(model));
        ASSIGN_OR_RETURN(FileRecord r, WriteDurable(staging + "/" + LayerFile(l, "model"), View(bytes), die));
        die = false;
        records.push_back(r);
        if (options.model_only || opt == nullptr || opt->StateNames().empty() || kept.empty()) continue;
        c10::impl::GenericDict optim(c10::StringType::get(), c10::AnyType::get());
        for (const auto& p : kept) {
          auto it = distinct.find({l, p.name});
          if (it == distinct.end() || it->second >= state.size()) {
            return absl::InternalError(absl::StrCat("no optimizer state for layer ", l, " ", p.name));
          }
          c10::impl::GenericDict entry(c10::StringType::get(), c10::AnyType::get());
          entry.insert("step", c10::IValue(opt->steps()));
          for (const auto& [name, value] : state[it->second]) entry.insert(name, value);
          optim.insert(p.name, entry);
        }
        ASSIGN_OR_RETURN(std::vector<char> obytes, SerializeTorchFile(optim));
        ASSIGN_OR_RETURN(FileRecord o, WriteDurable(staging + "/" + LayerFile(l, "optim"), View(obytes), false));
        records.push_back(o);
      }
      json list = json::array();
      for (const auto& r : records) {
        list.push_back({{"name", r.name}, {"bytes", r.bytes}, {"crc32", absl::StrFormat("%08x", r.crc32)}});
      }
      return WriteDurable(absl::StrCat(staging, "/", kFragmentPrefix, t.rank(), ".json"), list.dump(), false).status();
    }();
    if (!wrote.ok()) wrote = Annotate(wrote, who);
  }
  RETURN_IF_ERROR(AgreeOnStatus(t, wrote, absl::StrCat(who, ": writing layers"), options.timeout));

  // 4. Rank 0 adds the job file and the manifest, then moves the tag into place and
  // points `latest` at it.
  absl::Status published;
  const std::string final_dir = dir + "/" + tag;
  if (leader) {
    published = [&]() -> absl::Status {
      json files = json::object();
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(staging, ec)) {
        const std::string name = e.path().filename().string();
        if (!absl::StartsWith(name, kFragmentPrefix)) continue;
        ASSIGN_OR_RETURN(std::string text, ir::ReadFile(e.path().string()));
        json list = json::parse(text, nullptr, false);
        if (!list.is_array()) return absl::DataLossError(absl::StrCat(e.path().string(), ": not a file list"));
        for (const auto& r : list) files[r["name"].get<std::string>()] = {{"bytes", r["bytes"]}, {"crc32", r["crc32"]}};
      }
      for (const auto& e : fs::directory_iterator(staging, ec)) {
        if (absl::StartsWith(e.path().filename().string(), kFragmentPrefix)) fs::remove(e.path(), ec);
      }
      for (int l = 0; l < plan.model().layers_size(); ++l) {
        if (!files.contains(LayerFile(l, "model"))) {
          return absl::InternalError(absl::StrCat("no rank wrote ", LayerFile(l, "model")));
        }
      }
      if (!options.model_only) {
        json job;
        job["format"] = "ppc-checkpoint";
        job["version"] = kJobVersion;
        job["tag"] = tag;
        job["step"] = step;
        job["model_fingerprint"] = ir::ModelFingerprint(plan.model());
        job["num_layers"] = plan.model().layers_size();
        const DataPosition pos = rt.DataPositionAt(step);
        job["data"] = PositionJson(pos, pos.dataset_size > 0 ? "cifar10" : "synthetic");
        // Randomness is counter-based: a pure function of these and the micro-batch and
        // layer, so resuming at `next_step` redraws exactly what an uninterrupted run would.
        job["rng"] = {{"kind", "counter-based"}, {"seed", plan.config().seed()}, {"next_step", step}};
        const StageOptimizer* opt = rt.optimizer();
        json names = json::array();
        if (opt != nullptr) {
          for (const auto& n : opt->StateNames()) names.push_back(n);
        }
        job["optimizer"] = {{"type", plan.config().optimizer().type().empty() ? "sgd" : plan.config().optimizer().type()},
                            {"steps", opt != nullptr ? opt->steps() : 0},
                            {"state", names}};
        job["zero_stage"] = plan.config().zero_stage();
        json partition = json::array();
        for (const auto& r : plan.partition().stages()) partition.push_back({r.begin(), r.end()});
        job["topology"] = {{"num_stages", plan.topology().num_stages()},
                           {"data_parallel", plan.topology().data_parallel()},
                           {"partition", partition},
                           {"schedule", plan.config().schedule()}};
        ASSIGN_OR_RETURN(std::string config, ir::MessageToJson(plan.config()));
        ASSIGN_OR_RETURN(std::string model, ir::MessageToJson(plan.model()));
        job["config"] = json::parse(config);
        job["model"] = json::parse(model);
        ASSIGN_OR_RETURN(FileRecord r, WriteDurable(staging + "/" + kJob, job.dump(2) + "\n", false));
        files[r.name] = {{"bytes", r.bytes}, {"crc32", absl::StrFormat("%08x", r.crc32)}};
      }
      json manifest = {{"format", "ppc-checkpoint-manifest"}, {"version", kJobVersion}, {"tag", tag},
                       {"checksum", "crc32 (zlib)"}, {"files", files}};
      RETURN_IF_ERROR(WriteDurable(staging + "/" + kManifest, manifest.dump(2) + "\n", false).status());
      // Into place: swap with an older copy of the same tag atomically, else rename.
      if (fs::exists(final_dir, ec)) {
        if (renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
          fs::remove_all(staging, ec);
        } else {
          const std::string old = final_dir + ".replaced";
          fs::remove_all(old, ec);
          if (std::rename(final_dir.c_str(), old.c_str()) != 0) return Errno("cannot move aside", final_dir);
          if (std::rename(staging.c_str(), final_dir.c_str()) != 0) return Errno("cannot move into place", final_dir);
          fs::remove_all(old, ec);
        }
      } else if (std::rename(staging.c_str(), final_dir.c_str()) != 0) {
        return Errno("cannot move into place", final_dir);
      }
      RETURN_IF_ERROR(FsyncDir(dir));
      if (!options.model_only) RETURN_IF_ERROR(WriteDurable(dir + "/" + kLatest, tag, false).status());
      // Staging directories of saves that died are no longer anyone's.
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.is_directory(ec) && absl::EndsWith(e.path().filename().string(), kPartial)) fs::remove_all(e.path(), ec);
      }
      return absl::OkStatus();
    }();
    if (!published.ok()) published = Annotate(published, who);
  }
  RETURN_IF_ERROR(AgreeOnStatus(t, published, absl::StrCat(who, ": publishing"), options.timeout));
  return final_dir;
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(StageRuntime& rt, const ir::Plan& plan, const LoadOptions& options) {
  const std::string who = absl::StrCat("rank ", rt.rank(), " stage ", rt.stage());
  LoadedCheckpoint out;
  ASSIGN_OR_RETURN(out.tag_dir, ResolveCheckpoint(options.dir, options.tag));
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(out.tag_dir));
  const ir::ModelSpec& model = plan.model();
  out.imported = !reader.has_manifest();
  json job;
  if (!out.imported) {
    ASSIGN_OR_RETURN(std::string text, reader.Bytes(kJob));
    const std::string job_path = out.tag_dir + "/" + kJob;
    ASSIGN_OR_RETURN(job, ParseJson(text, job_path));
    if (job.value("format", "") != "ppc-checkpoint" || !job.contains("version") || !job["version"].is_number_integer()) {
      return absl::DataLossError(absl::StrCat(job_path, ": not a ppc checkpoint job file"));
    }
    if (job["version"].get<int>() != kJobVersion) {
      return absl::FailedPreconditionError(absl::StrCat(job_path, ": checkpoint version ", job["version"].get<int>(),
                                                        " (this build reads version ", kJobVersion, ")"));
    }
    const std::string want = ir::ModelFingerprint(model);
    const std::string have = job.value("model_fingerprint", "");
    if (have != want) {
      std::string their = "another model";
      if (job.contains("model") && job["model"].is_object()) their = absl::StrCat("model '", job["model"].value("name", ""), "'");
      return absl::InvalidArgumentError(absl::StrCat(
          out.tag_dir, ": the checkpoint is of ", their, " (", job.value("num_layers", 0), " layers, fingerprint ",
          have, "), not of this plan's model '", model.name(), "' (", model.layers_size(), " layers, fingerprint ",
          want, ")"));
    }
    if (!job.contains("step") || !job["step"].is_number_integer() || job["step"].get<int64_t>() < 0) {
      return absl::DataLossError(absl::StrCat(job_path, ": no valid 'step'"));
    }
    out.step = job["step"].get<int64_t>();
    if (job.contains("data") && job["data"].is_object()) {
      const json& d = job["data"];
      DataPosition p;
      p.samples = d.value("samples", int64_t{0});
      p.epoch = d.value("epoch", int64_t{0});
      p.cursor = d.value("cursor", int64_t{0});
      p.dataset_size = d.value("dataset_size", int64_t{0});
      p.shuffle_seed = d.value("shuffle_seed", uint64_t{0});
      if (p.samples < 0) return absl::DataLossError(absl::StrCat(job_path, ": negative data position"));
      out.data = p;
    }
  } else {
    // An import: DeepSpeed's layer files only. A file beyond the model's layers means
    // another model.
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(out.tag_dir, ec)) {
      int layer;
      const std::string name = e.path().filename().string();
      if (std::sscanf(name.c_str(), "layer_%d-model_states.pt", &layer) == 1 && layer >= model.layers_size()) {
        return absl::InvalidArgumentError(absl::StrCat(e.path().string(), ": the model has only ",
                                                       model.layers_size(), " layers (0..", model.layers_size() - 1,
                                                       "); this is another model's checkpoint"));
      }
    }
    out.notes.push_back(absl::StrCat(out.tag_dir, " has no ", kManifest,
                                     ": imported its layer_XX-model_states.pt as initial weights (DeepSpeed layout); "
                                     "the optimizer state and the step start fresh"));
  }

  // Weights: every parameter of this stage from its layer's file; a tied weight from
  // the file of the layer that owns it (saved once).
  const std::map<std::string, int> owners = TieOwners(model);
  const auto& range = plan.partition().stages(rt.stage());
  std::map<int, std::set<std::string>> expected;
  for (int l = range.begin(); l < range.end(); ++l) expected[l];
  for (const auto& p : rt.Parameters()) expected[p.layer].insert(p.name);
  for (int l = range.begin(); l < range.end(); ++l) {
    const std::string file = LayerFile(l, "model");
    auto dict = reader.Dict(file);
    if (!dict.ok()) {
      // DeepSpeed writes no file for a layer without state (a lambda such as a flatten).
      if (out.imported && absl::IsNotFound(dict.status()) && expected[l].empty()) continue;
      if (absl::IsNotFound(dict.status()) && !expected[l].empty()) {
        return absl::NotFoundError(absl::StrCat(dict.status().message(), ": ", LayerWhat(model, l), " has parameters ",
                                                absl::StrJoin(expected[l], ", ")));
      }
      return dict.status();
    }
    for (const auto& [k, v] : (*dict)->dict) {
      const std::string key = k->kind == PyValue::Kind::kString ? k->s : k->TypeName();
      if (!expected[l].count(key) || (!out.imported && IsTiedCopy(model, owners, l, key))) {
        return absl::InvalidArgumentError(absl::StrCat(
            out.tag_dir, "/", file, ": unexpected '", key, "': ", LayerWhat(model, l),
            expected[l].empty() ? std::string(" has no parameters")
                                : absl::StrCat(" has [", absl::StrJoin(expected[l], ", "), "]")));
      }
    }
  }
  for (const auto& p : rt.Parameters()) {
    int source = p.layer;
    if (IsTiedCopy(model, owners, p.layer, p.name)) {
      const int owner = owners.at(model.layers(p.layer).tie_key());
      // ppc saves a tied weight once, with its owner; an import may have it per layer.
      bool own_copy = false;
      if (out.imported) {
        auto mine = reader.Dict(LayerFile(p.layer, "model"));
        own_copy = mine.ok() && (*mine)->Find(p.name) != nullptr;
      }
      if (!own_copy) source = owner;
    }
    const std::string file = LayerFile(source, "model");
    ASSIGN_OR_RETURN(const PyValue* dict, reader.Dict(file));
    ASSIGN_OR_RETURN(torch::Tensor value, TensorEntry(*dict, p.name, out.tag_dir + "/" + file, p.value.sizes(),
                                                      LayerWhat(model, p.layer)));
    RETURN_IF_ERROR(rt.SetParameter(p.layer, p.name, value));
  }

  // Optimizer state, in the stage's flattened order, from the per-layer files.
  const StageOptimizer* opt = rt.optimizer();
  std::map<std::string, torch::Tensor> full;
  int64_t steps = 0;
  if (opt != nullptr && !out.imported && !options.module_only) {
    const json& o = job.contains("optimizer") && job["optimizer"].is_object() ? job["optimizer"] : json::object();
    const std::string type = o.value("type", "");
    if (type != opt->type()) {
      return absl::InvalidArgumentError(absl::StrCat(
          out.tag_dir, "/", kJob, ": the checkpoint's optimizer is '", type, "', this plan's is '", opt->type(),
          "'; pass --load-module-only to load the weights alone"));
    }
    steps = o.value("steps", int64_t{0});
    std::set<std::string> saved;
    if (o.contains("state") && o["state"].is_array()) {
      for (const auto& n : o["state"]) {
        if (n.is_string()) saved.insert(n.get<std::string>());
      }
    }
    std::vector<std::string> names;
    for (const std::string& n : opt->StateNames()) {
      if (saved.count(n)) {
        names.push_back(n);
      } else {
        out.notes.push_back(absl::StrCat("the checkpoint has no optimizer state '", n, "'; it starts fresh"));
      }
    }
    for (const auto& n : names) full[n] = torch::zeros({opt->total_numel()});
    int64_t off = 0;
    for (const auto& p : rt.DistinctParameters()) {
      if (names.empty()) break;
      const int source = IsTiedCopy(model, owners, p.layer, p.name)
                             ? owners.at(model.layers(p.layer).tie_key())
                             : p.layer;
      const std::string file = LayerFile(source, "optim");
      const std::string path = out.tag_dir + "/" + file;
      ASSIGN_OR_RETURN(const PyValue* dict, reader.Dict(file));
      const PyValue* entry = dict->Find(p.name);
      if (entry == nullptr || entry->kind != PyValue::Kind::kDict) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": no optimizer state for '", p.name, "' of ",
                                                       LayerWhat(model, p.layer)));
      }
      for (const auto& n : names) {
        ASSIGN_OR_RETURN(torch::Tensor t, TensorEntry(*entry, n, path + " ['" + p.name + "']", p.value.sizes(),
                                                      LayerWhat(model, p.layer)));
        full[n].narrow(0, off, p.value.numel()).copy_(t.reshape({-1}));
      }
      off += p.value.numel();
    }
  } else if (opt != nullptr && options.module_only && !out.imported) {
    out.notes.push_back("--load-module-only: loaded the weights; the optimizer state and the step start fresh");
  }
  if (options.module_only) {
    out.step = 0;
    out.data.reset();
  }
  RETURN_IF_ERROR(rt.SetOptimizerState(full, steps));
  return out;
}

absl::Status ExportCheckpoint(const std::string& tag_dir, const ir::ModelSpec* model_arg, const std::string& out) {
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(tag_dir));
  // Every file of the checkpoint, not only the ones exported, must be intact.
  for (const auto& [name, r] : reader.manifest()) RETURN_IF_ERROR(reader.Bytes(name).status());
  ir::ModelSpec model;
  if (reader.has_manifest() && reader.Listed(kJob)) {
    ASSIGN_OR_RETURN(std::string text, reader.Bytes(kJob));
    ASSIGN_OR_RETURN(json job, ParseJson(text, tag_dir + "/" + kJob));
    if (!job.contains("model") || !job["model"].is_object()) {
      return absl::DataLossError(absl::StrCat(tag_dir, "/", kJob, ": no model"));
    }
    RETURN_IF_ERROR(ir::JsonToMessage(job["model"].dump(), tag_dir + "/" + kJob, &model));
  } else if (model_arg != nullptr) {
    model = *model_arg;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(tag_dir, " has no ", kJob,
                                                   " to name its layers (an imported checkpoint): give the model"));
  }
  const std::map<std::string, int> owners = TieOwners(model);
  c10::Dict<std::string, at::Tensor> all;
  for (int l = 0; l < model.layers_size(); ++l) {
    const std::string prefix = model.layers(l).name().empty() ? absl::StrCat("layer_", l) : model.layers(l).name();
    auto dict = reader.Dict(LayerFile(l, "model"));
    if (!dict.ok()) {
      if (absl::IsNotFound(dict.status()) && !reader.has_manifest()) continue;  // an import's stateless layer
      return dict.status();
    }
    for (const auto& [k, v] : (*dict)->dict) {
      if (k->kind != PyValue::Kind::kString || v->kind != PyValue::Kind::kTensor) {
        return absl::DataLossError(absl::StrCat(tag_dir, "/", LayerFile(l, "model"), ": an entry that is not a "
                                                "named tensor"));
      }
      all.insert(absl::StrCat(prefix, ".", k->s), v->tensor);
    }
    const std::string& key = model.layers(l).tie_key();
    if (!key.empty() && (*dict)->Find("weight") == nullptr && owners.at(key) != l) {
      ASSIGN_OR_RETURN(const PyValue* owner, reader.Dict(LayerFile(owners.at(key), "model")));
      const PyValue* w = owner->Find("weight");
      if (w == nullptr || w->kind != PyValue::Kind::kTensor) {
        return absl::DataLossError(absl::StrCat(tag_dir, "/", LayerFile(owners.at(key), "model"),
                                                ": no tied 'weight'"));
      }
      all.insert(absl::StrCat(prefix, ".weight"), w->tensor);
    }
  }
  ASSIGN_OR_RETURN(std::vector<char> bytes, SerializeTorchFile(all));
  return WriteFileDurably(out, View(bytes));
}

}  // namespace ppc::runtime
