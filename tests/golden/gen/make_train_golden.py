#!/usr/bin/python3
"""Golden values for lib/train (tests/unit/test_optim.c, test_lr_sched.c, test_lora_file.c).

Run by hand with /usr/bin/python3 (torch 1.13 from Debian); writes tests/data/train/*.txt.
Values are written with float.hex() so the C side reads them exactly.

  adamw.txt     torch.optim.AdamW, 5 steps over fixed gradients, two param groups, with and without
                torch.nn.utils.clip_grad_norm_, per-step LR changes, non-default betas/weight decay
  lr_sched.txt  the reference's schedulers (transformers.optimization lambdas as kohya's
                get_scheduler_fix calls them, transcribed; neither transformers nor diffusers is
                installed here) for several warm-up / cycle / power settings
  lora_names.txt kohya LoRANetwork.create_modules names over a Diffusers-named module tree of a
                tiny SD1 UNet (transcription of networks/lora.py + the Diffusers module layout)
"""
import math
import os
import sys

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train")


def hx(v):
    return float(v).hex()


def put(f, name, values):
    values = [float(x) for x in values]
    f.write("%s %d %s\n" % (name, len(values), " ".join(hx(v) for v in values)))


# ---------------------------------------------------------------------------------------------
def adamw_case(f, tag, shapes, group_of, lrs, kwargs, clip, lr_factors):
    g = torch.Generator().manual_seed(1234 + len(tag))
    params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    groups = []
    for gi, lr in enumerate(lrs):
        groups.append({"params": [p for p, k in zip(params, group_of) if k == gi], "lr": lr})
    opt = torch.optim.AdamW(groups, lr=lrs[0], **kwargs)
    for i, p in enumerate(params):
        put(f, "%s.p%d.init" % (tag, i), p.detach().flatten().tolist())
    for step in range(5):
        for i, p in enumerate(params):
            gr = torch.randn(*p.shape, generator=g) * (0.5 + step)
            if step == 2 and i == 0:
                gr = gr * 0  # a zero gradient: weight decay and momentum still apply
            p.grad = gr.clone()
            put(f, "%s.s%d.g%d" % (tag, step, i), gr.flatten().tolist())
        if clip:
            n = torch.nn.utils.clip_grad_norm_(params, clip)
            put(f, "%s.s%d.norm" % (tag, step), [n.item()])
        for gi, grp in enumerate(opt.param_groups):
            grp["lr"] = lrs[gi] * lr_factors[step]
        opt.step()
        for i, p in enumerate(params):
            put(f, "%s.s%d.p%d" % (tag, step, i), p.detach().flatten().tolist())
            st = opt.state[p]
        opt.zero_grad()
    for i, p in enumerate(params):
        st = opt.state[p]
        put(f, "%s.final.m%d" % (tag, i), st["exp_avg"].flatten().tolist())
        put(f, "%s.final.v%d" % (tag, i), st["exp_avg_sq"].flatten().tolist())


def make_adamw():
    with open(os.path.join(OUT, "adamw.txt"), "w") as f:
        f.write("# torch %s AdamW goldens (make_train_golden.py)\n" % torch.__version__)
        shapes = [(7,), (3, 5), (4,)]
        adamw_case(f, "plain", shapes, [0, 0, 1], [1e-3, 5e-4], {}, 0, [1, 1, 1, 1, 1])
        adamw_case(f, "clip", shapes, [0, 0, 1], [1e-2, 2e-3], {}, 1.0, [0.0, 0.5, 1.0, 0.75, 0.25])
        adamw_case(f, "args", shapes, [0, 1, 1], [3e-3, 1e-4],
                   {"betas": (0.8, 0.99), "weight_decay": 0.1, "eps": 1e-6}, 0.5, [1, 0.9, 0.8, 0.7, 0.6])


# ---------------------------------------------------------------------------------------------
# transformers.optimization lambdas (the six schedulers kohya takes from TYPE_TO_SCHEDULER_FUNCTION)
def lam_constant(s, W, T, **k):
    return 1.0


def lam_constant_with_warmup(s, W, T, **k):
    if s < W:
        return float(s) / float(max(1.0, W))
    return 1.0


def lam_linear(s, W, T, **k):
    if s < W:
        return float(s) / float(max(1, W))
    return max(0.0, float(T - s) / float(max(1, T - W)))


def lam_cosine(s, W, T, num_cycles=0.5, **k):
    if s < W:
        return float(s) / float(max(1, W))
    progress = float(s - W) / float(max(1, T - W))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def lam_cosine_with_restarts(s, W, T, num_cycles=1, **k):
    if s < W:
        return float(s) / float(max(1, W))
    progress = float(s - W) / float(max(1, T - W))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def lam_polynomial(s, W, T, lr_init=1.0, lr_end=1e-7, power=1.0, **k):
    if s < W:
        return float(s) / float(max(1, W))
    elif s > T:
        return lr_end / lr_init
    else:
        lr_range = lr_init - lr_end
        decay_steps = T - W
        pct_remaining = 1 - (s - W) / decay_steps
        decay = lr_range * pct_remaining ** power + lr_end
        return decay / lr_init


LAMBDAS = {
    "constant": lam_constant, "constant_with_warmup": lam_constant_with_warmup, "linear": lam_linear,
    "cosine": lam_cosine, "cosine_with_restarts": lam_cosine_with_restarts, "polynomial": lam_polynomial,
}


def int_or_float(value):  # kohya's --lr_warmup_steps type
    if value.endswith("%"):
        return float(value[:-1]) / 100.0
    float_value = float(value)
    if float_value >= 1:
        return int(value)
    return float(value)


def make_lr():
    cases = [
        # name, warmup string, max_train_steps, num_processes, cycles, power, lr_init
        ("constant", "0", 20, 1, 1, 1.0, 1e-4),
        ("constant_with_warmup", "5", 20, 1, 1, 1.0, 1e-4),
        ("constant_with_warmup", "0.25", 20, 2, 1, 1.0, 1e-4),
        ("linear", "0", 20, 1, 1, 1.0, 1e-4),
        ("linear", "4", 20, 1, 1, 1.0, 1e-4),
        ("linear", "10%", 30, 1, 1, 1.0, 1e-4),
        ("cosine", "0", 25, 1, 1, 1.0, 1e-4),
        ("cosine", "0.1", 25, 1, 1, 1.0, 1e-4),
        ("cosine_with_restarts", "3", 30, 1, 3, 1.0, 1e-4),
        ("cosine_with_restarts", "0", 17, 1, 1, 1.0, 1e-4),
        ("cosine_with_restarts", "0.2", 40, 1, 4, 1.0, 1e-4),
        ("polynomial", "0", 20, 1, 1, 1.0, 1e-4),
        ("polynomial", "5", 20, 1, 1, 2.0, 1e-3),
        ("polynomial", "0.3", 23, 1, 1, 0.5, 2e-6),
    ]
    with open(os.path.join(OUT, "lr_sched.txt"), "w") as f:
        f.write("# case: name warmup max_train_steps num_processes num_cycles power lr_init ; factors for "
                "scheduler steps 0..T+2\n")
        for name, wu, mts, P, cyc, power, lr0 in cases:
            T = mts * P
            w = int_or_float(wu)
            W = int(w * T) if isinstance(w, float) else w
            kw = {}
            if name == "cosine_with_restarts":
                kw["num_cycles"] = cyc
            if name == "polynomial":
                kw["power"] = power
                kw["lr_init"] = lr0
            vals = [LAMBDAS[name](s, W, T, **kw) for s in range(T + 3)]
            f.write("case %s %s %d %d %d %s %s W=%d\n" % (name, wu, mts, P, cyc, hx(power), hx(lr0), W))
            put(f, "f", vals)


# ---------------------------------------------------------------------------------------------
# A Diffusers-named module tree of a tiny SD1 UNet, with the class names kohya's LoRANetwork
# looks for, and kohya's create_modules over it.
class Transformer2DModel(torch.nn.Module):
    pass


class ResnetBlock2D(torch.nn.Module):
    pass


class Downsample2D(torch.nn.Module):
    pass


class Upsample2D(torch.nn.Module):
    pass


class BasicTransformerBlock(torch.nn.Module):
    pass


class Attention(torch.nn.Module):
    pass


class GEGLU(torch.nn.Module):
    pass


class FeedForward(torch.nn.Module):
    pass


def m(cls, **children):
    x = cls() if cls is not None else torch.nn.Module()
    for k, v in children.items():
        x.add_module(k, v)
    return x


def resnet(cin, cout, temb):
    r = m(ResnetBlock2D, norm1=torch.nn.GroupNorm(1, cin), conv1=torch.nn.Conv2d(cin, cout, 3, padding=1),
          time_emb_proj=torch.nn.Linear(temb, cout), norm2=torch.nn.GroupNorm(1, cout),
          dropout=torch.nn.Dropout(0.0), conv2=torch.nn.Conv2d(cout, cout, 3, padding=1))
    if cin != cout:
        r.add_module("conv_shortcut", torch.nn.Conv2d(cin, cout, 1))
    return r


def attention(q_dim, kv_dim):
    to_out = torch.nn.ModuleList([torch.nn.Linear(q_dim, q_dim), torch.nn.Dropout(0.0)])
    return m(Attention, to_q=torch.nn.Linear(q_dim, q_dim, bias=False),
             to_k=torch.nn.Linear(kv_dim, q_dim, bias=False), to_v=torch.nn.Linear(kv_dim, q_dim, bias=False),
             to_out=to_out)


def transformer(ch, ctx, depth):
    blocks = torch.nn.ModuleList()
    for _ in range(depth):
        ff = m(FeedForward, net=torch.nn.ModuleList([m(GEGLU, proj=torch.nn.Linear(ch, ch * 8)),
                                                     torch.nn.Dropout(0.0), torch.nn.Linear(ch * 4, ch)]))
        blocks.append(m(BasicTransformerBlock, attn1=attention(ch, ch), norm1=torch.nn.LayerNorm(ch),
                        attn2=attention(ch, ctx), norm2=torch.nn.LayerNorm(ch), ff=ff,
                        norm3=torch.nn.LayerNorm(ch)))
    return m(Transformer2DModel, norm=torch.nn.GroupNorm(1, ch), proj_in=torch.nn.Conv2d(ch, ch, 1),
             transformer_blocks=blocks, proj_out=torch.nn.Conv2d(ch, ch, 1))


def tiny_unet(mc=32, mult=(1, 2, 2), attn_levels=(0, 1), nres=2, ctx=48, depth=1):
    """UNet2DConditionModel layout: down_blocks (CrossAttnDownBlock2D/DownBlock2D), mid_block,
    up_blocks (reversed levels, nres+1 resnets each)."""
    temb = mc * 4
    u = m(None, conv_in=torch.nn.Conv2d(4, mc, 3, padding=1),
          time_embedding=m(None, linear_1=torch.nn.Linear(mc, temb), linear_2=torch.nn.Linear(temb, temb)))
    downs = torch.nn.ModuleList()
    ch = mc
    skip_chs = [mc]
    L = len(mult)
    for lvl in range(L):
        cout = mc * mult[lvl]
        blk = torch.nn.Module()
        resn = torch.nn.ModuleList()
        atts = torch.nn.ModuleList()
        for j in range(nres):
            resn.append(resnet(ch, cout, temb))
            ch = cout
            if lvl in attn_levels:
                atts.append(transformer(ch, ctx, depth))
            skip_chs.append(ch)
        blk.add_module("resnets", resn)
        if lvl in attn_levels:
            blk.add_module("attentions", atts)
        if lvl != L - 1:
            blk.add_module("downsamplers", torch.nn.ModuleList([m(Downsample2D, conv=torch.nn.Conv2d(ch, ch, 3, 2, 1))]))
            skip_chs.append(ch)
        downs.append(blk)
    u.add_module("down_blocks", downs)
    mid = torch.nn.Module()
    mid.add_module("attentions", torch.nn.ModuleList([transformer(ch, ctx, depth)]))
    mid.add_module("resnets", torch.nn.ModuleList([resnet(ch, ch, temb), resnet(ch, ch, temb)]))
    u.add_module("mid_block", mid)
    ups = torch.nn.ModuleList()
    for i, lvl in enumerate(reversed(range(L))):
        cout = mc * mult[lvl]
        blk = torch.nn.Module()
        resn = torch.nn.ModuleList()
        atts = torch.nn.ModuleList()
        for j in range(nres + 1):
            sk = skip_chs.pop()
            resn.append(resnet(ch + sk, cout, temb))
            ch = cout
            if lvl in attn_levels:
                atts.append(transformer(ch, ctx, depth))
        blk.add_module("resnets", resn)
        if lvl in attn_levels:
            blk.add_module("attentions", atts)
        if lvl != 0:
            blk.add_module("upsamplers", torch.nn.ModuleList([m(Upsample2D, conv=torch.nn.Conv2d(ch, ch, 3, padding=1))]))
        ups.append(blk)
    u.add_module("up_blocks", ups)
    u.add_module("conv_norm_out", torch.nn.GroupNorm(1, mc))
    u.add_module("conv_out", torch.nn.Conv2d(mc, 4, 3, padding=1))
    return u


UNET_TARGET_REPLACE_MODULE = ["Transformer2DModel"]
UNET_TARGET_REPLACE_MODULE_CONV2D_3X3 = ["ResnetBlock2D", "Downsample2D", "Upsample2D"]


def kohya_names(root, prefix, targets, conv):
    """networks/lora.py LoRANetwork.create_modules (names, kind, in, out, kernel)."""
    out = []
    for name, module in root.named_modules():
        if module.__class__.__name__ in targets:
            for child_name, child_module in module.named_modules():
                is_linear = child_module.__class__.__name__ == "Linear"
                is_conv2d = child_module.__class__.__name__ == "Conv2d"
                is_conv2d_1x1 = is_conv2d and child_module.kernel_size == (1, 1)
                if is_linear or is_conv2d:
                    lora_name = (prefix + "." + name + "." + child_name).replace(".", "_")
                    if not (is_linear or is_conv2d_1x1) and not conv:
                        continue
                    out.append(lora_name)
    return out


def make_names():
    u = tiny_unet()
    with open(os.path.join(OUT, "lora_names.txt"), "w") as f:
        f.write("# kohya LoRA names over a tiny SD1 UNet (model_channels 32, mult 1,2,2, attention at "
                "levels 0,1, 2 res blocks, context 48, depth 1)\n")
        for n in kohya_names(u, "lora_unet", UNET_TARGET_REPLACE_MODULE, False):
            f.write("lierla %s\n" % n)
        for n in kohya_names(u, "lora_unet", UNET_TARGET_REPLACE_MODULE + UNET_TARGET_REPLACE_MODULE_CONV2D_3X3, True):
            f.write("c3lier %s\n" % n)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    what = sys.argv[1:] or ["adamw", "lr", "names"]
    if "adamw" in what:
        make_adamw()
    if "lr" in what:
        make_lr()
    if "names" in what:
        make_names()
