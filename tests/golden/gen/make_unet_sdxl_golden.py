#!/usr/bin/python3
"""Golden data for test_sdxl_tiny_golden in tests/golden/test_unet_golden.c (run once by hand with
Debian's /usr/bin/python3, torch 1.13; outputs are committed under tests/data/golden/unet/).

A plain-PyTorch transcription of the SDXL base UNet (Stability-AI/generative-models
sgm/modules/diffusionmodules/openaimodel.py UNetModel as configured by sd_xl_base.yaml, equal to
kohya-ss/sd-scripts library/sdxl_original_unet.py): the SD1/SD2 building blocks of
make_unet_golden.py (ResBlock, SpatialTransformer with linear proj_in/proj_out, GEGLU feed-forward,
GroupNorm(32) eps 1e-5, timestep embedding [cos, sin] with max period 10000) plus
  - transformer_depth per level and transformer_depth_middle for the middle block,
  - no attention on level 0 (attention_resolutions [2, 4] = levels 1 and 2),
  - label_emb = Sequential(Sequential(Linear(adm, 4·mc), SiLU, Linear(4·mc, 4·mc))) on the
    vector input y, added to the time embedding: emb = time_embed(t_emb) + label_emb(y).
on a tiny SDXL-shaped config (model_channels 32, channel_mult [1, 2, 2], num_res_blocks 2,
transformer_depth [0, 1, 2], middle 3, head width 16, context 80, adm 40).

The weights are not stored: they come from a formula that the C test evaluates bit for bit
(sdxl_weight below; tests/golden/test_unet_golden.c sdxl_fill). That keeps the committed data
small (the two files below are ~60 KB together) while the model is ~2.5 M parameters.
  sdxl_tiny.safetensors   golden.x, golden.t, golden.context, golden.vec, golden.y = unet(x, t, c, vec),
                          golden.dy (loss = sum(y * dy)), golden.dx, golden.dcontext, golden.dvec,
                          golden.grad.<ldm key> for a few parameters, golden.w.<ldm key> for two
                          small tensors (checks the C weight formula)
  sdxl_tiny_names.txt     every ldm key with its Diffusers name (the SDXL UNet2DConditionModel
                          layout: diffusers' convert_original_stable_diffusion / kohya's
                          sdxl_model_util.py table, generalised to the config's block counts)
The reference runs in float64; inputs are float32 values.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_unet_golden import (Downsample, ResBlock, SpatialTransformer, TimestepEmbedSequential,  # noqa: E402
                              Upsample, normalization, timestep_embedding, write_safetensors)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "golden", "unet")


class SDXLUNetModel(nn.Module):
    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 channel_mult, num_head_channels, transformer_depth, transformer_depth_middle, context_dim,
                 adm_in_channels):
        super().__init__()
        self.model_channels = model_channels
        nrb = len(channel_mult) * [num_res_blocks]
        ted = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)))
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        chans = [model_channels]
        ch = model_channels
        ds = 1

        def st(ch, depth):
            return SpatialTransformer(ch, ch // num_head_channels, num_head_channels, depth=depth,
                                      context_dim=context_dim, use_linear=True)

        for level, mult in enumerate(channel_mult):
            for _ in range(nrb[level]):
                layers = [ResBlock(ch, ted, 0, out_channels=mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(st(ch, transformer_depth[level]))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, True, out_channels=ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, ted, 0), st(ch, transformer_depth_middle),
                                                    ResBlock(ch, ted, 0))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(nrb[level] + 1):
                ich = chans.pop()
                layers = [ResBlock(ch + ich, ted, 0, out_channels=model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(st(ch, transformer_depth[level]))
                if level and i == nrb[level]:
                    layers.append(Upsample(ch, True, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    def forward(self, x, timesteps, context, y):
        hs = []
        t_emb = timestep_embedding(timesteps, self.model_channels).to(x.dtype)
        emb = self.time_embed(t_emb)
        emb = emb + self.label_emb(y)
        h = x
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for module in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            h = module(h, emb, context)
        return self.out(h)


# ---------------------------------------------------------------------------------------------
# Diffusers names of the SDXL UNet (UNet2DConditionModel with down_block_types (DownBlock2D,
# CrossAttnDownBlock2D, CrossAttnDownBlock2D), up_block_types (CrossAttnUpBlock2D,
# CrossAttnUpBlock2D, UpBlock2D), addition_embed_type "text_time"): the table of kohya's
# sdxl_model_util.py / diffusers' conversion script, written for the config's block counts.


def ldm_to_diffusers_map(cfg):
    L = len(cfg["channel_mult"])
    nrb = cfg["num_res_blocks"]
    attn = lambda level: (1 << level) in cfg["attention_resolutions"]
    conv = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
            ("label_emb.0.0.", "add_embedding.linear_1."), ("label_emb.0.2.", "add_embedding.linear_2."),
            ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out.")]
    resnet = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
              ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]
    layer = []
    for i in range(L):
        for j in range(nrb):
            layer.append((f"input_blocks.{(nrb + 1) * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if attn(i):
                layer.append((f"input_blocks.{(nrb + 1) * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        up_level = L - 1 - i
        for j in range(nrb + 1):
            layer.append((f"output_blocks.{(nrb + 1) * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if attn(up_level):
                layer.append((f"output_blocks.{(nrb + 1) * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < L - 1:
            layer.append((f"input_blocks.{(nrb + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            layer.append((f"output_blocks.{(nrb + 1) * i + nrb}.{1 + attn(up_level)}.", f"up_blocks.{i}.upsamplers.0."))
    layer.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        layer.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return conv, resnet, layer


def diffusers_name(cfg, k):
    conv, resnet, layer = ldm_to_diffusers_map(cfg)
    for sd_name, hf_name in conv:
        if k.startswith(sd_name):
            return hf_name + k[len(sd_name):]
    for sd_part, hf_part in layer:
        if k.startswith(sd_part):
            rest = k[len(sd_part):]
            if ".resnets." in hf_part:
                for s2, h2 in resnet:
                    if rest.startswith(s2 + "."):
                        rest = h2 + rest[len(s2):]
                        break
            return hf_part + rest
    raise KeyError(k)


# ---------------------------------------------------------------------------------------------
# Weight formula (the C test computes the same values bit for bit): per tensor, a 32-bit seed
# = FNV-1a of its ldm name; element i gets u = (mix(seed + i·0x9E3779B9) >> 8) / 2^24 in [0, 1)
# (mix: the "lowbias32" integer hash), r = 2u - 1, and
#   weights with ≥ 2 dims:            r · sqrt(3 / fan_in)         (uniform, variance 1/fan_in)
#   GroupNorm/LayerNorm weights:      1 + 0.2 · r
#   everything else (biases):         0.1 · r
# computed in float64 and rounded to float32 (the values the reference then uses in float64).

M32 = 0xFFFFFFFF


def fnv1a(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & M32
    return h


def mix(x):
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(M32)
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & np.uint64(M32)
    x = x ^ (x >> np.uint64(16))
    return x


def is_norm_weight(name):
    return name.endswith(".weight") and ("norm" in name or ".in_layers.0." in name or ".out_layers.0." in name or
                                         name == "out.0.weight")


def sdxl_weight(name, shape):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    x = (np.uint64(fnv1a(name)) + i * np.uint64(0x9E3779B9)) & np.uint64(M32)
    u = (mix(x) >> np.uint64(8)).astype(np.float64) / 16777216.0
    r = 2.0 * u - 1.0
    if len(shape) >= 2:
        v = r * math.sqrt(3.0 / (n // shape[0]))
    elif is_norm_weight(name):
        v = 1.0 + 0.2 * r
    else:
        v = 0.1 * r
    return torch.from_numpy(v.astype(np.float32).astype(np.float64).reshape(shape))


# ---------------------------------------------------------------------------------------------

CFG = dict(in_channels=4, model_channels=32, out_channels=4, num_res_blocks=2, attention_resolutions=[2, 4],
           channel_mult=[1, 2, 2], num_head_channels=16, transformer_depth=[0, 1, 2], transformer_depth_middle=3,
           context_dim=80, adm_in_channels=40)
GRADS = ["label_emb.0.0.weight", "label_emb.0.2.bias", "time_embed.0.bias", "input_blocks.1.0.out_layers.3.bias",
         "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", "input_blocks.7.1.proj_in.bias",
         "input_blocks.8.1.transformer_blocks.1.ff.net.2.bias", "middle_block.1.transformer_blocks.2.norm1.weight",
         "middle_block.2.emb_layers.1.bias", "output_blocks.2.2.conv.bias",
         "output_blocks.1.1.transformer_blocks.1.attn1.to_out.0.bias", "output_blocks.5.2.conv.bias",
         "output_blocks.6.0.skip_connection.bias", "out.2.weight"]
WEIGHTS = ["label_emb.0.2.bias", "out.2.weight"]


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(4321)
    model = SDXLUNetModel(**CFG).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(sdxl_weight(name, tuple(p.shape)))
    B, H, W, S = 2, 8, 8, 5
    f32 = lambda t: t.to(torch.float32).to(torch.float64)
    x = f32(torch.randn(B, CFG["in_channels"], H, W, generator=gen, dtype=torch.float64)).requires_grad_(True)
    c = f32(torch.randn(B, S, CFG["context_dim"], generator=gen, dtype=torch.float64)).requires_grad_(True)
    vec = f32(torch.randn(B, CFG["adm_in_channels"], generator=gen, dtype=torch.float64)).requires_grad_(True)
    t = torch.tensor([999.0, 17.0], dtype=torch.float32)
    y = model(x, t, c, vec)
    dy = f32(torch.randn(y.shape, generator=gen, dtype=torch.float64))
    (y * dy).sum().backward()
    params = dict(model.named_parameters())
    out = {"golden.x": x, "golden.t": t, "golden.context": c, "golden.vec": vec, "golden.y": y, "golden.dy": dy,
           "golden.dx": x.grad, "golden.dcontext": c.grad, "golden.dvec": vec.grad}
    for g in GRADS:
        assert params[g].grad.abs().max() > 1e-3 * x.grad.abs().max(), g
        out["golden.grad." + g] = params[g].grad
    for w in WEIGHTS:
        out["golden.w." + w] = params[w]
    n1 = write_safetensors(os.path.join(OUT, "sdxl_tiny.safetensors"), out)
    sd = model.state_dict()
    names = [(k, diffusers_name(CFG, k)) for k in sd]
    assert len(set(d for _, d in names)) == len(names)
    with open(os.path.join(OUT, "sdxl_tiny_names.txt"), "w") as f:
        for k, d in names:
            f.write(f"{k} {d}\n")
    nparams = sum(p.numel() for p in model.parameters())
    print(f"sdxl_tiny: {nparams} parameters, {len(sd)} tensors, max|y| {y.abs().max().item():.4g}, "
          f"max|dvec| {vec.grad.abs().max().item():.4g}, file {n1} bytes")


if __name__ == "__main__":
    sys.exit(main())
