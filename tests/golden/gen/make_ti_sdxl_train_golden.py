#!/usr/bin/python3
"""Golden data for tests/golden/test_train_ti_sdxl_golden.c (run once by hand with Debian's
/usr/bin/python3, torch 1.13; output committed as tests/data/train_ti_sdxl/golden.safetensors).

A few steps of kohya-ss/sd-scripts' sdxl_train_textual_inversion.py on the tiny SDXL-shaped model
of make_lora_sdxl_train_golden.py (its weight formula, tests/data/train_lora_sdxl/tiny.toml),
transcribed in plain PyTorch (float64), with the TI handling of make_ti_train_golden.py:
--token_string xqzj --num_vectors_per_token 2 --init_word "red square" adds "xqzj", "xqzj1" to
BOTH tokenizers (ids 49408, 49409); both text encoders' token-embedding tables grow by 2 rows,
each initialised from ITS OWN rows of "red" (736) and "square" (3999); the two tables are the
only trainable parameters, in one AdamW group (lr LR, weight decay 0.01 on every row), clipped
together (clip_grad_norm_ over both tables' gradients, old rows included), and after every step
the rows < 49408 of each table are restored from the copy taken before training.
Captions "a photo of xqzj" and "xqzj, red square" with the replacement xqzj -> "xqzj xqzj1";
TE1 ids padded with EOS, TE2 ids with 0; context = cat(TE1 hidden[-2], TE2 hidden[-2]), vector =
cat(TE2 pooled (pool_workaround: first EOS), size embedding) as in make_lora_sdxl_train_golden.py;
noise and timesteps FROM THIS FILE; eps-prediction MSE.

Writes tests/data/train_ti_sdxl/golden.safetensors: latents [2,4,8,8], sizes [2,6], noise
[STEPS,2,4,8,8], t [STEPS,2], loss [STEPS], grad_norm [STEPS] (before clipping), clip_l_init
[2,8], clip_g_init [2,16], clip_l_final [2,8], clip_g_final [2,16].
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_lora_sdxl_train_golden as LSG  # noqa: E402  (sets the 49408-token vocabulary)
import make_sdxl_clip_golden as SC  # noqa: E402
import make_unet_golden as UG  # noqa: E402
import make_unet_sdxl_golden as XG  # noqa: E402
import make_clip_golden as CG  # noqa: E402

OUT = os.path.join(HERE, "..", "..", "data", "train_ti_sdxl")
STEPS, B, H, W = 3, 2, 8, 8
LR, MAX_NORM = 1e-2, 0.05
V, NV = 49408, 2
IDS = [[320, 1125, 539, V, V + 1], [V, V + 1, 267, 736, 3999]]   # "a photo of xqzj xqzj1", "xqzj xqzj1, red square"
INIT = [736, 3999]


def widen(te):
    emb = te.text_model.embeddings.token_embedding
    old = emb.weight.data
    new = torch.nn.Embedding(V + NV, old.shape[1]).double()
    with torch.no_grad():
        new.weight[:V] = old
        for k in range(NV):
            new.weight[V + k] = old[INIT[k % len(INIT)]]
    te.text_model.embeddings.token_embedding = new
    new.weight.requires_grad_(True)
    return new.weight


def main():
    gen = torch.Generator().manual_seed(20261128)
    unet = XG.SDXLUNetModel(**LSG.UNET).double()
    LSG.fill(unet, "")
    te1 = CG.CLIPTextModel(LSG.W1, LSG.L1, LSG.H1, CG.quick_gelu).double()
    LSG.fill(te1, "te1.")
    te2 = SC.CLIPTextModelWithProjection(LSG.W2, LSG.L2, LSG.H2, LSG.P2).double()
    LSG.fill(te2, "te2.")
    t1, t2 = widen(te1), widen(te2)
    tables = [t1, t2]
    orig = [t.data.detach().clone() for t in tables]
    init = [t.data[V:].clone() for t in tables]

    latents = torch.randn((B, 4, H, W), generator=gen, dtype=torch.float64).float().double()
    ids1 = torch.full((B, 77), 49407, dtype=torch.int64)
    ids2 = torch.zeros((B, 77), dtype=torch.int64)
    for b, row in enumerate(IDS):
        for ids in (ids1, ids2):
            ids[b, 0] = 49406
            ids[b, 1:1 + len(row)] = torch.tensor(row)
            ids[b, 1 + len(row)] = 49407
    sz = torch.tensor(LSG.SIZES, dtype=torch.float64)
    orig_hw = torch.stack([sz[:, 1], sz[:, 0]], 1)
    crop = torch.stack([sz[:, 3], sz[:, 2]], 1)
    target = torch.full((B, 2), 64.0, dtype=torch.float64)
    size_emb = SC.get_size_embeddings(orig_hw, crop, target).double()
    noise = torch.randn((STEPS, B, 4, H, W), generator=gen, dtype=torch.float64).float().double()
    ts = torch.randint(0, 1000, (STEPS, B), generator=gen)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)
    opt = torch.optim.AdamW(tables, lr=LR)
    losses, norms = [], []
    for s in range(STEPS):
        x0 = latents * 0.13025
        h1, h2, pool = SC.encode(te1, te2, ids1, ids2)
        ctx = torch.cat([h1, h2], dim=2)
        vec = torch.cat([pool, size_emb], dim=1)
        a = acp[ts[s]].to(torch.float64)
        xt = torch.sqrt(a).view(B, 1, 1, 1) * x0 + torch.sqrt(1 - a).view(B, 1, 1, 1) * noise[s]
        pred = unet(xt, ts[s].to(torch.float64), ctx, vec)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(tables, MAX_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for t, o in zip(tables, orig):
                t[:V] = o[:V]
        losses.append(loss.item())
        norms.append(gn.item())
        print(f"step {s + 1}: loss {loss.item():.8f} grad norm {gn.item():.8f}")
    os.makedirs(OUT, exist_ok=True)
    UG.write_safetensors(os.path.join(OUT, "golden.safetensors"), {
        "latents": latents, "sizes": sz, "noise": noise, "t": ts.to(torch.float64),
        "loss": torch.tensor(losses, dtype=torch.float64), "grad_norm": torch.tensor(norms, dtype=torch.float64),
        "clip_l_init": init[0], "clip_g_init": init[1],
        "clip_l_final": t1.data[V:].clone(), "clip_g_final": t2.data[V:].clone()})
    print("moved", [(t.data[V:] - i).abs().max().item() for t, i in zip(tables, init)])


if __name__ == "__main__":
    main()
