#!/usr/bin/python3
"""Golden data for the ConvNeXt WD tagger (lib/models/tagger_convnext.c; tests/golden/
test_tagger_golden.c, tests/cli/tag.sh). Run once by hand with Debian's /usr/bin/python3
(python3-torch 1.13); the outputs are committed under tests/data/tagger/.

Model: a plain-PyTorch transcription of timm's ConvNeXt (timm/models/convnext.py: ConvNeXtBlock,
ConvNeXtStage, ConvNeXt with stem_type "patch", conv_mlp False, head_norm_first False, no
head_hidden_size; timm.layers LayerNorm2d, Mlp, NormMlpClassifierHead) for the
wd-convnext-tagger-v3 configuration (convnext_base, act_layer gelu_tanh): module names equal
timm's, so the state_dict keys are the real ones:
  stem.0 Conv2d(3, d0, 4, 4) + stem.1 LayerNorm2d (eps 1e-6)
  stages.S.downsample = [LayerNorm2d, Conv2d(d_prev, d, 2, 2)] for S > 0 (stage 0: Identity)
  stages.S.blocks.B: conv_dw (depthwise 7x7, pad 3) -> permute NHWC -> norm (LayerNorm, eps 1e-6)
    -> mlp.fc1 -> GELU(tanh) -> mlp.fc2 -> permute NCHW -> * gamma -> + shortcut
  head: adaptive avg pool -> head.norm (LayerNorm2d on [N,C,1,1]) -> flatten -> head.fc
Tiny sizes: dims 8/16/16/32, depths 1/1/2/1, 24 classes, input 64 (declared in __metadata__
img_size, since the input size is not in a ConvNeXt's shapes). Weights random (gamma too, instead
of timm's 1e-6 init, so the blocks matter), rounded to float16 and stored as F16; logits in
float32 from the rounded weights.
  -> convnext_tiny.safetensors (the model), convnext_golden.safetensors: golden.x [2,3,64,64],
     golden.logits [2,24] (gelu_tanh, the v3 config), golden.logits_gelu [2,24] (the same weights
     with the exact erf GELU: __metadata__ act_layer "gelu").
"""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from make_tagger_golden import OUT, save_st


class LayerNorm2d(nn.LayerNorm):
    """timm.layers.LayerNorm2d: LayerNorm over the channels of NCHW."""

    def __init__(self, c):
        super().__init__(c, eps=1e-6)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, act):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim, act)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.mlp(x)
        x = x.permute(0, 3, 1, 2)
        x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return x + shortcut


class ConvNeXtStage(nn.Module):
    def __init__(self, cin, cout, stride, depth, act):
        super().__init__()
        if cin != cout or stride > 1:
            self.downsample = nn.Sequential(LayerNorm2d(cin), nn.Conv2d(cin, cout, 2, stride=2, bias=True))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(cout, act) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class NormMlpClassifierHead(nn.Module):
    """timm NormMlpClassifierHead with hidden_size None: pool -> norm -> flatten -> fc."""

    def __init__(self, dim, classes):
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, 1)
        x = self.norm(x)
        return self.fc(x.flatten(1))


class ConvNeXt(nn.Module):
    def __init__(self, dims, depths, classes, act):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4, bias=True), LayerNorm2d(dims[0]))
        stages, prev = [], dims[0]
        for i in range(4):
            stages.append(ConvNeXtStage(prev, dims[i], 2 if i > 0 else 1, depths[i], act))
            prev = dims[i]
        self.stages = nn.Sequential(*stages)
        self.norm_pre = nn.Identity()
        self.head = NormMlpClassifierHead(prev, classes)

    def forward(self, x):
        return self.head(self.norm_pre(self.stages(self.stem(x))))


def main():
    torch.manual_seed(4321)
    m = ConvNeXt((8, 16, 16, 32), (1, 1, 2, 1), 24, nn.GELU(approximate="tanh"))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.5 * torch.rand_like(p))
            elif p.dim() == 1 and name.endswith(".weight"):  # LayerNorm scales
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * (1.5 / math.sqrt(fan_in)))
            p.copy_(p.half().float())  # stored as F16
    m.eval()
    sd = {k: v.detach().half().numpy() for k, v in m.state_dict().items()}
    save_st(os.path.join(OUT, "convnext_tiny.safetensors"), sd, {"img_size": "64", "format": "pt"})
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        y = m(x)
        for mod in m.modules():
            if isinstance(mod, Mlp):
                mod.act = nn.GELU()
        y2 = m(x)
    save_st(os.path.join(OUT, "convnext_golden.safetensors"),
            {"golden.x": x.numpy(), "golden.logits": y.numpy(), "golden.logits_gelu": y2.numpy()})
    print("keys", len(sd), "logits", tuple(y.shape), float(y.abs().max()), "gelu vs tanh",
          float((y - y2).abs().max()))


if __name__ == "__main__":
    main()
