#!/usr/bin/env bash
# LyCORIS network files (--network_module lycoris.kohya: LoHa, LoKr, LoCon incl. 3x3 convs and Tucker)
# merged by sd-sample --network_weights and sd-model merge --sd_model, on the tiny SD1 model. The file
# tests/data/lycoris/lycoris_tiny.safetensors and the ΔW of each of its modules
# (lycoris_tiny_delta.safetensors) come from tests/golden/gen/make_lycoris_golden.py (a transcription
# of LyCORIS' weight functions): the sd-sample image equals the image of the model with those ΔW added
# by the test helper (gen-delta) within 1 pixel level; multiplier 0 gives the base image exactly; the
# sd-model merge checkpoint gives the same image; wrong --network_module and malformed files are refused.
set -u
cd "$(dirname "$0")/../.."
build=${SD_BUILD:-build}
bin=${SD_BIN:-$build/bin}
tmp=${SD_TEST_TMP:-$(mktemp -d)}
helper="$PWD/$build/tests/unit/test_sample"
case "$bin" in /*) ;; *) bin="$PWD/$bin";; esac
ss="$bin/sd-sample"
sm="$bin/sd-model"
lyc="$PWD/tests/data/lycoris/lycoris_tiny.safetensors"
delta="$PWD/tests/data/lycoris/lycoris_tiny_delta.safetensors"
export SD_PROGRESS=0 SD_ROOT="${SD_ROOT:-$PWD}" SD_SHARE="${SD_SHARE:-$PWD/share/sd}"

ok() { echo "ok $1"; }
nok() { echo "not ok $1"; }
check() { if eval "$2"; then ok "$1"; else nok "$1"; fi; }

if [ ! -x "$helper" ] || [ ! -x "$ss" ] || [ ! -x "$sm" ]; then
  echo "# $helper, $ss or $sm not built"; nok sample_lycoris_built; exit 1
fi
w="$tmp/sample_lycoris"
rm -rf "$w"; mkdir -p "$w"
cd "$w"
"$helper" make-model m.safetensors m.toml || { nok sample_lycoris_make_model; exit 1; }
cp "$lyc" ly.safetensors
L=(--model m.safetensors --model_config m.toml --W 32 --H 32 --steps 3 --sequential_file_name --threads 1
   --prompt "a cat" --seed 9)

"$ss" "${L[@]}" --outdir base > /dev/null 2>&1
"$ss" "${L[@]}" --network_module lycoris.kohya --network_weights ly.safetensors --network_mul 0.7 --outdir y1 \
  > /dev/null 2> y1.err; rc=$?
check sample_lycoris_exit_0 '[ $rc = 0 ]'
check sample_lycoris_merged_message 'grep -q "ly.safetensors: merged 13 modules (3 text encoder, 10 UNet) with multiplier 0.7" y1.err'
check sample_lycoris_changes_image '[ "$("$helper" maxdiff base/im_000001.png y1/im_000001.png)" -gt 0 ]'
"$ss" "${L[@]}" --network_module lycoris.kohya --network_weights ly.safetensors --network_mul 0 --outdir y0 > /dev/null 2>&1
check sample_lycoris_mul_0_is_base '[ "$("$helper" maxdiff base/im_000001.png y0/im_000001.png)" = 0 ]'
# the module type is told by the keys when --network_module is left out
"$ss" "${L[@]}" --network_weights ly.safetensors --network_mul 0.7 --outdir y2 > /dev/null 2>&1
check sample_lycoris_module_from_keys 'cmp -s y1/im_000001.png y2/im_000001.png'

# = the model with W += 0.7 ΔW, ΔW from the Python transcription of LyCORIS
"$helper" gen-delta m.safetensors m.toml "$delta" 0.7 9 ref.png
d=$("$helper" maxdiff y1/im_000001.png ref.png)
echo "# sd-sample LyCORIS merge vs golden ΔW added: max pixel difference $d"
check sample_lycoris_equals_golden_delta '[ "$d" -ge 0 ] && [ "$d" -le 1 ]'
"$helper" gen-delta m.safetensors m.toml "$delta" 0 9 ref0.png
check sample_lycoris_gen_delta_base '[ "$("$helper" maxdiff base/im_000001.png ref0.png)" -le 1 ]'

# sd-model merge --sd_model: the merged checkpoint samples to the same image
"$sm" merge --model_config m.toml --threads 1 --sd_model m.safetensors --models ly.safetensors --ratios 0.7 \
  --save_to merged.safetensors > /dev/null 2> mg.err; rc=$?
check sample_lycoris_sd_model_merge_exit_0 '[ $rc = 0 ] && grep -q "merged 13 modules" mg.err'
"$ss" --model merged.safetensors --model_config m.toml --W 32 --H 32 --steps 3 --sequential_file_name --threads 1 \
  --prompt "a cat" --seed 9 --outdir mg > /dev/null 2>&1
d=$("$helper" maxdiff y1/im_000001.png mg/im_000001.png)
echo "# sd-model merge checkpoint vs sd-sample merge: max pixel difference $d"
check sample_lycoris_sd_model_merge_same '[ "$d" -ge 0 ] && [ "$d" -le 1 ]'
"$sm" merge --threads 1 --models ly.safetensors ly.safetensors --ratios 1 1 --save_to lm.safetensors > /dev/null 2> lm.err; rc=$?
check sample_lycoris_lora_merge_refused '[ $rc = 1 ] && grep -q "LyCORIS" lm.err && [ ! -e lm.safetensors ]'

# --network_module networks.lora cannot load LyCORIS keys; lycoris.kohya is fine for a plain LoRA file
"$ss" "${L[@]}" --network_module networks.lora --network_weights ly.safetensors --outdir b1 > /dev/null 2> b1.err; rc=$?
check sample_lycoris_wrong_module '[ $rc = 1 ] && grep -q "ly.safetensors: a LyCORIS .*lycoris.kohya" b1.err'
"$helper" make-lora m.safetensors m.toml l1.safetensors 1
"$ss" "${L[@]}" --network_weights l1.safetensors --network_mul 0.5 --outdir p1 > /dev/null 2>&1
"$ss" "${L[@]}" --network_module lycoris.kohya --network_weights l1.safetensors --network_mul 0.5 --outdir p2 > /dev/null 2>&1
check sample_lycoris_plain_lora_file 'cmp -s p1/im_000001.png p2/im_000001.png'

# malformed files: one line naming the file and the key, exit 1, no image
# st NAME FILE KEY:SHAPE... writes an all-zero F32 safetensors file (shapes as 2x3 or "" for a scalar)
st() {
  local out=$1; shift
  local hdr="{" off=0 first=1 k s n dims
  for kv in "$@"; do
    k=${kv%%:*}; s=${kv#*:}; n=1; dims=""
    if [ -n "$s" ]; then IFS=x read -ra a <<< "$s"; for x in "${a[@]}"; do n=$((n * x)); dims="$dims${dims:+,}$x"; done; fi
    [ $first = 1 ] || hdr="$hdr,"; first=0
    hdr="$hdr\"$k\":{\"dtype\":\"F32\",\"shape\":[$dims],\"data_offsets\":[$off,$((off + 4 * n))]}"
    off=$((off + 4 * n))
  done
  hdr="$hdr}"
  while [ $(( ${#hdr} % 8 )) != 0 ]; do hdr="$hdr "; done
  local len=${#hdr}
  printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\000\\000\\000\\000' $((len & 255)) $(((len >> 8) & 255)) \
    $(((len >> 16) & 255)) $(((len >> 24) & 255)))" > "$out"
  printf '%s' "$hdr" >> "$out"
  head -c "$off" /dev/zero >> "$out"
}
c1=lora_unet_down_blocks_0_resnets_0_conv1
st bad1.safetensors "$c1.hada_w1_a:32x2" "$c1.hada_w1_b:2x288" "$c1.hada_w2_a:32x2" "$c1.hada_w2_b:2x288" "$c1.hada_w9:2x2"
"$ss" "${L[@]}" --network_weights bad1.safetensors --outdir x1 > /dev/null 2> x1.err; rc=$?
check sample_lycoris_unknown_key '[ $rc = 1 ] && [ "$(wc -l < x1.err)" = 1 ] && grep -q "bad1.safetensors.*$c1.hada_w9" x1.err && [ ! -e x1/im_000001.png ]'
st bad2.safetensors "$c1.hada_w1_a:32x2" "$c1.hada_w1_b:2x288" "$c1.hada_w2_a:32x2" "$c1.hada_w2_b:2x99"
"$ss" "${L[@]}" --network_weights bad2.safetensors --outdir x2 > /dev/null 2> x2.err; rc=$?
check sample_lycoris_shape_mismatch '[ $rc = 1 ] && grep -q "bad2.safetensors.*$c1.*does not fit" x2.err'
st bad3.safetensors "$c1.lokr_w1:4x4" "$c1.lokr_w2:8x8x3x3" "$c1.dora_scale:1x32x1x1"
"$ss" "${L[@]}" --network_weights bad3.safetensors --outdir x3 > /dev/null 2> x3.err; rc=$?
check sample_lycoris_dora_refused '[ $rc = 1 ] && grep -q "bad3.safetensors.*DoRA" x3.err'
st bad4.safetensors "lora_unet_no_such_layer.lokr_w1:4x4" "lora_unet_no_such_layer.lokr_w2:8x8"
"$ss" "${L[@]}" --network_weights bad4.safetensors --outdir x4 > /dev/null 2> x4.err; rc=$?
check sample_lycoris_no_layer '[ $rc = 1 ] && grep -q "bad4.safetensors: module .lora_unet_no_such_layer. names no layer" x4.err'
st bad5.safetensors "$c1.lokr_w1:4x4"
"$ss" "${L[@]}" --network_weights bad5.safetensors --outdir x5 > /dev/null 2> x5.err; rc=$?
check sample_lycoris_missing_factor '[ $rc = 1 ] && grep -q "bad5.safetensors.*$c1.*lokr_w2" x5.err'

# ---- SDXL: a kohya SDXL LoRA rewritten as LoKr modules (lokr_w1 = [[1]], lokr_w2_a = lora_up,
# lokr_w2_b = lora_down: the same ΔW) merges to the same image as the LoRA, with SGM (lora_unet_input_
# blocks_…) and Diffusers (lora_unet_down_blocks_…) UNet names, lora_te1_/lora_te2_ ----------------------
root="$OLDPWD"
cd "$root"
if [ -n "${TINY_MODEL:-}" ]; then cp "$TINY_MODEL" "$w/tiny_model"
else examples/build_tiny.sh "$build" "$w/tiny_model" > /dev/null || { nok sample_lycoris_sdxl_tiny_build; exit 1; }; fi
cd "$w"
cfg="$root/examples/tiny_sdxl.toml"
./tiny_model model x.safetensors "$cfg" > /dev/null && "$helper" make-sdxl-lora x.safetensors "$cfg" xl.safetensors 3 &&
  "$helper" sdxl-lora-diffusers x.safetensors "$cfg" xl.safetensors xld.safetensors > /dev/null ||
  { nok sample_lycoris_sdxl_setup; exit 1; }
cat > tolokr.py <<'PY'
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
h.pop("__metadata__", None)
out, blobs, off = {}, [], 0
def add(k, dt, shape, raw):
    global off
    out[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}; blobs.append(raw); off += len(raw)
mods = set()
for k, v in sorted(h.items()):
    raw = data[v["data_offsets"][0]:v["data_offsets"][1]]
    m, s = k.split(".", 1)
    s = {"lora_up.weight": "lokr_w2_a", "lora_down.weight": "lokr_w2_b"}.get(s, s)
    add(m + "." + s, v["dtype"], v["shape"], raw); mods.add(m)
for m in sorted(mods):
    add(m + ".lokr_w1", "F32", [1, 1], struct.pack("<f", 1.0))
hb = json.dumps(out).encode(); hb += b" " * (-len(hb) % 8)
open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
PY
python3 tolokr.py xl.safetensors xlk.safetensors && python3 tolokr.py xld.safetensors xldk.safetensors ||
  { nok sample_lycoris_sdxl_rewrite; exit 1; }
X=(--model x.safetensors --model_config "$cfg" --W 64 --H 48 --steps 3 --sequential_file_name --seed 7 --threads 1
   --prompt "a cat")
"$ss" "${X[@]}" --network_mul 0.8 --network_weights xl.safetensors --outdir xa > /dev/null 2> xa.err
"$ss" "${X[@]}" --network_mul 0.8 --network_module lycoris.kohya --network_weights xlk.safetensors --outdir xk > /dev/null 2> xk.err; rc=$?
"$ss" "${X[@]}" --network_mul 0.8 --network_module lycoris.kohya --network_weights xldk.safetensors --outdir xd > /dev/null 2> xd.err
"$ss" "${X[@]}" --outdir x0 > /dev/null 2>&1
nm=$(grep -o "merged [0-9]* modules ([0-9]* text encoder, [0-9]* UNet)" xa.err)
check sample_lycoris_sdxl_exit_0 '[ $rc = 0 ] && [ -n "$nm" ] && grep -q "$nm" xk.err && grep -q "$nm" xd.err'
check sample_lycoris_sdxl_both_te 'grep -q "lora_te1_" xl.safetensors && grep -q "lora_te2_" xl.safetensors && ! echo "$nm" | grep -q "(0 text"'
d1=$("$helper" maxdiff xa/im_000001.png xk/im_000001.png); d2=$("$helper" maxdiff xa/im_000001.png xd/im_000001.png)
d0=$("$helper" maxdiff xa/im_000001.png x0/im_000001.png)
echo "# SDXL LoKr vs LoRA: max pixel difference $d1 (SGM names), $d2 (Diffusers names); LoRA vs none $d0"
check sample_lycoris_sdxl_lokr_equals_lora '[ "$d1" -ge 0 ] && [ "$d1" -le 1 ] && [ "$d2" -ge 0 ] && [ "$d2" -le 1 ] && [ "$d0" -gt 1 ]'
