#!/usr/bin/python3
"""Golden values for --full_bf16 / --full_fp16 (lib/train/optim.c sd_optim_set_half; tests/unit/test_optim.c).

Run by hand with /usr/bin/python3 (Debian's torch 1.13); writes tests/data/train/optim_half.txt with
float.hex() values.

With network.to(torch.bfloat16) the reference's parameters, their gradients and AdamW's exp_avg /
exp_avg_sq are bf16 (f16 for --full_fp16) tensors on a CUDA device, where torch 2.x runs AdamW's
foreach path (_multi_tensor_adamw) and clip_grad_norm_ in the tensors' dtype: every operation is
computed in float ("opmath") with the Python scalars as floats and its result rounded to the
dtype. Debian's torch 1.13 cannot run that here (no GPU, and its CPU kernels round the Python
scalars of bf16/f16 operations to the tensor dtype, which CUDA does not), so this script
transcribes the operations of _multi_tensor_adamw (torch 2.x, torch/optim/adamw.py) in float32
tensors with an explicit rounding after each:
    _foreach_mul_(params, 1 - lr*wd)                          (wd != 0)
    _foreach_lerp_(exp_avgs, grads, 1 - beta1)                m + w*(g - m), one fused multiply-add
    _foreach_mul_(exp_avg_sqs, beta2)
    _foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)   v + c*(g*g), fused
    sqrt, _foreach_div_(.., sqrt(1 - beta2^t)), _foreach_add_(.., eps)
    _foreach_addcdiv_(params, exp_avgs, denom, -lr/(1 - beta1^t))   p + s*(m/d), fused
(the CUDA compiler fuses a*b + c into one rounding). clip_grad_norm_: per-tensor norms, their norm,
max_norm / (total + 1e-6) clamped to 1, each rounded to the dtype; the gradient times the
coefficient rounded. In case "bf16" the norms are also checked against torch 1.13's real
clip_grad_norm_ on bf16 tensors.

Cases: four parameters (5,), (3, 4), (2, 2, 2, 2), (3, 2) in two groups ([0, 0, 1, 1], LRs 1e-2 and
5e-3), five steps with f32 gradients (the parameter's .grad is their rounding), a per-step LR
factor:
  "bf16"    bf16, weight_decay 0.01, max_norm 1.0 (some steps clip, some not)
  "bf16wd"  bf16, weight_decay 0.1, betas (0.8, 0.95), no clipping
  "f16s"    f16 with a loss scale of 1024 (the scaled gradient rounded to f16, unscaled in float
            and rounded, as GradScaler's unscale with kohya's fp16 patch), max_norm 4.0; gradients
            kept away from 0: AdamW's eps (1e-8) is 0 in f16, so an element whose exp_avg_sq
            underflows (|g| below ~8e-3) gets an inf/NaN weight, in the reference as here.
With --cuda-check (a GPU and torch 2.x, e.g. the device machine's python3) nothing is written: the
real torch.optim.AdamW (foreach=True and fused=True) and clip_grad_norm_ run on CUDA f16/bf16
parameters with the same inputs and each value is compared with this transcription.
Lines: <tag>.p<i>.init, <tag>.s<k>.g<i> (the f32 gradient fed), <tag>.s<k>.norm, <tag>.s<k>.p<i>,
<tag>.final.m<i>, <tag>.final.v<i>.
"""
import math
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train")
SHAPES = [(5,), (3, 4), (2, 2, 2, 2), (3, 2)]
GROUP_OF = [0, 0, 1, 1]
LRS = [1e-2, 5e-3]
FACTORS = [1.0, 0.9, 0.75, 0.5, 0.25]
GSCALE = [0.05, 0.6, 0.1, 2.0, 0.3]


def hx(v):
    h = float(v).hex()
    m, e = h.split("p")
    if "." in m:
        m = m.rstrip("0").rstrip(".")
    return m + "p" + e


def put(f, name, values):
    values = [float(x) for x in np.asarray(values, dtype=np.float64).ravel()]
    f.write("%s %d %s\n" % (name, len(values), " ".join(hx(v) for v in values)))


def f32(x):
    return np.float32(x)


def fma(a, b, c):
    """a*b + c with one float32 rounding (the product of two float32 is exact in float64)."""
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g) * 0.5 for s in SHAPES]
    init[3].zero_()
    grads = [[torch.randn(s, generator=g) * GSCALE[k] for s in SHAPES] for k in range(5)]
    return [t.numpy().astype(np.float32) for t in init], [[t.numpy().astype(np.float32) for t in gk] for gk in grads]


def run(f, tag, seed, dtype, wd, betas, clip, scale):
    R = (lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32)).to(dtype).float().numpy())
    init, grads = inputs(seed)
    if dtype == torch.float16:
        grads = [[np.sign(g) * (np.abs(g) + f32(0.1 * GSCALE[k])) for g in gk] for k, gk in enumerate(grads)]
    for i, t in enumerate(init):
        put(f, "%s.p%d.init" % (tag, i), t)
    params = [R(t) for t in init]                      # network.to(dtype)
    m = [np.zeros_like(t) for t in params]
    v = [np.zeros_like(t) for t in params]
    b1, b2 = betas
    eps = f32(1e-8)
    inv = f32(1.0 / scale)
    for k in range(5):
        gs = []
        for i in range(4):
            fed = (grads[k][i] * f32(scale)).astype(np.float32)
            put(f, "%s.s%d.g%d" % (tag, k, i), fed)
            g = R(fed)                                  # the parameter's .grad
            gs.append(R(g * inv) if scale != 1 else g)  # unscale_ (fp16)
        norms = [R(f32(math.sqrt(float(np.sum(g.astype(np.float64) ** 2))))) for g in gs]
        total = R(f32(math.sqrt(float(np.sum(np.asarray(norms, dtype=np.float64) ** 2)))))
        if dtype == torch.bfloat16 and clip > 0:        # torch's own clip_grad_norm_ on bf16 agrees
            tp = [torch.nn.Parameter(torch.from_numpy(p).bfloat16()) for p in params]
            for p, g in zip(tp, gs):
                p.grad = torch.from_numpy(g).bfloat16()
            tn = torch.nn.utils.clip_grad_norm_(tp, clip)
            assert float(tn) == float(total), (float(tn), float(total))
        put(f, "%s.s%d.norm" % (tag, k), [total])
        if clip > 0:
            coef = R(f32(clip) / R(total + f32(1e-6)))
            coef = min(coef, f32(1.0))
            gs = [R(g * coef) for g in gs]
            if dtype == torch.bfloat16:
                for p, g in zip(tp, gs):
                    assert np.array_equal(p.grad.float().numpy(), g)
        step = k + 1
        for i in range(4):
            lr = LRS[GROUP_OF[i]] * FACTORS[k]
            g = gs[i]
            p = R(params[i] * f32(1 - lr * wd)) if wd != 0 else params[i]
            w = f32(1 - b1)
            if w < 0.5:
                m[i] = R(fma(w, (g - m[i]).astype(np.float32), m[i]))
            else:
                m[i] = R(fma(-(g - m[i]).astype(np.float32), f32(1) - w, g))
            v[i] = R(fma(f32(1 - b2), (g * g).astype(np.float32), R(v[i] * f32(b2))))
            d = R(np.sqrt(v[i]))
            d = R(d / f32(math.sqrt(1 - b2 ** step)))
            d = R(d + eps)
            ns = f32(-(lr / (1 - b1 ** step)))
            with np.errstate(divide="raise", invalid="raise"):
                params[i] = R(fma(ns, (m[i] / d).astype(np.float32), p))
            put(f, "%s.s%d.p%d" % (tag, k, i), params[i])
    for i in range(4):
        put(f, "%s.final.m%d" % (tag, i), m[i])
        put(f, "%s.final.v%d" % (tag, i), v[i])


CASES = [("bf16", 11, torch.bfloat16, 0.01, (0.9, 0.999), 1.0, 1.0),
         ("bf16wd", 12, torch.bfloat16, 0.1, (0.8, 0.95), 0.0, 1.0),
         ("f16s", 13, torch.float16, 0.01, (0.9, 0.999), 4.0, 1024.0)]


def cuda_check():
    """--cuda-check (on a machine with a GPU and torch 2.x): the real torch.optim.AdamW (foreach and
    fused) and clip_grad_norm_ on CUDA f16/bf16 parameters against this transcription; prints, per
    case and implementation, how many of the values written differ and by how many ulps at most."""
    import io
    ok = True
    for impl in ("foreach", "fused"):
        for tag, seed, dtype, wd, betas, clip, scale in CASES:
            buf = io.StringIO()
            run(buf, tag, seed, dtype, wd, betas, clip, scale)
            want = {}
            for line in buf.getvalue().splitlines():
                name, n, *vals = line.split()
                want[name] = [float.fromhex(v) for v in vals]
            init, grads = inputs(seed)
            if dtype == torch.float16:
                grads = [[np.sign(g) * (np.abs(g) + f32(0.1 * GSCALE[k])) for g in gk] for k, gk in enumerate(grads)]
            params = [torch.nn.Parameter(torch.from_numpy(t).to("cuda", dtype)) for t in init]
            groups = [{"params": [p for p, gi in zip(params, GROUP_OF) if gi == k], "lr": LRS[k]} for k in range(2)]
            opt = torch.optim.AdamW(groups, weight_decay=wd, betas=betas, **{impl: True})
            diffs = total = worst = 0
            for k in range(5):
                for i, p in enumerate(params):
                    fed = torch.from_numpy((grads[k][i] * f32(scale)).astype(np.float32)).cuda()
                    g = fed.to(dtype)
                    if scale != 1:
                        g = (g.float() * torch.tensor(1.0 / scale, dtype=torch.float64).float()).to(dtype)
                    p.grad = g
                norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else None
                for gi, grp in enumerate(opt.param_groups):
                    grp["lr"] = LRS[gi] * FACTORS[k]
                opt.step()
                got = {"%s.s%d.p%d" % (tag, k, i): p.detach().float().cpu().flatten().tolist() for i, p in enumerate(params)}
                if norm is not None:
                    got["%s.s%d.norm" % (tag, k)] = [float(norm)]
                for name, vals in got.items():
                    for a, b in zip(vals, want[name]):
                        total += 1
                        if a != b:
                            diffs += 1
                            ulp = abs(a - b) / max(abs(b) * 2.0 ** (-7 if dtype == torch.bfloat16 else -10), 2.0 ** -24)
                            worst = max(worst, ulp)
            print("%s %s: %d of %d values differ from the transcription (worst %.2f ulp)" % (impl, tag, diffs, total, worst))
            ok &= diffs == 0
    return ok


def main():
    import sys
    if "--cuda-check" in sys.argv:
        sys.exit(0 if cuda_check() else 1)
    with open(os.path.join(OUT, "optim_half.txt"), "w") as f:
        for c in CASES:
            run(f, *c)


if __name__ == "__main__":
    main()
