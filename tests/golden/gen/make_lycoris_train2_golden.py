#!/usr/bin/python3
"""Golden LyCORIS dropouts in training and Tucker LoCon for tests/golden/test_lycoris_train2_golden.c. Run once by hand
with Debian's /usr/bin/python3 (python3-torch); the output is committed.

Imports LyCORIS's own LoConModule, LohaModule and LokrModule (KohakuBlueleaf/LyCORIS @ f49d30d) from a
checkout given as the first argument, as make_lycoris_train_golden.py does:
    git -C <LyCORIS mirror> archive f49d30d lycoris | tar -x -C /tmp/lyc
    tests/golden/gen/make_lycoris_train2_golden.py /tmp/lyc
The modules run in training mode with the masks FED from this file (sd-train draws its own from Philox
streams, so the values cannot match torch's): torch.rand is replaced, while the module runs, by a
function returning 0.9 for a kept and 0.1 for a dropped entry (p = 0.5), so LyCORIS's own
`torch.rand(n) > p` builds the mask; LoCon's bypass-mode nn.Dropout(p) (which draws through
torch's bernoulli, not torch.rand) is replaced by the same function with a fed mask: x · keep / (1 - p).

Cases (host layers, float32, L = sum(r * y), random factors with non-zero up / w2):
  dlin   LoCon, Linear(5 -> 12), lora_dim 3, alpha 2, multiplier 0.6, rank_dropout 0.5 (bypass_mode off:
         rows of ΔW; keep [12])
  dconv  LoCon, Conv2d(3 -> 6, 3x3, pad 1), lora_dim 2, alpha 1, rank_dropout 0.5 (keep [6])
  blin   LoCon bypass_mode, lin host, rank_dropout 0.5 (keep [3] over the rank), dropout 0.3 (keep [2, 3, 12])
  bconv  LoCon bypass_mode, conv host, rank_dropout 0.5 (keep [2]), dropout 0.3 (keep [2, 6, 5, 5])
  hlin / hconv   LoHa (lora_dim 3 alpha 2 / lora_dim 2 alpha 1), rank_dropout 0.5 (keep [12] / [6])
  klin / kconv   LoKr (lora_dim 1 alpha 2 / lora_dim 2 alpha 1), rank_dropout 0.5 (keep [12] / [6])
  tconv  LoCon use_tucker=True on the conv host (lora_down 1x1 [2, 3, 1, 1], lora_mid [2, 2, 3, 3], lora_up),
         lora_dim 2, alpha 1, multiplier 0.6, no dropout
  tdconv tconv's module with rank_dropout 0.5 (keep [6]); tbconv the same in bypass_mode with rank_dropout 0.5
         (keep [2]) and dropout 0.3 (keep [2, 6, 5, 5])
  tsconv Tucker on Conv2d(3 -> 6, 3x3, stride 2, pad 1) (host "sconv", x [2, 3, 5, 5]), lora_dim 2, alpha 2
  htconv LoHa use_tucker=True on the conv host (hada_w?_a [2, 6], hada_w?_b [2, 3], hada_t? [2, 2, 3, 3]),
         lora_dim 2, alpha 1, multiplier 0.6; htdconv the same module with rank_dropout 0.5 (keep [6]).
         Their d* gradients come from autograd through LyCORIS's forward expression; LyCORIS's own
         HadaWeightTucker.backward gives other hada_w?_a gradients (it uses the other factor's t·w_b), kept
         as lyc_d*.

Writes tests/data/lycoris/golden_lycoris_train2.safetensors:
  <kind>.weight, <kind>.bias, <kind>.x, <kind>.r      (kind lin / conv) the hosts and inputs
  <case>.<factor>, <case>.alpha, <case>.keep_rank, <case>.keep (1 kept, 0 dropped)
  <case>.y, <case>.dx, <case>.d<factor>               outputs and gradients
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_lycoris_train_golden import host, import_modules  # noqa: E402
from make_unet_golden import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "lycoris")


class Fed:
    """torch.rand replacement: hands out the queued keep masks as 0.9 (kept) / 0.1 (dropped)."""

    def __init__(self, masks):
        self.masks = list(masks)

    def __call__(self, *size, **kw):
        n = size[0] if len(size) == 1 and not isinstance(size[0], int) else size
        n = tuple(n) if not isinstance(n, int) else (n,)
        m = self.masks.pop(0)
        assert tuple(m.shape) == n, (m.shape, n)
        return torch.where(m > 0, torch.tensor(0.9), torch.tensor(0.1))


class FedDropout(torch.nn.Module):
    def __init__(self, keep, p):
        super().__init__()
        self.keep, self.p = keep, p

    def forward(self, x):
        return x * self.keep / (1 - self.p)


def keep(*shape):
    k = (torch.rand(*shape) > 0.5).float()
    k.view(-1)[0] = 1.0   # some kept, some dropped
    k.view(-1)[-1] = 0.0
    return k


def main():
    LoConModule, LohaModule, LokrModule = import_modules(sys.argv[1])
    torch.manual_seed(4321)
    out = {}
    hosts = {"lin": host("lin"), "conv": host("conv"), "sconv": torch.nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=True)}
    for k in hosts.values():
        for p in k.parameters():
            p.requires_grad_(False)
    xs = {"lin": torch.randn(2, 3, 5), "conv": torch.randn(2, 3, 5, 5)}
    rs = {"lin": torch.randn(2, 3, 12), "conv": torch.randn(2, 6, 5, 5)}
    xs["sconv"] = torch.randn(2, 3, 5, 5)
    rs["sconv"] = torch.randn(2, 6, 3, 3)
    for kind in ("lin", "conv", "sconv"):
        out[kind + ".weight"] = hosts[kind].weight
        out[kind + ".bias"] = hosts[kind].bias
        out[kind + ".x"] = xs[kind]
        out[kind + ".r"] = rs[kind]
    real_rand = torch.rand
    cases = [
        ("dlin", LoConModule, "lin", dict(lora_dim=3, alpha=2.0, multiplier=0.6, rank_dropout=0.5)),
        ("dconv", LoConModule, "conv", dict(lora_dim=2, alpha=1.0, rank_dropout=0.5)),
        ("blin", LoConModule, "lin", dict(lora_dim=3, alpha=2.0, multiplier=0.6, rank_dropout=0.5, dropout=0.3,
                                          bypass_mode=True)),
        ("bconv", LoConModule, "conv", dict(lora_dim=2, alpha=1.0, rank_dropout=0.5, dropout=0.3, bypass_mode=True)),
        ("hlin", LohaModule, "lin", dict(lora_dim=3, alpha=2.0, multiplier=0.6, rank_dropout=0.5)),
        ("hconv", LohaModule, "conv", dict(lora_dim=2, alpha=1.0, rank_dropout=0.5)),
        ("klin", LokrModule, "lin", dict(lora_dim=1, alpha=2.0, multiplier=0.6, rank_dropout=0.5)),
        ("kconv", LokrModule, "conv", dict(lora_dim=2, alpha=1.0, rank_dropout=0.5)),
        ("tconv", LoConModule, "conv", dict(lora_dim=2, alpha=1.0, multiplier=0.6, use_tucker=True)),
        ("tdconv", LoConModule, "conv", dict(lora_dim=2, alpha=1.0, rank_dropout=0.5, use_tucker=True)),
        ("tbconv", LoConModule, "conv", dict(lora_dim=2, alpha=1.0, rank_dropout=0.5, dropout=0.3, bypass_mode=True,
                                             use_tucker=True)),
        ("tsconv", LoConModule, "sconv", dict(lora_dim=2, alpha=2.0, use_tucker=True)),
        ("htconv", LohaModule, "conv", dict(lora_dim=2, alpha=1.0, multiplier=0.6, use_tucker=True)),
        ("htdconv", LohaModule, "conv", dict(lora_dim=2, alpha=1.0, rank_dropout=0.5, use_tucker=True)),
    ]
    for case, cls, kind, kw in cases:
        org = hosts[kind]
        m = cls(case, org, **kw)
        m.train()
        params = [(n, p) for n, p in m.named_parameters() if not n.startswith("org")]
        with torch.no_grad():
            for n, p in params:
                p.copy_(real_rand(p.shape) - 0.5)
        y_shape = rs[kind].shape
        if kw.get("use_tucker"):
            assert m.tucker, case
            assert tuple((m.lora_mid.weight if cls is LoConModule else m.hada_t1).shape) == (2, 2, 3, 3), case
        if not kw.get("rank_dropout"):
            fed = Fed([])
        elif kw.get("bypass_mode"):
            kr = keep(kw["lora_dim"])
            ko = keep(*y_shape)
            m.dropout = FedDropout(ko, kw["dropout"])
            out[case + ".keep_rank"] = kr
            out[case + ".keep"] = ko
            fed = Fed([kr])
        else:
            ko = keep(org.weight.shape[0])
            out[case + ".keep"] = ko
            fed = Fed([ko])
        x = xs[kind].clone().requires_grad_(True)
        masks = list(fed.masks)
        torch.rand = fed
        try:
            y = m(x)
        finally:
            torch.rand = real_rand
        assert not fed.masks
        (y * rs[kind]).sum().backward()
        if cls is LohaModule and kw.get("use_tucker"):
            # LyCORIS's HadaWeightTucker.backward takes hada_w?_a's gradient from the OTHER factor's t·w_b product
            # (lycoris/functional/loha.py: grad_w1u uses temp = t2·w2d, grad_w2u temp = t1·w1d), which is not the
            # derivative of its forward: keep those values as lyc_d*, and take the reference gradients from
            # autograd through the same forward (its einsums, HadaWeightTucker.forward's expression)
            import lycoris.functional.loha as fl
            for n, p in params:
                out[case + ".lyc_d" + n.replace(".weight", "")] = p.grad.clone()
                p.grad = None
            real_apply = fl.HadaWeightTucker.apply

            def plain(t1, w1d, w1u, t2, w2d, w2u, scale=torch.tensor(1)):
                r1 = torch.einsum("i j ..., j r, i p -> p r ...", t1, w1d, w1u)
                r2 = torch.einsum("i j ..., j r, i p -> p r ...", t2, w2d, w2u)
                return r1 * r2 * scale
            fl.HadaWeightTucker.apply = plain
            x2 = xs[kind].clone().requires_grad_(True)
            torch.rand = Fed(masks)
            try:
                y2 = m(x2)
            finally:
                torch.rand = real_rand
                fl.HadaWeightTucker.apply = real_apply
            (y2 * rs[kind]).sum().backward()
            assert (y2 - y).abs().max() < 1e-6
            x = x2
        out[case + ".alpha"] = m.alpha.reshape(1)
        for n, p in params:
            key = n.replace(".weight", "")
            out[case + "." + key] = p
            out[case + ".d" + key] = p.grad
        out[case + ".y"] = y
        out[case + ".dx"] = x.grad
        # the masks did something: the same module without them gives another output
        m.eval()
        if kw.get("rank_dropout"):
            assert (m(xs[kind]) - y).abs().max() > 1e-4, case
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "golden_lycoris_train2.safetensors"), out)
    for k in sorted(out):
        print(k, tuple(out[k].shape))


if __name__ == "__main__":
    main()
