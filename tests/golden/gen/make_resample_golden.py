#!/usr/bin/python3
"""Golden data for tests/unit/test_resample.c: PIL 9.4 and OpenCV 4.6 resizes of small
deterministic images. Run once by hand with Debian's /usr/bin/python3 (python3-pil,
python3-opencv, python3-numpy), from the repository root:

    /usr/bin/python3 tests/golden/gen/make_resample_golden.py

Writes tests/data/resample/cases.txt (one case per line) and tests/data/resample/golden.bin
(the expected output bytes of every case, concatenated in that order). The source images are
not stored: test_resample.c regenerates them with the same formula as src_pixel() below."""
import os
import sys

import cv2
import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "resample")


def src_pixel(x, y, ch, c):
    """Gradient + wrapping quadratic noise (sharp edges make LANCZOS/BICUBIC clip), and for
    RGBA an alpha ramp with runs of 0 and 255. Mirrored in test_resample.c."""
    if c == 4 and ch == 3:
        a = (x * 23 + y * 5) % 300 - 20
        return 0 if a < 0 else 255 if a > 255 else a
    base = x * 5 + y * 3 + ch * 40
    noise = (x * x * 7 + y * y * 11 + x * y * 3 + ch * 29) % 61
    return (base + noise * 3) % 256


def make_src(w, h, c):
    a = np.zeros((h, w, c), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                a[y, x, ch] = src_pixel(x, y, ch, c)
    return a


PIL_FILTERS = {
    "box": Image.BOX,
    "bilinear": Image.BILINEAR,
    "hamming": Image.HAMMING,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}
MODES = {1: "L", 3: "RGB", 4: "RGBA"}

# (src_w, src_h, c, filter, dst_w, dst_h, box or None)
CASES = []
for f in PIL_FILTERS:
    CASES += [
        (37, 23, 3, f, 19, 11, None),   # shrink, non-integer ratio
        (37, 23, 3, f, 53, 31, None),   # enlarge, non-integer
        (64, 48, 3, f, 32, 24, None),   # exact 2x shrink
        (64, 48, 3, f, 64, 17, None),   # one axis only (vertical)
        (64, 48, 3, f, 23, 48, None),   # one axis only (horizontal)
        (40, 30, 4, f, 17, 13, None),   # RGBA (premultiplied path)
        (33, 17, 1, f, 50, 9, None),    # L, enlarge x / shrink y
    ]
CASES += [
    (64, 48, 3, "lanczos", 21, 15, (3.5, 2.25, 60.0, 41.5)),  # fractional box
    (64, 48, 3, "bicubic", 30, 20, (10, 5, 40, 25)),           # integer box == crop
    (40, 30, 4, "lanczos", 20, 15, (0, 0, 20, 15)),            # RGBA integer crop (RGBa trip)
    (37, 23, 3, "lanczos", 7, 5, None),                        # strong shrink
    (37, 23, 3, "bicubic", 111, 69, None),                     # 3x enlarge
]
# OpenCV INTER_AREA, shrinking only
for (sw, sh, c, dw, dh) in [
    (64, 48, 3, 32, 24),   # 2x2 fast path
    (64, 48, 3, 16, 12),   # 4x4 fast path
    (63, 45, 3, 21, 15),   # 3x3 fast path (float scale)
    (64, 48, 3, 64, 16),   # 1x3 fast path
    (64, 48, 3, 27, 19),   # generic
    (37, 23, 3, 36, 22),   # generic, slight shrink
    (37, 23, 3, 10, 23),   # generic, one axis
    (49, 21, 3, 7, 3),     # 7x7 where 1/(7/49) is not exactly 7
    (40, 30, 4, 17, 13),   # RGBA
    (40, 30, 4, 20, 15),   # RGBA 2x2
    (33, 17, 1, 12, 8),    # L
    (33, 17, 1, 11, 17),   # L 3x1
]:
    CASES.append((sw, sh, c, "area", dw, dh, None))


def main():
    assert PIL.__version__.startswith("9.4"), PIL.__version__
    assert cv2.__version__.startswith("4.6"), cv2.__version__
    os.makedirs(OUT, exist_ok=True)
    lines = ["# src_w src_h c filter dst_w dst_h [box x0 y0 x1 y1]  (PIL %s, OpenCV %s)"
             % (PIL.__version__, cv2.__version__)]
    blob = bytearray()
    for (sw, sh, c, f, dw, dh, box) in CASES:
        a = make_src(sw, sh, c)
        if f == "area":
            arr = a[:, :, 0] if c == 1 else a
            out = cv2.resize(arr, (dw, dh), interpolation=cv2.INTER_AREA)
            out = np.ascontiguousarray(out).reshape(dh, dw, c)
        else:
            im = Image.fromarray(a[:, :, 0] if c == 1 else a, MODES[c])
            r = im.resize((dw, dh), PIL_FILTERS[f], box=box)
            out = np.asarray(r).reshape(dh, dw, c)
        assert out.dtype == np.uint8 and out.shape == (dh, dw, c)
        blob += out.tobytes()
        line = "%d %d %d %s %d %d" % (sw, sh, c, f, dw, dh)
        if box is not None:
            line += " box %r %r %r %r" % tuple(float(v) for v in box)
        lines.append(line)
    with open(os.path.join(OUT, "cases.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "golden.bin"), "wb") as fh:
        fh.write(blob)
    print("%d cases, %d bytes" % (len(CASES), len(blob)), file=sys.stderr)


if __name__ == "__main__":
    main()
