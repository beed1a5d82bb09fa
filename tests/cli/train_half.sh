#!/usr/bin/env bash
# sd-train --full_fp16 / --full_bf16 on the tiny random model: the reference's assertions (each needs
# its --mixed_precision; not both); a LoRA run saves its weights in the half dtype (a float alpha too,
# an integer alpha stays I64, --save_precision float overrides), every saved value is a value of
# that dtype and differs from the float32 run, ss_full_fp16 records --full_fp16; a resumed run ends
# with the same bytes; fp16 with AdamW8bit trains; --method db saves UNet and text encoder in f16;
# --method ti saves a bf16 embedding; the optimizer through the device ops (SD_DEVICE_OPTIM=1) gives
# the same bytes, resumed too.
. "$(dirname "$0")/lib.sh"
t_init train_half
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
cfg="$root/examples/tiny_model.toml"
./tiny_model model tiny.safetensors "$cfg" > /dev/null || { nok train_half_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_half_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
B() { "$bin" --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-2 --seed 3 --threads 1 "$@"; }
T() { B --network_dim 4 "$@"; }
# dtypes FILE [PREFIX]: "DTYPE:count" per dtype of the tensors (under PREFIX), sorted
dtypes() { python3 - "$1" "${2:-}" <<'PY'
import collections, json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
c = collections.Counter(v['dtype'] for k, v in h.items() if k != '__metadata__' and k.startswith(sys.argv[2]))
print(' '.join('%s:%d' % kv for kv in sorted(c.items())))
PY
}
# f32_is_half A: every lora weight of A (an F32 file) is exactly a bf16 value; "yes"/"no"
f32_is_bf16() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
ok = True
for k, v in h.items():
    if k == '__metadata__' or not k.endswith('weight'): continue
    s, e = v['data_offsets']; raw = b[8 + n + s:8 + n + e]
    ok &= all(u & 0xffff == 0 for u in struct.unpack('<%dI' % (len(raw) // 4), raw))
print('yes' if ok else 'no')
PY
}

# ---- the reference's assertions --------------------------------------------------------------------------
T --output_dir e1 --max_train_steps 1 --full_fp16 2> e1.err; rc=$?
[ $rc = 2 ] && grep -q "full_fp16 requires mixed precision='fp16'" e1.err && ok train_half_fp16_needs_mp ||
  nok train_half_fp16_needs_mp "rc=$rc $(cat e1.err)"
T --output_dir e2 --max_train_steps 1 --mixed_precision fp16 --full_bf16 2> e2.err; rc=$?
[ $rc = 2 ] && grep -q "full_bf16 requires mixed precision='bf16'" e2.err && ok train_half_bf16_needs_mp ||
  nok train_half_bf16_needs_mp "rc=$rc $(cat e2.err)"
T --output_dir e3 --max_train_steps 1 --mixed_precision bf16 --full_bf16 --full_fp16 2> e3.err; rc=$?
[ $rc = 2 ] && grep -q "exclude each other" e3.err && ok train_half_not_both || nok train_half_not_both "rc=$rc $(cat e3.err)"

# ---- LoRA --------------------------------------------------------------------------------------------------
T --output_dir f32 --max_train_steps 4 --mixed_precision bf16 2> /dev/null
T --output_dir bf --max_train_steps 4 --mixed_precision bf16 --full_bf16 --network_alpha 2 2> bf.err
dtypes bf/last.safetensors | grep -q '^BF16:[0-9]*$' && dtypes f32/last.safetensors | grep -q F32 &&
  ok train_half_lora_bf16_dtype || nok train_half_lora_bf16_dtype "$(dtypes bf/last.safetensors) $(tail -1 bf.err)"
grep -q 'full_bf16: the trained weights' bf.err && ok train_half_lora_message || nok train_half_lora_message
[ "$(t_meta bf/last.safetensors ss_full_fp16)" = False ] && ok train_half_lora_meta_bf16 || nok train_half_lora_meta_bf16
# the same run saved as float: every weight a bf16 value, and not those of the f32 run
T --output_dir bff --max_train_steps 4 --mixed_precision bf16 --full_bf16 --network_alpha 2 --save_precision float 2> /dev/null
[ "$(f32_is_bf16 bff/last.safetensors)" = yes ] && [ "$(f32_is_bf16 f32/last.safetensors)" = no ] &&
  ! cmp -s bff/last.safetensors f32/last.safetensors && ok train_half_lora_bf16_values ||
  nok train_half_lora_bf16_values "$(f32_is_bf16 bff/last.safetensors) $(f32_is_bf16 f32/last.safetensors)"
# an integer alpha from a config file stays I64 (Module.to leaves integer buffers alone)
printf 'network_alpha = 2\n' > alpha.toml
T --output_dir bfi --max_train_steps 1 --mixed_precision bf16 --full_bf16 --config_file alpha.toml 2> /dev/null
dtypes bfi/last.safetensors | grep -q '^BF16:[0-9]* I64:[0-9]*$' && ok train_half_lora_int_alpha || nok train_half_lora_int_alpha "$(dtypes bfi/last.safetensors)"
# fp16 with AdamW: eps 1e-8 is 0 in float16 (a warning says so; in the reference as here an element whose
# exp_avg_sq underflows gets an inf weight); with a larger eps it trains: F16 weights, ss_full_fp16 True
T --output_dir fpn --max_train_steps 4 --mixed_precision fp16 --full_fp16 2> fpn.err
grep -q 'eps 1e-08 is 0 in float16' fpn.err && ok train_half_lora_fp16_eps_warning ||
  nok train_half_lora_fp16_eps_warning "$(head -3 fpn.err)"
T --output_dir fp --max_train_steps 4 --mixed_precision fp16 --full_fp16 --network_alpha 1 --optimizer_args eps=1e-4 2> fp.err
[ "$(t_meta fp/last.safetensors ss_full_fp16)" = True ] && dtypes fp/last.safetensors | grep -q '^F16:[0-9]*$' &&
  ! grep -q 'is 0 in float16' fp.err && ok train_half_lora_fp16 || nok train_half_lora_fp16 "$(dtypes fp/last.safetensors) $(tail -1 fp.err)"
# with AdamW8bit (the pairing the reference's guide recommends: its kernels compute in float32)
T --output_dir fp8 --max_train_steps 4 --mixed_precision fp16 --full_fp16 --optimizer_type AdamW8bit --network_alpha 1 \
  --optimizer_args min_8bit_size=16 2> fp8.err && dtypes fp8/last.safetensors | grep -q '^F16:[0-9]*$' &&
  ! grep -q 'is 0 in float16' fp8.err && ok train_half_lora_fp16_8bit || nok train_half_lora_fp16_8bit "$(tail -2 fp8.err)"
# resume: the same bytes as the uninterrupted run
T --output_dir r --max_train_steps 8 --mixed_precision bf16 --full_bf16 --save_every_n_steps 4 --save_state 2> /dev/null
T --output_dir q --max_train_steps 8 --mixed_precision bf16 --full_bf16 --resume r/at-step00000004-state 2> q.err
[ -f r/last.safetensors ] && cmp -s r/last.safetensors q/last.safetensors && ok train_half_lora_resume ||
  nok train_half_lora_resume "$(tail -2 q.err)"

# the optimizer through the device ops (SD_DEVICE_OPTIM=1; what a GPU runs): the same bytes, full_bf16 and fp16 scaler
SD_DEVICE_OPTIM=1 T --output_dir bfo --max_train_steps 4 --mixed_precision bf16 --full_bf16 --network_alpha 2 2> bfo.err
grep -q 'AdamW runs on the CPU through the device ops' bfo.err && cmp -s bf/last.safetensors bfo/last.safetensors &&
  ok train_half_lora_device_optim || nok train_half_lora_device_optim "$(tail -2 bfo.err)"
SD_DEVICE_OPTIM=1 T --output_dir f32o --max_train_steps 4 --mixed_precision bf16 2> /dev/null
cmp -s f32/last.safetensors f32o/last.safetensors && ok train_half_lora_f32_device_optim || nok train_half_lora_f32_device_optim
SD_DEVICE_OPTIM=1 T --output_dir qo --max_train_steps 8 --mixed_precision bf16 --full_bf16 --resume r/at-step00000004-state \
  2> qo.err
cmp -s r/last.safetensors qo/last.safetensors && ok train_half_lora_device_optim_resume ||
  nok train_half_lora_device_optim_resume "$(tail -2 qo.err)"
SD_DEVICE_OPTIM=1 T --output_dir fpo --max_train_steps 4 --mixed_precision fp16 --full_fp16 --network_alpha 1 \
  --optimizer_args eps=1e-4 2> fpo.err
cmp -s fp/last.safetensors fpo/last.safetensors && ok train_half_lora_fp16_device_optim ||
  nok train_half_lora_fp16_device_optim "$(tail -2 fpo.err)"

# ---- db: UNet and text encoder saved in f16 --------------------------------------------------------------------
B --method db --output_dir db --max_train_steps 2 --mixed_precision fp16 --full_fp16 --save_model_as safetensors \
  --optimizer_args eps=1e-4 \
  2> db.err
[ "$(dtypes db/last.safetensors model.diffusion_model.)" = "F16:$(dtypes db/last.safetensors model.diffusion_model. | sed 's/.*F16:\([0-9]*\).*/\1/')" ] &&
  [ "$(dtypes db/last.safetensors cond_stage_model.)" = "F16:$(dtypes db/last.safetensors cond_stage_model. | sed 's/.*F16:\([0-9]*\).*/\1/')" ] &&
  grep -q 'float32 buffers holding float16 values' db.err && ok train_half_db_fp16 ||
  nok train_half_db_fp16 "$(dtypes db/last.safetensors) $(tail -2 db.err)"

# ---- ti: a bf16 embedding -------------------------------------------------------------------------------------
sed 's/"caption":"sks, /"caption":"zqtok, /' recs.jsonl > ti.jsonl
"$bin" --method ti --model tiny.safetensors --model_config "$cfg" --data ti.jsonl --token_string zqtok --learning_rate 5e-2 \
  --seed 3 --threads 1 --output_dir ti --max_train_steps 2 --mixed_precision bf16 --full_bf16 --save_model_as safetensors \
  2> ti.err
[ "$(dtypes ti/zqtok.safetensors)" = "BF16:1" ] && ok train_half_ti_bf16 || nok train_half_ti_bf16 "$(dtypes ti/zqtok.safetensors) $(tail -2 ti.err)"
