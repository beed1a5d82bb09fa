#!/usr/bin/python3
"""Golden data for tests/unit/test_cv2_resize.c: OpenCV 4.6 cv2.resize with INTER_NEAREST_EXACT,
INTER_LINEAR, INTER_CUBIC (and INTER_AREA enlarging) on small deterministic 8-bit images, the
filters the reference (kohya-ss/sd-scripts library/utils.py get_cv2_interpolation) uses for
resize_interpolation "nearest", "bilinear"/"linear", "bicubic"/"cubic" and "area". Run once by
hand with Debian 12's /usr/bin/python3 (python3-opencv 4.6, python3-numpy), from the repository
root:

    /usr/bin/python3 tests/golden/gen/make_cv2_resize_golden.py

Writes tests/data/cv2_resize/cases.txt (one case per line: src_w src_h channels filter dst_w
dst_h) and tests/data/cv2_resize/golden.bin (the expected bytes of every case, concatenated in
that order). The sources are not stored: test_cv2_resize.c regenerates them with the formula of
src_pixel() below. cv2.resize gets the array as is: channels are independent (no
premultiplication of RGBA, as in the reference, which hands its RGBA array to cv2.resize)."""
import os
import sys

import cv2
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "cv2_resize")


def src_pixel(x, y, ch, c):
    """Gradient + wrapping quadratic noise (sharp edges make INTER_CUBIC overshoot and clip),
    for RGBA an alpha ramp with runs of 0 and 255. Mirrored in test_cv2_resize.c."""
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


FILTERS = {
    "cv_nearest_exact": cv2.INTER_NEAREST_EXACT,
    "cv_linear": cv2.INTER_LINEAR,
    "cv_cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}

# (src_w, src_h, channels, dst_w, dst_h)
SIZES = [
    (13, 11, 3, 7, 5),     # shrink, odd sizes
    (13, 11, 3, 29, 23),   # enlarge, odd sizes
    (13, 11, 4, 5, 9),     # RGBA, shrink one axis, enlarge the other
    (13, 11, 4, 31, 17),   # RGBA enlarge
    (37, 29, 3, 19, 13),   # shrink, non-integer
    (37, 29, 3, 53, 41),   # enlarge, non-integer
    (37, 29, 4, 23, 29),   # RGBA, horizontal only
    (37, 29, 4, 37, 61),   # RGBA, vertical only
    (38, 30, 3, 19, 15),   # exact 2x shrink (INTER_LINEAR takes INTER_AREA's integer path)
    (16, 12, 3, 8, 6),     # exact 2x shrink, even sides (nearest's index rule)
    (37, 29, 3, 74, 87),   # exact 2x / 3x enlarge
    (37, 29, 1, 11, 64),   # grey
    (1, 1, 3, 5, 4),       # from a single pixel
    (9, 1, 4, 4, 3),       # one row
    (3, 7, 3, 1, 1),       # to a single pixel
]


def main():
    print("OpenCV", cv2.__version__, file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    lines = ["# src_w src_h channels filter dst_w dst_h  (OpenCV %s)" % cv2.__version__]
    blobs = []
    for name, flag in FILTERS.items():
        for sw, sh, c, dw, dh in SIZES:
            if name == "area" and dw <= sw and dh <= sh:
                continue  # shrinking INTER_AREA is covered by make_resample_golden.py
            src = make_src(sw, sh, c)
            arr = src[:, :, 0] if c == 1 else src
            out = cv2.resize(arr, (dw, dh), interpolation=flag).reshape(dh, dw, c)
            assert out.dtype == np.uint8
            lines.append("%d %d %d %s %d %d" % (sw, sh, c, name, dw, dh))
            blobs.append(np.ascontiguousarray(out).tobytes())
    with open(os.path.join(OUT, "cases.txt.tmp"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "golden.bin.tmp"), "wb") as f:
        f.write(b"".join(blobs))
    os.replace(os.path.join(OUT, "cases.txt.tmp"), os.path.join(OUT, "cases.txt"))
    os.replace(os.path.join(OUT, "golden.bin.tmp"), os.path.join(OUT, "golden.bin"))
    print("%d cases, %d bytes" % (len(lines) - 1, sum(len(b) for b in blobs)), file=sys.stderr)


if __name__ == "__main__":
    main()
