#!/usr/bin/env bash
# The sd-* pipeline end to end on the CPU in seconds (make demo):
#   a small image set (coloured shapes with .caption sidecars, in kohya's "<repeats>_<class>" folder)
#   and a tiny SD1-shaped model with random weights (examples/tiny_model.c), then
#   sd-merge-meta → sd-bucket → sd-encode-latents → sd-train (LoRA),
# and where the LoRA file and the logs are. The model is random, so the LoRA learns noise: the
# point is the plumbing, the files and their formats (the same commands run on a real
# SD1.5 checkpoint without --model_config).
#   usage: examples/demo.sh [BUILD]      (DEMO_DIR: where to work, default BUILD/demo)
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$build" in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bin"
work=${DEMO_DIR:-$build/demo}
for t in sd-merge-meta sd-bucket sd-encode-latents sd-train; do
  [ -x "$bin/$t" ] || { echo "demo: $bin/$t is not built (make BUILD=... all)" >&2; exit 1; }
done
# the tiny model's products are small: one thread is fastest (and the results do not depend on it)
export SD_THREADS=${SD_THREADS:-1}
rm -rf "$work"; mkdir -p "$work/data/5_sks"
cd "$work"
echo "== building the tiny-model generator"
"$root/examples/build_tiny.sh" "$build" ./tiny_model
echo "== a tiny SD1-shaped model (random weights) and 12 images with captions"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors
./tiny_model images data/5_sks 12 64 64
cfg="$root/examples/tiny_model.toml"
echo "== sd-merge-meta | sd-bucket | sd-encode-latents > train.jsonl"
"$bin/sd-merge-meta" --train_data_dir data \
  | "$bin/sd-bucket" --resolution 64 --min_bucket_reso 64 --max_bucket_reso 128 \
  | "$bin/sd-encode-latents" --vae tiny_vae.safetensors --model_config "$cfg" --out latents --flip_aug \
  > train.jsonl
echo "   $(wc -l < train.jsonl) records, e.g.:"
head -1 train.jsonl | cut -c1-160
echo "== sd-train --method lora"
"$bin/sd-train" --method lora --model tiny.safetensors --model_config "$cfg" --data train.jsonl \
  --network_dim 8 --network_alpha 4 --learning_rate 1e-3 --lr_scheduler cosine --lr_warmup_steps 10 \
  --max_train_epochs 3 --save_every_n_epochs 1 --save_state --seed 42 \
  --output_dir out --output_name demo_lora --logging_dir logs --log_jsonl out/train_log.jsonl
echo
echo "LoRA file:        $work/out/demo_lora.safetensors"
echo "epoch checkpoints: $(cd out && ls demo_lora-0*.safetensors | tr '\n' ' ')"
echo "resumable state:  $work/out/demo_lora-state  (sd-train ... --resume it)"
echo "step log:         $work/out/train_log.jsonl"
echo "TensorBoard:      tensorboard --logdir $work/logs"
