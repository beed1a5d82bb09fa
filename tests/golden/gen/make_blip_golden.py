#!/usr/bin/python3
"""Golden data for tests/golden/test_blip_golden.c and tests/cli/caption.sh (the BLIP captioner,
sd-caption). Run once by hand with Debian's /usr/bin/python3 (python3-torch 1.13, python3-pil
9.4); the outputs are committed under tests/data/blip/.

1. Model: a plain-PyTorch transcription of BLIP_Decoder as kohya-ss/sd-scripts' finetune/blip
   builds it: blip/vit.py VisionTransformer (class token, pos_embed, pre-LN blocks with one qkv
   linear, exact GELU, LayerNorm eps 1e-6, final norm) and blip/med.py BertLMHeadModel (word +
   position embeddings, LayerNorm eps 1e-12, no token types; per layer causal self-attention,
   add & LayerNorm, cross-attention to the image tokens, add & LayerNorm, GELU FFN, add &
   LayerNorm; LM head dense + GELU + LayerNorm + decoder + bias, the decoder tied to the word
   embeddings). The whole sequence is recomputed every step (no cache), so the C decoder's key/
   value cache is checked too. Module names are BLIP's; the file is written under the names of
   transformers' BlipForConditionalGeneration (convert_blip_original_pytorch_to_hf.py renames),
   as a Hugging Face download has it: vision_model.*, no decoder.weight (tied), the bias as
   cls.predictions.decoder.bias, an I64 text_decoder.bert.embeddings.position_ids buffer.
   Tiny sizes: vision width 64, 4 heads, depth 2, MLP 128, patch 8, grid 4 (17 tokens, input
   32x32); text width 64, 4 heads, 2 layers, FFN 128, 40 positions, vocabulary 200 + [DEC]
   [ENC] = 202. Head counts in __metadata__ (vision_heads, text_heads). Weights rounded to
   float16 and stored F16; everything is computed in float32 from the rounded weights.
   -> blip_tiny_hf.safetensors, vocab.txt (0 [PAD], 1 [UNK], 2 [CLS], 3 [SEP], 4 [MASK], words)
2. Reference outputs -> blip_golden.safetensors (F32; ids stored as floats):
   golden.x [2,3,32,32] and golden.emb [2,17,64] (image encoder); golden.seq [9] (prompt + 5
   tokens) and golden.logits [9,202] (decoder logits of every position, image 0);
   golden.greedy.N, golden.beam3.N, golden.beam3short.N: the generated ids of image N (prompt
   included, final EOS excluded) for greedy (min 5, max 20), beam search with 3 beams (min 5,
   max 20), with 3 beams stopped by max_length 8 (min 5), and (image 0 only) with 17 beams
   (min 5, max 20); the beam search is a transcription
   of transformers 4.44's _beam_search + BeamSearchScorer (length_penalty 1.0, early_stopping
   False). golden.prep.K [3,32,32]: kohya's preprocessing (PIL convert("RGB"), Resize((32,32))
   BICUBIC, ToTensor, Normalize with the CLIP mean/std) of tests/data/tagger images.
   golden.proc.in / golden.proc.out [4,202]: random logits and what transformers' sampling
   processors and warpers (repetition penalty, min length, top-k, top-p) make of them (PROC_CASES).
3. expected.txt: "<image stem>\t<greedy|beam3>\t<caption>" for those images through the whole
   pipeline (preprocessing, generation, decode with special tokens skipped and HF's
   clean_up_tokenization_spaces, the first len("a picture of ") characters cut) - what
   sd-caption must write.
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "data", "blip")
IMGS = os.path.join(HERE, "..", "..", "data", "tagger")

VW, VH, VD, VM, PATCH, GRID = 64, 4, 2, 128, 8, 4
TW, TH, TD, TI, POS = 64, 4, 2, 128, 40
EPS_V, EPS_T = 1e-6, 1e-12
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
WORDS = ("a picture of the cat dog man woman girl boy with on in and is are sitting standing "
         "red blue green white black small large two three table street room bed car tree "
         "grass sky water field house window chair book dress hat shirt hair holding looking "
         "wearing near next to top front close up view people group an at by it that this "
         "there his her their its old young little big tall short long smiling playing eating "
         "walking running riding flying food plate pizza cake bowl cup phone computer screen "
         "wall door floor road sign bus train plane boat bird horse cow sheep flower garden "
         "park beach snow mountain city building night day light dark sun cloud rain color "
         "colorful photo image drawing painting art style anime character face eyes smile "
         "background").split()
PIECES = ["##s", "##ing", "##ed", "##er", "##ly", ".", ",", "!", "?", "'", "t", "-"]


def vocab():
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PIECES
    assert len(toks) == len(set(toks))
    i = 0
    while len(toks) < 200:
        toks.append("word%d" % i)
        i += 1
    assert len(toks) == 200
    return toks


V = 202
DEC, ENC = 200, 201


# ---- BLIP vit.py ----------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, VW, PATCH, PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(VW, 3 * VW, bias=True)
        self.proj = nn.Linear(VW, VW)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, VH, C // VH).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * (C // VH) ** -0.5
        a = a.softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(VW, VM)
        self.fc2 = nn.Linear(VM, VW)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(VW, eps=EPS_V)
        self.attn = Attention()
        self.norm2 = nn.LayerNorm(VW, eps=EPS_V)
        self.mlp = Mlp()

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.randn(1, 1, VW) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, VW) * 0.5)
        self.blocks = nn.ModuleList([Block() for _ in range(VD)])
        self.norm = nn.LayerNorm(VW, eps=EPS_V)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed[:, : x.size(1), :]
        for b in self.blocks:
            x = b(x)
        return self.norm(x)


# ---- BLIP med.py ----------------------------------------------------------------------------------
class BertSelfAttention(nn.Module):
    def __init__(self, kv_width):
        super().__init__()
        self.query = nn.Linear(TW, TW)
        self.key = nn.Linear(kv_width, TW)
        self.value = nn.Linear(kv_width, TW)

    def split(self, x):
        return x.view(x.shape[0], x.shape[1], TH, TW // TH).permute(0, 2, 1, 3)

    def forward(self, h, kv, mask):
        q, k, v = self.split(self.query(h)), self.split(self.key(kv)), self.split(self.value(kv))
        s = q @ k.transpose(-1, -2) / math.sqrt(TW // TH)
        if mask is not None:
            s = s + mask
        p = s.softmax(dim=-1)
        c = (p @ v).permute(0, 2, 1, 3).contiguous()
        return c.view(c.shape[0], c.shape[1], TW)


class BertSelfOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(TW, TW)
        self.LayerNorm = nn.LayerNorm(TW, eps=EPS_T)

    def forward(self, h, inp):
        return self.LayerNorm(self.dense(h) + inp)


class BertAttention(nn.Module):
    def __init__(self, kv_width):
        super().__init__()
        self.self = BertSelfAttention(kv_width)
        self.output = BertSelfOutput()

    def forward(self, h, kv, mask):
        return self.output(self.self(h, kv, mask), h)


class Dense(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.dense = nn.Linear(i, o)


class BertOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(TI, TW)
        self.LayerNorm = nn.LayerNorm(TW, eps=EPS_T)


class BertLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = BertAttention(TW)
        self.crossattention = BertAttention(VW)
        self.intermediate = Dense(TW, TI)
        self.output = BertOutput()

    def forward(self, h, img, mask):
        h = self.attention(h, h, mask)
        h = self.crossattention(h, img, None)   # encoder mask all ones
        f = F.gelu(self.intermediate.dense(h))
        return self.output.LayerNorm(self.output.dense(f) + h)


class Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, TW)
        self.position_embeddings = nn.Embedding(POS, TW)
        self.LayerNorm = nn.LayerNorm(TW, eps=EPS_T)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer() for _ in range(TD)])


class Bert(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = Embeddings()
        self.encoder = Encoder()


class Transform(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(TW, TW)
        self.LayerNorm = nn.LayerNorm(TW, eps=EPS_T)


class Predictions(nn.Module):
    def __init__(self):
        super().__init__()
        self.transform = Transform()
        self.decoder = nn.Linear(TW, V, bias=False)
        self.bias = nn.Parameter(torch.zeros(V))


class Cls(nn.Module):
    def __init__(self):
        super().__init__()
        self.predictions = Predictions()


class BertLMHeadModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = Bert()
        self.cls = Cls()

    def forward(self, ids, img):
        T = ids.shape[1]
        e = self.bert.embeddings
        h = e.word_embeddings(ids) + e.position_embeddings(torch.arange(T))[None]
        h = e.LayerNorm(h)
        causal = torch.tril(torch.ones(T, T))
        mask = (1.0 - causal) * -10000.0
        for l in self.bert.encoder.layer:
            h = l(h, img, mask)
        p = self.cls.predictions
        t = p.transform.LayerNorm(F.gelu(p.transform.dense(h)))
        return p.decoder(t) + p.bias


class BLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual_encoder = VisionTransformer()
        self.text_decoder = BertLMHeadModel()


def make_model():
    torch.manual_seed(4321)
    m = BLIP()
    with torch.no_grad():
        td = m.text_decoder
        td.bert.embeddings.word_embeddings.weight.normal_(0, 0.25)
        td.bert.embeddings.position_embeddings.weight.normal_(0, 0.5)
        td.cls.predictions.bias.normal_(0, 0.5)
        td.cls.predictions.bias[SEP] += 3.0    # EOS now and then
        for n, p in m.named_parameters():
            if "LayerNorm" in n or "norm" in n.split(".")[-2]:
                p.add_(torch.randn_like(p) * 0.1)
        td.cls.predictions.decoder.weight = td.bert.embeddings.word_embeddings.weight   # tied
        for p in m.parameters():
            p.copy_(p.half().float())
    return m


HF_RENAME = [
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj", "vision_model.embeddings.patch_embedding"),
    ("visual_encoder.norm.", "vision_model.post_layernorm."),
    ("visual_encoder.blocks.", "vision_model.encoder.layers."),
]


def hf_name(k):
    for a, b in HF_RENAME:
        if k.startswith(a):
            k = b + k[len(a):]
            break
    if k.startswith("vision_model.encoder.layers."):
        k = (k.replace(".attn.proj.", ".self_attn.projection.").replace(".attn.qkv.", ".self_attn.qkv.")
             .replace(".norm1.", ".layer_norm1.").replace(".norm2.", ".layer_norm2."))
    return k


def save_st(path, tensors, meta=None):
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = {np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("int64"): "I64"}[a.dtype]
        b = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- generation (transformers 4.44 semantics) -----------------------------------------------------
def greedy(dec, img, prompt, min_len, max_len):
    ids = torch.tensor([prompt])
    while True:
        logits = dec(ids, img)[:, -1, :]
        if ids.shape[-1] < min_len:
            logits[:, SEP] = -float("inf")
        t = torch.argmax(logits, dim=-1)
        ids = torch.cat([ids, t[:, None]], dim=-1)
        if t.item() == SEP or ids.shape[-1] >= max_len:
            break
    out = ids[0].tolist()
    return out[:-1] if out[-1] == SEP else out


class BeamHypotheses:
    def __init__(self, num_beams):
        self.num_beams, self.beams, self.worst_score = num_beams, [], 1e9

    def add(self, hyp, sum_logprobs, generated_len):
        score = sum_logprobs / (generated_len ** 1.0)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self.beams) > self.num_beams:
                s = sorted([(s, idx) for idx, (s, _) in enumerate(self.beams)])
                del self.beams[s[0][1]]
                self.worst_score = s[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len, decoder_prompt_len):
        if len(self.beams) < self.num_beams:
            return False
        return self.worst_score >= best_sum_logprobs / (cur_len - decoder_prompt_len) ** 1.0


def beam_search(dec, img, prompt, num_beams, min_len, max_len):
    ids = torch.tensor([prompt] * num_beams)
    imgs = img.expand(num_beams, -1, -1)
    beam_scores = torch.zeros(num_beams)
    beam_scores[1:] = -1e9
    hyps = BeamHypotheses(num_beams)
    prompt_len, done = len(prompt), False
    while True:
        logits = dec(ids, imgs)[:, -1, :]
        scores = F.log_softmax(logits, dim=-1)
        if ids.shape[-1] < min_len:
            scores[:, SEP] = -float("inf")
        scores = scores + beam_scores[:, None]
        scores = scores.view(1, num_beams * V)
        top, toks = torch.topk(scores, 2 * num_beams, dim=1, largest=True, sorted=True)
        idx = torch.div(toks, V, rounding_mode="floor")
        toks = toks % V
        cur_len = ids.shape[-1] + 1
        nb_scores, nb_toks, nb_idx = [], [], []
        for rank, (t, s, i) in enumerate(zip(toks[0].tolist(), top[0].tolist(), idx[0].tolist())):
            if t == SEP:
                if rank >= num_beams:
                    continue
                hyps.add(ids[i].clone(), s, cur_len - prompt_len)
            else:
                nb_scores.append(s)
                nb_toks.append(t)
                nb_idx.append(i)
            if len(nb_toks) == num_beams:
                break
        done = done or hyps.is_done(top[0].max().item(), cur_len, prompt_len)
        ids = torch.cat([ids[nb_idx], torch.tensor(nb_toks)[:, None]], dim=-1)
        beam_scores = torch.tensor(nb_scores)
        if done or ids.shape[-1] >= max_len:
            break
    if not done:
        for b in range(num_beams):
            hyps.add(ids[b], beam_scores[b].item(), ids.shape[-1] - prompt_len)
    best = sorted(hyps.beams, key=lambda x: x[0]).pop()[1]
    return best.tolist()


def hf_process(scores, input_ids, min_len, top_k, top_p, rep):
    """transformers 4.44: RepetitionPenaltyLogitsProcessor, MinLengthLogitsProcessor, then the
    TopKLogitsWarper and TopPLogitsWarper (temperature 1 is skipped), as generate(do_sample=True)."""
    score = torch.gather(scores, 1, input_ids)
    score = torch.where(score < 0, score * rep, score / rep)
    scores = scores.scatter(1, input_ids, score)
    if input_ids.shape[-1] < min_len:
        scores[:, SEP] = -float("inf")
    k = min(top_k, scores.size(-1))
    remove = scores < torch.topk(scores, k)[0][..., -1, None]
    scores = scores.masked_fill(remove, -float("inf"))
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        sorted_remove = cumulative_probs <= (1 - top_p)
        sorted_remove[..., -1:] = 0
        remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores


# (sequence after the prompt, min_length, top_k, top_p, repetition penalty): also in test_blip_golden.c
PROC_CASES = [([9, 9, 20], 5, 50, 0.9, 1.1), ([], 5, 50, 0.9, 1.1), ([30, 31, 32, 33], 5, 10, 1.0, 1.1),
              ([40, 41], 5, 50, 0.5, 1.3)]


def decode(toks, ids):
    special = {PAD, UNK, CLS, SEP, MASK, DEC, ENC}
    s = " ".join(toks[i] for i in ids if i not in special).replace(" ##", "").strip()
    for a, b in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]:
        s = s.replace(a, b)
    return s[len("a picture of "):]


def prep(path):
    im = Image.open(path).convert("RGB").resize((GRID * PATCH, GRID * PATCH), Image.BICUBIC)
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    return (x - mean) / std


def main():
    os.makedirs(OUT, exist_ok=True)
    toks = vocab()
    with open(os.path.join(OUT, "vocab.txt"), "w") as f:
        f.write("\n".join(toks) + "\n")
    prompt = [DEC, toks.index("a"), toks.index("picture"), toks.index("of")]
    m = make_model().eval()
    sd = m.state_dict()
    tensors = {}
    for k, v in sd.items():
        if k in ("text_decoder.cls.predictions.decoder.weight",):
            continue   # tied to the word embeddings: transformers does not save it
        name = hf_name(k)
        if name == "text_decoder.cls.predictions.bias":
            name = "text_decoder.cls.predictions.decoder.bias"
        tensors[name] = v.detach().numpy().astype(np.float16)
    tensors["text_decoder.bert.embeddings.position_ids"] = np.arange(POS, dtype=np.int64)[None]
    save_st(os.path.join(OUT, "blip_tiny_hf.safetensors"), tensors,
            {"vision_heads": str(VH), "text_heads": str(TH), "format": "pt"})

    g = {}
    with torch.no_grad():
        torch.manual_seed(99)
        x = torch.randn(2, 3, GRID * PATCH, GRID * PATCH)
        emb = m.visual_encoder(x)
        g["golden.x"] = x
        g["golden.emb"] = emb
        seq = prompt + [toks.index("cat"), toks.index("on"), toks.index("the"), toks.index("##s"), 150]
        g["golden.seq"] = torch.tensor(seq, dtype=torch.float32)
        g["golden.logits"] = m.text_decoder(torch.tensor([seq]), emb[:1])[0]
        for n in range(2):
            e = emb[n:n + 1]
            gr = greedy(m.text_decoder, e, prompt, 5, 20)
            b3 = beam_search(m.text_decoder, e, prompt, 3, 5, 20)
            bs = beam_search(m.text_decoder, e, prompt, 3, 5, 8)
            print("image %d greedy %s\n        beam3 %s\n        beam3short %s" % (n, gr, b3, bs))
            g["golden.greedy.%d" % n] = torch.tensor(gr, dtype=torch.float32)
            g["golden.beam3.%d" % n] = torch.tensor(b3, dtype=torch.float32)
            g["golden.beam3short.%d" % n] = torch.tensor(bs, dtype=torch.float32)
            if n == 0:   # many beams (the C code sorts all candidates then)
                b17 = beam_search(m.text_decoder, e, prompt, 17, 5, 20)
                print("        beam17 %s" % b17)
                g["golden.beam17.0"] = torch.tensor(b17, dtype=torch.float32)
        gen = torch.Generator().manual_seed(7)
        pin = torch.randn(len(PROC_CASES), V, generator=gen) * 3
        pout = torch.empty_like(pin)
        for c, (tail, mn, k, p, rep) in enumerate(PROC_CASES):
            pout[c] = hf_process(pin[c:c + 1].clone(), torch.tensor([prompt + tail]), mn, k, p, rep)[0]
        g["golden.proc.in"] = pin
        g["golden.proc.out"] = pout
        lines = []
        for k, stem in enumerate(["a_97x61", "b_203x150_rgba", "c_640x480"]):
            p = prep(os.path.join(IMGS, stem + ".png"))
            g["golden.prep.%d" % k] = p
            e = m.visual_encoder(p[None])
            gr = greedy(m.text_decoder, e, prompt, 5, 75 if POS >= 75 else POS)
            b3 = beam_search(m.text_decoder, e, prompt, 3, 5, POS)
            lines.append("%s\tgreedy\t%s" % (stem, decode(toks, gr)))
            lines.append("%s\tbeam3\t%s" % (stem, decode(toks, b3)))
            print(lines[-2])
            print(lines[-1])
    save_st(os.path.join(OUT, "blip_golden.safetensors"),
            {k: v.detach().numpy().astype(np.float32) for k, v in g.items()})
    with open(os.path.join(OUT, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
