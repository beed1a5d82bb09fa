#!/usr/bin/env bash
# sd-bucket benchmarks (prints JSON lines):
#   bucket_probe        header-only sizing: records without image_size, 1024x768 JPEGs
#   bucket_write        --write-images: 1024x768 JPEGs -> 512-class buckets (576x448 via OpenCV
#                       INTER_AREA + centre trim), written as JPEG quality 90 (at 90 both stb and
#                       libjpeg subsample chroma 4:2:0; stb switches to 4:4:4 above 90)
#   bucket_write_pil    the same image work in Python the reference's way (bench/bucket_pil.py:
#                       PIL decode, cv2 INTER_AREA, trim, PIL JPEG save), one process
#                       (OpenCV may use several threads inside cv2.resize, as in the reference)
#   bucket_write_vs_pil images/s of sd-bucket (all threads, and one thread) over images/s of PIL
# Each sd-bucket case runs with --threads 1 and with the default (all usable CPUs).
# Environment: SD_BUILD (default build), BENCH_IMAGES (default 120), BENCH_TMP.
set -u
cd "$(dirname "$0")/.."
build=${SD_BUILD:-build}
SD="$PWD/$build/bin/sd-bucket"
MK="$PWD/$build/tests/unit/test_bucket"
PIL_SCRIPT="$PWD/bench/bucket_pil.py"
py=/usr/bin/python3
n=${BENCH_IMAGES:-120}
[ -x "$SD" ] || { echo "bench/bucket.sh: $SD not built (make)" >&2; exit 1; }
tmp=${BENCH_TMP:-$(mktemp -d "${TMPDIR:-/tmp}/sd-bench-bucket.XXXXXX")}
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p img

# ---- photo-like JPEGs (gradients + noise), 1024x768 ---------------------------------------------
if [ -x "$py" ] && "$py" -c 'import numpy, PIL' 2>/dev/null; then
  "$py" - "$n" <<'PY'
import sys
import numpy as np
from PIL import Image
import shutil
n = int(sys.argv[1])
rng = np.random.default_rng(1)
y, x = np.mgrid[0:768, 0:1024]
for i in range(n):
    if i >= 12:  # 12 distinct pictures, copied: the same work per file, quicker to make
        shutil.copyfile("img/b%05d.jpg" % (i % 12), "img/b%05d.jpg" % i)
        continue
    base = np.stack([(x * (i % 7 + 1) / 8) % 256, (y / 3 + i * 5) % 256, ((x + y) / 5) % 256], -1)
    a = np.clip(base + rng.normal(0, 12, (768, 1024, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(a).save("img/b%05d.jpg" % i, quality=90)
PY
elif [ -x "$MK" ]; then
  for i in $(seq -w 1 "$n"); do "$MK" --mkimg "img/b$i.jpg" 1024 768; done
else
  echo "bench/bucket.sh: need /usr/bin/python3 with numpy+PIL, or $MK (make tests)" >&2; exit 1
fi
ls img/*.jpg | sed 's/.*/{"image":"&"}/' > w.jsonl

now() { date +%s.%N; }
emit() {  # name images seconds [extra json]
  awk -v name="$1" -v n="$2" -v s="$3" -v extra="${4:-}" \
    'BEGIN { printf "{\"name\":\"%s\",\"images\":%d,\"seconds\":%.4f,\"per_second\":%.1f%s}\n", name, n, s, (s > 0 ? n / s : 0), extra }'
}
cpus=$(nproc 2>/dev/null || echo 1)

# ---- header-only sizing ---------------------------------------------------------------------------
reps=$(( (20000 + n - 1) / n ))
for i in $(seq "$reps"); do cat w.jsonl; done > probe.jsonl
np=$(wc -l < probe.jsonl)
"$SD" --resolution 512 --threads 1 < probe.jsonl > /dev/null 2>&1   # warm the page cache
for t in 1 0; do
  t0=$(now); "$SD" --resolution 512 --threads $t < probe.jsonl > /dev/null 2> /dev/null; t1=$(now)
  emit bucket_probe "$np" "$(echo "$t1 $t0" | awk '{print $1 - $2}')" ",\"threads\":$([ $t = 0 ] && echo "$cpus" || echo 1)"
done

# ---- --write-images -----------------------------------------------------------------------------
best_ours=0 one_ours=0
for t in 1 0; do
  rm -rf out
  t0=$(now)
  "$SD" --resolution 512 --threads $t --write-images out --image-format jpeg --jpeg_quality 90 < w.jsonl > recs.jsonl 2> /dev/null
  t1=$(now)
  s=$(echo "$t1 $t0" | awk '{print $1 - $2}')
  emit bucket_write "$n" "$s" ",\"threads\":$([ $t = 0 ] && echo "$cpus" || echo 1),\"format\":\"jpeg\""
  [ $t = 0 ] && best_ours=$s
  [ $t = 1 ] && one_ours=$s
done
if [ -x "$py" ] && "$py" -c 'import numpy, PIL' 2>/dev/null; then
  ps=$("$py" "$PIL_SCRIPT" recs.jsonl pil jpeg 90)
  emit bucket_write_pil "$n" "$ps" ",\"threads\":1,\"format\":\"jpeg\""
  awk -v a="$best_ours" -v o="$one_ours" -v b="$ps" -v c="$cpus" 'BEGIN { printf "{\"name\":\"bucket_write_vs_pil\",\"ratio\":%.2f,\"threads\":%d,\"ratio_1_thread\":%.2f}\n", (a > 0 ? b / a : 0), c, (o > 0 ? b / o : 0) }'
fi
