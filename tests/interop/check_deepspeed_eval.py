"""Compares ppc's evaluation of an imported DeepSpeed checkpoint with PyTorch's.

usage: check_deepspeed_eval.py --reference REF.pt --predict PRED.pt --metrics M --log LOG

REF.pt comes from write_deepspeed_checkpoint.py. ppc's eval loss (rank 0's metrics line
'eval <step> <loss> <acc> <samples>' and the 'rank 0 eval loss: ...' line in LOG) must
match PyTorch's mean cross-entropy within 1e-5 relative; its logits within 1e-5 absolute.
"""
import argparse
import re

import torch

from common import fail

RTOL = 1e-5
ATOL = 1e-5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--predict", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()

    ref = torch.load(a.reference)
    pred = torch.load(a.predict, map_location="cpu")
    n = len(ref["labels"])

    if not isinstance(pred, dict) or "outputs" not in pred or "labels" not in pred:
        fail("%s is not a dict with 'outputs' and 'labels'" % a.predict)
    if tuple(pred["outputs"].shape) != (n, 10) or pred["outputs"].dtype != torch.float32:
        fail("ppc's outputs are %s %s, want float32 (%d, 10)" % (pred["outputs"].dtype,
                                                                tuple(pred["outputs"].shape), n))
    if not torch.equal(pred["labels"], ref["labels"]):
        fail("ppc's labels %s differ from test records 0..%d: %s" % (pred["labels"].tolist(), n - 1,
                                                                    ref["labels"].tolist()))
    diff = (pred["outputs"] - ref["outputs"]).abs().max().item()
    print("imported DeepSpeed checkpoint: max |PyTorch logits - ppc logits| = %.3g" % diff)
    if not diff <= ATOL:
        fail("ppc's logits for the imported DeepSpeed checkpoint differ from PyTorch's by %.3g (> %g)"
             % (diff, ATOL))

    evals = []
    with open(a.metrics) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "eval":
                evals.append(parts)
    if len(evals) != 1 or len(evals[0]) != 5:
        fail("%s: want exactly one 'eval <step> <loss> <acc> <samples>' line, got %r" % (a.metrics, evals))
    _, step, loss, acc, samples = evals[0]
    loss, acc, samples = float(loss), float(acc), int(samples)
    ref_loss, ref_acc = ref["loss"], ref["acc"]
    print("eval loss: PyTorch %.7f, ppc %.7f (metrics); acc: PyTorch %.4f, ppc %.4f" % (ref_loss, loss, ref_acc,
                                                                                      acc))
    if samples != n:
        fail("ppc evaluated %d samples, want %d" % (samples, n))
    if not abs(loss - ref_loss) <= RTOL * abs(ref_loss):
        fail("ppc's eval loss %.7f differs from PyTorch's %.7f by more than %g relative" % (loss, ref_loss, RTOL))
    if abs(acc - ref_acc) > 1e-6:
        fail("ppc's eval accuracy %.4f differs from PyTorch's %.4f" % (acc, ref_acc))

    with open(a.log) as f:
        log = f.read()
    m = re.search(r"rank 0 eval loss: ([0-9.eE+-]+) acc: ([0-9.]+) samples: (\d+)", log)
    if not m:
        fail("ppc printed no 'rank 0 eval loss: ...' line")
    printed = float(m.group(1))
    # Printed with 6 decimals: allow the rounding on top of the tolerance.
    if not abs(printed - ref_loss) <= RTOL * abs(ref_loss) + 5e-7:
        fail("ppc printed eval loss %s, PyTorch's is %.7f" % (m.group(1), ref_loss))
    print("imported DeepSpeed checkpoint: ppc's eval matches PyTorch's")


if __name__ == "__main__":
    main()
