#!/usr/bin/python3
"""Golden of color_aug's two transforms (kohya-ss/sd-scripts library/train_util.py AugHelper.color_aug),
run exactly as the reference runs them on an RGB uint8 image, for tests/unit/test_augment.c.

Writes tests/data/augment/golden.txt:
  image W H <hex of the W*H*3 bytes>
  hue <shift> <hex>      cvtColor(BGR2HSV) on the RGB data, h = (h + s') % 180 (s' = 180 + shift if < 0), HSV2BGR
  gamma <gamma> <hex>    np.clip(img ** gamma, 0, 255).astype(np.uint8)
Run with Debian's python3 (numpy, OpenCV): /usr/bin/python3 tests/golden/gen/make_augment_golden.py"""
import os
import cv2
import numpy as np

W, H = 24, 16
rng = np.random.default_rng(7)
img = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
# greys, primaries, extremes and near-greys on the first rows
special = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
           (0, 255, 255), (255, 0, 255), (1, 0, 0), (0, 1, 1), (254, 255, 255), (10, 200, 30), (200, 10, 30),
           (30, 10, 200), (100, 101, 102), (3, 2, 1), (250, 3, 251)]
for i, c in enumerate(special):
    img[i // W, i % W] = c


def hue(image, hue_shift):
    hsv_img = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    if hue_shift < 0:
        hue_shift = 180 + hue_shift
    hsv_img[:, :, 0] = (hsv_img[:, :, 0] + hue_shift) % 180
    return cv2.cvtColor(hsv_img, cv2.COLOR_HSV2BGR)


def gamma(image, g):
    return np.clip(image**g, 0, 255).astype(np.uint8)


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "augment", "golden.txt")
with open(out, "w") as f:
    f.write("image %d %d %s\n" % (W, H, img.tobytes().hex()))
    for s in (-8.0, -5.5, -3.7, -0.4, 0.0, 0.5, 2.25, 6.0, 7.9):
        f.write("hue %r %s\n" % (s, hue(img.copy(), s).tobytes().hex()))
    for g in (0.95, 0.9731, 1.0, 1.0123, 1.05):
        f.write("gamma %r %s\n" % (g, gamma(img.copy(), g).tobytes().hex()))
