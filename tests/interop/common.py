"""Shared helpers: ppc's CIFAR-10 preprocessing and the AlexNet layer mapping."""
import math
import sys

import torch
import torch.nn.functional as F
import torchvision

RECORD = 1 + 3072

# Global layer index (DeepSpeed's join_layers over torchvision's AlexNet) -> module path.
FLATTEN_INDEX = 14


def layer_modules(model):
    """[(global index, dotted name or None, module or None)] for indices 0..21."""
    out = []
    for i, m in enumerate(model.features):
        out.append((i, "features.%d" % i, m))
    out.append((13, "avgpool", model.avgpool))
    out.append((FLATTEN_INDEX, None, None))  # lambda x: torch.flatten(x, 1)
    for j, m in enumerate(model.classifier):
        out.append((15 + j, "classifier.%d" % j, m))
    assert [i for i, _, _ in out] == list(range(22)), out
    return out


def new_alexnet():
    return torchvision.models.alexnet(num_classes=10)


def read_records(path, first, count):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < (first + count) * RECORD:
        raise SystemExit("FAIL: %s has fewer than %d records" % (path, first + count))
    labels, images = [], []
    for r in range(first, first + count):
        rec = data[r * RECORD:(r + 1) * RECORD]
        labels.append(rec[0])
        images.append(torch.frombuffer(bytearray(rec[1:]), dtype=torch.uint8).view(1, 3, 32, 32))
    return images, torch.tensor(labels, dtype=torch.int64)


def preprocess(img_u8, size):
    """ppc's runtime/cifar10.cc Cifar10Data::Image, op for op."""
    img = img_u8.to(torch.float32).div_(255.0)
    resized = int(math.floor(size * 256.0 / 224.0 + 0.5))  # std::lround
    img = F.interpolate(img, size=(resized, resized), mode="bilinear", align_corners=False)
    off = (resized - size) // 2
    img = img[:, :, off:off + size, off:off + size]
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 3, 1, 1)
    return ((img - mean) / std).squeeze(0)


def test_inputs(data_dir, count, size):
    images, labels = read_records(data_dir + "/test_batch.bin", 0, count)
    return torch.stack([preprocess(i, size) for i in images]), labels


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)
