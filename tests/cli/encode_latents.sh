#!/usr/bin/env bash
# sd-encode-latents end to end on generated images and a tiny random VAE (4 levels, factor 8):
# records and errors, latents = the library's VAE encode (mean mode), kohya names + numpy.load,
# reuse / rebuild rules, threads and batch size invariance, kill -9 mid-run and rerun.
. "$(dirname "$0")/lib.sh"
t_init enc encode_latents
bin=${SD_BIN:-$build/bin}
helper="$PWD/$build/tests/unit/test_encode_latents"
case "$bin" in /*) ;; *) bin="$PWD/$bin";; esac
enc="$bin/sd-encode-latents"
py=/usr/bin/python3
export SD_PROGRESS=0
check() { if eval "$2"; then ok "$1"; else nok "$1"; fi; }
t_need "$helper" "$enc"
w=$tmp
mkdir -p "$w/img"
cd "$w"
"$helper" --make-vae vae.safetensors cfg.json 1 || { nok encode_make_vae; exit 1; }
"$helper" --make-vae vae2.safetensors cfg2.json 2 || { nok encode_make_vae; exit 1; }
"$helper" --make-image img/a.png 100 70 1 && "$helper" --make-image img/b.png 64 64 2 rgba \
  && "$helper" --make-image img/c.png 50 90 3 || { nok encode_make_images; exit 1; }
common=(--vae vae.safetensors --model_config cfg.json --resolution 64 --bucket_reso_steps 32
        --min_bucket_reso 32 --max_bucket_reso 128 --threads 1)
printf '%s\n' '{"image":"img/a.png","x":1,"caption":"a"}' '{"image":"img/b.png"}' '{"image":"img/missing.png"}' \
  'not json' '{"image":"img/c.png","z":[1,2]}' > in.jsonl

# ---- basic run: records, pass-through, per-record errors -----------------------------------------
"$enc" "${common[@]}" --out lat < in.jsonl > out.jsonl 2> err.txt
rc=$?
check encode_exit_3_on_bad_records '[ $rc = 3 ]'
check encode_three_records_out '[ "$(wc -l < out.jsonl)" = 3 ]'
check encode_keys_pass_through 'head -1 out.jsonl | grep -q "^{\"image\":\"img/a.png\",\"x\":1,\"caption\":\"a\",\"image_size\":\[100,70\],\"bucket\":\[64,64\],.*\"latents\":\"lat/"'
check encode_errors_name_line 'grep -q "error (at stdin:3): img/missing.png" err.txt && grep -q "error (at stdin:4)" err.txt'
check encode_summary 'grep -q "3 encoded, 0 reused, 2 failed" err.txt'
lat_a=$(head -1 out.jsonl | sed 's/.*"latents":"\([^"]*\)".*/\1/')
check encode_file_written '[ -s "$lat_a" ] && "$helper" --check-file "$lat_a"'
check encode_no_temp_left '[ -z "$(find lat -name ".*tmp*")" ]'

# ---- the reference's OpenCV filters, forced (nearest, linear, cubic, area) -------------------------
for f in area nearest linear cubic; do
  "$enc" "${common[@]}" --out "i_$f" --latent_mode mean --resize_interpolation $f < in.jsonl > "i_$f.jsonl" 2> "i_$f.err"
  echo $? > "i_$f.rc"
done
check encode_interp_opencv_accepted '( for f in area nearest linear cubic; do [ "$(cat i_$f.rc)" = 3 ] && [ "$(wc -l < i_$f.jsonl)" = 3 ] || exit 1; done )'
ia() { head -1 "i_$1.jsonl" | sed 's/.*"latents":"\([^"]*\)".*/\1/'; }
check encode_interp_filters_differ '! cmp -s "$(ia area)" "$(ia nearest)" && ! cmp -s "$(ia area)" "$(ia linear)" && ! cmp -s "$(ia linear)" "$(ia cubic)"'
printf '%s\n' '{"image":"img/a.png","resize_interpolation":"bicubic"}' \
  | "$enc" "${common[@]}" --out i_rec --latent_mode mean --resize_interpolation nearest > i_rec.jsonl 2>/dev/null
check encode_interp_record_wins 'cmp -s "$(sed "s/.*\"latents\":\"\([^\"]*\)\".*/\1/" i_rec.jsonl)" "$(ia cubic)"'
"$enc" "${common[@]}" --out i_bad --resize_interpolation lanczos4 < in.jsonl > /dev/null 2> i_bad.err
rc=$?
check encode_interp_unknown_usage '[ $rc = 2 ] && grep -q "unknown interpolation .lanczos4." i_bad.err'

# ---- mean mode = the library's encode of the same pixels -------------------------------------------
"$enc" "${common[@]}" --out mean --latent_mode mean --flip_aug < in.jsonl > mean.jsonl 2>/dev/null
good=1
while read -r line; do
  img=$(echo "$line" | sed 's/.*"image":"\([^"]*\)".*/\1/')
  lat=$(echo "$line" | sed 's/.*"latents":"\([^"]*\)".*/\1/')
  b=$(echo "$line" | sed 's/.*"bucket":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
  rs=$(echo "$line" | sed 's/.*"resized":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
  # shellcheck disable=SC2086
  out1=$("$helper" --check-mean vae.safetensors cfg.json "$lat" "$img" $b $rs) || good=0
  out2=$("$helper" --check-mean vae.safetensors cfg.json "$lat" "$img" $b $rs flip) || good=0
  echo "# $img: $out1; flipped: $out2"
done < mean.jsonl
check encode_mean_equals_library_encode '[ $good = 1 ] && [ "$(wc -l < mean.jsonl)" = 3 ]'
# ... and `sd-model run vae-encode` on the same pixels (its moments' first 4 channels are the mean)
if [ -x "$bin/sd-model" ]; then
  good=1
  while read -r line; do
    img=$(echo "$line" | sed 's/.*"image":"\([^"]*\)".*/\1/')
    lat=$(echo "$line" | sed 's/.*"latents":"\([^"]*\)".*/\1/')
    b=$(echo "$line" | sed 's/.*"bucket":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
    rs=$(echo "$line" | sed 's/.*"resized":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
    # shellcheck disable=SC2086
    "$helper" --write-pixels "$img" $b $rs px.npy \
      && "$bin/sd-model" run vae-encode --model vae.safetensors --model_config cfg.json --input px.npy -o mom.npy \
         --threads 1 2> sdm.err \
      && out=$("$helper" --compare-moments "$lat" mom.npy) || { good=0; cat sdm.err; }
    echo "# $img: $out"
  done < mean.jsonl
  check encode_mean_equals_sd_model_vae_encode '[ $good = 1 ]'
fi

# ---- --device: syntax errors exit 2; cuda without a CUDA build or GPU is fatal; with a GPU the
# latents match the CPU's within fp32 tolerance (same cache key: the VAE is hashed on the host) ----
"$enc" "${common[@]}" --out dev --device gpu < in.jsonl > /dev/null 2> dev1.err; rc=$?
check encode_device_bad_syntax '[ $rc = 2 ] && grep -q "gpu" dev1.err'
"$enc" "${common[@]}" --out devg --latent_mode mean --device cuda < in.jsonl > devg.jsonl 2> dev2.err; rc=$?
if [ $rc = 3 ]; then
  good=1
  while read -r line; do
    lat=$(echo "$line" | sed 's/.*"latents":"\([^"]*\)".*/\1/')
    img=$(echo "$line" | sed 's/.*"image":"\([^"]*\)".*/\1/')
    ref=$(grep "\"image\":\"$img\"" mean.jsonl | sed 's/.*"latents":"\([^"]*\)".*/\1/')
    out=$("$helper" --compare-latents "$ref" "$lat" 1e-4) || good=0
    echo "# GPU vs CPU $img: $out"
  done < devg.jsonl
  check encode_device_cuda_matches_cpu '[ $good = 1 ] && [ "$(wc -l < devg.jsonl)" = 3 ]'
  if [ -n "${SD_FAKE_CUDA:-}" ]; then   # a 300 MiB fake device: stopped before encoding, with the numbers
    SD_FAKE_CUDA_MIB=300 "$enc" "${common[@]}" --out dsm --device cuda < in.jsonl > dsm.jsonl 2> dsm.err; rc=$?
    check encode_device_cuda_fail_fast '[ $rc = 1 ] && grep -q "needs about .* GiB of GPU memory (VAE weights .* working memory .* 64x64" dsm.err && grep -q "lower --vae_batch_size" dsm.err && [ ! -s dsm.jsonl ] && [ ! -e dsm ]'
  fi
else
  check encode_device_cuda_unavailable '[ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" dev2.err'
fi

# ---- the same plan from sd-bucket gives the same file ------------------------------------------------
if [ -x "$bin/sd-bucket" ]; then
  grep image in.jsonl | grep -v missing | "$bin/sd-bucket" --resolution 64 --bucket_reso_steps 32 \
    --min_bucket_reso 32 --max_bucket_reso 128 2>/dev/null \
    | "$enc" --vae vae.safetensors --model_config cfg.json --out lat > fromb.jsonl 2>/dev/null
  check encode_plan_from_sd_bucket_same_files \
    '[ "$(sed "s/.*\"latents\":\"\([^\"]*\)\".*/\1/" fromb.jsonl)" = "$(sed "s/.*\"latents\":\"\([^\"]*\)\".*/\1/" out.jsonl)" ]'
fi

# ---- kohya names, store form, numpy ------------------------------------------------------------------
kargs=("${common[@]}" --kohya_names --flip_aug --alpha_mask)
grep -v missing in.jsonl | grep image > good.jsonl
"$enc" "${kargs[@]}" < good.jsonl > k1.jsonl 2> k1.err
check encode_kohya_names '[ -s img/a_0100x0070_sd.npz ] && [ -s img/b_0064x0064_sd.npz ] && grep -q "\"latents\":\"img/a_0100x0070_sd.npz\"" k1.jsonl'
if [ -x "$py" ] && "$py" -c 'import numpy' 2>/dev/null; then
  if "$py" - <<'EOF'
import json, numpy as np
z = np.load("img/a_0100x0070_sd.npz")
assert z.files == ["latents", "original_size", "crop_ltrb", "latents_flipped", "alpha_mask", "sd_meta.json"], z.files
assert z["latents"].dtype == np.float32 and z["latents"].shape == (4, 8, 8), z["latents"].shape
assert z["latents_flipped"].shape == (4, 8, 8)
assert z["original_size"].dtype == np.int64 and z["original_size"].tolist() == [100, 70]
assert z["crop_ltrb"].dtype == np.int64 and z["crop_ltrb"].tolist() == [0, 9, 64, 53], z["crop_ltrb"]
assert z["alpha_mask"].dtype == np.float32 and z["alpha_mask"].shape == (64, 64)
assert (z["alpha_mask"] == 1).all()   # an opaque image: alpha 255
m = json.loads(z["sd_meta.json"].tobytes() if hasattr(z["sd_meta.json"], "tobytes") else z["sd_meta.json"])
assert m["format"] == 1 and m["bucket"] == [64, 64] and m["flip"] and m["alpha_mask"] and m["latent_mode"] == "sample"
b = np.load("img/b_0064x0064_sd.npz")["alpha_mask"]
assert b.min() == 0 and b.max() == 1 and abs(b[0, 63] - 1) < 1e-6   # the generated alpha ramps 0..255 left to right
EOF
  then ok encode_kohya_store_loads_in_numpy; else nok encode_kohya_store_loads_in_numpy; fi
else
  echo "ok encode_kohya_store_loads_in_numpy # SKIP no /usr/bin/python3 with numpy"
fi

# --sdxl: kohya's _sdxl.npz suffix (the default for an SDXL model); only with --kohya_names
"$enc" "${kargs[@]}" --sdxl < good.jsonl > kx.jsonl 2> kx.err
check encode_kohya_sdxl_suffix '[ -s img/a_0100x0070_sdxl.npz ] && grep -q "\"latents\":\"img/a_0100x0070_sdxl.npz\"" kx.jsonl && cmp -s img/a_0100x0070_sd.npz img/a_0100x0070_sdxl.npz'
rm -f img/*_sdxl.npz
"$enc" "${common[@]}" --out lx --sdxl < good.jsonl > /dev/null 2> kx2.err; rc=$?
check encode_sdxl_needs_kohya_names '[ $rc = 2 ] && grep -q "kohya_names" kx2.err'

# ---- reuse and rebuild -------------------------------------------------------------------------------
sum_a() { sha256sum img/a_0100x0070_sd.npz | cut -c1-64; }
s0=$(sum_a); t0=$(stat -c %Y.%N img/a_0100x0070_sd.npz)
"$enc" "${kargs[@]}" --skip_existing < good.jsonl > k2.jsonl 2> k2.err
check encode_unchanged_is_reused 'grep -q "0 encoded, 3 reused, 0 failed" k2.err && [ "$(stat -c %Y.%N img/a_0100x0070_sd.npz)" = "$t0" ] && cmp -s k1.jsonl k2.jsonl'
"$enc" "${kargs[@]}" < good.jsonl > /dev/null 2> k2b.err
check encode_without_skip_existing_reencodes 'grep -q "3 encoded, 0 reused" k2b.err && [ "$(sum_a)" = "$s0" ]'
"$helper" --make-image img/a.png 100 70 9
"$enc" "${kargs[@]}" --skip_existing < good.jsonl > /dev/null 2> k3.err
check encode_changed_image_is_rebuilt 'grep -q "1 encoded, 2 reused" k3.err && [ "$(sum_a)" != "$s0" ]'
s1=$(sum_a)
"$enc" "${kargs[@]/vae.safetensors/vae2.safetensors}" --skip_existing < good.jsonl > /dev/null 2> k4.err
check encode_changed_vae_is_rebuilt 'grep -q "3 encoded, 0 reused" k4.err && [ "$(sum_a)" != "$s1" ]'
s2=$(sum_a)
"$enc" "${kargs[@]/vae.safetensors/vae2.safetensors}" --resolution 96 --skip_existing < good.jsonl > k5.jsonl 2> k5.err
check encode_changed_resolution_is_rebuilt 'grep -q "3 encoded, 0 reused" k5.err && [ "$(sum_a)" != "$s2" ] && grep -q "\"bucket\":\[96,96\]" k5.jsonl'
s3=$(sum_a)
noflip=("${kargs[@]/--flip_aug/--no-flip_aug}")
"$enc" "${noflip[@]/vae.safetensors/vae2.safetensors}" --resolution 96 --skip_existing < good.jsonl > /dev/null 2> k6.err
check encode_changed_flip_is_rebuilt 'grep -q "3 encoded, 0 reused" k6.err && [ "$(sum_a)" != "$s3" ]'
"$enc" "${noflip[@]/vae.safetensors/vae2.safetensors}" --resolution 96 --skip_existing < good.jsonl > /dev/null 2> k7.err
check encode_rebuilt_then_reused 'grep -q "0 encoded, 3 reused" k7.err'
# a kohya-written cache (no sd_meta.json) is never trusted
if [ -x "$py" ] && "$py" -c 'import numpy' 2>/dev/null; then
  "$py" -c 'import numpy as np; z = dict(np.load("img/c_0050x0090_sd.npz")); z.pop("sd_meta.json"); np.savez("img/c_0050x0090_sd.npz", **z)'
  "$enc" "${noflip[@]/vae.safetensors/vae2.safetensors}" --resolution 96 --skip_existing < good.jsonl > /dev/null 2> k8.err
  check encode_foreign_cache_not_trusted 'grep -q "1 encoded, 2 reused" k8.err'
fi

# ---- threads and batch size do not change a byte -------------------------------------------------
"$enc" "${common[@]}" --flip_aug --out t1 --threads 1 < good.jsonl > t1.jsonl 2>/dev/null
"$enc" "${common[@]}" --flip_aug --out t2 --threads 2 --vae_batch_size 3 < good.jsonl > t2.jsonl 2>/dev/null
check encode_threads_and_batch_identical_bytes \
  '[ -n "$(ls t1)" ] && diff -r t1 t2 >/dev/null && cmp -s <(sed s/t1/X/ t1.jsonl) <(sed s/t2/X/ t2.jsonl)'
"$enc" "${common[@]}" --flip_aug --out t3 --seed 5 < good.jsonl > /dev/null 2>/dev/null
check encode_seed_changes_samples '! diff -r t1 t3 >/dev/null'

# ---- usage errors ---------------------------------------------------------------------------------
"$enc" --out x < /dev/null > /dev/null 2>&1; rc1=$?
"$enc" --vae vae.safetensors --model_config cfg.json < /dev/null > /dev/null 2>&1; rc2=$?
"$enc" --vae nothere.safetensors --out x < /dev/null > /dev/null 2> fe.txt; rc3=$?
check encode_usage_and_fatal_errors '[ $rc1 = 2 ] && [ $rc2 = 2 ] && [ $rc3 = 1 ] && grep -q "nothere.safetensors" fe.txt'

# ---- kill -9 mid-run: no truncated file; the rerun completes ---------------------------------------
mkdir -p big
: > big.jsonl
for i in $(seq 1 16); do
  "$helper" --make-image "big/$i.png" 160 160 "$i"
  echo "{\"image\":\"big/$i.png\"}" >> big.jsonl
done
bargs=(--vae vae.safetensors --model_config cfg.json --resolution 160 --bucket_reso_steps 32
       --min_bucket_reso 64 --max_bucket_reso 512 --out blat --threads 1)
"$enc" "${bargs[@]}" < big.jsonl > kill.jsonl 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do
  n=$(find blat -name '*.npz' 2>/dev/null | wc -l)
  [ "$n" -ge 3 ] && break
  sleep 0.02
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
n=$(find blat -name '*.npz' | wc -l)
bad=0
for f in $(find blat -name '*.npz'); do "$helper" --check-file "$f" > /dev/null || bad=1; done
echo "# killed with $n of 16 files written"
check encode_kill_leaves_no_truncated_file '[ $bad = 0 ] && [ "$n" -lt 16 ]'
"$enc" "${bargs[@]}" --skip_existing < big.jsonl > rerun.jsonl 2> rerun.err
rc=$?
check encode_rerun_after_kill_completes '[ $rc = 0 ] && [ "$(wc -l < rerun.jsonl)" = 16 ] && grep -q "reused, 0 failed" rerun.err && ! grep -q " 0 reused" rerun.err'
# SIGTERM: exit 143, whatever was written is whole
"$enc" "${bargs[@]}" --out blat2 < big.jsonl > /dev/null 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do [ -d blat2 ] && [ -n "$(find blat2 -name '*.npz' 2>/dev/null)" ] && break; sleep 0.02; done
kill -TERM $pid; wait $pid; rc=$?
bad=0
for f in $(find blat2 -name '*.npz'); do "$helper" --check-file "$f" > /dev/null || bad=1; done
check encode_sigterm_exit_143 '[ $rc = 143 ] && [ $bad = 0 ]'
exit 0
