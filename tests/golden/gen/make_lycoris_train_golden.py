#!/usr/bin/python3
"""Golden LyCORIS LoCon training modules for tests/golden/test_lycoris_train_golden.c. Run once by hand
with Debian's /usr/bin/python3 (python3-torch 1.13); the output is committed.

Unlike make_lycoris_golden.py this imports LyCORIS's own module class, LoConModule (lycoris/modules/
locon.py, KohakuBlueleaf/LyCORIS @ f49d30d670591ec8841d241d79aaa8449b30a715), from a checkout given
as the first argument:
    git -C <LyCORIS mirror> archive f49d30d lycoris | tar -x -C /tmp/lyc
    tests/golden/gen/make_lycoris_train_golden.py /tmp/lyc
Its imports of safetensors, tqdm and einops (unused by LoConModule) are stubbed here. The module runs
its default forward (bypass_mode off: base + op(x, (W + ΔW·scale·multiplier) − W)), which sd-train's
factored form x·downᵀ·upᵀ·scale·multiplier equals up to float rounding.

Cases, float32, L = sum(r * y):
  lin   Linear(5 -> 12, bias), lora_dim 3, alpha 2, lora_up random (non-zero), x [2, 3, 5]
  conv  Conv2d(3 -> 6, 3x3, padding 1, bias), lora_dim 2, alpha 1, lora_up random, x [2, 3, 5, 5]
  half  lin's module at multiplier 0.6
  rs    lin's module with rs_lora=True (scale alpha / sqrt(lora_dim); alpha buffer alpha·sqrt(3))
and training runs "tlin" / "tconv": the lin / conv module from LyCORIS's init (lora_down
kaiming_uniform(a=sqrt(5)) from torch.manual_seed(0), lora_up zeros), 3 torch.optim.AdamW steps (lr 1e-2,
defaults: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01) over both weights.

LoHa (LohaModule, lycoris/modules/loha.py, bypass_mode off: base + op(x, (W + ΔW·multiplier) − W) with
ΔW = ((w1a·w1b) ⊙ (w2a·w2b))·scale): cases "hlin" (lin's host, lora_dim 3, alpha 2), "hconv" (conv's
host, lora_dim 2, alpha 1), "hhalf" (hlin at multiplier 0.6), random factors (w2a non-zero); training
runs "thlin" / "thconv" from LyCORIS's init (torch.manual_seed(0): w1b, w2b ~ N(0, 1), w1a ~ N(0, 0.1²),
w2a = 0), 3 AdamW steps as above over the four factors.

LoKr (LokrModule, lycoris/modules/lokr.py, bypass_mode off, ΔW = kron(w1, w2)·scale): "klin" (lin's host,
lora_dim 1, alpha 2: w1 full [3, 1], w2 factored), "kconv" (conv's host, lora_dim 2: w1 [2, 1] and a full
4-d w2 [3, 3, 3, 3], so scale 1), "kdb" (Linear(16 -> 16) host "lin16", lora_dim 1, alpha 3,
decompose_both, factor 4, multiplier 0.6: w1 and w2 both factored); random factors, then "t<case>" runs
of 3 AdamW steps from LyCORIS's init (torch.manual_seed(0): kaiming_uniform(a=sqrt(5)) w1 / w1_a / w1_b
/ w2_a, zeros w2 / w2_b).

Writes tests/data/lycoris/golden_lycoris_train.safetensors:
  <case>.weight, <case>.bias, <case>.down, <case>.up, <case>.x, <case>.r, <case>.alpha   inputs
  <case>.y, <case>.dx, <case>.ddown, <case>.dup                                         outputs
  t<lin|conv>.down.s<i>, t<lin|conv>.up.s<i>   weights after AdamW step i (1..3); .s0 the init
  h<case>.hada_w?_?, h<case>.dhada_w?_?, h<case>.y, h<case>.dx, h<case>.alpha    LoHa factors, gradients
  th<lin|conv>.hada_w?_?.s<i>                  LoHa factors after AdamW step i; .s0 LyCORIS's init
  k<case>.lokr_*, k<case>.dlokr_*, .y, .dx, .alpha; tk<case>.lokr_*.s<i>       LoKr likewise
"""
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_unet_golden import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "lycoris")


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def import_modules(root):
    sys.path.insert(0, root)
    st = stub("safetensors", safe_open=None)
    st.torch = stub("safetensors.torch", save_file=None, load_file=None, safe_open=None)
    stub("einops", rearrange=None, repeat=None)
    stub("tqdm", tqdm=lambda x, *a, **k: x)
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule
    return LoConModule, LohaModule, LokrModule


def host(kind):
    if kind == "lin":
        return torch.nn.Linear(5, 12, bias=True)
    return torch.nn.Conv2d(3, 6, 3, padding=1, bias=True)


def main():
    LoConModule, LohaModule, LokrModule = import_modules(sys.argv[1])
    torch.manual_seed(1234)
    out = {}
    cases = {"lin": ("lin", 3, 2.0, 1.0, False), "conv": ("conv", 2, 1.0, 1.0, False),
             "half": ("lin", 3, 2.0, 0.6, False), "rs": ("lin", 3, 2.0, 1.0, True)}
    hosts = {"lin": host("lin"), "conv": host("conv")}
    for k in hosts.values():
        for p in k.parameters():
            p.requires_grad_(False)
    xs = {"lin": torch.randn(2, 3, 5), "conv": torch.randn(2, 3, 5, 5)}
    rs = {"lin": torch.randn(2, 3, 12), "conv": torch.randn(2, 6, 5, 5)}
    ups = {}
    for case, (kind, dim, alpha, mult, rsl) in cases.items():
        org = hosts[kind]
        m = LoConModule(case, org, multiplier=mult, lora_dim=dim, alpha=alpha, rs_lora=rsl)
        if kind not in ups:
            ups[kind] = torch.randn_like(m.lora_up.weight) * 0.3
            ups[kind + "down"] = m.lora_down.weight.detach().clone()
        with torch.no_grad():
            m.lora_up.weight.copy_(ups[kind])
            m.lora_down.weight.copy_(ups[kind + "down"])
        x = xs[kind].clone().requires_grad_(True)
        y = m(x)
        (y * rs[kind]).sum().backward()
        out[case + ".weight"] = org.weight
        out[case + ".bias"] = org.bias
        out[case + ".down"] = m.lora_down.weight
        out[case + ".up"] = m.lora_up.weight
        out[case + ".alpha"] = m.alpha.reshape(1)
        out[case + ".x"] = xs[kind]
        out[case + ".r"] = rs[kind]
        out[case + ".y"] = y
        out[case + ".dx"] = x.grad
        out[case + ".ddown"] = m.lora_down.weight.grad
        out[case + ".dup"] = m.lora_up.weight.grad
    for kind, dim, alpha in (("lin", 3, 2.0), ("conv", 2, 1.0)):
        torch.manual_seed(0)
        org = hosts[kind]
        m = LoConModule("t" + kind, org, multiplier=1.0, lora_dim=dim, alpha=alpha)
        opt = torch.optim.AdamW([m.lora_down.weight, m.lora_up.weight], lr=1e-2)
        out["t%s.down.s0" % kind] = m.lora_down.weight.detach().clone()
        out["t%s.up.s0" % kind] = m.lora_up.weight.detach().clone()
        for s in range(1, 4):
            opt.zero_grad()
            y = m(xs[kind])
            (y * rs[kind]).sum().backward()
            opt.step()
            out["t%s.down.s%d" % (kind, s)] = m.lora_down.weight.detach().clone()
            out["t%s.up.s%d" % (kind, s)] = m.lora_up.weight.detach().clone()
    # LoHa (LohaModule, bypass_mode off): random factors (w2a non-zero), then training from its init
    hcases = {"hlin": ("lin", 3, 2.0, 1.0), "hconv": ("conv", 2, 1.0, 1.0), "hhalf": ("lin", 3, 2.0, 0.6)}
    hf = {}
    for case, (kind, dim, alpha, mult) in hcases.items():
        org = hosts[kind]
        m = LohaModule(case, org, multiplier=mult, lora_dim=dim, alpha=alpha)
        names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        if kind not in hf:
            hf[kind] = [torch.randn_like(getattr(m, n)) * 0.5 for n in names]
        with torch.no_grad():
            for n, v in zip(names, hf[kind]):
                getattr(m, n).copy_(v)
        x = xs[kind].clone().requires_grad_(True)
        y = m(x)
        (y * rs[kind]).sum().backward()
        out[case + ".alpha"] = m.alpha.reshape(1)
        for n in names:
            out[case + "." + n] = getattr(m, n)
            out[case + ".d" + n] = getattr(m, n).grad
        out[case + ".y"] = y
        out[case + ".dx"] = x.grad
    for kind, dim, alpha in (("lin", 3, 2.0), ("conv", 2, 1.0)):
        torch.manual_seed(0)
        m = LohaModule("th" + kind, hosts[kind], multiplier=1.0, lora_dim=dim, alpha=alpha)
        names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        opt = torch.optim.AdamW([getattr(m, n) for n in names], lr=1e-2)
        for n in names:
            out["th%s.%s.s0" % (kind, n)] = getattr(m, n).detach().clone()
        for s in range(1, 4):
            opt.zero_grad()
            y = m(xs[kind])
            (y * rs[kind]).sum().backward()
            opt.step()
            for n in names:
                out["th%s.%s.s%d" % (kind, n, s)] = getattr(m, n).detach().clone()
    # LoKr (LokrModule, bypass_mode off): ΔW = kron(w1, w2)·scale; random factors, then training
    hosts["lin16"] = torch.nn.Linear(16, 16, bias=True)
    for p in hosts["lin16"].parameters():
        p.requires_grad_(False)
    xs["lin16"] = torch.randn(2, 3, 16)
    rs["lin16"] = torch.randn(2, 3, 16)
    out["lin16.weight"] = hosts["lin16"].weight
    out["lin16.bias"] = hosts["lin16"].bias
    out["lin16.x"] = xs["lin16"]
    out["lin16.r"] = rs["lin16"]
    kcases = {"klin": ("lin", 1, 2.0, 1.0, {}), "kconv": ("conv", 2, 1.0, 1.0, {}),
              "kdb": ("lin16", 1, 3.0, 0.6, {"decompose_both": True, "factor": 4})}
    knames = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
    for case, (kind, dim, alpha, mult, kw) in kcases.items():
        m = LokrModule(case, hosts[kind], multiplier=mult, lora_dim=dim, alpha=alpha, **kw)
        names = [n for n in knames if hasattr(m, n) and isinstance(getattr(m, n), torch.nn.Parameter)]
        with torch.no_grad():
            for n in names:
                getattr(m, n).copy_(torch.randn_like(getattr(m, n)) * 0.5)
        x = xs[kind].clone().requires_grad_(True)
        y = m(x)
        (y * rs[kind]).sum().backward()
        out[case + ".alpha"] = m.alpha.reshape(1)
        for n in names:
            out[case + "." + n] = getattr(m, n)
            out[case + ".d" + n] = getattr(m, n).grad
        out[case + ".y"] = y
        out[case + ".dx"] = x.grad
        torch.manual_seed(0)
        m = LokrModule("t" + case, hosts[kind], multiplier=mult, lora_dim=dim, alpha=alpha, **kw)
        opt = torch.optim.AdamW([getattr(m, n) for n in names], lr=1e-2)
        for n in names:
            out["t%s.%s.s0" % (case, n)] = getattr(m, n).detach().clone()
        for s in range(1, 4):
            opt.zero_grad()
            y = m(xs[kind])
            (y * rs[kind]).sum().backward()
            opt.step()
            for n in names:
                out["t%s.%s.s%d" % (case, n, s)] = getattr(m, n).detach().clone()
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "golden_lycoris_train.safetensors"), out)


if __name__ == "__main__":
    main()
