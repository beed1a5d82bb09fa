#!/usr/bin/python3
"""Golden for DyLoRA (tests/unit/test_dylora.c): a few training steps of kohya-ss/sd-scripts'
OWN networks/dylora.py DyLoRAModule (argument 1, default: the local mirror; diffusers,
transformers and library.utils are stubbed) under torch.optim.AdamW, with fixed trainable-rank
sequences (random.randint of the module is replaced by a list: our ranks come from Philox, the
test finds steps whose draws give these ranks).

Two modules: a Linear host (in 6, out 5, x [2, 3, 6]) and a 3x3 Conv2d host (in 3, out 4,
stride 1, padding 1, x [2, 3, 5, 4]); rank 4, unit 2, alpha 2 (linear) and 3 (conv). lora_B
starts non-zero here (reference: zero) so that lora_A gets gradients from the first step. Loss
of a step = sum(y * G) over both modules' outputs, with the host weights zero (y = the branch).
AdamW lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.05; zero_grad(set_to_none=True) as
kohya. Writes tests/data/train/dylora.txt: per tensor a line "name n v0 v1 ...".
Run by hand with /usr/bin/python3 (torch).
"""
import math
import os
import random
import subprocess
import sys
import types

import torch

SRC = sys.argv[1] if len(sys.argv) > 1 else None
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train", "dylora.txt")

src = open(SRC).read() if SRC else subprocess.check_output(
    ["git", "-C", "/work/.mirror/kohya-ss+sd-scripts/repo", "show", "HEAD:networks/dylora.py"]).decode()
for name, attrs in {"diffusers": {"AutoencoderKL": object}, "transformers": {"CLIPTextModel": object},
                    "library": {}, "library.utils": {"setup_logging": lambda *a, **k: None}}.items():
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
dylora = types.ModuleType("dylora")
exec(compile(src, "networks/dylora.py", "exec"), dylora.__dict__)

torch.manual_seed(1234)
lin_host = torch.nn.Linear(6, 5, bias=False)
conv_host = torch.nn.Conv2d(3, 4, 3, stride=1, padding=1, bias=False)
with torch.no_grad():
    lin_host.weight.zero_()
    conv_host.weight.zero_()
m_lin = dylora.DyLoRAModule("lin", lin_host, 1.0, lora_dim=4, alpha=2, unit=2)
m_conv = dylora.DyLoRAModule("conv", conv_host, 1.0, lora_dim=4, alpha=3, unit=2)
with torch.no_grad():
    for m in (m_lin, m_conv):
        for b in m.lora_B:
            b.copy_(torch.randn_like(b) * 0.3)
m_lin.apply_to()
m_conv.apply_to()
x_lin = torch.randn(2, 3, 6)
x_conv = torch.randn(2, 3, 5, 4)
g_lin = torch.randn(2, 3, 5)
g_conv = torch.randn(2, 4, 5, 4)

# trainable ranks per step (multiples of unit): rows 0-1 / 2-3; some rows stay untrained for steps
TR_LIN = [2, 2, 0, 2, 0]
TR_CONV = [0, 2, 2, 2, 0]

out = []


def put(name, t):
    v = t.detach().reshape(-1).double().tolist() if torch.is_tensor(t) else list(t)
    out.append(f"{name} {len(v)} " + " ".join(repr(float(a)) for a in v))


def full(m):
    a = torch.cat(tuple(m.lora_A), dim=0)
    b = torch.cat(tuple(m.lora_B), dim=1)
    return a, b


for name, m in (("lin", m_lin), ("conv", m_conv)):
    a, b = full(m)
    put(f"{name}.down0", a)
    put(f"{name}.up0", b)
put("lin.x", x_lin)
put("conv.x", x_conv)
put("lin.g", g_lin)
put("conv.g", g_conv)
put("lin.tr", TR_LIN)
put("conv.tr", TR_CONV)

params = list(m_lin.parameters()) + list(m_conv.parameters())
opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
losses = []
for step in range(len(TR_LIN)):
    seq = iter([TR_LIN[step], TR_CONV[step]])
    dylora.random = types.SimpleNamespace(randint=lambda lo, hi: next(seq))
    y_lin = lin_host(x_lin)
    y_conv = conv_host(x_conv)
    loss = (y_lin * g_lin).sum() + (y_conv * g_conv).sum()
    losses.append(loss.item())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    for name, m in (("lin", m_lin), ("conv", m_conv)):
        a, b = full(m)
        put(f"{name}.down{step + 1}", a)
        put(f"{name}.up{step + 1}", b)
put("loss", losses)
# per-row state['step'] at the end (0: never stepped): lora_A rows then lora_B rows per module
for name, m in (("lin", m_lin), ("conv", m_conv)):
    steps = [float(opt.state[p]["step"]) if p in opt.state else 0.0 for p in list(m.lora_A) + list(m.lora_B)]
    put(f"{name}.steps", steps)

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    f.write("# made by tests/golden/gen/make_dylora_golden.py from networks/dylora.py's DyLoRAModule\n")
    f.write("\n".join(out) + "\n")
print("wrote", OUT, len(out), "tensors; losses", losses)
