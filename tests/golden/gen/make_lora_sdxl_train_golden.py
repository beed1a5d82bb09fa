#!/usr/bin/python3
"""Golden data for tests/golden/test_train_lora_sdxl_golden.c (run once by hand with Debian's
/usr/bin/python3, torch 1.13; outputs are committed under tests/data/train_lora_sdxl/).

A 3-step LoRA run of kohya-ss/sd-scripts' sdxl_train_network.py (networks.lora) on a tiny
SDXL-shaped model, transcribed in plain PyTorch (float64):
  - the SDXL UNet of make_unet_sdxl_golden.py (label_emb on the vector input),
  - TE1: the Hugging Face CLIPTextModel of make_clip_golden.py (quick_gelu), TE2: the
    CLIPTextModelWithProjection of make_sdxl_clip_golden.py (GELU, text_projection),
  - kohya's SdxlTextEncodingStrategy: TE1 hidden_states[-2] (layer `layers` - 1, no final LN), TE2
    hidden_states[-2] and the pooled output (final-LN'd last layer at the first EOS, projected),
    context = cat(h1, h2), vector = cat(pool2, get_size_embeddings(original size, crop top/left,
    target size)),
  - LoRA modules (y = org(x) + up(down(x)) · alpha/rank) on every TE1/TE2 attention/MLP linear
    (lora_te1_*, lora_te2_*) and every SpatialTransformer child of the UNet (lora_unet_ + the ldm
    name, kohya's sdxl_original_unet naming).
Per step, on one batch of 2 images (the same 2 every step): latents × 0.13025, caption ids (the
CLIP BPE ids of two captions: TE1 padded with EOS, TE2 with 0), noise and timesteps FROM THIS FILE
(the C run takes them from here), x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε, ε-prediction, MSE per sample,
batch mean, backward (into the TE LoRAs through the context and, for TE2, the pooled vector),
clip_grad_norm_(1.0), torch.optim.AdamW(lr=1e-3), constant schedule.

The base weights are not stored: every tensor comes from make_unet_sdxl_golden.sdxl_weight(key,
shape) with key = the ldm UNet name, "te1." + the HF name, "te2." + the HF name, and the C test
evaluates the same formula to write the model file (the vocabulary is the real 49408 tokens).

Writes
  golden.safetensors      latents [2,4,8,8] (unscaled), sizes [2,6] (orig W, orig H, crop l, t, r, b
                          of the latent files), noise [3,2,4,8,8], t [3,2], loss [3], grad_norm [3]
  lora_init.safetensors   the initial LoRA (kohya keys, F32, alpha F32): down AND up random so that
                          every weight gets a gradient from the first step
  lora_final.safetensors  the LoRA after 3 steps (F32)
  spread.safetensors      per LoRA tensor: max|w32 − w64| / max|w64| of the same run in float32
  tiny.toml               the --model_config of the model
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_clip_golden as CG  # noqa: E402
import make_sdxl_clip_golden as SC  # noqa: E402
import make_unet_golden as UG  # noqa: E402
import make_unet_sdxl_golden as XG  # noqa: E402

CG.VOCAB = SC.VOCAB = 49408       # make_sdxl_clip_golden sets its tiny vocabulary on import
SC.EOS = 49407
OUT = os.path.join(HERE, "..", "..", "data", "train_lora_sdxl")
W1, L1, H1 = 8, 2, 2
W2, L2, H2, P2 = 16, 3, 2, 8
UNET = dict(in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1, attention_resolutions=[2],
            channel_mult=[1, 2], num_head_channels=16, transformer_depth=[0, 1], transformer_depth_middle=1,
            context_dim=W1 + W2, adm_in_channels=P2 + 1536)
RANK, ALPHA = 2, 1.0
STEPS, B, H, W = 3, 2, 8, 8
LR = 1e-3
IDS = [[320, 1125, 539, 320, 2368], [736, 3999, 267, 2390]]   # "a photo of a cat", "red square, sky"
# latent-file original size (W, H) and crop_ltrb; the bucket (target) is 64x64
SIZES = [[100, 80, 18, 8, 82, 72], [64, 96, 0, 16, 64, 80]]
TOML = """family = "sdxl"
[unet]
model_channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [2]
num_heads = -1
num_head_channels = 16
transformer_depth = [0, 1]
transformer_depth_middle = 1
context_dim = 24
adm_in_channels = 1544
use_linear_in_transformer = true
[clip]
width = 8
layers = 2
heads = 2
[clip2]
width = 16
layers = 3
heads = 2
projection_dim = 8
"""


class LoRA(nn.Module):
    def __init__(self, org, name, gen):
        super().__init__()
        self.name = name
        cin, cout = org.in_features, org.out_features
        self.down = nn.Linear(cin, RANK, bias=False).double()
        self.up = nn.Linear(RANK, cout, bias=False).double()
        with torch.no_grad():
            self.down.weight.copy_((torch.rand(self.down.weight.shape, generator=gen, dtype=torch.float64) * 2 - 1)
                                   / math.sqrt(cin))
            self.up.weight.copy_(0.05 * torch.randn(self.up.weight.shape, generator=gen, dtype=torch.float64))
            self.down.weight.copy_(self.down.weight.float().double())
            self.up.weight.copy_(self.up.weight.float().double())
        self.scale = ALPHA / RANK
        self.org_forward = org.forward
        org.forward = self.forward

    def forward(self, x):
        return self.org_forward(x) + self.up(self.down(x)) * self.scale


def fill(model, salt):
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(XG.sdxl_weight(salt + name, tuple(p.shape)))
            p.requires_grad_(False)


def main():
    f32 = os.environ.get("GOLDEN_F32")   # a directory: the same run in float32, only lora_final written
    dt = torch.float32 if f32 else torch.float64
    gen = torch.Generator().manual_seed(20261127)
    unet = XG.SDXLUNetModel(**UNET).double()
    fill(unet, "")
    te1 = CG.CLIPTextModel(W1, L1, H1, CG.quick_gelu).double()
    fill(te1, "te1.")
    te2 = SC.CLIPTextModelWithProjection(W2, L2, H2, P2).double()
    fill(te2, "te2.")

    mods = []
    for prefix, te in (("lora_te1_", te1), ("lora_te2_", te2)):
        for name, m in te.named_modules():
            if m.__class__.__name__ in ("CLIPAttention", "CLIPMLP"):
                for cn, c in m.named_modules():
                    if isinstance(c, nn.Linear):
                        mods.append(LoRA(c, prefix + (name + "." + cn).replace(".", "_"), gen))
    for name, m in unet.named_modules():
        if isinstance(m, UG.SpatialTransformer):
            for cn, c in m.named_modules():
                if isinstance(c, nn.Linear) and cn:
                    mods.append(LoRA(c, "lora_unet_" + (name + "." + cn).replace(".", "_"), gen))

    def lora_tensors():
        t = {}
        for m in mods:
            t[m.name + ".lora_down.weight"] = m.down.weight.detach().double().clone()
            t[m.name + ".lora_up.weight"] = m.up.weight.detach().double().clone()
            t[m.name + ".alpha"] = torch.tensor(ALPHA, dtype=torch.float64)
        return t

    init = lora_tensors()
    latents = torch.randn((B, 4, H, W), generator=gen, dtype=torch.float64).float().double()
    ids1 = torch.full((B, 77), 49407, dtype=torch.int64)
    ids2 = torch.zeros((B, 77), dtype=torch.int64)
    for b, row in enumerate(IDS):
        for ids in (ids1, ids2):
            ids[b, 0] = 49406
            ids[b, 1:1 + len(row)] = torch.tensor(row)
            ids[b, 1 + len(row)] = 49407
    sz = torch.tensor(SIZES, dtype=torch.float64)
    # kohya's dataset: original_sizes_hw, crop_top_lefts (top, left), target_sizes_hw (the bucket)
    orig = torch.stack([sz[:, 1], sz[:, 0]], 1)
    crop = torch.stack([sz[:, 3], sz[:, 2]], 1)
    target = torch.full((B, 2), 64.0, dtype=torch.float64)
    size_emb = SC.get_size_embeddings(orig, crop, target).double()
    noise = torch.randn((STEPS, B, 4, H, W), generator=gen, dtype=torch.float64).float().double()
    ts = torch.randint(0, 1000, (STEPS, B), generator=gen)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)

    if f32:
        unet.float(), te1.float(), te2.float()
        for m in mods:
            m.float()
        latents, noise, size_emb = latents.float(), noise.float(), size_emb.float()
    params = [p for m in mods for p in (m.down.weight, m.up.weight)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=LR)
    losses, norms = [], []
    for s in range(STEPS):
        opt.zero_grad(set_to_none=True)
        x0 = latents * 0.13025
        h1, h2, pool = SC.encode(te1, te2, ids1, ids2)
        ctx = torch.cat([h1, h2], dim=2)
        vec = torch.cat([pool, size_emb], dim=1)
        a = acp[ts[s]].to(dt)
        sa = torch.sqrt(a).view(B, 1, 1, 1)
        sb = torch.sqrt(1 - a).view(B, 1, 1, 1)
        xt = sa * x0 + sb * noise[s]
        pred = unet(xt, ts[s].to(dt), ctx, vec)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        norms.append(gn.item())
        print(f"step {s + 1}: loss {loss.item():.8f} grad norm {gn.item():.8f}")

    if f32:
        os.makedirs(f32, exist_ok=True)
        UG.write_safetensors(os.path.join(f32, "lora_final.safetensors"), lora_tensors())
        return
    os.makedirs(OUT, exist_ok=True)
    golden = {"golden.latents": latents, "golden.sizes": sz, "golden.noise": noise,
              "golden.t": ts.to(torch.float64), "golden.loss": torch.tensor(losses, dtype=torch.float64),
              "golden.grad_norm": torch.tensor(norms, dtype=torch.float64),
              "golden.w.te1.text_model.encoder.layers.0.mlp.fc1.weight":
                  XG.sdxl_weight("te1.text_model.encoder.layers.0.mlp.fc1.weight", (4 * W1, W1)),
              "golden.w.te2.text_projection.weight": XG.sdxl_weight("te2.text_projection.weight", (P2, W2))}
    UG.write_safetensors(os.path.join(OUT, "golden.safetensors"), golden)
    UG.write_safetensors(os.path.join(OUT, "lora_init.safetensors"), init)
    final = lora_tensors()
    UG.write_safetensors(os.path.join(OUT, "lora_final.safetensors"), final)
    with open(os.path.join(OUT, "tiny.toml"), "w") as f:
        f.write(TOML)
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        subprocess.run([sys.executable, os.path.abspath(__file__)], env=dict(os.environ, GOLDEN_F32=td), check=True,
                       stdout=subprocess.DEVNULL)
        w32 = load(os.path.join(td, "lora_final.safetensors"))
    spread = {}
    for k, v in final.items():
        if k.endswith(".alpha"):
            continue
        spread["spread." + k] = torch.tensor((w32[k] - v).abs().max().item() / v.abs().max().item(), dtype=torch.float64)
    UG.write_safetensors(os.path.join(OUT, "spread.safetensors"), spread)
    print(len(mods), "modules; largest float32 spread", max(x.item() for x in spread.values()))


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        assert v["dtype"] == "F32"
        out[k] = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=torch.float32).reshape(v["shape"]).double()
    return out


if __name__ == "__main__":
    main()
