#!/usr/bin/python3
"""Golden data for tests/golden/test_train_full_golden.c (run once by hand with Debian's
/usr/bin/python3, torch 1.13; the output is committed as tests/data/train_full/full.safetensors).

A 4-step DreamBooth run of kohya-ss/sd-scripts' train_db.py on the tiny SD1-shaped model of
make_lora_train_golden.py (tests/data/train_lora/model.safetensors, whose golden.latents /
golden.noise / golden.t this run uses too), transcribed in plain PyTorch (float64): every UNet and
text-encoder weight trainable, two optimizer groups (--learning_rate 1e-3 for the UNet,
--learning_rate_te 5e-4 for the text encoder: train_db's trainable_params list), torch AdamW
(weight_decay 0.01), --stop_text_encoder_training 2: from global step 2 on the text encoder runs
under torch.no_grad() and its grads are None, so AdamW skips it and clip_grad_norm_ leaves it out;
clip_grad_norm_(1.0) over UNet + text encoder, constant schedule, batch of 2, MSE.

Writes full.safetensors: loss [4], grad_norm [4] (before clipping), and for every final weight
(float32, under its checkpoint name: model.diffusion_model.*, cond_stage_model.transformer.*) the
first 512 elements in C order plus max|w| of the whole tensor ("max." + name), to keep the file
small; of the token embedding only the rows the captions use (final.token_rows: the row ids,
final.token_embedding: those rows)."""
import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_clip_golden as CG  # noqa: E402
import make_lora_train_golden as LG  # noqa: E402
import make_unet_golden as UG  # noqa: E402

SRC = os.path.join(HERE, "..", "..", "data", "train_lora", "model.safetensors")
OUT = os.path.join(HERE, "..", "..", "data", "train_full")
STEPS, STOP, LR, LR_TE = 4, 2, 1e-3, 5e-4
B = LG.B
TOK = "text_model.embeddings.token_embedding.weight"


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    dt = {"F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=dt[v["dtype"]]).reshape(v["shape"]).double()
    return out


def train(dt):
    CG.VOCAB = 49408
    sd = load(SRC)
    unet = UG.UNetModel(**LG.UNET).to(dt)
    te = CG.CLIPTextModel(LG.WIDTH, LG.LAYERS, LG.HEADS, CG.quick_gelu).to(dt)
    P = "model.diffusion_model."
    Q = "cond_stage_model.transformer."
    unet.load_state_dict({k[len(P):]: v for k, v in sd.items() if k.startswith(P)})
    te.load_state_dict({k[len(Q):]: v for k, v in sd.items() if k.startswith(Q)})
    latents, noise, ts = sd["golden.latents"].to(dt), sd["golden.noise"].to(dt), sd["golden.t"].long()
    ids = sd["golden.ids"].long()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)
    opt = torch.optim.AdamW([{"params": list(unet.parameters()), "lr": LR},
                             {"params": list(te.parameters()), "lr": LR_TE}])
    losses, norms = [], []
    for s in range(STEPS):
        if s == STOP:
            te.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        x0 = latents * 0.18215
        with torch.set_grad_enabled(s < STOP):
            ctx = CG.hf_encode(te, ids)
        a = acp[ts[s]].to(dt)
        xt = torch.sqrt(a).view(B, 1, 1, 1) * x0 + torch.sqrt(1 - a).view(B, 1, 1, 1) * noise[s]
        pred = unet(xt, ts[s].to(xt.dtype), ctx)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(te.parameters()), 1.0)
        opt.step()
        losses.append(loss.item())
        norms.append(gn.item())
        print(f"step {s + 1}: loss {loss.item():.6f} grad norm {gn.item():.6f}")
    return unet, te, ids, losses, norms


def main():
    unet, te, ids, losses, norms = train(torch.float64)
    u32, t32, _, _, _ = train(torch.float32)
    w32 = {"model.diffusion_model." + k: v.double() for k, v in u32.state_dict().items()}
    w32.update({"cond_stage_model.transformer." + k: v.double() for k, v in t32.state_dict().items()})
    P = "model.diffusion_model."
    Q = "cond_stage_model.transformer."
    out = {"golden.loss": torch.tensor(losses, dtype=torch.float64),
           "golden.grad_norm": torch.tensor(norms, dtype=torch.float64)}
    def put(name, v):
        # the float32 spread of the reference itself (AdamW's first steps move every element by
        # about lr whatever the gradient's size, so near-zero gradients make rounding visible):
        # the C test allows max(1e-4, 3 × spread) per tensor
        out[name] = v.flatten()[:512].clone()
        out["max." + name] = v.abs().max().reshape(1)
        out["spread." + name] = ((w32[name] - v).abs().max() / v.abs().max()).reshape(1)
    for k, v in unet.state_dict().items():
        put(P + k, v)
    rows = sorted(set(ids.flatten().tolist()))
    for k, v in te.state_dict().items():
        if k == TOK:
            out["final.token_rows"] = torch.tensor(rows, dtype=torch.float64)
            out["final.token_embedding"] = v[rows]
            out["spread.final.token_embedding"] = ((w32[Q + k][rows] - v[rows]).abs().max() / v[rows].abs().max()).reshape(1)
        elif k != "text_model.embeddings.position_ids":
            put(Q + k, v)
    os.makedirs(OUT, exist_ok=True)
    print("bytes", UG.write_safetensors(os.path.join(OUT, "full.safetensors"), out))
    print("largest float32 spread", max(v.item() for k, v in out.items() if k.startswith("spread.")))


if __name__ == "__main__":
    main()
