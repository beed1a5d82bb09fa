#!/usr/bin/env bash
# sd-train --fp8_base / --fp8_base_unet on the tiny random model: the reference's assertion (mixed
# precision) and this port's refusals (db/ft/ti, OFT); a bf16 LoRA run with --fp8_base differs from
# the one without and equals, byte for byte, the run on a model whose UNet and text-encoder tensors
# (but the embeddings) were rounded to float8_e4m3fn beforehand (tests/golden/gen/f8e4m3_ref.py);
# --fp8_base_unet equals the run on a model with only the UNet rounded; ss_fp8_base metadata.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
build=${SD_BUILD:-build}
tmp=${SD_TEST_TMP:-$(mktemp -d)}/train_fp8
rm -rf "$tmp"; mkdir -p "$tmp"
bin="$root/$build/bin/sd-train"
[ -x "$bin" ] || { echo "# $bin not built"; echo "not ok train_fp8_built"; exit 1; }
ok() { echo "ok $1"; }
nok() { echo "not ok $1"; [ -n "${2:-}" ] && echo "# $2"; }
if [ -n "${TINY_MODEL:-}" ]; then cp "$TINY_MODEL" "$tmp/tiny_model"
else examples/build_tiny.sh "$build" "$tmp/tiny_model" || { nok train_fp8_tiny_build; exit 1; }; fi
cd "$tmp"
cfg="$root/examples/tiny_model.toml"
./tiny_model model tiny.safetensors "$cfg" > /dev/null || { nok train_fp8_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_fp8_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --model "${M:-tiny.safetensors}" --model_config "$cfg" --data recs.jsonl --learning_rate 1e-2 --seed 3 \
      --threads 1 --network_dim 4 "$@"; }
meta() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
print(h.get('__metadata__', {}).get(sys.argv[2], '<absent>'))
PY
}
# prerounded IN OUT PREFIXES...: every F32/F16 tensor under the prefixes but the text model's embeddings
# rounded to float8_e4m3fn values (same dtype), as the reference's unet.to(fp8) / t_enc.to(fp8) followed by
# embeddings.to(weight_dtype) (OpenCLIP: token_embedding, positional_embedding); prints how many tensors changed
prerounded() { python3 - "$root/tests/golden/gen" "$@" <<'PY'
import json, struct, sys
sys.path.insert(0, sys.argv[1])
import f8e4m3_ref as R
src, dst, prefixes = sys.argv[2], sys.argv[3], sys.argv[4:]
b = bytearray(open(src, 'rb').read()); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
changed = 0
for k, v in h.items():
    if k == '__metadata__' or 'text_model.embeddings.' in k or k.endswith(('.token_embedding.weight', '.positional_embedding')):
        continue
    fmt = {'F32': 'f', 'F16': 'e'}.get(v['dtype'])
    if not any(k.startswith(p) for p in prefixes) or not fmt:
        continue
    s, e = v['data_offsets']; o = 8 + n + s; w = struct.calcsize(fmt)
    vals = struct.unpack('<%d%s' % ((e - s) // w, fmt), bytes(b[o:8 + n + e]))
    new = R.round_f32_list(vals)          # float8 values are exact in F16 and F32
    changed += list(new) != list(vals)
    b[o:8 + n + e] = struct.pack('<%d%s' % (len(new), fmt), *new)
open(dst, 'wb').write(b)
print(changed)
PY
}

# ---- refusals ----------------------------------------------------------------------------------------------
T --output_dir e1 --max_train_steps 1 --fp8_base 2> e1.err; rc=$?
[ $rc = 2 ] && grep -q "fp8_base requires mixed precision='fp16' or 'bf16'" e1.err && ok train_fp8_needs_mp ||
  nok train_fp8_needs_mp "rc=$rc $(cat e1.err)"
T --output_dir e2 --max_train_steps 1 --fp8_base_unet --mixed_precision no 2> e2.err; rc=$?
[ $rc = 2 ] && grep -q "fp8_base requires mixed precision" e2.err && ok train_fp8_unet_needs_mp ||
  nok train_fp8_unet_needs_mp "rc=$rc $(cat e2.err)"
M=tiny.safetensors "$bin" --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --output_dir e3 --max_train_steps 1 \
  --fp8_base --mixed_precision bf16 --method db 2> e3.err; rc=$?
[ $rc = 2 ] && grep -q "fp8_base: an option of train_network.py" e3.err && ok train_fp8_refuse_db ||
  nok train_fp8_refuse_db "rc=$rc $(cat e3.err)"
T --output_dir e4 --max_train_steps 1 --fp8_base --mixed_precision bf16 --network_module networks.oft 2> e4.err; rc=$?
[ $rc = 2 ] && grep -q "networks.oft" e4.err && ok train_fp8_refuse_oft || nok train_fp8_refuse_oft "rc=$rc $(cat e4.err)"
"$bin" --help 2>&1 | grep -q -- "--fp8_base_unet" && ok train_fp8_help || nok train_fp8_help

# ---- LoRA ------------------------------------------------------------------------------------------------
T --output_dir bf --max_train_steps 4 --mixed_precision bf16 2> bf.err || nok train_fp8_bf16_run "$(tail -2 bf.err)"
/usr/bin/time -v "$bin" --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-2 --seed 3 \
  --threads 1 --network_dim 4 --output_dir f8 --max_train_steps 4 --mixed_precision bf16 --fp8_base 2> f8.err; rc=$?
[ $rc = 0 ] && [ -s f8/last.safetensors ] && ok train_fp8_trains || nok train_fp8_trains "rc=$rc $(tail -3 f8.err)"
echo "# max RSS (KiB): bf16 run n/a, fp8 run $(grep 'Maximum resident' f8.err | awk '{print $NF}')"
! cmp -s bf/last.safetensors f8/last.safetensors && ok train_fp8_differs || nok train_fp8_differs
[ "$(meta f8/last.safetensors ss_fp8_base)" = True ] && [ "$(meta f8/last.safetensors ss_fp8_base_unet)" = False ] &&
  [ "$(meta bf/last.safetensors ss_fp8_base)" = False ] && ok train_fp8_meta ||
  nok train_fp8_meta "$(meta f8/last.safetensors ss_fp8_base) $(meta f8/last.safetensors ss_fp8_base_unet)"
# the same run on a model rounded to float8 beforehand, without --fp8_base: the same bytes but the metadata
nu=$(prerounded tiny.safetensors r_all.safetensors model.diffusion_model. cond_stage_model.)
nt=$(prerounded tiny.safetensors r_unet.safetensors model.diffusion_model.)
M=r_all.safetensors T --output_dir pr --max_train_steps 4 --mixed_precision bf16 2> pr.err
strip() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
for k in sorted(h):
    if k != '__metadata__': s, e = h[k]['data_offsets']; sys.stdout.write(k + b[8 + n + s:8 + n + e].hex() + '\n')
PY
}
[ "$nu" -gt "$nt" ] && [ "$nt" -gt 0 ] && [ "$(strip pr/last.safetensors)" = "$(strip f8/last.safetensors)" ] &&
  ok train_fp8_equals_prerounded || nok train_fp8_equals_prerounded "changed $nu/$nt tensors"
# --fp8_base_unet: only the UNet in float8; the text encoder stays bf16
T --output_dir fu --max_train_steps 4 --mixed_precision bf16 --fp8_base_unet 2> fu.err
M=r_unet.safetensors T --output_dir pu --max_train_steps 4 --mixed_precision bf16 2> pu.err
[ "$(strip pu/last.safetensors)" = "$(strip fu/last.safetensors)" ] && [ "$(strip fu/last.safetensors)" != "$(strip f8/last.safetensors)" ] &&
  ok train_fp8_unet_only || nok train_fp8_unet_only "$(tail -2 fu.err)"
[ "$(meta fu/last.safetensors ss_fp8_base)" = False ] && [ "$(meta fu/last.safetensors ss_fp8_base_unet)" = True ] &&
  ok train_fp8_unet_meta || nok train_fp8_unet_meta
# fp16 mixed precision trains too
T --output_dir h8 --max_train_steps 2 --mixed_precision fp16 --fp8_base 2> h8.err && [ -s h8/last.safetensors ] &&
  ok train_fp8_fp16 || nok train_fp8_fp16 "$(tail -2 h8.err)"
# --base_weights: merged in float32, then rounded to float8 once (the reference merges before the cast)
T --output_dir bw0 --max_train_steps 1 --mixed_precision bf16 2> /dev/null
T --output_dir bw --max_train_steps 2 --mixed_precision bf16 --fp8_base --base_weights bw0/last.safetensors 2> bw.err; rc=$?
[ $rc = 0 ] && grep -q "all weights merged" bw.err && [ -s bw/last.safetensors ] &&
  [ "$(strip bw/last.safetensors)" != "$(strip f8/last.safetensors)" ] && ok train_fp8_base_weights ||
  nok train_fp8_base_weights "rc=$rc $(tail -2 bw.err)"
# --device cuda trains with float8 weights (widened on the device; CPU parity in tests/parity/train_cli.sh
# and test_parity_ops): the emulated CUDA build (make emu-bin) when built
ebin="$root/build/emu/bin/sd-train"
if [ -x "$ebin" ]; then
  "$ebin" --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --output_dir cu --network_dim 4 \
    --max_train_steps 1 --mixed_precision bf16 --fp8_base --device cuda 2> cu.err; rc=$?
  [ $rc = 0 ] && [ -s cu/last.safetensors ] && grep -q "training on emulated CUDA" cu.err && ok train_fp8_cuda ||
    nok train_fp8_cuda "rc=$rc $(tail -2 cu.err)"
else echo "ok train_fp8_cuda # SKIP build/emu/bin/sd-train not built (make emu-bin)"; fi
# SDXL (sdxl_train_network.py): both text encoders and the UNet, as the pre-rounded model
xcfg="$root/examples/tiny_sdxl.toml"
./tiny_model model xl.safetensors "$xcfg" > /dev/null || nok train_fp8_sdxl_model
X() { "$bin" --model "$1" --model_config "$xcfg" --data recs.jsonl --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 \
      --max_train_steps 2 --mixed_precision bf16 "${@:2}"; }
xp=$(python3 -c "
import json, struct; b = open('xl.safetensors', 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
print(' '.join(sorted({k.split('.')[0] + '.' for k in json.loads(b[8:8 + n]) if k != '__metadata__'})))")
prerounded xl.safetensors xl_r.safetensors model.diffusion_model. conditioner. > /dev/null
X xl.safetensors --output_dir x8 --fp8_base 2> x8.err; rc=$?
X xl_r.safetensors --output_dir xr 2> xr.err
X xl.safetensors --output_dir xb 2> /dev/null
[ $rc = 0 ] && [ "$(strip x8/last.safetensors)" = "$(strip xr/last.safetensors)" ] &&
  [ "$(strip x8/last.safetensors)" != "$(strip xb/last.safetensors)" ] && ok train_fp8_sdxl ||
  nok train_fp8_sdxl "rc=$rc prefixes: $xp $(tail -2 x8.err)"
