"""Writes a DeepSpeed pipeline-layout checkpoint of torchvision's AlexNet and PyTorch's
reference evaluation of it.

usage: write_deepspeed_checkpoint.py OUT_DIR --data DIR --image-size S --samples K
                                     --reference REF.pt [--seed N] [--tag global_step7]
                                     [--bad-layer 21]

OUT_DIR/latest holds the tag; OUT_DIR/<tag>/layer_XX-model_states.pt is
torch.save(module.state_dict()) for every layer that is an nn.Module (as DeepSpeed's
PipelineModule.save_state_dict does; parameterless modules give empty dicts), and no file
for index 14, the flatten lambda. With --bad-layer 21, classifier.6 gets 7 outputs instead
of 10 (a shape mismatch ppc must refuse).

REF.pt: {"outputs": [K,10] logits, "labels": [K], "loss": mean cross-entropy} from the
model in eval mode on test records 0..K-1, preprocessed like ppc.
"""
import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--data")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--reference")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tag", default="global_step7")
    ap.add_argument("--bad-layer", type=int, default=-1)
    a = ap.parse_args()
    torch.set_num_threads(1)

    torch.manual_seed(a.seed)
    model = common.new_alexnet()
    # Move the weights away from torchvision's init so a loader that ignored the files (and
    # kept its own init) could not match by accident: every parameter gets a seeded draw.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (1.0 / max(1, p[0].numel()) ** 0.5))
    if a.bad_layer == 21:
        model.classifier[6] = nn.Linear(4096, 7)
    elif a.bad_layer >= 0:
        raise SystemExit("--bad-layer supports 21 only")

    tag_dir = os.path.join(a.out, a.tag)
    os.makedirs(tag_dir, exist_ok=True)
    written = 0
    for index, name, module in common.layer_modules(model):
        if module is None:
            continue  # DeepSpeed writes nothing for a lambda layer
        torch.save(module.state_dict(), os.path.join(tag_dir, "layer_%02d-model_states.pt" % index))
        written += 1
    with open(os.path.join(a.out, "latest"), "w") as f:
        f.write(a.tag)
    print("wrote %d layer files to %s" % (written, tag_dir))

    if a.reference:
        inputs, labels = common.test_inputs(a.data, a.samples, a.image_size)
        model.eval()
        with torch.no_grad():
            logits = model(inputs)
            loss = F.cross_entropy(logits, labels).item()
        acc = (logits.argmax(1) == labels).float().mean().item()
        torch.save({"outputs": logits, "labels": labels, "loss": loss, "acc": acc}, a.reference)
        print("PyTorch eval on %d samples: loss %.7f acc %.4f" % (a.samples, loss, acc))


if __name__ == "__main__":
    main()
