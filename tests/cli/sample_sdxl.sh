#!/usr/bin/env bash
# sd-sample and sd-train's samples on the tiny SDXL checkpoint of examples/tiny_model (VAE factor 8,
# UNet of 2 levels: sizes are multiples of 16): PNG bytes identical for the same seed and for
# --threads 1 and 2, the negative prompt and a kohya-named SDXL LoRA (lora_unet_/lora_te1_/lora_te2_; its UNet
# modules also in Diffusers names)
# change the image (multiplier 0 does not), --max_token_length and the size conditioning options,
# the default size 1024, one-line errors; the conditioning (token rows, weights, context, vector)
# and one guided UNet call against a plain-PyTorch computation (tests/golden/gen/
# make_sample_sdxl_golden.py); sample images during SDXL training.
. "$(dirname "$0")/lib.sh"
t_init sample_sdxl
bin=${SD_BIN:-$build/bin}
case "$bin" in /*) ;; *) bin="$PWD/$bin";; esac
helper="$root/$build/tests/unit/test_sample"
ss="$bin/sd-sample"
export SD_PROGRESS=0 SD_ROOT="${SD_ROOT:-$root}" SD_SHARE="${SD_SHARE:-$root/share/sd}"
check() { if eval "$2"; then ok "$1"; else nok "$1"; fi; }
t_need "$helper" "$ss"
t_tiny_build
cd "$tmp"
cfg="$root/examples/tiny_sdxl.toml"
./tiny_model model x.safetensors "$cfg" > /dev/null || { nok sample_sdxl_tiny_model; exit 1; }
"$helper" make-sdxl-lora x.safetensors "$cfg" l.safetensors 3 && "$helper" make-sdxl-lora x.safetensors "$cfg" bad.safetensors 3 bad \
  || { nok sample_sdxl_make_lora; exit 1; }
txt() { "$helper" text "$1" parameters; }
M=(--model x.safetensors --model_config "$cfg" --W 64 --H 48 --steps 3 --sequential_file_name --seed 7)

# ---- the conditioning and one UNet call against PyTorch ---------------------------------------------
"$helper" sdxl-golden x.safetensors "$cfg" "$root/tests/data/sample/sdxl_golden.safetensors" \
  "$root/tests/data/sample/sdxl_lora.safetensors"

# ---- generation, determinism, threads ---------------------------------------------------------------
"$ss" "${M[@]}" --prompt "a (red:1.2) cat" --negative_prompt blurry --sampler euler_a --outdir a --threads 1 > a.out 2> a.err
rc=$?
check sample_sdxl_exit_0 '[ $rc = 0 ] && [ "$(cat a.out)" = a/im_000001.png ]'
[ $rc = 0 ] || echo "# $(tail -3 a.err)"
check sample_sdxl_png_size '[ "$("$helper" size a/im_000001.png)" = "64 48 rgb" ]'
check sample_sdxl_parameters 'txt a/im_000001.png | grep -q "^Steps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 64x48, Model hash: "'
"$ss" "${M[@]}" --prompt "a (red:1.2) cat" --negative_prompt blurry --sampler euler_a --outdir b --threads 2 > /dev/null 2>&1
"$ss" "${M[@]}" --prompt "a (red:1.2) cat" --negative_prompt blurry --sampler euler_a --outdir c --threads 1 > /dev/null 2>&1
check sample_sdxl_same_bytes 'cmp -s a/im_000001.png c/im_000001.png'
check sample_sdxl_threads_same_bytes 'cmp -s a/im_000001.png b/im_000001.png'
"$ss" "${M[@]}" --prompt "a (red:1.2) cat" --sampler euler_a --outdir n > /dev/null 2>&1
check sample_sdxl_negative_prompt_changes '[ "$("$helper" maxdiff a/im_000001.png n/im_000001.png)" -gt 0 ]'
"$ss" "${M[@]}" --prompt "a (red:1.2) cat" --negative_prompt blurry --sampler euler_a --outdir o \
  --original_width 1024 --original_height 768 --crop_top 8 > /dev/null 2>&1
check sample_sdxl_size_conditioning_changes '[ "$("$helper" maxdiff a/im_000001.png o/im_000001.png)" -gt 0 ]'
"$ss" "${M[@]}" --prompt "a (red:1.2) cat" --negative_prompt blurry --sampler euler_a --outdir t --max_token_length 150 > /dev/null 2>&1
check sample_sdxl_max_token_length_changes '[ "$("$helper" maxdiff a/im_000001.png t/im_000001.png)" -gt 0 ]'
# every sampler runs
fails=
for s in ddim pndm lms euler euler_a heun dpm_2 dpm_2_a dpmsolver dpmsolver++ dpmsingle; do
  "$ss" "${M[@]}" --prompt "a cat" --sampler $s --steps 4 --outdir "s_$s" > /dev/null 2> "s_$s.err" || fails="$fails $s"
done
check sample_sdxl_all_samplers '[ -z "$fails" ]'
[ -z "$fails" ] || echo "# failed:$fails"

# ---- LoRA --------------------------------------------------------------------------------------------
L=("${M[@]}" --prompt "a cat" --negative_prompt blurry)
"$ss" "${L[@]}" --outdir l0 > /dev/null 2>&1
"$ss" "${L[@]}" --network_weights l.safetensors --network_mul 0.8 --outdir l1 > /dev/null 2> l1.err
"$ss" "${L[@]}" --network_weights l.safetensors --network_mul 0 --outdir l2 > /dev/null 2>&1
check sample_sdxl_lora_changes_image '[ "$("$helper" maxdiff l0/im_000001.png l1/im_000001.png)" -gt 0 ]'
check sample_sdxl_lora_merged_message 'grep -q "l.safetensors: merged 4 modules (2 text encoder, 2 UNet) with multiplier 0.8" l1.err'
check sample_sdxl_lora_mul_0_is_base '[ "$("$helper" maxdiff l0/im_000001.png l2/im_000001.png)" = 0 ]'
"$ss" "${L[@]}" --network_weights bad.safetensors --outdir lb > /dev/null 2> lb.err; rc=$?
echo "# bad LoRA: $(cat lb.err)"
check sample_sdxl_lora_bad_name '[ $rc = 1 ] && [ "$(wc -l < lb.err)" = 1 ] && grep -q "bad.safetensors: module .lora_te2_text_model_encoder_layers_99_mlp_fc1. names no layer" lb.err && [ ! -e lb/im_000001.png ]'
# the same file with its UNet modules in Diffusers names (lora_unet_down_blocks_…, as Diffusers-based trainers
# write them; stored as dn/l.safetensors: the infotext names the file's stem): the same image bytes; a file
# naming one layer both ways is refused naming both modules
mkdir -p dn && "$helper" sdxl-lora-diffusers x.safetensors "$cfg" l.safetensors dn/l.safetensors > ld.txt 2> ld.err &&
  "$helper" sdxl-lora-diffusers x.safetensors "$cfg" l.safetensors lm.safetensors mixed > /dev/null 2>> ld.err ||
  nok sample_sdxl_make_diffusers_lora "$(cat ld.err)"
"$ss" "${L[@]}" --network_weights dn/l.safetensors --network_mul 0.8 --outdir l3 > /dev/null 2> l3.err
check sample_sdxl_lora_diffusers_names_same_bytes '[ "$(wc -l < ld.txt)" = 2 ] && grep -q "^lora_unet_input_blocks_[0-9_]*1_transformer_blocks_0_attn2_to_k lora_unet_down_blocks_[0-9]*_attentions_" ld.txt && grep -q "^lora_unet_[a-z_0-9]*in_layers_2 lora_unet_[a-z_0-9]*resnets_[0-9]*_conv1$" ld.txt && cmp -s l1/im_000001.png l3/im_000001.png && grep -q "dn/l.safetensors: merged 4 modules (2 text encoder, 2 UNet) with multiplier 0.8" l3.err && grep -q "dn/l.safetensors: 2 UNet modules with Diffusers names" l3.err'
[ -e l3/im_000001.png ] && ! cmp -s l1/im_000001.png l3/im_000001.png && echo "# $(cat ld.txt) $(tail -2 l3.err)"
"$ss" "${L[@]}" --network_weights lm.safetensors --outdir lm > /dev/null 2> lm.err; rc=$?
echo "# mixed names: $(cat lm.err)"
m1=$(head -1 ld.txt | cut -d' ' -f1); m2=$(head -1 ld.txt | cut -d' ' -f2)
check sample_sdxl_lora_mixed_names_refused '[ $rc = 1 ] && [ "$(wc -l < lm.err)" = 1 ] && grep -q "lm.safetensors: .*$m2.* and .*$m1.* are the same SDXL UNet layer" lm.err && [ ! -e lm/im_000001.png ]'

# ---- errors -----------------------------------------------------------------------------------------
"$ss" "${M[@]}" --prompt "a cat --w 72" --outdir e1 > /dev/null 2> e1.err; rc=$?
echo "# size: $(cat e1.err)"
check sample_sdxl_size_error '[ $rc = 1 ] && [ "$(wc -l < e1.err)" = 1 ] && grep -q "multiples of 16" e1.err'
# an SD1/SD2 embedding (emb_params) with the SDXL model: refused, one line naming the file (SDXL
# embeddings, clip_l/clip_g: tests/cli/train_ti_sdxl.sh)
./tiny_model model sd1.safetensors "$root/examples/tiny_model.toml" > /dev/null &&
  "$helper" make-ti sd1.safetensors emb.safetensors emb_params "a cat" 2> /dev/null
"$ss" "${M[@]}" --prompt "a cat" --textual_inversion_embeddings emb.safetensors --outdir e2 > /dev/null 2> e2.err; rc=$?
echo "# ti: $(cat e2.err)"
check sample_sdxl_ti_sd1_refused '[ $rc = 1 ] && [ "$(wc -l < e2.err)" = 1 ] && grep -q "emb.safetensors: not an SDXL embedding" e2.err'
"$ss" "${M[@]}" --prompt "a cat" --max_token_length 100 --outdir e3 > /dev/null 2> e3.err; rc=$?
check sample_sdxl_max_token_length_usage '[ $rc = 2 ] && grep -q "75, 150 or 225" e3.err'

# ---- --device cuda (a GPU, or SD_FAKE_CUDA=1 in a build without CUDA): close to the CPU's image -------
"$ss" "${M[@]}" --prompt "a (red:1.2) cat" --negative_prompt blurry --network_weights l.safetensors --max_token_length 150 \
  --device cuda --outdir gcu > /dev/null 2> gcu.err; rc=$?
if [ $rc = 0 ]; then
  "$ss" "${M[@]}" --prompt "a (red:1.2) cat" --negative_prompt blurry --network_weights l.safetensors --max_token_length 150 \
    --outdir gcpu > /dev/null 2>&1
  d=$("$helper" maxdiff gcu/im_000001.png gcpu/im_000001.png)
  echo "# --device cuda vs cpu: max pixel difference $d"
  check sample_sdxl_device_cuda_close_to_cpu '[ "$d" -ge 0 ] && [ "$d" -le 8 ]'
else
  check sample_sdxl_device_cuda_unavailable '[ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" gcu.err'
fi

# ---- --help lists the SDXL options --------------------------------------------------------------------
"$ss" --help > help.txt 2>&1
hgood=1
for o in max_token_length original_width original_height original_width_negative original_height_negative crop_top \
  crop_left; do grep -q -- "--$o" help.txt || { hgood=0; echo "# --help lacks --$o"; }; done
check sample_sdxl_help_lists_options '[ $hgood = 1 ]'

# ---- default size 1024 for SDXL (one step, no guidance) ----------------------------------------------
"$ss" --model x.safetensors --model_config "$cfg" --prompt "a cat" --steps 1 --scale 1 --seed 1 --sequential_file_name \
  --outdir d > /dev/null 2> d.err
check sample_sdxl_default_1024 '[ "$("$helper" size d/im_000001.png)" = "1024 1024 rgb" ]'

# ---- samples during SDXL training -------------------------------------------------------------------
printf 'a red square --w 64 --h 80 --s 2 --d 7 --n blurry\nsecond (prompt:1.2) --w 64 --h 64 --s 2 --ss euler\n' > p.txt
n=$("$helper" sdxl-train-round x.safetensors "$cfg" p.txt r 225 2> r.err); rc=$?
[ $rc = 0 ] || echo "# $(cat r.err)"
f=$(ls r/sample 2> /dev/null | grep '^s_000002_00_.*_7\.png$' | head -1)
check train_sample_sdxl_round '[ $rc = 0 ] && [ "$n" = 2 ] && [ -n "$f" ] && [ "$("$helper" size "r/sample/$f")" = "64 80 rgb" ] && txt "r/sample/$f" | grep -q "^Negative prompt: blurry$"'
# sd-train itself (once it trains SDXL models)
tr="$bin/sd-train"
if [ -x "$tr" ] && ./tiny_model latents "$tmp" 4 4 8 8 > recs.jsonl 2> /dev/null; then
  SOURCE_DATE_EPOCH=1700000000 "$tr" --method lora --model x.safetensors --model_config "$cfg" --data recs.jsonl \
    --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 --output_dir tr --output_name s --max_train_steps 2 \
    --sample_prompts p.txt --sample_every_n_steps 2 > tr.out 2> tr.err
  rc=$?
  f=$(ls tr/sample 2> /dev/null | grep '_7\.png$' | head -1)
  if [ $rc = 0 ] && [ -n "$f" ]; then
    check train_sample_sdxl_image '[ "$("$helper" size "tr/sample/$f")" = "64 80 rgb" ] && txt "tr/sample/$f" | grep -q "Size: 64x80"'
  elif [ $rc != 0 ] && ! grep -qi "sample" tr.err; then
    ok "train_sample_sdxl_image # SKIP sd-train does not train this SDXL model yet: $(tail -1 tr.err)"
  else
    nok train_sample_sdxl_image "rc $rc: $(tail -2 tr.err)"
  fi
else
  ok "train_sample_sdxl_image # SKIP no sd-train or tiny latents"
fi
# a LoRA sd-train wrote (every attention, ResBlock and sampler module: conv_dim) merged with its UNet modules in SGM
# and in Diffusers names: the same pixels (the PNGs differ only in the infotext's "Lora hashes": the renamed file
# orders its tensors' data differently, so its addnet hash differs)
if [ -x "$tr" ] && [ -s recs.jsonl ] &&
  SOURCE_DATE_EPOCH=1700000000 "$tr" --method lora --model x.safetensors --model_config "$cfg" --data recs.jsonl \
    --learning_rate 1e-2 --seed 3 --network_dim 4 --network_args conv_dim=2 --threads 1 --output_dir tc --output_name c \
    --max_train_steps 2 > /dev/null 2> tc.err; then
  mkdir -p tcd && "$helper" sdxl-lora-diffusers x.safetensors "$cfg" tc/c.safetensors tcd/c.safetensors > tcd.txt 2>&1
  "$ss" "${L[@]}" --network_weights tc/c.safetensors --outdir c1 > /dev/null 2> c1.err
  "$ss" "${L[@]}" --network_weights tcd/c.safetensors --outdir c2 > /dev/null 2> c2.err
  n=$(wc -l < tcd.txt)
  echo "# trained LoRA: $n UNet modules renamed; $(grep merged c2.err)"
  check sample_sdxl_trained_lora_diffusers_names_same_pixels '[ "$n" -gt 20 ] && grep -q "_upsamplers_0_conv$" tcd.txt &&
    [ -e c1/im_000001.png ] && [ "$("$helper" maxdiff c1/im_000001.png c2/im_000001.png)" = 0 ] && grep -q "merged .*, $n UNet)" c2.err &&
    [ "$("$helper" maxdiff l0/im_000001.png c1/im_000001.png)" -gt 0 ]'
else
  ok "sample_sdxl_trained_lora_diffusers_names_same_pixels # SKIP no sd-train or tiny latents"
fi
