#!/usr/bin/env bash
# sd-sample end to end on a tiny SD1 checkpoint built from the golden files (VAE factor 2, UNet of
# 2 levels: 32x32 images are 16x16 latents): PNG bytes identical for the same seed and for
# --threads 1 and 2, the A1111 "parameters" chunk, prompt files (.txt/.toml/.json) and their
# errors with line numbers, seeds, batch invariance, LoRA merging (several files, multipliers),
# VAE tiling, clip_skip, v-prediction, usage errors and exit codes.
. "$(dirname "$0")/lib.sh"
t_init sample
bin=${SD_BIN:-$build/bin}
helper="$PWD/$build/tests/unit/test_sample"
case "$bin" in /*) ;; *) bin="$PWD/$bin";; esac
ss="$bin/sd-sample"
export SD_PROGRESS=0 SD_ROOT="${SD_ROOT:-$PWD}" SD_SHARE="${SD_SHARE:-$PWD/share/sd}"
check() { if eval "$2"; then ok "$1"; else nok "$1"; fi; }
t_need "$helper" "$ss"
w=$tmp
cd "$w"
"$helper" make-model m.safetensors m.toml || { nok sample_make_model; exit 1; }
"$helper" make-lora m.safetensors m.toml l1.safetensors 1 && "$helper" make-lora m.safetensors m.toml l2.safetensors 2 \
  || { nok sample_make_lora; exit 1; }
M=(--model m.safetensors --model_config m.toml --W 32 --H 32 --steps 3 --sequential_file_name --threads 1)
txt() { "$helper" text "$1" parameters; }

# ---- basic run, determinism, threads ----------------------------------------------------------------
"$ss" "${M[@]}" --prompt "a (cat:1.2)" --negative_prompt blurry --seed 5 --images_per_prompt 2 --sampler euler_a \
  --outdir a --threads 1 > a.out 2> a.err
rc=$?
check sample_exit_0 '[ $rc = 0 ]'
check sample_stdout_lists_paths '[ "$(cat a.out)" = "$(printf "a/im_000001.png\na/im_000002.png")" ]'
check sample_png_size '[ "$("$helper" size a/im_000001.png)" = "32 32 rgb" ]'
check sample_parameters_exact '[ "$(txt a/im_000001.png)" = "$(printf "a (cat:1.2)\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, CFG scale: 7.5, Seed: 5, Size: 32x32, Model hash: %s, Model: m, Version: sd-sample 0.1.0" "$(sha256sum m.safetensors | cut -c1-10)")" ]'
check sample_seed_counts_up 'txt a/im_000002.png | grep -q "Seed: 6,"'
check sample_images_differ '! cmp -s a/im_000001.png a/im_000002.png'
"$ss" "${M[@]}" --prompt "a (cat:1.2)" --negative_prompt blurry --seed 5 --images_per_prompt 2 --sampler euler_a \
  --outdir b --threads 2 > /dev/null 2>&1
check sample_threads_same_bytes 'cmp -s a/im_000001.png b/im_000001.png && cmp -s a/im_000002.png b/im_000002.png'
"$ss" "${M[@]}" --prompt "a (cat:1.2)" --negative_prompt blurry --seed 5 --images_per_prompt 2 --sampler euler_a \
  --outdir c --threads 1 > /dev/null 2>&1
check sample_same_seed_same_bytes 'cmp -s a/im_000001.png c/im_000001.png && cmp -s a/im_000002.png c/im_000002.png'
# batch of 2 vs one at a time: the same seeds give the same images (the batched UNet may round differently)
"$ss" "${M[@]}" --prompt "a (cat:1.2)" --negative_prompt blurry --seed 5 --images_per_prompt 2 --batch_size 2 \
  --sampler euler_a --outdir d --threads 1 > /dev/null 2>&1
d1=$("$helper" maxdiff a/im_000001.png d/im_000001.png); d2=$("$helper" maxdiff a/im_000002.png d/im_000002.png)
echo "# batch 2 vs 1: max pixel difference $d1 $d2"
check sample_batch_invariant '[ "$d1" -ge 0 ] && [ "$d1" -le 1 ] && [ "$d2" -ge 0 ] && [ "$d2" -le 1 ]'
# a seed from the prompt line (--d) wins over --seed and counts up per image
"$ss" "${M[@]}" --prompt "a (cat:1.2) --n blurry --d 6" --seed 99 --sampler euler_a --outdir e > /dev/null 2>&1
check sample_prompt_seed_wins 'cmp -s a/im_000002.png e/im_000001.png'
# default names: im_<YYYYmmddHHMMSS>_<index in batch>_<seed>.png
"$ss" --model m.safetensors --model_config m.toml --W 32 --H 32 --steps 2 --prompt x --seed 41 --images_per_prompt 2 \
  --batch_size 2 --outdir f > f.out 2>/dev/null
check sample_default_names 'ls f | grep -Eq "^im_[0-9]{14}_000_41\.png$" && ls f | grep -Eq "^im_[0-9]{14}_001_42\.png$"'
# random seed when none is given: recorded in the chunk
"$ss" "${M[@]}" --prompt x --outdir g > /dev/null 2>&1
check sample_random_seed_recorded 'txt g/im_000001.png | grep -Eq "Seed: [0-9]+, Size: 32x32"'

# ---- prompt files -------------------------------------------------------------------------------------
printf '%s\n' '# samples' 'a cat --w 64 --h 72 --d 3 --s 2 --l 5' '' 'a dog --n ugly --ss k_euler --d 4' > p.txt
"$ss" "${M[@]}" --from_file p.txt --outdir h > h.out 2>&1
rc=$?
check sample_txt_two_images '[ $rc = 0 ] && [ -f h/im_000001.png ] && [ -f h/im_000002.png ] && [ ! -e h/im_000003.png ]'
check sample_txt_line_options '[ "$(txt h/im_000001.png)" = "$(printf "a cat\nSteps: 2, Sampler: DDIM, CFG scale: 5, Seed: 3, Size: 64x72, Model hash: %s, Model: m, Version: sd-sample 0.1.0" "$(sha256sum m.safetensors | cut -c1-10)")" ] && [ "$("$helper" size h/im_000001.png)" = "64 72 rgb" ]'
check sample_txt_negative_sampler 'txt h/im_000002.png | head -2 | tail -1 | grep -qx "Negative prompt: ugly" && txt h/im_000002.png | grep -q "Steps: 3, Sampler: Euler, CFG scale: 7.5, Seed: 4, Size: 32x32"'
printf '[prompt]\nwidth = 64\nsample_steps = 2\nscale = 5\nheight = 72\n[[prompt.subset]]\nprompt = "a cat"\nseed = 3\n' > p.toml
"$ss" "${M[@]}" --from_file p.toml --outdir i > /dev/null 2>&1
check sample_toml_same_as_txt 'cmp -s i/im_000001.png h/im_000001.png'
printf '[{"prompt": "a cat", "width": 64, "height": 72, "seed": 3, "sample_steps": 2, "scale": 5}, "a dog --n ugly --ss k_euler --d 4"]\n' > p.json
"$ss" "${M[@]}" --from_file p.json --outdir j > /dev/null 2>&1
check sample_json_same_as_txt 'cmp -s j/im_000001.png h/im_000001.png && cmp -s j/im_000002.png h/im_000002.png'

# bad prompt files: clear error with the line, exit 1, nothing written
bad() {  # name, file content, expected message part
  printf '%s\n' "$2" > "bad_$1.txt"
  "$ss" "${M[@]}" --from_file "bad_$1.txt" --outdir "bad_$1" > /dev/null 2> "bad_$1.err"
  local rc=$? name=$1 want=$3
  echo "# $1: $(cat "bad_$1.err")"
  check "sample_bad_prompt_$name" '[ $rc = 1 ] && grep -q "$want" "bad_$name.err" && [ ! -e "bad_$name/im_000001.png" ]'
}
bad unknown_option "$(printf 'ok prompt\n# c\na cat --x 3')" "bad_unknown_option.txt:3"
bad bad_number "$(printf 'a cat --w 3x2')" "bad_bad_number.txt:1"
bad size_not_8 "$(printf 'fine\na cat --w 100')" "bad_size_not_8.txt:2"
bad bad_sampler "$(printf 'a cat --ss nosuch')" "bad_bad_sampler.txt:1"
printf '[prompt]\nwidth = 64\n[[prompt.subset]]\nprompt = "x"\nwidth = 64\n' > bad_dup.toml
"$ss" "${M[@]}" --from_file bad_dup.toml --outdir bad_dup > /dev/null 2> bad_dup.err
rc=$?
echo "# dup toml: $(cat bad_dup.err)"
check sample_bad_toml_duplicate_key '[ $rc = 1 ] && grep -q "bad_dup.toml" bad_dup.err'
: > empty.txt
"$ss" "${M[@]}" --from_file empty.txt --outdir em > /dev/null 2> em.err; rc=$?
check sample_empty_prompt_file '[ $rc = 1 ] && grep -q "no prompts" em.err'
"$ss" "${M[@]}" --from_file nosuch.txt --outdir ns > /dev/null 2> ns.err; rc=$?
check sample_missing_prompt_file '[ $rc = 1 ] && grep -q "nosuch.txt" ns.err'

# ---- LoRA ----------------------------------------------------------------------------------------------
L=("${M[@]}" --prompt "a cat" --seed 9 --threads 1)
"$ss" "${L[@]}" --outdir l0 > /dev/null 2>&1
"$ss" "${L[@]}" --network_weights l1.safetensors --network_mul 0.5 --outdir l1 > /dev/null 2> l1.err
"$ss" "${L[@]}" --network_weights l1.safetensors l2.safetensors --network_mul 0.5 0 --outdir l2 > /dev/null 2>&1
"$ss" "${L[@]}" --network_weights l1.safetensors --network_weights l2.safetensors --network_mul 0.5 --outdir l3 > /dev/null 2>&1
"$ss" "${L[@]}" --network_weights l1.safetensors --network_mul 0 --outdir l4 > /dev/null 2>&1
check sample_lora_changes_image '[ "$("$helper" maxdiff l0/im_000001.png l1/im_000001.png)" -gt 0 ]'
check sample_lora_merged_message 'grep -q "l1.safetensors: merged .* modules (.* text encoder, .* UNet) with multiplier 0.5" l1.err'
check sample_lora_mul_0_is_base '[ "$("$helper" maxdiff l0/im_000001.png l4/im_000001.png)" = 0 ] && [ "$("$helper" maxdiff l1/im_000001.png l2/im_000001.png)" = 0 ]'
# merging = the kohya forward hooks (W x + mul * alpha/rank * up(down(x))), up to float rounding
"$helper" gen-hooked m.safetensors m.toml l1.safetensors 0.5 9 hooked.png
d=$("$helper" maxdiff l1/im_000001.png hooked.png)
echo "# merged vs hooked LoRA: max pixel difference $d"
check sample_lora_merge_equals_hooks '[ "$d" -ge 0 ] && [ "$d" -le 1 ]'
check sample_lora_two_files '[ "$("$helper" maxdiff l1/im_000001.png l3/im_000001.png)" -gt 0 ]'
h1=$(/usr/bin/python3 -c 'import sys,struct,hashlib; b=open(sys.argv[1],"rb").read(); n=struct.unpack("<Q",b[:8])[0]; print(hashlib.sha256(b[8+n:]).hexdigest()[:12])' l1.safetensors 2>/dev/null)
h2=$(/usr/bin/python3 -c 'import sys,struct,hashlib; b=open(sys.argv[1],"rb").read(); n=struct.unpack("<Q",b[:8])[0]; print(hashlib.sha256(b[8+n:]).hexdigest()[:12])' l2.safetensors 2>/dev/null)
check sample_lora_hashes_chunk 'txt l3/im_000001.png | grep -q "Lora hashes: \"l1: $h1, l2: $h2\", Version"'
"$ss" "${L[@]}" --network_weights m.safetensors --outdir lbad > /dev/null 2> lbad.err; rc=$?
check sample_lora_not_a_lora '[ $rc = 1 ] && grep -q "m.safetensors" lbad.err'
"$ss" "${L[@]}" --network_weights l1.safetensors --network_mul 1 2 --outdir lbad2 > /dev/null 2> lbad2.err; rc=$?
check sample_lora_too_many_muls '[ $rc = 2 ] && grep -q "network_mul" lbad2.err'
"$ss" "${L[@]}" --network_module lycoris.locon --network_weights l1.safetensors --outdir lbad3 > /dev/null 2> lbad3.err; rc=$?
check sample_lora_other_module_refused '[ $rc = 2 ] && grep -q "lycoris.locon" lbad3.err'

# ---- textual inversion ---------------------------------------------------------------------------------
"$helper" make-ti m.safetensors fluffycat.safetensors emb_params "fluffy cat" && "$helper" make-ti m.safetensors xl.safetensors clip_l "cat" \
  || nok sample_make_ti
"$ss" "${L[@]}" --prompt "a photo of a fluffy cat" --outdir ti0 > /dev/null 2>&1
"$ss" "${L[@]}" --prompt "a photo of a fluffycat" --textual_inversion_embeddings fluffycat.safetensors --outdir ti1 > /dev/null 2> ti1.err
"$ss" "${L[@]}" --prompt "a photo of a fluffycat" --outdir ti2 > /dev/null 2>&1
check sample_ti_token_is_its_vectors '[ "$("$helper" maxdiff ti0/im_000001.png ti1/im_000001.png)" = 0 ] && grep -q "token .fluffycat. = 2 vectors" ti1.err'
check sample_ti_without_file_differs '[ "$("$helper" maxdiff ti0/im_000001.png ti2/im_000001.png)" -gt 0 ]'
check sample_ti_hashes_chunk 'txt ti1/im_000001.png | grep -q "TI hashes: \"fluffycat: $(sha256sum fluffycat.safetensors | cut -c1-12)\""'
"$ss" "${L[@]}" --prompt "(fluffycat:1.3), [fluffycat]" --textual_inversion_embeddings fluffycat.safetensors --outdir ti3 > /dev/null 2>&1
check sample_ti_in_weighted_prompt '[ -f ti3/im_000001.png ]'
"$ss" "${L[@]}" --textual_inversion_embeddings xl.safetensors --outdir ti4 > /dev/null 2> ti4.err; rc=$?
check sample_ti_sdxl_refused '[ $rc = 1 ] && grep -q "xl.safetensors: an SDXL embedding" ti4.err'
"$ss" "${L[@]}" --textual_inversion_embeddings l1.safetensors --outdir ti5 > /dev/null 2> ti5.err; rc=$?
check sample_ti_not_an_embedding '[ $rc = 1 ] && grep -q "l1.safetensors: no textual-inversion embedding" ti5.err'

# ---- model options ----------------------------------------------------------------------------------------
"$ss" "${L[@]}" --clip_skip 2 --outdir cs > /dev/null 2>&1
check sample_clip_skip 'txt cs/im_000001.png | grep -q ", Clip skip: 2," && [ "$("$helper" maxdiff l0/im_000001.png cs/im_000001.png)" -gt 0 ]'
"$ss" "${L[@]}" --v_parameterization --outdir vp > /dev/null 2>&1
check sample_v_parameterization '[ -f vp/im_000001.png ] && [ "$("$helper" maxdiff l0/im_000001.png vp/im_000001.png)" -gt 0 ]'
"$ss" "${L[@]}" --vae_tiling --vae_tile_size 64 --outdir t64 > /dev/null 2>&1
check sample_vae_tile_covering_is_untiled 'cmp -s l0/im_000001.png t64/im_000001.png'
"$ss" "${L[@]}" --vae_tiling --vae_tile_size 8 --outdir t8 > /dev/null 2>&1
d=$("$helper" maxdiff l0/im_000001.png t8/im_000001.png)
echo "# tiles of 8 latent pixels vs untiled: max pixel difference $d"
check sample_vae_tiled_runs '[ -f t8/im_000001.png ] && [ "$d" -gt 0 ]'
long=$(for i in $(seq 1 100); do printf 'word%d, ' "$i"; done)
"$ss" "${M[@]}" --prompt "$long" --seed 1 --outdir long > /dev/null 2> long.err; rc=$?
check sample_long_prompt '[ $rc = 0 ] && [ -f long/im_000001.png ]'
"$ss" "${M[@]}" --prompt "ein Bild, café ☕" --seed 1 --outdir uni > /dev/null 2>&1
check sample_unicode_prompt_itxt 'txt uni/im_000001.png | head -1 | grep -qx "ein Bild, café ☕"'
"$ss" "${M[@]}" --prompt "x" --seed 1 --no_metadata --outdir nm > /dev/null 2>&1
check sample_no_metadata '[ -f nm/im_000001.png ] && ! txt nm/im_000001.png > /dev/null 2>&1'
# every sampler from the command line
good=1
for s in ddim pndm lms euler euler_a heun dpm_2 dpm_2_a dpmsolver dpmsolver++ dpmsingle k_dpm_2_a; do
  "$ss" --model m.safetensors --model_config m.toml --W 16 --H 16 --steps 4 --prompt x --seed 1 --sampler "$s" \
    --outdir "s_$s" --sequential_file_name --threads 1 > /dev/null 2>&1 || { good=0; echo "# sampler $s failed"; }
done
check sample_every_sampler '[ $good = 1 ]'

# ---- SD2 (OpenCLIP text encoder, pad "!", v-prediction from the config) from a Diffusers folder + --vae --
if "$helper" make-sd2 sd2 sd2.toml; then
  S2=(--model sd2 --model_config sd2.toml --vae "$SD_ROOT/tests/data/golden/vae/golden_vae_a.safetensors" --W 32 --H 32
      --steps 3 --seed 3 --sequential_file_name)
  "$ss" "${S2[@]}" --prompt "a cat --n dog" --sampler euler --threads 1 --outdir v2a > /dev/null 2> v2a.err; rc=$?
  "$ss" "${S2[@]}" --prompt "a cat --n dog" --sampler euler --threads 2 --outdir v2b > /dev/null 2>&1
  check sample_sd2_runs '[ $rc = 0 ] && [ "$("$helper" size v2a/im_000001.png)" = "32 32 rgb" ]'
  check sample_sd2_threads_same_bytes 'cmp -s v2a/im_000001.png v2b/im_000001.png'
  # a prompt of two chunks whose second chunk starts with "!" (the reference's v2 EOS rule)
  long2="$(for i in $(seq 1 75); do printf 'a '; done)! b"
  "$ss" "${S2[@]}" --prompt "$long2" --threads 1 --outdir v2c > /dev/null 2> v2c.err; rc=$?
  check sample_sd2_long_prompt_bang '[ $rc = 0 ] && [ -f v2c/im_000001.png ]'
else
  nok sample_make_sd2
fi

# ---- SIGTERM / SIGINT: stop after the current UNet call, complete files only, 143 / 130 -----------------
for sig in TERM INT; do
  rm -rf "sig$sig"
  "$ss" "${M[@]}" --prompt x --seed 1 --images_per_prompt 400 --outdir "sig$sig" > "sig$sig.out" 2> "sig$sig.err" &
  pid=$!
  for _ in $(seq 1 600); do [ -s "sig$sig.out" ] && break; sleep 0.05; done
  kill -s "$sig" "$pid"
  wait "$pid"; rc=$?
  want=$([ "$sig" = TERM ] && echo 143 || echo 130)
  good=1
  for f in $(cat "sig$sig.out"); do [ "$("$helper" size "$f")" = "32 32 rgb" ] || good=0; done
  n=$(ls "sig$sig" | wc -l)
  echo "# SIG$sig: exit $rc, $n files, $(wc -l < "sig$sig.out") listed"
  check "sample_sig${sig}_exit_and_complete_files" '[ $rc = $want ] && [ $good = 1 ] && [ "$n" -ge 1 ] && [ "$n" -lt 400 ] && [ "$n" = "$(wc -l < "sig$sig.out")" ] && grep -q "interrupted" "sig$sig.err"'
done

# ---- usage errors and refusals -------------------------------------------------------------------------
"$ss" --prompt x --outdir u > /dev/null 2> u1.err; rc=$?;                     check sample_usage_no_model '[ $rc = 2 ] && grep -q "model" u1.err'
"$ss" "${M[@]}" --outdir u > /dev/null 2> u2.err; rc=$?;                       check sample_usage_no_prompt '[ $rc = 2 ] && grep -q "prompt" u2.err'
"$ss" "${M[@]}" --prompt x --from_file p.txt --outdir u > /dev/null 2>&1; rc=$?; check sample_usage_both_prompts '[ $rc = 2 ]'
"$ss" "${M[@]}" --prompt x --sampler nosuch --outdir u > /dev/null 2> u3.err; rc=$?; check sample_usage_bad_sampler '[ $rc = 2 ] && grep -q "nosuch" u3.err'
"$ss" "${M[@]}" --prompt x --W 100 --outdir u > /dev/null 2> u4.err; rc=$?;   check sample_usage_size_not_8 '[ $rc = 2 ] && grep -q "multiples of 8" u4.err'
"$ss" "${M[@]}" --prompt "x --w 3x" --outdir u > /dev/null 2> u5.err; rc=$?;  check sample_usage_bad_prompt_option '[ $rc = 2 ] && grep -q "\-\-prompt" u5.err'
"$ss" --model nosuch.safetensors --prompt x --outdir u > /dev/null 2> u7.err; rc=$?; check sample_missing_model '[ $rc = 1 ] && grep -q "nosuch.safetensors" u7.err'
"$ss" --model m.safetensors --prompt x --outdir u > /dev/null 2> u8.err; rc=$?; check sample_tiny_needs_config '[ $rc = 1 ] && grep -q "model_config" u8.err'
# --device: syntax checked first (exit 2); cuda without a CUDA build or without a GPU is a clear fatal error
"$ss" "${M[@]}" --prompt x --device gpu --outdir u > /dev/null 2> d1.err; rc=$?; check sample_device_bad_syntax '[ $rc = 2 ] && grep -q "gpu" d1.err'
"$ss" "${M[@]}" --prompt x --seed 1 --device cuda:0 --outdir dcu > /dev/null 2> d3.err; rc=$?
if [ $rc = 0 ]; then   # a GPU: the image is close to the CPU's (same seed; not bit-identical)
  "$ss" "${M[@]}" --prompt x --seed 1 --outdir dcpu > /dev/null 2>&1
  check sample_device_cuda_close_to_cpu '[ "$("$helper" maxdiff dcu/im_000001.png dcpu/im_000001.png)" -le 8 ]'
  # a textual-inversion token on the GPU is its vectors there too, and close to the CPU's image
  "$ss" "${M[@]}" --prompt "a photo of a fluffycat" --seed 1 --device cuda --textual_inversion_embeddings fluffycat.safetensors \
    --outdir dcuti > /dev/null 2> d4.err
  "$ss" "${M[@]}" --prompt "a photo of a fluffy cat" --seed 1 --device cuda --outdir dcuti0 > /dev/null 2>&1
  "$ss" "${M[@]}" --prompt "a photo of a fluffycat" --seed 1 --textual_inversion_embeddings fluffycat.safetensors \
    --outdir dcputi > /dev/null 2>&1
  check sample_device_cuda_ti '[ -f dcuti/im_000001.png ] && [ "$("$helper" maxdiff dcuti/im_000001.png dcuti0/im_000001.png)" = 0 ] && [ "$("$helper" maxdiff dcuti/im_000001.png dcputi/im_000001.png)" -le 8 ]'
  if [ -n "${SD_FAKE_CUDA:-}" ]; then   # a 1 MiB fake device: stopped before sampling, with the numbers
    SD_FAKE_CUDA_MIB=1 "$ss" "${M[@]}" --prompt x --seed 1 --device cuda --outdir dsm > /dev/null 2> dsm.err; rc=$?
    check sample_device_cuda_fail_fast '[ $rc = 1 ] && grep -q "needs about .* GiB of GPU memory (weights" dsm.err && grep -q "lower --batch_size" dsm.err && [ ! -e dsm/im_000001.png ]'
  fi
else
  check sample_device_cuda_unavailable '[ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" d3.err'
fi
printf 'x --cn img.png\n' > cn.txt
"$ss" "${M[@]}" --from_file cn.txt --outdir u > /dev/null 2> u9.err; rc=$?;    check sample_controlnet_refused '[ $rc = 1 ] && grep -q "cn.txt:1" u9.err'
check sample_no_temp_files_left '[ -z "$(find . -name "*.tmp*" -o -name ".*tmp*" | head -1)" ]'
"$ss" --help > help.txt 2>&1
hgood=1
for o in model vae model_config v2 v_parameterization network_weights network_mul prompt from_file negative_prompt width \
  height steps scale seed sampler batch_size images_per_prompt clip_skip vae_tiling vae_tile_size outdir \
  sequential_file_name no_metadata threads device; do grep -q -- "--$o" help.txt || { hgood=0; echo "# --help lacks --$o"; }; done
check sample_help_lists_options '[ $hgood = 1 ]'
