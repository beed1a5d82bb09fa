#!/usr/bin/python3
"""The image work of `sd-bucket --write-images`, done the reference's way (kohya-ss/sd-scripts
trim_and_resize_if_required + resize_image): PIL open + convert("RGB"), OpenCV INTER_AREA when
the target is not larger in either dimension, else PIL LANCZOS, centre trim to the bucket, PIL
save. Reads sd-bucket's output records (their source_image, resized and bucket keys) so both do
exactly the same images. Prints the seconds spent after the imports (interpreter start-up and
imports are not counted).

usage: bucket_pil.py RECORDS.jsonl OUTDIR [jpeg|png] [QUALITY]
"""
import json
import os
import sys
import time

import numpy as np
from PIL import Image

try:
    import cv2
except ImportError:  # without OpenCV the shrink uses PIL's BOX filter (similar cost)
    cv2 = None


def resize_image(image, width, height, rw, rh):
    if width >= rw and height >= rh and cv2 is not None:
        return cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)
    flt = Image.LANCZOS if cv2 is not None or width < rw or height < rh else Image.BOX
    return np.array(Image.fromarray(image).resize((rw, rh), resample=flt))


def main():
    recs, outdir = sys.argv[1], sys.argv[2]
    fmt = sys.argv[3] if len(sys.argv) > 3 else "jpeg"
    quality = int(sys.argv[4]) if len(sys.argv) > 4 else 95
    os.makedirs(outdir, exist_ok=True)
    jobs = []
    for line in open(recs):
        r = json.loads(line)
        jobs.append((r.get("source_image", r["image"]), tuple(r["resized"]), tuple(r["bucket"])))
    t0 = time.time()
    for i, (path, resized, bucket) in enumerate(jobs):
        image = np.array(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        if (w, h) != resized:
            image = resize_image(image, w, h, resized[0], resized[1])
        if image.shape[1] > bucket[0]:
            p = (image.shape[1] - bucket[0]) // 2
            image = image[:, p:p + bucket[0]]
        if image.shape[0] > bucket[1]:
            p = (image.shape[0] - bucket[1]) // 2
            image = image[p:p + bucket[1]]
        out = os.path.join(outdir, "%06d.%s" % (i, "jpg" if fmt == "jpeg" else "png"))
        if fmt == "jpeg":
            Image.fromarray(image).save(out, quality=quality)
        else:
            Image.fromarray(image).save(out)
    print("%.6f" % (time.time() - t0))


if __name__ == "__main__":
    main()
