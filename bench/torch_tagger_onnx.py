#!/usr/bin/python3
"""Real-sized WD tagger models for bench/tagger_onnx.sh (sd-tag --onnx vs the safetensors path vs
PyTorch on the CPU). Run with Debian's /usr/bin/python3 (torch 1.13, onnx 1.12).

  torch_tagger_onnx.py export DIR   writes DIR/<name>/{model.onnx, model.safetensors, selected_tags.csv}
                                    for each model (skipped when already there); random weights,
                                    rounded to float16 (so the F16 safetensors and the f32 graph hold
                                    the same values)
  torch_tagger_onnx.py time DIR     one JSON line per model: {"name", "torch_images_per_s"} of the same
                                    module in PyTorch (batch 1, the thread count of SD_THREADS)
  torch_tagger_onnx.py golden DIR   DIR/<name>/golden.safetensors: "full.y", PyTorch's probabilities on
                                    make_onnx_golden.py's pattern(1, 448), for the one-off accuracy check
                                    SD_ONNX_FULL=DIR/<name> build/tests/golden/test_onnx_golden

Models (the layouts of tests/golden/gen/make_convnext_golden.py and make_tagger_golden.py, which
use timm's key names, so the safetensors load through lib/models/tagger*.c):
  convnext  wd-convnext-tagger-v3 / wd-v1-4-convnext-tagger-v2 shapes: ConvNeXt-Base, dims
            128/256/512/1024, depths 3/3/27/3, 448x448, gelu_tanh; exported at opset 13, so its
            LayerNorms are decomposed (ReduceMean/Sub/Pow/Sqrt/Div), as tf2onnx's v2 graphs are
  vit       wd-vit-tagger-v3 shapes: ViT-B/16, dim 768, depth 12, 12 heads, MLP 3072, 448x448
            (784 tokens); exported at opset 17 (LayerNormalization op)
Both end in 10861 classes (the v3 tag count) and take NHWC BGR 0..255 (Wrap of make_onnx_golden.py).
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "gen"))
import make_convnext_golden as cg  # noqa: E402
import make_tagger_golden as vg  # noqa: E402

CLASSES = 10861
SIZE = 448


class Wrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return torch.sigmoid(self.m(x.permute(0, 3, 1, 2) / 127.5 - 1.0))


def build(name):
    torch.manual_seed(2024)
    if name == "convnext":
        m = cg.ConvNeXt((128, 256, 512, 1024), (3, 3, 27, 3), CLASSES, nn.GELU(approximate="tanh"))
        meta, opset = {"img_size": str(SIZE), "format": "pt"}, 13
    else:
        m = vg.VisionTransformer(img=SIZE, patch=16, dim=768, depth=12, heads=12, hidden=3072, classes=CLASSES)
        meta, opset = {"img_size": str(SIZE), "format": "pt"}, 17
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if pname.endswith("gamma"):
                p.copy_(0.1 + 0.1 * torch.rand_like(p))
            elif p.dim() == 1 and pname.endswith(".weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.02 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.0 / math.sqrt(p[0].numel())))
            p.copy_(p.half().float())
    return m.eval(), meta, opset


def export(d):
    for name in ("convnext", "vit"):
        out = os.path.join(d, name)
        if all(os.path.exists(os.path.join(out, f)) for f in ("model.onnx", "model.safetensors", "selected_tags.csv")):
            continue
        os.makedirs(out, exist_ok=True)
        m, meta, opset = build(name)
        vg.save_st(os.path.join(out, "model.safetensors.tmp"),
                   {k: v.detach().half().numpy() for k, v in m.state_dict().items()}, meta)
        torch.onnx.export(Wrap(m).eval(), torch.zeros(1, SIZE, SIZE, 3), os.path.join(out, "model.onnx.tmp"),
                          input_names=["input"], output_names=["output"], opset_version=opset,
                          do_constant_folding=True, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        with open(os.path.join(out, "selected_tags.csv.tmp"), "w") as f:
            f.write("tag_id,name,category,count\n")
            for r in ("general", "sensitive", "questionable", "explicit"):
                f.write("9,%s,9,1\n" % r)
            for i in range(CLASSES - 4):
                f.write("%d,tag_%d,0,1\n" % (i, i))
        for f in ("model.safetensors", "model.onnx", "selected_tags.csv"):
            os.replace(os.path.join(out, f + ".tmp"), os.path.join(out, f))
        print("bench/torch_tagger_onnx.py: wrote", out, file=sys.stderr)


def timeit(d):
    torch.set_num_threads(int(os.environ.get("SD_THREADS", os.cpu_count() or 1)))
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    for name in ("convnext", "vit"):
        if os.environ.get("BENCH_FILTER") and os.environ["BENCH_FILTER"] not in "tagger_" + name:
            continue
        m, _, _ = build(name)
        w = Wrap(m).eval()
        x = torch.from_numpy(np.random.RandomState(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32))
        with torch.no_grad():
            w(x)
            ts = []
            for _ in range(runs):
                t = time.perf_counter()
                w(x)
                ts.append(time.perf_counter() - t)
        print(json.dumps({"name": "tagger_" + name, "torch_images_per_s": round(1 / sorted(ts)[len(ts) // 2], 3)}))


def golden(d):
    import make_onnx_golden as og
    for name in ("convnext", "vit"):
        m, _, _ = build(name)
        with torch.no_grad():
            y = Wrap(m).eval()(torch.from_numpy(og.pattern(1, SIZE))).numpy()
        vg.save_st(os.path.join(d, name, "golden.safetensors"), {"full.y": y})


if __name__ == "__main__":
    cmds = {"export": export, "time": timeit, "golden": golden}
    if len(sys.argv) != 3 or sys.argv[1] not in cmds:
        sys.exit("usage: torch_tagger_onnx.py export|time|golden DIR")
    cmds[sys.argv[1]](sys.argv[2])
