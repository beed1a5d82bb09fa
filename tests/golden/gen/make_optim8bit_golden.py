#!/usr/bin/python3
"""Goldens for lib/train/optim8bit (tests/unit/test_optim8bit.c): bitsandbytes' AdamW8bit.

bitsandbytes is not installed here (and needs CUDA for its real kernels), so this is a literal
numpy float32 transcription of what AdamW8bit runs on a GPU, bitsandbytes 0.49.2 (commit
f0e6ca31b32c4744a9cee4e31610b25796cbf778; the same arithmetic from 0.44.0 to main 95f9af30):

  optim/adamw.py        AdamW8bit(Optimizer2State, "adam", optim_bits=8, min_8bit_size=4096)
  optim/optimizer.py    Optimizer2State.init_state: numel < min_8bit_size -> f32 state1/state2,
                        else uint8 state1 (qmap1 = create_dynamic_map(signed=True)) and state2
                        (qmap2 = create_dynamic_map(signed=False)), absmax1/2 of ceil(n/256) blocks,
                        all zeros; update_step: step += 1, optimizer_update_32bit or
                        optimizer_update_8bit_blockwise (gnorm_scale 1.0, percentile clipping off)
  functional.py         create_dynamic_map; scalars passed as ct.c_float, step as ct.c_int32
  csrc/ops.cu           BLOCKSIZE_2STATE 256, NUM_2STATE 1
  csrc/kernels.cu       kOptimizer32bit2State<float, ADAM>, kOptimizerStatic8bit2StateBlockwise
                        <float, ADAM, 256, 1>, quantize_2D

Every operation is one float32 numpy operation in the kernels' order (numpy never fuses). powf is
glibc's, called through ctypes (numpy's own float32 power may use SVML). bnb compiles the kernels
with nvcc --use_fast_math (approximate '/', sqrtf, powf; FMA contraction; flush to zero), which
no CPU reproduces bit for bit: this transcription, like lib/train/optim8bit.c, is the kernels'
order of operations in IEEE float (see lib/train/optim8bit.h).

The quantisation maps: create_dynamic_map is transcribed with torch.linspace replaced by the
scalar IEEE evaluation of torch >= 2.1's CPU linspace (start + step*i below the middle,
end - step*(k-1-i) above). Torch builds differ here by an ulp or two in ~45 entries (vectorised
linspace in torch <= 2.0, FMA contraction in some builds); the map torch 1.13 gives on this
machine is also written (qmap_*_torch) so the test can bound that difference.

Inputs are generated from an integer hash (the C test computes the same exact floats), so only
outputs are stored: tests/data/optim8bit/adamw8bit.safetensors.
Run by hand: /usr/bin/python3 tests/golden/gen/make_optim8bit_golden.py
"""
import ctypes
import json
import math
import os
import struct

import numpy as np
import torch

F = np.float32
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "optim8bit",
                   "adamw8bit.safetensors")

_libm = ctypes.CDLL("libm.so.6")
_libm.powf.restype = ctypes.c_float
_libm.powf.argtypes = [ctypes.c_float, ctypes.c_float]


def powf(x, y):
    return F(_libm.powf(float(x), float(y)))


def c_float(x):  # ctypes.c_float(python float): round to nearest float
    return F(ctypes.c_float(x).value)


# ---- quantisation maps ------------------------------------------------------------------------

def linspace01(k):
    start, end = F(0.1), F(1.0)
    step = (end - start) / F(k - 1)
    half = k // 2
    out = []
    for i in range(k):
        if i < half:
            out.append(start + step * F(i))
        else:
            out.append(end - step * F(k - 1 - i))
    return np.array(out, dtype=F)


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8, linspace=linspace01):
    # bitsandbytes/functional.py create_dynamic_map, with torch ops as float32 numpy ops
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    assert additional_items == 0
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = linspace(fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / F(2.0)
        scale = 10 ** (-(max_exponent_bits - 1) + i)       # Python int/float
        data += (F(scale) * means).tolist()                # torch: scalar rounded to float first
        if signed:
            data += (F(-scale) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return np.array(data, dtype=F)


def create_dynamic_map_torch(signed=True, max_exponent_bits=7, total_bits=8):
    # verbatim semantics of bnb's function, run by this machine's torch
    data = []
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    data.sort()
    return torch.tensor(data, dtype=torch.float32).numpy()


QMAP1 = create_dynamic_map(True)
QMAP2 = create_dynamic_map(False)


def quantize_2d(code, signed, x):
    """kernels.cu quantize_2D<SIGNED>, elementwise over a float32 array."""
    n = x.shape[0]
    pivot = np.full(n, 127, dtype=np.int64)
    upper_pivot = np.full(n, 255, dtype=np.int64)
    lower_pivot = np.zeros(n, dtype=np.int64)
    lower = np.full(n, F(-1.0) if signed else F(0.0), dtype=F)
    upper = np.full(n, F(1.0), dtype=F)
    val = np.full(n, code[127], dtype=F)
    i = 64
    while i > 0:
        gt = x > val
        lower_pivot = np.where(gt, pivot, lower_pivot)
        lower = np.where(gt, val, lower)
        upper_pivot = np.where(gt, upper_pivot, pivot)
        upper = np.where(gt, upper, val)
        pivot = np.where(gt, pivot + i, pivot - i)
        val = code[pivot]
        i >>= 1
    gt = x > val
    mid_up = (upper + val) * F(0.5)
    mid_lo = (lower + val) * F(0.5)
    res = np.where(gt, np.where(x > mid_up, upper_pivot, pivot), np.where(x < mid_lo, lower_pivot, pivot))
    return res.astype(np.uint8)


# ---- the updates ------------------------------------------------------------------------------

class Scalars:
    def __init__(self, lr, beta1, beta2, eps, wd, step):
        self.beta1, self.beta2 = c_float(beta1), c_float(beta2)
        self.eps, self.lr, self.wd = c_float(eps), c_float(lr), c_float(wd)
        self.omb1 = F(1.0) - self.beta1
        self.omb2 = F(1.0) - self.beta2
        fstep = F(step)
        c1 = F(1.0) - powf(self.beta1, fstep)
        self.c2 = np.sqrt(F(1.0) - powf(self.beta2, fstep))
        self.step_size = (-self.lr * self.c2) / c1
        self.decay = F(1.0) - self.lr * self.wd


def step32(s, p, g, m, v):
    # kOptimizer32bit2State ADAM (skip_zeros False, update_scale 1.0f)
    m[:] = m * s.beta1 + s.omb1 * g
    v[:] = v * s.beta2 + s.omb2 * (g * g)
    p[:] = p + (F(1.0) * s.step_size) * (m / (np.sqrt(v) + s.eps * s.c2))
    if s.wd > F(0.0):
        p[:] = p * s.decay


def step8(s, p, g, c1s, c2s, absmax1, absmax2):
    # kOptimizerStatic8bit2StateBlockwise ADAM, block by block
    n = p.shape[0]
    B = 256
    for b in range((n + B - 1) // B):
        i = b * B
        valid = min(B, n - i)
        gb = np.zeros(B, dtype=F)
        gb[:valid] = g[i:i + valid]
        k1 = np.full(B, 128, dtype=np.uint8)      # cub Load default for state1
        k2 = np.zeros(B, dtype=np.uint8)          # ... and state2
        k1[:valid] = c1s[i:i + valid]
        k2[:valid] = c2s[i:i + valid]
        finite = ~(np.isnan(gb) | np.isinf(gb))
        gz = np.where(finite, gb, F(0.0))
        v = QMAP2[k2] * absmax2[b]
        v = (v * s.beta2) + ((s.omb2 * gz) * gz)
        m = QMAP1[k1] * absmax1[b]
        m = (m * s.beta1) + (s.omb1 * gz)
        m = np.where(finite, m, F(0.0)).astype(F)
        v = np.where(finite, v, F(0.0)).astype(F)
        nmax1 = np.fmax.reduce(np.concatenate([[F(-np.finfo(F).max)], np.abs(m)]).astype(F))
        nmax2 = np.fmax.reduce(np.concatenate([[F(-np.finfo(F).max)], np.abs(v)]).astype(F))
        absmax1[b] = nmax1
        absmax2[b] = nmax2
        pv = p[i:i + valid]
        mv, vv, fv = m[:valid], v[:valid], finite[:valid]
        newp = pv + s.step_size * (mv / (np.sqrt(vv) + s.c2 * s.eps))
        if s.wd > F(0.0):
            newp = newp * s.decay
        p[i:i + valid] = np.where(fv, newp, pv)
        with np.errstate(invalid="ignore", divide="ignore"):
            q1 = quantize_2d(QMAP1, True, (mv / nmax1).astype(F))
            q2 = quantize_2d(QMAP2, False, (vv / nmax2).astype(F))
        fix = np.signbit(QMAP1[q1]) != np.signbit(mv)
        q1 = np.where(fix, np.where(mv > F(0.0), q1.astype(np.int64) + 1, q1.astype(np.int64) - 1) & 255,
                      q1).astype(np.uint8)
        c1s[i:i + valid] = q1
        c2s[i:i + valid] = q2


# ---- deterministic inputs (the C test computes the same floats) -------------------------------

M32 = 0xFFFFFFFF


def mix32(x):
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def hval(seed, i, lo_exp, span):
    """((h & 0xffff) - 32768) * 2^-(15 + lo_exp + (h >> 16) % span): exact in float32."""
    h = mix32(seed * 0x9E3779B1 + i)
    mant = (h & 0xFFFF) - 32768
    e = 15 + lo_exp + ((h >> 16) % span if span > 0 else 0)
    return F(math.ldexp(mant, -e))


def inputs(seed, n, step, span):
    """Initial parameters in [-1, 1); step gradients of magnitude < 2^-3 spread over `span`
    binades (a wide spread makes small v quantise to 0 while the sign fix keeps m nonzero: the
    8-bit update then jumps, as bnb's does)."""
    p0 = np.array([hval(seed, i, 0, 0) for i in range(n)], dtype=F) if step == 0 else None
    g = np.array([hval(seed + 1000 * step, i, 3, span) for i in range(n)], dtype=F)
    return p0, g


LRS = [1e-3, 9e-4, 7.5e-4, 5e-4, 2.5e-4, 1e-4]
CASES = [
    # name, numel, min_8bit_size, lr scale, betas, eps, weight_decay, gradient span, specials
    ("a", 1000, 4096, 1.0, (0.9, 0.999), 1e-8, 1e-2, 8, False),
    ("b", 5000, 4096, 1.0, (0.9, 0.999), 1e-8, 1e-2, 6, False),
    ("c", 4096, 4096, 1.0, (0.9, 0.99), 1e-6, 0.0, 12, True),
    ("d", 600, 512, 10.0, (0.8, 0.95), 1e-8, 0.1, 4, True),
]


def specials(name, n, step, g):
    """Tensor c: a block of zero gradients from the start, one from step 3 on, NaN / inf / -0.
    Tensor d: the partial last block all NaN at the last step (its real moments become 0, so the
    block's new absmax1 is the out-of-range lanes' qmap1[128]·absmax1·β1)."""
    if name == "d" and step == len(LRS):
        g[512:] = F(np.nan)
    if name != "c":
        return
    g[3 * 256:4 * 256] = 0.0
    if step >= 3:
        g[5 * 256:6 * 256] = 0.0
    if step == 1:
        g[103] = F(-0.0)
    if step == 2:
        g[100] = F(np.nan)
    if step == 4:
        g[101] = F(np.inf)
        g[102] = F(-np.inf)


def run_case(seed, name, n, min8, lrs, betas, eps, wd, span, special):
    p, _ = inputs(seed, n, 0, span)
    eight = n >= min8
    if eight:
        nb = (n + 255) // 256
        c1s = np.zeros(n, dtype=np.uint8)
        c2s = np.zeros(n, dtype=np.uint8)
        am1 = np.zeros(nb, dtype=F)
        am2 = np.zeros(nb, dtype=F)
    else:
        m = np.zeros(n, dtype=F)
        v = np.zeros(n, dtype=F)
    out = {}
    for step in range(1, len(LRS) + 1):
        _, g = inputs(seed, n, step, span)
        if special:
            specials(name, n, step, g)
        s = Scalars(lrs[step - 1], betas[0], betas[1], eps, wd, step)
        if eight:
            step8(s, p, g, c1s, c2s, am1, am2)
        else:
            step32(s, p, g, m, v)
        if step == 1 and name == "d":
            out[name + ".p1"] = p.copy()
    out[name + ".p"] = p.copy()
    if eight:
        out[name + ".state1"] = c1s
        out[name + ".state2"] = c2s
        out[name + ".absmax1"] = am1
        out[name + ".absmax2"] = am2
    else:
        out[name + ".state1"] = m
        out[name + ".state2"] = v
    return out


def save_safetensors(path, tensors):
    # the reference layout: tensors sorted by dtype alignment (desc) then name
    order = {np.dtype(np.float32): ("F32", 0), np.dtype(np.uint8): ("U8", 1)}
    names = sorted(tensors, key=lambda k: (order[tensors[k].dtype][1], k))
    header, blobs, off = {}, [], 0
    for k in names:
        a = np.ascontiguousarray(tensors[k])
        b = a.tobytes()
        header[k] = {"dtype": order[a.dtype][0], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    t = {"qmap_signed": QMAP1, "qmap_unsigned": QMAP2,
         "qmap_signed_torch": create_dynamic_map_torch(True),
         "qmap_unsigned_torch": create_dynamic_map_torch(False)}
    for ci, (name, n, min8, lrscale, betas, eps, wd, span, special) in enumerate(CASES):
        lrs = [lr * lrscale for lr in LRS]
        t.update(run_case(17 + ci, name, n, min8, lrs, betas, eps, wd, span, special))
    save_safetensors(OUT, t)
    for k in sorted(t):
        print(k, t[k].dtype, t[k].shape)
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
