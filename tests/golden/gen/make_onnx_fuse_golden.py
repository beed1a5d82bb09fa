#!/usr/bin/python3
"""Golden data for the ONNX runtime's optimisation pass (lib/models/onnx_opt.c;
tests/golden/test_onnx_fuse.c). Run once by hand with Debian's /usr/bin/python3 (python3-onnx 1.12,
numpy); the outputs are committed under tests/data/onnx/.

fuse.onnx (opset 13): input X [1,8,8,3] (the pattern() of make_onnx_golden.py, 0..255), one case per
pattern of the pass, each flattened and concatenated into one output [1, n]; the reference is numpy in
float64. Cases that fuse (the count the C test expects per kind in brackets):
  A  decomposed LayerNorm with gamma and beta                                      [LAYERNORM]
  C  MatMul + Add(bias) + Erf GELU (Div by sqrt 2 form)                           [LINEAR, ACT]
  E  Tanh GELU with Mul(x, Mul(x, x)) on a Sub output (no MatMul before it)       [ACT]
  F  SiLU: Mul(x, Sigmoid(x))                                                      [ACT]
  G  Conv + BatchNormalization + Relu                                              [CONV]
  I  MatMul(Softmax(MatMul(Mul(q, scale), Transpose(k))), v): attention            [ATTENTION]
  K  decomposed LayerNorm over axis 1 of a 3-D value: fused at open, but the kernel only does the last
     axis, so the run falls back to the member nodes                             [LAYERNORM]
  L  MatMul + Add(bias) + Relu                                                     [LINEAR]
  M  initializer-only subgraphs (Transpose and Cast of constants) folded           [FOLDED]
and cases that must NOT fuse, because an intermediate value has another reader:
  B  decomposed LayerNorm whose Sub output (x - mean) is also added to the result
  D  MatMul + Add(bias) + Tanh GELU whose x^3 (Pow) is also read: the GELU stays as written, the bias
     still fuses into the MatMul                                                  [LINEAR]
  H  Conv + BatchNormalization whose Conv output is also read
  J  MatMul(q, Transpose(k)) whose transposed k is also read
  N  MatMul + Add(bias) whose MatMul output is also read
  P  the attention of I whose Softmax output is also read: no attention kernel, but the scaled MatMul
     with the transposed k still fuses                                            [MATMUL_T]
-> tests/data/onnx/fuse.onnx, tests/data/onnx/onnx_fuse_golden.safetensors: fuse.y [1, n] and
   fuse.stats (the counts per kind the pass must report, in the order of SD_ONNX_OPT_*).
"""
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_onnx_golden import OUT, pattern  # noqa: E402
from make_tagger_golden import save_st  # noqa: E402


def erf(a):
    return np.vectorize(math.erf)(a)


def main():
    rng = np.random.RandomState(77)
    inits, nodes, outs = [], [], []

    def const(name, a):
        a = np.asarray(a)
        inits.append(numpy_helper.from_array(a.astype(np.float32) if a.dtype.kind == "f" else a, name))
        return name

    def node(op, ins, out, **kw):
        nodes.append(helper.make_node(op, ins, [out], name=out, **kw))
        return out

    def collect(v):
        outs.append(node("Reshape", [v, const(v + "_flat", np.array([1, -1], np.int64))], v + "_r"))

    def sc(name, v):
        return const(name, np.array(v, np.float32))

    X = pattern(1, 8).astype(np.float64)
    # x0 = X / 128 -> tokens [1, 64, 3] -> h = tokens @ W0 [3, 16] (a plain MatMul: nothing to fuse)
    node("Mul", ["X", sc("s128", 1 / 128)], "x0")
    node("Reshape", ["x0", const("shp_tok", np.array([1, 64, 3], np.int64))], "tok")
    W0 = rng.randn(3, 16) * 0.7
    node("MatMul", ["tok", const("W0", W0)], "h")
    x0 = X / 128
    h = x0.reshape(1, 64, 3) @ W0.astype(np.float32).astype(np.float64)

    def ln_nodes(p, x, axes, gamma=None, beta=None, extra_d=False):
        node("ReduceMean", [x], p + "m", axes=axes)
        node("Sub", [x, p + "m"], p + "d")
        node("Pow", [p + "d", sc(p + "two", 2.0)], p + "p")
        node("ReduceMean", [p + "p"], p + "v", axes=axes)
        node("Add", [p + "v", sc(p + "eps", 1e-5)], p + "a")
        node("Sqrt", [p + "a"], p + "s")
        y = node("Div", [p + "d", p + "s"], p + "n")
        if gamma is not None:
            y = node("Mul", [y, const(p + "g", gamma)], p + "gy")
            y = node("Add", [y, const(p + "b", beta)], p + "by")
        if extra_d:
            y = node("Add", [y, p + "d"], p + "plus_d")
        return y

    def ln_ref(x, axis, gamma=None, beta=None):
        m = x.mean(axis=axis, keepdims=True)
        d = x - m
        y = d / np.sqrt((d * d).mean(axis=axis, keepdims=True) + 1e-5)
        if gamma is not None:
            y = y * gamma + beta
        return y, d

    def f32(a):
        return np.asarray(a, np.float32).astype(np.float64)

    ref = []
    # A: LayerNorm with gamma/beta (fuses)
    gA, bA = 1 + 0.2 * rng.randn(16), 0.1 * rng.randn(16)
    a = ln_nodes("A_", "h", [-1], gA, bA)
    yA, _ = ln_ref(h, -1, f32(gA), f32(bA))
    collect(a)
    ref.append(yA)
    # B: LayerNorm whose x - mean is also read (must not fuse)
    b = ln_nodes("B_", "h", [-1], extra_d=True)
    yB, dB = ln_ref(h, -1)
    collect(b)
    ref.append(yB + dB)
    # C: MatMul + bias + Erf GELU (fuses into one LINEAR with its ACT)
    W1, b1 = rng.randn(16, 32) * 0.3, 0.1 * rng.randn(32)
    node("MatMul", [a, const("W1", W1)], "C_mm")
    node("Add", [const("b1", b1), "C_mm"], "C_x")
    node("Div", ["C_x", sc("C_sqrt2", math.sqrt(2))], "C_u")
    node("Erf", ["C_u"], "C_e")
    node("Add", ["C_e", sc("C_one", 1.0)], "C_e1")
    node("Mul", ["C_x", "C_e1"], "C_m")
    c = node("Mul", ["C_m", sc("C_half", 0.5)], "C_y")
    xc = yA @ f32(W1) + f32(b1)
    yC = 0.5 * xc * (1 + erf(xc / math.sqrt(2)))
    collect(c)
    ref.append(yC)

    def tanh_gelu_ref(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    # D: MatMul + bias + Tanh GELU whose x^3 is also read (bias fuses, the GELU does not)
    W2, b2 = rng.randn(16, 8) * 0.3, 0.1 * rng.randn(8)
    node("MatMul", [a, const("W2", W2)], "D_mm")
    node("Add", ["D_mm", const("b2", b2)], "D_x")
    node("Pow", ["D_x", sc("D_three", 3.0)], "D_p")
    node("Mul", ["D_p", sc("D_c", 0.044715)], "D_w")
    node("Add", ["D_x", "D_w"], "D_s")
    node("Mul", ["D_s", sc("D_k", math.sqrt(2 / math.pi))], "D_u")
    node("Tanh", ["D_u"], "D_t")
    node("Add", ["D_t", sc("D_one", 1.0)], "D_t1")
    node("Mul", ["D_x", "D_t1"], "D_m")
    node("Mul", ["D_m", sc("D_half", 0.5)], "D_g")
    d = node("Add", ["D_g", "D_p"], "D_y")
    xd = yA @ f32(W2) + f32(b2)
    collect(d)
    ref.append(tanh_gelu_ref(xd) + xd ** 3)
    # E: Tanh GELU, Mul(x, Mul(x, x)) form and Mul(Mul(x, 0.5), .) tail, on a Sub output (fuses: ACT)
    node("Sub", ["h", sc("E_off", 0.25)], "E_x")
    node("Mul", ["E_x", "E_x"], "E_x2")
    node("Mul", ["E_x", "E_x2"], "E_x3")
    node("Mul", [sc("E_c", 0.044715), "E_x3"], "E_w")
    node("Add", ["E_w", "E_x"], "E_s")
    node("Mul", [sc("E_k", math.sqrt(2 / math.pi)), "E_s"], "E_u")
    node("Tanh", ["E_u"], "E_t")
    node("Add", [sc("E_one", 1.0), "E_t"], "E_t1")
    node("Mul", ["E_x", sc("E_half", 0.5)], "E_xh")
    e = node("Mul", ["E_xh", "E_t1"], "E_y")
    collect(e)
    ref.append(tanh_gelu_ref(h - 0.25))
    # F: SiLU (fuses: ACT)
    node("Sigmoid", ["h"], "F_s")
    f = node("Mul", ["h", "F_s"], "F_y")
    collect(f)
    ref.append(h / (1 + np.exp(-h)))
    # G: Conv + BatchNormalization + Relu on NCHW x0 (fuses: CONV)
    node("Transpose", ["x0"], "nchw", perm=[0, 3, 1, 2])
    Wg, Bg = rng.randn(4, 3, 3, 3) * 0.4, 0.1 * rng.randn(4)
    bn = [1 + 0.2 * rng.randn(4), 0.1 * rng.randn(4), 0.1 * rng.randn(4), 0.5 + rng.rand(4)]
    node("Conv", ["nchw", const("Wg", Wg), const("Bg", Bg)], "G_c", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    node("BatchNormalization", ["G_c"] + [const("G_bn%d" % i, bn[i]) for i in range(4)], "G_bn", epsilon=1e-3)
    g = node("Relu", ["G_bn"], "G_y")

    def conv_ref(x, w, bias):
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        o = np.zeros((1, w.shape[0], 8, 8))
        for m in range(w.shape[0]):
            for i in range(8):
                for j in range(8):
                    o[0, m, i, j] = (xp[0, :, i:i + 3, j:j + 3] * w[m]).sum() + bias[m]
        return o

    def bn_ref(x, p, eps):
        s, b, mu, var = [f32(q).reshape(1, -1, 1, 1) for q in p]
        return (x - mu) / np.sqrt(var + eps) * s + b

    xn = x0.transpose(0, 3, 1, 2)
    cg = conv_ref(xn, f32(Wg), f32(Bg))
    collect(g)
    ref.append(np.maximum(bn_ref(cg, bn, 1e-3), 0))
    # H: Conv + BatchNormalization whose Conv output is also read (must not fuse)
    Wh = rng.randn(2, 3, 3, 3) * 0.4
    bnh = [1 + 0.2 * rng.randn(2), 0.1 * rng.randn(2), 0.1 * rng.randn(2), 0.5 + rng.rand(2)]
    node("Conv", ["nchw", const("Wh", Wh)], "H_c", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    node("BatchNormalization", ["H_c"] + [const("H_bn%d" % i, bnh[i]) for i in range(4)], "H_bn")
    hh = node("Add", ["H_bn", "H_c"], "H_y")
    ch = conv_ref(xn, f32(Wh), np.zeros(2))
    collect(hh)
    ref.append(bn_ref(ch, bnh, 1e-5) + ch)
    # I: attention scores with a scale and a transposed k (fuses: MATMUL_T)
    node("Reshape", [a, const("shp_heads", np.array([1, 64, 2, 8], np.int64))], "I_q4")
    node("Transpose", ["I_q4"], "I_q", perm=[0, 2, 1, 3])
    node("Reshape", [c, const("shp_heads2", np.array([1, 64, 2, 16], np.int64))], "I_k4")
    node("Transpose", ["I_k4"], "I_k16", perm=[0, 2, 1, 3])
    node("Slice", ["I_k16", const("I_s0", np.array([0], np.int64)), const("I_s1", np.array([8], np.int64)),
                   const("I_sax", np.array([3], np.int64))], "I_k")
    node("Mul", ["I_q", sc("I_scale", 8 ** -0.5)], "I_qs")
    node("Transpose", ["I_k"], "I_kt", perm=[0, 1, 3, 2])
    node("MatMul", ["I_qs", "I_kt"], "I_sc")
    node("Softmax", ["I_sc"], "I_p", axis=-1)
    i_ = node("MatMul", ["I_p", "I_q"], "I_y")
    q = yA.reshape(1, 64, 2, 8).transpose(0, 2, 1, 3)
    k = yC.reshape(1, 64, 2, 16).transpose(0, 2, 1, 3)[..., :8]
    s = (q * 8 ** -0.5) @ k.transpose(0, 1, 3, 2)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    collect(i_)
    ref.append(p @ q)
    # J: a transposed k that is also read (must not fuse)
    node("Transpose", ["I_k"], "J_kt", perm=[0, 1, 3, 2])
    node("MatMul", ["I_q", "J_kt"], "J_sc")
    node("ReduceMean", ["J_kt"], "J_sum", axes=[2], keepdims=1)
    j = node("Add", ["J_sc", "J_sum"], "J_y")
    kt = k.transpose(0, 1, 3, 2)
    collect(j)
    ref.append(q @ kt + kt.mean(2, keepdims=True))
    # K: a LayerNorm over axis 1 of h [1,64,16]: fused at open, falls back at run time
    gK, bK = 1 + 0.2 * rng.randn(1, 1, 16), 0.1 * rng.randn(1, 1, 16)
    kk = ln_nodes("K_", "h", [1], gK, bK)
    yK, _ = ln_ref(h, 1, f32(gK), f32(bK))
    collect(kk)
    ref.append(yK)
    # L: MatMul + bias + Relu (fuses: LINEAR)
    W3, b3 = rng.randn(16, 8) * 0.3, 0.1 * rng.randn(8)
    node("MatMul", [a, const("W3", W3)], "L_mm")
    node("Add", ["L_mm", const("b3", b3)], "L_x")
    ll = node("Relu", ["L_x"], "L_y")
    collect(ll)
    ref.append(np.maximum(yA @ f32(W3) + f32(b3), 0))
    # M: a weight built from constants only (Transpose of an initializer, Cast of an int64 scale)
    W4t = rng.randn(8, 16) * 0.3
    node("Transpose", [const("W4t", W4t)], "M_w", perm=[1, 0])
    node("Cast", [const("M_i", np.array(3, np.int64))], "M_c", to=TensorProto.FLOAT)
    node("Mul", ["M_w", "M_c"], "M_w3")
    node("MatMul", [a, "M_w3"], "M_mm")
    b4 = 0.1 * rng.randn(8)
    mm = node("Add", ["M_mm", const("b4", b4)], "M_y")
    collect(mm)
    ref.append(yA @ (f32(W4t).T * 3) + f32(b4))
    # N: MatMul + bias whose MatMul output is also read (must not fuse)
    W5, b5 = rng.randn(16, 4) * 0.3, 0.1 * rng.randn(4)
    node("MatMul", [a, const("W5", W5)], "N_mm")
    node("Add", ["N_mm", const("b5", b5)], "N_x")
    n_ = node("Mul", ["N_x", "N_mm"], "N_y")
    xm = yA @ f32(W5)
    collect(n_)
    ref.append((xm + f32(b5)) * xm)

    # P: attention whose probabilities are also read (no ATTENTION; the scores' MatMul fuses: MATMUL_T)
    node("Mul", ["I_q", sc("P_scale", 0.3)], "P_qs")
    node("Transpose", ["I_k"], "P_kt", perm=[0, 1, 3, 2])
    node("MatMul", ["P_qs", "P_kt"], "P_sc")
    node("Softmax", ["P_sc"], "P_p", axis=-1)
    node("MatMul", ["P_p", "I_q"], "P_o")
    node("ReduceMean", ["P_p"], "P_pm", axes=[3], keepdims=1)
    pp = node("Add", ["P_o", "P_pm"], "P_y")
    s2 = (q * 0.3) @ k.transpose(0, 1, 3, 2)
    p2 = np.exp(s2 - s2.max(-1, keepdims=True))
    p2 /= p2.sum(-1, keepdims=True)
    collect(pp)
    ref.append(p2 @ q + p2.mean(3, keepdims=True))

    nodes.append(helper.make_node("Concat", outs, ["Y"], name="concat", axis=1))
    graph = helper.make_graph(nodes, "fuse", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, None])], inits)
    model = helper.make_model(graph, producer_name="make_onnx_fuse_golden",
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path = os.path.join(OUT, "fuse.onnx")
    onnx.save(model, path)
    y = np.concatenate([np.asarray(r, np.float64).reshape(-1) for r in ref]).astype(np.float32).reshape(1, -1)
    # FOLDED: M's Transpose, Cast and Mul; LAYERNORM: A, K; ACT: C, E, F; LINEAR: C, D, L, M; MATMUL_T: P;
    # CONV: G; ATTENTION: I
    stats = np.array([3, 2, 3, 4, 1, 1, 1], np.float32)
    save_st(os.path.join(OUT, "onnx_fuse_golden.safetensors"), {"fuse.y": y, "fuse.stats": stats})
    print("fuse", os.path.getsize(path), "bytes,", y.size, "values")


if __name__ == "__main__":
    main()
