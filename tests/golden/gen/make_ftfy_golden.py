#!/usr/bin/python3
"""Golden data for ftfy 6.1.1's fix_text() with fix_encoding (tests/unit/test_ftfy.c). Run once by
hand with Debian's /usr/bin/python3 (+ python3-wcwidth, python3-regex) and an ftfy 6.1.1 source
tree (git tag v6.1.1 of rspeer/python-ftfy, the version kohya-ss/sd-scripts pins) on PYTHONPATH;
the outputs are committed:

    PYTHONPATH=/path/to/python-ftfy-6.1.1 /usr/bin/python3 tests/golden/gen/make_ftfy_golden.py

Writes, under tests/data/ftfy/, one case per line with texts escaped as below:
  fix_text.tsv  "<input>\\t<ftfy.fix_text(input)>": a corpus of awkward strings (real mojibake
                in every encoding ftfy tries, double mojibake, lossy and space-for-NBSP variants,
                CESU-8, Java nulls, mixed good and bad text, text that looks odd but must be left
                alone, C1 controls, HTML entities, several lines), ftfy's own test_cases.json
                inputs (Apache-2.0, (c) Robyn Speer), and deterministic random mixtures;
  is_bad.tsv    "<text>\\t<0|1>": ftfy.badness.is_bad on short strings over the characters its
                pattern names, biased towards the sequences it looks for;
  clip_ids.tsv  "<caption>\\t<ids>": CLIP token ids of mojibake captions (the oracle of
                tests/golden/gen/clip_tokenizer_ref.py, which applies the full fix_text).
Escaping: the UTF-8 text with "\\\\" for a backslash and "\\xHH" for bytes below 0x20 and 0x7F; all
other characters are written as they are."""
import json
import os
import random
import sys

import ftfy
from ftfy import badness, chardata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
OUT = os.path.join(ROOT, "tests", "data", "ftfy")


def esc(s):
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def moji(text, enc, errors="strict"):
    """UTF-8 bytes of text read as enc."""
    return text.encode("utf-8").decode(enc, errors=errors)


ENCS = ["latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
        "sloppy-windows-1253", "sloppy-windows-1254", "iso-8859-2", "macroman", "cp437"]

PHRASES = [
    "café", "naïve résumé", "crème brûlée", "Ångström", "Straße", "Łódź", "Čeština", "señor",
    "São Paulo", "Zürich", "coöperation", "façade", "déjà vu", "piñata", "Ørsted", "Ærø",
    "voilà le travail", "à la mode", "l'été", "ça va?", "È vero", "Ébène", "İstanbul", "ağaç",
    "Ελληνικά", "Αθήνα", "Русский язык", "Привет, мир", "ёлка", "Україна", "עברית", "العربية",
    "مرحبا بالعالم", "हिन्दी", "ไทย", "日本語", "東京タワー", "中文字符", "한국어", "ツ",
    "emoji 😀", "👍🏽", "🇯🇵", "❤️", "✔ done", "☕", "“curly”", "‘single’", "don’t", "— dash –",
    "wait…", "«guillemets»", "™ © ®", "10 €", "£100", "¥500", "½ ¾", "x² y³", "±5%", "°C",
    "µs", "§ 3", "¶", "•", "†", "‰", "€", "Œuvre", "œuf", "fiancée", "ﬁne", "no\u00a0break",
    "\u00a0", "a\u00a0b", "1\u00a0000\u00a0€", "Ça", "Às vezes", "àquele", "à quel point",
]


def corpus():
    cases = []
    add = cases.append
    # 1. single-encoding mojibake of every phrase in every encoding ftfy tries
    for p in PHRASES[:40]:
        for e in ENCS:
            try:
                add(moji(p, e))
            except UnicodeDecodeError:
                pass
    # 2. lossy windows-1252 (unassigned bytes became U+FFFD or '?'), and NBSP read as a space
    for p in PHRASES[:60:2]:
        m = moji(p, "windows-1252", "replace")
        add(m)
        add(m.replace("\ufffd", "?"))
        add(moji(p, "sloppy-windows-1252").replace("\u00a0", " "))
        add(moji(p, "latin-1").replace("\u00a0", " "))
    # 3. double mojibake, and mojibake of mojibake in other encodings
    for p in PHRASES[::5]:
        add(moji(moji(p, "sloppy-windows-1252"), "sloppy-windows-1252"))
        add(moji(moji(p, "latin-1"), "sloppy-windows-1251"))
        add(moji(moji(p, "sloppy-windows-1251"), "latin-1"))
    # 4. mixed: good text around mojibake (decode_inconsistent_utf8), in sentences
    rnd = random.Random(61)
    for p in PHRASES[::4]:
        e = rnd.choice(ENCS[:3])
        add("Good café, then %s and “quotes”" % moji(p, e))
        add("日本語 %s 中文" % moji(p, "sloppy-windows-1252"))
        add("%s — %s" % (p, moji(p, "sloppy-windows-1252")))
    # 5. hand-written cases: real-world forms, quirks of the codecs, and text to leave alone
    add_all = cases.extend
    add_all([
        "CafÃ©", "â€œquotedâ€\x9d", "â€œ like this â€�", "â€œ like this â€?", "Ã© CafÃ© Ã¡ lâ€™Ã©tÃ©",
        "sÃ³", "voilÃ le travail", "Ã la mode", "Ã quele", "Ã quela", "Ã quilo", "Ã s vezes",
        "fÃ cil", "Ã  la", "Ã\u00a0 la", "Ã ", " Ã ", "Ã", "Ã\n", "a Ã b", "aÃ b", "a\tÃ b", "Â ",
        "x Â y", "x.Â «y»", "Â«Â»", "Ã\u00a0", "Ã¡", "Ã¡Ã©Ã­Ã³Ãº", "ÃƒÂ©", "Ã¢â‚¬â„¢",
        "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows.", "âœ” No problems",
        "&macr;\\_(ã\x83\x84)_/&macr;", "&ATILDE;&SUP3;", "P&EACUTE;REZ", "&Atilde;&copy;",
        "Ã&copy;", "<b>CafÃ©</b>", "CafÃ©\n<p>CafÃ©</p>\nCafÃ© &amp;",
        "line one CafÃ©\r\nline two naÃ¯ve\rline three\u2028fÃ¼r", "CafÃ©\nCafé\nCafÃ©\n",
        # utf-8-variants: CESU-8 surrogate pairs, Java's C0 80, and the `$`-before-newline quirk
        "Ã© í\xa0½í\xb8\x8d", "í\xa0½í\xb8\x8d", "Ã© í\xa0½í\xb8\n", "Ã©í\xa0½í\xb8\n",
        "í\xa0½í\xb8", "Ã©À\n", "Ã©À", "Ã©À\x80 x", "Ã©À\x80", "À\x80Ã©", "Ã©í\xa0½", "Ã©í\x9f¿",
        "Ã©íž\x80", "Ã©\n\n", "í\xa0½í\xb8\x8d í\xa0½í\xb8\x8d Ã©",
        # C1 controls alone and in context
        "\x80", "\x81", "\x85", "\x8d", "\x9d", "\x80\x81", "caf\x82", "\x93hi\x94", "\x91quote\x92 \x81",
        "Â\x80", "â\x80\x94", "â\x80\x9c", "\x9c\x9d\x9e", "ok\x85next",
        # sloppy codecs, iso-8859-2, macroman, cp437 read-backs
        "Ð¿Ñ€Ð¸Ð²ÐµÑ‚", "РїСЂРёРІРµС‚", "вЂњquoteвЂќ", "Ð\u00a0ÑƒÑÑÐºÐ¸Ð¹", "Ã„Å¸", "Ä\u008d",
        "Î±Î²Î³", "ÎŁÎ±", "β€™", "Î\u00a0", "Ø§Ù„Ø¹Ø±Ø¨ÙŠØ©", "×¢×‘×¨×™×ª", "à¤¹à¤¿à¤¨à¥à¤¦à¥€",
        "Ã¤Â¸Â­Ã¦â€“â€¡", "ä¸\u00adæ–‡", "æ—¥æœ¬èªž", "ì•ˆë…•", "ðŸ˜€", "ðŸ‘\u008d", "ðŸ‘ ",
        "‚Ä¶", "‚Äú", "‚Äù", "‚Äô", "‚Ä†", "‚Ä¢", "√©", "√†", "√§", "√±", "‚âà", "‚ó°",
        "ΓΓ", "Γ€Γ", "Β°Β", "√∂", "≈°", "Ã¼ber", "Ã\u009f", "╨┐╤Ç╨╕╨▓╨╡╤é", "Γ£ö", "ΓÇÖ", "ΓÇ£quoteΓÇ¥",
        "ÄŒeÅ¡tina", "Ä\u008ceÅ¡tina", "PolskÃ½", "ÅÃ³dÅº", "TÃ¼rkÃ§e", "Ä°stanbul", "ÅŸ",
        # text that looks unusual but is not mojibake
        "(╯°□°）╯︵ ┻━┻", "¯\\_(ツ)_/¯", "ಠ_ಠ", "(ง'̀-'́)ง", "ÂBC", "ÉÉÉ", "Ø Ù", "× ²", "×²",
        "naïve café", "IKEA Ümit", "10€", "€10", "£100", "©2020", "™", "Æsir", "Œuvre", "œuf", "Œ",
        "œ1", "œ ", "√2", "√±", "≈°", "вЂ", "ГўВЂВ\"x", "ГўВЂВ\"\n", "ГўВЂВЂa", "Ã\u00a1", "à²",
        "Ø¨Ø", "Ø¨Ø¨", "ØŸØŸ", "ВµВ", "В°Г", "РЈС", "ΒΓΞΟ", "Ο°Ο", "β€™", "β€\u00a0", "ÒÓÔÕÖ",
        "│├┤", "│ò", "─┼─", "═╬═", "▀▄█▌▐░▒▓", "█º", "¡Hola! ¿Qué?", "«Ça va?»", "Ça¬", "a¦b",
        "¦¦", "¬¬", "¸¸", "¤5", "¨a", "ˆˇ", "˘˛", "˜x", "†‡", "‰", "◊", "�", "��", "a�b", "Ã�",
        "ÃÂ", "x Ã y", "ab Â ", "z\u2003Ã ", "Ã\u2003", "z\u2003Â ", "\u00a0Ã ", "n° 3", "º",
        "ª", "é€", "É€", " Ã€", "\tÁ£", "Ñ¢", "ä»", "Ë†", "aÃ«", "1²³", "±±", "ÿ", "Ÿ", "ž",
        "Ð", "Ð€", "Ð©", "Î®", "Îš", "Ã·", "Â·", "Â´", "Â»", "Â«", "ÂŸ", "Â–", "Â—",
        "\u0432\u0402", "ЂЃ", "Ѓ", "Ђ", "€™", "Ã\u00ad", "Ã°Å¸â€˜Â", "â€", "â€\n", "â€ x",
        "Ã© is fine? no: CafÃ© ok", "ℌello", "ＬＯＵＤ　ＮＯＩＳＥＳ", "ﬂuﬃeﬆ", "Uﾀｰﾝ",
        "", " ", "plain ascii text", "\x1b[31mCafÃ©\x1b[0m", "CafÃ©\x00", "\ufeffCafÃ©",
        "Ã©" * 40, "CafÃ© " * 30, "â€" * 20, "Ã " * 10, "x" + "Ã©" * 3 + "x",
    ])
    # 6. ftfy's own test cases (inputs only; expected outputs come from ftfy itself below)
    tc = os.path.join(os.path.dirname(ftfy.__file__), "..", "tests", "test_cases.json")
    with open(tc, encoding="utf-8") as f:
        for item in json.load(f):
            add(item["original"])
    # 7. deterministic random mixtures of mojibake-prone characters and words
    alpha = sorted(set(bytes(range(0x80, 0x100)).decode("latin-1")) |
                   set(bytes(range(0x80, 0x100)).decode("sloppy-windows-1252")) |
                   set(bytes(range(0x80, 0x100)).decode("sloppy-windows-1251")))
    words = ["caf", "na", " ", " ", "x", "the ", "\n", "é", "中", "😀", "Ã", "Â", "â€", "Ã©", "Ã ", "&amp;"]
    for _ in range(100):
        n = rnd.randint(1, 14)
        s = []
        for _ in range(n):
            r = rnd.random()
            if r < 0.35:
                s.append(rnd.choice(alpha))
            elif r < 0.6:
                s.append(rnd.choice(words))
            else:
                s.append(moji(rnd.choice(PHRASES), rnd.choice(ENCS[:6])))
        add("".join(s))
    out, seen = [], set()
    for c in cases:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def is_bad_cases():
    """Short strings over the characters BADNESS_RE names, biased towards its sequences."""
    pat = badness.BADNESS_RE.pattern
    lits = sorted({c for c in pat if ord(c) >= 0x80})
    cats = []
    for name, chars in badness.MOJIBAKE_CATEGORIES.items():
        r = __import__("re").compile("[" + chars + "]")
        cats.append([chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000 and r.match(chr(c))])
    extra = list("abzAZ .,?!_9\n\t") + ["\u2003", "\u00a0", "\x85", "中", "é", "\u0660", "ツ", "\x1c"]
    seqs = ["ГўВЂВ", "‚Ä", "вЂ", "β€", "ÃÂ", "ØØ", "ÙÙ", "√", "≈", "à", "×", "Ã ", "Â "]
    rnd = random.Random(7)
    out, seen = [], set()
    while len(out) < 1200:
        n = rnd.randint(1, 7)
        s = ""
        while len(s) < n:
            r = rnd.random()
            if r < 0.3:
                s += rnd.choice(lits)
            elif r < 0.6:
                s += rnd.choice(rnd.choice(cats))
            elif r < 0.85:
                s += rnd.choice(extra)
            else:
                s += rnd.choice(seqs)
        if s in seen:
            continue
        seen.add(s)
        out.append(s)
    return out


def main():
    assert ftfy.__version__ == "6.1.1", ftfy.__version__
    os.makedirs(OUT, exist_ok=True)
    cases = corpus()
    changed = enc_changed = 0
    with open(os.path.join(OUT, "fix_text.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for c in cases:
            fixed = ftfy.fix_text(c)
            changed += fixed != c
            enc_changed += fixed != ftfy.fix_text(c, fix_encoding=False)
            f.write("%s\t%s\n" % (esc(c), esc(fixed)))
    bad = 0
    ib = is_bad_cases()
    with open(os.path.join(OUT, "is_bad.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for s in ib:
            v = badness.is_bad(s)
            bad += v
            f.write("%s\t%d\n" % (esc(s), v))
    sys.path.insert(0, HERE)
    import clip_tokenizer_ref
    o = clip_tokenizer_ref.Oracle()
    caps = ["masterpiece, 1girl, CafÃ© in ParÃ\u00ads, best quality",
            "a photo of a cat â€œsittingâ€\x9d on a sofa",
            "â€œ like this â€� â€” lossy",
            "Ð¿Ñ€Ð¸Ð²ÐµÑ‚ Ð¼Ð¸Ñ€, portrait",
            "Ã la mode, voilÃ le travail, fÃ cil",
            "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows.",
            "emoji ðŸ˜€ and í\xa0½í\xb8\x8d cesu",
            "\x93C1 quotes\x94 and \x85 next line",
            "Good café, then Ã¼ber and “quotes”",
            "(╯°□°）╯︵ ┻━┻ not mojibake"]
    with open(os.path.join(OUT, "clip_ids.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for c in caps:
            f.write("%s\t%s\n" % (esc(c), " ".join(map(str, o.encode(c)))))
    print("fix_text: %d cases, %d changed, %d changed by fix_encoding; is_bad: %d strings, %d bad; "
          "clip: %d captions" % (len(cases), changed, enc_changed, len(ib), bad, len(caps)))


if __name__ == "__main__":
    main()
