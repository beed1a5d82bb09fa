#!/usr/bin/python3
"""Golden OFT modules (kohya-ss networks/oft.py OFTModule) for tests/golden/test_oft_golden.c. Run
once by hand with Debian's /usr/bin/python3 (python3-torch); the output is committed.

OFTModule below is the reference's get_weight / forward, verbatim except that einops.rearrange is
written as reshape (the same layout: "(k n) ... -> k n ..."). Three cases, float32:
  lin   Linear(5 -> 12, bias), dim 3 (blocks 4x4), alpha 1 (constraint 12: the clamp is inactive),
        random blocks, x [2, 3, 5]
  conv  Conv2d(3 -> 6, 3x3, padding 1, bias), dim 2 (blocks 3x3), alpha 1e-3 (constraint 6e-3: the
        clamp is active), random blocks, x [2, 3, 5, 5]
  half  lin's module with multiplier 0.6
and a training run: lin's module from the reference's zero init, 3 AdamW steps (torch.optim.AdamW,
lr 1e-2, the defaults: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01) on L = sum(r * y).

Writes tests/data/oft/golden_oft.safetensors:
  <case>.weight, <case>.bias, <case>.blocks, <case>.x, <case>.r   inputs (L = sum(r * y))
  <case>.y, <case>.dx, <case>.dblocks                             output and gradients
  train.blocks.s<i>                                                blocks after AdamW step i (1..3)
  train.dblocks.s<i>                                               the gradient step i used
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_unet_golden import write_safetensors  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "oft")


class OFTModule(torch.nn.Module):
    def __init__(self, org_module, multiplier=1.0, dim=4, alpha=1):
        super().__init__()
        self.num_blocks = dim
        out_dim = org_module.out_features if isinstance(org_module, torch.nn.Linear) else org_module.out_channels
        self.constraint = alpha * out_dim
        self.register_buffer("alpha", torch.tensor(alpha))
        self.block_size = out_dim // self.num_blocks
        self.oft_blocks = torch.nn.Parameter(torch.zeros(self.num_blocks, self.block_size, self.block_size))
        self.I = torch.eye(self.block_size).unsqueeze(0).repeat(self.num_blocks, 1, 1)
        self.out_dim = out_dim
        self.multiplier = multiplier
        self.org_module = [org_module]

    def get_weight(self, multiplier=None):
        block_Q = self.oft_blocks - self.oft_blocks.transpose(1, 2)
        norm_Q = torch.norm(block_Q.flatten())
        new_norm_Q = torch.clamp(norm_Q, max=self.constraint)
        block_Q = block_Q * ((new_norm_Q + 1e-8) / (norm_Q + 1e-8))
        I = self.I
        block_R = torch.matmul(I + block_Q, (I - block_Q).float().inverse())
        block_R_weighted = self.multiplier * (block_R - I) + I
        return block_R_weighted

    def forward(self, x):
        org_module = self.org_module[0]
        R = self.get_weight().to(torch.float32)
        W = org_module.weight.to(torch.float32)
        k, n = self.num_blocks, self.block_size
        if len(W.shape) == 4:
            W_reshaped = W.reshape(k, n, *W.shape[1:])
            RW = torch.einsum("k n m, k n ... -> k m ...", R, W_reshaped)
            RW = RW.reshape(k * n, *W.shape[1:])
            return F.conv2d(x, RW, org_module.bias, org_module.stride, org_module.padding)
        W_reshaped = W.reshape(k, n, W.shape[1])
        RW = torch.einsum("k n m, k n p -> k m p", R, W_reshaped)
        RW = RW.reshape(k * n, W.shape[1])
        return F.linear(x, RW, org_module.bias)




def case(out, name, host, x, dim, alpha, mult, gen):
    with torch.no_grad():
        host.weight.copy_((torch.rand(host.weight.shape, generator=gen) * 2 - 1) * 0.5)
        host.bias.copy_((torch.rand(host.bias.shape, generator=gen) * 2 - 1) * 0.3)
    m = OFTModule(host, multiplier=mult, dim=dim, alpha=alpha)
    with torch.no_grad():
        m.oft_blocks.copy_((torch.rand(m.oft_blocks.shape, generator=gen) * 2 - 1) * 0.2)
    x = x.clone().requires_grad_(True)
    y = m(x)
    r = torch.rand(y.shape, generator=gen) * 2 - 1
    (y * r).sum().backward()
    norm = torch.norm((m.oft_blocks - m.oft_blocks.transpose(1, 2)).flatten()).item()
    print(name, "norm", norm, "constraint", m.constraint, "clamped", norm > m.constraint)
    out.update({name + ".weight": host.weight, name + ".bias": host.bias, name + ".blocks": m.oft_blocks,
                name + ".x": x, name + ".r": r, name + ".y": y, name + ".dx": x.grad,
                name + ".dblocks": m.oft_blocks.grad})
    return host


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    out = {}
    lin = torch.nn.Linear(5, 12)
    lin.requires_grad_(False)
    xl = torch.rand(2, 3, 5, generator=gen) * 2 - 1
    case(out, "lin", lin, xl, 3, 1.0, 1.0, gen)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1)
    conv.requires_grad_(False)
    xc = torch.rand(2, 3, 5, 5, generator=gen) * 2 - 1
    case(out, "conv", conv, xc, 2, 1e-3, 1.0, gen)
    half = torch.nn.Linear(5, 12)
    half.requires_grad_(False)
    case(out, "half", half, xl, 3, 1.0, 0.6, gen)
    # training from the reference's zero init on lin's weights and inputs
    m = OFTModule(lin, dim=3, alpha=1.0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    r = out["lin.r"]
    for s in range(1, 4):
        opt.zero_grad()
        (m(xl) * r).sum().backward()
        out["train.dblocks.s%d" % s] = m.oft_blocks.grad.clone()
        opt.step()
        out["train.blocks.s%d" % s] = m.oft_blocks.detach().clone()
    os.makedirs(OUT, exist_ok=True)
    write_safetensors(os.path.join(OUT, "golden_oft.safetensors"), out)


if __name__ == "__main__":
    main()
