#!/usr/bin/python3
"""Golden outputs of the SD VAE (ldm AutoencoderKL) for tests/golden/test_vae_golden.c.
Run once by hand with Debian's /usr/bin/python3 (python3-torch 1.13); the outputs are committed.

The modules are a plain transcription of CompVis ldm/modules/diffusionmodules/model.py (Encoder,
Decoder, ResnetBlock with temb_channels=0, AttnBlock, Downsample with pad (0,1,0,1), Upsample)
and ldm/models/autoencoder.py AutoencoderKL (quant_conv, post_quant_conv) +
ldm/modules/distributions DiagonalGaussianDistribution (logvar clamped to [-30, 20]), with the
same module names, so state_dict keys equal the checkpoint's under first_stage_model.

Weights are random, rounded to float16 and stored as F16 (the model runs in float32 on the rounded
values, so the C loader's F16 -> F32 conversion is exact).

Files (tests/data/golden/vae/):
  golden_vae_a.safetensors  SD-like: ch 32, ch_mult (1,2), 1 res block, no level attention, z 4
  golden_vae_b.safetensors  ch 32, ch_mult (1,1), 2 res blocks, attn_resolutions [16] (resolution 32)
each holding first_stage_model.* weights plus
  golden.x [2,3,32,32] (image in [-1,1]), golden.moments [2,8,16,16] (quant_conv output),
  golden.noise [2,4,16,16], golden.sample = mean + exp(0.5*clamp(logvar)) * noise,
  golden.z [2,4,16,16], golden.dec [2,3,32,32] = decoder(post_quant_conv(z)).
  vae_diffusers_keys_a.txt: "ldm_key diffusers_key diffusers_key_pre_0.17" per weight of model A,
  from a transcription of kohya's convert_ldm_vae_checkpoint (library/model_util.py) for both
  diffusers attention namings (to_q/to_k/to_v/to_out.0 and query/key/value/proj_attn); those
  weights are 2-D [C, C] in Diffusers files.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "golden", "vae")


def nonlinearity(x):
    return x * torch.sigmoid(x)


def Normalize(in_channels, num_groups=32):
    return torch.nn.GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x)


class Downsample(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        x = torch.nn.functional.pad(x, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = torch.nn.Dropout(0.0)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = torch.nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x, temb=None):
        h = self.conv1(nonlinearity(self.norm1(x)))
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.norm = Normalize(in_channels)
        self.q = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.k = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.v = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.proj_out = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        h_ = self.norm(x)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        q = q.reshape(b, c, h * w).permute(0, 2, 1)   # b,hw,c
        k = k.reshape(b, c, h * w)                    # b,c,hw
        w_ = torch.bmm(q, k) * (int(c) ** (-0.5))
        w_ = torch.nn.functional.softmax(w_, dim=2)
        v = v.reshape(b, c, h * w)
        w_ = w_.permute(0, 2, 1)
        h_ = torch.bmm(v, w_).reshape(b, c, h, w)
        return x + self.proj_out(h_)


class Encoder(nn.Module):
    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 double_z=True):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = torch.nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        curr_res = resolution
        in_ch_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for i_block in range(self.num_res_blocks):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res = curr_res // 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = Normalize(block_in)
        self.conv_out = torch.nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, 1, 1)

    def forward(self, x):
        hs = [self.conv_in(x)]
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](hs[-1])
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                hs.append(self.down[i_level].downsample(hs[-1]))
        h = hs[-1]
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        block_in = ch * ch_mult[self.num_resolutions - 1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = torch.nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for i_block in range(self.num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res = curr_res * 2
            self.up.insert(0, up)
        self.norm_out = Normalize(block_in)
        self.conv_out = torch.nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, ddconfig, embed_dim):
        super().__init__()
        self.encoder = Encoder(**ddconfig)
        dd = dict(ddconfig)
        dd.pop("in_channels")
        dd.pop("double_z")
        self.decoder = Decoder(out_ch=3, **dd)
        self.quant_conv = torch.nn.Conv2d(2 * ddconfig["z_channels"], 2 * embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def encode(self, x):
        return self.quant_conv(self.encoder(x))   # moments

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def sample(moments, noise):
    """DiagonalGaussianDistribution(moments).sample() with the given standard normal noise."""
    mean, logvar = torch.chunk(moments, 2, dim=1)
    logvar = torch.clamp(logvar, -30.0, 20.0)
    std = torch.exp(0.5 * logvar)
    return mean + std * noise


# ---- kohya convert_ldm_vae_checkpoint (model_util.py), transcribed for the key names --------------


def shave_segments(path, n_shave_prefix_segments=1):
    if n_shave_prefix_segments >= 0:
        return ".".join(path.split(".")[n_shave_prefix_segments:])
    return ".".join(path.split(".")[:n_shave_prefix_segments])


def renew_vae_resnet_paths(old_list):
    return [{"old": o, "new": shave_segments(o.replace("nin_shortcut", "conv_shortcut"), 0)} for o in old_list]


def renew_vae_attention_paths(old_list, new_naming):
    mapping = []
    for old_item in old_list:
        n = old_item.replace("norm.weight", "group_norm.weight").replace("norm.bias", "group_norm.bias")
        if not new_naming:
            n = n.replace("q.weight", "query.weight").replace("q.bias", "query.bias")
            n = n.replace("k.weight", "key.weight").replace("k.bias", "key.bias")
            n = n.replace("v.weight", "value.weight").replace("v.bias", "value.bias")
            n = n.replace("proj_out.weight", "proj_attn.weight").replace("proj_out.bias", "proj_attn.bias")
        else:
            n = n.replace("q.weight", "to_q.weight").replace("q.bias", "to_q.bias")
            n = n.replace("k.weight", "to_k.weight").replace("k.bias", "to_k.bias")
            n = n.replace("v.weight", "to_v.weight").replace("v.bias", "to_v.bias")
            n = n.replace("proj_out.weight", "to_out.0.weight").replace("proj_out.bias", "to_out.0.bias")
        mapping.append({"old": old_item, "new": shave_segments(n, 0)})
    return mapping


def assign_to_checkpoint(paths, checkpoint, old_checkpoint, additional_replacements):
    for path in paths:
        new_path = path["new"]
        for replacement in additional_replacements:
            new_path = new_path.replace(replacement["old"], replacement["new"])
        checkpoint[new_path] = path["old"]


def convert_ldm_vae_keys(vae_state_dict, new_naming):
    """Returns {diffusers key: ldm key} like kohya's convert_ldm_vae_checkpoint."""
    vae_state_dict = dict(vae_state_dict)
    new = {}
    for k in ["encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out", "quant_conv",
              "post_quant_conv"]:
        for s in ("weight", "bias"):
            new[f"{k}.{s}"] = f"{k}.{s}"
    for s in ("weight", "bias"):
        new[f"encoder.conv_norm_out.{s}"] = f"encoder.norm_out.{s}"
        new[f"decoder.conv_norm_out.{s}"] = f"decoder.norm_out.{s}"
    num_down_blocks = len({".".join(layer.split(".")[:3]) for layer in vae_state_dict if "encoder.down" in layer})
    down_blocks = {i: [key for key in vae_state_dict if f"down.{i}" in key] for i in range(num_down_blocks)}
    num_up_blocks = len({".".join(layer.split(".")[:3]) for layer in vae_state_dict if "decoder.up" in layer})
    up_blocks = {i: [key for key in vae_state_dict if f"up.{i}" in key] for i in range(num_up_blocks)}
    for i in range(num_down_blocks):
        resnets = [key for key in down_blocks[i] if f"down.{i}" in key and f"down.{i}.downsample" not in key]
        if f"encoder.down.{i}.downsample.conv.weight" in vae_state_dict:
            for s in ("weight", "bias"):
                new[f"encoder.down_blocks.{i}.downsamplers.0.conv.{s}"] = f"encoder.down.{i}.downsample.conv.{s}"
                vae_state_dict.pop(f"encoder.down.{i}.downsample.conv.{s}")
        assign_to_checkpoint(renew_vae_resnet_paths(resnets), new, vae_state_dict,
                             [{"old": f"down.{i}.block", "new": f"down_blocks.{i}.resnets"}])
    for part in ("encoder", "decoder"):
        mid_resnets = [key for key in vae_state_dict if f"{part}.mid.block" in key]
        for i in range(1, 3):
            resnets = [key for key in mid_resnets if f"{part}.mid.block_{i}" in key]
            assign_to_checkpoint(renew_vae_resnet_paths(resnets), new, vae_state_dict,
                                 [{"old": f"mid.block_{i}", "new": f"mid_block.resnets.{i - 1}"}])
        mid_attentions = [key for key in vae_state_dict if f"{part}.mid.attn" in key]
        assign_to_checkpoint(renew_vae_attention_paths(mid_attentions, new_naming), new, vae_state_dict,
                             [{"old": "mid.attn_1", "new": "mid_block.attentions.0"}])
        if part == "encoder":
            for i in range(num_up_blocks):
                block_id = num_up_blocks - 1 - i
                resnets = [key for key in up_blocks[block_id]
                           if f"up.{block_id}" in key and f"up.{block_id}.upsample" not in key]
                if f"decoder.up.{block_id}.upsample.conv.weight" in vae_state_dict:
                    for s in ("weight", "bias"):
                        new[f"decoder.up_blocks.{i}.upsamplers.0.conv.{s}"] = f"decoder.up.{block_id}.upsample.conv.{s}"
                assign_to_checkpoint(renew_vae_resnet_paths(resnets), new, vae_state_dict,
                                     [{"old": f"up.{block_id}.block", "new": f"up_blocks.{i}.resnets"}])
    return new


# ---- output ----------------------------------------------------------------------------------


def write_safetensors(path, tensors, f16):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        if name in f16:
            a, dt = np.ascontiguousarray(t.numpy().astype('<f2')), "F16"
        else:
            a, dt = np.ascontiguousarray(t.numpy().astype('<f4')), "F32"
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def randomize(module, gen):
    for name, p in module.named_parameters():
        with torch.no_grad():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * (3.0 / fan_in) ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * (torch.rand(p.shape, generator=gen) * 2 - 1))
            else:
                p.copy_(0.3 * (torch.rand(p.shape, generator=gen) * 2 - 1))
            p.copy_(p.half().float())


def make(name, ddconfig, gen):
    model = AutoencoderKL(ddconfig, 4)
    randomize(model, gen)
    sd = model.state_dict()
    out = {"first_stage_model." + k: v for k, v in sd.items()}
    f16 = set(out)
    x = torch.rand((2, 3, 32, 32), generator=gen) * 2 - 1
    with torch.no_grad():
        moments = model.encode(x)
        moments[1, 4:, 0, 0] = 25.0     # exercise the logvar clamp
        moments[1, 4:, 0, 1] = -40.0
        noise = torch.randn((2, 4, 16, 16), generator=gen)
        smp = sample(moments, noise)
        z = torch.randn((2, 4, 16, 16), generator=gen)
        dec = model.decode(z)
    out.update({"golden.x": x, "golden.moments": moments, "golden.noise": noise, "golden.sample": smp,
                "golden.z": z, "golden.dec": dec})
    write_safetensors(os.path.join(OUT, f"golden_vae_{name}.safetensors"), out, f16)
    print(name, "params", sum(v.numel() for v in sd.values()), "max|moments|", float(moments.abs().max()),
          "max|dec|", float(dec.abs().max()))
    return sd


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(4321)
    sd = make("a", dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=[], in_channels=3,
                        resolution=32, z_channels=4, double_z=True), gen)
    make("b", dict(ch=32, ch_mult=(1, 1), num_res_blocks=2, attn_resolutions=[16], in_channels=3,
                   resolution=32, z_channels=4, double_z=True), gen)
    new = convert_ldm_vae_keys(sd, True)
    old = convert_ldm_vae_keys(sd, False)
    inv_new = {v: k for k, v in new.items()}
    inv_old = {v: k for k, v in old.items()}
    assert set(inv_new) == set(sd) == set(inv_old), set(sd) ^ set(inv_new)
    with open(os.path.join(OUT, "vae_diffusers_keys_a.txt"), "w") as f:
        for k in sorted(sd):
            f.write(f"{k} {inv_new[k]} {inv_old[k]}\n")


if __name__ == "__main__":
    main()
