#!/usr/bin/env bash
# sd-train --masked_loss / --alpha_mask (reference-behaviour §1.11) on a tiny random model: RGBA images
# through sd-encode-latents --alpha_mask train differently from the unmasked run (also with flip_aug);
# --alpha_mask alone applies the masks as --masked_loss does (the reference applies any alpha mask a
# batch has); opaque images (alpha 255: all-ones masks) give exactly the unmasked bytes; --cache_latents
# and --cache_latents_to_disk keep the mask (the npz gets alpha_mask, reused with the same bytes);
# refusals: a record asking for an alpha mask its latent file lacks, fine_tune.py (SD1 --method ft) which
# has no masked loss. (Masks from conditioning images: train_cond_mask.sh.)
. "$(dirname "$0")/lib.sh"
t_init train_masked
B="$root/$build/bin"
helper="$root/$build/tests/unit/test_encode_latents"
t_need "$B/sd-train" "$B/sd-encode-latents" "$helper"
t_tiny_build --build
cd "$tmp"
./tiny_model model tinyv.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null ||
  { nok train_masked_tiny_model; exit 1; }
mkdir -p img/2_sks opq
# RGBA images (alpha ramps 0..255 left to right) and opaque RGB ones
"$helper" --make-image img/2_sks/a.png 64 64 2 rgba && "$helper" --make-image img/2_sks/b.png 64 64 5 rgba &&
  "$helper" --make-image opq/c.png 64 64 3 && "$helper" --make-image opq/d.png 64 64 4 ||
  { nok train_masked_images; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
enc() {  # $1 = image dir, $2 = out dir, rest: options
  local dir=$1 out=$2; shift 2
  for f in "$dir"/*.png; do echo "{\"image\":\"$f\",\"caption\":\"sks\"}"; done |
    "$B/sd-encode-latents" --vae tiny_vae.safetensors --model_config "$root/examples/tiny_model.toml" --resolution 64 --min_bucket_reso 64 \
      --latent_mode mean --threads 1 --out "$out" "$@" 2>> enc.err
}
enc img/2_sks lat_a --alpha_mask > a.jsonl && enc img/2_sks lat_n > n.jsonl &&
  enc img/2_sks lat_af --alpha_mask --flip_aug > af.jsonl && enc img/2_sks lat_nf --flip_aug > nf.jsonl &&
  enc opq lat_o --alpha_mask > o.jsonl && enc opq lat_on > on.jsonl || { nok train_masked_encode "$(tail -3 enc.err)"; exit 1; }
T() { "$B/sd-train" --method lora --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --threads 1 --max_train_steps 3 "$@"; }
loss1() { sed -n 's/.*"loss":\([-0-9.e]*\).*/\1/p' "$1" | head -1; }

# ---- masks change the loss; the same latents without --masked_loss do not ---------------------------------
T --data n.jsonl --output_dir rn --log_jsonl rn/log.jsonl 2> rn.err &&
  T --data a.jsonl --output_dir ra --masked_loss --log_jsonl ra/log.jsonl 2> ra.err; rc=$?
ln=$(loss1 rn/log.jsonl); la=$(loss1 ra/log.jsonl)
if [ $rc = 0 ] && [ -n "$ln" ] && [ -n "$la" ] && [ "$ln" != "$la" ] && ! cmp -s rn/last.safetensors ra/last.safetensors; then
  ok train_masked_loss_differs; echo "# first loss: unmasked $ln, masked $la"
else nok train_masked_loss_differs "rc $rc losses '$ln' '$la' $(tail -2 ra.err)"; fi
# the masked loss is smaller: the ramp's mean is about 1/2 and the loss is not renormalised
awk -v a="$la" -v n="$ln" 'BEGIN { exit !(a < n) }' && ok train_masked_loss_smaller || nok train_masked_loss_smaller "$la vs $ln"

# ---- --alpha_mask alone: the file's masks are applied as with --masked_loss ---------------------------------
T --data a.jsonl --output_dir raa --alpha_mask 2> raa.err
cmp -s ra/last.safetensors raa/last.safetensors && ok train_masked_alpha_mask_alone || nok train_masked_alpha_mask_alone "$(tail -2 raa.err)"

# ---- flip_aug: the mirrored mask goes with the mirrored latents ----------------------------------------------
T --data nf.jsonl --output_dir rnf --flip_aug 2> rnf.err && T --data af.jsonl --output_dir raf --flip_aug --masked_loss 2> raf.err; rc=$?
[ $rc = 0 ] && ! cmp -s rnf/last.safetensors raf/last.safetensors && ok train_masked_flip_aug ||
  nok train_masked_flip_aug "rc $rc $(tail -2 raf.err)"

# ---- opaque images: all-ones masks give exactly the unmasked bytes ----------------------------------------
T --data on.jsonl --output_dir ron 2> ron.err && T --data o.jsonl --output_dir ro --masked_loss 2> ro.err; rc=$?
[ $rc = 0 ] && cmp -s ron/last.safetensors ro/last.safetensors && ok train_masked_opaque_same_bytes ||
  nok train_masked_opaque_same_bytes "rc $rc $(tail -2 ro.err)"
# --masked_loss without any mask: the unmasked run
T --data n.jsonl --output_dir rnm --masked_loss 2> rnm.err
cmp -s rn/last.safetensors rnm/last.safetensors && ok train_masked_no_masks_same_bytes || nok train_masked_no_masks_same_bytes

# ---- every method the reference applies masks with: db (train_db.py), ti, SDXL (sdxl_train_network.py, sdxl_train.py)
M() { "$B/sd-train" --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 --threads 1 \
  --max_train_steps 2 "$@"; }
X() { "$B/sd-train" --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" --seed 3 --threads 1 \
  --max_train_steps 2 "$@"; }
./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null || nok train_masked_tiny_sdxl
for m in "M --method db --learning_rate 1e-3" "M --method ti --token_string zqtok --init_word sks --use_object_template --learning_rate 1e-2" \
         "X --method lora --network_dim 4 --learning_rate 1e-2" "X --method db --learning_rate 1e-3"; do
  name=$(echo "$m" | cut -d' ' -f1,3 | tr ' ' _)
  $m --data n.jsonl --output_dir "m_${name}_n" --output_name o 2> "m_${name}_n.err" &&
    $m --data a.jsonl --output_dir "m_${name}_a" --output_name o --masked_loss 2> "m_${name}_a.err" &&
    $m --data o.jsonl --output_dir "m_${name}_o" --output_name o --masked_loss 2> "m_${name}_o.err" &&
    $m --data on.jsonl --output_dir "m_${name}_on" --output_name o 2> "m_${name}_on.err"; rc=$?
  f=$(cd "m_${name}_n" 2> /dev/null && ls | head -1)
  [ $rc = 0 ] && [ -n "$f" ] && ! cmp -s "m_${name}_n/$f" "m_${name}_a/$f" && cmp -s "m_${name}_o/$f" "m_${name}_on/$f" &&
    ok "train_masked_method_$name" || nok "train_masked_method_$name" "rc $rc $f $(tail -2 "m_${name}_a.err")"
done

# ---- --cache_latents / --cache_latents_to_disk from the images keep the alpha mask (a subset's alpha_mask as --alpha_mask) ----------------------------
D() { T --train_data_dir img --resolution 64 --caption_extension .txt "$@"; }
D --output_dir rc0 --cache_latents 2> rc0.err && D --output_dir rc1 --cache_latents --alpha_mask 2> rc1.err; rc=$?
[ $rc = 0 ] && ! cmp -s rc0/last.safetensors rc1/last.safetensors && ok train_masked_cache_latents ||
  nok train_masked_cache_latents "rc $rc $(tail -2 rc1.err)"
printf '[[datasets]]\nresolution = 64\ncaption_extension = ".txt"\n[[datasets.subsets]]\nimage_dir = "img/2_sks"\nnum_repeats = 2\nclass_tokens = "sks"\nalpha_mask = true\n' > am.toml
T --dataset_config am.toml --output_dir rc2 --cache_latents 2> rc2.err; rc=$?
tensors() { python3 -c 'import struct, sys; b = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(b[8 + struct.unpack("<Q", b[:8])[0]:])' "$1"; }
[ $rc = 0 ] && cmp -s <(tensors rc1/last.safetensors) <(tensors rc2/last.safetensors) &&
  ! cmp -s <(tensors rc0/last.safetensors) <(tensors rc2/last.safetensors) && ok train_masked_dataset_config_alpha_mask ||
  nok train_masked_dataset_config_alpha_mask "rc $rc $(tail -2 rc2.err)"
D --output_dir rd1 --cache_latents_to_disk --alpha_mask 2> rd1.err && D --output_dir rd2 --cache_latents_to_disk --alpha_mask 2> rd2.err
rc=$?
[ $rc = 0 ] && grep -q '2 reused, 0 written' rd2.err && cmp -s rd1/last.safetensors rd2/last.safetensors &&
  ok train_masked_cache_disk ||
  nok train_masked_cache_disk "rc $rc $(grep reused rd2.err; tail -2 rd2.err)"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' 2> /dev/null; then
  out=$(/usr/bin/python3 - img/2_sks/a_0064x0064_sd.npz <<'PY' 2>&1
import sys, numpy as np
z = np.load(sys.argv[1])
m = z["alpha_mask"]
assert m.dtype == np.float32 and m.shape == (64, 64), (m.dtype, m.shape)
assert m.min() == 0 and m.max() == 1 and (np.diff(m[0]) >= 0).all()
print("fine")
PY
)
  [ "$out" = fine ] && ok train_masked_cache_disk_numpy || nok train_masked_cache_disk_numpy "$out"
else
  echo "ok train_masked_cache_disk_numpy # SKIP no /usr/bin/python3 with numpy"
fi

# ---- refusals -----------------------------------------------------------------------------------------------
T --data n.jsonl --output_dir rx1 --alpha_mask 2> rx1.err; rc=$?
[ $rc = 1 ] && grep -q 'no alpha_mask member' rx1.err && ok train_masked_missing_member_refused ||
  nok train_masked_missing_member_refused "rc $rc $(tail -2 rx1.err)"
"$B/sd-train" --method ft --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --data a.jsonl \
  --output_dir rx4 --max_train_steps 1 --masked_loss --threads 1 2> rx4.err; rc=$?
[ $rc = 2 ] && grep -q 'fine_tune.py' rx4.err && ok train_masked_ft_refused || nok train_masked_ft_refused "rc $rc $(tail -2 rx4.err)"
exit 0
