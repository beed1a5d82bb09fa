#!/usr/bin/python3
"""Golden data for the SwinV2 WD tagger (lib/models/tagger_swinv2.c; tests/golden/
test_tagger_golden.c, tests/cli/tag.sh). Run once by hand with Debian's /usr/bin/python3
(python3-torch 1.13; timm is not needed); the outputs are committed under tests/data/tagger/.

Model: a plain-PyTorch transcription of timm's SwinTransformerV2 (timm/models/
swin_transformer_v2.py: window_partition, window_reverse, WindowAttention, SwinTransformerV2Block,
PatchMerging, SwinTransformerV2Stage, SwinTransformerV2 with pretrained_window_sizes 0, the
layout of timm >= 0.9 where the downsample sits at the start of stages 1..; timm.layers PatchEmbed
with output_fmt NHWC, Mlp, ClassifierHead avg) for the wd-swinv2-tagger-v3 configuration
(swinv2_base_window8_256 with img_size 448, window_size 14, act_layer gelu_tanh): module names
equal timm's, so the state_dict keys are the real ones (buffers non-persistent, as in timm).
Every LayerNorm is torch's default (eps 1e-5). The layout is that of timm v0.9.16 (read from its
tag) and of 1.0; 1.0 adds padding of maps the window does not divide (refused by the C model, as
0.9.16 fails there) and, from 1.0.3, the act_layer argument: 0.9.16 swallows the v3 config's
act_layer "gelu_tanh" and runs the exact GELU (golden.logits_gelu covers that form).
Tiny sizes: patch 4, embed dims 8/16/32, depths 2/2/2, heads 2/2/4, window 8, input 64, cpb MLP
hidden 512, 20 classes: stage 0 is 16x16 tokens in 2x2 windows of 8x8 with the odd block shifted
by 4 (the attention mask), stage 1 is 8x8 = the window (no shift), stage 2 is 4x4 < the window
(the window shrinks to 4, no shift). Input size and window in __metadata__ (img_size, window_size).
Weights random (the post-norm scales too, instead of timm's zero init; one logit_scale above
ln 100 to exercise the clamp), rounded to float16 and stored as F16; logits in float32 from the
rounded weights.
  -> swinv2_tiny.safetensors (the model), swinv2_golden.safetensors: golden.x [2,3,64,64],
     golden.logits [2,20] (gelu_tanh, the v3 config), golden.logits_gelu [2,20] (the same weights
     with the exact erf GELU: __metadata__ act_layer "gelu").
With FULL=1 in the environment it instead times and compares nothing itself but writes
/tmp/swinv2_full.safetensors + /tmp/swinv2_full_golden.safetensors: the real layout (embed 128,
depths 2/2/18/2, heads 4/8/16/32, window 14, input 448, 10861 classes) with random weights, for a
one-off check of the C model at full size (not committed).
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from make_tagger_golden import OUT, save_st


def window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def window_reverse(windows, ws, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


class WindowAttention(nn.Module):
    def __init__(self, dim, ws, heads, cpb_hidden=512):
        super().__init__()
        self.dim, self.ws, self.num_heads = dim, ws, heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(cpb_hidden, heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        # relative_coords_table (pretrained_window_size 0: normalised by ws - 1)
        rh = torch.arange(-(ws - 1), ws, dtype=torch.float32)
        rw = torch.arange(-(ws - 1), ws, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(rh, rw, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
        table[:, :, :, 0] /= (ws - 1)
        table[:, :, :, 1] /= (ws - 1)
        table *= 8
        table = torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / math.log2(8)
        self.register_buffer("relative_coords_table", table, persistent=False)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
        cf = torch.flatten(coords, 1)
        rel = (cf[:, :, None] - cf[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1), persistent=False)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, weight=self.qkv.weight, bias=qkv_bias)
        qkv = qkv.reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logit_scale = torch.clamp(self.logit_scale, max=math.log(1. / 0.01)).exp()
        attn = attn * logit_scale
        tab = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = tab[self.relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1).contiguous()
        attn = attn + 16 * torch.sigmoid(bias).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = attn.softmax(-1)
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerV2Block(nn.Module):
    def __init__(self, dim, res, heads, window, shift, act):
        super().__init__()
        # timm _calc_window_shift
        self.ws = res if res <= window else window
        self.shift = 0 if res <= self.ws else shift
        self.res = res
        self.attn = WindowAttention(dim, self.ws, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim, act)
        self.norm2 = nn.LayerNorm(dim)
        if self.shift:
            img_mask = torch.zeros((1, res, res, 1))
            cnt = 0
            for h in ((0, -self.ws), (-self.ws, -self.shift), (-self.shift, None)):
                for w in ((0, -self.ws), (-self.ws, -self.shift), (-self.shift, None)):
                    img_mask[:, h[0]:h[1], w[0]:w[1], :] = cnt
                    cnt += 1
            mw = window_partition(img_mask, self.ws).view(-1, self.ws * self.ws)
            m = mw.unsqueeze(1) - mw.unsqueeze(2)
            m = m.masked_fill(m != 0, float(-100.0)).masked_fill(m == 0, float(0.0))
        else:
            m = None
        self.register_buffer("attn_mask", m, persistent=False)

    def _attn(self, x):
        B, H, W, C = x.shape
        s = self.shift
        sx = torch.roll(x, shifts=(-s, -s), dims=(1, 2)) if s else x
        xw = window_partition(sx, self.ws).view(-1, self.ws * self.ws, C)
        aw = self.attn(xw, mask=self.attn_mask).view(-1, self.ws, self.ws, C)
        sx = window_reverse(aw, self.ws, H, W)
        return torch.roll(sx, shifts=(s, s), dims=(1, 2)) if s else sx

    def forward(self, x):
        B, H, W, C = x.shape
        x = x + self.norm1(self._attn(x))
        x = x.reshape(B, -1, C)
        x = x + self.norm2(self.mlp(x))
        return x.reshape(B, H, W, C)


class PatchMerging(nn.Module):
    def __init__(self, dim, out_dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x):
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.norm(self.reduction(x))


class SwinTransformerV2Stage(nn.Module):
    def __init__(self, dim, out_dim, res, depth, heads, window, downsample, act):
        super().__init__()
        out_res = res // 2 if downsample else res
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([
            SwinTransformerV2Block(out_dim, out_res, heads, window, 0 if i % 2 == 0 else window // 2, act)
            for i in range(depth)])

    def forward(self, x):
        x = self.downsample(x)
        for b in self.blocks:
            x = b(x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))   # NHWC


class ClassifierHead(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        return self.fc(x.mean((1, 2)))


class SwinTransformerV2(nn.Module):
    def __init__(self, img, patch, dims, depths, heads, window, classes, act):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dims[0])
        grid = img // patch
        layers, in_dim, scale = [], dims[0], 1
        for i in range(len(depths)):
            layers.append(SwinTransformerV2Stage(in_dim, dims[i], grid // scale, depths[i], heads[i], window,
                                                 i > 0, act))
            in_dim = dims[i]
            if i > 0:
                scale *= 2
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(in_dim)
        self.head = ClassifierHead(in_dim, classes)

    def forward(self, x):
        return self.head(self.norm(self.layers(self.patch_embed(x))))


def randomise(m, half=True):
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("logit_scale"):
                p.copy_(math.log(10) + 0.5 * torch.randn_like(p))
            elif p.dim() == 1 and name.endswith(".weight"):  # LayerNorm scales
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * (1.0 / math.sqrt(fan_in)))
            if half:
                p.copy_(p.half().float())


def set_act(m, act):
    for mod in m.modules():
        if isinstance(mod, Mlp):
            mod.act = act


def main():
    if os.environ.get("FULL"):
        return full()
    torch.manual_seed(2468)
    m = SwinTransformerV2(64, 4, (8, 16, 32), (2, 2, 2), (2, 2, 4), 8, 20, nn.GELU(approximate="tanh"))
    randomise(m)
    with torch.no_grad():   # one head's logit_scale above ln 100: the clamp
        m.layers[0].blocks[1].attn.logit_scale[1].fill_(5.0)
    m.eval()
    sd = {k: v.detach().half().numpy() for k, v in m.state_dict().items()}
    save_st(os.path.join(OUT, "swinv2_tiny.safetensors"), sd, {"img_size": "64", "window_size": "8", "format": "pt"})
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        y = m(x)
        set_act(m, nn.GELU())
        y2 = m(x)
    save_st(os.path.join(OUT, "swinv2_golden.safetensors"),
            {"golden.x": x.numpy(), "golden.logits": y.numpy(), "golden.logits_gelu": y2.numpy()})
    print("keys", len(sd), "logits", tuple(y.shape), float(y.abs().max()), "gelu vs tanh",
          float((y - y2).abs().max()))


def full():
    import time
    torch.manual_seed(1)
    m = SwinTransformerV2(448, 4, (128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), 14, 10861,
                          nn.GELU(approximate="tanh"))
    randomise(m, half=False)
    m.eval()
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    save_st("/tmp/swinv2_full.safetensors", sd, {"format": "pt"})
    x = torch.rand(1, 3, 448, 448, generator=torch.Generator().manual_seed(3)) * 2 - 1
    t = time.time()
    with torch.no_grad():
        y = m(x)
    print("keys", len(sd), "params", sum(v.numel() for v in m.parameters()), "torch forward %.2fs" % (time.time() - t))
    save_st("/tmp/swinv2_full_golden.safetensors", {"golden.x": x.numpy(), "golden.logits": y.numpy()})


if __name__ == "__main__":
    main()
