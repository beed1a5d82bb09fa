#!/usr/bin/python3
"""Golden table for sd-bucket / lib/data/bucket.c.

Our own transcription of the reference's bucketing rules (kohya-ss/sd-scripts @ 48d368fa:
library/model_util.py make_bucket_resolutions, library/train_util.py BucketManager
(select_bucket, round_to_steps, get_crop_ltrb), BaseDataset.adjust_min_max_bucket_reso_by_steps,
trim_and_resize_if_required's centre trim, and numpy's mean of the absolute AR errors).
Run once by hand with /usr/bin/python3 (numpy); writes tests/data/bucket/golden.txt.

Format (one item per line, '#' lines are comments):
  cfg RES_W RES_H MIN MAX STEPS NO_UPSCALE ENABLE      start of a configuration
  list N w h w h ...                                  predefined buckets (mode A / C)
  cfgerr                                              the configuration is rejected
  s W H BW BH RW RH TX TY AR_ERROR L T R B            one image (floats as repr())
  e W H                                               per-image error (0-sized bucket,
                                                      division by zero in the reference)
  mean N SEED VALUE                                   numpy mean of N values (see main())
"""
import math
import os
import random
import sys

import numpy as np


def make_bucket_resolutions(max_reso, min_size=256, max_size=1024, divisible=64):
    max_width, max_height = max_reso
    max_area = max_width * max_height
    resos = set()
    width = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((width, width))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    resos = list(resos)
    resos.sort()
    return resos


class Manager:
    def __init__(self, no_upscale, max_reso, min_size, max_size, steps, resos):
        self.no_upscale = no_upscale
        self.max_area = max_reso[0] * max_reso[1]
        self.steps = steps
        self.resos = resos
        self.rset = set(resos)
        self.ars = np.array([w / h for w, h in resos])

    def round_to_steps(self, x):
        x = int(x + 0.5)
        return x - x % self.steps

    def select_bucket(self, image_width, image_height):
        aspect_ratio = image_width / image_height
        if not self.no_upscale:
            reso = (image_width, image_height)
            if reso not in self.rset:
                ar_errors = self.ars - aspect_ratio
                reso = self.resos[np.abs(ar_errors).argmin()]
            ar_reso = reso[0] / reso[1]
            if aspect_ratio > ar_reso:
                scale = reso[1] / image_height
            else:
                scale = reso[0] / image_width
            resized_size = (int(image_width * scale + 0.5), int(image_height * scale + 0.5))
        else:
            if image_width * image_height > self.max_area:
                resized_width = math.sqrt(self.max_area * aspect_ratio)
                resized_height = self.max_area / resized_width
                assert abs(resized_width / resized_height - aspect_ratio) < 1e-2
                b_width_rounded = self.round_to_steps(resized_width)
                b_height_in_wr = self.round_to_steps(b_width_rounded / aspect_ratio)
                ar_width_rounded = b_width_rounded / b_height_in_wr  # may raise ZeroDivisionError
                b_height_rounded = self.round_to_steps(resized_height)
                b_width_in_hr = self.round_to_steps(b_height_rounded * aspect_ratio)
                ar_height_rounded = b_width_in_hr / b_height_rounded
                if abs(ar_width_rounded - aspect_ratio) < abs(ar_height_rounded - aspect_ratio):
                    resized_size = (b_width_rounded, int(b_width_rounded / aspect_ratio + 0.5))
                else:
                    resized_size = (int(b_height_rounded * aspect_ratio + 0.5), b_height_rounded)
            else:
                resized_size = (image_width, image_height)
            reso = (resized_size[0] - resized_size[0] % self.steps,
                    resized_size[1] - resized_size[1] % self.steps)
        if reso[0] == 0 or reso[1] == 0:
            raise ZeroDivisionError("0-sized bucket")
        ar_error = (reso[0] / reso[1]) - aspect_ratio
        return reso, resized_size, ar_error

    @staticmethod
    def get_crop_ltrb(bucket_reso, image_size):
        bucket_ar = bucket_reso[0] / bucket_reso[1]
        image_ar = image_size[0] / image_size[1]
        if bucket_ar > image_ar:
            resized_width = bucket_reso[1] * image_ar
            resized_height = bucket_reso[1]
        else:
            resized_width = bucket_reso[0]
            resized_height = bucket_reso[0] / image_ar
        crop_left = (bucket_reso[0] - resized_width) // 2
        crop_top = (bucket_reso[1] - resized_height) // 2
        crop_right = crop_left + resized_width
        crop_bottom = crop_top + resized_height
        return crop_left, crop_top, crop_right, crop_bottom


def adjust(resolution, mn, mx, steps):
    """adjust_min_max_bucket_reso_by_steps + the BucketManager asserts; None when rejected."""
    if mn % steps != 0:
        mn = mn - mn % steps
    if mx % steps != 0:
        mx = mx + steps - mx % steps
    if not (min(resolution) >= mn and max(resolution) <= mx):
        return None
    if mx < mn or mn <= 0:
        return None  # the reference divides by zero on min 0 (width = 0)
    return mn, mx


def r(x):
    return repr(float(x))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "data", "bucket", "golden.txt")
    rng = random.Random(20261126)
    lines = ["# generated by tests/golden/gen/make_bucket_golden.py; do not edit"]

    def sizes_for(cfg_sizes, buckets):
        s = list(cfg_sizes)
        for _ in range(80):  # general sizes
            s.append((rng.randint(1, 4096), rng.randint(1, 4096)))
        for _ in range(30):  # typical photo sizes and aspect ratios
            base = rng.choice([480, 512, 600, 720, 768, 800, 1024, 1080, 1200, 1536, 2048, 3000])
            ar = rng.choice([1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 0.5, 21 / 9])
            s.append((max(1, int(base * ar)), base))
        for (w, h) in buckets[:12]:  # exact predefined sizes and multiples
            s.append((w, h))
            s.append((w * 2, h * 2))
            s.append((w + 1, h))
        for _ in range(10):  # extreme aspect ratios and tiny images
            s.append((rng.randint(1, 40), rng.randint(1, 4000)))
            s.append((rng.randint(1, 4000), rng.randint(1, 40)))
        return s

    special = [(1200, 800), (1000, 700), (768, 1024), (300, 400), (2000, 500), (1, 1), (63, 63),
               (64, 64), (65, 64), (100, 100), (511, 512), (512, 512), (513, 513), (10000, 1),
               (1, 10000), (4096, 4096), (8192, 128), (130, 30), (30, 130), (727, 727)]
    configs = [
        # res_w res_h min max steps no_upscale enable
        (512, 512, 256, 1024, 64, 0, 1),
        (768, 768, 256, 1024, 64, 0, 1),
        (1024, 1024, 256, 2048, 64, 0, 1),
        (1024, 1024, 512, 2048, 32, 0, 1),
        (768, 512, 256, 1024, 64, 0, 1),
        (512, 768, 320, 1024, 32, 0, 1),
        (500, 500, 250, 1000, 64, 0, 1),    # min/max not multiples of the step: adjusted
        (640, 384, 128, 1280, 32, 0, 1),
        (512, 512, 256, 1024, 64, 1, 1),
        (1024, 1024, 256, 2048, 32, 1, 1),
        (768, 512, 256, 1024, 64, 1, 1),
        (512, 512, 256, 1024, 8, 1, 1),
        (640, 384, 128, 1280, 32, 1, 1),
        (512, 512, 0, 0, 0, 0, 0),
        (768, 512, 0, 0, 0, 0, 0),
        (1024, 576, 0, 0, 0, 0, 0),
        (512, 512, 600, 1024, 64, 0, 1),    # rejected: min > resolution
        (512, 512, 256, 448, 64, 0, 1),     # rejected: max < resolution
        (512, 512, 32, 1024, 64, 0, 1),     # rejected: min rounds down to 0
    ]
    for (rw, rh, mn, mx, st, nu, en) in configs:
        lines.append("cfg %d %d %d %d %d %d %d" % (rw, rh, mn, mx, st, nu, en))
        if en:
            a = adjust((rw, rh), mn, mx, st)
            if a is None:
                lines.append("cfgerr")
                continue
            mn2, mx2 = a
            if nu:
                resos = []
            else:
                resos = make_bucket_resolutions((rw, rh), mn2, mx2, st)
        else:
            resos = [(rw, rh)]
            st = 1
        lines.append("list %d %s" % (len(resos), " ".join("%d %d" % b for b in resos)))
        man = Manager(bool(nu), (rw, rh), None, None, st if en else None, resos)
        sizes = sizes_for(special, resos if resos else [(rw, rh), (rh, rw)])
        for (w, h) in sizes:
            try:
                reso, resized, are = man.select_bucket(w, h)
            except ZeroDivisionError:
                lines.append("e %d %d" % (w, h))
                continue
            assert resized[0] >= reso[0] and resized[1] >= reso[1]
            tx = (resized[0] - reso[0]) // 2
            ty = (resized[1] - reso[1]) // 2
            l, t, rr, b = Manager.get_crop_ltrb(reso, (w, h))
            lines.append("s %d %d %d %d %d %d %d %d %s %s %s %s %s" % (
                w, h, reso[0], reso[1], resized[0], resized[1], tx, ty, r(are), r(l), r(t), r(rr), r(b)))
    # numpy mean of |ar_error| (pairwise summation) for several lengths
    for n in (0, 1, 5, 7, 8, 9, 100, 128, 129, 1000, 8191, 8192, 8193, 20000, 100003):
        # v[i] = ((i * 2654435761 + seed) % 1000003) / 1000003 / 2: exact integer arithmetic
        # and one correctly rounded division, so C computes the same doubles
        seed = 1000 + n
        v = [((i * 2654435761 + seed) % 1000003) / 1000003 / 2 for i in range(n)]
        m = 0 if n == 0 else np.mean(np.abs(np.array(v)))
        lines.append("mean %d %d %s" % (n, seed, r(m)))
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
