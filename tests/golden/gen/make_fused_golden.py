#!/usr/bin/python3
"""Golden values for lib/train/fused.c (tests/unit/test_fused.c): sdxl_train.py's optimizer steps
inside the backward pass, in PyTorch (torch 1.13 has no register_post_accumulate_grad_hook, so the
hooks are emulated after the backward, tensor by tensor, which is the same arithmetic: each hook
reads only its own tensor's gradient).

  fbp  --fused_backward_pass: transformers' Adafactor (relative_step=False, scale_parameter=False,
       warmup_init=False; the transcription in make_optim_golden.py), two parameter groups; the hook
       clips each tensor alone, accelerator.clip_grad_norm_(tensor, max_grad_norm=1.0), then
       adafactor_step_param (library/adafactor_fused.py: the optimizer's per-parameter update).
  fog  --fused_optimizer_groups 3: four tensors, LRs [a, a, b, b] -> params_per_group = ceil(4/3) = 2:
       two torch.optim.AdamW (weight_decay 0.01), one per group; each tensor clipped alone
       (max_grad_norm 0.5), each optimizer stepping once its group is complete.
Three steps, LR factors 1, 0.5, 0.25 (the schedulers of every optimizer step alike). Written to
tests/data/train/fused.txt as "name count hex-floats" lines: <case>.p<i>.init, <case>.s<k>.g<i>
(the raw gradient of step k), <case>.s<k>.p<i> (the parameter after step k)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_optim_golden import Adafactor, put  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train", "fused.txt")
SHAPES = [(5,), (3, 4), (2, 2, 2, 2), (3, 2)]
GSCALE = [0.05, 0.6, 0.3, 2.0]   # some tensors' norms above the max norm, some below
FACTORS = [1.0, 0.5, 0.25]


def run(f, tag, make_opts, max_norm, lrs):
    g = torch.Generator().manual_seed(1234)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float32)) for s in SHAPES]
    for i, p in enumerate(ps):
        put(f, "%s.p%d.init" % (tag, i), p.detach().flatten().tolist())
    opts = make_opts(ps)   # [(optimizer, [param indices])]
    for k, fac in enumerate(FACTORS):
        for opt, _ in opts:
            for grp in opt.param_groups:
                grp["lr"] = grp["initial_lr"] * fac
        grads = [torch.randn(s, generator=g, dtype=torch.float32) * GSCALE[i] * (1 + k) for i, s in enumerate(SHAPES)]
        for i, gr in enumerate(grads):
            put(f, "%s.s%d.g%d" % (tag, k, i), gr.flatten().tolist())
            ps[i].grad = gr.clone()
        # the hooks, last tensor first as a backward reaches them
        for i in reversed(range(len(ps))):
            if max_norm != 0.0:
                torch.nn.utils.clip_grad_norm_(ps[i], max_norm)
        for opt, _ in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        for i, p in enumerate(ps):
            put(f, "%s.s%d.p%d" % (tag, k, i), p.detach().flatten().tolist())


def fbp(ps):
    opt = Adafactor([{"params": ps[:2], "lr": 1e-2}, {"params": ps[2:], "lr": 5e-3}], lr=1e-2, relative_step=False,
                    scale_parameter=False, warmup_init=False)
    for grp in opt.param_groups:
        grp["initial_lr"] = grp["lr"]
    return [(opt, [0, 1, 2, 3])]


def fog(ps):
    out = []
    for idx, lr in (([0, 1], 1e-2), ([2, 3], 5e-3)):
        opt = torch.optim.AdamW([{"params": [ps[i] for i in idx], "lr": lr}], lr=lr, weight_decay=0.01)
        opt.param_groups[0]["initial_lr"] = lr
        out.append((opt, idx))
    return out


def main():
    with open(OUT, "w") as f:
        f.write("# tests/golden/gen/make_fused_golden.py (torch %s)\n" % torch.__version__)
        run(f, "fbp", fbp, 1.0, [1e-2, 5e-3])
        run(f, "fog", fog, 0.5, [1e-2, 5e-3])


if __name__ == "__main__":
    main()
