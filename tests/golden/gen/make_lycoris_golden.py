#!/usr/bin/python3
"""Golden LyCORIS network file for the tiny SD1 test model (tests/unit/test_sample make-model) and the
ΔW of each of its modules, for tests/unit/test_lycoris.c and tests/cli/sample_lycoris.sh. Run once
by hand with Debian's /usr/bin/python3 (python3-torch 1.13); the output is committed.

LyCORIS itself is not installed: its weight functions are transcribed below from
KohakuBlueleaf/LyCORIS @ f49d30d670591ec8841d241d79aaa8449b30a715 (2025-10-04):
  lycoris/functional/loha.py   HadaWeight.forward ((w1u @ w1d) * (w2u @ w2d) * scale),
                               HadaWeightTucker.forward (einsum "i j ..., j r, i p -> p r ..."),
                               diff_weight (reshape to (O, I, *k))
  lycoris/modules/loha.py      get_weight(hada_w1_b, hada_w1_a, hada_w2_b, hada_w2_a[, t1, t2]),
                               scale = alpha / lora_dim, lora_dim = hada_w1_b rows; the forward adds
                               get_weight(shape) * scalar * multiplier (scalar = 1 after loading)
  lycoris/functional/lokr.py   make_kron (w1 unsqueezed to w2's rank, torch.kron, * scale)
  lycoris/functional/general.py rebuild_tucker (einsum "i j ..., i p, j r -> p r ...")
  lycoris/modules/lokr.py      get_weight: kron(w1 or w1_a @ w1_b, w2 or w2_a @ w2_b or
                               rebuild_tucker(t2, w2_a, w2_b)) * scale, .view(shape);
                               scale = alpha / lora_dim, 1 when both w1 and w2 are full matrices
                               ("use_w1 and use_w2": alpha = lora_dim)
  lycoris/modules/locon.py     up(mid(down(x))): ΔW = up · mid · down, scale alpha / lora_dim
The rank of a LoKr scale is taken as ComfyUI (comfy/weight_adapter/lokr.py) and A1111
(extensions-builtin/Lora/network_lokr.py) do: lokr_w2_b's rows when w2 is factored, else lokr_w1_b's;
LyCORIS' own loader agrees whenever the file was written by LyCORIS (one lora_dim per module).

Usage: make_lycoris_golden.py LAYERS   (LAYERS = output of `test_sample lora-layers m.safetensors m.toml`)
Writes tests/data/lycoris/lycoris_tiny.safetensors (the network file) and
tests/data/lycoris/lycoris_tiny_delta.safetensors (<module> → ΔW in the layer's shape, alpha/rank
scale included, multiplier 1).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_unet_golden import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "lycoris")




# ---- LyCORIS, transcribed -------------------------------------------------------------------------

def rebuild_tucker(t, wa, wb):
    return torch.einsum("i j ..., i p, j r -> p r ...", t, wa, wb)


def loha_diff(w1d, w1u, w2d, w2u, t1, t2, gamma):
    if t1 is not None and t2 is not None:
        R, I = w1d.shape
        R, O = w1u.shape
        R, R, *k = t1.shape
        r1 = torch.einsum("i j ..., j r, i p -> p r ...", t1, w1d, w1u)
        r2 = torch.einsum("i j ..., j r, i p -> p r ...", t2, w2d, w2u)
        result = r1 * r2 * gamma
    else:
        R, I, *k = w1d.shape
        O, R, *_ = w1u.shape
        w1d = w1d.reshape(w1d.size(0), -1)
        w1u = w1u.reshape(-1, w1u.size(1))
        w2d = w2d.reshape(w2d.size(0), -1)
        w2u = w2u.reshape(-1, w2u.size(1))
        result = ((w1u @ w1d) * (w2u @ w2d)) * gamma
    return result.reshape(O, I, *k)


def make_kron(w1, w2, scale):
    for _ in range(w2.dim() - w1.dim()):
        w1 = w1.unsqueeze(-1)
    w2 = w2.contiguous()
    rebuild = torch.kron(w1, w2)
    if scale != 1:
        rebuild = rebuild * scale
    return rebuild


def loha_module(sd, name, shape, alpha):
    """LohaModule.get_weight(shape) with scale = alpha / lora_dim (scalar 1, multiplier 1)"""
    w1a, w1b, w2a, w2b = (sd[f"{name}.hada_{k}"] for k in ("w1_a", "w1_b", "w2_a", "w2_b"))
    t1, t2 = sd.get(f"{name}.hada_t1"), sd.get(f"{name}.hada_t2")
    lora_dim = w1b.shape[0]
    scale = (lora_dim if alpha is None or alpha == 0 else alpha) / lora_dim
    if t1 is not None:
        w = loha_diff(w1b, w1a, w2b, w2a, t1, t2, scale)
    else:
        w = loha_diff(w1b, w1a, w2b, w2a, None, None, scale)
    return w.reshape(shape)


def lokr_module(sd, name, shape, alpha):
    g = lambda k: sd.get(f"{name}.lokr_{k}")
    w1, w1a, w1b, w2, w2a, w2b, t2 = g("w1"), g("w1_a"), g("w1_b"), g("w2"), g("w2_a"), g("w2_b"), g("t2")
    dim = None
    if w1 is None:
        dim = w1b.shape[0]
    if w2 is None:
        dim = w2b.shape[0]
    use_w1, use_w2 = w1 is not None, w2 is not None
    if use_w1 and use_w2 or alpha is None:
        scale = 1.0
    else:
        scale = (dim if alpha == 0 else alpha) / dim
    W1 = w1 if use_w1 else w1a @ w1b
    if use_w2:
        W2 = w2
    elif t2 is not None:
        W2 = rebuild_tucker(t2, w2a, w2b)
    else:
        W2 = w2a @ w2b
    return make_kron(W1, W2, scale).view(shape)


def locon_module(sd, name, shape, alpha):
    down, up, mid = sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"], sd.get(f"{name}.lora_mid.weight")
    r = down.shape[0]
    scale = (r if alpha is None or alpha == 0 else alpha) / r
    if mid is None:
        w = up.reshape(up.shape[0], -1) @ down.reshape(r, -1)
    else:   # up(mid(down(x))) as one conv: up [O,r,1,1], mid [r,r,kh,kw], down [r,I,1,1]
        w = torch.einsum("o p, p q k l, q i -> o i k l", up.reshape(up.shape[0], r), mid, down.reshape(r, -1))
    return (w * scale).reshape(shape)


# ---- the cases ------------------------------------------------------------------------------------

def main():
    layers = {}
    with open(sys.argv[1]) as f:
        for line in f:
            n, o, i, kh, kw = line.split()
            layers[n] = (int(o), int(i), int(kh), int(kw))
    torch.manual_seed(20261127)
    rn = lambda *s: torch.randn(*s, dtype=torch.float64)
    te, ub = "lora_te_text_model_encoder_layers_0_", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_"
    # (module, algo, builder of its tensors, alpha or None)
    cases = [
        (te + "self_attn_q_proj", "loha", lambda o, i, k: {"hada_w1_a": rn(o, 4), "hada_w1_b": rn(4, i),
                                                          "hada_w2_a": rn(o, 4), "hada_w2_b": rn(4, i)}, 2.0),
        (te + "self_attn_v_proj", "loha", lambda o, i, k: {"hada_w1_a": rn(o, 2), "hada_w1_b": rn(2, i),
                                                          "hada_w2_a": rn(o, 2), "hada_w2_b": rn(2, i)}, None),
        (te + "mlp_fc1", "lokr", lambda o, i, k: {"lokr_w1": rn(8, 4), "lokr_w2_a": rn(16, 2),
                                                 "lokr_w2_b": rn(2, 8)}, 1.0),   # 128 = 8*16, 32 = 4*8
        (ub + "attn1_to_q", "lokr", lambda o, i, k: {"lokr_w1": rn(4, 4), "lokr_w2": rn(8, 8)}, 7.0),  # scale 1
        (ub + "ff_net_0_proj", "lokr", lambda o, i, k: {"lokr_w1_a": rn(16, 3), "lokr_w1_b": rn(3, 4),
                                                       "lokr_w2_a": rn(16, 3), "lokr_w2_b": rn(3, 8)}, 1.5),
        (ub + "attn2_to_k", "locon", lambda o, i, k: {"lora_down.weight": rn(4, i), "lora_up.weight": rn(o, 4)}, 2.0),
        ("lora_unet_down_blocks_0_resnets_0_conv1", "loha",     # conv, not Tucker: w?_b [r, in*k*k]
         lambda o, i, k: {"hada_w1_a": rn(o, 3), "hada_w1_b": rn(3, i * 9), "hada_w2_a": rn(o, 3),
                          "hada_w2_b": rn(3, i * 9)}, 1.5),
        ("lora_unet_down_blocks_0_resnets_0_conv2", "loha",     # Tucker conv
         lambda o, i, k: {"hada_w1_a": rn(2, o), "hada_w1_b": rn(2, i), "hada_t1": rn(2, 2, 3, 3),
                          "hada_w2_a": rn(2, o), "hada_w2_b": rn(2, i), "hada_t2": rn(2, 2, 3, 3)}, 1.0),
        ("lora_unet_down_blocks_0_downsamplers_0_conv", "lokr",  # Tucker conv: 32 = 4*8
         lambda o, i, k: {"lokr_w1": rn(4, 4), "lokr_t2": rn(2, 2, 3, 3), "lokr_w2_a": rn(2, 8),
                          "lokr_w2_b": rn(2, 8)}, 1.0),
        ("lora_unet_up_blocks_1_resnets_0_conv2", "lokr",       # conv, not Tucker: w2_b [r, d*k*k]
         lambda o, i, k: {"lokr_w1": rn(4, 4), "lokr_w2_a": rn(8, 2), "lokr_w2_b": rn(2, 8 * 9)}, 3.0),
        ("lora_unet_up_blocks_1_resnets_1_conv2", "lokr",       # conv, full w2 [b, d, 3, 3], factored w1
         lambda o, i, k: {"lokr_w1_a": rn(4, 2), "lokr_w1_b": rn(2, 4), "lokr_w2": rn(8, 8, 3, 3)}, 1.0),
        ("lora_unet_down_blocks_1_resnets_0_conv1", "locon",    # LoCon 3x3 (kohya conv_dim)
         lambda o, i, k: {"lora_down.weight": rn(4, i, 3, 3), "lora_up.weight": rn(o, 4, 1, 1)}, 1.0),
        ("lora_unet_up_blocks_1_resnets_1_conv1", "locon",      # LoCon Tucker (lora_mid)
         lambda o, i, k: {"lora_down.weight": rn(3, i, 1, 1), "lora_mid.weight": rn(3, 3, 3, 3),
                          "lora_up.weight": rn(o, 3, 1, 1)}, 2.0),
    ]
    net, delta = {}, {}
    first = {"loha": "hada_w1_a", "lokr": None, "locon": "lora_up.weight"}
    for name, algo, build, alpha in cases:
        o, i, kh, kw = layers[name]
        shape = (o, i, kh, kw) if kh > 1 or name.endswith(("conv1", "conv2", "_conv")) else (o, i)
        t = build(o, i, kh)
        sd = {f"{name}.{k}": v for k, v in t.items()}
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float64)
        fn = {"loha": loha_module, "lokr": lokr_module, "locon": locon_module}[algo]
        # rescale one factor so that max |ΔW| = 0.04: visible in the tiny model's images, not destructive
        key = first[algo] or ("lokr_w1" if "lokr_w1" in t else "lokr_w1_a")
        d = fn(sd, name, shape, alpha)
        sd[f"{name}.{key}"] = sd[f"{name}.{key}"] * (0.04 / d.abs().max())
        sd = {k: v.float() for k, v in sd.items()}       # the file holds float32; ΔW from those values
        d = fn({k: v.double() for k, v in sd.items()}, name, shape, alpha)
        net.update(sd)
        delta[name] = d
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "lycoris_tiny.safetensors"), net)
    write_safetensors(os.path.join(OUT, "lycoris_tiny_delta.safetensors"), delta)
    print(f"{len(cases)} modules, {len(net)} tensors")


if __name__ == "__main__":
    main()
