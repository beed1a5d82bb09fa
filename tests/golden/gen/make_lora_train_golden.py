#!/usr/bin/python3
"""Golden data for tests/golden/test_train_lora_golden.c (run once by hand with Debian's
/usr/bin/python3, torch 1.13; outputs are committed under tests/data/train_lora/).

A 10-step LoRA run of kohya-ss/sd-scripts' train_network.py (networks.lora) on a tiny SD1-shaped
model, transcribed in plain PyTorch (float64): the ldm UNet of make_unet_golden.py and the
Hugging Face CLIP text model of make_clip_golden.py, with LoRA modules (kohya LoRAModule:
y = org(x) + up(down(x)) * alpha/rank) on every text-encoder attention/MLP linear and every
Transformer2DModel child of the UNet, kohya names. Per step, on one batch of 2 images (the same
2 every step, batch size 2): latents × 0.18215, caption token ids → CLIP last hidden state, noise
and timesteps FROM THIS FILE (the C run takes them from here instead of its Philox streams),
x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε (ᾱ from the float32 scaled-linear table), ε-prediction,
MSE per sample, batch mean, backward, clip_grad_norm_(1.0), torch.optim.AdamW(lr=1e-3), constant
schedule.

Writes
  model.safetensors      the base model in single-file names (F16 values, exact) + golden.*:
                         latents [2,4,8,8] (unscaled), ids [2,77], noise [10,2,4,8,8], t [10,2],
                         loss [10], grad_norm [10] (before clipping)
  lora_init.safetensors  the initial LoRA (kohya keys, F32, alpha F32): down AND up random so that
                         every weight gets a gradient from the first step
  lora_final.safetensors the LoRA after 10 steps (F32); golden.merge_ctx / golden.merge_y in the
                         model file: the text encoder and UNet outputs with that LoRA applied
  tiny.toml              the --model_config of the model
"""
import math
import os
import struct
import sys
import json

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_clip_golden as CG  # noqa: E402
import make_unet_golden as UG  # noqa: E402

OUT = os.path.join(HERE, "..", "..", "data", "train_lora")
CG.VOCAB = 49408
UNET = dict(in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1, attention_resolutions=[1, 2],
            channel_mult=[1, 2], num_heads=2, num_head_channels=-1, transformer_depth=1, context_dim=16,
            use_linear_in_transformer=False)
WIDTH, LAYERS, HEADS = 16, 2, 2
RANK, ALPHA = 4, 2.0
STEPS, B, H, W = 10, 2, 8, 8
LR = 1e-3
CAPTIONS = ["a photo of a cat", "red square, sky"]
IDS = [[320, 1125, 539, 320, 2368], [736, 3999, 267, 2390]]   # the CLIP BPE ids of CAPTIONS
TOML = """family = "sd1"
[unet]
model_channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [1, 2]
num_heads = 2
context_dim = 16
transformer_depth = 1
[clip]
width = 16
layers = 2
heads = 2
"""


class LoRA(nn.Module):
    def __init__(self, org, name, gen):
        super().__init__()
        self.name = name
        conv = isinstance(org, nn.Conv2d)
        cin = org.in_channels if conv else org.in_features
        cout = org.out_channels if conv else org.out_features
        if conv:
            self.down = nn.Conv2d(cin, RANK, org.kernel_size, org.stride, org.padding, bias=False).double()
            self.up = nn.Conv2d(RANK, cout, 1, 1, bias=False).double()
        else:
            self.down = nn.Linear(cin, RANK, bias=False).double()
            self.up = nn.Linear(RANK, cout, bias=False).double()
        with torch.no_grad():
            fan = self.down.weight[0].numel()
            self.down.weight.copy_((torch.rand(self.down.weight.shape, generator=gen, dtype=torch.float64) * 2 - 1)
                                   / math.sqrt(fan))
            self.up.weight.copy_(0.05 * torch.randn(self.up.weight.shape, generator=gen, dtype=torch.float64))
        self.scale = ALPHA / RANK
        self.org_forward = org.forward
        org.forward = self.forward

    def forward(self, x):
        return self.org_forward(x) + self.up(self.down(x)) * self.scale


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20261126)
    unet = UG.UNetModel(**UNET).double()
    UG.randomize(unet, gen)
    te = CG.CLIPTextModel(WIDTH, LAYERS, HEADS, CG.quick_gelu).double()
    for name, p in te.named_parameters():
        with torch.no_grad():
            if p.ndim >= 2:
                s = 0.3 if "embedding" in name else 1 / math.sqrt(p.shape[1])
                p.copy_(s * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            p.copy_(p.to(torch.float16).to(torch.float64))
    for p in list(unet.parameters()) + list(te.parameters()):
        p.requires_grad_(False)

    # LoRA modules, the reference's order: text encoder, then UNet
    mods = []
    for name, m in te.named_modules():
        if m.__class__.__name__ in ("CLIPAttention", "CLIPMLP"):
            for cn, c in m.named_modules():
                if isinstance(c, nn.Linear):
                    mods.append(LoRA(c, "lora_te_" + (name + "." + cn).replace(".", "_"), gen))
    conv, resnet, layer = UG.ldm_to_diffusers_map(UNET)
    for name, m in unet.named_modules():
        if isinstance(m, UG.SpatialTransformer):
            dname = None
            for sd_part, hf_part in layer:
                if (name + ".").startswith(sd_part):
                    dname = hf_part + (name + ".")[len(sd_part):]
            assert dname is not None, name
            for cn, c in m.named_modules():
                if isinstance(c, (nn.Linear, nn.Conv2d)) and cn:
                    mods.append(LoRA(c, "lora_unet_" + (dname + cn).replace(".", "_"), gen))
    params = []
    for m in mods:
        params += [m.down.weight, m.up.weight]

    def lora_tensors():
        t = {}
        for m in mods:
            t[m.name + ".lora_down.weight"] = m.down.weight.detach().clone()
            t[m.name + ".lora_up.weight"] = m.up.weight.detach().clone()
            t[m.name + ".alpha"] = torch.tensor(ALPHA, dtype=torch.float64)
        return t

    init = lora_tensors()

    # data
    latents = torch.randn((B, 4, H, W), generator=gen, dtype=torch.float64).to(torch.float32).to(torch.float64)
    ids = torch.full((B, 77), 49407, dtype=torch.int64)
    for b, row in enumerate(IDS):
        ids[b, 0] = 49406
        ids[b, 1:1 + len(row)] = torch.tensor(row)
    noise = torch.randn((STEPS, B, 4, H, W), generator=gen, dtype=torch.float64).to(torch.float32).to(torch.float64)
    ts = torch.randint(0, 1000, (STEPS, B), generator=gen)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)

    f32 = os.environ.get("GOLDEN_F32")   # a directory: run the same training in float32, write only
    if f32:                              # lora_final there (shows the float32 spread of the reference)
        unet.float(), te.float()
        for m in mods:
            m.float()
        latents, noise = latents.float(), noise.float()
        params = [p for m in mods for p in (m.down.weight, m.up.weight)]
    opt = torch.optim.AdamW(params, lr=LR)
    losses, norms = [], []
    for s in range(STEPS):
        opt.zero_grad(set_to_none=True)
        x0 = latents * 0.18215
        ctx = CG.hf_encode(te, ids)
        a = acp[ts[s]].to(torch.float32 if f32 else torch.float64)
        sa = torch.sqrt(a).view(B, 1, 1, 1)
        sb = torch.sqrt(1 - a).view(B, 1, 1, 1)
        xt = sa * x0 + sb * noise[s]
        pred = unet(xt, ts[s].to(xt.dtype), ctx)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        norms.append(gn.item())
        print(f"step {s + 1}: loss {loss.item():.6f} grad norm {gn.item():.6f}")

    if f32:
        os.makedirs(f32, exist_ok=True)
        UG.write_safetensors(os.path.join(f32, "lora_final.safetensors"), lora_tensors())
        return
    # The reference using its final LoRA (= the merged weights W + alpha/rank · up·down) on a fixed
    # input: the text encoder on the two captions, the UNet on (noise[0], t[0], that context).
    with torch.no_grad():
        merge_ctx = CG.hf_encode(te, ids)
        merge_y = unet(noise[0], ts[0].to(torch.float64), merge_ctx)

    os.makedirs(OUT, exist_ok=True)
    sd = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    sd.update({"cond_stage_model.transformer." + k: v for k, v in te.state_dict().items()})
    golden = {"golden.latents": latents, "golden.ids": ids.to(torch.float64), "golden.noise": noise,
              "golden.t": ts.to(torch.float64), "golden.loss": torch.tensor(losses, dtype=torch.float64),
              "golden.grad_norm": torch.tensor(norms, dtype=torch.float64),
              "golden.merge_ctx": merge_ctx, "golden.merge_y": merge_y}
    sd.update(golden)
    UG.write_safetensors(os.path.join(OUT, "model.safetensors"), sd, half=("model.", "cond_stage_model."))
    UG.write_safetensors(os.path.join(OUT, "lora_init.safetensors"), init)
    UG.write_safetensors(os.path.join(OUT, "lora_final.safetensors"), lora_tensors())
    with open(os.path.join(OUT, "tiny.toml"), "w") as f:
        f.write(TOML)
    # The float32 spread of the reference itself: the same run in float32 (a child process), and per
    # LoRA tensor max|w32 − w64| / max|w64|. AdamW divides by sqrt(v): where a gradient element is
    # near zero, rounding differences become visible in the update (torch's own float32 run is up to
    # ~6e-4 off on one tensor here); the C test allows max(1e-4, 3 × spread) per tensor.
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as td:
        subprocess.run([sys.executable, os.path.abspath(__file__)], env=dict(os.environ, GOLDEN_F32=td), check=True,
                       stdout=subprocess.DEVNULL)
        w32 = UG_load(os.path.join(td, "lora_final.safetensors"))
    final = lora_tensors()
    spread = {}
    for k, v in final.items():
        if k.endswith(".alpha"):
            continue
        spread["spread." + k] = torch.tensor((w32[k] - v).abs().max().item() / v.abs().max().item(), dtype=torch.float64)
    UG.write_safetensors(os.path.join(OUT, "spread.safetensors"), spread)
    print(len(mods), "modules; largest float32 spread", max(x.item() for x in spread.values()))


def UG_load(path):
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
