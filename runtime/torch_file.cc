#include "runtime/torch_file.h"

#include <cstring>
#include <functional>
#include <map>

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/serialize.h>

#include "absl/strings/str_cat.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"
#include "runtime/torch_status.h"

namespace ppc::runtime {
namespace {

using Ref = std::shared_ptr<PyValue>;

class StringReadAdapter : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit StringReadAdapter(const std::string& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char*) const override {
    if (pos >= bytes_.size()) return 0;
    n = std::min<size_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  const std::string& bytes_;
};

Ref Make(PyValue::Kind kind) {
  auto v = std::make_shared<PyValue>();
  v->kind = kind;
  return v;
}

// The pickle virtual machine, limited to what torch.save and torch::pickle_save emit
// for state dicts. Stack entries are values or globals; marks index into the stack.
class Unpickler {
 public:
  Unpickler(const std::string& pickle, std::function<absl::StatusOr<at::Tensor>(const std::string&, at::ScalarType,
                                                                                 int64_t)> storage,
            std::string where)
      : p_(pickle), storage_(std::move(storage)), where_(std::move(where)) {}

  absl::StatusOr<PyValue> Run() {
    while (true) {
      if (pos_ >= p_.size()) return Bad("pickle ends without STOP");
      const size_t at = pos_;
      const uint8_t op = static_cast<uint8_t>(p_[pos_++]);
      absl::Status s = Step(op, at);
      if (s.code() == absl::StatusCode::kCancelled) break;  // STOP
      RETURN_IF_ERROR(s);
    }
    if (stack_.size() != 1 || stack_.back()->kind == PyValue::Kind::kGlobal) {
      return Bad("pickle does not end with one value");
    }
    return *stack_.back();
  }

 private:
  absl::Status Bad(const std::string& what) const {
    return absl::DataLossError(absl::StrCat(where_, ": not a PyTorch state dict file this reader understands: ", what,
                                            " (pickle byte ", pos_, ")"));
  }

  absl::Status Need(size_t n) const {
    if (pos_ + n > p_.size()) return Bad("truncated pickle");
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> ReadLE() {
    RETURN_IF_ERROR(Need(sizeof(T)));
    T v;
    std::memcpy(&v, p_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string> ReadBytes(uint64_t n) {
    if (n > p_.size()) return Bad("string longer than the pickle");
    RETURN_IF_ERROR(Need(n));
    std::string s = p_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  absl::StatusOr<std::string> ReadLine() {
    size_t end = p_.find('\n', pos_);
    if (end == std::string::npos) return Bad("unterminated line");
    std::string s = p_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  void Push(Ref v) { stack_.push_back(std::move(v)); }

  absl::StatusOr<Ref> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Bad("stack underflow");
    Ref v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }

  // Everything above the last mark, which is removed.
  absl::StatusOr<std::vector<Ref>> PopToMark() {
    if (marks_.empty()) return Bad("no mark");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> out(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return out;
  }

  absl::StatusOr<Ref> Top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Bad("no value on the stack");
    return stack_.back();
  }

  // State dicts nest a few levels; a deep chain would also overflow the stack when freed.
  static constexpr int kMaxDepth = 64;

  absl::Status Nest(const Ref& container, const Ref& element) {
    container->depth = std::max(container->depth, element->depth + 1);
    if (container->depth > kMaxDepth) return Bad(absl::StrCat("values nested more than ", kMaxDepth, " deep"));
    return absl::OkStatus();
  }

  absl::StatusOr<Ref> MakeList(std::vector<Ref> items) {
    Ref list = Make(PyValue::Kind::kList);
    list->depth = 1;
    for (const Ref& x : items) RETURN_IF_ERROR(Nest(list, x));
    list->items = std::move(items);
    return list;
  }

  absl::Status SetItems(const Ref& dict, const std::vector<Ref>& kv) {
    if (dict->kind != PyValue::Kind::kDict) return Bad(absl::StrCat("setting items on a ", dict->TypeName()));
    if (kv.size() % 2 != 0) return Bad("odd number of dict items");
    for (size_t k = 0; k < kv.size(); k += 2) {
      RETURN_IF_ERROR(Nest(dict, kv[k]));
      RETURN_IF_ERROR(Nest(dict, kv[k + 1]));
      dict->dict.emplace_back(kv[k], kv[k + 1]);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<at::ScalarType> StorageType(const std::string& name) {
    static const auto* types = new std::map<std::string, at::ScalarType>{
        {"torch.FloatStorage", at::kFloat},     {"torch.DoubleStorage", at::kDouble},
        {"torch.HalfStorage", at::kHalf},       {"torch.BFloat16Storage", at::kBFloat16},
        {"torch.LongStorage", at::kLong},       {"torch.IntStorage", at::kInt},
        {"torch.ShortStorage", at::kShort},     {"torch.CharStorage", at::kChar},
        {"torch.ByteStorage", at::kByte},       {"torch.BoolStorage", at::kBool},
    };
    auto it = types->find(name);
    if (it == types->end()) return Bad(absl::StrCat("unsupported storage type '", name, "'"));
    return it->second;
  }

  absl::StatusOr<int64_t> AsInt(const Ref& v, const char* what) {
    if (v->kind != PyValue::Kind::kInt) return Bad(absl::StrCat(what, " is a ", v->TypeName(), ", not an int"));
    return v->i;
  }

  absl::StatusOr<std::vector<int64_t>> AsInts(const Ref& v, const char* what) {
    if (v->kind != PyValue::Kind::kList) return Bad(absl::StrCat(what, " is a ", v->TypeName(), ", not a tuple"));
    std::vector<int64_t> out;
    for (const Ref& x : v->items) {
      ASSIGN_OR_RETURN(int64_t n, AsInt(x, what));
      out.push_back(n);
    }
    return out;
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)
  absl::StatusOr<Ref> RebuildTensor(const Ref& args) {
    if (args->items.size() < 4) return Bad("_rebuild_tensor with fewer than 4 arguments");
    const Ref& storage = args->items[0];
    if (storage->kind != PyValue::Kind::kTensor) return Bad("_rebuild_tensor without a storage");
    ASSIGN_OR_RETURN(int64_t offset, AsInt(args->items[1], "tensor offset"));
    ASSIGN_OR_RETURN(std::vector<int64_t> size, AsInts(args->items[2], "tensor size"));
    ASSIGN_OR_RETURN(std::vector<int64_t> stride, AsInts(args->items[3], "tensor stride"));
    if (size.size() != stride.size()) return Bad("tensor size and stride differ in length");
    // The furthest element the view touches must lie inside the storage.
    int64_t last = offset;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] < 0 || stride[d] < 0) return Bad("negative tensor size or stride");
      if (size[d] == 0) last = -1;
      if (last >= 0) last += (size[d] - 1) * stride[d];
    }
    if (offset < 0 || last >= storage->tensor.numel()) {
      return Bad(absl::StrCat("tensor view [offset ", offset, ", last element ", last, "] outside its storage of ",
                              storage->tensor.numel(), " elements"));
    }
    Ref t = Make(PyValue::Kind::kTensor);
    absl::Status s = TorchCall([&] { t->tensor = storage->tensor.as_strided(size, stride, offset).clone(); });
    if (!s.ok()) return Bad(absl::StrCat("cannot rebuild tensor: ", s.message()));
    return t;
  }

  absl::StatusOr<Ref> Call(const std::string& fn, const Ref& args) {
    if (args->kind != PyValue::Kind::kList) return Bad(absl::StrCat("call of '", fn, "' without an argument tuple"));
    if (fn == "collections.OrderedDict" || fn == "builtins.dict") {
      if (!args->items.empty()) return Bad(absl::StrCat(fn, " with arguments"));
      return Make(PyValue::Kind::kDict);
    }
    if (fn == "torch._utils._rebuild_tensor_v2" || fn == "torch._utils._rebuild_tensor") return RebuildTensor(args);
    if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
      if (args->items.empty() || args->items[0]->kind != PyValue::Kind::kTensor) return Bad("parameter without data");
      return args->items[0];
    }
    if (fn == "torch.jit._pickle.restore_type_tag") {
      if (args->items.empty()) return Bad("restore_type_tag without a value");
      return args->items[0];
    }
    return Bad(absl::StrCat("unsupported object '", fn, "'"));
  }

  absl::Status Step(uint8_t op, size_t at) {
    switch (op) {
      case 0x80: {  // PROTO
        ASSIGN_OR_RETURN(uint8_t v, ReadLE<uint8_t>());
        if (v > 5) return Bad(absl::StrCat("pickle protocol ", int(v)));
        return absl::OkStatus();
      }
      case 0x95: {  // FRAME
        ASSIGN_OR_RETURN(uint64_t n, ReadLE<uint64_t>());
        (void)n;
        return absl::OkStatus();
      }
      case '.':  // STOP
        return absl::CancelledError();
      case '(':  // MARK
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case '}': Push(Make(PyValue::Kind::kDict)); return absl::OkStatus();
      case ']':
      case ')': Push(Make(PyValue::Kind::kList)); return absl::OkStatus();
      case 'N': Push(Make(PyValue::Kind::kNone)); return absl::OkStatus();
      case 0x88:
      case 0x89: {
        Ref v = Make(PyValue::Kind::kBool);
        v->b = op == 0x88;
        Push(v);
        return absl::OkStatus();
      }
      case 'K':
      case 'M':
      case 'J': {
        Ref v = Make(PyValue::Kind::kInt);
        if (op == 'K') {
          ASSIGN_OR_RETURN(uint8_t n, ReadLE<uint8_t>());
          v->i = n;
        } else if (op == 'M') {
          ASSIGN_OR_RETURN(uint16_t n, ReadLE<uint16_t>());
          v->i = n;
        } else {
          ASSIGN_OR_RETURN(int32_t n, ReadLE<int32_t>());
          v->i = n;
        }
        Push(v);
        return absl::OkStatus();
      }
      case 0x8a:    // LONG1
      case 0x8b: {  // LONG4
        uint32_t n;
        if (op == 0x8a) {
          ASSIGN_OR_RETURN(uint8_t n1, ReadLE<uint8_t>());
          n = n1;
        } else {
          ASSIGN_OR_RETURN(n, ReadLE<uint32_t>());
        }
        if (n > 8) return Bad("integer wider than 64 bits");
        ASSIGN_OR_RETURN(std::string b, ReadBytes(n));
        uint64_t u = 0;
        for (uint32_t k = 0; k < n; ++k) u |= uint64_t(uint8_t(b[k])) << (8 * k);
        if (n > 0 && n < 8 && (uint8_t(b[n - 1]) & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
        Ref v = Make(PyValue::Kind::kInt);
        v->i = static_cast<int64_t>(u);
        Push(v);
        return absl::OkStatus();
      }
      case 'G': {  // BINFLOAT, big-endian
        ASSIGN_OR_RETURN(std::string b, ReadBytes(8));
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | uint8_t(b[k]);
        Ref v = Make(PyValue::Kind::kFloat);
        std::memcpy(&v->f, &u, 8);
        Push(v);
        return absl::OkStatus();
      }
      case 'X':     // BINUNICODE
      case 0x8c:    // SHORT_BINUNICODE
      case 0x8d:    // BINUNICODE8
      case 'T':     // BINSTRING
      case 'U':     // SHORT_BINSTRING
      case 'B':     // BINBYTES
      case 'C':     // SHORT_BINBYTES
      case 0x8e: {  // BINBYTES8
        uint64_t n;
        if (op == 0x8c || op == 'U' || op == 'C') {
          ASSIGN_OR_RETURN(uint8_t n1, ReadLE<uint8_t>());
          n = n1;
        } else if (op == 0x8d || op == 0x8e) {
          ASSIGN_OR_RETURN(n, ReadLE<uint64_t>());
        } else {
          ASSIGN_OR_RETURN(uint32_t n4, ReadLE<uint32_t>());
          n = n4;
        }
        Ref v = Make(PyValue::Kind::kString);
        ASSIGN_OR_RETURN(v->s, ReadBytes(n));
        Push(v);
        return absl::OkStatus();
      }
      case 'c': {  // GLOBAL "module\nname\n"
        ASSIGN_OR_RETURN(std::string module, ReadLine());
        ASSIGN_OR_RETURN(std::string name, ReadLine());
        Ref g = Make(PyValue::Kind::kGlobal);
        g->s = absl::StrCat(module, ".", name);
        Push(g);
        return absl::OkStatus();
      }
      case 0x93: {  // STACK_GLOBAL
        ASSIGN_OR_RETURN(Ref name, Pop());
        ASSIGN_OR_RETURN(Ref module, Pop());
        if (name->kind != PyValue::Kind::kString || module->kind != PyValue::Kind::kString) {
          return Bad("STACK_GLOBAL without strings");
        }
        Ref g = Make(PyValue::Kind::kGlobal);
        g->s = absl::StrCat(module->s, ".", name->s);
        Push(g);
        return absl::OkStatus();
      }
      case 't':
      case 'l': {
        ASSIGN_OR_RETURN(auto items, PopToMark());
        ASSIGN_OR_RETURN(Ref list, MakeList(std::move(items)));
        Push(list);
        return absl::OkStatus();
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84;
        std::vector<Ref> items(n);
        for (size_t k = 0; k < n; ++k) {
          ASSIGN_OR_RETURN(items[n - 1 - k], Pop());
        }
        ASSIGN_OR_RETURN(Ref list, MakeList(std::move(items)));
        Push(list);
        return absl::OkStatus();
      }
      case 'd': {
        ASSIGN_OR_RETURN(auto kv, PopToMark());
        Ref dict = Make(PyValue::Kind::kDict);
        RETURN_IF_ERROR(SetItems(dict, kv));
        Push(dict);
        return absl::OkStatus();
      }
      case 'a': {  // APPEND
        ASSIGN_OR_RETURN(Ref v, Pop());
        ASSIGN_OR_RETURN(Ref list, Top());
        if (list->kind != PyValue::Kind::kList) return Bad("APPEND to a non-list");
        RETURN_IF_ERROR(Nest(list, v));
        list->items.push_back(v);
        return absl::OkStatus();
      }
      case 'e': {  // APPENDS
        ASSIGN_OR_RETURN(auto items, PopToMark());
        ASSIGN_OR_RETURN(Ref list, Top());
        if (list->kind != PyValue::Kind::kList) return Bad("APPENDS to a non-list");
        for (auto& x : items) {
          RETURN_IF_ERROR(Nest(list, x));
          list->items.push_back(x);
        }
        return absl::OkStatus();
      }
      case 's': {  // SETITEM
        ASSIGN_OR_RETURN(Ref v, Pop());
        ASSIGN_OR_RETURN(Ref k, Pop());
        ASSIGN_OR_RETURN(Ref dict, Top());
        return SetItems(dict, {k, v});
      }
      case 'u': {  // SETITEMS
        ASSIGN_OR_RETURN(auto kv, PopToMark());
        ASSIGN_OR_RETURN(Ref dict, Top());
        return SetItems(dict, kv);
      }
      case 'R':      // REDUCE
      case 0x81: {   // NEWOBJ
        ASSIGN_OR_RETURN(Ref args, Pop());
        ASSIGN_OR_RETURN(Ref fn, Pop());
        if (fn->kind != PyValue::Kind::kGlobal) return Bad(absl::StrCat("call of a ", fn->TypeName()));
        ASSIGN_OR_RETURN(Ref result, Call(fn->s, args));
        Push(result);
        return absl::OkStatus();
      }
      case 'b': {  // BUILD: object state (e.g. a state_dict's _metadata); not needed
        ASSIGN_OR_RETURN(Ref state, Pop());
        (void)state;
        return Top().status();
      }
      case 'Q': {  // BINPERSID: ('storage', storage_type, key, location, numel)
        ASSIGN_OR_RETURN(Ref pid, Pop());
        const auto& id = pid->items;
        if (pid->kind != PyValue::Kind::kList || id.size() != 5 || id[0]->kind != PyValue::Kind::kString ||
            id[0]->s != "storage" || id[1]->kind != PyValue::Kind::kGlobal || id[2]->kind != PyValue::Kind::kString) {
          return Bad("persistent id is not ('storage', type, key, location, numel)");
        }
        ASSIGN_OR_RETURN(at::ScalarType dtype, StorageType(id[1]->s));
        ASSIGN_OR_RETURN(int64_t numel, AsInt(id[4], "storage size"));
        if (numel < 0) return Bad("negative storage size");
        auto storage = storage_(id[2]->s, dtype, numel);
        if (!storage.ok()) return Bad(std::string(storage.status().message()));
        Ref t = Make(PyValue::Kind::kTensor);
        t->tensor = *std::move(storage);
        Push(t);
        return absl::OkStatus();
      }
      case 'q': {
        ASSIGN_OR_RETURN(uint8_t k, ReadLE<uint8_t>());
        return Memo(k);
      }
      case 'r': {
        ASSIGN_OR_RETURN(uint32_t k, ReadLE<uint32_t>());
        return Memo(k);
      }
      case 0x94: return Memo(memo_next_);
      case 'h': {
        ASSIGN_OR_RETURN(uint8_t k, ReadLE<uint8_t>());
        return Get(k);
      }
      case 'j': {
        ASSIGN_OR_RETURN(uint32_t k, ReadLE<uint32_t>());
        return Get(k);
      }
      case '0': return Pop().status();
      case '1': return PopToMark().status();
      case '2': {
        if (stack_.empty()) return Bad("DUP of an empty stack");
        stack_.push_back(stack_.back());
        return absl::OkStatus();
      }
      default:
        (void)at;
        return Bad(absl::StrCat("unsupported pickle opcode 0x", absl::Hex(op)));
    }
  }

  absl::Status Memo(uint32_t k) {
    if (stack_.empty()) return Bad("memoizing an empty stack");
    memo_[k] = stack_.back();
    memo_next_ = std::max(memo_next_, k + 1);
    return absl::OkStatus();
  }

  absl::Status Get(uint32_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) return Bad(absl::StrCat("memo ", k, " is not set"));
    stack_.push_back(it->second);
    return absl::OkStatus();
  }

  const std::string& p_;
  std::function<absl::StatusOr<at::Tensor>(const std::string&, at::ScalarType, int64_t)> storage_;
  std::string where_;
  size_t pos_ = 0;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, Ref> memo_;
  uint32_t memo_next_ = 0;
};

}  // namespace

PyValue::~PyValue() {
  std::vector<std::shared_ptr<PyValue>> pending;
  auto unlink = [&pending](PyValue& v) {
    for (auto& x : v.items) pending.push_back(std::move(x));
    for (auto& [k, x] : v.dict) {
      pending.push_back(std::move(k));
      pending.push_back(std::move(x));
    }
    v.items.clear();
    v.dict.clear();
  };
  unlink(*this);
  while (!pending.empty()) {
    std::shared_ptr<PyValue> v = std::move(pending.back());
    pending.pop_back();
    // The last reference: take its children before it is freed (then it frees nothing).
    if (v && v.use_count() == 1) unlink(*v);
  }
}

const PyValue* PyValue::Find(const std::string& key) const {
  if (kind != Kind::kDict) return nullptr;
  for (const auto& [k, v] : dict)
    if (k->kind == Kind::kString && k->s == key) return v.get();
  return nullptr;
}

std::string PyValue::TypeName() const {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "tuple/list";
    case Kind::kDict: return "dict";
    case Kind::kTensor: return "tensor";
    case Kind::kGlobal: return absl::StrCat("global '", s, "'");
  }
  return "?";
}

}  // namespace ppc::runtime

namespace ppc::runtime {

absl::StatusOr<PyValue> ParseTorchFile(const std::string& bytes, const std::string& where) {
  if (bytes.size() < 4 || bytes.compare(0, 4, "PK\x03\x04") != 0) {
    if (!bytes.empty() && static_cast<uint8_t>(bytes[0]) == 0x80) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": a PyTorch file in the legacy (pre-1.6) format; re-save it with torch.save in a newer PyTorch"));
    }
    return absl::DataLossError(absl::StrCat(where, ": not a PyTorch file (no zip header; ", bytes.size(), " bytes)"));
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  absl::Status opened = TorchCall([&] {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(std::make_shared<StringReadAdapter>(bytes));
  });
  if (!opened.ok()) return absl::DataLossError(absl::StrCat(where, ": corrupt or truncated PyTorch file: ", opened.message()));
  auto record = [&](const std::string& name) -> absl::StatusOr<std::string> {
    std::string out;
    absl::Status s = TorchCall([&] {
      if (!reader->hasRecord(name)) return;
      auto [data, size] = reader->getRecord(name);
      out.assign(static_cast<const char*>(data.get()), size);
    });
    if (!s.ok()) return absl::DataLossError(absl::StrCat(where, ": record '", name, "' is unreadable: ", s.message()));
    return out;
  };
  bool has_pickle = false;
  RETURN_IF_ERROR(TorchCall([&] { has_pickle = reader->hasRecord("data.pkl"); }));
  if (!has_pickle) return absl::DataLossError(absl::StrCat(where, ": PyTorch file without data.pkl"));
  ASSIGN_OR_RETURN(std::string pickle, record("data.pkl"));
  ASSIGN_OR_RETURN(std::string byteorder, record("byteorder"));
  if (!byteorder.empty() && byteorder != "little") {
    return absl::InvalidArgumentError(absl::StrCat(where, ": saved with byte order '", byteorder, "'"));
  }
  auto storage = [&](const std::string& key, at::ScalarType dtype, int64_t numel) -> absl::StatusOr<at::Tensor> {
    ASSIGN_OR_RETURN(std::string data, record("data/" + key));
    const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
    // Compared by division: numel * element may overflow for a hostile numel.
    if (numel < 0 || numel > static_cast<int64_t>(data.size()) / element) {
      return absl::DataLossError(absl::StrCat("storage record 'data/", key, "' has ", data.size(), " bytes, too few for ",
                                              numel, " elements of ", element, " bytes"));
    }
    at::Tensor t;
    RETURN_IF_ERROR(TorchCall([&] { t = at::empty({numel}, at::TensorOptions().dtype(dtype)); }));
    if (numel > 0) std::memcpy(t.data_ptr(), data.data(), numel * element);
    return t;
  };
  absl::StatusOr<PyValue> value = absl::InternalError("unset");
  absl::Status thrown = TorchCall([&] { value = Unpickler(pickle, storage, where).Run(); });
  if (!thrown.ok()) return absl::DataLossError(absl::StrCat(where, ": cannot read: ", thrown.message()));
  return value;
}

absl::StatusOr<PyValue> ReadTorchFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ir::ReadFile(path));
  return ParseTorchFile(bytes, path);
}

namespace {

// A copy of `v` whose tensors are on the CPU and own exactly their elements: pickling
// a view would save its whole storage.
c10::IValue Compact(const c10::IValue& v) {
  if (v.isTensor()) {
    // On the CPU: a file written from a GPU run is the same as one from a CPU run.
    at::Tensor t = v.toTensor().detach().cpu();
    if (t.storage_offset() != 0 || !t.is_contiguous() ||
        t.storage().nbytes() != static_cast<size_t>(t.numel()) * t.element_size()) {
      t = t.clone(at::MemoryFormat::Contiguous);
    }
    return t;
  }
  if (v.isGenericDict()) {
    c10::impl::GenericDict in = v.toGenericDict();
    c10::impl::GenericDict out(in.keyType(), in.valueType());
    for (const auto& kv : in) out.insert(kv.key(), Compact(kv.value()));
    return out;
  }
  return v;
}

}  // namespace

absl::StatusOr<std::vector<char>> SerializeTorchFile(const c10::IValue& value) {
  std::vector<char> out;
  RETURN_IF_ERROR(TorchCall([&] { out = torch::pickle_save(Compact(value)); }));
  return out;
}

}  // namespace ppc::runtime
