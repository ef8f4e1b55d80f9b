// PyTorch's file format (what torch.save writes and torch.load reads): a zip archive
// holding a pickle (data.pkl) whose tensors point at raw storage records (data/<key>).
//
// Writing uses LibTorch's torch::pickle_save, whose output Python's torch.load reads
// as plain dicts and tensors. Reading is our own: LibTorch's C++ unpickler turns the
// collections.OrderedDict that every Python state_dict() is into None, so it cannot read
// a checkpoint written by PyTorch or DeepSpeed. ReadTorchFile understands the part of
// pickle that state dicts and optimizer states use (dicts, ordered dicts, lists,
// tuples, numbers, strings, tensors, nn.Parameter) and refuses anything else with an
// error naming the file, the byte offset and the object, never by crashing.
#ifndef PPC_RUNTIME_TORCH_FILE_H_
#define PPC_RUNTIME_TORCH_FILE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/ivalue.h>
#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ppc::runtime {

// One Python object read from a PyTorch file.
struct PyValue {
  PyValue() = default;
  PyValue(const PyValue&) = default;
  PyValue(PyValue&&) = default;
  PyValue& operator=(const PyValue&) = default;
  PyValue& operator=(PyValue&&) = default;
  // Frees nested values iteratively, so that no nesting overflows the stack.
  ~PyValue();

  // kGlobal: a class or function the pickle names (s = "module.name").
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kList, kDict, kTensor, kGlobal };
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kString, kGlobal
  std::vector<std::shared_ptr<PyValue>> items;  // kList (tuples too)
  std::vector<std::pair<std::shared_ptr<PyValue>, std::shared_ptr<PyValue>>> dict;  // kDict, in order
  at::Tensor tensor;
  // Containers: 1 + the deepest element (the reader refuses very deep nesting).
  int depth = 0;

  // The value under string key `key` of a dict, or nullptr.
  const PyValue* Find(const std::string& key) const;
  // "dict", "tensor", ... for error messages.
  std::string TypeName() const;
};

// Parses the bytes of a PyTorch file. `where` names the file in errors.
absl::StatusOr<PyValue> ParseTorchFile(const std::string& bytes, const std::string& where);
absl::StatusOr<PyValue> ReadTorchFile(const std::string& path);

// Serializes `value` (dicts of strings to tensors, nested dicts, numbers) in the format
// torch.load reads. Tensors are saved compactly (a view saves only its own elements).
absl::StatusOr<std::vector<char>> SerializeTorchFile(const c10::IValue& value);

}  // namespace ppc::runtime

#endif  // PPC_RUNTIME_TORCH_FILE_H_
