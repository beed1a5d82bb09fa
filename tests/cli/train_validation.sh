#!/usr/bin/env bash
# sd-train's validation split and validation loss (reference-behaviour §1.8, §6.14) on the tiny model
# of train.sh: the split sizes (repeats 1, regularisation images left out), passes after the requested
# steps and at epoch ends, the reference's TensorBoard tags with finite values, identical values across
# reruns and --threads 1/2, training unchanged by the passes (same LoRA tensors with and without them),
# the ss_* metadata, a resumed run splitting the same way (the state's seed), the folder convention with
# a dataset-level split, and option errors.
. "$(dirname "$0")/lib.sh"
t_init train_validation
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build --build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null ||
  { nok train_validation_tiny_model; exit 1; }
mkdir -p lat reg
# 8 training images with 2 repeats, 3 regularisation images
./tiny_model latents "$tmp/lat" 8 4 8 8 | sed 's/}$/,"num_repeats":2}/' > recs.jsonl &&
  ./tiny_model latents "$tmp/reg" 3 4 8 8 | sed 's/}$/,"is_reg":true}/' >> recs.jsonl ||
  { nok train_validation_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0
T() { "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --network_dim 4 --max_train_steps 6 "$@"; }
# validation scalars of the (only) event file under $1: "tag@step=value ..."
tbval() { python3 - "$(ls "$1"/*/network_train/events.out.tfevents.* 2> /dev/null | head -1)" <<'PY' 2>&1
import math, struct, sys
def varint(b, i):
    v = s = 0
    while True:
        x = b[i]; i += 1; v |= (x & 0x7f) << s; s += 7
        if x < 0x80: return v, i
def fields(b):
    i, out = 0, []
    while i < len(b):
        k, i = varint(b, i); f, wt = k >> 3, k & 7
        if wt == 0: v, i = varint(b, i)
        elif wt == 1: v = b[i:i + 8]; i += 8
        elif wt == 5: v = b[i:i + 4]; i += 4
        elif wt == 2: n, i = varint(b, i); v = b[i:i + n]; i += n
        out.append((f, v))
    return out
data = open(sys.argv[1], 'rb').read(); i = 0; out = []
while i < len(data):
    n = struct.unpack('<Q', data[i:i + 8])[0]; ev = data[i + 12:i + 12 + n]; i += 16 + n
    e = dict(fields(ev)); step = e.get(2, 0)
    if 5 not in e: continue
    for f, val in fields(e[5]):
        v = dict(fields(val)); tag = v[1].decode()
        if tag.startswith('loss/validation/') or tag == 'loss/epoch_average':
            x = struct.unpack('<f', v[2])[0]
            out.append('%s@%d=%s' % (tag, step, repr(x) if math.isfinite(x) else 'NONFINITE'))
print(' '.join(out))
PY
}
# the tensors of a LoRA file (name, dtype, shape, bytes) as one checksum line, or a metadata key
tensors() { python3 - "$1" <<'PY' 2>&1
import hashlib, json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
m = hashlib.sha256()
for k in sorted(k for k in h if k != '__metadata__'):
    o, e = h[k]['data_offsets']; m.update(('%s %s %s ' % (k, h[k]['dtype'], h[k]['shape'])).encode()); m.update(d[o:e])
print(m.hexdigest())
PY
}
meta() { python3 - "$1" "$2" <<'PY' 2>&1
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
print(json.loads(b[8:8 + n]).get('__metadata__', {}).get(sys.argv[2], '(absent)'))
PY
}

# ---- the split and the passes ------------------------------------------------------------------------------
T --seed 3 --threads 1 --output_dir a --validation_split 0.25 --validation_seed 11 --validate_every_n_steps 2 \
  --logging_dir la 2> a.err; rc=$?
[ $rc = 0 ] && [ -f a/last.safetensors ] && ok train_validation_runs || nok train_validation_runs "rc $rc $(tail -3 a.err)"
grep -q 'dataset 0: 8 images split 0.25 with seed 11: 6 training, 2 validation' a.err &&
  grep -q 'validation: 2 images (2 with repeats), 2 batches, 2 per pass, timesteps 200 400 600 800' a.err &&
  grep -q 'images with repeats: 12, reg images: 12' a.err && ! grep -q 'split.*3 images' a.err &&
  ok train_validation_split_sizes || nok train_validation_split_sizes "$(grep -i 'split\|validation:\|repeats:' a.err)"
steps=$(sed -n 's/.*validation at step \([0-9]*\):.*/\1/p' a.err | tr '\n' ' ')
[ "$steps" = "2 4 6 " ] && grep -q 'validation at the end of epoch 1: val_epoch_avg_loss' a.err &&
  ok train_validation_at_steps || nok train_validation_at_steps "steps: $steps"
va=$(tbval la)
pat='^loss/validation/step_average@2=[^ ]* loss/validation/step_divergence@2=[^ ]* loss/validation/step_average@4=[^ ]* '
pat="${pat}"'loss/validation/step_divergence@4=[^ ]* loss/validation/step_average@6=[^ ]* loss/validation/step_divergence@6=[^ ]* '
pat="${pat}"'loss/validation/epoch_average@1=[^ ]* loss/validation/epoch_divergence@1=[^ ]* loss/epoch_average@1=[^ ]*$'
echo "$va" | grep -q "$pat" && ! echo "$va" | grep -q NONFINITE && ok train_validation_tensorboard_tags ||
  nok train_validation_tensorboard_tags "$va"
# the epoch pass and the step-6 pass see the same weights: the step recorder (appending in epoch 0) holds
# passes 2, 4, 6, so 3·avg@6 − 2·avg@4 is the step-6 pass, which equals the epoch pass
c=$(echo "$va" | python3 -c "
import sys, re
d = dict(re.findall(r'(\S+)=(\S+)', sys.stdin.read())); g = lambda k: float(d[k])
s6 = 3 * g('loss/validation/step_average@6') - 2 * g('loss/validation/step_average@4')
e = g('loss/validation/epoch_average@1')
print('same' if abs(s6 - e) < 1e-5 * abs(e) else 'differ %r %r' % (s6, e))" 2>&1)
[ "$c" = same ] && ok train_validation_recorder || nok train_validation_recorder "$c"

# ---- reproducible: reruns, thread counts ---------------------------------------------------------------------
T --seed 3 --threads 2 --output_dir b --validation_split 0.25 --validation_seed 11 --validate_every_n_steps 2 \
  --logging_dir lb 2> b.err
vb=$(tbval lb)
[ -n "$va" ] && [ "$va" = "$vb" ] && cmp -s a/last.safetensors b/last.safetensors && ok train_validation_threads_same ||
  nok train_validation_threads_same "$va | $vb"
T --seed 3 --threads 1 --output_dir b1 --validation_split 0.25 --validation_seed 11 --validate_every_n_steps 2 \
  --logging_dir lb1 2> /dev/null
[ "$va" = "$(tbval lb1)" ] && cmp -s a/last.safetensors b1/last.safetensors && ok train_validation_rerun_same ||
  nok train_validation_rerun_same

# ---- training unchanged by the passes: the same split without any pass gives the same tensors -------------
T --seed 3 --threads 1 --output_dir c --validation_split 0.25 --validation_seed 11 --max_validation_steps 0 \
  --logging_dir lc 2> c.err
ta=$(tensors a/last.safetensors); tc=$(tensors c/last.safetensors)
vc=$(tbval lc)
[ -n "$ta" ] && [ "$ta" = "$tc" ] && ! grep -q 'validation at' c.err && [ "${vc#loss/epoch_average@1=}" != "$vc" ] &&
  ok train_validation_training_unchanged || nok train_validation_training_unchanged "$ta | $tc | $vc"
# also with network dropout (the passes run the network in eval mode) and gradient accumulation
T --seed 3 --threads 1 --output_dir d1 --validation_split 0.25 --validate_every_n_steps 1 --network_dropout 0.2 \
  --gradient_accumulation_steps 2 2> d1.err
T --seed 3 --threads 1 --output_dir d0 --validation_split 0.25 --max_validation_steps 0 --network_dropout 0.2 \
  --gradient_accumulation_steps 2 2> /dev/null
[ "$(grep -c 'validation at step' d1.err)" = 6 ] && [ "$(tensors d1/last.safetensors)" = "$(tensors d0/last.safetensors)" ] &&
  ok train_validation_unchanged_dropout_accum || nok train_validation_unchanged_dropout_accum "$(tail -2 d1.err)"
# a different validation seed picks other images, hence other training
T --seed 3 --threads 1 --output_dir e --validation_split 0.25 --validation_seed 12 --max_validation_steps 0 2> e.err
grep -q 'with seed 12: 6 training, 2 validation' e.err && [ "$(tensors e/last.safetensors)" != "$ta" ] &&
  ok train_validation_seed_selects || nok train_validation_seed_selects

# ---- metadata -------------------------------------------------------------------------------------------------
m="$(meta a/last.safetensors ss_num_validation_images) $(meta a/last.safetensors ss_validation_split)"
m="$m $(meta a/last.safetensors ss_validation_seed) $(meta a/last.safetensors ss_max_validation_steps)"
m="$m $(meta a/last.safetensors ss_validate_every_n_steps) $(meta a/last.safetensors ss_validate_every_n_epochs)"
m="$m $(meta a/last.safetensors ss_num_train_images)"
[ "$m" = "2 0.25 11 None 2 None 12" ] && ok train_validation_metadata || nok train_validation_metadata "$m"
T --seed 3 --threads 1 --output_dir n --max_train_steps 1 2> /dev/null
m="$(meta n/last.safetensors ss_num_validation_images) $(meta n/last.safetensors ss_validation_split) $(meta n/last.safetensors ss_validation_seed)"
[ "$m" = "0 0.0 None" ] && ok train_validation_metadata_off || nok train_validation_metadata_off "$m"

# ---- resume: the state's seed chooses the same split -----------------------------------------------------------
T --threads 1 --output_dir r --validation_split 0.25 --save_every_n_steps 3 --save_state --logging_dir lr 2> r.err
T --threads 1 --output_dir r2 --validation_split 0.25 --resume r/at-step00000003-state --logging_dir lr2 2> r2.err
s1=$(sed -n 's/.*images split 0.25 with seed \([0-9]*\).*/\1/p' r.err); s2=$(sed -n 's/.*images split 0.25 with seed \([0-9]*\).*/\1/p' r2.err)
e1=$(tbval lr | tr ' ' '\n' | grep validation/epoch_average@1); e2=$(tbval lr2 | tr ' ' '\n' | grep validation/epoch_average@1)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$(tensors r/last.safetensors)" = "$(tensors r2/last.safetensors)" ] &&
  [ -n "$e1" ] && [ "$e1" = "$e2" ] && ok train_validation_resume || nok train_validation_resume "$s1/$s2 $e1 | $e2 $(tail -2 r2.err)"

# ---- the folder convention: validation_split from --config_file, images encoded for both sets ----------------
mkdir -p img/3_sks
./tiny_model images img/3_sks 4 64 64 > /dev/null || nok train_validation_images
printf 'validation_split = 0.5\nvalidation_seed = 1\n' > cfg.toml
"$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 --threads 1 \
  --learning_rate 1e-3 --train_data_dir img --resolution 64 --cache_latents --max_train_steps 2 --config_file cfg.toml \
  --output_dir f 2> f.err; rc=$?
[ $rc = 0 ] && grep -q 'dataset 0 subset 0: 4 images split 0.5 with seed 1: 2 training, 2 validation' f.err &&
  grep -q 'validation at the end of epoch 1' f.err && [ "$(meta f/last.safetensors ss_num_validation_images)" = 2 ] &&
  [ "$(meta f/last.safetensors ss_num_train_images)" = 6 ] &&
  ok train_validation_folders || nok train_validation_folders "rc $rc $(grep -i 'valid\|error' f.err | head -5)"

# ---- warnings and errors ---------------------------------------------------------------------------------------
T --seed 3 --threads 1 --output_dir w --validation_split 1.5 --max_train_steps 1 2> w.err; rc=$?
[ $rc = 0 ] && grep -q 'validation_split 1.5 is not a valid number between 0.0 and 1.0' w.err && ! grep -q 'validation at' w.err &&
  [ "$(meta w/last.safetensors ss_num_train_images)" = 16 ] && ok train_validation_split_out_of_range ||
  nok train_validation_split_out_of_range "rc $rc $(tail -2 w.err)"
T --seed 3 --threads 1 --output_dir x --validate_every_n_steps 0 2> x.err; rc=$?
[ $rc = 2 ] && grep -q 'validate_every_n_steps' x.err && ok train_validation_bad_option || nok train_validation_bad_option "rc $rc $(cat x.err)"
T --seed 3 --threads 1 --output_dir y --validation_split 1 2> y.err; rc=$?
[ $rc = 1 ] && grep -q 'leaves no training images' y.err && ok train_validation_all_held_out ||
  nok train_validation_all_held_out "rc $rc $(tail -2 y.err)"
exit 0
