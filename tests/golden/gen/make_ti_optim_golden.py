#!/usr/bin/python3
"""Golden data for tests/golden/test_train_ti_golden.c's optimizer cases (run once by hand with
Debian's /usr/bin/python3, torch 1.13; output committed as tests/data/train_ti/optim_golden.safetensors).

The textual-inversion run of make_ti_train_golden.py (same tiny model, tokens, captions, noise and
timesteps, STEPS = its 6 steps) with the optimizers whose statistics span the reference's
parameter, the WHOLE token table [49410, 16] (train_textual_inversion.py: the optimizer gets
text_encoder.get_input_embeddings().parameters(), the rows < 49408 are restored after every step):
  adafactor     transformers Adafactor(lr=None, relative_step=True) (kohya's default; RMS of the table)
  adafactor_lr  Adafactor(lr=3e-2, relative_step=False) (scale_parameter: lr x RMS of the table)
  prodigy       prodigyopt Prodigy(lr=1.0, d0=1e-4, d_coef=10) (d from sums over the table: it
                grows at steps 5 and 6)
  dadapt        dadaptation DAdaptAdam(lr=1.0, d0=1e-3) (d grows at steps 4 and 6)
and, element-wise but with per-group averaging weights, the ScheduleFree optimizers (weights y of
train mode: train_textual_inversion.py never calls eval(); train() is called once at construction,
without which schedulefree 1.4 refuses the first step):
  adamw_sf      AdamWScheduleFree(lr=2e-2, warmup_steps=2, weight_decay=1e-2)
  radam_sf      RAdamScheduleFree(lr=2e-2, weight_decay=1e-2)
The optimizers are make_optim_golden.py's and make_optim_sf_golden.py's transcriptions. Per case: <case>.loss [STEPS],
<case>.grad_norm [STEPS] (before clipping), <case>.emb_final [2, 16].
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_clip_golden as CG  # noqa: E402
import make_unet_golden as UG  # noqa: E402
import make_lora_train_golden as LG  # noqa: E402
import make_optim_golden as OG  # noqa: E402
import make_ti_train_golden as TG  # noqa: E402
import make_optim_sf_golden as SF  # noqa: E402

STEPS = 6
CASES = [
    ("adafactor", lambda p: OG.Adafactor(p, lr=None, relative_step=True)),
    ("adafactor_lr", lambda p: OG.Adafactor(p, lr=3e-2, relative_step=False)),
    ("prodigy", lambda p: OG.Prodigy(p, lr=1.0, d0=1e-4, d_coef=10.0)),
    ("dadapt", lambda p: OG.DAdaptAdam(p, lr=1.0, d0=1e-3)),
    ("adamw_sf", lambda p: train_mode(SF.AdamWScheduleFree(p, lr=2e-2, warmup_steps=2, weight_decay=1e-2))),
    ("radam_sf", lambda p: train_mode(SF.RAdamScheduleFree(p, lr=2e-2, weight_decay=1e-2))),
]


def train_mode(opt):
    opt.train()
    return opt


def run(sd, make):
    V, NV, B = TG.V, TG.NV, TG.B
    unet = UG.UNetModel(**LG.UNET).double()
    unet.load_state_dict({k[len("model.diffusion_model."):]: v for k, v in sd.items()
                          if k.startswith("model.diffusion_model.")})
    te = CG.CLIPTextModel(LG.WIDTH, LG.LAYERS, LG.HEADS, CG.quick_gelu).double()
    te.load_state_dict({k[len("cond_stage_model.transformer."):]: v for k, v in sd.items()
                        if k.startswith("cond_stage_model.transformer.")}, strict=False)
    for p in list(unet.parameters()) + list(te.parameters()):
        p.requires_grad_(False)
    emb = te.text_model.embeddings.token_embedding
    old = emb.weight.data
    new = torch.nn.Embedding(V + NV, old.shape[1]).double()
    with torch.no_grad():
        new.weight[:V] = old
        for k in range(NV):
            new.weight[V + k] = old[TG.INIT[k % len(TG.INIT)]]
    te.text_model.embeddings.token_embedding = new
    table = new.weight
    table.requires_grad_(True)
    orig = table.data.detach().clone()
    gen = torch.Generator().manual_seed(20261127)
    noise = torch.randn((TG.STEPS, B, 4, TG.H, TG.W), generator=gen, dtype=torch.float64).to(torch.float32).to(
        torch.float64)
    ts = torch.randint(0, 1000, (TG.STEPS, B), generator=gen)
    ids = torch.full((B, 77), 49407, dtype=torch.int64)
    for b, row in enumerate(TG.IDS):
        ids[b, 0] = 49406
        ids[b, 1:1 + len(row)] = torch.tensor(row)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)
    opt = make([table])
    latents = sd["golden.latents"]
    losses, norms = [], []
    for s in range(STEPS):
        x0 = latents * 0.18215
        ctx = CG.hf_encode(te, ids)
        a = acp[ts[s]].to(torch.float64)
        xt = torch.sqrt(a).view(B, 1, 1, 1) * x0 + torch.sqrt(1 - a).view(B, 1, 1, 1) * noise[s]
        pred = unet(xt, ts[s].to(xt.dtype), ctx)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_([table], TG.MAX_NORM)
        opt.step()
        table.grad = None
        with torch.no_grad():
            table[:V] = orig[:V]
        losses.append(loss.item())
        norms.append(gn.item())
        if "d" in opt.param_groups[0]:
            print("  step", s + 1, "d", opt.param_groups[0]["d"])
    return losses, norms, table.data[V:].clone(), orig[V:].clone()


def main():
    sd = TG.read_st(TG.SRC)
    out = {}
    for name, make in CASES:
        losses, norms, fin, init = run(sd, make)
        print(name, "loss", losses, "norm", norms, "moved", (fin - init).abs().max().item())
        out[name + ".loss"] = torch.tensor(losses, dtype=torch.float64)
        out[name + ".grad_norm"] = torch.tensor(norms, dtype=torch.float64)
        out[name + ".emb_final"] = fin
    UG.write_safetensors(os.path.join(TG.OUT, "optim_golden.safetensors"), out)


if __name__ == "__main__":
    main()
