#!/usr/bin/python3
"""Reference token rows and weights of the reference's sample-image pipeline
(kohya-ss/sd-scripts library/lpw_stable_diffusion.py at 48d368fa: parse_prompt_attention,
get_prompts_with_weights, pad_tokens_and_weights, the chunk fix-ups of
get_unweighted_text_embeddings and the chunk count of get_weighted_text_embeddings with
max_embeddings_multiples = 3, no_boseos_middle = False), for tests/unit/test_sample.c.

Run once by hand with Debian's /usr/bin/python3 (python3-regex); the output is committed:

    /usr/bin/python3 tests/golden/gen/make_sample_lpw_golden.py

The tokenizer is clip_tokenizer_ref.py's oracle (Hugging Face CLIPTokenizer semantics). ftfy is
not needed: every prompt here is plain ASCII without HTML entities, which fix_text leaves alone,
so a stand-in that returns its input is installed before the oracle is imported.

Writes tests/data/sample/lpw_rows.tsv, one line per (case, prompt or negative prompt, family):
"<hex of the UTF-8 text>\\t<pad id>\\t<chunks>\\t<chunks*77 ids>\\t<chunks*77 weights>" (lists
space-separated; weights as float32-rounded reprs).
"""
import os
import re
import struct
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.modules["ftfy"] = types.SimpleNamespace(fix_text=lambda t, fix_encoding=False: t)
sys.path.insert(0, HERE)
import clip_tokenizer_ref  # noqa: E402

OUT = os.path.join(HERE, "..", "..", "data", "sample", "lpw_rows.tsv")
BOS, EOS = 49406, 49407
MODEL_MAX = 77

# ---- verbatim from lpw_stable_diffusion.py (tokenizer calls replaced by the oracle) ----------------

re_attention = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:([+-]?[.\d]+)\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)


def parse_prompt_attention(text):
    res = []
    round_brackets = []
    square_brackets = []

    round_bracket_multiplier = 1.1
    square_bracket_multiplier = 1 / 1.1

    def multiply_range(start_position, multiplier):
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        text = m.group(0)
        weight = m.group(1)

        if text.startswith("\\"):
            res.append([text[1:], 1.0])
        elif text == "(":
            round_brackets.append(len(res))
        elif text == "[":
            square_brackets.append(len(res))
        elif weight is not None and len(round_brackets) > 0:
            multiply_range(round_brackets.pop(), float(weight))
        elif text == ")" and len(round_brackets) > 0:
            multiply_range(round_brackets.pop(), round_bracket_multiplier)
        elif text == "]" and len(square_brackets) > 0:
            multiply_range(square_brackets.pop(), square_bracket_multiplier)
        else:
            res.append([text, 1.0])

    for pos in round_brackets:
        multiply_range(pos, round_bracket_multiplier)

    for pos in square_brackets:
        multiply_range(pos, square_bracket_multiplier)

    if len(res) == 0:
        res = [["", 1.0]]

    # merge runs of identical weights
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1

    return res


def get_prompts_with_weights(tok, prompt, max_length):
    tokens = []
    weights = []
    for text in prompt:
        texts_and_weights = parse_prompt_attention(text)
        text_token = []
        text_weight = []
        for word, weight in texts_and_weights:
            token = tok.encode(word)  # = pipe.tokenizer(word).input_ids[1:-1]
            text_token += token
            text_weight += [weight] * len(token)
            if len(text_token) > max_length:
                break
        if len(text_token) > max_length:
            text_token = text_token[:max_length]
            text_weight = text_weight[:max_length]
        tokens.append(text_token)
        weights.append(text_weight)
    return tokens, weights


def pad_tokens_and_weights(tokens, weights, max_length, bos, eos, no_boseos_middle=True, chunk_length=77):
    max_embeddings_multiples = (max_length - 2) // (chunk_length - 2)
    weights_length = max_length if no_boseos_middle else max_embeddings_multiples * chunk_length
    for i in range(len(tokens)):
        tokens[i] = [bos] + tokens[i] + [eos] * (max_length - 1 - len(tokens[i]))
        if no_boseos_middle:
            weights[i] = [1.0] + weights[i] + [1.0] * (max_length - 1 - len(weights[i]))
        else:
            w = []
            if len(weights[i]) == 0:
                w = [1.0] * weights_length
            else:
                for j in range(max_embeddings_multiples):
                    w.append(1.0)  # weight for starting token in this chunk
                    w += weights[i][j * (chunk_length - 2) : min(len(weights[i]), (j + 1) * (chunk_length - 2))]
                    w.append(1.0)  # weight for ending token in this chunk
                w += [1.0] * (weights_length - len(w))
            weights[i] = w[:]

    return tokens, weights


def chunk_rows(text_input, chunk_length, eos, pad):
    """The ids get_unweighted_text_embeddings feeds the text encoder, chunk by chunk."""
    max_embeddings_multiples = (len(text_input) - 2) // (chunk_length - 2)
    if max_embeddings_multiples <= 1:
        return list(text_input)
    out = []
    for i in range(max_embeddings_multiples):
        c = list(text_input[i * (chunk_length - 2) : (i + 1) * (chunk_length - 2) + 2])
        c[0] = text_input[0]
        if pad == eos:  # v1
            c[-1] = text_input[-1]
        else:  # v2
            if c[-1] != eos and c[-1] != pad:
                c[-1] = eos
            if c[1] == pad:
                c[1] = eos
        out += c
    return out


def rows(tok, prompt, uncond, pad, max_embeddings_multiples=3):
    """get_weighted_text_embeddings up to the text encoder: (ids, weights) of prompt and uncond."""
    max_length = (MODEL_MAX - 2) * max_embeddings_multiples + 2
    prompt_tokens, prompt_weights = get_prompts_with_weights(tok, [prompt], max_length - 2)
    uncond_tokens, uncond_weights = get_prompts_with_weights(tok, [uncond], max_length - 2)
    max_length = max([len(t) for t in prompt_tokens])
    max_length = max(max_length, max([len(t) for t in uncond_tokens]))
    max_embeddings_multiples = min(max_embeddings_multiples, (max_length - 1) // (MODEL_MAX - 2) + 1)
    max_embeddings_multiples = max(1, max_embeddings_multiples)
    max_length = (MODEL_MAX - 2) * max_embeddings_multiples + 2
    out = []
    for t, w in ((prompt_tokens, prompt_weights), (uncond_tokens, uncond_weights)):
        t, w = pad_tokens_and_weights(t, w, max_length, BOS, EOS, no_boseos_middle=False, chunk_length=MODEL_MAX)
        out.append((chunk_rows(t[0], MODEL_MAX, EOS, pad), w[0], max_embeddings_multiples))
    return out


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main():
    tok = clip_tokenizer_ref.Oracle()
    words = " ".join("word%d," % i for i in range(1, 101))
    a75 = " ".join(["a"] * 75)
    cases = [
        ("a photo of a cat", ""),
        ("a (very:1.3) [small] ((dog)), sitting", "blurry, (ugly:1.2)"),
        ("\\(literal\\] (unbalanced [open", "x:y z"),
        ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", "(worst quality:1.4), lowres"),
        (words, "blurry"),
        ("short", words),
        (" ".join(["cat"] * 240), ""),
        (a75, ""),
        (a75 + " b", "(neg:0.8)"),
        (a75 + " ! b", "!"),
        (" ".join(["a"] * 74) + " (x y z:1.3) end", ""),
        ("", ""),
        ("!", "! !"),
        ("(a:-0.5) [b:2] (c:+1.25)", "[[[x]]]"),
    ]
    lines = []
    for p, n in cases:
        for pad in (EOS, 0):
            (pi, pw, k), (ni, nw, _) = rows(tok, p, n, pad)
            for text, ids, w in ((p, pi, pw), (n, ni, nw)):
                assert len(ids) == 77 * k and len(w) == 77 * k, (text, len(ids), len(w), k)
                lines.append("%s\t%d\t%d\t%s\t%s" % (text.encode("utf-8").hex(), pad, k,
                                                     " ".join(str(i) for i in ids),
                                                     " ".join(repr(f32(x)) for x in w)))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d rows to %s" % (len(lines), OUT))


if __name__ == "__main__":
    main()
