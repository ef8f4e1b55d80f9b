"""Writes a small, deterministic fake CIFAR-10 binary directory.

usage: make_cifar.py DIR [--train-records N] [--test-records M] [--seed S]

Each record: 1 label byte (0..9) + 3072 pixel bytes (3 planes of 32x32).
"""
import argparse
import os
import random


def write(path, records, rng):
    with open(path, "wb") as f:
        for _ in range(records):
            f.write(bytes([rng.randrange(10)]))
            f.write(bytes(rng.getrandbits(8) for _ in range(3072)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--train-records", type=int, default=40)
    ap.add_argument("--test-records", type=int, default=32)
    ap.add_argument("--seed", type=int, default=20240607)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    rng = random.Random(a.seed)
    for i in range(1, 6):
        write(os.path.join(a.dir, "data_batch_%d.bin" % i), a.train_records, rng)
    write(os.path.join(a.dir, "test_batch.bin"), a.test_records, rng)


if __name__ == "__main__":
    main()
