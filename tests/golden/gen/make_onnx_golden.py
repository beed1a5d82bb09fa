#!/usr/bin/python3
"""Golden data for the ONNX runtime (lib/io/onnx.c, lib/models/onnx_run.c; tests/golden/
test_onnx_golden.c, tests/cli/tag_onnx.sh). Run once by hand with Debian's /usr/bin/python3
(python3-torch 1.13, python3-onnx 1.12; no onnxruntime needed); the outputs are committed under
tests/data/onnx/.

1. torch-exported taggers, as SmilingWolf's v3 model.onnx files are built: the tiny timm-layout
   ConvNeXt tagger of tests/data/tagger (make_convnext_golden.py, weights from convnext_tiny.safetensors)
   and a smaller SwinV2 than swinv2_tiny (make_swinv2_golden.py's model with window 4, depths 2/1,
   written here as swinv2_w4.safetensors for the safetensors path), wrapped so that the graph takes
   NHWC float32 BGR 0..255 and does the scaling (x/127.5 - 1) and the sigmoid itself:
     convnext.onnx  opset 17 (LayerNormalization op), dynamic batch axis "batch"
     swinv2.onnx    opset 13 (LayerNorm decomposed to ReduceMean/Sub/Pow/Sqrt/Div), batch fixed to 1
   To keep the files small (shrink()), every float tensor that float16 represents exactly (the
   weights, stored as F16 in the safetensors) is stored as FLOAT16 and Cast back to float by a
   node, int64 ones as INT32 + Cast, and the names are shortened: the graph computes the same values.
   With VIT=1 the ViT tagger (tagger_tiny, 300 kB: not committed) is exported to /tmp/vit.onnx and its
   golden written to /tmp/onnx_golden_vit.safetensors instead (test_onnx_golden checks it when
   SD_ONNX_VIT=/tmp is set).
2. tf2onnx.onnx: a hand-built graph in the style tf2onnx makes of the Keras v1/v2 WD14 models:
   NHWC input [1,16,16,3] 0..255, (x-127.5)/127.5, Transpose to NCHW, Conv (3x3/2), BatchNormalization,
   depthwise Conv (group 8, auto_pad SAME_UPPER), dilated grouped Conv, AveragePool and
   GlobalAveragePool branch, Transpose back, Reshape whose shape comes from a
   Shape/Gather/Unsqueeze/Concat subgraph, a token-position term from Range/Cast/ConstantOfShape/
   Expand/Equal/Where, LayerNormalization decomposed into ReduceMean/Sub/Pow/Sqrt/Div, MatMul+Add,
   Erf GELU, a softmax self-attention (Transpose, MatMul, Softmax), a token roll with Slice/Concat,
   Keras MultiHeadAttention's Einsum nodes (abc,cde->abde; aecd,abcd->acbe; acbe,aecd->abcd),
   Split, ReduceMean over tokens, a one-operand Einsum (ab->ba) and an implicit-output one (ba,bc),
   Gemm (transB) and Sigmoid; its expected output computed here with numpy.
3. ops.onnx (opset 15): every other supported operator (Tile, Pad, MaxPool with ceil_mode,
   AveragePool with count_include_pad, GlobalMaxPool, the remaining unary ops, variadic
   Max/Min/Sum/Mean, Mod, comparisons and logic, the other reductions, LogSoftmax, Slice with a
   negative step, Gather with negative indices, Size, CastLike, 1-D dilated strided Conv, Gemm with
   transA/alpha/beta, broadcast batched MatMul, Split, Identity, Dropout, Squeeze without axes),
   each result flattened and concatenated into one output [1, n]; numpy reference.
-> tests/data/onnx/{convnext,swinv2,tf2onnx,ops}.onnx, swinv2_w4.safetensors and
   onnx_golden.safetensors: <name>.y (the torch / numpy output for the input pattern() makes, NHWC
   0..255), <name>.logits_st (convnext, swinv2: the timm model's logits on the same input as the
   safetensors path sees it, BGR planes x/127.5-1).
"""
import json
import math
import os
import struct
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tagger_golden import OUT as TAGGER, save_st  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "onnx")


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        dt = {"F16": np.float16, "F32": np.float32}[v["dtype"]]
        b, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[b:e], dtype=dt).reshape(v["shape"]).astype(np.float32).copy())
    return out


class Wrap(nn.Module):
    """NHWC BGR 0..255 in, probabilities out (what SmilingWolf's model.onnx files take and give)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return torch.sigmoid(self.m(x.permute(0, 3, 1, 2) / 127.5 - 1.0))


def pattern(n, size):
    """the test input (NHWC 0..255, integers), also computed by the C tests: no need to store it"""
    i = np.indices((n, size, size, 3), dtype=np.int64)
    return ((i[0] * 97 + i[1] * 31 + i[2] * 17 + i[3] * 71 + (i[1] * i[2]) % 13 * 11) % 256).astype(np.float32)


def shrink(path):
    """Smaller files computing the same values: float tensors (initializers and Constant nodes) that
    float16 holds exactly -> FLOAT16 initializer + Cast node; int64 ones that fit in int32 -> INT32 +
    Cast; doc strings and value_info dropped."""
    m = onnx.load(path)
    g = m.graph
    casts, keep = [], []

    def small(a, name):
        if a.size < 16:
            return None
        if a.dtype == np.float32 and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            return helper.make_tensor(name + "__f16", TensorProto.FLOAT16, a.shape, a.astype("<f2").tobytes(),
                                      raw=True), TensorProto.FLOAT
        if a.dtype == np.int64 and a.min() >= -2**31 and a.max() < 2**31:
            return helper.make_tensor(name + "__i32", TensorProto.INT32, a.shape, a.astype("<i4").tobytes(),
                                      raw=True), TensorProto.INT64
        return None

    for t in g.initializer:
        r = small(numpy_helper.to_array(t), t.name)
        if r:
            keep.append(r[0])
            casts.append(helper.make_node("Cast", [r[0].name], [t.name], to=r[1], name=t.name + "__cast"))
        else:
            keep.append(t)
    nodes = []
    for nd in g.node:
        nd.doc_string = ""
        if nd.op_type == "Constant" and nd.attribute[0].name == "value":
            r = small(numpy_helper.to_array(nd.attribute[0].t), nd.output[0])
            if r:
                keep.append(r[0])
                casts.append(helper.make_node("Cast", [r[0].name], [nd.output[0]], to=r[1], name=nd.output[0] + "__cast"))
                continue
        nodes.append(nd)
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.node[:]
    g.node.extend(casts + nodes)
    del g.value_info[:]
    m.doc_string = ""
    # short value and node names (torch's are long paths); graph inputs/outputs keep theirs
    keepn = {v.name for v in list(g.input) + list(g.output)}
    ren = {}

    def rn(x):
        if not x or x in keepn:
            return x
        if x not in ren:
            ren[x] = "v%d" % len(ren)
        return ren[x]

    for t in g.initializer:
        t.name = rn(t.name)
    for i, nd in enumerate(g.node):
        nd.name = "%s_%d" % (nd.op_type, i)
        nd.input[:] = [rn(x) for x in nd.input]
        nd.output[:] = [rn(x) for x in nd.output]
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return len(casts)


def export(name, model, size, opset, dynamic, x, out=OUT):
    w = Wrap(model).eval()
    path = os.path.join(out, name + ".onnx")
    kw = dict(input_names=["input"], output_names=["output"], opset_version=opset, do_constant_folding=True)
    if dynamic:
        kw["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    torch.onnx.export(w, torch.zeros(x.shape[0], size, size, 3), path, **kw)
    n = shrink(path)
    with torch.no_grad():
        y = w(x)
        logits = model(x.permute(0, 3, 1, 2) / 127.5 - 1.0)
    ops = sorted({nd.op_type for nd in onnx.load(path).graph.node})
    print(name, os.path.getsize(path), "bytes,", n, "f16 initializers, ops:", " ".join(ops))
    return y, logits


def taggers(golden):
    import make_convnext_golden as cg
    import make_swinv2_golden as sg
    import make_tagger_golden as vg

    m = cg.ConvNeXt((8, 16, 16, 32), (1, 1, 2, 1), 24, nn.GELU(approximate="tanh"))
    m.load_state_dict(read_st(os.path.join(TAGGER, "convnext_tiny.safetensors")))
    x = torch.from_numpy(pattern(2, 64))
    y, lg = export("convnext", m.eval(), 64, 17, True, x)
    golden.update({"convnext.y": y.numpy(), "convnext.logits_st": lg.numpy()})

    # a smaller SwinV2 than swinv2_tiny (window 4, depths 2/1: 16 windows in stage 0, shifted in its second block, 4 in stage 1), saved
    # as safetensors too, for the safetensors path
    torch.manual_seed(1357)
    m = sg.SwinTransformerV2(64, 4, (8, 16), (2, 1), (2, 2), 4, 24, nn.GELU(approximate="tanh"))
    sg.randomise(m)
    m.eval()
    save_st(os.path.join(OUT, "swinv2_w4.safetensors"), {k: v.detach().half().numpy() for k, v in m.state_dict().items()},
            {"img_size": "64", "window_size": "4", "format": "pt"})
    x = torch.from_numpy(pattern(1, 64))
    y, lg = export("swinv2", m, 64, 13, False, x)
    golden.update({"swinv2.y": y.numpy(), "swinv2.logits_st": lg.numpy()})

    if os.environ.get("VIT"):
        m = vg.VisionTransformer(img=64, patch=16, dim=64, depth=2, heads=4, hidden=256, classes=24)
        m.load_state_dict(read_st(os.path.join(TAGGER, "tagger_tiny.safetensors")))
        x = torch.from_numpy(pattern(2, 64))
        y, lg = export("vit", m.eval(), 64, 17, True, x, "/tmp")
        golden.update({"vit.y": y.numpy(), "vit.logits_st": lg.numpy()})


# ---- the tf2onnx-style graph ----------------------------------------------------------------

def erf(a):
    return np.vectorize(math.erf)(a.astype(np.float64)).astype(np.float32)


def conv_ref(x, w, b, stride, pads, dil, group):
    """x [N,C,H,W], w [M,C/g,kh,kw]; pads (t,l,b,r)"""
    N, C, H, W = x.shape
    M, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    Ho = (H + pads[0] + pads[2] - (kh - 1) * dil - 1) // stride + 1
    Wo = (W + pads[1] + pads[3] - (kw - 1) * dil - 1) // stride + 1
    y = np.zeros((N, M, Ho, Wo), np.float64)
    mg = M // group
    for m in range(M):
        gi = m // mg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, gi * cg:(gi + 1) * cg, i * dil:i * dil + stride * Ho:stride, j * dil:j * dil + stride * Wo:stride]
                y[:, m] += np.einsum("nchw,c->nhw", patch, w[m, :, i, j])
        y[:, m] += b[m]
    return y.astype(np.float32)


def tf2onnx_graph(golden):
    rng = np.random.default_rng(99)
    r = lambda *s, k=1.0: (rng.standard_normal(s) * k).astype(np.float32)  # noqa: E731
    C, T, HID, CLS = 8, 64, 16, 12
    W1, B1 = r(C, 3, 3, 3, k=0.3), r(C, k=0.1)
    bn_s, bn_b, bn_m, bn_v = 1 + r(C, k=0.2), r(C, k=0.1), r(C, k=0.1), (0.5 + rng.random(C)).astype(np.float32)
    Wd, Bd = r(C, 1, 3, 3, k=0.4), r(C, k=0.1)
    Wg, Bg = r(C, C // 2, 3, 3, k=0.3), r(C, k=0.1)
    ln_g, ln_b = 1 + r(C, k=0.2), r(C, k=0.1)
    M1, b1, M2, b2 = r(C, HID, k=0.4), r(HID, k=0.1), r(HID, C, k=0.3), r(C, k=0.1)
    Wq = r(C, C, k=0.3)
    We = r(C, 2, 4, k=0.1)
    Pm = r(C, C, k=0.2)
    Wh, Bh = r(CLS, C, k=0.5), r(CLS, k=0.2)
    pos_k = np.float32(0.01)
    inits = {"W1": W1, "B1": B1, "bn_s": bn_s, "bn_b": bn_b, "bn_m": bn_m, "bn_v": bn_v, "Wd": Wd, "Bd": Bd, "Wg": Wg,
             "Bg": Bg, "ln_g": ln_g, "ln_b": ln_b, "M1": M1, "b1": b1, "M2": M2, "b2": b2, "Wq": Wq, "We": We, "Pm": Pm, "Wh": Wh, "Bh": Bh,
             "c127": np.array(127.5, np.float32), "two": np.array(2.0, np.float32), "eps": np.array(1e-3, np.float32),
             "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
             "isq2": np.array(1 / math.sqrt(2), np.float32), "scale": np.array(1 / math.sqrt(C), np.float32),
             "pos_k": np.array(pos_k, np.float32), "i0": np.array([0], np.int64), "i1": np.array(1, np.int64),
             "i0s": np.array(0, np.int64), "shape_tail": np.array([-1, C], np.int64), "ax0": np.array([0], np.int64),
             "s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "send": np.array([T], np.int64),
             "ax1": np.array([1], np.int64), "ones_shape": np.array([1], np.int64), "split": np.array([4, 4], np.int64),
             "mshape": np.array([1, T, C], np.int64)}
    N = helper.make_node
    nodes = [
        N("Sub", ["input_1", "c127"], ["s"], name="scale/sub"),
        N("Div", ["s", "c127"], ["xs"], name="scale/div"),
        N("Transpose", ["xs"], ["xc"], perm=[0, 3, 1, 2], name="to_nchw"),
        N("Conv", ["xc", "W1", "B1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], name="stem/conv"),
        N("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1.001e-5, name="stem/bn"),
        N("Relu", ["bn"], ["r1"], name="stem/relu"),
        N("Conv", ["r1", "Wd", "Bd"], ["dw"], group=C, kernel_shape=[3, 3], auto_pad="SAME_UPPER", name="dwconv"),
        N("Conv", ["dw", "Wg", "Bg"], ["gc"], group=2, kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2],
          name="gconv"),
        N("AveragePool", ["gc"], ["ap"], kernel_shape=[2, 2], strides=[2, 2], name="branch/avgpool"),
        N("GlobalAveragePool", ["ap"], ["gap"], name="branch/gap"),
        N("Flatten", ["gap"], ["branch"], axis=1, name="branch/flatten"),
        N("Transpose", ["gc"], ["gh"], perm=[0, 2, 3, 1], name="to_nhwc"),
        N("Shape", ["gh"], ["shp"], name="tok/shape"),
        N("Gather", ["shp", "i0"], ["bsz"], axis=0, name="tok/gather"),
        N("Concat", ["bsz", "shape_tail"], ["newshape"], axis=0, name="tok/concat"),
        N("Reshape", ["gh", "newshape"], ["tok"], name="tok/reshape"),
        # position term: Range over the token count, Cast, * pos_k, masked by Where(Equal) on token 0
        N("Shape", ["tok"], ["tshp"], name="pos/shape"),
        N("Gather", ["tshp", "i1"], ["tcount"], axis=0, name="pos/gather"),
        N("Range", ["i0s", "tcount", "i1"], ["rng"], name="pos/range"),
        N("Cast", ["rng"], ["rngf"], to=TensorProto.FLOAT, name="pos/cast"),
        N("Mul", ["rngf", "pos_k"], ["posv"], name="pos/mul"),
        N("Equal", ["rng", "i0s"], ["is0"], name="pos/equal"),
        N("ConstantOfShape", ["ones_shape"], ["onev"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
          name="pos/ones"),
        N("Expand", ["onev", "tshp"], ["ones_full"], name="pos/expand"),
        N("Where", ["is0", "onev", "posv"], ["posw"], name="pos/where"),
        N("Unsqueeze", ["posw", "ax1"], ["posu"], name="pos/unsqueeze"),
        N("Mul", ["ones_full", "posu"], ["posfull"], name="pos/bcast"),
        N("Add", ["tok", "posfull"], ["t0"], name="pos/add"),
        # LayerNorm, decomposed
        N("ReduceMean", ["t0"], ["mu"], axes=[-1], keepdims=1, name="ln/mean"),
        N("Sub", ["t0", "mu"], ["xm"], name="ln/sub"),
        N("Pow", ["xm", "two"], ["sq"], name="ln/pow"),
        N("ReduceMean", ["sq"], ["var"], axes=[-1], keepdims=1, name="ln/var"),
        N("Add", ["var", "eps"], ["ve"], name="ln/add_eps"),
        N("Sqrt", ["ve"], ["sd"], name="ln/sqrt"),
        N("Div", ["xm", "sd"], ["xn"], name="ln/div"),
        N("Mul", ["xn", "ln_g"], ["xg"], name="ln/mul"),
        N("Add", ["xg", "ln_b"], ["ln"], name="ln/add"),
        # MLP with erf GELU
        N("MatMul", ["ln", "M1"], ["h0"], name="mlp/fc1"),
        N("Add", ["h0", "b1"], ["h1"], name="mlp/fc1_bias"),
        N("Mul", ["h1", "isq2"], ["h2"], name="gelu/div"),
        N("Erf", ["h2"], ["h3"], name="gelu/erf"),
        N("Add", ["h3", "one"], ["h4"], name="gelu/add"),
        N("Mul", ["h1", "h4"], ["h5"], name="gelu/mul"),
        N("Mul", ["h5", "half"], ["h6"], name="gelu/half"),
        N("MatMul", ["h6", "M2"], ["h7"], name="mlp/fc2"),
        N("Add", ["h7", "b2"], ["h8"], name="mlp/fc2_bias"),
        N("Add", ["t0", "h8"], ["t1"], name="res1"),
        # attention: softmax(q k^T / sqrt(C)) v with q = t1 Wq, k = v = t1
        N("MatMul", ["t1", "Wq"], ["q"], name="attn/q"),
        N("Transpose", ["t1"], ["kt"], perm=[0, 2, 1], name="attn/kT"),
        N("MatMul", ["q", "kt"], ["sc0"], name="attn/scores"),
        N("Mul", ["sc0", "scale"], ["sc"], name="attn/scale"),
        N("Softmax", ["sc"], ["pr"], axis=-1, name="attn/softmax"),
        N("MatMul", ["pr", "t1"], ["av"], name="attn/av"),
        # roll the tokens by one: Slice + Concat
        N("Slice", ["av", "s1", "send", "ax1"], ["rl_a"], name="roll/slice_a"),
        N("Slice", ["av", "s0", "s1", "ax1"], ["rl_b"], name="roll/slice_b"),
        N("Concat", ["rl_a", "rl_b"], ["rl"], axis=1, name="roll/concat"),
        N("Add", ["t1", "rl"], ["t2a"], name="res2"),
        # Keras MultiHeadAttention as tf2onnx leaves it: Einsum projections and scores (2 heads of 4)
        N("Einsum", ["t2a", "We"], ["mq"], equation="abc,cde->abde", name="mha/query/einsum"),
        N("Einsum", ["mq", "mq"], ["ms"], equation="aecd,abcd->acbe", name="mha/einsum"),
        N("Softmax", ["ms"], ["mp"], axis=-1, name="mha/softmax"),
        N("Einsum", ["mp", "mq"], ["mo"], equation="acbe,aecd->abcd", name="mha/einsum_1"),
        N("Reshape", ["mo", "mshape"], ["mo2"], name="mha/reshape"),
        N("Add", ["t2a", "mo2"], ["t2"], name="mha/add"),
        N("Split", ["t2", "split"], ["sa", "sb"], axis=2, name="split"),
        N("Tanh", ["sb"], ["sbt"], name="split/tanh"),
        N("Concat", ["sa", "sbt"], ["t3"], axis=2, name="split/concat"),
        N("ReduceMean", ["t3"], ["pooled"], axes=[1], keepdims=0, name="pool"),
        N("Add", ["pooled", "branch"], ["feat"], name="feat"),
        # one-operand and implicit-output Einsum: feat + (feat^T)^T Pm
        N("Einsum", ["feat"], ["featT"], equation="ab->ba", name="einsum_t"),
        N("Einsum", ["featT", "Pm"], ["featP"], equation="ba,bc", name="einsum_implicit"),
        N("Add", ["feat", "featP"], ["feat2"], name="feat2"),
        N("Gemm", ["feat2", "Wh", "Bh"], ["logits"], transB=1, name="head"),
        N("Sigmoid", ["logits"], ["predictions_sigmoid"], name="predictions_sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "tf2onnx_style",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 16, 16, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [1, CLS])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, producer_name="tf2onnx", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path = os.path.join(OUT, "tf2onnx.onnx")
    onnx.save(model, path)

    # numpy reference
    x = pattern(1, 16)
    xs = (x - 127.5) / 127.5
    xc = xs.transpose(0, 3, 1, 2)
    c1 = conv_ref(xc, W1, B1, 2, (1, 1, 1, 1), 1, 1)
    bn = (c1 - bn_m[None, :, None, None]) / np.sqrt(bn_v[None, :, None, None] + np.float32(1.001e-5)) * \
        bn_s[None, :, None, None] + bn_b[None, :, None, None]
    r1 = np.maximum(bn, 0)
    dw = conv_ref(r1, Wd, Bd, 1, (1, 1, 1, 1), 1, C)
    gc = conv_ref(dw, Wg, Bg, 1, (2, 2, 2, 2), 2, 2)
    ap = gc.reshape(1, C, 4, 2, 4, 2).mean((3, 5))
    branch = ap.mean((2, 3))
    tok = gc.transpose(0, 2, 3, 1).reshape(1, -1, C)
    rng_ = np.arange(T)
    posw = np.where(rng_ == 0, np.float32(1.0), rng_.astype(np.float32) * pos_k).astype(np.float32)
    t0 = tok + posw[:, None]
    mu = t0.mean(-1, keepdims=True)
    xm = t0 - mu
    ln = xm / np.sqrt((xm ** 2).mean(-1, keepdims=True) + np.float32(1e-3)) * ln_g + ln_b
    h1 = ln @ M1 + b1
    h6 = h1 * (erf(h1 / np.float32(math.sqrt(2))) + 1) * 0.5
    t1 = t0 + (h6 @ M2 + b2)
    sc = (t1 @ Wq) @ t1.transpose(0, 2, 1) / np.float32(math.sqrt(C))
    pr = np.exp(sc - sc.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    av = pr @ t1
    t2a = t1 + np.concatenate([av[:, 1:], av[:, :1]], 1)
    mq = np.einsum("abc,cde->abde", t2a, We)
    ms = np.einsum("aecd,abcd->acbe", mq, mq)
    mp = np.exp(ms - ms.max(-1, keepdims=True))
    mp /= mp.sum(-1, keepdims=True)
    t2 = t2a + np.einsum("acbe,aecd->abcd", mp, mq).reshape(1, T, C)
    t3 = np.concatenate([t2[:, :, :4], np.tanh(t2[:, :, 4:])], 2)
    feat = t3.mean(1) + branch
    feat2 = feat + feat @ Pm
    y = 1 / (1 + np.exp(-(feat2 @ Wh.T + Bh)))
    golden.update({"tf2onnx.y": y.astype(np.float32)})
    print("tf2onnx", os.path.getsize(path), "bytes, y", y.round(4))


def ops_graph(golden):
    """ops.onnx: the operators the other graphs leave out, each on a slice of the input, every
    result flattened and concatenated into one output; numpy reference."""
    H = 6
    N = helper.make_node
    rng = np.random.default_rng(11)
    Wc = (rng.standard_normal((4, 3, 3)) * 0.5).astype(np.float32)
    Ga = (rng.standard_normal((3, 4)) * 0.5).astype(np.float32)
    Gb = (rng.standard_normal((3, 5)) * 0.5).astype(np.float32)
    Gc = (rng.standard_normal((1, 5)) * 0.5).astype(np.float32)
    Ma = (rng.standard_normal((2, 1, 3, 4)) * 0.5).astype(np.float32)
    Mb = (rng.standard_normal((3, 4, 5)) * 0.5).astype(np.float32)
    inits = {"k64": np.array(64, np.float32), "k2": np.array(2, np.float32), "k03": np.array(0.3, np.float32),
             "k1": np.array(1, np.float32), "k0": np.array(0, np.float32), "k07": np.array(0.7, np.float32),
             "kneg": np.array(-0.4, np.float32), "flat": np.array([-1], np.int64),
             "reps": np.array([1, 2, 1, 1], np.int64), "pads": np.array([0, 1, 0, 0, 0, 0, 2, 0], np.int64),
             "padv": np.array(0.5, np.float32), "ax12": np.array([1, 2], np.int64),
             "sl_s": np.array([-1], np.int64), "sl_e": np.array([-100], np.int64), "sl_a": np.array([2], np.int64),
             "sl_p": np.array([-2], np.int64), "gidx": np.array([-1, 0], np.int64), "c1d": np.array([1, 3, 36], np.int64),
             "Wc": Wc, "Ga": Ga, "Gb": Gb, "Gc": Gc, "Ma": Ma, "Mb": Mb, "sh34": np.array([3, 4], np.int64)}
    outs = []

    def out(name):
        outs.append(name + "_f")
        return N("Reshape", [name, "flat"], [name + "_f"], name=name + "/flatten")

    nodes = [
        N("Div", ["input", "k64"], ["x0"], name="scale"),
        N("Sub", ["x0", "k2"], ["x"], name="shift"),                      # [1,6,6,3] in [-2, 2)
        N("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2], name="nchw"),    # [1,3,6,6]
        N("Tile", ["xc", "reps"], ["tile"], name="tile"), out("tile"),
        N("Pad", ["xc", "pads", "padv"], ["pad"], mode="constant", name="pad"), out("pad"),
        N("MaxPool", ["xc"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
          name="maxpool"), out("mp"),
        N("AveragePool", ["xc"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1,
          name="avgpool"), out("ap"),
        N("GlobalMaxPool", ["xc"], ["gmp"], name="gmp"), out("gmp"),
        N("LeakyRelu", ["x"], ["u1"], alpha=0.1, name="leaky"), out("u1"),
        N("Elu", ["x"], ["u2"], alpha=0.7, name="elu"), out("u2"),
        N("HardSigmoid", ["x"], ["u3"], alpha=0.3, beta=0.4, name="hsig"), out("u3"),
        N("HardSwish", ["x"], ["u4"], name="hswish"), out("u4"),
        N("Softplus", ["x"], ["u5"], name="softplus"), out("u5"),
        N("Abs", ["x"], ["ab"], name="abs"), N("Add", ["ab", "k1"], ["ab1"], name="abs1"),
        N("Log", ["ab1"], ["u6"], name="log"), out("u6"),
        N("Floor", ["x"], ["u7"], name="floor"), out("u7"),
        N("Ceil", ["x"], ["u8"], name="ceil"), out("u8"),
        N("Mul", ["x", "k2"], ["x2"], name="x2"), N("Round", ["x2"], ["u9"], name="round"), out("u9"),
        N("Sin", ["x"], ["u10"], name="sin"), out("u10"),
        N("Cos", ["x"], ["u11"], name="cos"), out("u11"),
        N("Sign", ["x"], ["u12"], name="sign"), out("u12"),
        N("Neg", ["x"], ["u13"], name="neg"), out("u13"),
        N("Mul", ["x", "x"], ["xx"], name="xx"), N("Add", ["xx", "k1"], ["xx1"], name="xx1"),
        N("Reciprocal", ["xx1"], ["u14"], name="recip"), out("u14"),
        N("Exp", ["x"], ["u15"], name="exp"), out("u15"),
        N("Clip", ["x", "kneg"], ["u16"], name="clip_min"), out("u16"),
        N("Max", ["x", "k03", "u13"], ["b1"], name="max3"), out("b1"),
        N("Min", ["x", "k03"], ["b2"], name="min"), out("b2"),
        N("Sum", ["x", "u13", "u7"], ["b3"], name="sum3"), out("b3"),
        N("Mean", ["x", "u7"], ["b4"], name="mean2"), out("b4"),
        N("Mod", ["x", "k07"], ["b5"], fmod=1, name="fmod"), out("b5"),
        N("Greater", ["x", "k0"], ["gt"], name="gt"), N("Less", ["x", "k1"], ["lt"], name="lt"),
        N("Not", ["lt"], ["nlt"], name="not"), N("And", ["gt", "nlt"], ["and"], name="and"),
        N("Where", ["and", "x", "u13"], ["w1"], name="where"), out("w1"),
        N("LessOrEqual", ["x", "kneg"], ["le"], name="le"), N("GreaterOrEqual", ["x", "k07"], ["ge"], name="ge"),
        N("Or", ["le", "ge"], ["or"], name="or"), N("Cast", ["or"], ["orf"], to=TensorProto.FLOAT, name="orf"),
        out("orf"),
        N("ReduceMax", ["xc"], ["r1"], axes=[1, 2], keepdims=0, name="rmax"), out("r1"),
        N("ReduceMin", ["xc"], ["r2"], axes=[3], keepdims=1, name="rmin"), out("r2"),
        N("Mul", ["x0", "k07"], ["xs"], name="xs"),
        N("ReduceProd", ["xs"], ["r3"], axes=[2], keepdims=0, name="rprod"), out("r3"),
        N("ReduceSumSquare", ["xc"], ["r4"], axes=[1], keepdims=0, name="rss"), out("r4"),
        N("ReduceL2", ["xc"], ["r5"], axes=[2, 3], keepdims=1, name="rl2"), out("r5"),
        N("ReduceSum", ["xc", "ax12"], ["r6"], keepdims=0, name="rsum"), out("r6"),
        N("ReduceMean", ["xc"], ["r7"], keepdims=1, name="rmean_all"),
        N("Squeeze", ["r7"], ["r7s"], name="squeeze_all"), out("r7s"),
        N("LogSoftmax", ["xc"], ["ls"], axis=1, name="logsoftmax"), out("ls"),
        N("Slice", ["xc", "sl_s", "sl_e", "sl_a", "sl_p"], ["sl"], name="slice_neg"), out("sl"),
        N("Gather", ["xc", "gidx"], ["ga"], axis=3, name="gather_neg"), out("ga"),
        N("Size", ["xc"], ["sz"], name="size"), N("CastLike", ["sz", "x"], ["szf"], name="castlike"), out("szf"),
        N("Reshape", ["xc", "c1d"], ["x1d"], name="to1d"),
        N("Conv", ["x1d", "Wc"], ["cv"], kernel_shape=[3], strides=[2], dilations=[2], pads=[1, 1], name="conv1d"),
        out("cv"),
        N("Identity", ["x"], ["id"], name="identity"), N("Dropout", ["id"], ["dr"], name="dropout"),
        N("Slice", ["dr", "sl_s", "sl_e", "sl_a", "sl_p"], ["drs"], name="slice_dr"),
        N("Reshape", ["drs", "flat"], ["drf"], name="drf"),
        N("Slice", ["drf", "k_zero", "k_twelve"], ["dr12"], name="slice12"),
        N("Reshape", ["dr12", "sh34"], ["g34"], name="g34"),
        N("Gemm", ["g34", "Gb", "Gc"], ["gm"], transA=1, alpha=0.5, beta=2.0, name="gemm"), out("gm"),
        N("MatMul", ["Ma", "Mb"], ["mm"], name="matmul_bcast"),
        N("Mul", ["mm", "u13_s"], ["mm2"], name="mm_x"), out("mm2"),
        N("Split", ["xc"], ["sp0", "sp1", "sp2"], axis=1, name="split3"),
        N("Sub", ["sp2", "sp0"], ["spd"], name="split_diff"), out("spd"),
    ]
    inits["k_zero"] = np.array([0], np.int64)
    inits["k_twelve"] = np.array([12], np.int64)
    nodes.insert(3, N("ReduceMean", ["x"], ["u13_s"], keepdims=0, name="scalar_mean"))
    nodes.append(N("Concat", outs, ["cat"], axis=0, name="concat_all"))
    nodes.append(N("Reshape", ["cat", "row"], ["output"], name="as_row"))
    inits["row"] = np.array([1, -1], np.int64)
    graph = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, H, H, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, "n"])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, producer_name="make_onnx_golden", opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, "ops.onnx"))

    # numpy
    x0 = pattern(1, H) / np.float32(64)
    x = x0 - np.float32(2)
    xc = x.transpose(0, 3, 1, 2)
    r = []
    r.append(np.tile(xc, (1, 2, 1, 1)))
    r.append(np.pad(xc, ((0, 0), (1, 0), (0, 2), (0, 0)), constant_values=0.5))

    def pool(a, kind):
        Ho = 4 if kind == "max" else 3   # ceil_mode (max): ceil((6+2-3)/2) + 1 = 4; its last window starts at 6 < 6+1
        out = np.zeros((1, 3, Ho, Ho), np.float64)
        for i in range(Ho):
            for j in range(Ho):
                vals, cnt = [], 0
                for ki in range(3):
                    for kj in range(3):
                        ii, jj = i * 2 - 1 + ki, j * 2 - 1 + kj
                        if ii < 6 + 1 and jj < 6 + 1:
                            cnt += 1
                        if 0 <= ii < 6 and 0 <= jj < 6:
                            vals.append(a[0, :, ii, jj])
                v = np.array(vals)
                out[0, :, i, j] = v.max(0) if kind == "max" else v.sum(0) / cnt
        return out.astype(np.float32)
    r.append(pool(xc, "max"))
    r.append(pool(xc, "avg"))
    r.append(xc.max((2, 3), keepdims=True))
    r.append(np.where(x >= 0, x, 0.1 * x))
    r.append(np.where(x >= 0, x, 0.7 * (np.exp(x) - 1)))
    r.append(np.clip(0.3 * x + 0.4, 0, 1))
    r.append(x * np.clip(x / 6 + 0.5, 0, 1))
    r.append(np.log1p(np.exp(x)))
    r.append(np.log(np.abs(x) + 1))
    r.append(np.floor(x))
    r.append(np.ceil(x))
    r.append(np.round(x * 2))
    r.append(np.sin(x))
    r.append(np.cos(x))
    r.append(np.sign(x))
    r.append(-x)
    r.append(1 / (x * x + 1))
    r.append(np.exp(x))
    r.append(np.maximum(x, -0.4))
    r.append(np.maximum(np.maximum(x, 0.3), -x))
    r.append(np.minimum(x, 0.3))
    r.append(x + -x + np.floor(x))
    r.append((x + np.floor(x)) / 2)
    r.append(np.fmod(x, np.float32(0.7)))
    r.append(np.where((x > 0) & ~(x < 1), x, -x))
    r.append(((x <= -0.4) | (x >= 0.7)).astype(np.float32))
    r.append(xc.max((1, 2)))
    r.append(xc.min(3, keepdims=True))
    r.append((x0 * np.float32(0.7)).prod(2))
    r.append((xc ** 2).sum(1))
    r.append(np.sqrt((xc.astype(np.float64) ** 2).sum((2, 3), keepdims=True)))
    r.append(xc.sum((1, 2)))
    r.append(np.array(xc.mean()))
    m = xc.max(1, keepdims=True)
    r.append(xc - m - np.log(np.exp(xc - m).sum(1, keepdims=True)))
    r.append(xc[:, :, ::-2, :])
    r.append(xc[:, :, :, [-1, 0]])
    r.append(np.array([xc.size], np.float32))
    x1d = xc.reshape(1, 3, 36)
    xp = np.pad(x1d, ((0, 0), (0, 0), (1, 1)))
    Lo = (36 + 2 - 5) // 2 + 1
    cv = np.zeros((1, 4, Lo), np.float64)
    for o in range(4):
        for l in range(Lo):
            cv[0, o, l] = sum(xp[0, c, l * 2 + k * 2] * Wc[o, c, k] for c in range(3) for k in range(3))
    r.append(cv)
    g34 = x[:, :, ::-2, :].reshape(-1)[:12].reshape(3, 4)
    r.append(0.5 * (g34.T @ Gb) + 2.0 * Gc)
    r.append((Ma @ Mb) * x.mean())
    r.append(xc[:, 2:3] - xc[:, 0:1])
    y = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in r]).astype(np.float32)
    golden["ops.y"] = y.reshape(1, -1)
    print("ops", os.path.getsize(os.path.join(OUT, "ops.onnx")), "bytes,", y.size, "values,",
          len(set(nd.op_type for nd in nodes)), "op types")


def main():
    os.makedirs(OUT, exist_ok=True)
    golden = {}
    taggers(golden)
    tf2onnx_graph(golden)
    ops_graph(golden)
    if not os.environ.get("VIT"):
        save_st(os.path.join(OUT, "onnx_golden.safetensors"), {k: np.ascontiguousarray(v) for k, v in golden.items()})
    else:
        save_st("/tmp/onnx_golden_vit.safetensors", {k: np.ascontiguousarray(v) for k, v in golden.items()})
        print("VIT=1: /tmp/vit.onnx and /tmp/onnx_golden_vit.safetensors written")


if __name__ == "__main__":
    main()
