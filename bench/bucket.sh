#!/usr/bin/env bash
# sd-bucket benchmarks (prints JSON lines):
#   bucket_probe        header-only sizing: records without image_size, 1024x768 JPEGs
#   bucket_write        --write-images: 1024x768 JPEGs -> 512-class buckets (576x448 via OpenCV
#                       INTER_AREA + centre trim), written as JPEG quality 90 (at 90 both stb and
#                       libjpeg subsample chroma 4:2:0; stb switches to 4:4:4 above 90)
#   bucket_write_pil    the same image work in Python the reference's way (bench/bucket_pil.py:
#                       PIL decode, cv2 INTER_AREA, trim, PIL JPEG save), one process
#                       (OpenCV may use several threads inside cv2.resize, as in the reference)
#   bucket_write_vs_pil images/s of sd-bucket (all threads, and one thread) over images/s of PIL;
#                       cpu_ratio: PIL's CPU seconds (imports excluded) over ours at one thread,
#                       which a loaded machine disturbs less than wall time
#   bucket_stages_cpu_ms single-thread CPU ms per image for decode / resize / crop+encode, ours
#                       (tests/unit/test_resample --stages, when built) and PIL+cv2's
# Each sd-bucket case runs with --threads 1 and with the default (all usable CPUs); the three
# write runs alternate BENCH_REPS times (default 3) and medians are reported.
# Environment: SD_BUILD (default build), BENCH_IMAGES (default 120), BENCH_REPS, BENCH_TMP.
set -u
cd "$(dirname "$0")/.."
build=${SD_BUILD:-build}
SD="$PWD/$build/bin/sd-bucket"
MK="$PWD/$build/tests/unit/test_bucket"
RS="$PWD/$build/tests/unit/test_resample"
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
# The machine may be shared: sd-bucket (1 thread, all threads) and PIL runs alternate BENCH_REPS
# times and the medians are reported (runs_s lists every run).
reps=${BENCH_REPS:-3}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
have_pil=0
[ -x "$py" ] && "$py" -c 'import numpy, PIL' 2>/dev/null && have_pil=1
s1="" sN="" sP="" c1="" cN="" cP=""
TIMEFORMAT='%R %U %S'
for r in $(seq "$reps"); do
  for t in 1 0; do
    rm -rf out
    tm=$( { time "$SD" --resolution 512 --threads $t --write-images out --image-format jpeg --jpeg_quality 90 < w.jsonl > recs.jsonl 2> /dev/null; } 2>&1 )
    s=$(echo "$tm" | awk '{print $1}') c=$(echo "$tm" | awk '{print $2 + $3}')
    if [ $t = 1 ]; then s1="$s1 $s" c1="$c1 $c"; else sN="$sN $s" cN="$cN $c"; fi
  done
  if [ $have_pil = 1 ]; then
    rm -rf pil
    tm=$( { time "$py" "$PIL_SCRIPT" recs.jsonl pil jpeg 90 > pil.txt; } 2>&1 )
    sP="$sP $(cat pil.txt)" cP="$cP $(echo "$tm" | awk '{print $2 + $3}')"
  fi
done
# CPU seconds of the Python process include interpreter start-up and imports: measured alone
# and subtracted, so cpu_s compares the image work.
imp=0
if [ $have_pil = 1 ]; then
  tm=$( { time "$py" -c 'import json, os, sys, time, numpy, PIL.Image
try:
    import cv2
except ImportError:
    pass' > /dev/null 2>&1; } 2>&1 )
  imp=$(echo "$tm" | awk '{print $2 + $3}')
fi
one_ours=$(echo "$s1" | median) best_ours=$(echo "$sN" | median)
emit bucket_write "$n" "$one_ours" ",\"threads\":1,\"format\":\"jpeg\",\"median_of\":$reps,\"runs_s\":\"$(echo $s1)\",\"cpu_s\":$(echo "$c1" | median)"
emit bucket_write "$n" "$best_ours" ",\"threads\":$cpus,\"format\":\"jpeg\",\"median_of\":$reps,\"runs_s\":\"$(echo $sN)\",\"cpu_s\":$(echo "$cN" | median)"
if [ $have_pil = 1 ]; then
  ps=$(echo "$sP" | median)
  cpil=$(echo "$cP" | median | awk -v i="$imp" '{ printf "%.3f", $1 - i }')
  emit bucket_write_pil "$n" "$ps" ",\"threads\":1,\"format\":\"jpeg\",\"median_of\":$reps,\"runs_s\":\"$(echo $sP)\",\"cpu_s\":$cpil"
  awk -v a="$best_ours" -v o="$one_ours" -v b="$ps" -v c="$cpus" -v co="$(echo "$c1" | median)" -v cp="$cpil" 'BEGIN { printf "{\"name\":\"bucket_write_vs_pil\",\"ratio\":%.2f,\"threads\":%d,\"ratio_1_thread\":%.2f,\"cpu_ratio\":%.2f}\n", (a > 0 ? b / a : 0), c, (o > 0 ? b / o : 0), (co > 0 ? cp / co : 0) }'
fi

# ---- single-thread CPU time per image and stage (decode, resize to 597x448, crop + JPEG q90) ----
imgs=$(ls img/*.jpg | head -12)
if [ -x "$RS" ]; then
  "$RS" --stages 597 448 $imgs
fi
if [ $have_pil = 1 ]; then
  "$py" - $imgs <<'PY'
import io, sys, time
import numpy as np
from PIL import Image
try:
    import cv2
    cv2.setNumThreads(1)
except ImportError:
    cv2 = None
t = {"decode": [], "resize": [], "encode": []}
for f in sys.argv[1:]:
    best = [1e9] * 3
    for rep in range(3):
        t0 = time.thread_time(); a = np.array(Image.open(f).convert("RGB")); t1 = time.thread_time()
        if cv2 is not None:
            r = cv2.resize(a, (597, 448), interpolation=cv2.INTER_AREA)
        else:
            r = np.array(Image.fromarray(a).resize((597, 448), Image.BOX))
        t2 = time.thread_time()
        b = io.BytesIO(); Image.fromarray(r[:, 10:586]).save(b, format="JPEG", quality=90); t3 = time.thread_time()
        best = [min(x, y) for x, y in zip(best, (t1 - t0, t2 - t1, t3 - t2))]
    for k, v in zip(("decode", "resize", "encode"), best):
        t[k].append(v)
m = {k: float(np.median(v)) * 1e3 for k, v in t.items()}
print('{"name":"bucket_stages_cpu_ms","impl":"pil%s","images":%d,"decode":%.2f,"resize":%.2f,"encode":%.2f}'
      % ("+cv2" if cv2 is not None else "", len(sys.argv) - 1, m["decode"], m["resize"], m["encode"]))
PY
fi
