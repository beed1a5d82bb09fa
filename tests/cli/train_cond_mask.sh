#!/usr/bin/env bash
# sd-train --masked_loss with conditioning images (a dataset config's ControlNet subsets: image_dir +
# conditioning_data_dir, reference-behaviour §1.3.6, §1.11) on a tiny random model. The mask is the
# conditioning image's red channel (green and blue here are its inverse, so using another channel fails):
# an all-white one trains exactly as the unmasked run, an all-black one gives a zero loss at every step,
# a half mask trains byte for byte as the alpha-mask run with the same mask (images encoded at every step,
# flip_aug, --cache_latents, latent files from sd-encode-latents, and 128x128 images resized to the 64x64
# bucket); a 2:1 image with a mask on its left quarter trains with a mask (the reference squeezes the whole
# conditioning image into the bucket; a centre crop would leave nothing); alpha_mask together with a
# conditioning image: the conditioning image wins (warned); the dataset's resize_interpolation (not the
# subset's) resizes the conditioning image; ss_datasets of a ControlNet dataset as
# train_network.py writes it; sd-bucket and sd-encode-latents pass conditioning_image through;
# refusals: a conditioning image of another size (exit 1, naming it, before training), random_crop (exit 2),
# records with conditioning_image without --masked_loss (exit 2).
. "$(dirname "$0")/lib.sh"
t_init train_cond_mask
B="$root/$build/bin"
t_need "$B/sd-train" "$B/sd-encode-latents" "$B/sd-merge-meta" "$B/sd-bucket"
t_tiny_build --build
cd "$tmp"
./tiny_model model tinyv.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null ||
  { nok train_cond_mask_tiny_model; exit 1; }

# images: the same RGB as plain (rgb/), RGBA with the mask as alpha (alpha_*/) and RGB beside a conditioning
# image whose red channel is the mask (img_*/ + cond_*/); masks: half (x < W/2), white, black, quarter (x < W/4)
python3 - <<'PY' || { nok train_cond_mask_images; exit 1; }
import os, struct, zlib
def png(path, w, h, c, px):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = b''.join(b'\0' + bytes(v for x in range(w) for v in px(x, y)) for y in range(h))
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, {3: 2, 4: 6}[c], 0, 0, 0)) +
                chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
masks = {'half': lambda x, y, w: 255 if x < w // 2 else 0, 'white': lambda x, y, w: 255,
         'black': lambda x, y, w: 0, 'quarter': lambda x, y, w: 255 if x < w // 4 else 0}
def rgb(k, x, y): return ((x * 7 + y * 13 + k * 50) % 256, (x * 3 + y * 5 + k * 90) % 256, (x * x + y + k * 20) % 256)
for tag, w, h in (('', 64, 64), ('big', 128, 128), ('wide', 128, 64)):
    for k, stem in enumerate(('a', 'b')):
        png(f'rgb{tag}/{stem}.png', w, h, 3, lambda x, y: rgb(k, x, y))
        open(f'rgb{tag}/{stem}.caption', 'w').write('sks')
        for m, f in masks.items():
            png(f'alpha{tag}_{m}/{stem}.png', w, h, 4, lambda x, y: rgb(k, x, y) + (f(x, y, w),))
            png(f'img{tag}_{m}/{stem}.png', w, h, 3, lambda x, y: rgb(k, x, y))
            open(f'alpha{tag}_{m}/{stem}.caption', 'w').write('sks')
            open(f'img{tag}_{m}/{stem}.caption', 'w').write('sks')
            png(f'cond{tag}_{m}/{stem}.png', w, h, 3, lambda x, y: (f(x, y, w), 255 - f(x, y, w), 37))
png('cond_small/a.png', 32, 32, 3, lambda x, y: (255, 0, 0))
png('cond_small/b.png', 64, 64, 3, lambda x, y: (255, 0, 0))
PY
export SOURCE_DATE_EPOCH=1700000000
T() { "$B/sd-train" --method lora --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --threads 1 --max_train_steps 3 "$@"; }
head_toml() { printf '[general]\nenable_bucket = true\nmin_bucket_reso = 64\nresolution = 64\n%s\n[[datasets]]\n[[datasets.subsets]]\n' "${1:-}"; }
cn() { { head_toml "${3:-}"; printf 'image_dir = "%s"\nconditioning_data_dir = "%s"\n' "$1" "$2"; } > "$4"; }
db() { { head_toml "${2:-}"; printf 'image_dir = "%s"\n%s\n' "$1" "${3:-}"; } > "$4"; }
tensors() { python3 -c 'import struct, sys; b = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(b[8 + struct.unpack("<Q", b[:8])[0]:])' "$1"; }
same() { [ -f "$1" ] && [ -f "$2" ] && cmp -s <(tensors "$1") <(tensors "$2"); }
losses() { sed -n 's/.*"loss":\([-0-9.e]*\).*/\1/p' "$1" | tr '\n' ' '; }

# ---- white: the unmasked bytes; black: zero loss; half: the alpha-mask run -------------------------------
db rgb "" "" plain.toml; cn img_white cond_white "" white.toml; cn img_black cond_black "" black.toml
cn img_half cond_half "" half.toml; db alpha_half "" "alpha_mask = true" ahalf.toml
T --dataset_config plain.toml --output_dir r_plain --log_jsonl r_plain/log.jsonl 2> r_plain.err &&
  T --dataset_config white.toml --masked_loss --output_dir r_white 2> r_white.err; rc=$?
[ $rc = 0 ] && same r_plain/last.safetensors r_white/last.safetensors && grep -q 'masked loss: 2 images with a conditioning image' r_white.err &&
  ok train_cond_mask_white_is_unmasked || nok train_cond_mask_white_is_unmasked "rc $rc $(tail -2 r_white.err)"
T --dataset_config black.toml --masked_loss --output_dir r_black --log_jsonl r_black/log.jsonl 2> r_black.err; rc=$?
lb=$(losses r_black/log.jsonl)
[ $rc = 0 ] && [ "$lb" = "0.0 0.0 0.0 " ] && ok train_cond_mask_black_zero_loss || nok train_cond_mask_black_zero_loss "rc $rc losses '$lb' $(tail -2 r_black.err)"
# the other methods the reference masks with: train_db.py, the TI scripts (SDXL: sdxl_train*.py)
M() { "$B/sd-train" --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 --threads 1 \
  --max_train_steps 2 --dataset_config black.toml --masked_loss "$@"; }
M --method db --learning_rate 1e-3 --output_dir r_bdb --log_jsonl r_bdb/log.jsonl 2> r_bdb.err &&
  M --method ti --token_string zqtok --init_word sks --use_object_template --learning_rate 1e-2 --output_dir r_bti \
    --log_jsonl r_bti/log.jsonl 2> r_bti.err; rc=$?
lb=$(losses r_bdb/log.jsonl; losses r_bti/log.jsonl)
[ $rc = 0 ] && [ "$lb" = "0.0 0.0 0.0 0.0 " ] && ok train_cond_mask_black_db_ti || nok train_cond_mask_black_db_ti "rc $rc losses '$lb' $(tail -n 2 r_bti.err)"
T --dataset_config half.toml --masked_loss --output_dir r_half --log_jsonl r_half/log.jsonl 2> r_half.err &&
  T --dataset_config ahalf.toml --masked_loss --output_dir r_ahalf --log_jsonl r_ahalf/log.jsonl 2> r_ahalf.err; rc=$?
l1=$(losses r_half/log.jsonl); l2=$(losses r_ahalf/log.jsonl); l0=$(losses r_plain/log.jsonl)
[ $rc = 0 ] && [ -n "$l1" ] && [ "$l1" = "$l2" ] && [ "$l1" != "$l0" ] && same r_half/last.safetensors r_ahalf/last.safetensors &&
  ! same r_half/last.safetensors r_plain/last.safetensors && ok train_cond_mask_half_is_alpha ||
  nok train_cond_mask_half_is_alpha "rc $rc losses '$l1' / '$l2' / '$l0' $(tail -2 r_half.err)"

T --dataset_config half.toml --masked_loss --output_dir r_dbg --debug_dataset > dbg.out 2> dbg.err; rc=$?
[ $rc = 0 ] && [ "$(grep -c '^conditioning image size: torch.Size(\[3, 64, 64\])$' dbg.out)" = 3 ] && ok train_cond_mask_debug_dataset ||
  nok train_cond_mask_debug_dataset "rc $rc $(head -8 dbg.out)"

# ---- flip_aug: the mask is mirrored with the sample -----------------------------------------------------
cn img_half cond_half "flip_aug = true" fhalf.toml; db alpha_half "flip_aug = true" "alpha_mask = true" fahalf.toml
T --dataset_config fhalf.toml --masked_loss --output_dir r_fhalf 2> r_fhalf.err &&
  T --dataset_config fahalf.toml --masked_loss --output_dir r_fahalf 2> r_fahalf.err; rc=$?
[ $rc = 0 ] && same r_fhalf/last.safetensors r_fahalf/last.safetensors && ! same r_fhalf/last.safetensors r_half/last.safetensors &&
  ok train_cond_mask_flip || nok train_cond_mask_flip "rc $rc $(tail -2 r_fhalf.err)"

# ---- --cache_latents: the conditioning image is still read at every step --------------------------------
T --dataset_config fhalf.toml --masked_loss --cache_latents --output_dir r_chalf 2> r_chalf.err &&
  T --dataset_config fahalf.toml --masked_loss --cache_latents --output_dir r_cahalf 2> r_cahalf.err; rc=$?
[ $rc = 0 ] && same r_chalf/last.safetensors r_cahalf/last.safetensors && ok train_cond_mask_cache_latents ||
  nok train_cond_mask_cache_latents "rc $rc $(tail -2 r_chalf.err)"

# ---- latent files: sd-merge-meta → sd-bucket → sd-encode-latents keep conditioning_image ------------------
ENC() { "$B/sd-encode-latents" --vae tiny_vae.safetensors --model_config "$root/examples/tiny_model.toml" \
  --latent_mode mean --flip_aug --threads 1 "$@"; }
"$B/sd-merge-meta" --dataset_config fhalf.toml --masked_loss 2> mm.err | "$B/sd-bucket" 2> bk.err > cb.jsonl &&
  ENC --out lat_c < cb.jsonl > cl.jsonl 2> enc.err &&
  "$B/sd-merge-meta" --dataset_config fahalf.toml 2>> mm.err | ENC --out lat_a --alpha_mask > al.jsonl 2>> enc.err; rc=$?
pass=$(jq -r '.conditioning_image // "none"' cl.jsonl cb.jsonl 2> /dev/null | sort -u | tr '\n' ' ')
[ $rc = 0 ] && [ "$pass" = "cond_half/a.png cond_half/b.png " ] && ok train_cond_mask_passthrough ||
  nok train_cond_mask_passthrough "rc $rc '$pass' $(tail -n 2 enc.err mm.err bk.err)"
T --data cl.jsonl --masked_loss --output_dir r_lhalf 2> r_lhalf.err && T --data al.jsonl --masked_loss --output_dir r_lahalf 2> r_lahalf.err; rc=$?
[ $rc = 0 ] && same r_lhalf/last.safetensors r_lahalf/last.safetensors && ok train_cond_mask_latent_files ||
  nok train_cond_mask_latent_files "rc $rc $(tail -n 2 r_lhalf.err r_lahalf.err)"
T --data cl.jsonl --output_dir r_nomask 2> r_nomask.err; rc=$?
[ $rc = 2 ] && grep -q 'conditioning_image cond_half/a.png: .*need --masked_loss' r_nomask.err && [ ! -e r_nomask/last.safetensors ] &&
  ok train_cond_mask_needs_masked_loss || nok train_cond_mask_needs_masked_loss "rc $rc $(tail -2 r_nomask.err)"

# ---- resized to the bucket: 128x128 → 64x64 (INTER_AREA for both) ------------------------------------------
cn imgbig_half condbig_half "" bhalf.toml; db alphabig_half "" "alpha_mask = true" bahalf.toml
T --dataset_config bhalf.toml --masked_loss --output_dir r_bhalf 2> r_bhalf.err &&
  T --dataset_config bahalf.toml --masked_loss --output_dir r_bahalf 2> r_bahalf.err; rc=$?
[ $rc = 0 ] && same r_bhalf/last.safetensors r_bahalf/last.safetensors && ok train_cond_mask_resized ||
  nok train_cond_mask_resized "rc $rc $(tail -2 r_bhalf.err)"
# a 2:1 image in the 64x64 bucket: the image is centre-cropped (columns 32..95), the conditioning image squeezed
# whole (its white columns 0..31 become 0..15): a mask remains, where a cropped one would be all black
cn imgwide_quarter condwide_quarter "" wq.toml; cn imgwide_white condwide_white "" ww.toml
T --dataset_config wq.toml --masked_loss --output_dir r_wq --log_jsonl r_wq/log.jsonl 2> r_wq.err &&
  T --dataset_config ww.toml --masked_loss --output_dir r_ww --log_jsonl r_ww/log.jsonl 2> r_ww.err; rc=$?
q=$(losses r_wq/log.jsonl | cut -d' ' -f1); w=$(losses r_ww/log.jsonl | cut -d' ' -f1)
[ $rc = 0 ] && awk -v q="$q" -v w="$w" 'BEGIN { exit !(q > 0 && q < w / 2) }' && ok train_cond_mask_squeezed ||
  nok train_cond_mask_squeezed "rc $rc first losses '$q' '$w' $(tail -2 r_wq.err)"

# ---- the conditioning image is resized with the dataset's resize_interpolation (ControlNetDataset's own),
# not the subset's: sd-merge-meta writes it as conditioning_resize_interpolation
{ head_toml 'resize_interpolation = "lanczos"'; printf 'image_dir = "imgbig_half"\nconditioning_data_dir = "condbig_half"\n'; } > ril.toml
{ head_toml; printf 'image_dir = "imgbig_half"\nconditioning_data_dir = "condbig_half"\nresize_interpolation = "lanczos"\n'; } > ris.toml
k1=$("$B/sd-merge-meta" --dataset_config ril.toml --masked_loss 2> /dev/null | jq -c '[.resize_interpolation, .conditioning_resize_interpolation]' | sort -u)
k2=$("$B/sd-merge-meta" --dataset_config ris.toml --masked_loss 2> /dev/null | jq -c '[.resize_interpolation, .conditioning_resize_interpolation]' | sort -u)
T --dataset_config ril.toml --masked_loss --output_dir r_ril 2> r_ril.err && T --dataset_config ris.toml --masked_loss --output_dir r_ris 2> r_ris.err; rc=$?
[ $rc = 0 ] && [ "$k1" = '["lanczos","lanczos"]' ] && [ "$k2" = '["lanczos",null]' ] && ! same r_ril/last.safetensors r_ris/last.safetensors &&
  ok train_cond_mask_dataset_interpolation || nok train_cond_mask_dataset_interpolation "rc $rc '$k1' '$k2' $(tail -n 2 r_ris.err)"

# ---- alpha_mask and a conditioning image: the conditioning image is the mask -----------------------------------
cn alpha_black cond_half "" both.toml
T --dataset_config both.toml --masked_loss --alpha_mask --output_dir r_both 2> r_both.err; rc=$?
[ $rc = 0 ] && same r_both/last.safetensors r_half/last.safetensors && grep -q 'alpha_mask has no effect on 2 records' r_both.err &&
  ok train_cond_mask_over_alpha || nok train_cond_mask_over_alpha "rc $rc $(tail -2 r_both.err)"

# ---- ss_datasets: a ControlNetDataset (its fields, not its DreamBooth delegate's) --------------------------------
out=$(python3 - r_half/last.safetensors <<'PY' 2>&1
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; m = json.loads(b[8:8 + n])['__metadata__']
d = json.loads(m['ss_datasets'])
assert len(d) == 1, d
d = d[0]
want = {"is_dreambooth": False, "batch_size_per_device": 1, "num_train_images": 2, "num_reg_images": 0,
        "resolution": [64, 64], "enable_bucket": False, "min_bucket_reso": None, "max_bucket_reso": None,
        "tag_frequency": {}, "bucket_info": None, "resize_interpolation": None, "subsets": []}
assert d == want, d
assert json.loads(m['ss_tag_frequency']) == {} and json.loads(m['ss_dataset_dirs']) == {}, (m['ss_tag_frequency'], m['ss_dataset_dirs'])
print("fine")
PY
)
[ "$out" = fine ] && ok train_cond_mask_metadata || nok train_cond_mask_metadata "$out"

# ---- refusals ------------------------------------------------------------------------------------------
cn img_half cond_small "" small.toml
T --dataset_config small.toml --masked_loss --output_dir r_small 2> r_small.err; rc=$?
[ $rc = 1 ] && grep -q 'cond_small/a.png: the conditioning image is 32x32, its training image img_half/a.png is 64x64' r_small.err &&
  ! grep -q 'steps:' r_small.err && [ ! -e r_small/last.safetensors ] && ok train_cond_mask_size_mismatch ||
  nok train_cond_mask_size_mismatch "rc $rc $(tail -2 r_small.err)"
T --dataset_config half.toml --masked_loss --random_crop --output_dir r_rc 2> r_rc.err; rc=$?
[ $rc = 2 ] && grep -q 'random_crop is not supported with conditioning images' r_rc.err && [ ! -e r_rc/last.safetensors ] &&
  ok train_cond_mask_random_crop_refused || nok train_cond_mask_random_crop_refused "rc $rc $(tail -2 r_rc.err)"
T --dataset_config half.toml --output_dir r_nm 2> r_nm.err; rc=$?
[ $rc = 1 ] && grep -q 'conditioning_data_dir: key not allowed (conditioning images need --masked_loss)' r_nm.err &&
  ok train_cond_mask_config_needs_masked_loss || nok train_cond_mask_config_needs_masked_loss "rc $rc $(tail -2 r_nm.err)"
exit 0
