"""Checks a ppc checkpoint and export with PyTorch.

usage: check_ppc_checkpoint.py --data DIR --ckpt CK --export EXP.pt --predict PRED.pt
                               --step N --image-size S --samples K

- CK/latest names global_step<N>; its manifest.json sizes and zlib crc32s match the files;
  job.json says step N.
- Every layer_XX-model_states.pt loads with torch.load into torchvision's AlexNet
  (strict, per sub-module); every parameterised layer has an optim file whose Adam state
  has the parameter's shapes and step N.
- That model, in eval mode, on test records 0..K-1 preprocessed like ppc, gives ppc's
  predicted logits (PRED.pt) within 1e-5; labels equal.
- The export (strict load_state_dict) gives the same.
- With --log: ppc's printed 'rank 0 eval loss' is PyTorch's mean cross-entropy.
"""
import argparse
import json
import os
import re
import zlib

import torch

import common
from common import fail

TOL = 1e-5


def check_manifest(tag_dir):
    path = os.path.join(tag_dir, "manifest.json")
    if not os.path.exists(path):
        fail("no manifest.json in %s" % tag_dir)
    with open(path) as f:
        manifest = json.load(f)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        fail("manifest.json has no 'files' map: %r" % manifest)
    on_disk = sorted(n for n in os.listdir(tag_dir) if n != "manifest.json")
    if sorted(files) != on_disk:
        fail("manifest.json lists %s but the directory holds %s" % (sorted(files), on_disk))
    for name, entry in files.items():
        with open(os.path.join(tag_dir, name), "rb") as f:
            data = f.read()
        if entry.get("bytes") != len(data):
            fail("manifest.json: %s has %d bytes, manifest says %r" % (name, len(data), entry.get("bytes")))
        crc = "%08x" % (zlib.crc32(data) & 0xFFFFFFFF)
        if str(entry.get("crc32", "")).lower() != crc:
            fail("manifest.json: %s has crc32 %s, manifest says %r" % (name, crc, entry.get("crc32")))
    print("manifest.json: %d files, sizes and crc32s match" % len(files))


def load_layers(tag_dir, model, step):
    for index, name, module in common.layer_modules(model):
        path = os.path.join(tag_dir, "layer_%02d-model_states.pt" % index)
        if not os.path.exists(path):
            if module is None or not list(module.state_dict()):
                continue  # parameterless layers may have no file
            fail("missing %s" % path)
        sd = torch.load(path, map_location="cpu")
        if not isinstance(sd, dict):
            fail("%s holds a %s, not a dict" % (path, type(sd).__name__))
        if module is None:
            if sd:
                fail("%s (the flatten) should be empty, holds %s" % (path, list(sd)))
            continue
        try:
            module.load_state_dict(sd, strict=True)
        except Exception as e:  # noqa: BLE001
            fail("%s does not load into %s strictly: %s" % (path, name, e))
        params = dict(module.named_parameters())
        opath = os.path.join(tag_dir, "layer_%02d-optim_states.pt" % index)
        if not params:
            if os.path.exists(opath):
                optim = torch.load(opath, map_location="cpu")
                if optim:
                    fail("%s: parameterless layer %s has optimizer state %s" % (opath, name, list(optim)))
            continue
        if not os.path.exists(opath):
            fail("missing %s for %s" % (opath, name))
        optim = torch.load(opath, map_location="cpu")
        if not isinstance(optim, dict) or sorted(optim) != sorted(params):
            fail("%s: keys %r, want %s" % (opath, list(optim) if isinstance(optim, dict) else optim, sorted(params)))
        for pname, p in params.items():
            st = optim[pname]
            for key in ("exp_avg", "exp_avg_sq"):
                t = st.get(key) if isinstance(st, dict) else None
                if not isinstance(t, torch.Tensor):
                    fail("%s: %s has no tensor %r (has %r)" % (opath, pname, key, st))
                if t.shape != p.shape or t.dtype != torch.float32:
                    fail("%s: %s.%s is %s %s, parameter is %s" % (opath, pname, key, t.dtype, tuple(t.shape),
                                                                  tuple(p.shape)))
                if not torch.isfinite(t).all():
                    fail("%s: %s.%s has non-finite values" % (opath, pname, key))
            if (st["exp_avg_sq"] < 0).any():
                fail("%s: %s.exp_avg_sq has negative values" % (opath, pname))
            s = st.get("step")
            s = s.item() if isinstance(s, torch.Tensor) else s
            if s != step:
                fail("%s: %s step is %r, want %d" % (opath, pname, s, step))
            if not st["exp_avg_sq"].abs().sum() > 0:
                fail("%s: %s.exp_avg_sq is all zero after %d steps" % (opath, pname, step))


def compare(what, model, inputs, labels, pred):
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    outputs = pred["outputs"]
    if tuple(outputs.shape) != tuple(logits.shape) or outputs.dtype != torch.float32:
        fail("%s: PRED outputs are %s %s, want float32 %s" % (what, outputs.dtype, tuple(outputs.shape),
                                                              tuple(logits.shape)))
    diff = (logits - outputs).abs().max().item()
    print("%s: max |PyTorch logits - ppc logits| = %.3g over %d samples" % (what, diff, len(labels)))
    if not diff <= TOL:
        fail("%s: PyTorch's logits differ from ppc's --predict outputs by %.3g (> %g)" % (what, diff, TOL))
    return logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--predict", required=True)
    ap.add_argument("--step", type=int, required=True)
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--log", help="ppc's stdout from the --eval run")
    a = ap.parse_args()
    torch.set_num_threads(1)

    with open(os.path.join(a.ckpt, "latest")) as f:
        tag = f.read().strip()
    if tag != "global_step%d" % a.step:
        fail("%s/latest says %r, want global_step%d" % (a.ckpt, tag, a.step))
    tag_dir = os.path.join(a.ckpt, tag)
    check_manifest(tag_dir)
    with open(os.path.join(tag_dir, "job.json")) as f:
        job = json.load(f)
    if job.get("step") != a.step:
        fail("job.json step is %r, want %d" % (job.get("step"), a.step))

    inputs, labels = common.test_inputs(a.data, a.samples, a.image_size)
    pred = torch.load(a.predict, map_location="cpu")
    if not isinstance(pred, dict) or "outputs" not in pred or "labels" not in pred:
        fail("%s is not a dict with 'outputs' and 'labels': %r" % (a.predict, type(pred)))
    if pred["labels"].dtype != torch.int64 or not torch.equal(pred["labels"], labels):
        fail("PRED labels %s differ from test_batch.bin records 0..%d: %s" % (pred["labels"].tolist(),
                                                                             a.samples - 1, labels.tolist()))

    ck_model = common.new_alexnet()
    load_layers(tag_dir, ck_model, a.step)
    print("checkpoint: every layer file loads strictly into torchvision's AlexNet; Adam state ok (step %d)" % a.step)
    ck_logits = compare("checkpoint", ck_model, inputs, labels, pred)

    ex_model = common.new_alexnet()
    exported = torch.load(a.export, map_location="cpu")
    try:
        ex_model.load_state_dict(exported, strict=True)
    except Exception as e:  # noqa: BLE001
        fail("%s does not load strictly into torchvision's AlexNet: %s" % (a.export, e))
    ex_logits = compare("export", ex_model, inputs, labels, pred)
    for k, v in ex_model.state_dict().items():
        if not torch.equal(v, ck_model.state_dict()[k]):
            fail("export's %s differs from the checkpoint's" % k)
    if not torch.equal(ck_logits, ex_logits):
        fail("checkpoint and export give different logits")
    if a.log:
        with open(a.log) as f:
            m = re.search(r"rank 0 eval loss: ([0-9.eE+-]+) ", f.read())
        if not m:
            fail("%s has no 'rank 0 eval loss: ...' line" % a.log)
        ref = torch.nn.functional.cross_entropy(ck_logits, labels).item()
        # printed with 6 decimals
        if not abs(float(m.group(1)) - ref) <= 1e-5 * abs(ref) + 5e-7:
            fail("ppc printed eval loss %s for its checkpoint, PyTorch computes %.7f" % (m.group(1), ref))
        print("checkpoint: ppc's eval loss %s = PyTorch's %.7f" % (m.group(1), ref))
    print("ppc checkpoint and export: ok")


if __name__ == "__main__":
    main()
