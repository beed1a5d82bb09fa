"""Goldens for lib/train/optim8bit's 1-state optimizers (tests/unit/test_optim8bit1.c):
bitsandbytes' Lion8bit / PagedLion8bit ("lion") and SGD8bit ("momentum", kohya's SGDNesterov8bit).

A numpy float32 transcription of the CUDA kernels bitsandbytes 0.49.2 runs (tag 0.49.2, commit
f0e6ca31b32c4744a9cee4e31610b25796cbf778), like make_optim8bit_golden.py (whose maps, quantize_2D,
input hash and safetensors writer are reused):

  optim/lion.py         Lion8bit / PagedLion8bit(Optimizer1State, "lion", betas (0.9, 0.99),
                        eps 0.0, weight_decay 0, optim_bits 8, min_8bit_size 4096)
  optim/sgd.py          SGD8bit(Optimizer1State, "momentum", betas=(momentum, dampening), eps 0.0,
                        optim_bits 8); nesterov is accepted and never used
  optim/optimizer.py    Optimizer1State.init_state: numel < min_8bit_size -> f32 state1, else
                        uint8 state1 (qmap1 = create_dynamic_map(signed=True)) + absmax1 of
                        ceil(n/256) blocks, all zero; update_step: step += 1, then
                        optimizer_update_32bit(name, g, p, state1, beta1, eps, step, lr, None, beta2,
                        0, 0, weight_decay, 1.0) or optimizer_update_8bit_blockwise(...)
  csrc/ops.cu           optimizer32bit LION / MOMENTUM: kOptimizer32bit1State (max_unorm 0);
                        optimizerStatic8bitBlockwise: BLOCKSIZE_1STATE 256, NUM_1STATE 1
  csrc/kernels.cu       kOptimizer32bit1State<float, OPT>: g += p*wd (wd > 0) for every 1-state
                        optimizer; LION p -= lr*sgn(s*b1 + (1-b1)*g), s = s*b2 + (1-b2)*g;
                        MOMENTUM s = g (step 1) or s*b1 + g, p += -lr*s.
                        kOptimizerStatic8bit1StateBlockwise<float, OPT, 256, 1>: LION decays
                        p *= 1 - lr*wd first, u = lr*sgn(s*b1 + (1-b1)*g), s = s*b2 + (1-b2)*g,
                        p -= u; MOMENTUM g += p*wd, s as above, p -= lr*s; absmax over the 256
                        lanes (out of range: g = 0, p = 0, code 128), quantize_2D + sign fix.

Every operation is one float32 numpy operation in the kernels' order (no FMA; bnb's
--use_fast_math build may contract, see lib/train/optim8bit.h).
Output: tests/data/optim8bit/bnb1state.safetensors.
Run by hand: /usr/bin/python3 tests/golden/gen/make_optim8bit1_golden.py
"""
import importlib.util
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("g8", os.path.join(HERE, "make_optim8bit_golden.py"))
g8 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(g8)

F = np.float32
QMAP1 = g8.QMAP1
OUT = os.path.join(HERE, "..", "..", "data", "optim8bit", "bnb1state.safetensors")


def sgn(x):
    return ((F(0.0) < x).astype(np.int32) - (x < F(0.0)).astype(np.int32)).astype(F)


def rnd(half, x):
    """A store into the kernel's T (half: None float, "f16", "bf16"), round to nearest even."""
    x = np.asarray(x, dtype=F)
    if half is None:
        return x
    if half == "f16":
        return x.astype(np.float16).astype(F)
    return torch.from_numpy(x.copy()).to(torch.bfloat16).to(torch.float32).numpy()


class S:
    half = None

    def __init__(self, lr, beta1, beta2, wd, step):
        self.beta1, self.beta2 = g8.c_float(beta1), g8.c_float(beta2)
        self.lr, self.wd = g8.c_float(lr), g8.c_float(wd)
        self.omb1 = F(1.0) - self.beta1
        self.omb2 = F(1.0) - self.beta2
        self.decay = F(1.0) - self.lr * self.wd
        self.first = step == 1


def step32(opt, s, p, g, st):
    g = g.copy()
    if s.wd > F(0.0):
        g = rnd(s.half, g + p * s.wd)          # g_vals[j] is a T
    if opt == "lion":
        p[:] = rnd(s.half, p - F(1.0) * (s.lr * sgn(st * s.beta1 + s.omb1 * g)))
        st[:] = st * s.beta2 + s.omb2 * g
    else:
        if s.first:
            st[:] = g
        else:
            st[:] = st * s.beta1 + g
        p[:] = rnd(s.half, p + F(1.0) * ((-s.lr) * st))


def step8(opt, s, p, g, c1s, absmax1):
    n = p.shape[0]
    B = 256
    for b in range((n + B - 1) // B):
        i = b * B
        valid = min(B, n - i)
        gb = np.zeros(B, dtype=F)
        pb = np.zeros(B, dtype=F)
        gb[:valid] = g[i:i + valid]
        pb[:valid] = p[i:i + valid]
        k1 = np.full(B, 128, dtype=np.uint8)
        k1[:valid] = c1s[i:i + valid]
        if s.wd > F(0.0):
            if opt == "lion":
                pb = rnd(s.half, pb * s.decay)     # p_vals[j] is a T
            else:
                gb = gb + pb * s.wd
        sv = QMAP1[k1] * absmax1[b]
        if opt == "lion":
            u = rnd(s.half, s.lr * sgn(sv * s.beta1 + s.omb1 * gb))   # kept in g_vals[j], a T
            sv = sv * s.beta2 + s.omb2 * gb
        else:
            sv = gb.copy() if s.first else sv * s.beta1 + gb
        sv = sv.astype(F)
        nmax = np.fmax.reduce(np.concatenate([[F(-np.finfo(F).max)], np.abs(sv)]).astype(F))
        absmax1[b] = nmax
        if opt == "lion":
            newp = rnd(s.half, pb - u)
        else:
            newp = rnd(s.half, pb - s.lr * sv)
        p[i:i + valid] = newp[:valid]
        sv = sv[:valid]
        with np.errstate(invalid="ignore", divide="ignore"):
            q1 = g8.quantize_2d(QMAP1, True, (sv / nmax).astype(F))
        fix = np.signbit(QMAP1[q1]) != np.signbit(sv)
        q1 = np.where(fix, np.where(sv > F(0.0), q1.astype(np.int64) + 1, q1.astype(np.int64) - 1) & 255,
                      q1).astype(np.uint8)
        c1s[i:i + valid] = q1


LRS = g8.LRS
# name, optimizer, n, min_8bit_size, lr scale, beta1 (momentum), beta2 (dampening), wd, span, special
CASES = [
    ("la", "lion", 1000, 4096, 0.1, 0.9, 0.99, 0.0, 8, False),
    ("lb", "lion", 4196, 4096, 0.1, 0.9, 0.99, 1e-2, 6, False),
    ("lc", "lion", 4096, 4096, 0.1, 0.95, 0.98, 0.0, 12, True),
    ("ld", "lion", 600, 512, 1.0, 0.8, 0.95, 0.1, 4, False),
    ("le", "lion", 700, 4096, 0.1, 0.9, 0.99, 0.5, 4, False),
    ("ma", "momentum", 1000, 4096, 10.0, 0.9, 0.0, 0.0, 8, False),
    ("mb", "momentum", 4196, 4096, 10.0, 0.9, 0.0, 1e-2, 6, False),
    ("mc", "momentum", 4096, 4096, 10.0, 0.8, 0.0, 0.0, 12, True),
    ("md", "momentum", 600, 512, 10.0, 0.5, 0.0, 0.1, 4, False),
    # --full_fp16 / --full_bf16: parameters and gradients of the half dtype (the kernels' T)
    ("hl8", "lion", 1000, 512, 1.0, 0.9, 0.99, 0.1, 4, "f16"),
    ("hl32", "lion", 700, 4096, 1.0, 0.9, 0.99, 0.1, 4, "bf16"),
    ("hm8", "momentum", 1000, 512, 10.0, 0.9, 0.0, 0.1, 4, "bf16"),
    ("hm32", "momentum", 700, 4096, 10.0, 0.9, 0.0, 0.1, 4, "f16"),
]


def specials(n, step, g):
    """Zero gradients in a block from the start and in another from step 3 on, and -0."""
    g[3 * 256:4 * 256] = 0.0
    if step >= 3:
        g[5 * 256:6 * 256] = 0.0
    if step == 1:
        g[103] = F(-0.0)


def run_case(seed, name, opt, n, min8, lrs, b1, b2, wd, span, special):
    half = special if isinstance(special, str) else None
    special = special is True
    p, _ = g8.inputs(seed, n, 0, span)
    p = rnd(half, p).copy()
    eight = n >= min8
    if eight:
        c1s = np.zeros(n, dtype=np.uint8)
        am1 = np.zeros((n + 255) // 256, dtype=F)
    else:
        st = np.zeros(n, dtype=F)
    out = {}
    for step in range(1, len(LRS) + 1):
        _, g = g8.inputs(seed, n, step, span)
        if special:
            specials(n, step, g)
        g = rnd(half, g).copy()
        s = S(lrs[step - 1], b1, b2, wd, step)
        s.half = half
        if eight:
            step8(opt, s, p, g, c1s, am1)
        else:
            step32(opt, s, p, g, st)
        if step == 1 and name in ("ld", "md"):
            out[name + ".p1"] = p.copy()
    out[name + ".p"] = p.copy()
    if eight:
        out[name + ".state1"] = c1s
        out[name + ".absmax1"] = am1
    else:
        out[name + ".state1"] = st
    return out


def main():
    t = {}
    for ci, (name, opt, n, min8, lrscale, b1, b2, wd, span, special) in enumerate(CASES):
        lrs = [lr * lrscale for lr in LRS]
        t.update(run_case(31 + ci, name, opt, n, min8, lrs, b1, b2, wd, span, special))
    g8.save_safetensors(OUT, t)
    for k in sorted(t):
        print(k, t[k].dtype, t[k].shape)
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
