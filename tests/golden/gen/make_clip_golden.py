#!/usr/bin/python3
"""Golden outputs and gradients of the SD text encoders for tests/golden/test_clip_golden.c.
Run once by hand with Debian's /usr/bin/python3 (python3-torch 1.13); the outputs are committed.

No transformers / open_clip here, so the models below are plain-PyTorch transcriptions with the
real module names (state_dict keys equal the checkpoints'):
  * SD1: Hugging Face transformers CLIPTextModel (models/clip/modeling_clip.py: CLIPTextEmbeddings,
    CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPEncoder, CLIPTextTransformer), quick_gelu,
    causal mask, pre-LN, final_layer_norm; stored under cond_stage_model.transformer.text_model.
  * SD2: OpenCLIP text tower (open_clip/model.py + transformer.py: token_embedding,
    positional_embedding, transformer.resblocks.N = ResidualAttentionBlock with torch's own
    nn.MultiheadAttention (in_proj_weight/in_proj_bias packed q;k;v, out_proj), ln_1, ln_2,
    mlp.c_fc / gelu / mlp.c_proj; ln_final, text_projection, logit_scale) as wrapped by ldm's
    FrozenOpenCLIPEmbedder(layer="penultimate"): all resblocks but the last, then ln_final.
    kohya converts it to an HF CLIPTextModel with one layer fewer (library/model_util.py
    convert_ldm_clip_checkpoint_v2, transcribed below) and applies clip_skip to that.
  * kohya's SdTextEncodingStrategy.encode_tokens (library/strategy_sd.py) for the long-prompt
    (n x 77 chunks) reassembly. Its v2 branch compares a token tensor with the *string*
    tokenizer.eos_token, which is always False in torch 1.13 (checked below), so SD1 and SD2
    reassemble identically: position 0 of the first chunk, 1..75 of every chunk, 76 of the last.

Tiny configs: vocab 1000 (BOS 998, EOS 999), max_len 77, width 32; SD1 3 layers / 2 heads,
SD2 4 layers (3 used) / 4 heads. Loss L = sum(r * y) with a fixed random r.

Writes tests/data/golden/clip/golden_clip_{sd1,sd2}.safetensors, each holding the checkpoint
tensors under their real names plus
  golden.ids [2,77] (I32), golden.r, golden.y (last hidden state / SD2 penultimate + ln_final),
  golden.y_skip2 (clip_skip 2), golden.r_skip2, grads for clip_skip 2 are not stored;
  grad.<HF key> = dL/dparam for every parameter of the (converted) HF model, L = sum(r*y);
  golden.long_ids [2,2,77] (I32), golden.long_y [2,152,32] (encode_tokens, clip_skip unset),
  golden.long_r and (SD1 only) golden.long_grad_tok = dL/d token_embedding for that output.
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "golden", "clip")
VOCAB, CTX, WIDTH = 1000, 77, 32
BOS, EOS = VOCAB - 2, VOCAB - 1

# ---- Hugging Face CLIPTextModel (modeling_clip.py) ---------------------------------------------


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, width, vocab, max_pos):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(max_pos, width)
        self.register_buffer("position_ids", torch.arange(max_pos).expand((1, -1)), persistent=False)

    def forward(self, input_ids):
        seq_length = input_ids.shape[-1]
        position_ids = self.position_ids[:, :seq_length]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class CLIPAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.embed_dim, self.num_heads = width, heads
        self.head_dim = width // heads
        self.scale = self.head_dim ** -0.5
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, hidden_states, causal_attention_mask):
        bsz, tgt_len, embed_dim = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scale
        key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
        value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.view(*proj_shape)
        value_states = value_states.view(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + causal_attention_mask
        attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_output = torch.bmm(attn_weights, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim)
        attn_output = attn_output.transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
        return self.out_proj(attn_output)


class CLIPMLP(nn.Module):
    def __init__(self, width, inter, act):
        super().__init__()
        self.act = act
        self.fc1 = nn.Linear(width, inter)
        self.fc2 = nn.Linear(inter, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, width, heads, act):
        super().__init__()
        self.self_attn = CLIPAttention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = CLIPMLP(width, 4 * width, act)
        self.layer_norm2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, hidden_states, causal_attention_mask):
        residual = hidden_states
        hidden_states = self.layer_norm1(hidden_states)
        hidden_states = self.self_attn(hidden_states, causal_attention_mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.layer_norm2(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class CLIPEncoder(nn.Module):
    def __init__(self, width, layers, heads, act):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(width, heads, act) for _ in range(layers)])

    def forward(self, x, mask):
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            hidden_states.append(x)
        return x, hidden_states


class CLIPTextTransformer(nn.Module):
    def __init__(self, width, layers, heads, act):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(width, VOCAB, CTX)
        self.encoder = CLIPEncoder(width, layers, heads, act)
        self.final_layer_norm = nn.LayerNorm(width, eps=1e-5)

    def forward(self, input_ids):
        bsz, seq_len = input_ids.shape
        hidden_states = self.embeddings(input_ids)
        # _build_causal_attention_mask: finfo.min above the diagonal
        mask = torch.full((seq_len, seq_len), torch.finfo(torch.float32).min).triu_(1)[None, None]
        last, all_states = self.encoder(hidden_states, mask)
        return self.final_layer_norm(last), all_states


class CLIPTextModel(nn.Module):
    def __init__(self, width, layers, heads, act):
        super().__init__()
        self.text_model = CLIPTextTransformer(width, layers, heads, act)


def hf_encode(model, ids, clip_skip=None):
    """kohya SdTextEncodingStrategy: last_hidden_state, or hidden_states[-k] + final LN."""
    last, states = model.text_model(ids)
    if clip_skip is None:
        return last
    return model.text_model.final_layer_norm(states[-clip_skip])


# ---- OpenCLIP text tower + ldm FrozenOpenCLIPEmbedder ------------------------------------------


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        orig_type = x.dtype
        x = F.layer_norm(x.to(torch.float32), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.to(orig_type)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, mlp_ratio=4.0):
        super().__init__()
        self.ln_1 = LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ls_1 = nn.Identity()
        self.ln_2 = LayerNorm(d_model)
        mlp_width = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(d_model, mlp_width))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(mlp_width, d_model))
        self.ls_2 = nn.Identity()

    def attention(self, x, attn_mask=None):
        return self.attn(x, x, x, need_weights=False, attn_mask=attn_mask)[0]

    def forward(self, x, attn_mask=None):
        x = x + self.ls_1(self.attention(self.ln_1(x), attn_mask=attn_mask))
        x = x + self.ls_2(self.mlp(self.ln_2(x)))
        return x


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])


class OpenCLIPText(nn.Module):
    """The parts of open_clip.CLIP that FrozenOpenCLIPEmbedder keeps (visual is deleted)."""

    def __init__(self, width, layers, heads, embed_dim):
        super().__init__()
        self.transformer = Transformer(width, layers, heads)
        self.token_embedding = nn.Embedding(VOCAB, width)
        self.positional_embedding = nn.Parameter(torch.empty(CTX, width))
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.register_buffer("attn_mask", self.build_attention_mask(), persistent=False)

    def build_attention_mask(self):
        mask = torch.empty(CTX, CTX)
        mask.fill_(float("-inf"))
        mask.triu_(1)
        return mask


class FrozenOpenCLIPEmbedder(nn.Module):
    def __init__(self, width, layers, heads, layer_idx=1):
        super().__init__()
        self.model = OpenCLIPText(width, layers, heads, width)
        self.layer_idx = layer_idx

    def forward(self, text):
        x = self.model.token_embedding(text)
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)  # NLD -> LND
        for i, r in enumerate(self.model.transformer.resblocks):
            if i == len(self.model.transformer.resblocks) - self.layer_idx:
                break
            x = r(x, attn_mask=self.model.attn_mask)
        x = x.permute(1, 0, 2)  # LND -> NLD
        return self.model.ln_final(x)


def convert_ldm_clip_checkpoint_v2(checkpoint, last_layer):
    """kohya library/model_util.py (the dropped layer is resblocks.{last_layer}, 23 for SD2)."""
    def convert_key(key):
        if not key.startswith("cond_stage_model"):
            return None
        key = key.replace("cond_stage_model.model.transformer.", "text_model.encoder.")
        key = key.replace("cond_stage_model.model.", "text_model.")
        if "resblocks" in key:
            key = key.replace(".resblocks.", ".layers.")
            if ".ln_" in key:
                key = key.replace(".ln_", ".layer_norm")
            elif ".mlp." in key:
                key = key.replace(".c_fc.", ".fc1.")
                key = key.replace(".c_proj.", ".fc2.")
            elif ".attn.out_proj" in key:
                key = key.replace(".attn.out_proj.", ".self_attn.out_proj.")
            elif ".attn.in_proj" in key:
                key = None
            else:
                raise ValueError(f"unexpected key in SD: {key}")
        elif ".positional_embedding" in key:
            key = key.replace(".positional_embedding", ".embeddings.position_embedding.weight")
        elif ".text_projection" in key:
            key = None
        elif ".logit_scale" in key:
            key = None
        elif ".token_embedding" in key:
            key = key.replace(".token_embedding.weight", ".embeddings.token_embedding.weight")
        elif ".ln_final" in key:
            key = key.replace(".ln_final", ".final_layer_norm")
        return key

    drop = f".resblocks.{last_layer}."
    new_sd = {}
    for key in checkpoint:
        if drop in key:
            continue
        new_key = convert_key(key)
        if new_key is not None:
            new_sd[new_key] = checkpoint[key]
    for key in checkpoint:
        if drop in key:
            continue
        if ".resblocks" in key and ".attn.in_proj_" in key:
            values = torch.chunk(checkpoint[key], 3)
            key_suffix = ".weight" if "weight" in key else ".bias"
            key_pfx = key.replace("cond_stage_model.model.transformer.resblocks.", "text_model.encoder.layers.")
            key_pfx = key_pfx.replace("_weight", "").replace("_bias", "")
            key_pfx = key_pfx.replace(".attn.in_proj", ".self_attn.")
            new_sd[key_pfx + "q_proj" + key_suffix] = values[0]
            new_sd[key_pfx + "k_proj" + key_suffix] = values[1]
            new_sd[key_pfx + "v_proj" + key_suffix] = values[2]
    return new_sd


# ---- kohya SdTextEncodingStrategy.encode_tokens ---------------------------------------------


def encode_tokens(text_encoder, tokens, pad_is_eos, clip_skip=None):
    b_size = tokens.size()[0]
    max_token_length = tokens.size()[1] * tokens.size()[2]
    model_max_length = CTX
    tokens = tokens.reshape((-1, model_max_length))
    encoder_hidden_states = hf_encode(text_encoder, tokens, clip_skip)
    encoder_hidden_states = encoder_hidden_states.reshape((b_size, -1, encoder_hidden_states.shape[-1]))
    if max_token_length != model_max_length:
        if not pad_is_eos:
            states_list = [encoder_hidden_states[:, 0].unsqueeze(1)]
            for i in range(1, max_token_length, model_max_length):
                chunk = encoder_hidden_states[:, i: i + model_max_length - 2]
                if i > 0:
                    for j in range(len(chunk)):
                        if tokens[j, 1] == "<|endoftext|>":  # always False (tensor vs str)
                            chunk[j, 0] = chunk[j, 1]
                states_list.append(chunk)
            states_list.append(encoder_hidden_states[:, -1].unsqueeze(1))
            encoder_hidden_states = torch.cat(states_list, dim=1)
        else:
            states_list = [encoder_hidden_states[:, 0].unsqueeze(1)]
            for i in range(1, max_token_length, model_max_length):
                states_list.append(encoder_hidden_states[:, i: i + model_max_length - 2])
            states_list.append(encoder_hidden_states[:, -1].unsqueeze(1))
            encoder_hidden_states = torch.cat(states_list, dim=1)
    return encoder_hidden_states


# ---- data ------------------------------------------------------------------------------------


def write_safetensors(path, tensors):
    """Minimal safetensors writer (F32 / I32), sorted by name like the reference."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        if t.dtype in (torch.int32, torch.int64):
            a, dt = np.ascontiguousarray(t.numpy().astype('<i4')), "I32"
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
            if "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith("logit_scale"):
                p.fill_(math.log(1 / 0.07))
            elif p.dim() >= 2:
                fan_in = p.shape[-1]
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * (3.0 / fan_in) ** 0.5)
            elif ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1 + 0.3 * (torch.rand(p.shape, generator=gen) * 2 - 1))
            else:
                p.copy_(0.3 * (torch.rand(p.shape, generator=gen) * 2 - 1))


def make_ids(gen, pad, rows_len):
    rows = []
    for n in rows_len:
        body = torch.randint(1, BOS, (n,), generator=gen)
        row = torch.cat([torch.tensor([BOS]), body, torch.tensor([EOS])])
        row = torch.cat([row, torch.full((CTX - row.numel(),), pad)])
        rows.append(row)
    return torch.stack(rows).long()


def make_long_ids(gen, pad, n_tokens, chunks):
    """kohya _get_input_ids: tokenise to L = 75n+2 with padding, then split into 77-chunks."""
    L = 75 * chunks + 2
    out = []
    for n in n_tokens:
        ids = torch.cat([torch.tensor([BOS]), torch.randint(1, BOS, (n,), generator=gen), torch.tensor([EOS])])
        ids = torch.cat([ids, torch.full((L - ids.numel(),), pad)])
        rows = []
        for i in range(1, L - 75, 75):
            chunk = torch.cat([ids[0:1], ids[i:i + 75], ids[L - 1:L]])
            if pad != EOS:
                if chunk[-2] != EOS and chunk[-2] != pad:
                    chunk[-1] = EOS
                if chunk[1] == pad:
                    chunk[1] = EOS
            rows.append(chunk)
        out.append(torch.stack(rows))
    return torch.stack(out).long()


def grads_of(model, loss):
    params = dict(model.named_parameters())
    g = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {k: (v if v is not None else torch.zeros_like(params[k])) for k, v in zip(params, g)}


def main():
    assert (torch.tensor(EOS) == "<|endoftext|>") is False
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)

    # SD1 -------------------------------------------------------------------------------------
    sd1 = CLIPTextModel(WIDTH, 3, 2, quick_gelu)
    randomize(sd1, gen)
    ids = make_ids(gen, EOS, [20, 75])
    out = {("cond_stage_model.transformer." + k): v for k, v in sd1.state_dict().items()}
    y = hf_encode(sd1, ids)
    r = torch.randn(y.shape, generator=gen)
    grads = grads_of(sd1, (r * y).sum())
    y2 = hf_encode(sd1, ids, 2)
    out.update({"golden.ids": ids, "golden.y": y, "golden.r": r, "golden.y_skip2": y2})
    out.update({"grad." + k: v for k, v in grads.items()})
    lids = make_long_ids(gen, EOS, [100, 150], 2)
    ly = encode_tokens(sd1, lids, True)
    lr = torch.randn(ly.shape, generator=gen)
    lg = grads_of(sd1, (lr * ly).sum())["text_model.embeddings.token_embedding.weight"]
    out.update({"golden.long_ids": lids, "golden.long_y": ly, "golden.long_r": lr, "golden.long_grad_tok": lg})
    write_safetensors(os.path.join(OUT, "golden_clip_sd1.safetensors"), out)
    print("sd1", y.shape, float(y.abs().max()), ly.shape)

    # SD2 -------------------------------------------------------------------------------------
    sd2 = FrozenOpenCLIPEmbedder(WIDTH, 4, 4)
    randomize(sd2, gen)
    ckpt = {("cond_stage_model." + k): v for k, v in sd2.state_dict().items()}
    ids = make_ids(gen, 0, [10, 75])
    y = sd2(ids)
    r = torch.randn(y.shape, generator=gen)
    ograds = grads_of(sd2, (r * y).sum())
    # kohya's view: an HF CLIPTextModel with 3 layers, exact GELU
    hf = CLIPTextModel(WIDTH, 3, 4, F.gelu)
    conv = convert_ldm_clip_checkpoint_v2(ckpt, 3)
    hf.load_state_dict(conv)
    yk = hf_encode(hf, ids)
    print("sd2 kohya-converted vs FrozenOpenCLIPEmbedder max diff", float((yk - y).abs().max()))
    assert float((yk - y).abs().max()) < 1e-5
    y2 = hf_encode(hf, ids, 2)
    g = convert_ldm_clip_checkpoint_v2({"cond_stage_model." + k: v for k, v in ograds.items()}, 3)
    out = dict(ckpt)
    out.update({"golden.ids": ids, "golden.y": y, "golden.r": r, "golden.y_skip2": y2})
    out.update({"grad." + k: v for k, v in g.items()})
    lids = make_long_ids(gen, 0, [80, 140], 2)
    ly = encode_tokens(hf, lids, False)
    out.update({"golden.long_ids": lids, "golden.long_y": ly})
    write_safetensors(os.path.join(OUT, "golden_clip_sd2.safetensors"), out)
    print("sd2", y.shape, float(y.abs().max()), ly.shape)


if __name__ == "__main__":
    main()
