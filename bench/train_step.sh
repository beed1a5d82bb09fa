#!/usr/bin/env bash
# Seconds per LoRA training step of sd-train (batch 1, 64×64 latents, 77 tokens, UNet LoRA rank 4,
# frozen CLIP-L text encoder run every step) on the 104 M-parameter UNet of doc/performance.md
# (bench/unet104m.toml) with random weights, as one JSON line:
#   {"name":"sd_train_lora_step_104m","seconds":…,"cpu_seconds":…,"steps":…,"threads":…,"peak_rss_mib":…}
# seconds = median wall sec_per_step of the logged steps after the first (warm-up); cpu_seconds =
# (user+sys of a 1+STEPS-step run − that of a 1-step run) / STEPS, which stays meaningful on a
# loaded machine. PyTorch 1.13 on the same machine (doc/performance.md, idle, 2 threads): 17.2 s
# per step (10.0 s with a retaining allocator); bench/torch_unet.py measures it.
# usage: bench/train_step.sh [BUILD]      (STEPS, default 3; SD_THREADS; CONFIG=bench/sd15.toml for the
#        SD1.5 shapes, named sd_train_lora_step_sd15: PyTorch 31.0 s / 19.2 s per step, 10.4 GB peak RSS)
set -euo pipefail
build=${1:-${SD_BUILD:-build}}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$build" in /*) ;; *) build="$root/$build" ;; esac
steps=${STEPS:-3}
config=${CONFIG:-$root/bench/unet104m.toml}
tag=104m
case "$config" in *sd15*) tag=sd15 ;; esac
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
"$root/examples/build_tiny.sh" "$build" "$w/tiny_model"
"$w/tiny_model" model "$w/m.safetensors" "$config" 1
mkdir -p "$w/lat"
"$w/tiny_model" latents "$w/lat" 1 4 64 64 > "$w/recs.jsonl"
run() {  # steps, tag
  /usr/bin/time -f '%U %S %M' -o "$w/time.$2" "$build/bin/sd-train" --method lora --model "$w/m.safetensors" \
    --model_config "$config" --data "$w/recs.jsonl" --network_train_unet_only \
    --max_train_steps "$1" --learning_rate 1e-4 --seed 1 --output_dir "$w/out.$2" --log_jsonl "$w/log.$2" \
    ${SD_THREADS:+--threads $SD_THREADS} 2> "$w/err" || { cat "$w/err" >&2; exit 1; }
}
run 1 a
run $((steps + 1)) b
python3 - "$w" "$steps" "${SD_THREADS:-$(nproc)}" "$tag" <<'PY'
import json, statistics, sys
w, steps, threads, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = [json.loads(l)["sec_per_step"] for l in open(w + "/log.b")][1:]
ta = [float(x) for x in open(w + "/time.a").read().split()]
tb = [float(x) for x in open(w + "/time.b").read().split()]
cpu = ((tb[0] + tb[1]) - (ta[0] + ta[1])) / steps
print(json.dumps({"name": "sd_train_lora_step_" + tag, "seconds": round(statistics.median(s) if s else float("nan"), 3),
                  "cpu_seconds": round(cpu, 3), "steps": len(s), "threads": threads,
                  "peak_rss_mib": round(max(ta[2], tb[2]) / 1024)}))
PY
