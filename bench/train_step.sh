#!/usr/bin/env bash
# Seconds per LoRA training step of sd-train (batch 1, 64×64 latents, 77 tokens, UNet LoRA rank 4,
# frozen CLIP-L text encoder run every step) on the 104 M-parameter UNet of doc/performance.md
# with random weights, as one JSON line:
#   {"name":"sd_train_lora_step_104m","seconds":…,"steps":…,"threads":…,"peak_rss_mib":…}
# seconds = median sec_per_step of the logged steps after the first (warm-up). PyTorch 1.13 on the
# same machine (doc/performance.md): 17.2 s per step (10.0 s with a retaining allocator); the
# bench/torch_unet.py script measures it. usage: bench/train_step.sh [BUILD] (STEPS, SD_THREADS)
set -euo pipefail
build=${1:-${SD_BUILD:-build}}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$build" in /*) ;; *) build="$root/$build" ;; esac
steps=${STEPS:-4}
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
"$root/examples/build_tiny.sh" "$build" "$w/tiny_model"
"$w/tiny_model" model "$w/m.safetensors" "$root/bench/unet104m.toml" 1
mkdir -p "$w/lat"
"$w/tiny_model" latents "$w/lat" 1 4 64 64 > "$w/recs.jsonl"
/usr/bin/time -f '%M' -o "$w/rss" "$build/bin/sd-train" --method lora --model "$w/m.safetensors" \
  --model_config "$root/bench/unet104m.toml" --data "$w/recs.jsonl" --network_train_unet_only \
  --max_train_steps "$steps" --learning_rate 1e-4 --seed 1 --output_dir "$w/out" --log_jsonl "$w/log.jsonl" \
  ${SD_THREADS:+--threads $SD_THREADS} 2> "$w/err" || { cat "$w/err" >&2; exit 1; }
python3 - "$w/log.jsonl" "$(cat "$w/rss")" "${SD_THREADS:-$(nproc)}" <<'PY'
import json, statistics, sys
s = [json.loads(l)["sec_per_step"] for l in open(sys.argv[1])][1:]
print(json.dumps({"name": "sd_train_lora_step_104m", "seconds": round(statistics.median(s), 3), "steps": len(s),
                  "threads": int(sys.argv[3]), "peak_rss_mib": round(int(sys.argv[2]) / 1024)}))
PY
