#!/usr/bin/python3
"""Golden outputs and gradients of one ldm ResBlock, two SpatialTransformers (SD1 conv proj,
SD2 linear proj) and two depthwise convolutions (Conv2d groups = channels) for tests/golden/test_nn_golden.c. Run once by hand with Debian's
/usr/bin/python3 (python3-torch 1.13); the outputs are committed.

The modules below are the CompVis/Stability ldm code (openaimodel.ResBlock, attention.py
SpatialTransformer / BasicTransformerBlock / CrossAttention / FeedForward / GEGLU), reduced to the
paths SD uses (no scale-shift norm, dropout 0, no checkpointing), so their state_dict keys are the
checkpoint's. Weights are random (zero_module layers too, or their gradients would be trivial).

Writes tests/data/nn/golden_<name>.safetensors holding, in float32:
  model.diffusion_model.<block>.<param>   the weights under their real key names
  golden.x, golden.emb | golden.context   inputs
  golden.r                                the loss weights: L = sum(r * y)
  golden.y                                the output
  golden.dx, golden.demb | golden.dcontext  dL/d inputs
  grad.model.diffusion_model.<block>.<param>  dL/d every weight
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "nn")


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def normalization(channels):
    return GroupNorm32(32, channels)


class ResBlock(nn.Module):
    def __init__(self, channels, emb_channels, out_channels):
        super().__init__()
        self.out_channels = out_channels
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(p=0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while len(emb_out.shape) < len(h.shape):
            emb_out = emb_out[..., None]
        h = h + emb_out
        h = self.out_layers(h)
        return self.skip_connection(x) + h


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        inner_dim = int(dim * mult)
        self.net = nn.Sequential(GEGLU(dim, inner_dim), nn.Dropout(0.0), nn.Linear(inner_dim, dim))

    def forward(self, x):
        return self.net(x)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = query_dim if context_dim is None else context_dim
        self.scale = dim_head ** -0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        h = self.heads
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(context)

        def split(t):  # 'b n (h d) -> (b h) n d'
            b, n, hd = t.shape
            return t.reshape(b, n, h, hd // h).permute(0, 2, 1, 3).reshape(b * h, n, hd // h)

        q, k, v = split(q), split(k), split(v)
        sim = torch.einsum('b i d, b j d -> b i j', q, k) * self.scale
        attn = sim.softmax(dim=-1)
        out = torch.einsum('b i j, b j d -> b i d', attn, v)
        bh, n, d = out.shape
        out = out.reshape(bh // h, h, n, d).permute(0, 2, 1, 3).reshape(bh // h, n, h * d)
        return self.to_out(out)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(query_dim=dim, heads=n_heads, dim_head=d_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(query_dim=dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context=context) + x
        x = self.ff(self.norm3(x)) + x
        return x


class SpatialTransformer(nn.Module):
    def __init__(self, in_channels, n_heads, d_head, depth, context_dim, use_linear):
        super().__init__()
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)
        if not use_linear:
            self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1, stride=1, padding=0)
        else:
            self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, n_heads, d_head, context_dim) for _ in range(depth)])
        if not use_linear:
            self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1, stride=1, padding=0)
        else:
            self.proj_out = nn.Linear(inner_dim, in_channels)
        self.use_linear = use_linear

    def forward(self, x, context):
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1).contiguous()
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context=context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


def write_safetensors(path, tensors):
    """Minimal safetensors writer (F32 only), in the reference's order: sorted by name."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].detach().cpu().numpy().astype('<f4'))
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def randomize(module, gen):
    for name, p in module.named_parameters():
        with torch.no_grad():
            if name.endswith("weight") and p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * (3.0 / fan_in) ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * (torch.rand(p.shape, generator=gen) * 2 - 1))
            else:
                p.copy_(0.3 * (torch.rand(p.shape, generator=gen) * 2 - 1))


def run(name, prefix, module, inputs, gen):
    randomize(module, gen)
    ins = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = module(*ins.values())
    r = torch.rand(y.shape, generator=gen) * 2 - 1
    (y * r).sum().backward()
    out = {}
    for k, p in module.named_parameters():
        out[prefix + k] = p
        out["grad." + prefix + k] = p.grad
    for k, v in ins.items():
        out["golden." + k] = v
        out["golden.d" + k] = v.grad
    out["golden.r"] = r
    out["golden.y"] = y
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "golden_%s.safetensors" % name)
    write_safetensors(path, out)
    print(path, os.path.getsize(path), "bytes; max|y| = %.4g" % y.abs().max().item())


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    rb = ResBlock(32, 16, 64)
    run("resblock", "model.diffusion_model.input_blocks.4.0.", rb,
        {"x": torch.rand(2, 32, 4, 3, generator=gen) * 2 - 1, "emb": torch.rand(2, 16, generator=gen) * 2 - 1}, gen)
    # SD1: conv proj, 2 heads of 16, depth 1; SD2: linear proj, 2 heads of 8, depth 2
    st1 = SpatialTransformer(32, 2, 16, 1, 24, use_linear=False)
    run("st_sd1", "model.diffusion_model.input_blocks.1.1.", st1,
        {"x": torch.rand(2, 32, 3, 4, generator=gen) * 2 - 1, "context": torch.rand(2, 5, 24, generator=gen) * 2 - 1}, gen)
    st2 = SpatialTransformer(32, 2, 8, 2, 24, use_linear=True)  # inner 16 != channels
    run("st_sd2", "model.diffusion_model.input_blocks.1.1.", st2,
        {"x": torch.rand(2, 32, 3, 4, generator=gen) * 2 - 1, "context": torch.rand(2, 5, 24, generator=gen) * 2 - 1}, gen)

    # depthwise convolutions (torch groups = channels): the ConvNeXt conv_dw 7x7 pad 3, and 3x3 stride 2 pad 1
    dw7 = nn.Conv2d(6, 6, 7, padding=3, groups=6)
    run("conv_dw7", "stages.0.blocks.0.conv_dw.", dw7, {"x": torch.rand(2, 6, 9, 8, generator=gen) * 2 - 1}, gen)
    dw3 = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)
    run("conv_dw3_s2", "dw.", dw3, {"x": torch.rand(2, 4, 7, 6, generator=gen) * 2 - 1}, gen)

if __name__ == "__main__":
    main()
