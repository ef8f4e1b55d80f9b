#!/usr/bin/env python3
"""A plain PyTorch training loop of AlexNet(num_classes=10), the same work as
bench/libtorch_loop and one pprun rank at P=1 with the seed's ds_config.json:
32 micro-batches of 8 per step (gradient accumulation), synthetic images drawn on the
CPU and copied to the device, loss scaled by 1/32, one Adam step, the loss read on the
host once per step. Prints "step N loss L samples/s X" per step and the median
samples/s of steps 2.. (step 1 includes warm-up).

    python3 bench/pytorch_loop.py [--device cpu|cuda] [--image-size 224] [--steps 6]
"""
import argparse
import statistics
import sys
import time

import torch
import torchvision


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--micro-batches", type=int, default=32)
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("pytorch_loop: --device cuda, but no GPU is visible")
    if not (63 <= a.image_size <= 4096 and a.steps >= 1 and a.micro_batch >= 1 and a.micro_batches >= 1):
        sys.exit("pytorch_loop: --image-size in [63, 4096], --steps, --micro-batch, --micro-batches >= 1")
    torch.manual_seed(1138)
    device = torch.device("cuda:0" if a.device == "cuda" else "cpu")
    model = torchvision.models.alexnet(num_classes=10).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    m, mbs = a.micro_batches, a.micro_batch
    rates = []
    for step in range(a.steps):
        start = time.perf_counter()
        loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
        for _ in range(m):
            x = torch.randn(mbs, 3, a.image_size, a.image_size).to(device)
            y = torch.randint(0, 10, (mbs,)).to(device)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            (loss / m).backward()
            loss_sum += loss.detach()
        opt.step()
        opt.zero_grad()
        loss = loss_sum.item() / m  # the one host sync of a step
        rates.append(m * mbs / (time.perf_counter() - start))
        print(f"step {step + 1} loss {loss:.6f} samples/s {rates[-1]:.2f}", flush=True)
    print(f"median samples/s {statistics.median(rates[1:] or rates):.2f}")


if __name__ == "__main__":
    main()
