#!/usr/bin/env bash
# sd-train without --cache_latents (kohya's default): images are loaded, cropped, augmented and encoded by
# the VAE at every step with a fresh posterior sample. One image, one step: the same tensors as
# --cache_latents (the same encoder and, for sample 0 at step 0, the same noise stream); more steps
# differ (fresh noise) but stay close; runs are reproducible; flip_aug / color_aug / random_crop
# (command line, dataset subsets, records) train and change the result; ss_* metadata follows;
# stop + --resume equals a straight run (byte-identical LoRA); bucketing disabled takes W×H images
# as they are (larger ones need random_crop, as the reference); alpha masks are cropped and flipped
# with the image (a flipped RGBA image trains exactly as its mirror image); refusals: --cache_latents
# with color_aug / random_crop (the reference's assertion, exit 2), a record with a latent file and
# random_crop (file:line, exit 2), face_crop_aug_range with --cache_latents or a malformed range (exit 2).
# face_crop_aug_range: bucketing disabled, files named *_CX_CY_W_H: cropped around the face (images larger
# than the resolution train without random_crop), reproducible and resumable, ss_face_crop_aug_range set;
# with bucketing a warning says it has no effect (as the reference ignores it).
. "$(dirname "$0")/lib.sh"
t_init train_nocache
bin="$root/$build/bin/sd-train"
helper="$root/$build/tests/unit/test_encode_latents"
t_need "$bin"
t_tiny_build --build
cd "$tmp"
./tiny_model model tinyv.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null ||
  { nok train_nocache_tiny_model; exit 1; }
mkdir -p one/1_sks img/2_sks big/2_sks
./tiny_model images one/1_sks 1 64 64 > /dev/null && ./tiny_model images img/2_sks 3 64 64 > /dev/null &&
  ./tiny_model images big/2_sks 3 80 72 > /dev/null || { nok train_nocache_images; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
D() { "$bin" --method lora --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 \
  --threads 1 --learning_rate 1e-3 --resolution 64 "$@"; }
tensors() { python3 -c 'import struct, sys; b = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(b[8 + struct.unpack("<Q", b[:8])[0]:])' "$1"; }
same() { cmp -s <(tensors "$1") <(tensors "$2"); }
loss() { sed -n "$2p" "$1" | sed 's/.*"loss":\([^,]*\),.*/\1/'; }

# ---- trains and saves; one step of one image = --cache_latents; more steps: fresh noise ----------------------------
D --train_data_dir one --max_train_steps 1 --output_dir a1 2> a1.err; rc=$?
[ $rc = 0 ] && [ -f a1/last.safetensors ] && ok train_nocache_runs || nok train_nocache_runs "rc $rc $(tail -3 a1.err)"
[ "$(grep -c 'image is encoded at every step.*--cache_latents is faster when no random augmentation' a1.err)" = 1 ] &&
  ok train_nocache_info_line || nok train_nocache_info_line "$(cat a1.err)"
D --train_data_dir one --max_train_steps 1 --output_dir c1 --cache_latents 2> c1.err
same a1/last.safetensors c1/last.safetensors && ok train_nocache_step0_equals_cached || nok train_nocache_step0_equals_cached
[ "$(t_meta a1/last.safetensors ss_cache_latents)" = False ] && [ "$(t_meta c1/last.safetensors ss_cache_latents)" = True ] &&
  ok train_nocache_meta_cache_latents || nok train_nocache_meta_cache_latents
D --train_data_dir one --max_train_steps 4 --output_dir a4 --log_jsonl a4.log 2> /dev/null &&
  D --train_data_dir one --max_train_steps 4 --output_dir c4 --cache_latents --log_jsonl c4.log 2> /dev/null
l1=$(loss a4.log 1) l1c=$(loss c4.log 1) l3=$(loss a4.log 3) l3c=$(loss c4.log 3)
if [ "$l1" = "$l1c" ] && [ "$l3" != "$l3c" ] && ! same a4/last.safetensors c4/last.safetensors &&
   python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if abs(a - b) < 0.02 * abs(b) else 1)" "$l3" "$l3c"; then
  ok train_nocache_fresh_noise_close
else nok train_nocache_fresh_noise_close "step 1: $l1 / $l1c, step 3: $l3 / $l3c"; fi
# reproducible
D --train_data_dir one --max_train_steps 4 --output_dir a4b 2> /dev/null
cmp -s a4/last.safetensors a4b/last.safetensors && ok train_nocache_reproducible || nok train_nocache_reproducible

# ---- augmentations: each changes the run, metadata says so; thread count does not matter ------------------------------
A() { D --train_data_dir big --enable_bucket --min_bucket_reso 64 --max_bucket_reso 128 --max_train_steps 6 "$@"; }
A --output_dir g0 2> g0.err; rc0=$?
A --output_dir gf --flip_aug 2> /dev/null; rcf=$?
A --output_dir gc --color_aug 2> /dev/null; rcc=$?
A --output_dir gr --random_crop 2> /dev/null; rcr=$?
A --output_dir ga --flip_aug --color_aug --random_crop 2> ga.err; rca=$?
A --output_dir ga2 --flip_aug --color_aug --random_crop --threads 2 2> /dev/null
if [ "$rc0$rcf$rcc$rcr$rca" = 00000 ] && ! same g0/last.safetensors gf/last.safetensors &&
   ! same g0/last.safetensors gc/last.safetensors && ! same g0/last.safetensors gr/last.safetensors &&
   ! same gf/last.safetensors ga/last.safetensors; then ok train_nocache_augmentations_change
else nok train_nocache_augmentations_change "rc $rc0$rcf$rcc$rcr$rca $(tail -2 ga.err)"; fi
cmp -s ga/last.safetensors ga2/last.safetensors && ok train_nocache_threads_same_bytes || nok train_nocache_threads_same_bytes
[ "$(t_meta ga/last.safetensors ss_color_aug)" = True ] && [ "$(t_meta ga/last.safetensors ss_random_crop)" = True ] &&
  [ "$(t_meta g0/last.safetensors ss_color_aug)" = False ] && [ "$(t_meta g0/last.safetensors ss_random_crop)" = False ] &&
  ok train_nocache_meta_augment || nok train_nocache_meta_augment
# the same from a dataset config subset (ss_datasets records them); a record's keys as the subset's
printf '[general]\nresolution = 64\nenable_bucket = true\nmin_bucket_reso = 64\nmax_bucket_reso = 128\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "big/2_sks"\nnum_repeats = 2\nclass_tokens = "sks"\nflip_aug = true\ncolor_aug = true\nrandom_crop = true\n' > aug.toml
D --dataset_config aug.toml --max_train_steps 6 --output_dir gd 2> gd.err; rc=$?
sub=$(t_meta gd/last.safetensors ss_datasets)
[ $rc = 0 ] && same ga/last.safetensors gd/last.safetensors && echo "$sub" | grep -q '"color_aug": true, "flip_aug": true, "random_crop": true' &&
  ok train_nocache_dataset_config || nok train_nocache_dataset_config "rc $rc $(tail -2 gd.err) $sub"
for f in big/2_sks/*.png; do
  echo "{\"image\":\"$f\",\"caption\":\"sks\",\"num_repeats\":2,\"flip_aug\":true,\"color_aug\":true,\"random_crop\":true}"
done > aug.jsonl
D --data aug.jsonl --enable_bucket --min_bucket_reso 64 --max_bucket_reso 128 --max_train_steps 6 --output_dir gj 2> gj.err; rc=$?
[ $rc = 0 ] && [ -f gj/last.safetensors ] && ! same g0/last.safetensors gj/last.safetensors &&
  ok train_nocache_record_keys || nok train_nocache_record_keys "rc $rc $(tail -2 gj.err)"

# ---- validation samples: encoded once, unaugmented: every pass the same (weights all but frozen: lr 1e-30) ----------
A --flip_aug --color_aug --random_crop --validation_split 0.34 --validation_seed 1 --validate_every_n_steps 1 \
  --learning_rate 0 --unet_lr 1e-30 --network_train_unet_only --max_train_steps 4 --output_dir v0 2> v0.err; rc=$?
vals=$(sed -n 's/.*validation at step [0-9]*: val_avg_loss \([^ ]*\) .*/\1/p' v0.err | sort -u)
[ $rc = 0 ] && [ "$(sed -n 's/.*validation at step \([0-9]*\):.*/\1/p' v0.err | wc -l)" = 4 ] && [ "$(echo "$vals" | wc -l)" = 1 ] &&
  ok train_nocache_validation_same_each_pass || nok train_nocache_validation_same_each_pass "rc $rc $(grep -i valid v0.err)"

# ---- stop + resume = straight run --------------------------------------------------------------------------------------
R() { A --flip_aug --color_aug --random_crop --max_train_steps 8 "$@"; }
R --output_dir s0 --save_every_n_steps 4 --save_state 2> s0.err; rc=$?
st=$(ls -d s0/*step00000004-state 2> /dev/null | head -1)
if [ $rc = 0 ] && [ -n "$st" ]; then
  R --output_dir s1 --resume "$st" 2> s1.err
  cmp -s s0/last.safetensors s1/last.safetensors && ok train_nocache_resume_same_bytes ||
    nok train_nocache_resume_same_bytes "$(tail -2 s1.err)"
else nok train_nocache_resume_same_bytes "rc $rc, no state: $(ls s0) $(tail -2 s0.err)"; fi

# ---- bucketing disabled: images as they are (W×H), larger ones with random_crop only ---------------------------------
D --train_data_dir img --max_train_steps 2 --output_dir n0 2> n0.err; rc=$?
[ $rc = 0 ] && ok train_nocache_nobucket_exact || nok train_nocache_nobucket_exact "rc $rc $(tail -2 n0.err)"
D --train_data_dir big --max_train_steps 2 --output_dir n1 2> n1.err; rc=$?
[ $rc = 1 ] && grep -q 'img000.png: image too large (80x72), but cropping and bucketing are disabled' n1.err && [ ! -e n1/last.safetensors ] &&
  ok train_nocache_nobucket_too_large || nok train_nocache_nobucket_too_large "rc $rc $(cat n1.err)"
D --train_data_dir big --max_train_steps 2 --output_dir n2 --random_crop 2> n2.err; rc=$?
[ $rc = 0 ] && [ -f n2/last.safetensors ] && ok train_nocache_nobucket_random_crop || nok train_nocache_nobucket_random_crop "rc $rc $(tail -2 n2.err)"
D --train_data_dir img --resolution 72 --max_train_steps 2 --output_dir n3 2> n3.err; rc=$?
[ $rc = 1 ] && grep -q 'image size is small' n3.err && ok train_nocache_nobucket_small || nok train_nocache_nobucket_small "rc $rc $(cat n3.err)"

# ---- alpha masks: cropped/flipped with the image --------------------------------------------------------------------
if [ -x "$helper" ] && /usr/bin/python3 -c 'import PIL' 2> /dev/null; then
  mkdir -p m/1_sks mm/1_sks
  "$helper" --make-image m/1_sks/a.png 64 64 2 rgba > /dev/null &&
    /usr/bin/python3 -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).transpose(Image.FLIP_LEFT_RIGHT).save(sys.argv[2])' \
      m/1_sks/a.png mm/1_sks/a.png && echo sks > m/1_sks/a.caption && echo sks > mm/1_sks/a.caption
  M() { D --max_train_steps 1 --alpha_mask --masked_loss --caption_extension .caption "$@"; }
  M --train_data_dir m --output_dir m0 2> m0.err && M --train_data_dir m --output_dir m0c --cache_latents 2> /dev/null &&
    D --train_data_dir m --max_train_steps 1 --caption_extension .caption --output_dir m0u 2> /dev/null; rc=$?
  [ $rc = 0 ] && same m0/last.safetensors m0c/last.safetensors && ! same m0/last.safetensors m0u/last.safetensors &&
    ok train_nocache_mask_equals_cached || nok train_nocache_mask_equals_cached "rc $rc $(tail -2 m0.err)"
  # a seed whose first step flips (flip_aug changes the run), then: flipped image + mask = the mirror image's
  fs=
  for s in 1 2 3 4 5 6 7 8; do
    M --train_data_dir m --seed $s --output_dir "mf$s" --flip_aug 2> /dev/null && M --train_data_dir m --seed $s --output_dir "mn$s" 2> /dev/null
    if ! same "mf$s/last.safetensors" "mn$s/last.safetensors"; then fs=$s; break; fi
  done
  if [ -n "$fs" ]; then
    M --train_data_dir mm --seed $fs --output_dir mmir 2> /dev/null
    same "mf$fs/last.safetensors" mmir/last.safetensors && ok train_nocache_mask_flipped || nok train_nocache_mask_flipped "seed $fs"
  else nok train_nocache_mask_flipped "flip_aug never flipped the first step"; fi
else
  echo "ok train_nocache_mask_equals_cached # SKIP no helper or /usr/bin/python3 with PIL"
  echo "ok train_nocache_mask_flipped # SKIP no helper or /usr/bin/python3 with PIL"
fi

# ---- --device cuda (the fake device of a build without CUDA, and the emulated CUDA build): the image goes through
# GPU buffers to the VAE there, at every step and with --cache_latents (the VAE moved first, the network then built
# on the host): the CPU's LoRA within 1e-4 of its largest weight -------------------------------------------------------
for mode in fake emu; do
  if [ $mode = fake ]; then
    dbin=$bin; envs=SD_FAKE_CUDA=1
    grep -aq 'fake CUDA device' "$dbin" || { echo "ok train_nocache_device_cuda_$mode # SKIP a CUDA build"; continue; }
  else
    dbin="$root/$build/emu/bin/sd-train"; envs=SD_NONE=1
    [ -x "$dbin" ] || { echo "ok train_nocache_device_cuda_$mode # SKIP no $build/emu/bin (make emu-bin)"; continue; }
  fi
  good=1 why=
  for x in step cache; do
    opt=; [ $x = cache ] && opt=--cache_latents
    D --train_data_dir img --max_train_steps 2 --output_dir dc_$x $opt 2> /dev/null
    env $envs "$dbin" --method lora --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 \
      --threads 1 --learning_rate 1e-3 --resolution 64 --train_data_dir img --max_train_steps 2 --device cuda $opt \
      --output_dir dv_${mode}_$x 2> dv_${mode}_$x.err; rc=$?
    r=$([ $rc = 0 ] && t_wdiff dc_$x/last.safetensors dv_${mode}_$x/last.safetensors 2>&1); set -- $r
    [ $rc = 0 ] && python3 -c "import sys; sys.exit(0 if float('$1') <= 1e-4 * float('$2') else 1)" 2> /dev/null ||
      { good=0; why="$why $x: rc $rc $r $(tail -1 dv_${mode}_$x.err)"; }
  done
  [ $good = 1 ] && ok train_nocache_device_cuda_$mode || nok train_nocache_device_cuda_$mode "$why"
done

# ---- refusals --------------------------------------------------------------------------------------------------------
D --train_data_dir img --max_train_steps 1 --output_dir x1 --cache_latents --color_aug 2> x1.err; rc=$?
[ $rc = 2 ] && grep -q '^sd-train: --color_aug: when caching latents, either color_aug or random_crop cannot be used' x1.err &&
  [ ! -e x1 ] && ok train_nocache_refuse_cache_color_aug || nok train_nocache_refuse_cache_color_aug "rc $rc $(cat x1.err)"
D --train_data_dir img --max_train_steps 1 --output_dir x2 --cache_latents_to_disk --random_crop 2> x2.err; rc=$?
[ $rc = 2 ] && grep -q 'random_crop: when caching latents' x2.err && [ ! -e x2 ] &&
  ok train_nocache_refuse_cache_disk_random_crop || nok train_nocache_refuse_cache_disk_random_crop "rc $rc $(cat x2.err)"
./tiny_model latents "$tmp" 2 4 8 8 > lat.jsonl
awk 'NR == 2 { sub(/}$/, ",\"random_crop\":true}") } { print }' lat.jsonl > lat_rc.jsonl
D --data lat_rc.jsonl --max_train_steps 1 --output_dir x3 2> x3.err; rc=$?
[ $rc = 2 ] && grep -q "^sd-train: lat_rc.jsonl:2: random_crop = true: the record has a 'latents' file, which is fixed" x3.err &&
  [ ! -e x3 ] && ok train_nocache_refuse_latents_random_crop || nok train_nocache_refuse_latents_random_crop "rc $rc $(cat x3.err)"
D --train_data_dir img --max_train_steps 1 --output_dir x4 --face_crop_aug_range 2.0,4.0 --cache_latents 2> x4.err; rc=$?
[ $rc = 2 ] && grep -q '^sd-train: --face_crop_aug_range: the face crop applies to images encoded at every step' x4.err &&
  [ ! -e x4 ] && ok train_nocache_refuse_face_crop_cached || nok train_nocache_refuse_face_crop_cached "rc $rc $(cat x4.err)"
D --train_data_dir img --max_train_steps 1 --output_dir x5 --face_crop_aug_range 4,2 2> x5.err; rc=$?
[ $rc = 2 ] && grep -q 'face_crop_aug_range must be two floats' x5.err && ok train_nocache_refuse_face_crop_range ||
  nok train_nocache_refuse_face_crop_range "rc $rc $(cat x5.err)"

# ---- face_crop_aug_range ------------------------------------------------------------------------------------------------
mkdir -p face/2_sks
for i in 0 1 2; do
  mv big/2_sks/img00$i.png "face/2_sks/p${i}_4${i}_36_60_60.png" && cp big/2_sks/img00$i.caption "face/2_sks/p${i}_4${i}_36_60_60.caption"
done
F() { D --train_data_dir face --max_train_steps 6 --face_crop_aug_range 1.0,2.0 "$@"; }
F --output_dir fc0 2> fc0.err; rc=$?
F --output_dir fc1 2> /dev/null
F --output_dir fc2 --random_crop 2> /dev/null; rc2=$?
[ $rc = 0 ] && [ $rc2 = 0 ] && grep -q 'face_crop_aug_range: 3 images cropped around the face' fc0.err &&
  cmp -s fc0/last.safetensors fc1/last.safetensors && ! same fc0/last.safetensors fc2/last.safetensors &&
  [ "$(t_meta fc0/last.safetensors ss_face_crop_aug_range)" = '(1.0, 2.0)' ] && ok train_nocache_face_crop ||
  nok train_nocache_face_crop "rc $rc/$rc2 $(tail -3 fc0.err) $(t_meta fc0/last.safetensors ss_face_crop_aug_range)"
D --train_data_dir face --max_train_steps 2 --output_dir fc3 2> fc3.err; rc=$?
[ $rc = 1 ] && grep -q 'image too large' fc3.err && ok train_nocache_face_crop_needed || nok train_nocache_face_crop_needed "rc $rc"
F --output_dir fr0 --max_train_steps 8 --save_every_n_steps 4 --save_state 2> /dev/null
st=$(ls -d fr0/*step00000004-state 2> /dev/null | head -1)
if [ -n "$st" ]; then
  F --output_dir fr1 --max_train_steps 8 --resume "$st" 2> /dev/null
  cmp -s fr0/last.safetensors fr1/last.safetensors && ok train_nocache_face_crop_resume || nok train_nocache_face_crop_resume
else nok train_nocache_face_crop_resume "no state"; fi
F --output_dir fb --enable_bucket --min_bucket_reso 64 --max_bucket_reso 128 2> fb.err; rc=$?
[ $rc = 0 ] && grep -q 'face_crop_aug_range has no effect on 3 images with bucketing enabled' fb.err &&
  ok train_nocache_face_crop_bucket_warns || nok train_nocache_face_crop_bucket_warns "rc $rc $(cat fb.err)"
