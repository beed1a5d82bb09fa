#!/usr/bin/python3
"""Golden data for the EVA02 WD tagger (lib/models/tagger_eva02.c; tests/golden/
test_tagger_golden.c, tests/cli/tag.sh). Run once by hand with Debian's /usr/bin/python3
(python3-torch 1.13); the outputs are committed under tests/data/tagger/.

Model: a plain-PyTorch transcription of timm's Eva (timm v0.9.16 timm/models/eva.py: EvaAttention
with qkv_fused False, EvaBlock, Eva.forward_features / forward_head; timm/layers/mlp.py SwiGLU;
timm/layers/pos_embed_sincos.py freq_bands, build_fourier_pos_embed, build_rotary_pos_embed,
RotaryEmbeddingCat, rot, apply_rot_embed_cat) for the wd-eva02-large-tagger-v3 configuration
(eva02_large_patch14_448 with img_size 448, ref_feat_shape [32,32]): class token, absolute
pos_embed over cls + patches, 2-D RoPE ('lang' frequencies: in_pixels False, temperature 10000,
grid scaled by ref_feat_shape / feat_shape) on the patch tokens of q and k (not the class
token), separate q/k/v projections (k without bias), SwiGLU MLP with its sub-LayerNorm
(swiglu_mlp + scale_mlp: fc1_g, fc1_x, SiLU(gate) * x, norm, fc2), no layer scale
(init_values None), LayerNorm eps 1e-6 everywhere, global_pool 'avg' over the patch tokens
(class token excluded) -> fc_norm -> head. Module names equal timm's, so the state_dict keys are
the real ones; the RoPE table is a non-persistent buffer (not in the file), as in timm.
Tiny sizes: width 32, 2 heads (head width 16: 4 frequency bands), depth 2, MLP int(32*4*2/3) =
85, patch 8, input 32 (a 4x4 grid), ref_feat_shape (3,3) (so the grid scaling is exercised:
positions 0, 0.75, 1.5, 2.25), 20 classes. __metadata__: num_heads "2", ref_feat_shape "3,3"
(neither is in the shapes). Weights random (cls_token and pos_embed larger than timm's init so
they matter), rounded to float16 and stored as F16; logits in float32 from the rounded weights.
  -> eva02_tiny.safetensors (the model), eva02_golden.safetensors: golden.x [2,3,32,32],
     golden.logits [2,20], golden.rope [16,32] (the RoPE table: sin | cos, as timm builds it),
     golden.logits_ref4 [2,20] (the same weights with ref_feat_shape = the grid, 4x4: the
     default when the metadata has none, as in wd-eva02-large-tagger-v3).
With --full (not committed): eva02_large_patch14_448 at full size (width 1024, depth 24,
16 heads, 10861 classes, ref 32x32) with random F32 weights -> /tmp/eva02_large_random.safetensors
and /tmp/eva02_large_golden.safetensors (one image) for a one-off check of the C model.
"""
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from make_tagger_golden import OUT, save_st


# ---- timm.layers.pos_embed_sincos (v0.9.16), 'lang' branch -------------------------------------

def freq_bands(num_bands, temperature=10000., step=2):
    exp = torch.arange(0, num_bands, step, dtype=torch.int64).to(torch.float32) / num_bands
    return 1. / (temperature ** exp)


def build_fourier_pos_embed(feat_shape, num_bands, temperature=10000., ref_feat_shape=None):
    bands = freq_bands(num_bands, temperature=temperature, step=1)
    t = [torch.arange(s, dtype=torch.int64).to(torch.float32) for s in feat_shape]
    if ref_feat_shape is not None:
        t = [x / f * r for x, f, r in zip(t, feat_shape, ref_feat_shape)]
    grid = torch.stack(torch.meshgrid(t, indexing="ij"), dim=-1)
    grid = grid.unsqueeze(-1)
    pos = grid * bands
    return pos.sin(), pos.cos()


def build_rotary_pos_embed(feat_shape, dim, ref_feat_shape):
    sin_emb, cos_emb = build_fourier_pos_embed(feat_shape, num_bands=dim // 4, ref_feat_shape=ref_feat_shape)
    n = feat_shape[0] * feat_shape[1]
    sin_emb = sin_emb.reshape(n, -1).repeat_interleave(2, -1)
    cos_emb = cos_emb.reshape(n, -1).repeat_interleave(2, -1)
    return sin_emb, cos_emb


def rot(x):
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def apply_rot_embed_cat(x, emb):
    sin_emb, cos_emb = emb.tensor_split(2, -1)
    return x * cos_emb + rot(x) * sin_emb


# ---- timm.models.eva -----------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class EvaAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=True)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope):
        B, N, C = x.shape
        q = self.q_proj(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        k = self.k_proj(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        v = self.v_proj(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        q = torch.cat([q[:, :, :1, :], apply_rot_embed_cat(q[:, :, 1:, :], rope)], 2).type_as(v)
        k = torch.cat([k[:, :, :1, :], apply_rot_embed_cat(k[:, :, 1:, :], rope)], 2).type_as(v)
        x = F.scaled_dot_product_attention(q, k, v) if hasattr(F, "scaled_dot_product_attention") else \
            ((q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden)
        self.fc1_x = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x_gate = self.fc1_g(x)
        x = self.fc1_x(x)
        x = self.act(x_gate) * x
        x = self.norm(x)
        return self.fc2(x)


class EvaBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EvaAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x, rope):
        x = x + self.attn(self.norm1(x), rope=rope)
        x = x + self.mlp(self.norm2(x))
        return x


class Eva(nn.Module):
    def __init__(self, img, patch, dim, depth, heads, mlp_ratio, classes, ref):
        super().__init__()
        g = img // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, g * g + 1, dim))
        self.set_rope(g, dim // heads, ref)
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.ModuleList([EvaBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.Identity()
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def set_rope(self, g, head_dim, ref):
        # RotaryEmbeddingCat(head_dim, in_pixels=False, feat_shape=grid, ref_feat_shape=ref)
        self.register_buffer("rope", torch.cat(build_rotary_pos_embed([g, g], head_dim, ref), -1), persistent=False)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x, rope=self.rope)
        x = self.norm(x)
        x = x[:, 1:].mean(dim=1)
        x = self.fc_norm(x)
        return self.head(x)


def randomise(m):
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in ("cls_token", "pos_embed"):
                p.copy_(0.5 * torch.randn_like(p))
            elif p.dim() == 1 and name.endswith(".weight"):  # LayerNorm scales
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * (1.5 / math.sqrt(fan_in)))


def tiny():
    torch.manual_seed(2468)
    m = Eva(img=32, patch=8, dim=32, depth=2, heads=2, mlp_ratio=4 * 2 / 3, classes=20, ref=(3, 3))
    randomise(m)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.half().float())  # stored as F16
    m.eval()
    sd = {k: v.detach().half().numpy() for k, v in m.state_dict().items()}
    save_st(os.path.join(OUT, "eva02_tiny.safetensors"), sd,
            {"num_heads": "2", "ref_feat_shape": "3,3", "format": "pt"})
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        y = m(x)
        rope = m.rope.clone()
        m.set_rope(4, 16, (4, 4))
        y4 = m(x)
    save_st(os.path.join(OUT, "eva02_golden.safetensors"),
            {"golden.x": x.numpy(), "golden.logits": y.numpy(), "golden.rope": rope.numpy(),
             "golden.logits_ref4": y4.numpy()})
    print("keys", len(sd), "logits", tuple(y.shape), float(y.abs().max()), "ref3 vs ref4",
          float((y - y4).abs().max()))


def full():
    torch.manual_seed(99)
    torch.set_num_threads(2)
    m = Eva(img=448, patch=14, dim=1024, depth=24, heads=16, mlp_ratio=4 * 2 / 3, classes=10861, ref=(32, 32))
    randomise(m)
    m.eval()
    sd = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    print("tensors", len(sd), "params", sum(v.size for v in sd.values()))
    save_st("/tmp/eva02_large_random.safetensors", sd, {"format": "pt"})
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, 448, 448, generator=g) * 2 - 1
    t = time.time()
    with torch.no_grad():
        y = m(x)
    print("pytorch forward %.1f s" % (time.time() - t), "logits", float(y.abs().max()))
    save_st("/tmp/eva02_large_golden.safetensors", {"golden.x": x.numpy(), "golden.logits": y.numpy()})


if __name__ == "__main__":
    full() if "--full" in sys.argv else tiny()
