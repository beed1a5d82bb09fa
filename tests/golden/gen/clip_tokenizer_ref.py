#!/usr/bin/python3
"""Reference token ids for tests/unit/test_clip_tokenizer.c (run once by hand with Debian's
/usr/bin/python3, python3-regex, python3-wcwidth and an ftfy 6.1.1 source tree on PYTHONPATH
(git tag v6.1.1 of rspeer/python-ftfy; kohya-ss/sd-scripts pins that version); outputs are
committed):

    PYTHONPATH=/path/to/python-ftfy-6.1.1 /usr/bin/python3 tests/golden/gen/clip_tokenizer_ref.py

The oracle follows openai/CLIP clip/simple_tokenizer.py and Hugging Face's CLIPTokenizer (the
slow tokenizer kohya-ss/sd-scripts uses) step by step, written here from their description:
  text -> ftfy.fix_text(text)
       -> whitespace_clean (regex r'\\s+' -> ' ', then str.strip()) -> str.lower()
       -> regex.findall(<CLIP pattern>, re.IGNORECASE) -> UTF-8 bytes -> bytes_to_unicode symbols
       -> BPE with the first 48,894 merges ("</w>" on the last symbol) -> vocabulary ids.
Differences between the two upstream tokenizers and what this oracle does:
  * openai: basic_clean = ftfy.fix_text + html.unescape twice + strip, before whitespace_clean.
  * HF with ftfy installed (kohya's requirements pin ftfy 6.1.1): fix_text only, no html.unescape.
  * HF without ftfy: BERT BasicTokenizer(strip_accents=False, do_split_on_punc=False): drops control
    characters and U+FFFD, spaces around CJK ideographs, NFC, whitespace split, lower.
  This oracle is the HF path with ftfy (all of fix_text, fix_encoding included); the script marks
  the corpus cases where fix_encoding changes the text (third column "mojibake" in corpus.tsv).
Framing follows kohya's TokenizeStrategy (reference-behaviour.md §3.2) with HF's truncation
(keep BOS/EOS) and padding to max_length.

Writes tests/data/clip_tokenizer/corpus.tsv: one case per line, "<hex of the UTF-8 text>\\t<ids>",
framed.tsv: "<case index>\\t<max_token_length>\\t<pad>\\t<nchunks*77 ids>", and ftfy.tsv:
"<case index>\\t<hex of fix_text(text)>" for the cases that ftfy changes.
"""
import gzip
import os
import random

import ftfy
import regex as re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
VOCAB = os.path.join(ROOT, "share", "sd", "clip", "bpe_simple_vocab_16e6.txt.gz")
OUT = os.path.join(ROOT, "tests", "data", "clip_tokenizer")
BOS, EOS = 49406, 49407


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


class Oracle:
    def __init__(self):
        self.byte_encoder = bytes_to_unicode()
        lines = gzip.open(VOCAB).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        assert len(vocab) == 49408
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
                              r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        res = " ".join(word)
        self.cache[token] = res
        return res

    def encode(self, text):
        text = ftfy.fix_text(text)
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for tok in re.findall(self.pat, text):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(tok).split(" "))
        return ids


def frame(ids, mtl, pad):
    L = mtl + 2
    row = [BOS] + ids[:L - 2] + [EOS]
    row += [pad] * (L - len(row))
    if L == 77:
        return row
    out = []
    for i in range(1, L - 77 + 2, 75):
        ch = [row[0]] + row[i:i + 75] + [row[-1]]
        if pad != EOS:
            if ch[-2] != EOS and ch[-2] != pad:
                ch[-1] = EOS
            if ch[1] == pad:
                ch[1] = EOS
        out += ch
    return out


def corpus():
    c = [
        "a photo of a cat", "", " ", "\t\n  \r\n", "A Photo OF a CAT", "a  photo\tof\na\r\ncat  ",
        "masterpiece, best quality, 1girl, solo, long hair, looking at viewer",
        "(masterpiece:1.2), (best quality), [worst quality], {extra}, ((detailed eyes:1.3))",
        "[foo|bar] [cat:dog:0.5] <lora:myLora:0.8> \\(escaped\\) embedding:foo",
        "don't won't it's I'm you're we've they'll she'd DON'T IT'S 'S 'st 'RE", "''s'''t 'x' '",
        "rock'n'roll o'clock y'all ma'am l'été", "'ſ 'ſt <|ſtartoftext|> ſtar",
        "1girl 2boys 3d 4k 1024x768 3.14159 -12,345.67 1e-9 0x1F 100%",
        "café naïve résumé crème brûlée Ångström Øresund Łódź Straße ŒUVRE",
        "ΟΔΟΣ ΣΊΣΥΦΟΣ Σ ΑΣ. ΑΣ'Σ σς ΌΣΟΣ", "İstanbul DİYARBAKIR ı I", "ǅemal ǈubljana Ǉ ǋ",
        "日本語のテキスト、東京タワー。", "中文字符测试：你好，世界！", "한국어 텍스트 서울",
        "ひらがな カタカナ ｶﾀｶﾅ ＡＢＣ１２３ ！？", "Русский текст ЁЖИК", "עברית ערבית العربية مرحبا",
        "हिन्दी भाषा", "ไทย ภาษา", "emoji 😀😃 👍🏽 👨‍👩‍👧‍👦 🇯🇵 ❤️ ☕ ✨",
        "🐱cat🐶dog 🏳️‍🌈 #️⃣ ©®™", "math ∑∫√∞ ≤≥ ±×÷ ½ ¾ ² ³ ⁴ ₁ Ⅻ ⅻ ①②",
        "symbols ~!@#$%^&*()_+-=[]{}|;:\",./<>? `", "....... !!!! ???? ---- ____ ****",
        "quote “curly” ‘single’ — dash – en … ellipsis « guillemets »",
        "&amp; &lt;tag&gt; &#39; &quot;entities&quot; <b>html</b>",
        "<|startoftext|>hello<|endoftext|> <|STARTOFTEXT|> <|endoftext |> x<|endoftext|>y !<|endoftext|>",
        "nbsp\u00a0here\u2003em\u3000ideo\u2028ls\u2029ps\u0085nel\x1c\x1d\x1e\x1ffs\x0b\x0c",
        "\x1c leading and trailing \x1f", "\u200b zero\u200bwidth \u200d\u200c \ufeffbom",
        "combining e\u0301 a\u0308 n\u0303 \u0345 \u0345x a\u0345", "ligature ﬁ ﬂ ﬀ ﬃ",
        "tab\tand\vvertical\fform", "control \x00\x01\x07\x7f\x80\x9f chars",
        "mixedCASE CamelCaseWord HTTPServer iPhone eBay",
        "url https://example.com/path?a=1&b=2#frag user@mail.com",
        "hyphen-ated under_score dot.ted slash/ed back\\slash",
        "a" * 80, "ab" * 60, "!" * 100, "1" * 90, "é" * 40, "😀" * 30,
        "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝 𝓈𝒸𝓇𝒾𝓅𝓉 ｆｕｌｌｗｉｄｔｈ", "\U0010FFFF \U000E0001 \uE000 \uFFFD \uFFFF",
        "ǰ ẞ ß Σ ﬅ ǅ ῼ ᾈ", "Ⓐ ⓐ Ⅰ ⅰ 🄰",
        # ftfy's fixes
        "&amp; &AMP; &eacute; &EACUTE; &Eacute; &NTILDE; &nTILDE; &#39; &#x27; &#X27; &#59; &#x3b;",
        "&#0; &#128; &#x80; &#150; &#x110000; &#55296; &#1; &#11; &#65534; &#12ab; &#x1g; &#x;",
        "&notanentity; &amp &amp;amp; &amp;amp;amp;lt; &&amp; &FFILIG; &ffilig; &#0000065; &#99999999999999;",
        "&abcdefghijklmnopqrstuvwx; &abcdefghijklmnopqrstuvwxy; &lt;b&gt; x&nbsp;y",
        "line one &amp; ok\nline <two> &amp; not\nline three &amp; not",
        "&amp; first\r\nsecond &amp;\rthird\u2028fourth &eacute;",
        "don\u2019t \u2018single\u2019 \u201cdouble\u201d \u201ereverse\u201f \u02bcmodifier \u201blow",
        "\ufb01nance \ufb02ow \ufb00 \ufb03 \ufb04 \ufb05 \ufb06 \u0132 \u0133 \u01c4 \u01c5 \u01c6 \u0149",
        "\uff21\uff22\uff23 \uff41\uff42 \uff10\uff11 \uff01\uff1f \u3000 \uff76\uff9e\uff8a\uff9f \uffe5 \uffe0",
        "C1: \x80 \x81 \x85 \x8d \x91quote\x92 \x93dq\x94 \x96 \x97 \x99 \x9f",
        "ansi \x1b[31mred\x1b[0m \x1b[1;32;40mbold\x1b[m \x1b[\u0663m \x1b[x \x1b[",
        "controls \x00\x01\x08\x0b\x0e\x1f\x7f \u206a\u206f \ufeff \ufff9\ufffb \ufffc \ufffd end",
        "nfd e\u0301 a\u0308 o\u0302\u0323 \u1100\u1161\u11a8 \u1100\u1161 A\u030a \u212b \u2126",
        "nfc q\u0307\u0323 \u0344 \u0958 \u0f73 \u1f82 \u0b47\u0b3e \u09c7\u09be \u0041\u0301\u0301",
        "Ã© CafÃ© Ã¡ lâ€™Ã©tÃ© â€œquoteâ€\x9d",
    ]
    long_caption = ", ".join([
        "masterpiece", "best quality", "highres", "1girl", "solo", "long hair", "blue eyes",
        "smile", "open mouth", "blush", "looking at viewer", "outdoors", "sky", "cloud", "day",
        "blue sky", "white dress", "sun hat", "holding flower", "sunflower field", "wind",
        "floating hair", "depth of field", "bokeh", "lens flare", "cinematic lighting",
        "from side", "upper body", "detailed background", "scenery", "summer", "cowboy shot",
        "standing", "arms behind back", "hair ornament", "hairclip", "bangs", "sidelocks",
        "collarbone", "bare shoulders", "sleeveless dress", "frills", "ribbon", "straw hat",
        "petals", "falling petals", "light particles", "sparkle", "god rays", "warm colors",
        "vibrant", "sharp focus", "intricate details", "8k wallpaper", "official art",
        "illustration", "painting", "watercolor (medium)", "traditional media", "signature"])
    c.append(long_caption)
    c.append(long_caption + ", " + long_caption)
    c.append(" ".join("word%d" % i for i in range(120)))
    # lower(): every code point Python maps, in slices
    ups = [chr(x) for x in range(0x110000) if not 0xD800 <= x < 0xE000 and chr(x).lower() != chr(x)]
    for i in range(0, len(ups), 60):
        c.append(" ".join(ups[i:i + 60]))
    # random strings over a spread of blocks (deterministic)
    rnd = random.Random(1234)
    pools = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF),
             (0x900, 0xDFF), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF),
             (0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA000, 0xABFF),
             (0xAC00, 0xD7A3), (0xF900, 0xFFFD), (0x10000, 0x1FAFF), (0x20000, 0x2FA1F),
             (0xE0000, 0xE01EF)]
    for _ in range(300):
        n = rnd.randint(1, 40)
        s = []
        for _ in range(n):
            r = rnd.random()
            if r < 0.15:
                s.append(rnd.choice(" \t\n'<|>&;#\r"))
            elif r < 0.25:
                s.append(rnd.choice(["'s", "'ll", "<|endoftext|>", "<|startoftext|>", "'re", "ſ", "&amp;",
                                     "&#x41;", "&eacute;", "\u0301", "\u0323", "\x1b[1m", "\u2019",
                                     "\uff41", "\ufb01", "\x92", "\u1161", "\u11a8"]))
            else:
                a, b = rnd.choice(pools)
                x = rnd.randint(a, b)
                if 0xD800 <= x < 0xE000:
                    x = 0x41
                s.append(chr(x))
        c.append("".join(s))
    return [t.encode("utf-8") for t in c] + [
        b"invalid \xff\xfe bytes", b"truncated \xe6\x97", b"overlong \xc0\xaf \xe0\x80\xaf",
        b"surrogate \xed\xa0\x80 x", b"too big \xf4\x90\x80\x80 \xf5", b"lone cont \x80\xbf x",
        b"good \xf0\x9f\x98\x80 bad \xf0\x9f\x98 end",
    ]


def main():
    o = Oracle()
    assert o.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    os.makedirs(OUT, exist_ok=True)
    cases = corpus()
    assert ftfy.__version__ == "6.1.1", ftfy.__version__
    moji = 0
    with open(os.path.join(OUT, "corpus.tsv"), "w") as f, \
            open(os.path.join(OUT, "framed.tsv"), "w") as g, \
            open(os.path.join(OUT, "ftfy.tsv"), "w") as h:
        for k, raw in enumerate(cases):
            text = raw.decode("utf-8", errors="replace")
            ids = o.encode(text)
            full = ftfy.fix_text(text) != ftfy.fix_text(text, fix_encoding=False)
            moji += full
            fixed = ftfy.fix_text(text)
            if fixed != text:
                h.write("%d\t%s\n" % (k, fixed.encode("utf-8").hex()))
            f.write("%s\t%s%s\n" % (raw.hex(), " ".join(map(str, ids)), "\tmojibake" if full else ""))
            for mtl in (75, 150, 225):
                for pad in (EOS, 0):
                    if k < 12 or raw.startswith((b"masterpiece, best quality, highres", b"word0 ")):
                        g.write("%d\t%d\t%d\t%s\n" % (k, mtl, pad, " ".join(map(str, frame(ids, mtl, pad)))))
    print("%d cases, %d where ftfy's fix_encoding would change the text" % (len(cases), moji))


if __name__ == "__main__":
    main()
