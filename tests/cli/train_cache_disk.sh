#!/usr/bin/env bash
# sd-train --cache_latents_to_disk (reference-behaviour §4.7): the first run writes one
# <stem>_<WWWW>x<HHHH>_sd.npz (npz STORE form; latents, original_size, crop_ltrb, latents_flipped
# with flip_aug) beside each image; a second run reuses them (no rewrite) and gives the same LoRA
# bytes; a changed image is encoded again, the others are still reused.
. "$(dirname "$0")/lib.sh"
t_init train_cache_disk
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build --build
cd "$tmp"
./tiny_model model tinyv.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null ||
  { nok train_cache_disk_tiny_model; exit 1; }
mkdir -p img/2_sks
./tiny_model images img/2_sks 3 64 64 > /dev/null || { nok train_cache_disk_images; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
D() { "$bin" --method lora --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 \
  --threads 1 --learning_rate 1e-3 --train_data_dir img --resolution 64 --max_train_steps 3 --flip_aug \
  --cache_latents_to_disk "$@"; }
stats() { for f in img/2_sks/*_sd.npz; do echo "$f $(stat -c '%i %Y %s' "$f") $(cksum < "$f")"; done; }

# ---- --debug_dataset runs before latents are cached (as the reference): image batches, no cache file -------
D --output_dir rd --debug_dataset > dd.out 2> dd.err; rc=$?
[ $rc = 0 ] && [ "$(grep -c '^image size: torch.Size(\[3, 64, 64\])$' dd.out)" = 3 ] && ! grep -q '^sample has latents' dd.out &&
  [ -z "$(ls img/2_sks/*.npz 2> /dev/null)" ] && [ ! -e rd ] && ! grep -q 'caching latents' dd.err &&
  ok train_cache_disk_debug_dataset_no_cache || nok train_cache_disk_debug_dataset_no_cache "rc $rc $(ls img/2_sks) $(head -8 dd.out)"

# ---- first run: one cache file per image, beside it ---------------------------------------------------------
D --output_dir r1 2> r1.err; rc=$?
[ $rc = 0 ] && [ -f r1/last.safetensors ] && ok train_cache_disk_runs || nok train_cache_disk_runs "rc $rc $(tail -3 r1.err)"
nimg=$(ls img/2_sks/*.png 2> /dev/null | wc -l)
bad=
for im in img/2_sks/*.png; do [ -f "${im%.png}_0064x0064_sd.npz" ] || bad="$bad $im"; done
nnpz=$(ls img/2_sks/*.npz 2> /dev/null | wc -l)
[ "$nimg" = 3 ] && [ "$nnpz" = 3 ] && [ -z "$bad" ] && ok train_cache_disk_files_written ||
  nok train_cache_disk_files_written "images $nimg, npz $nnpz, missing:$bad $(ls img/2_sks)"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' 2> /dev/null; then
  out=$(/usr/bin/python3 - img/2_sks/*_sd.npz <<'PY' 2>&1
import sys, zipfile, numpy as np
for p in sys.argv[1:]:
    with zipfile.ZipFile(p) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist()), p + ': not STORE'
    d = np.load(p)
    for k in ('latents', 'original_size', 'crop_ltrb', 'latents_flipped'):
        assert k in d.files, '%s: no %s (%s)' % (p, k, d.files)
    assert d['latents'].ndim == 3 and d['latents'].shape[1:] == (8, 8), d['latents'].shape
    assert d['latents_flipped'].shape == d['latents'].shape
    assert list(d['original_size']) == [64, 64], d['original_size']
    assert list(d['crop_ltrb']) == [0, 0, 64, 64], d['crop_ltrb']
    assert np.isfinite(d['latents']).all()
print('fine')
PY
)
  [ "$out" = fine ] && ok train_cache_disk_numpy || nok train_cache_disk_numpy "$out"
else
  echo "ok train_cache_disk_numpy # SKIP no /usr/bin/python3 with numpy"
fi
stats > s1.txt

# ---- second run: reused, not rewritten, same LoRA bytes -------------------------------------------------------
D --output_dir r2 2> r2.err; rc=$?
[ $rc = 0 ] && ok train_cache_disk_second_run || nok train_cache_disk_second_run "rc $rc $(tail -3 r2.err)"
stats > s2.txt
cmp -s s1.txt s2.txt && grep -q '3 reused, 0 written' r2.err && ok train_cache_disk_reused ||
  nok train_cache_disk_reused "$(diff s1.txt s2.txt; grep reused r2.err)"
cmp -s r1/last.safetensors r2/last.safetensors && ok train_cache_disk_same_bytes || nok train_cache_disk_same_bytes

# ---- the files are the ones sd-encode-latents --kohya_names writes: it reuses them ---------------------------------
B="$root/$build/bin"
if [ -x "$B/sd-merge-meta" ] && [ -x "$B/sd-bucket" ] && [ -x "$B/sd-encode-latents" ]; then
  "$B/sd-merge-meta" --train_data_dir img 2> /dev/null | "$B/sd-bucket" --resolution 64 2> /dev/null |
    "$B/sd-encode-latents" --vae tiny_vae.safetensors --model_config "$root/examples/tiny_model.toml" --kohya_names \
      --skip_existing --flip_aug --seed 3 --threads 1 > enc.jsonl 2> enc.err
  stats > s2e.txt
  cmp -s s2.txt s2e.txt && grep -q '0 encoded, 3 reused' enc.err && ok train_cache_disk_encode_latents_reuses ||
    nok train_cache_disk_encode_latents_reuses "$(tail -2 enc.err)"
else
  echo "ok train_cache_disk_encode_latents_reuses # SKIP pipeline programs not built"
fi

# ---- a changed image is encoded again ---------------------------------------------------------------------------
set -- img/2_sks/*.png
cp "$2" "$1"
D --output_dir r3 2> r3.err; rc=$?
stats > s3.txt
first=${1%.png}_0064x0064_sd.npz
changed=$(diff s2.txt s3.txt | grep -c '^>')
if [ $rc = 0 ] && [ "$changed" = 1 ] && diff s2.txt s3.txt | grep -q "^> $first " && grep -q '2 reused, 1 written' r3.err; then
  ok train_cache_disk_changed_image; else nok train_cache_disk_changed_image "rc $rc changed $changed $(grep reused r3.err)"; fi

# ---- a file without our sd_meta.json (e.g. written by kohya) is not trusted -------------------------------------
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy' 2> /dev/null; then
  /usr/bin/python3 - "$first" <<'PY'
import sys, numpy as np
d = np.load(sys.argv[1]); m = {k: d[k] for k in d.files if k != 'sd_meta.json'}
np.savez(sys.argv[1][:-4], **m)
PY
  D --output_dir r4 2> r4.err; rc=$?
  [ $rc = 0 ] && grep -q '2 reused, 1 written' r4.err && ok train_cache_disk_kohya_file_not_trusted ||
    nok train_cache_disk_kohya_file_not_trusted "rc $rc $(grep reused r4.err)"
else
  echo "ok train_cache_disk_kohya_file_not_trusted # SKIP no /usr/bin/python3 with numpy"
fi
exit 0
