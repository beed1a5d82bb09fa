#!/usr/bin/env bash
# sd-encode-latents benchmark (prints JSON lines): images/s encoding 512x512 images with an
# SD1.5-shaped VAE (random weights generated here: ch 128, ch_mult 1,2,4,4, 2 res blocks, no level
# attention, mid attention) against the same VAE encode in PyTorch (bench/torch_vae.py,
# /usr/bin/python3 with Debian's torch 1.13).
#   encode_latents        the whole tool over BENCH_IMAGES PNGs (decode, [-1,1], VAE encode,
#                         posterior sample, zstd latent file): its own steady rate (the summary line,
#                         timed from the first record, after the model load) and the process wall
#                         time including the model load and VAE hash
#   torch_vae_encode      encoder + quant_conv + sample on one 512x512 tensor per run, after a warm-up
#   torch_vae_encode_jemalloc  the same with jemalloc retaining memory (when libjemalloc2 is there)
#   encode_latents_vs_torch    ratio of images/s (> 1: faster than PyTorch), and cpu_ratio: the
#                         same with process CPU seconds per image (ours includes the model load,
#                         hash and image work; a busy shared host disturbs CPU time much less)
# Rounds alternate ours and PyTorch (the host is shared); every figure is a median over rounds.
# Environment: SD_BUILD (default build), SD_THREADS (default: all CPUs), BENCH_IMAGES (default 3),
# BENCH_ROUNDS (default 3), BENCH_TMP, BENCH_NO_TORCH.
set -u
cd "$(dirname "$0")/.."
build=${SD_BUILD:-build}
ENC="$PWD/$build/bin/sd-encode-latents"
MK="$PWD/$build/tests/unit/test_encode_latents"
TORCH="$PWD/bench/torch_vae.py"
py=/usr/bin/python3
n=${BENCH_IMAGES:-3}
rounds=${BENCH_ROUNDS:-3}
threads=${SD_THREADS:-$(nproc 2>/dev/null || echo 1)}
[ -x "$ENC" ] && [ -x "$MK" ] || { echo "bench/encode_latents.sh: build $ENC and $MK first (make tests)" >&2; exit 1; }
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX; fi
tmp=${BENCH_TMP:-$(mktemp -d "${TMPDIR:-/tmp}/sd-bench-enc.XXXXXX")}
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
"$MK" --make-vae vae.safetensors vae.json 1 sd15 || exit 1
: > recs.jsonl
for i in $(seq 1 "$n"); do
  "$MK" --make-image "img$i.png" 512 512 "$i" || exit 1
  echo "{\"image\":\"img$i.png\",\"image_size\":[512,512],\"bucket\":[512,512],\"resized\":[512,512],\"crop_ltrb\":[0,0,512,512]}" >> recs.jsonl
done
torch_ok=0
if [ -z "${BENCH_NO_TORCH:-}" ] && [ -x "$py" ] && "$py" -c 'import torch' 2>/dev/null; then torch_ok=1; fi
jem=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
median() { sort -g | awk '{a[NR] = $1} END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }

: > ours.txt; : > wall.txt; : > cpu.txt; : > torch.txt; : > torchcpu.txt; : > torchj.txt
for r in $(seq 1 "$rounds"); do
  rm -rf lat
  t0=$(date +%s.%N)
  SD_PROGRESS=0 /usr/bin/time -o cpu1.txt -f "%U %S" "$ENC" --vae vae.safetensors --model_config vae.json --out lat --threads "$threads" < recs.jsonl > /dev/null 2> enc.err \
    || { cat enc.err >&2; exit 1; }
  t1=$(date +%s.%N)
  sed -n 's/.*(\([0-9.]*\) images\/s).*/\1/p' enc.err >> ours.txt
  echo "$t0 $t1" | awk '{print $2 - $1}' >> wall.txt
  awk -v n="$n" '{printf "%.3f\n", ($1 + $2) / n}' cpu1.txt >> cpu.txt
  if [ $torch_ok = 1 ]; then
    "$py" "$TORCH" vae.safetensors 512 "$n" "$threads" vae.json > t.json || exit 1
    sed -n 's/.*"per_second": \([0-9.e-]*\).*/\1/p' t.json >> torch.txt
    sed -n 's/.*"cpu_seconds": \([0-9.e-]*\).*/\1/p' t.json >> torchcpu.txt
    if [ -f "$jem" ]; then
      LD_PRELOAD=$jem MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true \
        "$py" "$TORCH" vae.safetensors 512 "$n" "$threads" vae.json > tj.json || exit 1
      sed -n 's/.*"per_second": \([0-9.e-]*\).*/\1/p' tj.json >> torchj.txt
    fi
  fi
done
ours=$(median < ours.txt)
wall=$(median < wall.txt)
cpu=$(median < cpu.txt)
printf '{"name":"encode_latents","size":512,"images":%d,"rounds":%d,"threads":%d,"per_second":%s,"seconds_per_image":%s,"process_wall_seconds":%s,"cpu_seconds_per_image":%s,"rates":[%s]}\n' \
  "$n" "$rounds" "$threads" "$ours" "$(awk -v r="$ours" 'BEGIN{printf "%.3f", (r > 0 ? 1 / r : 0)}')" "$wall" "$cpu" "$(paste -sd, ours.txt)"
if [ $torch_ok = 1 ]; then
  tr=$(median < torch.txt)
  tc=$(median < torchcpu.txt)
  printf '{"name":"torch_vae_encode","size":512,"threads":%d,"per_second":%s,"seconds_per_image":%s,"cpu_seconds_per_image":%s,"rates":[%s]}\n' \
    "$threads" "$tr" "$(awk -v r="$tr" 'BEGIN{printf "%.3f", (r > 0 ? 1 / r : 0)}')" "$tc" "$(paste -sd, torch.txt)"
  extra=""
  if [ -s torchj.txt ]; then
    tj=$(median < torchj.txt)
    printf '{"name":"torch_vae_encode_jemalloc","size":512,"threads":%d,"per_second":%s,"seconds_per_image":%s,"rates":[%s]}\n' \
      "$threads" "$tj" "$(awk -v r="$tj" 'BEGIN{printf "%.3f", (r > 0 ? 1 / r : 0)}')" "$(paste -sd, torchj.txt)"
    extra=$(awk -v a="$ours" -v b="$tj" 'BEGIN{printf ",\"ratio_vs_jemalloc\":%.2f", (b > 0 ? a / b : 0)}')
  fi
  awk -v a="$ours" -v b="$tr" -v c="$cpu" -v d="$tc" -v e="$extra" \
    'BEGIN{printf "{\"name\":\"encode_latents_vs_torch\",\"ratio\":%.2f,\"cpu_ratio\":%.2f%s}\n", (b > 0 ? a / b : 0), (c > 0 ? d / c : 0), e}'
fi
