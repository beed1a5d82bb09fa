#!/usr/bin/python3
"""Golden data for tests/golden/test_tagger_golden.c (the WD tagger, sd-tag).
Run once by hand with Debian's /usr/bin/python3 (python3-torch 1.13, python3-pil 9.4,
python3-opencv 4.6); the outputs are committed under tests/data/tagger/.

1. Model: a plain-PyTorch transcription of timm's VisionTransformer (timm/models/
   vision_transformer.py: PatchEmbed, Attention, Mlp, Block, VisionTransformer.forward_features /
   forward_head) for the wd-vit-tagger-v3 configuration: class_token=False, global_pool="avg",
   fc_norm=False (norm before the pool), act_layer=gelu_tanh, qkv_bias=True, LayerNorm eps 1e-6,
   no layer scale, no pre-norm. Module names equal timm's, so state_dict keys are the real ones.
   Tiny sizes: width 64, 4 heads (declared in __metadata__ num_heads, since the head count is
   not in the shapes), depth 2, MLP 256, patch 16, input 64 (16 tokens), 24 classes. Weights are
   rounded to float16 and stored as F16 (the C test also converts them to F32 and BF16);
   the logits are computed in float32 from the rounded weights.
   -> tagger_tiny.safetensors (the model), tagger_golden.safetensors: golden.x [2,3,64,64],
      golden.logits [2,24].
2. Preprocessing: test images (odd sizes, RGBA with partial alpha, grey+alpha, smaller and larger
   than 448) and the uint8 BGR square each reference pipeline makes of them:
   kohya (tag_images_by_wd14_tagger.py at HEAD: RGBA pasted on white with alpha as mask, BGR,
   np.pad 255 with floor offsets, library.utils.resize_image: cv2 INTER_AREA when shrinking,
   PIL LANCZOS otherwise) and wd (SmilingWolf wdv3-timm / wd-tagger Space: alpha_composite on a
   white RGBA canvas, pad, PIL BICUBIC). Stored in full at size 64 (prep_<img>_<preset>_64, uint8
   [64,64,3]) and as SHA-256 of the bytes at 448 (prep448.txt).
"""
import hashlib
import json
import math
import os
import struct

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "tagger")


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # NCHW -> NLC


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, img, patch, dim, depth, heads, hidden, classes):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, (img // patch) ** 2, dim) * 0.5)
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        x = x.mean(dim=1)  # global_pool "avg", no prefix tokens
        return self.head(x)


def save_st(path, tensors, meta=None):
    """safetensors writer (F16/F32/U8), tensors in the given order."""
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = {np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("uint8"): "U8"}[a.dtype]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_model():
    torch.manual_seed(1234)
    m = VisionTransformer(img=64, patch=16, dim=64, depth=2, heads=4, hidden=256, classes=24)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name != "pos_embed":
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * (1.5 / math.sqrt(fan_in)))
            p.copy_(p.half().float())  # stored as F16
    m.eval()
    sd = {k: v.detach().half().numpy() for k, v in m.state_dict().items()}
    save_st(os.path.join(OUT, "tagger_tiny.safetensors"), sd, {"num_heads": "4", "format": "pt"})
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        y = m(x)
    save_st(os.path.join(OUT, "tagger_golden.safetensors"),
            {"golden.x": x.numpy(), "golden.logits": y.numpy()})
    print("logits", y.shape, float(y.abs().max()))


# ---- preprocessing ----------------------------------------------------------------------------


def make_images():
    rs = np.random.RandomState(7)

    def smooth(w, h, c, noise=20):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        chans = []
        for i in range(c):
            f = 0.02 + 0.03 * i
            v = 127.5 + 100 * np.sin(xx * f + i) * np.cos(yy * (f * 0.7) + 2 * i)
            chans.append(v + (rs.randint(-noise, noise + 1, size=(h, w)) if noise else 0))
        return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)

    ims = {}
    ims["a_97x61"] = Image.fromarray(smooth(97, 61, 3), "RGB")
    rgba = smooth(203, 150, 4)
    rgba[:20, :, 3] = 0          # fully transparent band
    rgba[20:40, :, 3] = 255      # opaque band
    ims["b_203x150_rgba"] = Image.fromarray(rgba, "RGBA")
    ims["c_640x480"] = Image.fromarray((smooth(640, 480, 3, noise=0) // 8 * 8), "RGB")
    la = smooth(50, 33, 2)
    ims["d_50x33_la"] = Image.fromarray(la, "LA")
    ims["e_33x517"] = Image.fromarray(smooth(33, 517, 3), "RGB")
    for k, im in ims.items():
        im.save(os.path.join(OUT, k + ".png"))
    return ims


def kohya_prep(im, size):
    # tag_images_by_wd14_tagger.py (HEAD) preprocess_image + library.utils.resize_image
    if im.mode in ("RGBA", "LA") or "transparency" in im.info:
        im = im.convert("RGBA")
    elif im.mode != "RGB":
        im = im.convert("RGB")
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.split()[3])
        im = bg
    a = np.array(im)[:, :, ::-1]
    s = max(a.shape[0:2])
    px, py = s - a.shape[1], s - a.shape[0]
    a = np.pad(a, ((py // 2, py - py // 2), (px // 2, px - px // 2), (0, 0)), mode="constant", constant_values=255)
    if s == size:
        return np.ascontiguousarray(a)
    if s > size:
        return cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
    rgb = Image.fromarray(np.ascontiguousarray(a[:, :, ::-1]))       # pil_resize: BGR -> RGB
    return np.ascontiguousarray(np.array(rgb.resize((size, size), Image.LANCZOS))[:, :, ::-1])


def wd_prep(im, size):
    # SmilingWolf wdv3-timm: pil_ensure_rgb, pil_pad_square, resize BICUBIC, RGB -> BGR
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA") if "transparency" in im.info or im.mode == "LA" else im.convert("RGB")
    if im.mode == "RGBA":
        canvas = Image.new("RGBA", im.size, (255, 255, 255))
        canvas.alpha_composite(im)
        im = canvas.convert("RGB")
    w, h = im.size
    s = max(w, h)
    canvas = Image.new("RGB", (s, s), (255, 255, 255))
    canvas.paste(im, ((s - w) // 2, (s - h) // 2))
    if s != size:
        canvas = canvas.resize((size, size), Image.BICUBIC)
    return np.ascontiguousarray(np.array(canvas)[:, :, ::-1])


def make_prep(ims):
    small, lines = {}, []
    for k, im in ims.items():
        if im.mode in ("RGBA", "LA"):
            # both references' alpha handling give the same RGB (round(t/255) either way)
            a = np.array(im.convert("RGBA"))
            bg = Image.new("RGB", im.size, (255, 255, 255))
            bg.paste(im.convert("RGBA"), mask=im.convert("RGBA").split()[3])
            c = Image.new("RGBA", im.size, (255, 255, 255))
            c.alpha_composite(im.convert("RGBA"))
            assert (np.array(bg) == np.array(c.convert("RGB"))).all(), k
            del a
        for preset, fn in (("kohya", kohya_prep), ("wd", wd_prep)):
            small["prep_%s_%s_64" % (k, preset)] = fn(im, 64)
            big = fn(im, 448)
            assert big.shape == (448, 448, 3) and big.dtype == np.uint8
            lines.append("%s %s %s" % (k, preset, hashlib.sha256(big.tobytes()).hexdigest()))
    save_st(os.path.join(OUT, "tagger_prep64.safetensors"), small)
    with open(os.path.join(OUT, "prep448.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make_model()
    make_prep(make_images())
