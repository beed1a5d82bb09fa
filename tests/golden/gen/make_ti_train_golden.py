#!/usr/bin/python3
"""Golden data for tests/golden/test_train_ti_golden.c (run once by hand with Debian's
/usr/bin/python3, torch 1.13; output committed as tests/data/train_ti/golden.safetensors).

A few steps of kohya-ss/sd-scripts' train_textual_inversion.py on the tiny SD1-shaped model of
make_lora_train_golden.py (tests/data/train_lora/model.safetensors, read here), transcribed in
plain PyTorch (float64): --token_string xqzj --num_vectors_per_token 2 --init_word "red square"
adds "xqzj", "xqzj1" as ids 49408, 49409 (rows copied from "red" 736 and "square" 3999), the
token-embedding table grows to 49410 rows and is the ONLY trainable parameter (the rest of the
text encoder and the UNet frozen). Captions "a photo of xqzj" and "xqzj, red square" with the
replacement xqzj -> "xqzj xqzj1". Per step, batch of both images: latents x 0.18215, ids -> CLIP,
noise and timesteps FROM THIS FILE, eps-prediction MSE, backward into the whole table,
clip_grad_norm_(table, MAX_NORM) (the norm over every row's gradient, old rows included),
torch.optim.AdamW(lr=LR) (weight decay 0.01 on every row), then the rows < 49408 restored from
the copy taken before training (the reference's index_no_updates).

Writes tests/data/train_ti/golden.safetensors: latents [2,4,8,8], noise [STEPS,2,4,8,8],
t [STEPS,2], loss [STEPS], grad_norm [STEPS] (before clipping), emb_init [2,16], emb_final [2,16].
"""
import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_clip_golden as CG  # noqa: E402
import make_unet_golden as UG  # noqa: E402
import make_lora_train_golden as LG  # noqa: E402

SRC = os.path.join(HERE, "..", "..", "data", "train_lora", "model.safetensors")
OUT = os.path.join(HERE, "..", "..", "data", "train_ti")
STEPS, B, H, W = 6, 2, 8, 8
LR, MAX_NORM = 1e-2, 0.05
V, NV = 49408, 2
IDS = [[320, 1125, 539, V, V + 1], [V, V + 1, 267, 736, 3999]]   # "a photo of xqzj xqzj1", "xqzj xqzj1, red square"
INIT = [736, 3999]


def read_st(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    dt = {"F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=dt[v["dtype"]]).reshape(v["shape"]).double()
    return out


def main():
    sd = read_st(SRC)
    unet = UG.UNetModel(**LG.UNET).double()
    unet.load_state_dict({k[len("model.diffusion_model."):]: v for k, v in sd.items()
                          if k.startswith("model.diffusion_model.")})
    te = CG.CLIPTextModel(LG.WIDTH, LG.LAYERS, LG.HEADS, CG.quick_gelu).double()
    te.load_state_dict({k[len("cond_stage_model.transformer."):]: v for k, v in sd.items()
                        if k.startswith("cond_stage_model.transformer.")}, strict=False)
    for p in list(unet.parameters()) + list(te.parameters()):
        p.requires_grad_(False)
    # resize_token_embeddings + init_word copy
    emb = te.text_model.embeddings.token_embedding
    old = emb.weight.data
    new = torch.nn.Embedding(V + NV, old.shape[1]).double()
    with torch.no_grad():
        new.weight[:V] = old
        for k in range(NV):
            new.weight[V + k] = old[INIT[k % len(INIT)]]
    te.text_model.embeddings.token_embedding = new
    table = new.weight
    table.requires_grad_(True)
    orig = table.data.detach().clone()
    emb_init = table.data[V:].clone()

    latents = sd["golden.latents"]
    gen = torch.Generator().manual_seed(20261127)
    noise = torch.randn((STEPS, B, 4, H, W), generator=gen, dtype=torch.float64).to(torch.float32).to(torch.float64)
    ts = torch.randint(0, 1000, (STEPS, B), generator=gen)
    ids = torch.full((B, 77), 49407, dtype=torch.int64)
    for b, row in enumerate(IDS):
        ids[b, 0] = 49406
        ids[b, 1:1 + len(row)] = torch.tensor(row)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)
    opt = torch.optim.AdamW([table], lr=LR)
    losses, norms = [], []
    for s in range(STEPS):
        x0 = latents * 0.18215
        ctx = CG.hf_encode(te, ids)
        a = acp[ts[s]].to(torch.float64)
        xt = torch.sqrt(a).view(B, 1, 1, 1) * x0 + torch.sqrt(1 - a).view(B, 1, 1, 1) * noise[s]
        pred = unet(xt, ts[s].to(xt.dtype), ctx)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_([table], MAX_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            table[:V] = orig[:V]
        losses.append(loss.item())
        norms.append(gn.item())
        print(f"step {s + 1}: loss {loss.item():.6f} grad norm {gn.item():.6f}")
    os.makedirs(OUT, exist_ok=True)
    UG.write_safetensors(os.path.join(OUT, "golden.safetensors"), {
        "latents": latents, "noise": noise, "t": ts.to(torch.float64),
        "loss": torch.tensor(losses, dtype=torch.float64), "grad_norm": torch.tensor(norms, dtype=torch.float64),
        "emb_init": emb_init, "emb_final": table.data[V:].clone()})
    print("final rows", table.data[V:])


if __name__ == "__main__":
    main()
