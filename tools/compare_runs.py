#!/usr/bin/env python3
"""Compares two pprun runs: their losses (--metrics-out files, "step loss samples/s"
lines) and their final weights (--dump-weights directories of raw float32 files).
Exits 1, saying which value differs most, when a loss or a weight differs by more than
the tolerance (absolute, plus the same relative to the reference's magnitude).

    compare_runs.py REF_METRICS REF_WEIGHTS_DIR RUN_METRICS RUN_WEIGHTS_DIR [--tol 1e-5]
"""
import argparse
import array
import os
import sys


def losses(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.append((int(parts[0]), float(parts[1])))
    return out


def weights(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".f32"):
            a = array.array("f")
            with open(os.path.join(directory, name), "rb") as f:
                a.frombytes(f.read())
            out[name] = a
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ref_metrics")
    p.add_argument("ref_weights")
    p.add_argument("run_metrics")
    p.add_argument("run_weights")
    p.add_argument("--tol", type=float, default=1e-5)
    a = p.parse_args()
    problems = []
    ref_l, run_l = losses(a.ref_metrics), losses(a.run_metrics)
    if not ref_l or [s for s, _ in ref_l] != [s for s, _ in run_l]:
        problems.append(f"steps differ: {[s for s, _ in ref_l]} vs {[s for s, _ in run_l]}")
    worst_loss = 0.0
    for (s, x), (_, y) in zip(ref_l, run_l):
        d = abs(x - y)
        worst_loss = max(worst_loss, d)
        if d > a.tol * (1 + abs(x)):
            problems.append(f"step {s}: loss {y!r} vs reference {x!r}")
    ref_w, run_w = weights(a.ref_weights), weights(a.run_weights)
    if not ref_w or sorted(ref_w) != sorted(run_w):
        problems.append(f"weight files differ: {sorted(ref_w)} vs {sorted(run_w)}")
    worst_w, where = 0.0, ""
    for name in sorted(set(ref_w) & set(run_w)):
        x, y = ref_w[name], run_w[name]
        if len(x) != len(y):
            problems.append(f"{name}: {len(y)} values vs {len(x)}")
            continue
        for i, (u, v) in enumerate(zip(x, y)):
            d = abs(u - v)
            if d != d or d > worst_w:  # nan counts as the worst
                worst_w, where = (float("inf") if d != d else d), f"{name}[{i}]"
            if not d <= a.tol * (1 + abs(u)):
                problems.append(f"{name}[{i}]: {v!r} vs reference {u!r}")
                break
    print(f"compared {len(ref_l)} losses (max |diff| {worst_loss:.3g}) and {len(ref_w)} weight tensors "
          f"(max |diff| {worst_w:.3g} at {where or '-'}), tolerance {a.tol:g}")
    if problems:
        print("DIFFERENT:\n  " + "\n  ".join(problems[:20]))
        sys.exit(1)
    print("SAME within tolerance")


if __name__ == "__main__":
    main()
