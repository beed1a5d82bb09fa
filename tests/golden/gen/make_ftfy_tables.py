#!/usr/bin/python3
"""Generate lib/text/ftfy_tables.c: the character tables of ftfy 6.1.1's text fixes (the version
kohya-ss/sd-scripts pins), read from ftfy itself so they are exact: the per-character fixes,
HTML entities, and for fix_encoding the character classes of the badness heuristic and of
UTF8_DETECTOR_RE (as bit masks, SD_FTFY_* in lib/text/ftfy.h), the single-byte encodings ftfy
tries (chardata.CHARMAP_ENCODINGS, through ftfy's sloppy codecs) and Python's \\w. Run once by hand with Debian's
/usr/bin/python3 (+ python3-wcwidth) and PYTHONPATH pointing at an ftfy 6.1.1 source tree:

    PYTHONPATH=/path/to/python-ftfy-6.1.1 /usr/bin/python3 tests/golden/gen/make_ftfy_tables.py

ftfy is Apache-2.0 (c) Robyn Speer; the tables are data derived from it (character mappings),
Python's html.entities and unicodedata."""
import os
import sys

import ftfy
import ftfy.bad_codecs  # noqa: F401  (registers sloppy-windows-1252)
from ftfy import chardata
from ftfy import badness
import re

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "lib", "text",
                   "ftfy_tables.c")


def cps(s):
    return [ord(c) for c in s]


def emit_items(f, items):
    line = "   "
    for item in items:
        if len(line) + len(item) + 1 > 119:
            f.write(line + "\n")
            line = "   "
        line += " " + item
    f.write(line + "\n")


def emit_map(f, name, items, width):
    f.write("const sd_ftfy_map %s[] = {\n" % name)
    rows = []
    for cp, out in sorted(items):
        assert len(out) <= width
        rows.append("{0x%X, %d, {%s}}," % (cp, len(out), ", ".join("0x%X" % c for c in out) or "0"))
    emit_items(f, rows)
    f.write("};\nconst size_t %s_n = %d;\n\n" % (name, len(items)))


# Bit order of the class masks; must match SD_FTFY_* in lib/text/ftfy.h.
CLASS_BITS = [
    ("common", badness.MOJIBAKE_CATEGORIES), ("c1", badness.MOJIBAKE_CATEGORIES),
    ("bad", badness.MOJIBAKE_CATEGORIES), ("currency", badness.MOJIBAKE_CATEGORIES),
    ("start_punctuation", badness.MOJIBAKE_CATEGORIES), ("end_punctuation", badness.MOJIBAKE_CATEGORIES),
    ("numeric", badness.MOJIBAKE_CATEGORIES), ("kaomoji", badness.MOJIBAKE_CATEGORIES),
    ("upper_accented", badness.MOJIBAKE_CATEGORIES), ("lower_accented", badness.MOJIBAKE_CATEGORIES),
    ("upper_common", badness.MOJIBAKE_CATEGORIES), ("lower_common", badness.MOJIBAKE_CATEGORIES),
    ("box", badness.MOJIBAKE_CATEGORIES),
    ("utf8_first_of_2", chardata.UTF8_CLUES), ("utf8_first_of_3", chardata.UTF8_CLUES),
    ("utf8_first_of_4", chardata.UTF8_CLUES), ("utf8_continuation", chardata.UTF8_CLUES),
    ("utf8_continuation_strict", chardata.UTF8_CLUES),
]
# The encodings fix_encoding tries, in order; the C code knows that 1..5 are the sloppy ones.
ENCODINGS = ["latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
             "sloppy-windows-1253", "sloppy-windows-1254", "iso-8859-2", "macroman", "cp437"]


def ranges_of(pred, limit=0x110000):
    out, start = [], None
    for c in range(limit + 1):
        ok = c < limit and not 0xD800 <= c < 0xE000 and pred(c)
        if ok and start is None:
            start = c
        elif not ok and start is not None:
            out.append((start, c - 1))
            start = None
    return out


def emit_encoding_tables(f):
    # character classes: each category compiled as its own regex class, probed per code point
    masks = {}
    for bit, (name, table) in enumerate(CLASS_BITS):
        r = re.compile("[" + table[name] + "]")
        for c in range(0x110000):
            if not 0xD800 <= c < 0xE000 and r.match(chr(c)):
                assert c < 0x10000
                masks[c] = masks.get(c, 0) | (1 << bit)
    rows = []
    for c in sorted(masks):
        if rows and rows[-1][1] == c - 1 and rows[-1][2] == masks[c]:
            rows[-1][1] = c
        else:
            rows.append([c, c, masks[c]])
    f.write("\n/* fix_encoding: class masks (SD_FTFY_*) as {first, last, mask} runs */\n")
    f.write("const uint32_t sd_ftfy_classes[][3] = {\n")
    emit_items(f, ["{0x%X, 0x%X, 0x%X}," % tuple(r) for r in rows])
    f.write("};\nconst size_t sd_ftfy_classes_n = %d;\n\n" % len(rows))
    # Python's \w in str patterns (str.isalnum() or "_")
    w = ranges_of(lambda c: chr(c).isalnum() or c == 0x5F)
    wre = re.compile(r"\w")
    assert all(bool(wre.match(chr(c))) == (chr(c).isalnum() or c == 0x5F) for c in range(0x110000))
    f.write("const uint32_t sd_ftfy_word[][2] = {\n")
    emit_items(f, ["{0x%X, 0x%X}," % r for r in w])
    f.write("};\nconst size_t sd_ftfy_word_n = %d;\n\n" % len(w))
    # single-byte encodings: {code point, byte in each encoding or 0}; ASCII other than 0x1A
    # encodes to itself in all of them and is not listed
    assert chardata.CHARMAP_ENCODINGS == ENCODINGS, chardata.CHARMAP_ENCODINGS
    enc = {}
    for k, e in enumerate(ENCODINGS):
        chars = (bytes(range(0x80, 0x100)) + b"\x1a").decode(e)
        assert len(set(chars)) == len(chars)
        for c in chars:
            enc.setdefault(ord(c), [0] * len(ENCODINGS))[k] = c.encode(e)[0]
        for c in range(0x80):
            if c != 0x1A:
                assert chr(c).encode(e) == bytes([c])
        # the possible_encoding() regex accepts exactly ASCII minus 0x1A plus these characters
        assert chardata.ENCODING_REGEXES[e].pattern == "^[\x00-\x19\x1b-\x7f%s]*$" % chars
    for cp, row in enc.items():
        assert cp < 0x10000
        for k, e in enumerate(ENCODINGS):
            try:
                b = chr(cp).encode(e)
            except UnicodeEncodeError:
                b = None
            assert (b is None and row[k] == 0) or b == bytes([row[k]]), (hex(cp), e)
    f.write("const sd_ftfy_enc_row sd_ftfy_enc[] = {\n")
    emit_items(f, ["{0x%X, {%s}}," % (cp, ",".join("0x%X" % b for b in enc[cp])) for cp in sorted(enc)])
    f.write("};\nconst size_t sd_ftfy_enc_n = %d;\n" % len(enc))
    # windows-1252 (strict) decodes byte 0x80..0x9F as sloppy-windows-1252 does, except where the
    # sloppy codec passes the byte through (0x81, 0x8D, 0x8F, 0x90, 0x9D), which is an error
    for b in range(0x80, 0xA0):
        sl = bytes([b]).decode("sloppy-windows-1252")
        try:
            st = bytes([b]).decode("windows-1252")
        except UnicodeDecodeError:
            st = None
        assert (st is None and ord(sl) == b) or (st == sl and ord(sl) != b)
    print("classes %d word %d enc %d" % (len(rows), len(w), len(enc)))


def main():
    assert ftfy.__version__ == "6.1.1", ftfy.__version__
    lig = [(k, cps(v)) for k, v in chardata.LIGATURES.items()]
    width = [(k, cps(v)) for k, v in chardata.WIDTH_MAP.items()]
    ctrl = sorted(chardata.CONTROL_CHARS)
    assert all(v is None for v in chardata.CONTROL_CHARS.values())
    c1 = [(b, cps(bytes([b]).decode("sloppy-windows-1252"))) for b in range(0x80, 0xA0)]
    ents = sorted(chardata.HTML_ENTITIES.items())
    assert chardata.SINGLE_QUOTE_RE.pattern == "[\u02bc\u2018-\u201b]"
    assert chardata.DOUBLE_QUOTE_RE.pattern == "[\u201c-\u201f]"
    assert chardata.HTML_ENTITY_RE.pattern == r"&#?[0-9A-Za-z]{1,24};"
    with open(OUT, "w") as f:
        f.write("/* Generated by tests/golden/gen/make_ftfy_tables.py from ftfy %s (Apache-2.0, (c) Robyn\n"
                " * Speer) and Python %s. Do not edit. */\n" % (ftfy.__version__, sys.version.split()[0]))
        f.write('#include "text/ftfy.h"\n\n')
        emit_map(f, "sd_ftfy_ligatures", lig, 3)
        emit_map(f, "sd_ftfy_width", width, 3)
        emit_map(f, "sd_ftfy_c1", c1, 3)
        f.write("const uint32_t sd_ftfy_control[] = {\n   ")
        f.write("".join(" 0x%X," % c for c in ctrl))
        f.write("\n};\nconst size_t sd_ftfy_control_n = %d;\n\n" % len(ctrl))
        f.write("const sd_ftfy_entity sd_ftfy_entities[] = {\n")
        rows = []
        for name, val in ents:
            assert len(val) <= 3 and name.isascii() and '"' not in name and "\\" not in name
            rows.append('{"%s", %d, {%s}},' % (name, len(val), ", ".join("0x%X" % c for c in cps(val))))
        emit_items(f, rows)
        f.write("};\nconst size_t sd_ftfy_entities_n = %d;\n\n" % len(ents))
        # html.unescape's numeric references (ftfy defers "&#...;" to it)
        import html
        inv = sorted(html._invalid_charrefs.items())
        f.write("const sd_ftfy_map sd_html_invalid_charrefs[] = {\n")
        emit_items(f, ["{0x%X, %d, {%s}}," % (k, len(v), ", ".join("0x%X" % ord(c) for c in v)) for k, v in inv])
        f.write("};\nconst size_t sd_html_invalid_charrefs_n = %d;\n\n" % len(inv))
        cpts = sorted(html._invalid_codepoints)
        f.write("const uint32_t sd_html_invalid_codepoints[] = {\n")
        emit_items(f, ["0x%X," % c for c in cpts])
        f.write("};\nconst size_t sd_html_invalid_codepoints_n = %d;\n" % len(cpts))
        emit_encoding_tables(f)
    print("ligatures %d width %d control %d entities %d" % (len(lig), len(width), len(ctrl), len(ents)))


if __name__ == "__main__":
    main()
