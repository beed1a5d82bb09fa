#!/usr/bin/python3
"""Golden data for tests/golden/test_train_full_sdxl_golden.c (run once by hand with Debian's
/usr/bin/python3, torch 1.13; the output is committed as tests/data/train_full_sdxl/full.safetensors).

A 2-step run of kohya-ss/sd-scripts' sdxl_train.py with --train_text_encoder on the tiny SDXL model
of make_lora_sdxl_train_golden.py (its weights from make_unet_sdxl_golden.sdxl_weight; its latents,
sizes, noise and timesteps read from tests/data/train_lora_sdxl/golden.safetensors), transcribed in
plain PyTorch (float64):
  - every UNet weight trainable, grouped as get_block_params_to_optimize does for --block_lr (23
    LRs, block i at BLOCK_LR[i]; groups of blocks absent from the tiny UNet are empty; blocks 0 and
    11 at 0 are left out of the optimizer, their gradients still in the clipping norm),
  - text_encoder1 at --learning_rate_te1 5e-4 and text_encoder2 at --learning_rate_te2 2e-4 (the
    groups appended after the UNet's); TE1's last layer and final_layer_norm get no gradient (the
    context uses hidden_states[-2]), so AdamW skips them and clip_grad_norm_ leaves them out,
  - the SDXL conditioning of make_lora_sdxl_train_golden (context = cat(TE1 h[-2], TE2 h[-2]),
    vector = cat(TE2 pooled, size embedding)), ε-prediction, MSE, batch mean,
  - clip_grad_norm_(1.0) over the UNet and both encoders, torch.optim.AdamW (weight_decay 0.01).

Writes full.safetensors: golden.loss [2], golden.grad_norm [2] (before clipping), and for every
final weight (under its formula key: the ldm UNet name, "te1." / "te2." + the HF name) the first 512
elements in C order, "max." + key (max|w| of the whole tensor) and "spread." + key (max|w32 − w64| /
max|w64| of the same run in float32).

With --fused: the same run as sdxl_train.py --fused_optimizer_groups runs it (the optimizer steps inside
the backward; torch 1.13 has no register_post_accumulate_grad_hook, so the hooks run after the backward,
tensor by tensor, the same arithmetic): each optimized tensor's gradient clipped alone,
accelerator.clip_grad_norm_(tensor, 1.0), then AdamW (one optimizer per group steps the same numbers
as one optimizer: AdamW's update of a tensor reads only its own gradient and state). Writes
fused.safetensors the same way, without golden.grad_norm (there is no global norm)."""
import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_clip_golden as CG  # noqa: E402
import make_lora_sdxl_train_golden as LG  # noqa: E402
import make_sdxl_clip_golden as SC  # noqa: E402
import make_unet_golden as UG  # noqa: E402
import make_unet_sdxl_golden as XG  # noqa: E402

OUT = os.path.join(HERE, "..", "..", "data", "train_full_sdxl")
GOLD = os.path.join(HERE, "..", "..", "data", "train_lora_sdxl", "golden.safetensors")
STEPS, B = 2, LG.B
LR_TE1, LR_TE2 = 5e-4, 2e-4
# blocks 0 (time/label embedding) and 11 (middle_block.1) at 0: not optimized, but their gradients
# count in clip_grad_norm_ (over every parameter of the trained models)
BLOCK_LR = [0.0 if i in (0, 11) else 1e-3 * (1 + 0.05 * i) for i in range(23)]


def load(path):
    b = open(path, "rb").read()
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


def block_index(name):
    if name.startswith("time_embed.") or name.startswith("label_emb."):
        return 0
    if name.startswith("input_blocks."):
        return 1 + int(name.split(".")[1])
    if name.startswith("middle_block."):
        return 10 + int(name.split(".")[1])
    if name.startswith("output_blocks."):
        return 13 + int(name.split(".")[1])
    if name.startswith("out."):
        return 22
    raise ValueError(name)


def train(dt, fused=False):
    g = load(GOLD)
    unet = XG.SDXLUNetModel(**LG.UNET).double()
    LG.fill(unet, "")
    te1 = CG.CLIPTextModel(LG.W1, LG.L1, LG.H1, CG.quick_gelu).double()
    LG.fill(te1, "te1.")
    te2 = SC.CLIPTextModelWithProjection(LG.W2, LG.L2, LG.H2, LG.P2).double()
    LG.fill(te2, "te2.")
    for m in (unet, te1, te2):
        m.to(dt)
        m.requires_grad_(True)
    blocks = [[] for _ in range(23)]
    for name, p in unet.named_parameters():
        blocks[block_index(name)].append(p)
    groups = [{"params": ps, "lr": lr} for ps, lr in zip(blocks, BLOCK_LR) if lr != 0]
    groups.append({"params": list(te1.parameters()), "lr": LR_TE1})
    groups.append({"params": list(te2.parameters()), "lr": LR_TE2})
    opt = torch.optim.AdamW(groups)
    ids1 = torch.full((B, 77), 49407, dtype=torch.int64)
    ids2 = torch.zeros((B, 77), dtype=torch.int64)
    for b, row in enumerate(LG.IDS):
        for ids in (ids1, ids2):
            ids[b, 0] = 49406
            ids[b, 1:1 + len(row)] = torch.tensor(row)
            ids[b, 1 + len(row)] = 49407
    sz = g["golden.sizes"]
    orig = torch.stack([sz[:, 1], sz[:, 0]], 1)
    crop = torch.stack([sz[:, 3], sz[:, 2]], 1)
    target = torch.full((B, 2), 64.0, dtype=torch.float64)
    size_emb = SC.get_size_embeddings(orig, crop, target).double().to(dt)
    latents, noise, ts = g["golden.latents"].to(dt), g["golden.noise"].to(dt), g["golden.t"].long()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)
    losses, norms = [], []
    params = [p for m in (unet, te1, te2) for p in m.parameters()]
    for s in range(STEPS):
        opt.zero_grad(set_to_none=True)
        x0 = latents * 0.13025
        h1, h2, pool = SC.encode(te1, te2, ids1, ids2)
        ctx = torch.cat([h1, h2], dim=2)
        vec = torch.cat([pool, size_emb], dim=1)
        a = acp[ts[s]].to(dt)
        xt = torch.sqrt(a).view(B, 1, 1, 1) * x0 + torch.sqrt(1 - a).view(B, 1, 1, 1) * noise[s]
        pred = unet(xt, ts[s].to(dt), ctx, vec)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        if fused:
            for grp in groups:
                for p in grp["params"]:
                    if p.grad is not None:
                        torch.nn.utils.clip_grad_norm_(p, 1.0)
            gn = torch.tensor(float("nan"))
        else:
            gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        norms.append(gn.item())
        print(f"step {s + 1}: loss {loss.item():.8f} grad norm {gn.item():.8f}")
    final = {k: v.detach().double() for k, v in unet.state_dict().items()}
    final.update({"te1." + k: v.detach().double() for k, v in te1.state_dict().items() if "position_ids" not in k})
    final.update({"te2." + k: v.detach().double() for k, v in te2.state_dict().items() if "position_ids" not in k})
    return final, losses, norms


def main():
    fused = "--fused" in sys.argv[1:]
    w64, losses, norms = train(torch.float64, fused)
    w32, _, _ = train(torch.float32, fused)
    out = {"golden.loss": torch.tensor(losses, dtype=torch.float64)}
    if not fused:
        out["golden.grad_norm"] = torch.tensor(norms, dtype=torch.float64)
    for k, v in w64.items():
        out[k] = v.flatten()[:512].clone()
        out["max." + k] = v.abs().max().reshape(1)
        out["spread." + k] = ((w32[k] - v).abs().max() / v.abs().max()).reshape(1)
    os.makedirs(OUT, exist_ok=True)
    print("bytes", UG.write_safetensors(os.path.join(OUT, "fused.safetensors" if fused else "full.safetensors"), out))
    print(len(w64), "tensors; largest float32 spread", max(v.item() for k, v in out.items() if k.startswith("spread.")))


if __name__ == "__main__":
    main()
