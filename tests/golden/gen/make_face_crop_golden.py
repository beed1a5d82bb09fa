#!/usr/bin/python3
"""Golden of face_crop_aug_range's geometry: a transcription of kohya-ss/sd-scripts
library/train_util.py BaseDataset.crop_target (returning the resized size and the window instead of
the image), with Python's random recorded, for tests/unit/test_augment.c.

Writes tests/data/augment/face_golden.txt, one case a line:
  img_w img_h W H cx cy fw fh lo hi random_crop ; draws ; result
draws: "u lo hi value" / "i lo hi value" in call order (floats as repr); result "nw nh x y" or "assert".
Run: /usr/bin/python3 tests/golden/gen/make_face_crop_golden.py"""
import os
import random


class Rec:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.log = []

    def uniform(self, a, b):
        v = self.r.uniform(a, b)
        self.log.append("u %r %r %r" % (a, b, v))
        return v

    def randint(self, a, b):
        v = self.r.randint(a, b)
        self.log.append("i %d %d %d" % (a, b, v))
        return v


def crop_target(rnd, self_height, self_width, random_crop, face_crop_aug_range, height, width, face_cx, face_cy, face_w, face_h):
    if height == self_height and width == self_width:
        return (width, height, 0, 0)
    face_size = max(face_w, face_h)
    size = min(self_height, self_width)
    min_scale = max(self_height / height, self_width / width)
    min_scale = min(1.0, max(min_scale, size / (face_size * face_crop_aug_range[1])))
    max_scale = min(1.0, max(min_scale, size / (face_size * face_crop_aug_range[0])))
    if min_scale >= max_scale:
        scale = min_scale
    else:
        scale = rnd.uniform(min_scale, max_scale)
    nh = int(height * scale + 0.5)
    nw = int(width * scale + 0.5)
    if not (nh >= self_height and nw >= self_width):
        return None
    face_cx = int(face_cx * scale + 0.5)
    face_cy = int(face_cy * scale + 0.5)
    height, width = nh, nw
    out = [nw, nh, 0, 0]
    for axis, (target_size, length, face_p) in enumerate(zip((self_height, self_width), (height, width), (face_cy, face_cx))):
        p1 = face_p - target_size // 2
        if random_crop:
            range_ = max(length - face_p, face_p)
            p1 = p1 + (rnd.randint(0, range_) + rnd.randint(0, range_)) - range_
        else:
            if face_crop_aug_range[0] != face_crop_aug_range[1]:
                if face_size > size // 10 and face_size >= 40:
                    p1 = p1 + rnd.randint(-face_size // 20, +face_size // 20)
        p1 = max(0, min(p1, length - target_size))
        if axis == 0:
            out[3] = p1
        else:
            out[2] = p1
    return tuple(out)


g = random.Random(2024)
lines = []
cases = [(512, 512, 512, 512, 256, 256, 100, 100, 2.0, 4.0, 0), (1024, 768, 512, 512, 600, 300, 120, 150, 2.0, 2.0, 0),
         (300, 200, 512, 512, 100, 100, 50, 50, 1.0, 2.0, 0), (2000, 1500, 448, 640, 1900, 100, 400, 380, 1.5, 3.0, 1),
         (800, 900, 256, 256, 10, 890, 30, 20, 2.0, 4.0, 0)]
for _ in range(300):
    W = g.choice([256, 320, 448, 512, 640, 768])
    H = g.choice([256, 320, 448, 512, 640, 768])
    iw = g.randint(W - 50, 3 * W)
    ih = g.randint(H - 50, 3 * H)
    fw = g.randint(8, max(9, min(iw, ih) // 2))
    fh = g.randint(8, max(9, min(iw, ih) // 2))
    cx = g.randint(1, iw - 1)
    cy = g.randint(1, ih - 1)
    lo = g.choice([1.0, 1.5, 2.0, 2.5, 3.0])
    hi = lo if g.random() < 0.2 else lo + g.choice([0.5, 1.0, 2.0])
    cases.append((iw, ih, W, H, cx, cy, fw, fh, lo, hi, int(g.random() < 0.4)))
for i, (iw, ih, W, H, cx, cy, fw, fh, lo, hi, rc) in enumerate(cases):
    rnd = Rec(i)
    res = crop_target(rnd, H, W, rc, (lo, hi), ih, iw, cx, cy, fw, fh)
    lines.append("%d %d %d %d %d %d %d %d %r %r %d ; %s ; %s" % (
        iw, ih, W, H, cx, cy, fw, fh, lo, hi, rc, " , ".join(rnd.log), "assert" if res is None else "%d %d %d %d" % res))
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "augment", "face_golden.txt")
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
