#!/usr/bin/python3
"""Golden outputs and gradients of SDXL's two text encoders and its size embedding, for
tests/golden/test_sdxl_clip_golden.c. Run once by hand with Debian's /usr/bin/python3
(python3-torch); the outputs are committed.

The models are the plain-PyTorch transcriptions of make_clip_golden.py (imported from it):
  * TE1: HF CLIPTextModel (quick_gelu), stored under conditioner.embedders.0.transformer.text_model.*
    (with the position_ids buffer the real files carry) and, for the Diffusers test, text_model.*.
  * TE2: the OpenCLIP text tower (token_embedding, positional_embedding, transformer.resblocks.N
    with torch nn.MultiheadAttention, ln_final, text_projection [width, proj], logit_scale) stored
    under conditioner.embedders.1.model.*; kohya converts it to an HF CLIPTextModelWithProjection
    (sdxl_model_util.convert_sdxl_text_encoder_2_checkpoint: all layers, q;k;v split,
    text_projection.weight = text_projection.T), transcribed below; Diffusers file: text_model.* +
    text_projection.weight.
  * kohya SdxlTextEncodingStrategy (strategy_sdxl.py): hidden_states[11]/[-2] of each encoder
    (no final LN), pool_workaround (final-LN'd last hidden state at argmax(ids == eos) of each
    row, times text_projection), chunks reassembled like SD1, pool2[::n] (first chunk).
  * sdxl_train_util.get_size_embeddings -> timestep_embedding(t, 256) in float32.

Tiny configs: vocab 64 (BOS 62, EOS 63 = vocab - 1, as 49407 = 49408 - 1), max_len 77; TE1 width
8, 3 layers, 2 heads; TE2 width 16, 3 layers, 2 heads, projection 12. Loss
L = sum(r1*h1) (TE1), sum(r2*h2) + sum(rp*pool) (TE2) with r[k] = sin(0.7 k + 0.3) over the flat
index k (float64, rounded), recomputed by the C test.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_clip_golden as mcg  # noqa: E402

VOCAB = 64
mcg.VOCAB = VOCAB
CTX = mcg.CTX
BOS, EOS = VOCAB - 2, VOCAB - 1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "golden", "sdxl")
W1, L1, H1 = 8, 3, 2
W2, L2, H2, P2 = 16, 3, 2, 12


def rfun(shape):
    n = 1
    for s in shape:
        n *= s
    return torch.sin(torch.arange(n, dtype=torch.float64) * 0.7 + 0.3).float().reshape(shape)


class CLIPTextModelWithProjection(nn.Module):
    def __init__(self, width, layers, heads, proj):
        super().__init__()
        self.text_model = mcg.CLIPTextTransformer(width, layers, heads, F.gelu)
        self.text_projection = nn.Linear(width, proj, bias=False)


def pool_workaround(model, last_hidden_state, input_ids, eos_token_id):
    """kohya strategy_sdxl.pool_workaround"""
    eos_token_mask = (input_ids == eos_token_id).int()
    eos_token_index = torch.argmax(eos_token_mask, dim=1)
    eos_token_index = eos_token_index.to(device=last_hidden_state.device)
    pooled_output = last_hidden_state[torch.arange(last_hidden_state.shape[0]), eos_token_index]
    return model.text_projection(pooled_output.to(model.text_projection.weight.dtype))


def encode(te1, te2, ids1, ids2):
    """_get_hidden_states_sdxl without chunks: ids [B, 77]."""
    _, s1 = te1.text_model(ids1)
    h1 = s1[11 if len(s1) == 13 else len(s1) - 2]
    last2, s2 = te2.text_model(ids2)
    h2 = s2[-2]
    pool = pool_workaround(te2, last2, ids2, EOS)
    return h1, h2, pool


def reassemble(h, n):
    """strategy_sdxl chunk reassembly: h [B*n, 77, W] -> [B, n*75+2, W]."""
    B = h.shape[0] // n
    h = h.reshape((B, -1, h.shape[-1]))
    max_token_length = n * 75
    states = [h[:, 0].unsqueeze(1)]
    for i in range(1, max_token_length, CTX):
        states.append(h[:, i:i + CTX - 2])
    states.append(h[:, -1].unsqueeze(1))
    return torch.cat(states, dim=1)


def encode_long(te1, te2, ids1, ids2):
    B, n = ids1.shape[0], ids1.shape[1]
    h1, h2, pool = encode(te1, te2, ids1.reshape(-1, CTX), ids2.reshape(-1, CTX))
    return reassemble(h1, n), reassemble(h2, n), pool[::n]


def openclip_to_hf(sd, prefix, layers):
    """kohya convert_sdxl_text_encoder_2_checkpoint (all layers kept)."""
    tmp = {"cond_stage_model.model." + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    hf = mcg.convert_ldm_clip_checkpoint_v2(tmp, layers)  # drops resblocks.{layers}: none
    hf["text_projection.weight"] = sd[prefix + "text_projection"].t().contiguous()
    return hf


def openclip_penultimate(oc, ids):
    x = oc.token_embedding(ids) + oc.positional_embedding
    x = x.permute(1, 0, 2)
    outs = []
    for r in oc.transformer.resblocks:
        x = r(x, attn_mask=oc.attn_mask)
        outs.append(x.permute(1, 0, 2))
    last = oc.ln_final(outs[-1])
    return outs[-2], last


def timestep_embedding(timesteps, dim, max_period=10000):
    """sdxl_original_unet.timestep_embedding"""
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(float(max_period))).item() * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def get_timestep_embedding(x, outdim):
    b, dims = x.shape[0], x.shape[1]
    x = torch.flatten(x)
    emb = timestep_embedding(x, outdim)
    return torch.reshape(emb, (b, dims * outdim))


def get_size_embeddings(orig_size, crop_size, target_size):
    emb1 = get_timestep_embedding(orig_size, 256)
    emb2 = get_timestep_embedding(crop_size, 256)
    emb3 = get_timestep_embedding(target_size, 256)
    return torch.cat([emb1, emb2, emb3], dim=1)


def ids_rows(gen, pad, kinds):
    rows = []
    for kind in kinds:
        if kind == "short":        # BOS 10 tokens EOS pad...
            body = torch.randint(1, BOS, (10,), generator=gen)
            row = torch.cat([torch.tensor([BOS]), body, torch.tensor([EOS])])
        elif kind == "full":       # 75 tokens: EOS last
            row = torch.cat([torch.tensor([BOS]), torch.randint(1, BOS, (75,), generator=gen), torch.tensor([EOS])])
        elif kind == "twoeos":     # an EOS in the middle, then text, then EOS
            body = torch.randint(1, BOS, (30,), generator=gen)
            body[7] = EOS
            row = torch.cat([torch.tensor([BOS]), body, torch.tensor([EOS])])
        else:                      # "noeos": no EOS at all (pool at position 0)
            row = torch.cat([torch.tensor([BOS]), torch.randint(1, BOS, (76,), generator=gen)])
        row = torch.cat([row, torch.full((CTX - row.numel(),), pad)])
        rows.append(row)
    return torch.stack(rows).long()


def grads_of(model, loss, names):
    params = dict(model.named_parameters())
    g = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True, retain_graph=True)
    return {k: (v if v is not None else torch.zeros_like(params[k])) for k, v in zip(names, g)}


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(4321)
    te1 = mcg.CLIPTextModel(W1, L1, H1, mcg.quick_gelu)
    mcg.randomize(te1, gen)
    oc = mcg.OpenCLIPText(W2, L2, H2, P2)
    mcg.randomize(oc, gen)
    ocsd = {"conditioner.embedders.1.model." + k: v for k, v in oc.state_dict().items()}
    te2 = CLIPTextModelWithProjection(W2, L2, H2, P2)
    te2.load_state_dict(openclip_to_hf(ocsd, "conditioner.embedders.1.model.", L2))

    kinds = ["short", "full", "twoeos", "noeos"]
    ids1 = ids_rows(gen, EOS, kinds)
    ids2 = ids1.clone()
    ids2[ids1 == EOS] = 0
    for b in range(ids1.shape[0]):  # TE2 ids: EOS where the text ends, pad 0 after (bigG's tokenizer)
        row = ids1[b]
        for t in range(CTX):
            if row[t] == EOS and (t == CTX - 1 or row[t + 1] == EOS):
                ids2[b, t] = EOS
                break
        if kinds[b] == "twoeos":
            ids2[b, 8] = EOS
    print("ids2 rows first EOS:", [int(torch.argmax((ids2[b] == EOS).int())) for b in range(4)])

    h1, h2, pool = encode(te1, te2, ids1, ids2)
    # cross-check the conversion against the OpenCLIP tower itself
    pen, last = openclip_penultimate(oc, ids2)
    assert float((pen - h2).abs().max()) < 1e-5
    eidx = torch.argmax((ids2 == EOS).int(), dim=1)
    poc = last[torch.arange(4), eidx] @ oc.text_projection
    assert float((poc - pool).abs().max()) < 1e-5, float((poc - pool).abs().max())

    out = {}
    hf1 = te1.state_dict()
    for k, v in hf1.items():
        out["conditioner.embedders.0.transformer." + k] = v
    out["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(CTX)[None].int()
    out.update(ocsd)
    out.update({"golden.ids1": ids1, "golden.ids2": ids2, "golden.h1": h1, "golden.h2": h2, "golden.pool": pool})

    loss1 = (rfun(h1.shape) * h1).sum()
    n1 = ["text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.1.mlp.fc2.weight",
          "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight"]
    g1 = grads_of(te1, loss1, n1)
    out.update({"grad1." + k: v for k, v in g1.items()})
    loss2 = (rfun(h2.shape) * h2).sum() + (rfun(pool.shape) * pool).sum()
    n2 = ["text_projection.weight", "text_model.final_layer_norm.weight", "text_model.encoder.layers.2.mlp.fc1.weight",
          "text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.1.self_attn.v_proj.bias",
          "text_model.embeddings.token_embedding.weight"]
    g2 = grads_of(te2, loss2, n2)
    out.update({"grad2." + k: v for k, v in g2.items()})
    # pooled gradient only (dhidden = 0): the last layer's gradient comes from the pool alone
    g2p = grads_of(te2, (rfun(pool.shape) * pool).sum(), ["text_model.encoder.layers.2.mlp.fc1.weight"])
    out["grad2p.text_model.encoder.layers.2.mlp.fc1.weight"] = g2p["text_model.encoder.layers.2.mlp.fc1.weight"]

    # long prompts: 2 prompts x 2 chunks
    lids1 = mcg.make_long_ids(gen, EOS, [100, 20], 2)
    lids1[lids1 >= VOCAB] = 5
    lids2 = mcg.make_long_ids(gen, 0, [120, 30], 2)
    lids2[lids2 >= VOCAB] = 5
    lh1, lh2, lpool = encode_long(te1, te2, lids1, lids2)
    out.update({"golden.long_ids1": lids1, "golden.long_ids2": lids2, "golden.long_h1": lh1, "golden.long_h2": lh2,
                "golden.long_pool": lpool})
    lloss = (rfun(lh2.shape) * lh2).sum() + (rfun(lpool.shape) * lpool).sum()
    lg = grads_of(te2, lloss, ["text_projection.weight", "text_model.embeddings.token_embedding.weight"])
    out.update({"long_grad2." + k: v for k, v in lg.items()})

    # size embeddings: rows (orig h, w), (crop top, left), (target h, w)
    sizes = torch.tensor([[1024, 768, 0, 64, 1024, 1024], [1357, 911, 33, 7, 896, 1152], [512, 512, 0, 0, 512, 512]])
    emb = get_size_embeddings(sizes[:, 0:2], sizes[:, 2:4], sizes[:, 4:6])
    out.update({"golden.sizes": sizes.int(), "golden.size_emb": emb})
    mcg.write_safetensors(os.path.join(OUT, "golden_sdxl_clip.safetensors"), out)

    mcg.write_safetensors(os.path.join(OUT, "golden_sdxl_te1_diffusers.safetensors"), dict(hf1))
    mcg.write_safetensors(os.path.join(OUT, "golden_sdxl_te2_diffusers.safetensors"), dict(te2.state_dict()))
    print("h1", tuple(h1.shape), "h2", tuple(h2.shape), "pool", tuple(pool.shape), "long", tuple(lh1.shape),
          tuple(lh2.shape), tuple(lpool.shape), "size_emb", tuple(emb.shape))


if __name__ == "__main__":
    main()
