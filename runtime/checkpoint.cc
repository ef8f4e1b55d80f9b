#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/limits.h"
#include "ir/plan_check.h"
#include "ir/plan_io.h"
#include "ir/topology.h"
#include "ir/status_macros.h"
#include "runtime/checkpoint_files.h"
#include "runtime/layers.h"
#include "runtime/torch_file.h"
#include "runtime/torch_status.h"

namespace ppc::runtime {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kFragmentPrefix[] = ".files-rank";
constexpr int64_t kMaxJobBytes = 64 << 20;
constexpr int64_t kMaxLatestBytes = 4096;

absl::string_view View(const std::vector<char>& bytes) { return absl::string_view(bytes.data(), bytes.size()); }

// Runs `f`, turning anything LibTorch or the JSON library throws into an error.
template <typename T, typename F>
absl::StatusOr<T> Guarded(const std::string& what, F&& f) {
  absl::StatusOr<T> out = absl::InternalError("unset");
  absl::Status thrown = TorchCall([&] { out = f(); });
  if (!thrown.ok()) return absl::InternalError(absl::StrCat(what, ": ", thrown.message()));
  return out;
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
  return absl::StrCat("layer ", layer, " '", model.layers(layer).name(), "' (", model.layers(layer).kind(), ")");
}

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ","), "]"); }

using Shapes = std::map<std::string, std::vector<int64_t>>;

// The tensors of one layer's state-dict file: exactly the names of `want`, but for
// those in `may_lack`, each floating point with its shape; returned as float32.
absl::StatusOr<std::map<std::string, torch::Tensor>> LayerTensors(const PyValue& dict, const std::string& path,
                                                                  const Shapes& want,
                                                                  const std::set<std::string>& may_lack,
                                                                  const std::string& what) {
  std::vector<std::string> names;
  for (const auto& [n, s] : want) names.push_back(n);
  const std::string has = names.empty() ? " has no parameters" : absl::StrCat(" has [", absl::StrJoin(names, ", "), "]");
  std::map<std::string, torch::Tensor> out;
  for (const auto& [k, v] : dict.dict) {
    const std::string key = k->kind == PyValue::Kind::kString ? k->s : absl::StrCat("<", k->TypeName(), ">");
    auto it = want.find(key);
    if (it == want.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": unexpected '", Printable(key), "': ", what, has));
    }
    if (v->kind != PyValue::Kind::kTensor) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": '", key, "' is a ", v->TypeName(), ", not a tensor"));
    }
    if (!v->tensor.is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": '", key, "' holds ",
                                                     c10::toString(v->tensor.scalar_type()), ", not floating point"));
    }
    if (v->tensor.sizes() != at::IntArrayRef(it->second)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": '", key, "' has shape ", Shape(v->tensor.sizes()), " (",
                                                     v->tensor.numel(), " values) but ", what, " needs ",
                                                     Shape(it->second)));
    }
    out[key] = v->tensor.to(torch::kFloat32);
  }
  for (const auto& [name, shape] : want) {
    if (!out.count(name) && !may_lack.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": no '", name, "' for ", what, has));
    }
  }
  return out;
}

// Parameters must be finite: a NaN or an infinity in a weight is a corrupt checkpoint
// (training on it only produces NaN losses). This project's layers keep no buffers, so
// every tensor of a model file is a parameter (LayerTensors refuses any other name).
absl::Status CheckFinite(const std::string& path, const std::string& name, const torch::Tensor& t,
                         const std::string& what) {
  if (torch::isfinite(t).all().item<bool>()) return absl::OkStatus();
  const int64_t nan = torch::isnan(t).sum().item<int64_t>();
  const int64_t inf = torch::isinf(t).sum().item<int64_t>();
  return absl::DataLossError(absl::StrCat(path, ": tensor '", name, "' has non-finite values (", nan, " NaN, ", inf,
                                          " infinite of ", t.numel(), " as float32) for ", what));
}

absl::Status CheckFinite(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                         const std::string& what) {
  for (const auto& [name, t] : tensors) RETURN_IF_ERROR(CheckFinite(path, name, t, what));
  return absl::OkStatus();
}

constexpr char kRngKind[] = "counter-based";
constexpr char kSynthetic[] = "synthetic";
constexpr char kCifar10[] = "cifar10";

// The data source a position describes ("cifar10" for a finite data set).
const char* SourceOf(const DataPosition& p) { return p.dataset_size > 0 ? kCifar10 : kSynthetic; }

std::string DescribeSource(const DataPosition& p) {
  return p.dataset_size > 0 ? absl::StrCat("CIFAR-10 data ('", kCifar10, "', ", p.dataset_size, " training samples)")
                            : absl::StrCat("synthetic data ('", kSynthetic, "')");
}

// What job.json says, checked.
struct Job {
  std::string tag;
  int64_t step = 0;
  std::string fingerprint;
  uint64_t seed = 0;
  std::optional<DataPosition> data;
  std::string optimizer;
  int64_t optimizer_steps = 0;
  std::vector<std::string> optimizer_state;
  ir::ModelSpec model;
  ir::TrainingConfig config;
};

// Parses DIR/<tag>/job.json and checks every field: its type, its range, and its
// consistency with the other fields (the stored model, config, topology and partition
// must form a valid plan; the step, the RNG and data positions and the optimizer's step
// count must agree). It says nothing about the run loading it: Load compares.
absl::StatusOr<Job> ParseJob(const std::string& text, const std::string& tag_dir) {
  const std::string where = tag_dir + "/" + kJobFile;
  ASSIGN_OR_RETURN(json j, JsonFields::Parse(text, where));
  JsonFields f(j, where);
  Job job;
  ASSIGN_OR_RETURN(std::string format, f.String("format"));
  ASSIGN_OR_RETURN(int64_t version, f.Int("version"));
  if (format != "ppc-checkpoint") {
    return absl::DataLossError(absl::StrCat(where, ": not a ppc checkpoint job file (format '", Printable(format), "')"));
  }
  if (version != kCheckpointVersion) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": checkpoint version ", version,
                                                      " (this build reads version ", kCheckpointVersion, ")"));
  }
  RETURN_IF_ERROR(f.Only({"format", "version", "tag", "step", "model_fingerprint", "num_layers", "data", "rng",
                          "optimizer", "zero_stage", "topology", "config", "model"}));
  ASSIGN_OR_RETURN(job.tag, f.String("tag"));
  if (!IsDirectoryOfTag(tag_dir, job.tag)) {
    return f.Bad("tag", absl::StrCat("is '", Printable(job.tag), "' but the checkpoint's directory is '",
                                     Printable(TagOfDirectory(tag_dir)),
                                     "' (a checkpoint's tag is the name of its directory)"));
  }
  ASSIGN_OR_RETURN(job.step, f.Int("step"));

  // The model, and the config it was trained with.
  ASSIGN_OR_RETURN(job.fingerprint, f.String("model_fingerprint"));
  ASSIGN_OR_RETURN(JsonFields model, f.Object("model"));
  if (absl::Status s = ir::JsonToMessage(model.value().dump(), absl::StrCat(where, " 'model'"), &job.model); !s.ok()) {
    return absl::DataLossError(s.message());
  }
  // The recorded fingerprint is of the recorded model: an edited model is caught here.
  if (ir::ModelFingerprint(job.model) != job.fingerprint) {
    return absl::DataLossError(absl::StrCat(where, ": 'model' does not match its 'model_fingerprint' ",
                                            Printable(job.fingerprint)));
  }
  const int64_t layers = job.model.layers_size();
  ASSIGN_OR_RETURN(int64_t num_layers, f.Int("num_layers"));
  if (num_layers != layers) {
    return f.Bad("num_layers", absl::StrCat("is ", num_layers, " but its 'model' has ", layers, " layers"));
  }
  ASSIGN_OR_RETURN(JsonFields config, f.Object("config"));
  if (absl::Status s = ir::JsonToMessage(config.value().dump(), absl::StrCat(where, " 'config'"), &job.config);
      !s.ok()) {
    return absl::DataLossError(s.message());
  }
  ASSIGN_OR_RETURN(int64_t zero_stage, f.Int("zero_stage"));
  if (zero_stage > 1) return f.Bad("zero_stage", absl::StrCat("is ", zero_stage, "; it must be 0 or 1"));
  if (zero_stage != job.config.zero_stage()) {
    return f.Bad("zero_stage", absl::StrCat("is ", zero_stage, " but 'config' says zero_stage ",
                                            job.config.zero_stage()));
  }

  // The topology and partition it was saved with: valid for the stored model (a load
  // may use any other; re-partitioning is supported).
  ir::Plan saved;
  *saved.mutable_model() = job.model;
  *saved.mutable_config() = job.config;
  ASSIGN_OR_RETURN(JsonFields topology, f.Object("topology"));
  RETURN_IF_ERROR(topology.Only({"num_stages", "data_parallel", "partition", "schedule"}));
  ASSIGN_OR_RETURN(int64_t num_stages, topology.Int("num_stages", 1));
  if (num_stages > layers || num_stages > ir::kMaxStages) {
    return topology.Bad("num_stages", absl::StrCat("is ", num_stages, " but the model has ", layers,
                                                   " layers (every stage holds at least one)"));
  }
  ASSIGN_OR_RETURN(int64_t data_parallel, topology.Int("data_parallel", 1));
  if (data_parallel > ir::kMaxDataParallel) {
    return topology.Bad("data_parallel", absl::StrCat("is ", data_parallel, "; at most ", ir::kMaxDataParallel));
  }
  saved.mutable_topology()->set_num_stages(static_cast<int>(num_stages));
  saved.mutable_topology()->set_data_parallel(static_cast<int>(data_parallel));
  if (!topology.Has("partition")) return topology.Bad("partition", "is missing");
  // One [begin, end) layer range per virtual stage (num_stages x config.virtual_stages).
  const int64_t chunks = std::max(1, job.config.virtual_stages());
  const json& partition = topology.value()["partition"];
  if (!partition.is_array() || static_cast<int64_t>(partition.size()) != num_stages * chunks) {
    return topology.Bad("partition", absl::StrCat("must be a list of ", num_stages * chunks,
                                                  " [begin, end] layer ranges (one per virtual stage), not ",
                                                  Printable(partition.dump())));
  }
  int64_t next = 0;
  for (size_t s = 0; s < partition.size(); ++s) {
    const json& r = partition[s];
    const bool pair = r.is_array() && r.size() == 2 && r[0].is_number_integer() && r[1].is_number_integer();
    const int64_t begin = pair ? r[0].get<int64_t>() : -1, end = pair ? r[1].get<int64_t>() : -1;
    if (!pair || begin != next || end <= begin || end > layers) {
      return topology.Bad("partition", absl::StrCat("virtual stage ", s, " is ", Printable(r.dump()),
                                                    "; each must be a non-empty range [begin, end) of layers "
                                                    "starting where the previous one ended (",
                                                    next, "), within the model's ", layers, " layers"));
    }
    auto* range = saved.mutable_placement()->add_virtual_stages();
    range->set_begin(static_cast<int>(begin));
    range->set_end(static_cast<int>(end));
    next = end;
  }
  ir::Grid::RoundRobin(static_cast<int>(num_stages), static_cast<int>(chunks), saved.mutable_placement());
  if (next != layers) {
    return topology.Bad("partition", absl::StrCat("covers layers [0, ", next, ") of the model's ", layers));
  }
  ASSIGN_OR_RETURN(std::string schedule, topology.String("schedule"));
  if (schedule != job.config.schedule()) {
    return topology.Bad("schedule", absl::StrCat("is '", Printable(schedule), "' but 'config' says '",
                                                 Printable(job.config.schedule()), "'"));
  }
  if (absl::Status valid = ir::CheckPlanStructure(saved, /*complete=*/false); !valid.ok()) {
    return absl::DataLossError(absl::StrCat(where, ": the plan it was saved with ('model', 'config', 'topology') is "
                                            "invalid: ", valid.message()));
  }

  // RNG: counter-based, so the seed and the next step are its whole state.
  ASSIGN_OR_RETURN(JsonFields rng, f.Object("rng"));
  RETURN_IF_ERROR(rng.Only({"kind", "seed", "next_step"}));
  ASSIGN_OR_RETURN(std::string kind, rng.String("kind"));
  if (kind != kRngKind) {
    return rng.Bad("kind", absl::StrCat("is '", Printable(kind), "'; this build's randomness is '", kRngKind, "'"));
  }
  ASSIGN_OR_RETURN(job.seed, rng.Uint("seed"));
  if (job.seed != job.config.seed()) {
    return rng.Bad("seed", absl::StrCat("is ", job.seed, " but 'config' says seed ", job.config.seed()));
  }
  ASSIGN_OR_RETURN(int64_t next_step, rng.Int("next_step"));
  if (next_step != job.step) {
    return rng.Bad("next_step", absl::StrCat("is ", next_step, " but 'step' is ", job.step,
                                             " (the RNG continues with the step after the last completed one)"));
  }

  // Where the training data stood.
  ASSIGN_OR_RETURN(JsonFields d, f.Object("data"));
  RETURN_IF_ERROR(d.Only({"source", "samples", "epoch", "cursor", "dataset_size", "shuffle_seed"}));
  DataPosition p;
  ASSIGN_OR_RETURN(std::string source, d.String("source"));
  ASSIGN_OR_RETURN(p.samples, d.Int("samples"));
  ASSIGN_OR_RETURN(p.epoch, d.Int("epoch"));
  ASSIGN_OR_RETURN(p.cursor, d.Int("cursor"));
  ASSIGN_OR_RETURN(p.dataset_size, d.Int("dataset_size"));
  ASSIGN_OR_RETURN(p.shuffle_seed, d.Uint("shuffle_seed"));
  if (source != kSynthetic && source != kCifar10) {
    return d.Bad("source", absl::StrCat("is '", Printable(source), "'; it must be '", kSynthetic, "' or '", kCifar10,
                                        "'"));
  }
  if (source != SourceOf(p)) {
    return d.Bad("source", absl::StrCat("is '", source, "' but 'dataset_size' is ", p.dataset_size, " (",
                                        kSynthetic, " data has none, ", kCifar10, " data a positive size)"));
  }
  if (p.dataset_size > 0 && (p.epoch != p.samples / p.dataset_size || p.cursor != p.samples % p.dataset_size)) {
    return absl::DataLossError(absl::StrCat(where, ": data position (samples ", p.samples, ", epoch ", p.epoch,
                                            ", cursor ", p.cursor, ") is inconsistent for ", p.dataset_size,
                                            " samples"));
  }
  if (p.dataset_size == 0) {
    // Synthetic samples are a function of (seed, step): the position follows from them.
    int64_t global_batch = 0, samples = 0;
    const bool fits = ir::CheckedMul(int64_t{job.config.micro_batches()} * job.config.micro_batch_size(),
                                     data_parallel, &global_batch) &&
                      ir::CheckedMul(job.step, global_batch, &samples);
    if (!fits || p.samples != samples || p.epoch != 0 || p.cursor != 0 || p.shuffle_seed != job.seed) {
      return absl::DataLossError(absl::StrCat(
          where, ": synthetic data position (samples ", p.samples, ", epoch ", p.epoch, ", cursor ", p.cursor,
          ", shuffle_seed ", p.shuffle_seed, ") is inconsistent with step ", job.step, " of ", global_batch,
          " samples and seed ", job.seed, " (expected samples ", samples, ", epoch 0, cursor 0, shuffle_seed ",
          job.seed, ")"));
    }
  }
  job.data = p;

  // The optimizer.
  ASSIGN_OR_RETURN(JsonFields o, f.Object("optimizer"));
  RETURN_IF_ERROR(o.Only({"type", "steps", "state"}));
  ASSIGN_OR_RETURN(job.optimizer, o.String("type"));
  ASSIGN_OR_RETURN(job.optimizer_steps, o.Int("steps"));
  ASSIGN_OR_RETURN(job.optimizer_state, o.Strings("state"));
  std::vector<std::string> names;  // the state the type keeps
  if (job.optimizer == "adam" || job.optimizer == "adamw") {
    names = {"exp_avg", "exp_avg_sq"};
  } else if (job.optimizer == "sgd") {
    names = {"momentum_buffer"};
  } else {
    return o.Bad("type", absl::StrCat("is '", Printable(job.optimizer), "'; it must be sgd, adam or adamw"));
  }
  const std::string configured = job.config.optimizer().type().empty() ? "sgd" : job.config.optimizer().type();
  if (job.optimizer != configured) {
    return o.Bad("type", absl::StrCat("is '", job.optimizer, "' but 'config' says '", Printable(configured), "'"));
  }
  std::set<std::string> seen;
  for (const std::string& n : job.optimizer_state) {
    if (std::find(names.begin(), names.end(), n) == names.end()) {
      return o.Bad("state", absl::StrCat("names '", Printable(n), "', which is not ", job.optimizer, " state (",
                                         absl::StrJoin(names, ", "), ")"));
    }
    if (!seen.insert(n).second) return o.Bad("state", absl::StrCat("names '", n, "' twice"));
  }
  // The optimizer has stepped once per completed step (a plan that does not train keeps
  // no optimizer: no steps, no state).
  if (job.optimizer_steps != job.step && !(job.optimizer_steps == 0 && job.optimizer_state.empty())) {
    return o.Bad("steps", absl::StrCat("is ", job.optimizer_steps, " but 'step' is ", job.step,
                                       " (one optimizer step per training step)"));
  }
  return job;
}

// The manifest of a checkpoint of `model` lists a model file for every layer (ppc writes
// one even for a layer without parameters), optimizer files only for layers with
// parameters (when `counts_known`: the model's param_count fields are those of a
// compiled plan), and no file of a layer the model does not have.
absl::Status CheckManifestCoversModel(const CheckpointReader& reader, const ir::ModelSpec& model, bool counts_known) {
  if (!reader.has_manifest()) return absl::OkStatus();
  const std::string path = reader.dir() + "/" + kManifestFile;
  const int layers = model.layers_size();
  for (const auto& [name, r] : reader.manifest()) {
    int layer = -1;
    char kind[8] = {0};
    if (name == kJobFile || std::sscanf(name.c_str(), "layer_%d-%5[a-z]_states.pt", &layer, kind) != 2) continue;
    if (layer >= layers) {
      return absl::DataLossError(absl::StrCat(path, ": lists '", name, "', but the model has ", layers,
                                              " layers (0..", layers - 1, ")"));
    }
    if (counts_known && std::string(kind) == "optim" && model.layers(layer).param_count() == 0) {
      return absl::DataLossError(absl::StrCat(path, ": lists '", name, "', but ", LayerWhat(model, layer),
                                              " has no parameters"));
    }
  }
  for (int l = 0; l < layers; ++l) {
    if (!reader.manifest().count(LayerFile(l, "model"))) {
      return absl::DataLossError(absl::StrCat(path, ": does not list '", LayerFile(l, "model"), "' (",
                                              LayerWhat(model, l), "); a ppc checkpoint has one for every layer"));
    }
  }
  return absl::OkStatus();
}

// A random number chosen by rank 0 and known to every rank.
absl::StatusOr<uint64_t> AgreeOnNonce(Transport& t, absl::Duration timeout) {
  int64_t mine = 0;
  if (t.rank() == 0) {
    std::random_device rd;
    mine = static_cast<int64_t>(((uint64_t(rd()) << 32) ^ rd()) & 0x7fffffffffffffffull);
  }
  if (t.world_size() == 1) return static_cast<uint64_t>(mine);
  std::vector<int> all;
  for (int r = 0; r < t.world_size(); ++r) all.push_back(r);
  std::vector<at::Tensor> v{torch::full({1}, mine, torch::kInt64)};
  RETURN_IF_ERROR(t.AllReduceSum(v, all, timeout));
  return static_cast<uint64_t>(v[0].item<int64_t>());
}

absl::StatusOr<std::string> Resolve(const std::string& dir, const std::string& tag) {
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
    if (out.size() > 20) out.resize(20), out.push_back("...");
    return out.empty() ? std::string("none") : absl::StrJoin(out, ", ");
  };
  if (!tag.empty()) {
    if (!ValidTag(tag)) return absl::InvalidArgumentError(absl::StrCat("'", Printable(tag), "' is not a checkpoint tag"));
    const std::string p = dir + "/" + tag;
    if (!fs::is_directory(p, ec)) {
      return absl::NotFoundError(absl::StrCat("no checkpoint tag '", tag, "' in ", dir, " (tags there: ", tags(), ")"));
    }
    return p;
  }
  const std::string latest = dir + "/" + kLatestFile;
  if (fs::exists(latest, ec) || fs::is_symlink(latest, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadBoundedFile(latest, kMaxLatestBytes));
    std::string named(absl::StripAsciiWhitespace(text));
    if (!ValidTag(named)) {
      return absl::DataLossError(absl::StrCat(latest, " does not name a tag ('", Printable(named, 64), "')"));
    }
    const std::string p = dir + "/" + named;
    if (!fs::is_directory(p, ec)) {
      return absl::DataLossError(absl::StrCat(latest, " names '", named, "', which is not in ", dir, " (tags there: ",
                                              tags(), ")"));
    }
    return p;
  }
  if (fs::exists(dir + "/" + kManifestFile, ec) || fs::exists(dir + "/" + LayerFile(0, "model"), ec)) return dir;
  return absl::NotFoundError(absl::StrCat("no checkpoint in ", dir, ": no '", kLatestFile, "' file and no ",
                                          LayerFile(0, "model"), " (tags there: ", tags(), ")"));
}

absl::StatusOr<std::string> Save(StageRuntime& rt, const ir::Plan& plan, int64_t step, const SaveOptions& options) {
  Transport& t = *rt.transport();
  const std::string tag = options.tag.empty() ? absl::StrCat("global_step", step) : options.tag;
  const std::string who = absl::StrCat("rank ", rt.rank(), " stage ", rt.stage(), ": checkpoint ", tag);
  if (!ValidTag(tag)) return absl::InvalidArgumentError(absl::StrCat(who, ": not a valid tag"));
  const std::string dir = options.dir;
  const std::string final_dir = dir + "/" + tag;
  const bool leader = t.rank() == 0;
  auto nonce = AgreeOnNonce(t, options.timeout);
  if (!nonce.ok()) return Annotate(nonce.status(), who);
  const std::string staging = absl::StrFormat("%s/%s.partial-%016x", dir, tag, *nonce);

  // 1. Rank 0 makes a fresh staging directory; nobody writes before it exists. What is
  // already under the tag's name must be an earlier checkpoint, or it is left alone.
  absl::Status prepared;
  if (leader) {
    prepared = [&]() -> absl::Status {
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (!fs::is_directory(dir, ec)) {
        return absl::InvalidArgumentError(absl::StrCat("cannot create checkpoint directory '", dir, "'",
                                                       ec ? ": " + ec.message() : ""));
      }
      struct stat st;
      if (lstat(final_dir.c_str(), &st) == 0 &&
          (!S_ISDIR(st.st_mode) || !fs::exists(final_dir + "/" + kManifestFile, ec))) {
        return absl::FailedPreconditionError(absl::StrCat("'", final_dir, "' exists and is not a ppc checkpoint; "
                                                          "it is left alone (move it, or save elsewhere)"));
      }
      const std::string latest = dir + "/" + kLatestFile;
      if (lstat(latest.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat("'", latest, "' exists and is not a regular file"));
      }
      if (!fs::create_directory(staging, ec)) {
        return absl::PermissionDeniedError(absl::StrCat("cannot create '", staging, "'", ec ? ": " + ec.message() : ""));
      }
      return absl::OkStatus();
    }();
  }
  RETURN_IF_ERROR(AgreeOnStatus(t, prepared, absl::StrCat(who, ": preparing ", staging), options.timeout));
  // From here on a failure removes the staging directory (a rank that dies leaves it to
  // the next save that completes).
  struct Cleanup {
    bool armed;
    std::string path;
    ~Cleanup() {
      std::error_code ec;
      if (armed) fs::remove_all(path, ec);
    }
  } cleanup{leader, staging};

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
      const std::vector<int> held = rt.HeldLayers();
      std::map<int, std::vector<NamedParameter>> by_layer;
      for (auto& p : InModuleOrder(rt.Parameters())) by_layer[p.layer].push_back(p);
      std::map<std::pair<int, std::string>, size_t> distinct;  // (layer, name) -> index into `state`
      for (const auto& p : rt.DistinctParameters()) distinct.emplace(std::make_pair(p.layer, p.name), distinct.size());
      const StageOptimizer* opt = rt.optimizer();
      std::vector<FileRecord> records;
      bool die = options.die_mid_write;
      for (int l : held) {
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
  if (leader) {
    published = [&]() -> absl::Status {
      json files = json::object();
      std::error_code ec;
      std::vector<fs::path> fragments;
      for (const auto& e : fs::directory_iterator(staging, ec)) {
        if (absl::StartsWith(e.path().filename().string(), kFragmentPrefix)) fragments.push_back(e.path());
      }
      for (const auto& path : fragments) {
        ASSIGN_OR_RETURN(std::string text, ReadBoundedFile(path.string(), kMaxJobBytes));
        json list = json::parse(text, nullptr, false);
        if (!list.is_array()) return absl::DataLossError(absl::StrCat(path.string(), ": not a file list"));
        for (const auto& r : list) files[r["name"].get<std::string>()] = {{"bytes", r["bytes"]}, {"crc32", r["crc32"]}};
        fs::remove(path, ec);
      }
      for (int l = 0; l < plan.model().layers_size(); ++l) {
        if (!files.contains(LayerFile(l, "model"))) {
          return absl::InternalError(absl::StrCat("no rank wrote ", LayerFile(l, "model")));
        }
      }
      if (!options.model_only) {
        json job;
        job["format"] = "ppc-checkpoint";
        job["version"] = kCheckpointVersion;
        job["tag"] = tag;
        job["step"] = step;
        job["model_fingerprint"] = ir::ModelFingerprint(plan.model());
        job["num_layers"] = plan.model().layers_size();
        const DataPosition pos = rt.DataPositionAt(step);
        job["data"] = {{"source", SourceOf(pos)},
                       {"samples", pos.samples},
                       {"epoch", pos.epoch},
                       {"cursor", pos.cursor},
                       {"dataset_size", pos.dataset_size},
                       {"shuffle_seed", pos.shuffle_seed}};
        // Randomness is counter-based: a pure function of these and the micro-batch and
        // layer, so resuming at `next_step` redraws exactly what an uninterrupted run would.
        job["rng"] = {{"kind", kRngKind}, {"seed", plan.config().seed()}, {"next_step", step}};
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
        for (const auto& r : plan.placement().virtual_stages()) partition.push_back({r.begin(), r.end()});
        job["topology"] = {{"num_stages", plan.topology().num_stages()},
                           {"data_parallel", plan.topology().data_parallel()},
                           {"partition", partition},
                           {"schedule", plan.config().schedule()}};
        ASSIGN_OR_RETURN(std::string config, ir::MessageToJson(plan.config()));
        ASSIGN_OR_RETURN(std::string model, ir::MessageToJson(plan.model()));
        job["config"] = json::parse(config);
        job["model"] = json::parse(model);
        ASSIGN_OR_RETURN(FileRecord r, WriteDurable(staging + "/" + kJobFile, job.dump(2) + "\n", false));
        files[r.name] = {{"bytes", r.bytes}, {"crc32", absl::StrFormat("%08x", r.crc32)}};
      }
      json manifest = {{"format", "ppc-checkpoint-manifest"}, {"version", kCheckpointVersion}, {"tag", tag},
                       {"checksum", kChecksumAlgorithm}, {"files", files}};
      RETURN_IF_ERROR(WriteDurable(staging + "/" + kManifestFile, manifest.dump(2) + "\n", false).status());
      // Into place: swap with an earlier checkpoint of the same tag atomically, else rename.
      if (fs::exists(final_dir, ec)) {
        if (renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
          return absl::FailedPreconditionError(absl::StrCat("cannot replace the earlier '", final_dir, "' atomically (",
                                                            std::strerror(errno), "); it is left as it was"));
        }
      } else if (std::rename(staging.c_str(), final_dir.c_str()) != 0) {
        return absl::DataLossError(absl::StrCat("cannot move '", staging, "' to '", final_dir, "': ",
                                                std::strerror(errno)));
      }
      RETURN_IF_ERROR(FsyncDir(dir));
      if (!options.model_only) RETURN_IF_ERROR(WriteDurable(dir + "/" + kLatestFile, tag, false).status());
      // Staging directories of saves that died (ours, after an exchange, holds the old tag).
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.is_directory(ec) && IsStagingName(e.path().filename().string())) fs::remove_all(e.path(), ec);
      }
      return absl::OkStatus();
    }();
    if (!published.ok()) published = Annotate(published, who);
  }
  RETURN_IF_ERROR(AgreeOnStatus(t, published, absl::StrCat(who, ": publishing"), options.timeout));
  cleanup.armed = false;
  return final_dir;
}

absl::StatusOr<LoadedCheckpoint> Load(StageRuntime& rt, const ir::Plan& plan, const LoadOptions& options) {
  LoadedCheckpoint out;
  ASSIGN_OR_RETURN(out.tag_dir, Resolve(options.dir, options.tag));
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(out.tag_dir));
  const ir::ModelSpec& model = plan.model();
  out.imported = !reader.has_manifest();
  Job job;
  if (!out.imported) {
    ASSIGN_OR_RETURN(std::string text, reader.Bytes(kJobFile));
    ASSIGN_OR_RETURN(job, ParseJob(text, out.tag_dir));
    const std::string want = ir::ModelFingerprint(model);
    if (job.fingerprint != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          out.tag_dir, ": the checkpoint is of model '", job.model.name(), "' (", job.model.layers_size(),
          " layers, fingerprint ", job.fingerprint, "), not of this plan's model '", model.name(), "' (",
          model.layers_size(), " layers, fingerprint ", want, ")"));
    }
    RETURN_IF_ERROR(CheckManifestCoversModel(reader, model, /*counts_known=*/true));
    out.step = job.step;
    out.data = job.data;
    // The data position continues only on the data it was taken on. The first and the
    // last stage read data and know the run's (the others follow them: every rank agrees
    // on the outcome of the load).
    const bool reads_data = rt.stage() == 0 || rt.stage() == plan.topology().num_stages() - 1;
    if (reads_data && job.data && !options.module_only) {
      const DataPosition run = rt.DataPositionAt(0);
      if (std::string(SourceOf(*job.data)) != SourceOf(run)) {
        return absl::InvalidArgumentError(absl::StrCat(
            out.tag_dir, "/", kJobFile, ": 'data' 'source': the checkpoint was trained on ", DescribeSource(*job.data),
            ", this run reads ", DescribeSource(run), "; resume with the same data (--data), or pass "
            "--load-module-only to load the weights alone"));
      }
      if (job.data->dataset_size != run.dataset_size) {
        out.notes.push_back(absl::StrCat("the checkpoint's training set had ", job.data->dataset_size,
                                         " samples, this run's has ", run.dataset_size, ": training continues after ",
                                         job.data->samples, " samples drawn, at sample ",
                                         job.data->samples % run.dataset_size, " of epoch ",
                                         job.data->samples / run.dataset_size, " of the new set"));
      }
    }
    if (job.seed != plan.config().seed()) {
      out.notes.push_back(absl::StrCat("the checkpoint was trained with seed ", job.seed, ", this plan's is ",
                                       plan.config().seed(), ": dropout masks and synthetic data continue with ",
                                       plan.config().seed()));
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
    out.notes.push_back(absl::StrCat(out.tag_dir, " has no ", kManifestFile,
                                     ": imported its layer_XX-model_states.pt as initial weights (DeepSpeed layout); "
                                     "the optimizer state and the step start fresh"));
  }

  // Weights: each layer of this stage from its file (exactly its parameters); a tied
  // copy from the file of the layer that owns the weight (saved once).
  const std::map<std::string, int> owners = TieOwners(model);
  const std::vector<int> held = rt.HeldLayers();
  std::map<int, Shapes> shapes;
  for (int l : held) shapes[l];
  for (const auto& p : rt.Parameters()) shapes[p.layer][p.name] = p.value.sizes().vec();
  std::map<std::pair<int, std::string>, torch::Tensor> values;
  for (int l : held) {
    Shapes want = shapes[l];
    std::set<std::string> may_lack;
    if (want.count("weight") && IsTiedCopy(model, owners, l, "weight")) {
      if (out.imported) {
        may_lack.insert("weight");  // DeepSpeed may store a tied module once or per use
      } else {
        want.erase("weight");
      }
    }
    const std::string file = LayerFile(l, "model");
    auto dict = reader.Dict(file);
    if (!dict.ok()) {
      // DeepSpeed writes no file for a layer without state (a lambda such as a flatten).
      if (absl::IsNotFound(dict.status()) && want.size() == may_lack.size()) continue;
      if (absl::IsNotFound(dict.status())) {
        return absl::NotFoundError(absl::StrCat(dict.status().message(), ": ", LayerWhat(model, l), " has parameters"));
      }
      return dict.status();
    }
    const std::string path = out.tag_dir + "/" + file;
    ASSIGN_OR_RETURN(auto tensors, LayerTensors(**dict, path, want, may_lack, LayerWhat(model, l)));
    RETURN_IF_ERROR(CheckFinite(path, tensors, LayerWhat(model, l)));
    for (auto& [name, t] : tensors) values[{l, name}] = t;
  }
  for (const auto& p : rt.Parameters()) {
    auto it = values.find({p.layer, p.name});
    if (it == values.end()) {
      // A tied copy: the owner's weight.
      const int owner = owners.at(model.layers(p.layer).tie_key());
      const std::string file = LayerFile(owner, "model");
      ASSIGN_OR_RETURN(const PyValue* dict, reader.Dict(file));
      const PyValue* w = dict->Find("weight");
      if (w == nullptr || w->kind != PyValue::Kind::kTensor || !w->tensor.is_floating_point() ||
          w->tensor.sizes() != p.value.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(out.tag_dir, "/", file, ": no tied 'weight' of shape ",
                                                       Shape(p.value.sizes()), " for ", LayerWhat(model, p.layer)));
      }
      torch::Tensor tied = w->tensor.to(torch::kFloat32);
      RETURN_IF_ERROR(CheckFinite(absl::StrCat(out.tag_dir, "/", file), "weight", tied,
                                  absl::StrCat(LayerWhat(model, owner), " (tied to ", LayerWhat(model, p.layer), ")")));
      it = values.emplace(std::make_pair(p.layer, p.name), tied).first;
    }
    RETURN_IF_ERROR(rt.SetParameter(p.layer, p.name, it->second));
  }

  // Optimizer state, in the stage's flattened order, from the per-layer files.
  const StageOptimizer* opt = rt.optimizer();
  std::map<std::string, torch::Tensor> full;
  int64_t steps = 0;
  if (opt != nullptr && !out.imported && !options.module_only) {
    const std::string job_path = out.tag_dir + "/" + kJobFile;
    if (job.optimizer != opt->type()) {
      return absl::InvalidArgumentError(absl::StrCat(
          job_path, ": the checkpoint's optimizer is '", Printable(job.optimizer), "', this plan's is '", opt->type(),
          "'; pass --load-module-only to load the weights alone"));
    }
    steps = job.optimizer_steps;
    const std::set<std::string> saved(job.optimizer_state.begin(), job.optimizer_state.end());
    const std::vector<std::string> names = opt->StateNames();
    for (const std::string& n : saved) {
      if (std::find(names.begin(), names.end(), n) != names.end()) continue;
      if (opt->type() != "sgd" || n != "momentum_buffer") {
        return absl::DataLossError(absl::StrCat(job_path, ": optimizer state '", Printable(n), "' is not one of ",
                                                opt->type(), "'s"));
      }
      out.notes.push_back("the checkpoint's SGD momentum is not used: this plan's SGD has no momentum");
    }
    std::vector<std::string> load;
    for (const std::string& n : names) {
      if (saved.count(n)) {
        load.push_back(n);
      } else if (opt->type() == "sgd") {
        // SGD saved without momentum, resumed with it: a hyper-parameter change.
        out.notes.push_back(absl::StrCat("the checkpoint has no '", n, "' (it was saved without momentum); it starts "
                                         "fresh"));
      } else if (steps > 0) {
        return absl::DataLossError(absl::StrCat(job_path, ": ", opt->type(), " after ", steps,
                                                " steps has state '", n, "', which the checkpoint lacks"));
      }
    }
    for (const auto& n : load) full[n] = torch::zeros({opt->total_numel()});
    std::set<int> checked;  // this stage's optim files whose keys were checked
    int64_t off = 0;
    for (const auto& p : rt.DistinctParameters()) {
      const int64_t numel = p.value.numel();
      if (load.empty()) break;
      const int source =
          IsTiedCopy(model, owners, p.layer, p.name) ? owners.at(model.layers(p.layer).tie_key()) : p.layer;
      const std::string file = LayerFile(source, "optim");
      const std::string path = out.tag_dir + "/" + file;
      ASSIGN_OR_RETURN(const PyValue* dict, reader.Dict(file));
      // A file of this stage holds the state of exactly the parameters its layer owns
      // (another stage's file is checked by that stage).
      if (shapes.count(source) && checked.insert(source).second) {
        for (const auto& [k, v] : dict->dict) {
          const bool owned = k->kind == PyValue::Kind::kString && shapes[source].count(k->s) &&
                             !IsTiedCopy(model, owners, source, k->s);
          if (!owned) {
            return absl::InvalidArgumentError(absl::StrCat(path, ": unexpected '", Printable(k->s), "': ",
                                                           LayerWhat(model, source), " does not own it"));
          }
        }
      }
      const PyValue* entry = dict->Find(p.name);
      if (entry == nullptr || entry->kind != PyValue::Kind::kDict) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": no optimizer state for '", p.name, "' of ",
                                                       LayerWhat(model, p.layer)));
      }
      Shapes want;
      for (const auto& n : load) want[n] = p.value.sizes().vec();
      // Each entry holds its step count and exactly the saved state.
      const PyValue* step_entry = entry->Find("step");
      if (step_entry == nullptr || step_entry->kind != PyValue::Kind::kInt || step_entry->i != steps) {
        return absl::DataLossError(absl::StrCat(path, " ['", p.name, "']: 'step' must be ", steps, " as in ", kJobFile));
      }
      PyValue rest = *entry;
      rest.dict.erase(std::remove_if(rest.dict.begin(), rest.dict.end(),
                                     [](const auto& kv) { return kv.first->kind == PyValue::Kind::kString &&
                                                                 kv.first->s == "step"; }),
                      rest.dict.end());
      std::set<std::string> may_lack;
      ASSIGN_OR_RETURN(auto tensors, LayerTensors(rest, absl::StrCat(path, " ['", p.name, "']"), want, may_lack,
                                                  absl::StrCat(LayerWhat(model, p.layer), " ", p.name)));
      for (const auto& [n, t] : tensors) {
        if (!torch::isfinite(t).all().item<bool>() || (n == "exp_avg_sq" && t.min().item<float>() < 0)) {
          return absl::DataLossError(absl::StrCat(path, " ['", p.name, "']: '", n, "' holds ",
                                                  n == "exp_avg_sq" ? "negative or " : "", "non-finite values"));
        }
        full[n].narrow(0, off, numel).copy_(t.reshape({-1}));
      }
      off += numel;
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

absl::Status Export(const std::string& tag_dir, const ir::ModelSpec* model_arg, const std::string& out) {
  std::error_code ec;
  const fs::path target = fs::weakly_canonical(out, ec);
  const fs::path source = fs::weakly_canonical(tag_dir, ec);
  if (absl::StartsWith(target.string(), source.string() + "/") || target == source) {
    return absl::InvalidArgumentError(absl::StrCat("'", out, "' is inside the checkpoint ", tag_dir,
                                                   " being exported; write it elsewhere"));
  }
  ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(tag_dir));
  // Every file of the checkpoint, not only the ones exported, must be intact.
  for (const auto& [name, r] : reader.manifest()) RETURN_IF_ERROR(reader.Bytes(name).status());
  ir::ModelSpec model;
  if (reader.manifest().count(kJobFile)) {
    ASSIGN_OR_RETURN(std::string text, reader.Bytes(kJobFile));
    ASSIGN_OR_RETURN(Job job, ParseJob(text, tag_dir));
    model = job.model;
    RETURN_IF_ERROR(CheckManifestCoversModel(reader, model, /*counts_known=*/true));
  } else if (model_arg != nullptr) {
    RETURN_IF_ERROR(CheckManifestCoversModel(reader, *model_arg, /*counts_known=*/false));
    model = *model_arg;
    for (const auto& e : fs::directory_iterator(tag_dir, ec)) {
      int layer;
      if (std::sscanf(e.path().filename().c_str(), "layer_%d-model_states.pt", &layer) == 1 &&
          layer >= model.layers_size()) {
        return absl::InvalidArgumentError(absl::StrCat(e.path().string(), ": the model has only ",
                                                       model.layers_size(), " layers"));
      }
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(tag_dir, " has no ", kJobFile,
                                                   " to name its layers (an imported checkpoint): give the model"));
  }
  const std::map<std::string, int> owners = TieOwners(model);
  c10::Dict<std::string, at::Tensor> all;
  auto add = [&](const std::string& key, const torch::Tensor& t) -> absl::Status {
    if (all.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat("two layers of the model export '", key, "'; name them apart"));
    }
    all.insert(key, t);
    return absl::OkStatus();
  };
  for (int l = 0; l < model.layers_size(); ++l) {
    const ir::LayerSpec& spec = model.layers(l);
    const std::string prefix = spec.name().empty() ? absl::StrCat("layer_", l) : spec.name();
    // The layer's parameters, from the registry that builds it.
    ASSIGN_OR_RETURN(std::unique_ptr<Layer> layer, BuildLayer(spec, l, 0));
    Shapes want;
    for (const auto& [name, p] : layer->params()) want[name] = p.sizes().vec();
    std::set<std::string> may_lack;
    const bool tied_copy = want.count("weight") && IsTiedCopy(model, owners, l, "weight");
    if (tied_copy) {
      if (reader.has_manifest()) {
        want.erase("weight");
      } else {
        may_lack.insert("weight");
      }
    }
    const std::string file = LayerFile(l, "model");
    std::map<std::string, torch::Tensor> tensors;
    auto dict = reader.Dict(file);
    if (dict.ok()) {
      ASSIGN_OR_RETURN(tensors, LayerTensors(**dict, tag_dir + "/" + file, want, may_lack, LayerWhat(model, l)));
      RETURN_IF_ERROR(CheckFinite(tag_dir + "/" + file, tensors, LayerWhat(model, l)));
    } else if (!absl::IsNotFound(dict.status()) || want.size() != may_lack.size()) {
      return dict.status();
    }
    if (tied_copy && !tensors.count("weight")) {
      const std::string owner_file = LayerFile(owners.at(spec.tie_key()), "model");
      ASSIGN_OR_RETURN(const PyValue* owner, reader.Dict(owner_file));
      const PyValue* w = owner->Find("weight");
      if (w == nullptr || w->kind != PyValue::Kind::kTensor || w->tensor.sizes() != layer->params()["weight"].sizes()) {
        return absl::DataLossError(absl::StrCat(tag_dir, "/", owner_file, ": no tied 'weight' of shape ",
                                                Shape(layer->params()["weight"].sizes())));
      }
      tensors["weight"] = w->tensor.to(torch::kFloat32);
      RETURN_IF_ERROR(CheckFinite(tag_dir + "/" + owner_file, "weight", tensors["weight"], LayerWhat(model, l)));
    }
    // "weight" first, as PyTorch lists a module's parameters.
    if (tensors.count("weight")) RETURN_IF_ERROR(add(prefix + ".weight", tensors["weight"]));
    for (const auto& [name, t] : tensors) {
      if (name != "weight") RETURN_IF_ERROR(add(absl::StrCat(prefix, ".", name), t));
    }
  }
  ASSIGN_OR_RETURN(std::vector<char> bytes, SerializeTorchFile(all));
  return WriteDurable(out, View(bytes), false).status();
}

}  // namespace

absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes) {
  return WriteDurable(path, bytes, false).status();
}

absl::Status ExportModel(StageRuntime& rt, const ir::Plan& plan, const std::string& out, absl::Duration timeout) {
  Transport& t = *rt.transport();
  ASSIGN_OR_RETURN(uint64_t nonce, AgreeOnNonce(t, timeout));
  const std::string parts = absl::StrFormat("%s.parts-%016x", out, nonce);
  SaveOptions o;
  o.dir = parts;
  o.tag = "model";
  o.model_only = true;
  o.timeout = timeout;
  absl::StatusOr<std::string> tag_dir = SaveCheckpoint(rt, plan, 0, o);
  absl::Status exported = tag_dir.status();
  if (t.rank() == 0) {
    if (exported.ok()) exported = ExportCheckpoint(*tag_dir, &plan.model(), out);
    std::error_code ec;
    fs::remove_all(parts, ec);
  }
  if (!tag_dir.ok()) return exported;  // every rank already knows
  return AgreeOnStatus(t, exported, absl::StrCat("rank ", t.rank(), ": exporting ", out), timeout);
}

absl::Status AgreeOnStatus(Transport& transport, const absl::Status& local, const std::string& what,
                           absl::Duration timeout) {
  if (transport.world_size() == 1) return local;
  std::vector<int> all;
  for (int r = 0; r < transport.world_size(); ++r) all.push_back(r);
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
  return Guarded<std::string>("resolving the checkpoint", [&] { return Resolve(dir, tag); });
}

absl::StatusOr<std::string> SaveCheckpoint(StageRuntime& rt, const ir::Plan& plan, int64_t step,
                                           const SaveOptions& options) {
  return Guarded<std::string>("saving a checkpoint", [&] { return Save(rt, plan, step, options); });
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(StageRuntime& rt, const ir::Plan& plan, const LoadOptions& options) {
  return Guarded<LoadedCheckpoint>("loading a checkpoint", [&] { return Load(rt, plan, options); });
}

absl::Status ExportCheckpoint(const std::string& tag_dir, const ir::ModelSpec* model, const std::string& out) {
  return Guarded<bool>("exporting", [&]() -> absl::StatusOr<bool> {
           RETURN_IF_ERROR(Export(tag_dir, model, out));
           return true;
         })
      .status();
}

}  // namespace ppc::runtime
