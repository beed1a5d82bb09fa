#!/usr/bin/python3
"""JPEG parity files for tests/unit/test_image.c (libjpeg-turbo decode/encode vs PIL 9.4).
Run once by hand with Debian's /usr/bin/python3, from the repository root:

    /usr/bin/python3 tests/golden/gen/make_jpeg_parity.py

Decode: small JPEGs written by PIL (baseline 4:2:0, 4:2:2, 4:4:4, progressive, greyscale, Adobe
CMYK, restart-free odd sizes so the fancy upsampler's edge columns/rows are exercised), each with
what PIL returns for Image.open(f).convert("RGB") in <name>.rgb; the test requires equal bytes.
Encode: the test pattern of test_image.c (pattern(), c = 3 and 1) saved by PIL with
save(f, "JPEG", quality=q) as jpe_*.jpg; the test requires our encoder to write the same bytes."""
import io
import os

import numpy as np
import PIL
from PIL import Image, features

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "image")


def photo(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 9 + y * 2) % 256, (y * 7 + 40) % 256, ((x - y) * 5) % 256], -1).astype(np.float64)
    base[h // 3:h // 2, w // 4:w // 2] = (250, 10, 30)  # a saturated block with sharp edges
    return np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)


def pattern(w, h, c):
    """test_image.c pattern() for c = 1 or 3."""
    a = np.zeros((h, w, c), np.uint8)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                a[y, x, ch] = (x * 7 + y * 13 + ch * 60 + (x * y) % 17) & 255
    return a


def main():
    assert PIL.__version__.startswith("9.4"), PIL.__version__
    print("PIL", PIL.__version__, "libjpeg", features.version("jpg"))
    os.makedirs(OUT, exist_ok=True)
    files = {}

    def save(name, im, **kw):
        b = io.BytesIO()
        im.save(b, "JPEG", **kw)
        files[name] = b.getvalue()

    rgb = Image.fromarray(photo(45, 31, 3))
    save("jp_420.jpg", rgb, quality=85)
    save("jp_422.jpg", rgb, quality=85, subsampling=1)
    save("jp_444.jpg", rgb, quality=95, subsampling=0)
    save("jp_prog.jpg", Image.fromarray(photo(53, 27, 4)), quality=80, progressive=True)
    save("jp_grey.jpg", rgb.convert("L"), quality=85)
    save("jp_cmyk.jpg", rgb.convert("CMYK"), quality=90)  # PIL writes inverted (Adobe) CMYK
    for name, data in files.items():
        p = os.path.join(OUT, name)
        with open(p, "wb") as fh:
            fh.write(data)
        im = Image.open(p)
        with open(p + ".rgb", "wb") as fh:
            fh.write(im.convert("RGB").tobytes())
        print(name, im.mode, im.size, len(data))

    # encoder parity: PIL's bytes for the C test pattern
    for name, arr, q in (("jpe_rgb_q90.jpg", pattern(40, 24, 3), 90),
                         ("jpe_rgb_q75.jpg", pattern(40, 24, 3), 75),
                         ("jpe_rgb_q10.jpg", pattern(40, 24, 3), 10),
                         ("jpe_grey_q90.jpg", pattern(16, 8, 1)[:, :, 0], 90)):
        b = io.BytesIO()
        Image.fromarray(arr).save(b, "JPEG", quality=q)
        with open(os.path.join(OUT, name), "wb") as fh:
            fh.write(b.getvalue())
        print(name, len(b.getvalue()))


if __name__ == "__main__":
    main()
