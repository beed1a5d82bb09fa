#!/usr/bin/env bash
# sd-tag benchmark on real-sized tagger models (prints one JSON line per model): images/s of
#   onnx            sd-tag --onnx (our ONNX interpreter, graph optimisation on)
#   onnx_unfused    the same with SD_ONNX_NO_OPT=1 (node by node: the interpreter before the pass)
#   native          sd-tag on the same weights as model.safetensors (lib/models/tagger*.c)
#   torch           the same module in PyTorch on the CPU (bench/torch_tagger_onnx.py time)
# Models (bench/torch_tagger_onnx.py export, random weights; generated once into
# $SD_BUILD/bench-tagger, ~1.2 GB, never committed): tagger_convnext (ConvNeXt-Base, the shapes of
# wd-convnext-tagger-v3 / wd-v1-4-convnext-tagger-v2, opset 13: decomposed LayerNorms) and
# tagger_vit (ViT-B/16, wd-vit-tagger-v3, opset 17), both 448x448 with 10861 tags.
# Each rate is BENCH_IMAGES (default 4) images at batch size 1 divided by the time they add over a
# run on one image (model loading and start-up excluded); best of BENCH_RUNS (default 3).
# Needs /usr/bin/python3 with torch and onnx (else it prints why and exits 0). Environment:
# SD_BUILD, SD_THREADS (default all CPUs), BENCH_IMAGES, BENCH_RUNS, BENCH_FILTER, BENCH_NO_TORCH.
set -u
cd "$(dirname "$0")/.."
build=${SD_BUILD:-build}
T="$PWD/$build/bin/sd-tag"
n=${BENCH_IMAGES:-4}
runs=${BENCH_RUNS:-3}
threads=${SD_THREADS:-$(nproc 2>/dev/null || echo 1)}
[ -x "$T" ] || { echo "bench/tagger_onnx.sh: $T not built (make)" >&2; exit 1; }
if ! /usr/bin/python3 -c 'import torch, onnx' 2>/dev/null; then
  echo "bench/tagger_onnx.sh: skipped (/usr/bin/python3 has no torch/onnx to make the models)" >&2
  exit 0
fi
data="$PWD/$build/bench-tagger"
/usr/bin/python3 bench/torch_tagger_onnx.py export "$data" || { echo "bench/tagger_onnx.sh: export failed" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sd-bench-tag.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/one" "$tmp/many"
cp tests/data/tagger/c_640x480.png "$tmp/one/a.png"
for i in $(seq 0 "$n"); do cp tests/data/tagger/c_640x480.png "$tmp/many/i$i.png"; done

wall() {  # seconds of one run: $1 folder of images, $2 SD_ONNX_NO_OPT value, rest: sd-tag options
  local dir=$1 noopt=$2 TIMEFORMAT='%R' t
  shift 2
  t=$( { time env SD_ONNX_NO_OPT="$noopt" "$T" --threads "$threads" --batch_size 1 --no-sidecar "$@" "$dir" > "$tmp/out" 2> "$tmp/err"; } 2>&1 ) ||
    { echo "bench/tagger_onnx.sh: sd-tag $* failed: $(tail -1 "$tmp/err")" >&2; return 1; }
  echo "$t"
}
rate() {  # images/s: best of $runs of (n images) / (t(n+1 images) - t(1 image)); args as wall's from $2
  local best="" t1 tn r
  for _ in $(seq "$runs"); do
    t1=$(wall "$tmp/one" "$@") && tn=$(wall "$tmp/many" "$@") || return 1
    r=$(awk -v n="$n" -v a="$t1" -v b="$tn" 'BEGIN { d = b - a; if (d <= 0) d = 1e-3; printf "%.3f", n / d }')
    best=$(awk -v a="${best:-0}" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
  done
  echo "$best"
}

status=0
for m in convnext vit; do
  name=tagger_$m
  [ -n "${BENCH_FILTER:-}" ] && [[ $name != *"$BENCH_FILTER"* ]] && continue
  d="$data/$m"
  onnx=$(rate 0 --onnx --model "$d") || { status=1; continue; }
  unf=$(rate 1 --onnx --model "$d") || { status=1; continue; }
  nat=$(rate 0 --model "$d") || { status=1; continue; }
  tor=null
  if [ -z "${BENCH_NO_TORCH:-}" ]; then
    tor=$(SD_THREADS=$threads BENCH_FILTER=$name /usr/bin/python3 bench/torch_tagger_onnx.py time "$data" |
          jq -r '.torch_images_per_s') || tor=null
  fi
  jq -c -n --arg name "$name" --argjson o "$onnx" --argjson u "$unf" --argjson nt "$nat" --argjson t "${tor:-null}" \
    --argjson th "$threads" --argjson n "$n" \
    '{name: $name, threads: $th, images: $n, onnx_images_per_s: $o, onnx_unfused_images_per_s: $u,
      native_images_per_s: $nt, torch_images_per_s: $t, onnx_vs_unfused: (($o / $u) * 100 | round / 100),
      onnx_vs_native: (($o / $nt) * 100 | round / 100)}
     + (if $t then {onnx_vs_torch: (($o / $t) * 100 | round / 100)} else {} end)'
done
exit $status
