#!/usr/bin/python3
"""Golden data for tests/golden/test_controlnet_golden.c (run once by hand with Debian's
/usr/bin/python3, torch 1.13; outputs are committed under tests/data/golden/controlnet/).

A plain-PyTorch transcription of diffusers' ControlNetModel as kohya-ss/sd-scripts'
train_control_net.py builds it (ControlNetModel.from_unet(unet); conditioning_channels 3,
conditioning_embedding_out_channels (16, 32, 96, 256), controlnet_conditioning_channel_order "rgb",
conditioning_scale 1.0, no guess mode) and of the UNet's use of its outputs
(UNet2DConditionModel.forward with down_block_additional_residuals / mid_block_additional_residual:
each residual is added to the skip connection of the same index, the middle one to the middle
block's output). The encoder half (conv_in, time embedding, down blocks, mid block) reuses the
ldm UNet transcription of make_unet_golden.py (the same math as diffusers' blocks, checked by
test_unet_golden.c); from_unet copies those modules, so here they are the UNet's own modules'
copies. The state_dict is converted to the names the reference saves with
model_util.convert_controlnet_state_dict_to_sd (transcribed below, its fixed 4 levels x 2 res
blocks generalised to the config's as make_unet_golden.py does for the UNet table).

The UNet is tests/data/golden/unet/sd1_tiny.safetensors (its f16 weights are read back here). Writes
  sd1_tiny_cn.safetensors       the ControlNet's own tensors (input_hint_block.*, zero_convs.*,
                                middle_block_out.*: the rest is the UNet's copy) under the reference's
                                saved (ldm) names, F16 values (random, also the zero-initialised convs,
                                so that every gradient is tested)
  sd1_tiny_cn_golden.safetensors  x, t, context, cond (RGB in [0, 1]), dy; the ControlNet's outputs
                                res.i (down residuals, then the middle one); the UNet output y with
                                them; the gradients dres.i of loss = sum(y * dy) with respect to the
                                residuals, grad.<ldm key> for some ControlNet parameters
  sd1_tiny_cn_names.txt         every saved (ldm) name with its Diffusers name
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_unet_golden import (CONFIGS, UNetModel, ldm_to_diffusers_map, randomize,  # noqa: E402
                              timestep_embedding, write_safetensors)

DATA = os.path.join(HERE, "..", "..", "data", "golden")
OUT = os.path.join(DATA, "controlnet")


def zero_module(m):
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ControlNetConditioningEmbedding(nn.Module):
    """diffusers.models.controlnet.ControlNetConditioningEmbedding"""

    def __init__(self, conditioning_embedding_channels, conditioning_channels=3, block_out_channels=(16, 32, 96, 256)):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList([])
        for i in range(len(block_out_channels) - 1):
            channel_in = block_out_channels[i]
            channel_out = block_out_channels[i + 1]
            self.blocks.append(nn.Conv2d(channel_in, channel_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(channel_in, channel_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = zero_module(
            nn.Conv2d(block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1))

    def forward(self, conditioning):
        embedding = self.conv_in(conditioning)
        embedding = F.silu(embedding)
        for block in self.blocks:
            embedding = block(embedding)
            embedding = F.silu(embedding)
        embedding = self.conv_out(embedding)
        return embedding


class ControlNetModel(nn.Module):
    """diffusers ControlNetModel.from_unet(unet) for an SD1/SD2 UNet; the copied modules keep the
    ldm names (time_embed, input_blocks, middle_block) until the state_dict conversion."""

    def __init__(self, unet, conditioning_embedding_out_channels=(16, 32, 96, 256)):
        super().__init__()
        import copy
        self.model_channels = unet.model_channels
        self.time_embed = copy.deepcopy(unet.time_embed)
        self.input_blocks = copy.deepcopy(unet.input_blocks)
        self.middle_block = copy.deepcopy(unet.middle_block)
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(
            unet.model_channels, 3, conditioning_embedding_out_channels)
        # the channels of each down residual (diffusers: the down blocks' resnets / downsamplers)
        chans = [blk[0].out_channels if hasattr(blk[0], "out_channels") else blk[0].weight.shape[0]
                 for blk in self.input_blocks]
        self.controlnet_down_blocks = nn.ModuleList([zero_module(nn.Conv2d(c, c, kernel_size=1)) for c in chans])
        mid = self.middle_block[-1].out_channels
        self.controlnet_mid_block = zero_module(nn.Conv2d(mid, mid, kernel_size=1))

    def forward(self, sample, timesteps, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0):
        t_emb = timestep_embedding(timesteps, self.model_channels).to(sample.dtype)   # flip_sin_to_cos, shift 0
        emb = self.time_embed(t_emb)
        sample = self.input_blocks[0](sample, emb, encoder_hidden_states)             # conv_in
        controlnet_cond = self.controlnet_cond_embedding(controlnet_cond)
        sample = sample + controlnet_cond
        down_block_res_samples = (sample,)
        for blk in self.input_blocks[1:]:
            sample = blk(sample, emb, encoder_hidden_states)
            down_block_res_samples += (sample,)
        sample = self.middle_block(sample, emb, encoder_hidden_states)
        controlnet_down_block_res_samples = ()
        for down_block_res_sample, controlnet_block in zip(down_block_res_samples, self.controlnet_down_blocks):
            controlnet_down_block_res_samples += (controlnet_block(down_block_res_sample),)
        mid_block_res_sample = self.controlnet_mid_block(sample)
        down = [s * conditioning_scale for s in controlnet_down_block_res_samples]
        return down, mid_block_res_sample * conditioning_scale


def unet_forward(unet, x, timesteps, context, down_res, mid_res):
    """UNet2DConditionModel.forward with down_block_additional_residuals / mid_block_additional_residual"""
    hs = []
    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels).to(x.dtype))
    h = x
    for module in unet.input_blocks:
        h = module(h, emb, context)
        hs.append(h)
    hs = [a + b for a, b in zip(hs, down_res)]
    h = unet.middle_block(h, emb, context)
    h = h + mid_res
    for module in unet.output_blocks:
        h = torch.cat([h, hs.pop()], dim=1)
        h = module(h, emb, context)
    return unet.out(h)


def controlnet_conversion_map(cfg, n_in):
    """model_util.controlnet_conversion_map with range(4)/range(2)/3*i+j+1/i<3 generalised"""
    conv, resnet, unet_layer = ldm_to_diffusers_map(cfg)
    unet_conversion_map = [(a, b) for a, b in conv if a in ("time_embed.0.", "time_embed.2.", "input_blocks.0.0.")]
    unet_conversion_map.append(("middle_block_out.0.", "controlnet_mid_block."))
    layer = [(a, b) for a, b in unet_layer if a.startswith(("input_blocks.", "middle_block."))]
    names = ["conv_in"] + [f"blocks.{i}" for i in range(6)] + ["conv_out"]
    for i, hf in enumerate(names):
        layer.append((f"input_hint_block.{i * 2}.", f"controlnet_cond_embedding.{hf}."))
    for i in range(n_in):
        layer.append((f"zero_convs.{i}.0.", f"controlnet_down_blocks.{i}."))
    return unet_conversion_map, resnet, layer


def convert_controlnet_state_dict_to_sd(sd, cfg, n_in):
    """model_util.convert_controlnet_state_dict_to_sd (whole-prefix matches; the reference replaces
    substrings, which gives the same names here)"""
    conv, resnet, layer = controlnet_conversion_map(cfg, n_in)
    out = {}
    for k, v in sd.items():
        name = k
        for sd_name, hf_name in conv:
            if name.startswith(hf_name):
                name = sd_name + name[len(hf_name):]
        if "resnets" in name:
            for sd_part, hf_part in resnet:
                name = name.replace(hf_part, sd_part)
        for sd_part, hf_part in layer:
            name = name.replace(hf_part, sd_part)
        out[name] = v
    assert len(out) == len(sd)
    return out


def diffusers_state_dict(model, cfg):
    """the ControlNet's state_dict under diffusers names (what ControlNetModel.state_dict() gives)"""
    conv, resnet, layer = controlnet_conversion_map(cfg, len(model.input_blocks))
    out = {}
    for k, v in model.state_dict().items():
        name = k
        for sd_name, hf_name in conv:
            if name.startswith(sd_name):
                name = hf_name + name[len(sd_name):]
                break
        else:
            for sd_part, hf_part in layer:
                if name.startswith(sd_part):
                    rest = name[len(sd_part):]
                    if ".resnets." in hf_part:
                        for s2, h2 in resnet:
                            if rest.startswith(s2 + "."):
                                rest = h2 + rest[len(s2):]
                                break
                    name = hf_part + rest
                    break
        out[name] = v
    return out


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, h in header.items():
        if k == "__metadata__":
            continue
        dt = {"F16": np.float16, "F32": np.float32}[h["dtype"]]
        a, b = h["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dt).reshape(h["shape"]).astype(np.float64))
    return out


GRADS = ["input_hint_block.0.weight", "input_hint_block.2.bias", "input_hint_block.6.weight",
         "input_hint_block.12.bias", "input_hint_block.14.bias", "zero_convs.0.0.weight", "zero_convs.3.0.bias",
         "zero_convs.2.0.weight", "middle_block_out.0.weight", "middle_block_out.0.bias", "time_embed.0.weight",
         "input_blocks.0.0.weight", "input_blocks.1.1.proj_in.weight", "input_blocks.3.0.skip_connection.weight",
         "middle_block.1.transformer_blocks.0.attn2.to_k.weight", "middle_block.2.out_layers.3.weight"]


def main():
    os.makedirs(OUT, exist_ok=True)
    spec = CONFIGS["sd1_tiny"]
    cfg = spec["cfg"]
    unet = UNetModel(**cfg).double()
    w = read_safetensors(os.path.join(DATA, "unet", "sd1_tiny.safetensors"))
    unet.load_state_dict({k[len("model.diffusion_model."):]: v for k, v in w.items()
                          if k.startswith("model.diffusion_model.")})
    for p in unet.parameters():
        p.requires_grad_(False)
    cn = ControlNetModel(unet).double()
    # from_unet: the encoder half equals the UNet's
    for k, v in cn.state_dict().items():
        if k.startswith(("time_embed.", "input_blocks.", "middle_block.")):
            assert torch.equal(v, unet.state_dict()[k])
    gen = torch.Generator().manual_seed(4321)
    for p in cn.parameters():
        p.requires_grad_(True)
    # the ControlNet's own weights random (the zero-initialised convs too, so that every gradient is
    # tested), values exact in f16; the encoder half stays the UNet's copy
    for m in (cn.controlnet_cond_embedding, cn.controlnet_down_blocks, cn.controlnet_mid_block):
        randomize(m, gen)
    B, H, W, S = 2, 8, 6, 7
    f32 = lambda t: t.to(torch.float32).to(torch.float64)
    f16 = lambda t: t.to(torch.float16).to(torch.float64)
    x = f32(torch.randn(B, cfg["in_channels"], H, W, generator=gen, dtype=torch.float64))
    c = f32(torch.randn(B, S, cfg["context_dim"], generator=gen, dtype=torch.float64))
    cond = f16(torch.rand(B, 3, 8 * H, 8 * W, generator=gen, dtype=torch.float64))
    t = torch.tensor([999.0, 17.0], dtype=torch.float32)
    down, mid = cn(x, t, c, cond)
    res = [r.detach().requires_grad_(True) for r in down] + [mid.detach().requires_grad_(True)]
    y = unet_forward(unet, x, t, c, res[:-1], res[-1])
    dy = f32(torch.randn(y.shape, generator=gen, dtype=torch.float64))
    (y * dy).sum().backward()
    dres = [r.grad for r in res]
    torch.autograd.backward(list(down) + [mid], dres)
    n_in = len(cn.input_blocks)
    hf = diffusers_state_dict(cn, cfg)
    ldm = convert_controlnet_state_dict_to_sd(hf, cfg, n_in)
    own_to_ldm = dict(zip(cn.state_dict().keys(), ldm.keys()))
    for k, v in own_to_ldm.items():   # the encoder half keeps its ldm names, the rest is renamed
        assert k == v if k.startswith(("time_embed.", "input_blocks.", "middle_block.")) else \
            v.startswith(("input_hint_block.", "zero_convs.", "middle_block_out.")), (k, v)
    params = {own_to_ldm[k]: p for k, p in cn.named_parameters()}
    own = {k: v for k, v in ldm.items() if not k.startswith(("time_embed.", "input_blocks.", "middle_block."))}
    n1 = write_safetensors(os.path.join(OUT, "sd1_tiny_cn.safetensors"), own, half=("",))
    out = {"x": x, "t": t, "context": c, "cond": cond, "dy": dy, "y": y}
    for i, r in enumerate(res):
        out[f"res.{i}"] = r
        out[f"dres.{i}"] = dres[i]
    for g in GRADS:
        assert params[g].grad.abs().max() > 0, g
        out["grad." + g] = params[g].grad
    n2 = write_safetensors(os.path.join(OUT, "sd1_tiny_cn_golden.safetensors"), out, half=("cond",))
    inv = {id(v): k for k, v in hf.items()}
    with open(os.path.join(OUT, "sd1_tiny_cn_names.txt"), "w") as f:
        for k, v in ldm.items():
            f.write(f"{k} {inv[id(v)]}\n")
    print(f"sd1_tiny controlnet: {sum(p.numel() for p in cn.parameters())} parameters, {len(ldm)} tensors, "
          f"n_in {n_in}, max|y| {y.abs().max().item():.4g}, files {n1} + {n2} bytes")


if __name__ == "__main__":
    sys.exit(main())
