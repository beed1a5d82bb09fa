#!/usr/bin/env bash
# sd-train's sample images during training (spec §6.13) on the tiny model of train.sh (64x64 images,
# 2-3 sampler steps): files at the requested steps/epochs under <output_dir>/sample/ with the
# reference's names, --sample_at_first, --sample_every_n_epochs overriding the steps trigger, the
# A1111 parameters text, TensorBoard image records, prompt-file and option errors before training,
# and training unchanged by sampling (same LoRA bytes with and without; also with dropout and
# gradient checkpointing; resumed runs sample the same images and end with the same bytes).
. "$(dirname "$0")/lib.sh"
t_init train_sample
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build --build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_sample_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_sample_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0
T() { "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 "$@"; }
# names in a sample folder, the 14-digit time replaced by T
names() { ls "$1" 2> /dev/null | sed 's/_[0-9]\{14\}/_T/' | LC_ALL=C sort | tr '\n' ' '; }
text() { python3 - "$1" <<'PY'
import struct, sys, zlib
b = open(sys.argv[1], 'rb').read(); i = 8
while i < len(b):
    n = struct.unpack('>I', b[i:i + 4])[0]; t = b[i + 4:i + 8]; d = b[i + 8:i + 8 + n]; i += 12 + n
    if t == b'tEXt' and d.startswith(b'parameters\0'): print(d[11:].decode('latin-1'))
    if t == b'iTXt' and d.startswith(b'parameters\0'):
        r = d[11:]; comp = r[0]; r = r[2:]; r = r[r.index(b'\0') + 1:]; r = r[r.index(b'\0') + 1:]
        print((zlib.decompress(r) if comp else r).decode('utf-8'))
PY
}
cat > p.txt <<'EOF'
# sample prompts
a red square --w 64 --h 64 --s 2 --d 7
sks dog --n blurry --w 64 --h 80 --s 3 --l 5
EOF

# ---- steps and at-first: names, sizes, parameters, TensorBoard ------------------------------------------
T --output_dir a --output_name tl --max_train_steps 8 --sample_prompts p.txt --sample_every_n_steps 3 --sample_at_first \
  --logging_dir logs 2> a.err; rc=$?
[ $rc = 0 ] && ok train_sample_runs || nok train_sample_runs "rc $rc $(tail -3 a.err)"
n=$(names a/sample)
[ "$n" = "tl_000003_00_T_7.png tl_000003_01_T.png tl_000006_00_T_7.png tl_000006_01_T.png tl_e000000_00_T_7.png tl_e000000_01_T.png " ] &&
  ok train_sample_step_names || nok train_sample_step_names "$n"
ls a/sample | grep -q '^tl_000003_00_[0-9]\{14\}_7\.png$' && ok train_sample_time_format || nok train_sample_time_format "$(ls a/sample)"
f0=$(ls a/sample/tl_000003_00_*.png 2> /dev/null | head -1); f1=$(ls a/sample/tl_000003_01_*.png 2> /dev/null | head -1)
sz=$(python3 -c "
import struct,sys
for f in sys.argv[1:]:
    b=open(f,'rb').read(); print(*struct.unpack('>II', b[16:24]), b[25], end=' ')" "$f0" "$f1" 2>&1)
[ "$sz" = "64 64 2 64 80 2 " ] && ok train_sample_png_size || nok train_sample_png_size "$sz"
t0=$(text "$f0"); t1=$(text "$f1")
[ "$t0" = "$(printf 'a red square\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 64x64, Model: tiny')" ] &&
  printf '%s' "$t1" | grep -q '^Negative prompt: blurry$' && printf '%s' "$t1" | grep -q 'Steps: 3, Sampler: DDIM, CFG scale: 5\(\.0\)\?, Seed: [0-9]*, Size: 64x80' &&
  ok train_sample_parameters || nok train_sample_parameters "$t0 | $t1"
grep -q 'generating sample images at step 3' a.err && ok train_sample_log_line || nok train_sample_log_line
ev=$(ls logs/*/network_train/events.out.tfevents.* 2> /dev/null | head -1)
tb=$(python3 - "$ev" <<'PY' 2>&1
import struct, sys
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
data = open(sys.argv[1], 'rb').read(); i = 0; imgs = []
while i < len(data):
    n = struct.unpack('<Q', data[i:i + 8])[0]; ev = data[i + 12:i + 12 + n]; i += 16 + n
    e = dict(fields(ev)); step = e.get(2, 0)
    if 5 not in e: continue
    for f, val in fields(e[5]):
        v = dict(fields(val))
        if 4 in v:
            im = dict(fields(v[4]))
            ok = im[4][:8] == b'\x89PNG\r\n\x1a\n'
            imgs.append('%s@%d:%dx%dc%d%s' % (v[1].decode(), step, im[2], im[1], im[3], '' if ok else '!png'))
print(' '.join(imgs))
PY
)
[ "$tb" = "sample_0@0:64x64c3 sample_1@0:64x80c3 sample_0@3:64x64c3 sample_1@3:64x80c3 sample_0@6:64x64c3 sample_1@6:64x80c3" ] &&
  ok train_sample_tensorboard_images || nok train_sample_tensorboard_images "$tb"

# ---- training is unchanged by sampling ----------------------------------------------------------------------
T --output_dir b --output_name tl --max_train_steps 8 2> /dev/null
cmp -s a/tl.safetensors b/tl.safetensors && ok train_sample_same_lora_bytes || nok train_sample_same_lora_bytes
T --output_dir c1 --max_train_steps 5 --network_dropout 0.1 --network_args rank_dropout=0.1 module_dropout=0.1 \
  --gradient_checkpointing --sample_prompts p.txt --sample_every_n_steps 1 --sample_sampler euler_a 2> c1.err
T --output_dir c0 --max_train_steps 5 --network_dropout 0.1 --network_args rank_dropout=0.1 module_dropout=0.1 \
  --gradient_checkpointing 2> /dev/null
[ "$(ls c1/sample | wc -l)" = 10 ] && cmp -s c0/last.safetensors c1/last.safetensors &&
  ok train_sample_same_bytes_dropout_checkpointing || nok train_sample_same_bytes_dropout_checkpointing "$(tail -2 c1.err)"
text "$(ls c1/sample/000001_00_*.png | head -1)" | grep -q 'Sampler: Euler a,' && ok train_sample_sampler_option ||
  nok train_sample_sampler_option
# the images follow the training: the same prompt and seed at step 1 and step 5 differ (the LoRA changed)
if [ -f "$(ls c1/sample/000001_00_*.png | head -1)" ] &&
   ! cmp -s "$(ls c1/sample/000001_00_*.png | head -1)" "$(ls c1/sample/000005_00_*.png | head -1)"; then
  ok train_sample_uses_trained_lora; else nok train_sample_uses_trained_lora; fi

# ---- epochs: every_n_epochs overrides every_n_steps; the last (short) epoch samples too ---------------------
T --output_dir e --max_train_steps 8 --sample_prompts p.txt --sample_every_n_epochs 1 --sample_every_n_steps 1 2> e.err
n=$(names e/sample)
[ "$n" = "e000001_00_T_7.png e000001_01_T.png e000002_00_T_7.png e000002_01_T.png " ] && ok train_sample_epoch_names ||
  nok train_sample_epoch_names "$n"
T --output_dir e2 --max_train_epochs 3 --sample_prompts p.txt --sample_every_n_epochs 2 2> /dev/null
n=$(names e2/sample)
[ "$n" = "e000002_00_T_7.png e000002_01_T.png " ] && ok train_sample_every_2_epochs || nok train_sample_every_2_epochs "$n"
# a .toml prompt file works the same way
cat > p.toml <<'EOF'
[prompt]
width = 64
height = 64
sample_steps = 2
[[prompt.subset]]
prompt = "a red square"
seed = 7
EOF
T --output_dir t --max_train_steps 3 --sample_prompts p.toml --sample_every_n_steps 3 2> t.err
n=$(names t/sample)
[ "$n" = "000003_00_T_7.png " ] && cmp -s t/sample/000003_00_*.png "$(ls a/sample/tl_000003_00_*.png | head -1)" &&
  ok train_sample_toml_prompts || nok train_sample_toml_prompts "$n $(tail -2 t.err)"

# ---- errors before training ------------------------------------------------------------------------------------
printf 'a cat --w 64 --h 64\na dog --w 65 --h 64\n' > bad1.txt
T --output_dir x1 --max_train_steps 2 --sample_prompts bad1.txt --sample_every_n_steps 1 2> x1.err; rc=$?
[ $rc = 1 ] && grep -q 'bad1.txt:2:' x1.err && [ ! -e x1/last.safetensors ] && ! grep -q 'images with repeats' x1.err &&
  ok train_sample_bad_size_line || nok train_sample_bad_size_line "rc $rc $(cat x1.err)"
printf '# c\n\na cat --zz 3\n' > bad2.txt
T --output_dir x2 --max_train_steps 2 --sample_prompts bad2.txt --sample_at_first 2> x2.err; rc=$?
[ $rc = 1 ] && grep -q 'bad2.txt:3:' x2.err && [ ! -e x2/last.safetensors ] && ok train_sample_unknown_option_line ||
  nok train_sample_unknown_option_line "rc $rc $(cat x2.err)"
printf 'a cat --w 64 --h 64\na dog --w 72 --h 64 --s 2\n' > bad3.txt   # the tiny model needs multiples of 16
T --output_dir x3 --max_train_steps 2 --sample_prompts bad3.txt --sample_at_first 2> x3.err; rc=$?
[ $rc = 1 ] && grep -q 'bad3.txt:2: size 72x64' x3.err && [ ! -e x3/last.safetensors ] && ! grep -q 'generating' x3.err &&
  ok train_sample_model_size_line || nok train_sample_model_size_line "rc $rc $(cat x3.err)"
printf 'a cat --w 64 --h 64 --ss pndm --s 3\n' > bad4.txt
T --output_dir x4 --max_train_steps 2 --sample_prompts bad4.txt --sample_at_first 2> x4.err; rc=$?
[ $rc = 1 ] && grep -q 'bad4.txt:1: the pndm sampler needs at least 4 steps' x4.err && ok train_sample_pndm_steps ||
  nok train_sample_pndm_steps "rc $rc $(cat x4.err)"
T --output_dir x5 --max_train_steps 2 --sample_prompts missing.txt --sample_at_first 2> x5.err; rc=$?
[ $rc = 1 ] && grep -q 'missing.txt' x5.err && ok train_sample_missing_file || nok train_sample_missing_file "rc $rc $(cat x5.err)"
T --output_dir x6 --max_train_steps 2 --sample_every_n_steps 1 2> x6.err; rc=$?
[ $rc = 2 ] && grep -q 'needs --sample_prompts' x6.err && ok train_sample_needs_prompts || nok train_sample_needs_prompts "rc $rc $(cat x6.err)"
T --output_dir x7 --max_train_steps 2 --sample_prompts p.txt --sample_at_first --sample_sampler k_foo 2> x7.err; rc=$?
[ $rc = 2 ] && grep -q "sample_sampler" x7.err && ok train_sample_bad_sampler || nok train_sample_bad_sampler "rc $rc $(cat x7.err)"
T --output_dir x8 --max_train_steps 2 --sample_prompts p.txt 2> x8.err; rc=$?
[ $rc = 0 ] && [ ! -e x8/sample ] && grep -q 'no sample images will be made' x8.err && ok train_sample_no_trigger_warns ||
  nok train_sample_no_trigger_warns "rc $rc $(cat x8.err)"

# ---- resume with sampling: the same images after the resume point and the same final bytes -----------------------
T --output_dir r1 --max_train_steps 8 --save_every_n_steps 4 --save_state --sample_prompts p.txt --sample_every_n_steps 2 \
  2> /dev/null
T --output_dir r2 --max_train_steps 8 --resume r1/at-step00000004-state --sample_prompts p.txt --sample_every_n_steps 2 \
  --sample_at_first 2> r2.err; rc=$?
n=$(names r2/sample)
same=1
for s in 000006_00 000006_01 000008_00 000008_01; do
  cmp -s "$(ls r1/sample/${s}_*.png | head -1)" "$(ls r2/sample/${s}_*.png | head -1)" || same=0
done
[ $rc = 0 ] && [ "$n" = "000006_00_T_7.png 000006_01_T.png 000008_00_T_7.png 000008_01_T.png " ] && [ $same = 1 ] &&
  ok train_sample_resume_images || nok train_sample_resume_images "rc $rc same $same: $n $(tail -2 r2.err)"
T --output_dir r0 --max_train_steps 8 2> /dev/null
cmp -s r0/last.safetensors r1/last.safetensors && cmp -s r1/last.safetensors r2/last.safetensors &&
  ok train_sample_resume_same_bytes || nok train_sample_resume_same_bytes
# a resumed run with --sample_every_n_epochs samples at its start (epoch 0, the reference's rule)
T --output_dir r3 --max_train_steps 8 --resume r1/at-step00000004-state --sample_prompts p.txt --sample_every_n_epochs 5 \
  2> /dev/null
n=$(names r3/sample)
[ "$n" = "e000000_00_T_7.png e000000_01_T.png " ] && ok train_sample_resume_epoch_rule || nok train_sample_resume_epoch_rule "$n"

# ---- SIGTERM during a (slow) sample round: the round stops, the step is finished, a state is written (143) --------
printf 'slow --w 64 --h 64 --s 1000 --d 1\n' > slow.txt
( exec "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 --output_dir s1 --max_train_steps 8 \
  --sample_prompts slow.txt --sample_at_first 2> s1.err ) & pid=$!
for i in $(seq 300); do grep -q 'generating sample images' s1.err 2> /dev/null && break; sleep 0.1; done
kill -TERM $pid; wait $pid; rc=$?
st=$(ls -d s1/*-state 2> /dev/null | tail -1)
if [ $rc = 143 ] && [ -n "$st" ] && grep -q 'interrupted' s1.err && [ ! -e s1/sample/e000000_00_*.png ]; then
  ok train_sample_sigterm; else nok train_sample_sigterm "rc $rc state '$st' $(tail -3 s1.err)"; fi
if [ -n "$st" ]; then
  T --output_dir s1 --max_train_steps 8 --resume "$st" 2> /dev/null
  cmp -s r0/last.safetensors s1/last.safetensors && ok train_sample_sigterm_resume_same_bytes ||
    nok train_sample_sigterm_resume_same_bytes
else nok train_sample_sigterm_resume_same_bytes "no state"; fi
