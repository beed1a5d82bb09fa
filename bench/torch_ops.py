#!/usr/bin/python3
"""The same work as bench_ops.c in PyTorch (Debian's python3-torch 1.13, CPU), for ratios.

Prints one JSON object per line: {"name": ..., "torch_seconds": ..., "torch_cpu_seconds": ...} with
the names bench_ops uses (medians of BENCH_RUNS runs after one warm-up, SD_THREADS threads; CPU
seconds = process CPU time, robust on a shared host). Attention is the
diffusers-0.x CPU path for torch 1.13 (baddbmm, softmax, bmm) on [batch*heads, tokens, dim]
tensors; the head reshapes are not timed. fwdbwd = forward + backward into the inputs and the
parameters (gradients reset to None before each run); fwddx (convs) = forward + backward into the
input only, parameters frozen.
Run with /usr/bin/python3 (not a venv python):  /usr/bin/python3 bench/torch_ops.py
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
THREADS = int(os.environ.get("SD_THREADS", "0")) or os.cpu_count()
FILTER = os.environ.get("BENCH_FILTER", "")
torch.set_num_threads(THREADS)
torch.manual_seed(0)


def timeit(name, fn):
    if FILTER and FILTER not in name:
        return
    fn()
    ts, cs = [], []
    for _ in range(RUNS):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    print(json.dumps({"name": name, "torch_seconds": round(statistics.median(ts), 6),
                      "torch_cpu_seconds": round(statistics.median(cs), 6), "torch_threads": THREADS}))
    sys.stdout.flush()


def pair(name, inputs, forward):
    """Time forward (no grad) and forward+backward of forward(*inputs)."""
    want_f = not FILTER or FILTER in name + "_fwd"
    want_b = not FILTER or FILTER in name + "_fwdbwd"
    if not (want_f or want_b):
        return
    with torch.no_grad():
        dy = torch.randn_like(forward(*inputs))

    def fwd():
        with torch.no_grad():
            forward(*inputs)

    def fwdbwd():
        for t in inputs:
            t.grad = None
        forward(*inputs).backward(dy)

    timeit(name + "_fwd", fwd)
    timeit(name + "_fwdbwd", fwdbwd)


def pair_dx(name, inputs, forward):
    """Forward + backward into the first input only (frozen parameters, as under LoRA)."""
    if FILTER and FILTER not in name + "_fwddx":
        return
    x = inputs[0]
    frozen = [t.detach() for t in inputs[1:]]
    with torch.no_grad():
        dy = torch.randn_like(forward(x, *frozen))

    def fwddx():
        x.grad = None
        forward(x, *frozen).backward(dy)

    timeit(name + "_fwddx", fwddx)


def P(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


def conv(name, cin, cout, h, k, stride):
    pad = k // 2
    inputs = [P(1, cin, h, h), P(cout, cin, k, k, scale=0.05), P(cout)]
    pair(name, inputs, lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad))
    pair_dx(name, inputs, lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=pad))


def attn(name, b, heads, tq, tk, d):
    scale = d ** -0.5

    def f(q, k, v):
        s = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1]), q, k.transpose(-1, -2), beta=0, alpha=scale)
        return torch.bmm(s.softmax(dim=-1), v)

    pair(name, [P(b * heads, tq, d), P(b * heads, tk, d), P(b * heads, tk, d)], f)


def linear(name, rows, cin, cout):
    pair(name, [P(1, rows, cin), P(cout, cin, scale=0.05), P(cout)], lambda x, w, b: F.linear(x, w, b))


conv("conv3x3_320_64x64", 320, 320, 64, 3, 1)
conv("conv3x3_640_32x32", 640, 640, 32, 3, 1)
conv("conv3x3_1280_16x16", 1280, 1280, 16, 3, 1)
conv("conv3x3_s2_320_64x64", 320, 320, 64, 3, 2)
conv("conv1x1_640to320_64x64", 640, 320, 64, 1, 1)
attn("attn_self_4096_8x16", 1, 8, 4096, 4096, 16)
attn("attn_self_4096_8x32", 1, 8, 4096, 4096, 32)
attn("attn_self_4096_8x40", 1, 8, 4096, 4096, 40)
attn("attn_self_4096_8x64", 1, 8, 4096, 4096, 64)
attn("attn_cross_4096x77_8x16", 1, 8, 4096, 77, 16)
attn("attn_cross_4096x77_8x40", 1, 8, 4096, 77, 40)
attn("attn_self_1024_8x80", 1, 8, 1024, 1024, 80)
linear("linear_4096x320to1280", 4096, 320, 1280)
linear("linear_geglu_proj_4096x320to2560", 4096, 320, 2560)
linear("linear_to_k_77x768to320", 77, 768, 320)
pair("groupnorm", [P(1, 320, 64, 64), P(320), P(320)], lambda x, g, b: F.group_norm(x, 32, g, b, 1e-5))
pair("groupnorm_silu", [P(1, 320, 64, 64), P(320), P(320)], lambda x, g, b: F.silu(F.group_norm(x, 32, g, b, 1e-5)))
pair("silu", [P(1, 320, 64, 64)], F.silu)
pair("gelu", [P(1, 320, 64, 64)], F.gelu)
pair("layernorm", [P(1, 4096, 320), P(320), P(320)], lambda x, g, b: F.layer_norm(x, (320,), g, b, 1e-5))


def geglu(x):
    h, g = x.chunk(2, dim=-1)
    return h * F.gelu(g)


pair("geglu", [P(1, 4096, 2560)], geglu)
pair("upsample2x", [P(1, 1280, 16, 16)], lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"))
