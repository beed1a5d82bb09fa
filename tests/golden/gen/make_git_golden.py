#!/usr/bin/python3
"""Golden data for tests/golden/test_git_golden.c and tests/cli/caption.sh (the GIT captioner of
sd-caption). Run once by hand with Debian's /usr/bin/python3 (python3-torch, python3-pil, numpy;
transformers is not needed); the outputs are committed under tests/data/git/.

1. Model: a plain-PyTorch transcription of transformers' models/git/modeling_git.py
   GitForCausalLM under its module (= key) names: GitVisionEmbeddings (class_embedding [D], patch
   conv without bias, position_embedding), pre_layrnorm, CLIP encoder layers (layer_norm1,
   self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1 / quick_gelu / fc2), post_layernorm on every
   token; GitProjection (Linear + LayerNorm eps = vision eps 1e-5); GitEmbeddings (word +
   position, LayerNorm eps 1e-12); GitLayer (BERT self-attention over [image ; text] with
   create_attention_mask / _generate_future_mask transcribed, add & LayerNorm, GELU FFN, add &
   LayerNorm); output Linear. No cache: the whole sequence is recomputed at each step, as
   GitModel.forward does without past_key_values, so the C key/value cache is checked too.
   Tiny sizes: vision width 32, 2 heads, 2 layers, MLP 64, patch 8, 32x32 input (17 tokens);
   text width 32, 2 heads, 2 layers, FFN 64, 64 positions, the 200-token vocabulary of
   tests/data/blip/vocab.txt ([CLS] 2 = BOS, [SEP] 3 = EOS). Weights rounded to float16, stored
   F16 (computed in float32), heads in __metadata__, output.weight stored (not tied).
   -> git_tiny.safetensors, vocab.txt
2. git_golden.safetensors (F32; ids as floats): golden.x [2,3,32,32], golden.vis [2,17,32]
   (vision tower after post_layernorm), golden.feat [2,17,32] (visual projection), golden.seq
   and golden.logits [len, 200] (logits of every text position, image 0), golden.greedy.N (HF
   greedy generate, max_length 50: ids after BOS, EOS excluded), golden.prep.K: the GIT
   processor (CLIPImageProcessor: shortest edge 32 PIL BICUBIC, centre crop 32, rescale, CLIP
   mean/std) of tests/data/tagger images.
3. expected.txt: "<stem>\t<max_length>\t<remove_words 0|1>\t<caption>" through the whole pipeline
   (processor, generate, batch_decode(skip_special_tokens=True) with clean-up, remove_words).
4. remove_words.txt: "<input>\t<output>" for sentences through kohya's PATTERN_REPLACE (Python re).
"""
import json
import os
import re
import struct

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "data", "git")
IMGS = os.path.join(HERE, "..", "..", "data", "tagger")

VW, VH, VD, VM, PATCH, SIZE = 32, 2, 2, 64, 8, 32
TW, TH, TD, TI, POS = 32, 2, 2, 64, 64
VEPS, TEPS = 1e-5, 1e-12
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
NTOK = (SIZE // PATCH) ** 2 + 1


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class GitVisionEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(VW))
        self.patch_embedding = nn.Conv2d(3, VW, PATCH, PATCH, bias=False)
        self.position_embedding = nn.Embedding(NTOK, VW)

    def forward(self, x):
        p = self.patch_embedding(x).flatten(2).transpose(1, 2)
        c = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([c, p], 1) + self.position_embedding(torch.arange(NTOK))[None]


def mha(q, k, v, heads, mask=None):
    B, Tq, D = q.shape
    Tk = k.shape[1]
    d = D // heads
    q = q.view(B, Tq, heads, d).transpose(1, 2)
    k = k.view(B, Tk, heads, d).transpose(1, 2)
    v = v.view(B, Tk, heads, d).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / (d ** 0.5)
    if mask is not None:
        s = s + mask
    return (s.softmax(-1) @ v).transpose(1, 2).reshape(B, Tq, D)


class GitVisionAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.k_proj, self.v_proj = nn.Linear(VW, VW), nn.Linear(VW, VW)
        self.q_proj, self.out_proj = nn.Linear(VW, VW), nn.Linear(VW, VW)

    def forward(self, h):
        return self.out_proj(mha(self.q_proj(h), self.k_proj(h), self.v_proj(h), VH))


class GitVisionMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(VW, VM), nn.Linear(VM, VW)

    def forward(self, h):
        return self.fc2(quick_gelu(self.fc1(h)))


class GitVisionEncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = GitVisionAttention()
        self.layer_norm1 = nn.LayerNorm(VW, eps=VEPS)
        self.mlp = GitVisionMLP()
        self.layer_norm2 = nn.LayerNorm(VW, eps=VEPS)

    def forward(self, h):
        h = h + self.self_attn(self.layer_norm1(h))
        return h + self.mlp(self.layer_norm2(h))


class GitVisionEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([GitVisionEncoderLayer() for _ in range(VD)])


class GitVisionTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = GitVisionEmbeddings()
        self.pre_layrnorm = nn.LayerNorm(VW, eps=VEPS)
        self.encoder = GitVisionEncoder()
        self.post_layernorm = nn.LayerNorm(VW, eps=VEPS)

    def forward(self, x):
        h = self.pre_layrnorm(self.embeddings(x))
        for l in self.encoder.layers:
            h = l(h)
        return self.post_layernorm(h)


class GitVisionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision_model = GitVisionTransformer()


class GitProjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual_projection = nn.Sequential(nn.Linear(VW, TW), nn.LayerNorm(TW, eps=VEPS))


class GitEmbeddings(nn.Module):
    def __init__(self, V):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, TW)
        self.position_embeddings = nn.Embedding(POS, TW)
        self.LayerNorm = nn.LayerNorm(TW, eps=TEPS)

    def forward(self, ids):
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(torch.arange(ids.shape[1]))[None])


class Lin(nn.Module):   # BERT's X.dense + X.LayerNorm holders
    def __init__(self, i, o, ln=True):
        super().__init__()
        self.dense = nn.Linear(i, o)
        if ln:
            self.LayerNorm = nn.LayerNorm(o, eps=TEPS)


class GitSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(TW, TW), nn.Linear(TW, TW), nn.Linear(TW, TW)


class GitAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.self = GitSelfAttention()
        self.output = Lin(TW, TW)


class GitLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = GitAttention()
        self.intermediate = Lin(TW, TI, ln=False)
        self.output = Lin(TI, TW)

    def forward(self, h, mask):
        s = self.attention.self
        a = mha(s.query(h), s.key(h), s.value(h), TH, mask)
        h = self.attention.output.LayerNorm(self.attention.output.dense(a) + h)
        f = torch.nn.functional.gelu(self.intermediate.dense(h))
        return self.output.LayerNorm(self.output.dense(f) + h)


class GitEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([GitLayer() for _ in range(TD)])


def generate_future_mask(size):   # GitModel._generate_future_mask
    mask = torch.triu(torch.ones(size, size), diagonal=1)
    return mask.masked_fill(mask == 1, float("-inf"))


def create_attention_mask(num_tgt, num_memory, tgt_mask):   # GitModel.create_attention_mask, no past
    top_left = torch.zeros((num_memory, num_memory))
    top_right = torch.full((num_memory, num_tgt), float("-inf"))
    bottom_left = torch.zeros((num_tgt, num_memory))
    left = torch.cat((top_left, bottom_left), dim=0)
    right = torch.cat((top_right, tgt_mask), dim=0)
    return torch.cat((left, right), dim=1)[None, None]


class GitModel(nn.Module):
    def __init__(self, V):
        super().__init__()
        self.embeddings = GitEmbeddings(V)
        self.image_encoder = GitVisionModel()
        self.encoder = GitEncoder()
        self.visual_projection = GitProjection()


class GitForCausalLM(nn.Module):
    def __init__(self, V):
        super().__init__()
        self.git = GitModel(V)
        self.output = nn.Linear(TW, V)

    def vision(self, x):
        return self.git.image_encoder.vision_model(x)

    def features(self, x):
        return self.git.visual_projection.visual_projection(self.vision(x))

    def logits(self, feat, ids):   # text-position logits of GitForCausalLM.forward
        e = self.git.embeddings(ids)
        h = torch.cat([feat, e], 1)
        mask = create_attention_mask(ids.shape[1], feat.shape[1], generate_future_mask(ids.shape[1]))
        for l in self.git.encoder.layer:
            h = l(h, mask)
        return self.output(h)[:, feat.shape[1]:]


def greedy(m, feat, max_length):   # HF generate(max_length): BOS, argmax, stop at EOS
    ids = [CLS]
    while len(ids) < max_length:
        nxt = int(m.logits(feat, torch.tensor([ids]))[0, -1].argmax())
        ids.append(nxt)
        if nxt == SEP:
            break
    return [i for i in ids[1:] if i != SEP]


def decode(toks, ids):   # batch_decode(skip_special_tokens=True), clean_up_tokenization_spaces
    special = {PAD, UNK, CLS, SEP, MASK}
    s = " ".join(toks[i] for i in ids if i not in special).replace(" ##", "").strip()
    for a, b in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]:
        s = s.replace(a, b)
    return s


# kohya-ss/sd-scripts finetune/make_captions_by_git.py, verbatim
PATTERN_REPLACE = [
    re.compile(r'(has|with|and) the (words?|letters?|name) (" ?[^"]*"|\w+)( ?(is )?(on|in) (the |her |their |him )?\w+)?'),
    re.compile(r'(with a sign )?that says ?(" ?[^"]*"|\w+)( ?on it)?'),
    re.compile(r"(with a sign )?that says ?(' ?(i'm)?[^']*'|\w+)( ?on it)?"),
    re.compile(r"with the number \d+ on (it|\w+ \w+)"),
    re.compile(r'with the words "'),
    re.compile(r"word \w+ on it"),
    re.compile(r"that says the word \w+ on it"),
    re.compile("that says'the word \"( on it)?"),
]


def remove_words(cap):
    for pat in PATTERN_REPLACE:
        cap = pat.sub("", cap)
    return cap


SENTENCES = [
    'a sign with the words "hello world" on the wall',
    "a man with the word stop on his shirt",
    "a book with the name harry in the title",
    "a poster that says welcome on it",
    'a sign that says "no parking" on it',
    "a box that says 'i'm fragile' on it",
    "a bus with the number 42 on it",
    "a car with the number 7 on the door",
    "a shirt with the word nike on it",
    "a sign that says the word exit on it",
    "a mug that says'the word \" on it",
    'a sign with the words "',
    "a red car parked on the street",
    "a cake and the letters happy is on the top",
    "a cake and the letter a in her hand",
    "a sign has the words open 24 hours on the door",
    "with a sign that says hello on it and a dog",
    "a store that says",
    "a store that says ",
    "a man and the words",
    "a wall with the word café on it",
    "a sign that says 'open",
    'a sign that says "open',
    "a door with the number 12 on it with the number 3 on the wall",
    "a bottle with the letters abc on their table and the name bob",
    "that says that says x",
    "a shirt with the name ñandú in the picture",
    "the words with the words with the words \"a\"",
    "a plate that says2 on it",
    "a sign with the word \u201chi\u201d on it",
]


def clip_processor(path, size):   # transformers CLIPImageProcessor as GIT's config sets it
    im = Image.open(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    ns, nl = size, int(size * long / short)
    nw, nh = (ns, nl) if w <= h else (nl, ns)
    a = np.array(im.resize((nw, nh), resample=Image.BICUBIC))
    top, left = (nh - size) // 2, (nw - size) // 2
    a = a[top:top + size, left:left + size]
    a = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    a = (a - mean) / std
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


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


def main():
    os.makedirs(OUT, exist_ok=True)
    toks = open(os.path.join(OUT, "vocab.txt")).read().split("\n")[:-1]
    V = len(toks)
    assert toks[CLS] == "[CLS]" and toks[SEP] == "[SEP]"
    torch.manual_seed(1234)
    m = GitForCausalLM(V).eval()
    with torch.no_grad():
        for k, p in m.named_parameters():
            if "LayerNorm" in k or "layer_norm" in k or "layrnorm" in k or "visual_projection.1" in k:
                p.copy_((1.0 if k.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.3))
        m.output.weight.mul_(4.0)   # a sharper, more varied head
        m.output.bias.mul_(0.2)
        m.output.bias[SEP] += 2.0   # some captions end before max_length   # some captions end before max_length
        for p in m.parameters():
            p.copy_(p.half().float())
    tensors = {k: v.detach().numpy().astype(np.float16) for k, v in m.state_dict().items()}
    save_st(os.path.join(OUT, "git_tiny.safetensors"), tensors,
            {"vision_heads": str(VH), "text_heads": str(TH), "format": "pt"})
    g = {}
    with torch.no_grad():
        torch.manual_seed(99)
        x = torch.randn(2, 3, SIZE, SIZE)
        g["golden.x"] = x
        g["golden.vis"] = m.vision(x)
        feat = m.features(x)
        g["golden.feat"] = feat
        seq = [CLS, toks.index("a"), toks.index("cat"), toks.index("on"), toks.index("the"), toks.index("##s"), 150]
        g["golden.seq"] = torch.tensor(seq, dtype=torch.float32)
        g["golden.logits"] = m.logits(feat[:1], torch.tensor([seq]))[0]
        for n in range(2):
            gr = greedy(m, feat[n:n + 1], 50)
            print("image %d greedy %s" % (n, gr))
            g["golden.greedy.%d" % n] = torch.tensor(gr, dtype=torch.float32)
        lines = []
        for k, stem in enumerate(["a_97x61", "b_203x150_rgba", "c_640x480", "d_50x33_la", "e_33x517"]):
            p = clip_processor(os.path.join(IMGS, stem + ".png"), SIZE)
            g["golden.prep.%d" % k] = p
            f = m.features(p[None])
            for ml in (50, 10):
                cap = decode(toks, greedy(m, f, ml))
                for rw in (0, 1):
                    lines.append("%s\t%d\t%d\t%s" % (stem, ml, rw, remove_words(cap) if rw else cap))
                    print(lines[-1])
    save_st(os.path.join(OUT, "git_golden.safetensors"),
            {k: v.detach().numpy().astype(np.float32) for k, v in g.items()})
    with open(os.path.join(OUT, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "remove_words.txt"), "w", encoding="utf-8") as f:
        for s in SENTENCES:
            f.write("%s\t%s\n" % (s, remove_words(s)))


if __name__ == "__main__":
    main()
