#!/usr/bin/python3
"""Golden SDXL sampling conditioning and one guided UNet call on the tiny SDXL checkpoint, for
tests/unit/test_sample.c (sdxl-golden, run by tests/cli/sample_sdxl.sh). Run once by hand with
Debian's /usr/bin/python3 (python3-torch, python3-regex); the output is committed:

    examples/build_tiny.sh build /tmp/tiny && /tmp/tiny/tiny_model model /tmp/sdxl.safetensors \\
        examples/tiny_sdxl.toml
    /usr/bin/python3 tests/golden/gen/make_sample_sdxl_golden.py /tmp/sdxl.safetensors

What the reference's SDXL sample pipeline does (kohya-ss/sd-scripts at 48d368fa,
library/sdxl_lpw_stable_diffusion.py __call__ with SdxlTokenizeStrategy.tokenize_with_weights and
SdxlTextEncodingStrategy.encode_tokens_with_weights), restated here:
  * prompt and negative prompt: parse_prompt_attention, each piece tokenized alone (no BOS/EOS),
    truncated to max_token_length (75 when unset), framed BOS + ids + EOS + pad to
    max_token_length + 2 and cut into chunks (strategy_base._get_input_ids): TE1 pad = EOS, TE2
    pad = 0 (clip_tokenizer_ref.frame is exactly that rule);
  * both encoders: hidden_states[-2] (TE1: index 11 of 13 for the real model; the tiny one has 2
    layers, so the penultimate), TE2's pooled output = final LN of the last hidden state at the
    first EOS, times text_projection, of the FIRST chunk; chunks reassembled;
  * token weights multiply positions 1..75 of each chunk in both hidden states, no renormalisation;
  * context = cat(h1, h2, dim=-1); vector = cat(pool, size_embeddings((H, W), (0, 0), (H, W)));
  * guided UNet call: cat([uncond, cond]) for x, context and vector; eps = u + scale (c - u).
The tokenizer is clip_tokenizer_ref.py's oracle with a stand-in ftfy (plain ASCII prompts).
The models are the PyTorch transcriptions of make_clip_golden.py, make_sdxl_clip_golden.py and
make_unet_sdxl_golden.py, loaded from the checkpoint. Float32 throughout.

Writes tests/data/sample/sdxl_golden.safetensors: for case c in {a (75 tokens), b (225 tokens, a
prompt longer than 75)}: c.ids1, c.ids2, c.nids1, c.nids2 (as f32), c.w, c.nw (per-position
weights), c.context [2, S, 64] (uncond first), c.vec [2, 1552], c.x [1, 4, 16, 16], c.eps [1, 4, 16, 16]
(t = 501, scale 7.5, image 128x128); l.context, l.vec, l.eps: case a with
tests/data/sample/sdxl_lora.safetensors (kohya names lora_unet_/lora_te1_/lora_te2_, rank 2, alpha
1.5, written here too) attached as kohya's forward hooks with multiplier 0.7; check.* = a few weights of the checkpoint (the C test
stops with "regenerate" when examples/tiny_model writes other weights).
"""
import json
import os
import struct
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.modules["ftfy"] = types.SimpleNamespace(fix_text=lambda t, fix_encoding=False: t)
sys.path.insert(0, HERE)
import clip_tokenizer_ref  # noqa: E402
import make_sample_lpw_golden as lpw  # noqa: E402
import make_sdxl_clip_golden as sxc  # noqa: E402  (sets make_clip_golden.VOCAB = 64)
import make_clip_golden as mcg  # noqa: E402
import make_unet_sdxl_golden as sxu  # noqa: E402
from make_unet_golden import write_safetensors  # noqa: E402

mcg.VOCAB = 49408
OUT = os.path.join(HERE, "..", "..", "data", "sample", "sdxl_golden.safetensors")
BOS, EOS = 49406, 49407
H = W = 128
T = 501.0
SCALE = 7.5
CASES = {
    "a": (75, "a (red:1.3) cat on a [mat]", "blurry, (ugly:1.2)"),
    "b": (225, " ".join("word%d," % i for i in range(1, 41)) + " (end:0.8)", "lowres"),
}


def load_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[v["dtype"]]
        out[k] = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=dt).reshape(v["shape"]).float()
    return out


def models(sd):
    te1 = mcg.CLIPTextModel(32, 2, 2, mcg.quick_gelu)
    p1 = "conditioner.embedders.0.transformer."
    t1 = {k[len(p1):]: v for k, v in sd.items() if k.startswith(p1) and not k.endswith("position_ids")}
    te1.load_state_dict(t1)
    te2 = sxc.CLIPTextModelWithProjection(32, 3, 2, 16)
    te2.load_state_dict(sxc.openclip_to_hf(sd, "conditioner.embedders.1.model.", 3))
    unet = sxu.SDXLUNetModel(4, 32, 4, 1, [2], [1, 2], 16, [0, 2], 2, 64, 1552)
    p = "model.diffusion_model."
    unet.load_state_dict({k[len(p):]: v for k, v in sd.items() if k.startswith(p)})
    return te1.eval(), te2.eval(), unet.eval()


def rows(tok, text, mtl):
    toks, ws = lpw.get_prompts_with_weights(tok, [text], mtl)
    toks, ws = toks[0], ws[0]
    ids1 = clip_tokenizer_ref.frame(toks, mtl if mtl > 75 else 75, EOS)
    ids2 = clip_tokenizer_ref.frame(toks, mtl if mtl > 75 else 75, 0)
    S = mtl + 2
    w = [1.0] + ws + [1.0] * (S - 1 - len(ws))
    return ids1, ids2, torch.tensor(w, dtype=torch.float32)


def encode(te1, te2, ids1, ids2, w, n):
    i1 = torch.tensor(ids1).reshape(n, 77)
    i2 = torch.tensor(ids2).reshape(n, 77)
    _, s1 = te1.text_model(i1)
    h1 = s1[len(s1) - 2]
    last2, s2 = te2.text_model(i2)
    h2 = s2[-2]
    pool = sxc.pool_workaround(te2, last2, i2, EOS)
    if n > 1:
        h1, h2, pool = sxc.reassemble(h1, n), sxc.reassemble(h2, n), pool[::n]
    h1 = h1 * w[None, :, None]
    h2 = h2 * w[None, :, None]
    return torch.cat([h1, h2], dim=-1), pool


LORA_OUT = os.path.join(HERE, "..", "..", "data", "sample", "sdxl_lora.safetensors")
LORA_MUL = 0.7
# (network, module path in the PyTorch model, kohya name); rank 2, alpha 1.5
LORA_MODULES = [
    ("unet", "input_blocks.3.1.transformer_blocks.0.attn2.to_k", "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k"),
    ("unet", "input_blocks.3.1.transformer_blocks.1.attn1.to_out.0",
     "lora_unet_input_blocks_3_1_transformer_blocks_1_attn1_to_out_0"),
    ("unet", "middle_block.1.proj_in", "lora_unet_middle_block_1_proj_in"),
    ("unet", "middle_block.0.in_layers.2", "lora_unet_middle_block_0_in_layers_2"),
    ("te1", "text_model.encoder.layers.0.self_attn.q_proj", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"),
    ("te2", "text_model.encoder.layers.1.mlp.fc1", "lora_te2_text_model_encoder_layers_1_mlp_fc1"),
]


def attach_lora(nets, gen):
    """kohya networks/lora.py LoRAModule as forward hooks: org(x) + up(down(x)) * multiplier * alpha / rank
    (conv hosts: down = Conv2d(in, r, k, stride, padding), up = Conv2d(r, out, 1)). Returns the file's tensors."""
    r, alpha = 2, 1.5
    out = {}
    for net, path, name in LORA_MODULES:
        mod = nets[net].get_submodule(path)
        if isinstance(mod, torch.nn.Linear):
            down = torch.randn((r, mod.in_features), generator=gen) * 0.5
            up = torch.randn((mod.out_features, r), generator=gen) * 0.5
        else:
            down = torch.randn((r, mod.in_channels) + tuple(mod.kernel_size), generator=gen) * 0.2
            up = torch.randn((mod.out_channels, r, 1, 1), generator=gen) * 0.5
        out[name + ".lora_down.weight"] = down
        out[name + ".lora_up.weight"] = up
        out[name + ".alpha"] = torch.tensor(alpha)
        org, sc = mod.forward, LORA_MUL * alpha / r

        def fwd(x, org=org, mod=mod, down=down, up=up, sc=sc):
            if isinstance(mod, torch.nn.Linear):
                return org(x) + torch.nn.functional.linear(torch.nn.functional.linear(x, down), up) * sc
            h = torch.nn.functional.conv2d(x, down, stride=mod.stride, padding=mod.padding)
            return org(x) + torch.nn.functional.conv2d(h, up) * sc
        mod.forward = fwd
    return out


def main():
    sd = load_st(sys.argv[1])
    te1, te2, unet = models(sd)
    tok = clip_tokenizer_ref.Oracle()
    out = {
        "check.te1_tok": sd["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"][
            49400:49408, :4].clone(),
        "check.te2_proj": sd["conditioner.embedders.1.model.text_projection"][:4, :4].clone(),
        "check.unet_out": sd["model.diffusion_model.out.2.bias"].clone(),
    }
    size = sxc.get_size_embeddings(torch.tensor([[H, W]]), torch.tensor([[0, 0]]), torch.tensor([[H, W]]))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for c, (mtl, p, neg) in CASES.items():
            n = mtl // 75
            ids1, ids2, w = rows(tok, p, mtl)
            nids1, nids2, nw = rows(tok, neg, mtl)
            ctx_c, pool_c = encode(te1, te2, ids1, ids2, w, n)
            ctx_u, pool_u = encode(te1, te2, nids1, nids2, nw, n)
            context = torch.cat([ctx_u, ctx_c])
            vec = torch.cat([torch.cat([pool_u, size], dim=1), torch.cat([pool_c, size], dim=1)])
            x = torch.randn((1, 4, H // 8, W // 8), generator=gen)
            y = unet(torch.cat([x, x]), torch.tensor([T, T]), context, vec)
            eps = y[0:1] + SCALE * (y[1:2] - y[0:1])
            out.update({
                c + ".ids1": torch.tensor(ids1, dtype=torch.float32), c + ".ids2": torch.tensor(ids2, dtype=torch.float32),
                c + ".nids1": torch.tensor(nids1, dtype=torch.float32),
                c + ".nids2": torch.tensor(nids2, dtype=torch.float32),
                c + ".w": w, c + ".nw": nw, c + ".context": context, c + ".vec": vec, c + ".x": x, c + ".eps": eps,
            })
            print(c, "S", context.shape[1], "tokens", sum(1 for i in ids1 if i < BOS), "eps", float(eps.abs().max()))
        # case l: case a with the LoRA file attached (multiplier LORA_MUL)
        lora = attach_lora({"unet": unet, "te1": te1, "te2": te2}, torch.Generator().manual_seed(9))
        mtl, p, neg = CASES["a"]
        ids1, ids2, w = rows(tok, p, mtl)
        nids1, nids2, nw = rows(tok, neg, mtl)
        ctx_c, pool_c = encode(te1, te2, ids1, ids2, w, 1)
        ctx_u, pool_u = encode(te1, te2, nids1, nids2, nw, 1)
        context = torch.cat([ctx_u, ctx_c])
        vec = torch.cat([torch.cat([pool_u, size], dim=1), torch.cat([pool_c, size], dim=1)])
        x = out["a.x"]
        y = unet(torch.cat([x, x]), torch.tensor([T, T]), context, vec)
        eps = y[0:1] + SCALE * (y[1:2] - y[0:1])
        out.update({"l.context": context, "l.vec": vec, "l.eps": eps})
        print("l eps", float(eps.abs().max()), "vs a", float((eps - out["a.eps"]).abs().max()))
    print(LORA_OUT, write_safetensors(LORA_OUT, lora), "bytes")
    print(OUT, write_safetensors(OUT, out), "bytes")


if __name__ == "__main__":
    main()
