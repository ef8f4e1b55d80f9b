# Regenerates the PyTorch files torch_file_test reads (run with Debian's python3-torch:
#   cd runtime/testdata && /usr/bin/python3 make_torch_files.py
# and review the values torch_file_test.cc asserts).
import collections
import torch

torch.manual_seed(0)
conv = torch.nn.Conv2d(2, 3, kernel_size=2)
with torch.no_grad():
    conv.weight.copy_(torch.arange(24, dtype=torch.float32).view(3, 2, 2, 2) / 8)
    conv.bias.copy_(torch.tensor([-1.0, 0.5, 2.0]))
base = torch.arange(10, dtype=torch.float32)
shared = torch.tensor([1.5, -2.5])
value = collections.OrderedDict()
value["sd"] = conv.state_dict()  # an OrderedDict carrying _metadata, as every state_dict()
value["param"] = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
value["long"] = torch.arange(5, dtype=torch.int64) - 2
value["view"] = base[3:6]  # a view: offset 3 into a 10-element storage
value["strided"] = torch.arange(12, dtype=torch.float32).view(3, 4).t()  # non-contiguous
value["shared_a"] = shared
value["shared_b"] = shared
value["double"] = torch.tensor([0.1, 1e300], dtype=torch.float64)
value["half"] = torch.tensor([0.5, -3.0], dtype=torch.float16)
value["empty"] = torch.zeros(0, 3)
value["scalar"] = torch.tensor(7.0)
value["nums"] = (1, -2, 3.5, True, None, "x", 2**40, -(2**40), 300, 70000)
value["list"] = [1, [2, 3]]
value["state"] = {0: {"step": 3, "exp_avg": torch.ones(2)}}
torch.save(value, "python_values.pt")
torch.save(torch.nn.ReLU().state_dict(), "python_empty_state_dict.pt")
torch.save(conv.state_dict(), "python_legacy.pt", _use_new_zipfile_serialization=False)
