#!/usr/bin/python3
"""Golden data for tests/golden/test_unet_golden.c (run once by hand with Debian's /usr/bin/python3,
torch 1.13; outputs are committed under tests/data/golden/unet/).

A plain-PyTorch transcription of ldm's UNetModel (CompVis/stable-diffusion for SD1 and
Stability-AI/stablediffusion for SD2: ldm/modules/diffusionmodules/openaimodel.py and
ldm/modules/attention.py) with the exact module names, so state_dict keys equal the real ones.
Simplifications that do not change the math: only the options SD1/SD2 use (dims=2,
conv_resample, no scale-shift norm, no resblock_updown, no class conditioning, dropout 0); the
attention is the 'softmax' (einsum) CrossAttention; GroupNorm32's float() cast is dropped so the
whole network can run in float64 (the reference values are computed in float64 and stored as f32;
the sinusoidal timestep embedding is computed in float32 exactly as ldm does, then widened).

For each config (a tiny SD1-shaped and a tiny SD2-shaped UNet) it writes
  <name>.safetensors            weights as model.diffusion_model.<ldm key> (a single-file
                                checkpoint layout) plus golden.* tensors: x, t, context, y = unet(x,t,c),
                                dy (the output gradient: loss = sum(y * dy)), dx, dcontext and
                                golden.grad.<ldm key> for a few parameters
  <name>_diffusers.safetensors  (sd2_tiny only, to keep the data small) the same UNet weights under
                                Diffusers names (kohya's model_util.py unet_conversion_map,
                                generalised from its fixed 4 levels x 2 res blocks to the config's
                                levels and block counts)
  <name>_names.txt              every ldm key with its Diffusers name (same table)
Weights are random, rounded to f16 and stored as F16 (exact), so the files stay small.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "golden", "unet")

# ---------------------------------------------------------------------------------------------
# ldm transcription


class GroupNorm32(nn.GroupNorm):
    pass  # ldm: super().forward(x.float()).type(x.dtype) -- a no-op cast in a float32 model


def normalization(channels):
    return GroupNorm32(32, channels)


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepBlock(nn.Module):
    pass


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb, context=None):
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels, use_conv, dims=2, out_channels=None, padding=1):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.conv = nn.Conv2d(self.channels, self.out_channels, 3, padding=padding)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x)


class Downsample(nn.Module):
    def __init__(self, channels, use_conv, dims=2, out_channels=None, padding=1):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.op = nn.Conv2d(self.channels, self.out_channels, 3, stride=2, padding=padding)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(self, channels, emb_channels, dropout, out_channels=None):
        super().__init__()
        self.out_channels = out_channels or channels
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, self.out_channels))
        self.out_layers = nn.Sequential(normalization(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1))
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

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
    def __init__(self, dim, dim_out=None, mult=4, glu=False, dropout=0.):
        super().__init__()
        inner_dim = int(dim * mult)
        dim_out = dim_out or dim
        project_in = GEGLU(dim, inner_dim)  # glu=True (gated_ff) in SD
        self.net = nn.Sequential(project_in, nn.Dropout(dropout), nn.Linear(inner_dim, dim_out))

    def forward(self, x):
        return self.net(x)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = context_dim if context_dim is not None else query_dim
        self.scale = dim_head ** -0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

    def forward(self, x, context=None):
        h = self.heads
        q = self.to_q(x)
        context = context if context is not None else x
        k = self.to_k(context)
        v = self.to_v(context)

        def split(t):  # rearrange 'b n (h d) -> (b h) n d'
            b, n, hd = t.shape
            return t.reshape(b, n, h, hd // h).permute(0, 2, 1, 3).reshape(b * h, n, hd // h)

        q, k, v = map(split, (q, k, v))
        sim = torch.einsum('b i d, b j d -> b i j', q, k) * self.scale
        sim = sim.softmax(dim=-1)
        out = torch.einsum('b i j, b j d -> b i d', sim, v)
        bh, n, d = out.shape  # rearrange '(b h) n d -> b n (h d)'
        out = out.reshape(bh // h, h, n, d).permute(0, 2, 1, 3).reshape(bh // h, n, h * d)
        return self.to_out(out)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, n_heads, d_head, dropout=0., context_dim=None, gated_ff=True):
        super().__init__()
        self.attn1 = CrossAttention(query_dim=dim, heads=n_heads, dim_head=d_head, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout, glu=gated_ff)
        self.attn2 = CrossAttention(query_dim=dim, context_dim=context_dim, heads=n_heads, dim_head=d_head,
                                    dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context=context) + x
        x = self.ff(self.norm3(x)) + x
        return x


class SpatialTransformer(nn.Module):
    """SD1 (CompVis): 1x1 conv proj_in/proj_out; SD2 (Stability-AI, use_linear): nn.Linear."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0., context_dim=None, use_linear=False):
        super().__init__()
        self.in_channels = in_channels
        inner_dim = n_heads * d_head
        self.norm = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)  # Normalize()
        if not use_linear:
            self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1, stride=1, padding=0)
        else:
            self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner_dim, n_heads, d_head, dropout=dropout, context_dim=context_dim)
             for d in range(depth)])
        if not use_linear:
            self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1, stride=1, padding=0)
        else:
            # Stability-AI writes nn.Linear(in_channels, inner_dim) here; equal widths in every SD2 model
            assert in_channels == inner_dim
            self.proj_out = nn.Linear(in_channels, inner_dim)
        self.use_linear = use_linear

    def forward(self, x, context=None):
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1).contiguous()  # 'b c h w -> b (h w) c'
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context=context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()  # 'b (h w) c -> b c h w'
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class UNetModel(nn.Module):
    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 channel_mult, num_heads=-1, num_head_channels=-1, transformer_depth=1, context_dim=None,
                 use_linear_in_transformer=False, dropout=0):
        super().__init__()
        self.model_channels = model_channels
        if isinstance(num_res_blocks, int):
            self.num_res_blocks = len(channel_mult) * [num_res_blocks]
        else:
            self.num_res_blocks = num_res_blocks
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, time_embed_dim), nn.SiLU(),
                                        nn.Linear(time_embed_dim, time_embed_dim))
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        input_block_chans = [model_channels]
        ch = model_channels
        ds = 1

        def heads_of(ch):
            if num_head_channels == -1:
                return num_heads, ch // num_heads
            return ch // num_head_channels, num_head_channels

        for level, mult in enumerate(channel_mult):
            for nr in range(self.num_res_blocks[level]):
                layers = [ResBlock(ch, time_embed_dim, dropout, out_channels=mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    nh, dh = heads_of(ch)
                    layers.append(SpatialTransformer(ch, nh, dh, depth=transformer_depth, context_dim=context_dim,
                                                     use_linear=use_linear_in_transformer))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                out_ch = ch
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch, True, out_channels=out_ch)))
                ch = out_ch
                input_block_chans.append(ch)
                ds *= 2
        nh, dh = heads_of(ch)
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, time_embed_dim, dropout),
            SpatialTransformer(ch, nh, dh, depth=transformer_depth, context_dim=context_dim,
                               use_linear=use_linear_in_transformer),
            ResBlock(ch, time_embed_dim, dropout))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(self.num_res_blocks[level] + 1):
                ich = input_block_chans.pop()
                layers = [ResBlock(ch + ich, time_embed_dim, dropout, out_channels=model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    nh, dh = heads_of(ch)
                    layers.append(SpatialTransformer(ch, nh, dh, depth=transformer_depth, context_dim=context_dim,
                                                     use_linear=use_linear_in_transformer))
                if level and i == self.num_res_blocks[level]:
                    out_ch = ch
                    layers.append(Upsample(ch, True, out_channels=out_ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    def forward(self, x, timesteps, context):
        hs = []
        t_emb = timestep_embedding(timesteps, self.model_channels).to(x.dtype)
        emb = self.time_embed(t_emb)
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
# Diffusers names: kohya-ss/sd-scripts library/model_util.py convert_unet_state_dict_to_sd's
# tables, with 3 = layers_per_block + 1, range(2)/range(3) = the block counts, range(4) = the
# levels, "i < 3" = "down level i has attention", "i > 0" = "up level i has attention" and the
# upsampler index "1 if i == 0 else 2" = 1 + (up level i has attention).


def ldm_to_diffusers_map(cfg):
    L = len(cfg["channel_mult"])
    nrb = cfg["num_res_blocks"]
    attn = lambda level: (1 << level) in cfg["attention_resolutions"]
    conv = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
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


def to_diffusers(cfg, sd):
    """kohya's convert_unet_state_dict_to_sd, run backwards: hf name -> sd name, inverted."""
    conv, resnet, layer = ldm_to_diffusers_map(cfg)
    out = {}
    for k, v in sd.items():
        name = k
        for sd_name, hf_name in conv:
            if name.startswith(sd_name):
                name = hf_name + name[len(sd_name):]
                break
        else:
            for sd_part, hf_part in layer:
                if name.startswith(sd_part):
                    rest = name[len(sd_part):]
                    if ".resnets." in hf_part:
                        for s2, h2 in resnet:
                            if rest.startswith(s2 + "."):
                                rest = h2 + rest[len(s2):]
                                break
                    name = hf_part + rest
                    break
            else:
                raise KeyError(k)
        out[name] = v
    assert len(out) == len(sd)
    return out


# ---------------------------------------------------------------------------------------------
# safetensors writer (format as huggingface's: dtype-then-name order, header padded to 8)


def write_safetensors(path, tensors, half=()):
    """F32 tensors, except names starting with one of `half`: F16 (their values are exact in f16)."""
    names = sorted(tensors, key=lambda n: (not n.startswith(tuple(half)) if half else 0, n))
    header, blobs, off = {}, [], 0
    for n in names:
        h16 = bool(half) and n.startswith(tuple(half))
        t = tensors[n].detach().to(torch.float16 if h16 else torch.float32).contiguous()
        if h16:
            assert torch.equal(t.to(torch.float64), tensors[n].detach().to(torch.float64))
        b = t.numpy().tobytes()
        header[n] = {"dtype": "F16" if h16 else "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return os.path.getsize(path)


# ---------------------------------------------------------------------------------------------

CONFIGS = {
    # SD1-shaped: heads by count, 1x1-conv proj, depth-2 transformers, attention on the outer level
    # only (the upsampler of the inner level sits at index 1), channel change 32 -> 64, non-square latent
    "sd1_tiny": dict(cfg=dict(in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1,
                              attention_resolutions=[1], channel_mult=[1, 2], num_heads=2, num_head_channels=-1,
                              transformer_depth=2, context_dim=32, use_linear_in_transformer=False),
                     batch=2, h=16, w=12, seq=7, t=[999.0, 17.0], diffusers_file=False,
                     grads=["time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight",
                            "input_blocks.1.1.proj_in.weight", "input_blocks.1.1.transformer_blocks.1.attn2.to_k.weight",
                            "input_blocks.3.0.skip_connection.weight",
                            "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
                            "middle_block.2.out_layers.0.weight", "output_blocks.0.0.skip_connection.weight",
                            "output_blocks.1.1.conv.weight", "output_blocks.3.1.transformer_blocks.0.norm2.bias",
                            "output_blocks.1.0.emb_layers.1.bias", "out.0.weight", "out.2.weight"]),
    # SD2-shaped: head width fixed (num_head_channels), linear proj, attention on the inner level only
    # (the upsampler sits at index 2). All levels have 32 channels: with one channel per GroupNorm group
    # the time embedding has no effect here (sd1_tiny's 64-channel level covers it)
    "sd2_tiny": dict(cfg=dict(in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1,
                              attention_resolutions=[2], channel_mult=[1, 1], num_heads=-1, num_head_channels=16,
                              transformer_depth=1, context_dim=48, use_linear_in_transformer=True),
                     batch=2, h=8, w=8, seq=5, t=[500.0, 0.0], diffusers_file=True,
                     grads=["input_blocks.3.1.proj_in.weight",
                            "input_blocks.3.1.transformer_blocks.0.attn1.to_v.weight",
                            "input_blocks.2.0.op.weight", "input_blocks.1.0.in_layers.0.weight",
                            "middle_block.1.proj_out.weight", "middle_block.1.transformer_blocks.0.attn2.to_q.weight",
                            "output_blocks.1.2.conv.weight", "output_blocks.0.1.transformer_blocks.0.ff.net.2.weight",
                            "output_blocks.1.1.norm.weight",
                            "output_blocks.3.0.skip_connection.weight", "out.2.bias"]),
}


def randomize(model, gen):
    for name, p in model.named_parameters():
        with torch.no_grad():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.sqrt(3.0 / fan_in))
            elif "norm" in name and name.endswith("weight") or ".in_layers.0.weight" in name or \
                    ".out_layers.0.weight" in name or name == "out.0.weight":
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            # the checkpoint stores f16: make the float64 reference use exactly those values
            p.copy_(p.to(torch.float16).to(torch.float64))


# A larger configuration (not committed: ~100 MB): SD1-shaped with three levels, two res blocks,
# attention everywhere, context 768, 32x32 latents. `make_unet_golden.py --large DIR` writes
# DIR/sd1_large.safetensors; tests/golden/test_unet_golden.c checks it when SD_UNET_LARGE_GOLDEN=DIR.
LARGE = {
    "sd1_large": dict(cfg=dict(in_channels=4, model_channels=64, out_channels=4, num_res_blocks=2,
                               attention_resolutions=[1, 2, 4], channel_mult=[1, 2, 4], num_heads=8,
                               num_head_channels=-1, transformer_depth=1, context_dim=768,
                               use_linear_in_transformer=False),
                      batch=1, h=32, w=32, seq=77, t=[321.0], diffusers_file=False,
                      grads=["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.1.proj_in.weight",
                             "output_blocks.8.1.transformer_blocks.0.ff.net.2.weight", "out.2.weight",
                             "output_blocks.5.0.skip_connection.weight", "time_embed.0.weight",
                             "input_blocks.7.0.in_layers.2.weight", "output_blocks.2.2.conv.weight",
                             "input_blocks.3.0.op.weight", "middle_block.0.emb_layers.1.bias"]),
}


def main():
    global OUT
    configs = CONFIGS
    if len(sys.argv) == 3 and sys.argv[1] == "--large":
        OUT, configs = sys.argv[2], LARGE
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for name, spec in configs.items():
        gen = torch.Generator().manual_seed(1234 + len(name))
        cfg = spec["cfg"]
        model = UNetModel(**cfg).double()
        randomize(model, gen)
        B, H, W, S = spec["batch"], spec["h"], spec["w"], spec["seq"]
        f32 = lambda t: t.to(torch.float32).to(torch.float64)
        x = f32(torch.randn(B, cfg["in_channels"], H, W, generator=gen, dtype=torch.float64)).requires_grad_(True)
        c = f32(torch.randn(B, S, cfg["context_dim"], generator=gen, dtype=torch.float64)).requires_grad_(True)
        t = torch.tensor(spec["t"], dtype=torch.float32)
        y = model(x, t, c)
        dy = f32(torch.randn(y.shape, generator=gen, dtype=torch.float64))
        (y * dy).sum().backward()
        sd = {k: v for k, v in model.state_dict().items()}
        params = dict(model.named_parameters())
        out = {"model.diffusion_model." + k: v for k, v in sd.items()}
        out.update({"golden.x": x, "golden.t": t, "golden.context": c, "golden.y": y, "golden.dy": dy,
                    "golden.dx": x.grad, "golden.dcontext": c.grad})
        for g in spec["grads"]:
            # (a per-channel constant before a GroupNorm with one channel per group has gradient 0:
            # such parameters, e.g. every emb_layers bias of a 32-channel level, make no test)
            assert params[g].grad.abs().max() > 1e-3 * x.grad.abs().max(), g
            out["golden.grad." + g] = params[g].grad
        n1 = write_safetensors(os.path.join(OUT, name + ".safetensors"), out, half=("model.",))
        dif = to_diffusers(cfg, sd)
        n2 = 0
        if spec["diffusers_file"]:
            n2 = write_safetensors(os.path.join(OUT, name + "_diffusers.safetensors"), dif, half=("",))
        if configs is LARGE:
            print(f"{name}: {n1} bytes")
            continue
        # every ldm name with its Diffusers name, for the C name conversion
        names = {k: d for k, d in zip(sd.keys(), to_diffusers(cfg, {k: k for k in sd}).keys())}
        with open(os.path.join(OUT, name + "_names.txt"), "w") as f:
            for k, d in names.items():
                assert dif[d] is sd[k]
                f.write(f"{k} {d}\n")
        nparams = sum(p.numel() for p in model.parameters())
        print(f"{name}: {nparams} parameters, {len(sd)} tensors, max|y| {y.abs().max().item():.4g}, "
              f"files {n1} + {n2} bytes")
        total += n1 + n2
    print(f"total {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
