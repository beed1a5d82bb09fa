#!/usr/bin/python3
"""Tiny decoder test files for tests/unit/test_image.c: PNG kinds stb_image_write cannot make
(16-bit, palette, grey+alpha), a progressive and a greyscale JPEG, BMP variants, an animated
WebP, each with what PIL 9.4 returns for Image.open(f).convert("RGB") (and "RGBA" where the file
has alpha). Run once by hand with Debian's /usr/bin/python3, from the repository root:

    /usr/bin/python3 tests/golden/gen/make_image_data.py

Writes tests/data/image/<name> and <name>.rgb (PIL's RGB bytes) / <name>.rgba."""
import io
import os
import struct
import zlib

import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "image")
W, H = 7, 5


def chunk(t, data):
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)


def png(width, height, bitdepth, colortype, rows, plte=None, trns=None):
    """Minimal PNG writer: rows are bytes per scanline (filter byte 0 prepended here)."""
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bitdepth, colortype, 0, 0, 0))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def v16(x, y, ch):
    return (x * 9001 + y * 17017 + ch * 23456 + x * y * 999) % 65536


def main():
    assert PIL.__version__.startswith("9.4"), PIL.__version__
    os.makedirs(OUT, exist_ok=True)
    files = {}
    # 16-bit RGB / RGBA / grey+alpha / grey
    files["rgb16.png"] = png(W, H, 16, 2, [b"".join(struct.pack(">HHH", *(v16(x, y, c) for c in range(3))) for x in range(W)) for y in range(H)])
    files["rgba16.png"] = png(W, H, 16, 6, [b"".join(struct.pack(">HHHH", *(v16(x, y, c) for c in range(4))) for x in range(W)) for y in range(H)])
    files["la16.png"] = png(W, H, 16, 4, [b"".join(struct.pack(">HH", v16(x, y, 0), v16(x, y, 3)) for x in range(W)) for y in range(H)])
    files["grey16.png"] = png(W, H, 16, 0, [b"".join(struct.pack(">H", v16(x, y, 0)) for x in range(W)) for y in range(H)])
    # 8-bit grey, grey+alpha, 4-bit palette with tRNS, 1-bit grey
    files["grey8.png"] = png(W, H, 8, 0, [bytes((x * 37 + y * 11) % 256 for x in range(W)) for y in range(H)])
    files["la8.png"] = png(W, H, 8, 4, [bytes(v for x in range(W) for v in ((x * 37 + y * 11) % 256, (x * 50 + y * 70) % 256)) for y in range(H)])
    pal = bytes(v for i in range(16) for v in ((i * 16) % 256, (i * 77) % 256, (255 - i * 13) % 256))
    rows = []
    for y in range(H):
        idx = [(x + y * 3) % 16 for x in range(W)] + [0]
        rows.append(bytes(idx[i] << 4 | idx[i + 1] for i in range(0, W, 2)))
    files["pal4_trns.png"] = png(W, H, 4, 3, rows, plte=pal, trns=bytes((i * 40) % 256 for i in range(16)))
    files["grey1.png"] = png(W, H, 1, 0, [bytes([0b10110010 ^ (y * 0x35 & 0xFF)]) for y in range(H)])
    # JPEGs written by PIL (libjpeg-turbo): progressive RGB and greyscale
    rgb = np.zeros((16, 24, 3), np.uint8)
    for y in range(16):
        for x in range(24):
            rgb[y, x] = ((x * 10) % 256, (y * 15) % 256, ((x + y) * 7) % 256)
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=90, progressive=True)
    files["progressive.jpg"] = b.getvalue()
    b = io.BytesIO()
    Image.fromarray(rgb[:, :, 0]).save(b, "JPEG", quality=90)
    files["grey.jpg"] = b.getvalue()
    # BMP: 8-bit palette and 24-bit bottom-up (PIL)
    b = io.BytesIO()
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(b, "BMP")
    files["pal8.bmp"] = b.getvalue()
    b = io.BytesIO()
    Image.fromarray(rgb[:5, :7]).save(b, "BMP")
    files["rgb24.bmp"] = b.getvalue()
    # animated WebP (two frames) -> our decoder refuses it
    b = io.BytesIO()
    f0 = Image.fromarray(rgb[:8, :8])
    f1 = Image.fromarray(255 - rgb[:8, :8])
    f0.save(b, "WEBP", save_all=True, append_images=[f1], lossless=True, duration=100)
    files["animated.webp"] = b.getvalue()

    for name, data in files.items():
        p = os.path.join(OUT, name)
        with open(p, "wb") as fh:
            fh.write(data)
        if name == "animated.webp":
            continue
        im = Image.open(p)
        with open(p + ".rgb", "wb") as fh:
            fh.write(im.convert("RGB").tobytes())
        if "A" in im.mode or "transparency" in im.info:
            with open(p + ".rgba", "wb") as fh:
                fh.write(im.convert("RGBA").tobytes())
        print(name, im.mode, im.size, len(data))


if __name__ == "__main__":
    main()
