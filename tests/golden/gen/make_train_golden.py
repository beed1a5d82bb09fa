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


# ---------------------------------------------------------------------------------------------
# sshs hashes: train_util.precalculate_safetensors_hashes over safetensors.torch.save(tensors,
# ss-only metadata); safetensors' serializer transcribed (no safetensors package here): header
# {"__metadata__": {...}, tensors sorted by dtype alignment descending then name}, compact JSON,
# padded with spaces to a multiple of 8.
import hashlib
import json
import struct

DT_ORDER = {"BOOL": 0, "U8": 1, "I8": 2, "F8_E5M2": 3, "F8_E4M3": 4, "I16": 5, "U16": 6, "F16": 7,
            "BF16": 8, "I32": 9, "U32": 10, "F32": 11, "F64": 12, "I64": 13, "U64": 14}


def st_serialize(tensors, metadata):
    """tensors: name -> (dtype, shape, bytes)."""
    names = sorted(tensors, key=lambda n: (-DT_ORDER[tensors[n][0]], n))
    hdr = {}
    if metadata is not None:
        hdr["__metadata__"] = metadata
    off = 0
    for n in names:
        dt, shape, b = tensors[n]
        hdr[n] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(tensors[n][2] for n in names)


def addnet_hashes(buf):
    n = struct.unpack("<Q", buf[:8])[0]
    model_hash = hashlib.sha256(buf[n + 8:]).hexdigest()
    legacy_hash = hashlib.sha256(buf[0x100000:0x110000]).hexdigest()[0:8]
    return model_hash, legacy_hash


HASH_MODS = [  # name, down shape, up shape, alpha
    ("lora_te_text_model_encoder_layers_0_mlp_fc1", (4, 48), (96, 4), 1),
    ("lora_unet_down_blocks_0_attentions_0_proj_in", (4, 32, 1, 1), (32, 4, 1, 1), 2),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2", (8, 40000), (16, 8), 8),
]


def hash_value(k, i):  # the same formula in test_lora_file.c
    return ((i * 7919 + k * 13) % 1000 - 500) / 256.0


def make_hashes():
    meta = [("ss_session_id", "12345"), ("ss_output_name", "tiny"), ("ss_learning_rate", "0.0001"),
            ("ss_network_dim", "4"), ("modelspec.title", "not hashed"), ("ss_v2", "False")]
    with open(os.path.join(OUT, "lora_hashes.txt"), "w") as f:
        f.write("# sshs_model_hash / sshs_legacy_hash (precalculate_safetensors_hashes transcription)\n")
        for case, dt, alpha_dt in (("f32", "F32", "F32"), ("fp16", "F16", "F16"), ("int_alpha", "F32", "I64")):
            tensors = {}
            for k, (name, ds, us, alpha) in enumerate(HASH_MODS):
                for j, (suffix, shape) in enumerate((("lora_down.weight", ds), ("lora_up.weight", us))):
                    cnt = 1
                    for s in shape:
                        cnt *= s
                    vals = [hash_value(2 * k + j, i) for i in range(cnt)]
                    fmt = "<%d%s" % (cnt, "f" if dt == "F32" else "e")
                    tensors[name + "." + suffix] = (dt, shape, struct.pack(fmt, *vals))
                if alpha_dt == "I64":
                    ab = struct.pack("<q", alpha)
                else:
                    ab = struct.pack("<f" if alpha_dt == "F32" else "<e", float(alpha))
                tensors[name + ".alpha"] = (alpha_dt, (), ab)
            ss = {k: v for k, v in meta if k.startswith("ss_")}
            mh, lh = addnet_hashes(st_serialize(tensors, ss))
            f.write("case %s %s %s\n" % (case, mh, lh))
        for k, v in meta:
            f.write("meta %s %s\n" % (k, v))



# ---------------------------------------------------------------------------------------------
# train_network.py's metadata dict for one set of argument values (no --dataset_config), then
# {k: str(v)}: the key order and Python str() formatting test_lora_file.c reproduces.
def make_ss():
    A = dict(output_name="tiny", learning_rate=1e-4, unet_lr=None, network_dim=4, network_alpha=1,
             network_dropout=None, mixed_precision="no", full_fp16=False, v2=False, clip_skip=None,
             max_token_length=None, cache_latents=True, seed=42, lowram=False, noise_offset=0.05,
             multires_noise_iterations=None, multires_noise_discount=0.3, adaptive_noise_scale=None,
             zero_terminal_snr=False, training_comment=None, max_grad_norm=1.0, caption_dropout_rate=0.0,
             caption_dropout_every_n_epochs=0, caption_tag_dropout_rate=0.0, face_crop_aug_range=None,
             prior_loss_weight=1.0, min_snr_gamma=5.0, scale_weight_norms=None, ip_noise_gamma=None,
             debiased_estimation_loss=False, noise_offset_random_strength=False,
             ip_noise_gamma_random_strength=False, loss_type="l2", huber_schedule="snr", huber_scale=1.0,
             huber_c=0.1, fp8_base=False, fp8_base_unet=False, validation_seed=None, validation_split=0.0,
             max_validation_steps=None, validate_every_n_epochs=None, validate_every_n_steps=None,
             resize_interpolation=None, gradient_checkpointing=True, gradient_accumulation_steps=2,
             max_train_steps=1600, lr_warmup_steps=0.1, lr_scheduler="cosine", network_module="networks.lora",
             train_batch_size=2, resolution=(512, 768), color_aug=False, flip_aug=True, random_crop=False,
             shuffle_caption=True, keep_tokens=1)
    md = {
        "ss_session_id": 3141592653, "ss_training_started_at": 1732650000.123456, "ss_output_name": A["output_name"],
        "ss_learning_rate": A["learning_rate"], "ss_text_encoder_lr": 5e-05, "ss_unet_lr": A["unet_lr"],
        "ss_num_train_images": 40, "ss_num_validation_images": 0, "ss_num_reg_images": 0,
        "ss_num_batches_per_epoch": 20, "ss_num_epochs": 80,
        "ss_gradient_checkpointing": A["gradient_checkpointing"],
        "ss_gradient_accumulation_steps": A["gradient_accumulation_steps"], "ss_max_train_steps": A["max_train_steps"],
        "ss_lr_warmup_steps": A["lr_warmup_steps"], "ss_lr_scheduler": A["lr_scheduler"],
        "ss_network_module": A["network_module"], "ss_network_dim": A["network_dim"],
        "ss_network_alpha": A["network_alpha"], "ss_network_dropout": A["network_dropout"],
        "ss_mixed_precision": A["mixed_precision"], "ss_full_fp16": bool(A["full_fp16"]), "ss_v2": bool(A["v2"]),
        "ss_base_model_version": "sd_v1", "ss_clip_skip": A["clip_skip"], "ss_max_token_length": A["max_token_length"],
        "ss_cache_latents": bool(A["cache_latents"]), "ss_seed": A["seed"], "ss_lowram": A["lowram"],
        "ss_noise_offset": A["noise_offset"], "ss_multires_noise_iterations": A["multires_noise_iterations"],
        "ss_multires_noise_discount": A["multires_noise_discount"], "ss_adaptive_noise_scale": A["adaptive_noise_scale"],
        "ss_zero_terminal_snr": A["zero_terminal_snr"], "ss_training_comment": A["training_comment"],
        "ss_sd_scripts_commit_hash": "(unknown)", "ss_optimizer": "torch.optim.adamw.AdamW(weight_decay=0.1)",
        "ss_max_grad_norm": A["max_grad_norm"], "ss_caption_dropout_rate": A["caption_dropout_rate"],
        "ss_caption_dropout_every_n_epochs": A["caption_dropout_every_n_epochs"],
        "ss_caption_tag_dropout_rate": A["caption_tag_dropout_rate"], "ss_face_crop_aug_range": A["face_crop_aug_range"],
        "ss_prior_loss_weight": A["prior_loss_weight"], "ss_min_snr_gamma": A["min_snr_gamma"],
        "ss_scale_weight_norms": A["scale_weight_norms"], "ss_ip_noise_gamma": A["ip_noise_gamma"],
        "ss_debiased_estimation": bool(A["debiased_estimation_loss"]),
        "ss_noise_offset_random_strength": A["noise_offset_random_strength"],
        "ss_ip_noise_gamma_random_strength": A["ip_noise_gamma_random_strength"], "ss_loss_type": A["loss_type"],
        "ss_huber_schedule": A["huber_schedule"], "ss_huber_scale": A["huber_scale"], "ss_huber_c": A["huber_c"],
        "ss_fp8_base": bool(A["fp8_base"]), "ss_fp8_base_unet": bool(A["fp8_base_unet"]),
        "ss_validation_seed": A["validation_seed"], "ss_validation_split": A["validation_split"],
        "ss_max_validation_steps": A["max_validation_steps"], "ss_validate_every_n_epochs": A["validate_every_n_epochs"],
        "ss_validate_every_n_steps": A["validate_every_n_steps"], "ss_resize_interpolation": A["resize_interpolation"],
    }
    md.update({
        "ss_batch_size_per_device": A["train_batch_size"], "ss_total_batch_size": 4, "ss_resolution": A["resolution"],
        "ss_color_aug": bool(A["color_aug"]), "ss_flip_aug": bool(A["flip_aug"]), "ss_random_crop": bool(A["random_crop"]),
        "ss_shuffle_caption": bool(A["shuffle_caption"]), "ss_enable_bucket": True, "ss_bucket_no_upscale": False,
        "ss_min_bucket_reso": 256, "ss_max_bucket_reso": 1024, "ss_keep_tokens": A["keep_tokens"],
        "ss_dataset_dirs": json.dumps({"10_sks dog": {"n_repeats": 10, "img_count": 4}}),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_tag_frequency": json.dumps({"10_sks dog": {"sks dog": 4, "caf\u00e9": 1}}),
        "ss_bucket_info": json.dumps({"buckets": {"0": {"resolution": [512, 768], "count": 40}}, "mean_img_ar_error": 0.0}),
    })
    md["ss_network_args"] = json.dumps({"conv_dim": "4", "conv_alpha": "1", "note": "caf\u00e9"})
    md["ss_sd_model_name"] = "tiny.safetensors"
    md = {k: str(v) for k, v in md.items()}
    with open(os.path.join(OUT, "ss_metadata.txt"), "w") as f:
        f.write("# train_network.py metadata for one argument set (key TAB value), make_train_golden.py\n")
        for k, v in md.items():
            f.write("%s\t%s\n" % (k, v))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    what = sys.argv[1:] or ["adamw", "lr", "names", "hashes", "ss"]
    if "adamw" in what:
        make_adamw()
    if "lr" in what:
        make_lr()
    if "names" in what:
        make_names()
    if "hashes" in what:
        make_hashes()
    if "ss" in what:
        make_ss()

