#!/usr/bin/env bash
# sd-train --method db / ft (full-weight DreamBooth and fine-tuning) on the tiny random model: the
# saved checkpoint has every key of the source and loads in sd-model info and sd-sample; the text
# encoder stops changing after --stop_text_encoder_training N and is untouched by ft without
# --train_text_encoder; epoch/step/final names; --save_model_as ckpt / --use_safetensors /
# --save_precision; ModelSpec metadata; the option refusals; kill -9 then --resume gives a
# byte-identical final checkpoint; the same bytes with --threads 1 and 2.
. "$(dirname "$0")/lib.sh"
t_init train_full
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_full_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_full_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
cfg="$root/examples/tiny_model.toml"
D() { "$bin" --method db --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 \
  --seed 3 --threads 1 "$@"; }
F() { "$bin" --method ft --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 \
  --seed 3 --threads 1 "$@"; }
Dbg() { exec "$bin" --method dreambooth --model tiny.safetensors --model_config "$cfg" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --threads 1 "$@"; }
# st_cmp A B PREFIX: "same" when every tensor under PREFIX has the same values in both files (F16 and
# F32 compared as numbers: the tiny model is F16, a --mixed_precision no save is F32), else "diff"
st_cmp() { python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); return b[8 + n:], h
def vals(d, v):
    raw = d[v['data_offsets'][0]:v['data_offsets'][1]]
    f = {'F16': 'e', 'F32': 'f'}.get(v['dtype'])
    return struct.unpack('<%d%s' % (len(raw) // struct.calcsize(f), f), raw) if f else raw
(da, ha), (db, hb) = load(sys.argv[1]), load(sys.argv[2])
same, cnt = True, 0
for k, v in ha.items():
    if k == '__metadata__' or not k.startswith(sys.argv[3]): continue
    w = hb[k]; cnt += 1
    if v['shape'] != w['shape'] or vals(da, v) != vals(db, w): same = False
print(('same' if same else 'diff') if cnt else 'none')
PY
}
keys() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
for k in sorted(h):
    if k != '__metadata__': print(k)
PY
}
TE=cond_stage_model.
UN=model.diffusion_model.
VAE=first_stage_model.

# ---- DreamBooth: a run, the saved checkpoint ---------------------------------------------------------
if D --output_dir d1 --max_train_steps 6 --save_every_n_steps 1 --stop_text_encoder_training 3 --logging_dir logs \
     2> d1.err; then ok train_full_db_runs; else nok train_full_db_runs "$(tail -3 d1.err)"; fi
[ -f d1/last.safetensors ] && ok train_full_db_output || nok train_full_db_output "$(ls d1)"
keys tiny.safetensors > keys0.txt; keys d1/last.safetensors > keys1.txt
cmp -s keys0.txt keys1.txt && ok train_full_all_source_keys || nok train_full_all_source_keys "$(diff keys0.txt keys1.txt | head -3)"
grep -q 'training .* weights (UNet and text encoder) in float32: weights .* gradients .* AdamW moments' d1.err &&
  ok train_full_memory_message || nok train_full_memory_message "$(head -2 d1.err)"
[ "$(t_meta d1/last.safetensors modelspec.architecture)" = stable-diffusion-v1 ] &&
[ "$(t_meta d1/last.safetensors modelspec.implementation)" = https://github.com/Stability-AI/generative-models ] &&
[ "$(t_meta d1/last.safetensors modelspec.title)" = Checkpoint@1700000000.0 ] &&
[ "$(t_meta d1/last.safetensors ss_network_module)" = '<absent>' ] && ok train_full_modelspec ||
  nok train_full_modelspec "$(t_meta d1/last.safetensors modelspec.title)"
ls logs/*/dreambooth/events.out.tfevents.* > /dev/null 2>&1 && ok train_full_tracker_name || nok train_full_tracker_name
# UNet changed, VAE copied, TE changed until step 3 and not after
[ "$(st_cmp tiny.safetensors d1/last.safetensors $UN)" = diff ] && ok train_full_unet_trained || nok train_full_unet_trained
[ "$(st_cmp tiny.safetensors d1/last.safetensors $VAE)" = same ] && ok train_full_vae_kept || nok train_full_vae_kept
[ "$(st_cmp d1/at-step00000002.safetensors d1/at-step00000003.safetensors $TE)" = diff ] &&
[ "$(st_cmp d1/at-step00000003.safetensors d1/at-step00000004.safetensors $TE)" = same ] &&
[ "$(st_cmp d1/at-step00000003.safetensors d1/last.safetensors $TE)" = same ] &&
[ "$(st_cmp d1/at-step00000004.safetensors d1/last.safetensors $UN)" = diff ] &&
grep -q 'stop text encoder training at step 3' d1.err && ok train_full_te_stop || nok train_full_te_stop
D --output_dir d2 --max_train_steps 3 --stop_text_encoder_training -1 2> d2.err
[ "$(st_cmp tiny.safetensors d2/last.safetensors $TE)" = same ] && grep -q 'Text Encoder is not trained' d2.err &&
  ok train_full_te_not_trained || nok train_full_te_not_trained
# loads in sd-model info and sd-sample
"$root/$build/bin/sd-model" info d1/last.safetensors --model_config "$cfg" > info.txt 2>&1 &&
  grep -q 'text_encoder' info.txt && ok train_full_model_info || nok train_full_model_info "$(tail -2 info.txt)"
"$root/$build/bin/sd-sample" --model d1/last.safetensors --model_config "$cfg" --W 64 --H 64 --steps 2 --prompt sks \
  --seed 1 --threads 1 --outdir smp > smp.err 2>&1 && [ "$(ls smp | wc -l)" = 1 ] && ok train_full_sample_loads ||
  nok train_full_sample_loads "$(tail -2 smp.err)"

# ---- threads: same bytes -----------------------------------------------------------------------------
D --output_dir d3 --max_train_steps 6 --save_every_n_steps 1 --stop_text_encoder_training 3 --threads 2 2> /dev/null
cmp -s d1/last.safetensors d3/last.safetensors && ok train_full_threads_same_bytes || nok train_full_threads_same_bytes

# ---- fine-tuning ----------------------------------------------------------------------------------------
F --output_dir f1 --max_train_steps 3 --output_name ft 2> f1.err
[ -f f1/ft.safetensors ] && [ "$(st_cmp tiny.safetensors f1/ft.safetensors $TE)" = same ] &&
[ "$(st_cmp tiny.safetensors f1/ft.safetensors $UN)" = diff ] && ok train_full_ft_unet_only || nok train_full_ft_unet_only
F --output_dir f2 --max_train_steps 3 --train_text_encoder --learning_rate_te 5e-4 --logging_dir flogs 2> f2.err
[ "$(st_cmp tiny.safetensors f2/last.safetensors $TE)" = diff ] && grep -q 'enable text encoder training' f2.err &&
  ok train_full_ft_text_encoder || nok train_full_ft_text_encoder "$(tail -2 f2.err)"
ls flogs/*/finetuning/events.out.tfevents.* > /dev/null 2>&1 && ok train_full_ft_tracker || nok train_full_ft_tracker

# ---- names and formats ------------------------------------------------------------------------------------
D --output_dir n1 --output_name m --max_train_steps 12 --save_every_n_steps 4 --save_every_n_epochs 1 \
  --save_model_as ckpt --save_precision fp16 2> n1.err
ls n1 | LC_ALL=C sort | tr '\n' ' ' > n1.ls
[ "$(cat n1.ls)" = "m-000001.ckpt m-step00000004.ckpt m-step00000008.ckpt m.ckpt " ] && ok train_full_names_ckpt ||
  nok train_full_names_ckpt "$(cat n1.ls) $(tail -2 n1.err)"
"$root/$build/bin/sd-model" info n1/m.ckpt --model_config "$cfg" > info2.txt 2>&1 && grep -q 'format *ckpt' info2.txt &&
  grep -q 'unet .*(F16)' info2.txt && ok train_full_ckpt_loads || nok train_full_ckpt_loads "$(head -8 info2.txt)"
"$root/$build/bin/sd-model" convert n1/m.ckpt n1m.safetensors --model_config "$cfg" > /dev/null 2>&1
[ "$(t_meta n1m.safetensors epoch)" = 1 ] && [ "$(t_meta n1m.safetensors global_step)" = 12 ] &&
  ok train_full_ckpt_epoch_step || nok train_full_ckpt_epoch_step "$(t_meta n1m.safetensors epoch) $(t_meta n1m.safetensors global_step)"
# a .ckpt source: the default format is ckpt, epoch/global_step add to the source's
D --model n1/m.ckpt --output_dir n2 --max_train_steps 2 2> n2.err
[ -f n2/last.ckpt ] && ok train_full_default_format_ckpt || nok train_full_default_format_ckpt "$(ls n2) $(tail -2 n2.err)"
"$root/$build/bin/sd-model" convert n2/last.ckpt n2m.safetensors --model_config "$cfg" > /dev/null 2>&1
[ "$(t_meta n2m.safetensors global_step)" = 14 ] && ok train_full_ckpt_adds_source_step ||
  nok train_full_ckpt_adds_source_step "$(t_meta n2m.safetensors global_step)"
D --model n1/m.ckpt --output_dir n3 --max_train_steps 2 --use_safetensors 2> /dev/null
[ -f n3/last.safetensors ] && ok train_full_use_safetensors || nok train_full_use_safetensors "$(ls n3)"
if /usr/bin/python3 -c 'import torch' 2> /dev/null; then
  /usr/bin/python3 -c "
import torch; c = torch.load('n1/m.ckpt', map_location='cpu')
assert sorted(c) == ['epoch', 'global_step', 'state_dict'] and c['global_step'] == 12 and c['epoch'] == 1
assert len(c['state_dict']) == $(wc -l < keys0.txt) and c['state_dict']['$UN'+'out.2.weight'].dtype == torch.float16
" 2> tl.err && ok train_full_torch_load || nok train_full_torch_load "$(tail -1 tl.err)"
else echo "ok train_full_torch_load # SKIP no PyTorch at /usr/bin/python3"; fi

# --no_half_vae: with --mixed_precision fp16 the saved VAE is float32 (else fp16), the same values
D --output_dir v1 --max_train_steps 1 --mixed_precision fp16 2> /dev/null
D --output_dir v2 --max_train_steps 1 --mixed_precision fp16 --no_half_vae 2> /dev/null
vd() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
print(' '.join(sorted({v['dtype'] for k, v in h.items() if k.startswith('first_stage_model.')})))
PY
}
[ "$(vd v1/last.safetensors)" = F16 ] && [ "$(vd v2/last.safetensors)" = F32 ] &&
  [ "$(st_cmp v1/last.safetensors v2/last.safetensors $VAE)" = same ] && ok train_full_no_half_vae ||
  nok train_full_no_half_vae "$(vd v1/last.safetensors) / $(vd v2/last.safetensors)"

# ---- Diffusers folders: every save (step saves, the final one) is a folder named as the reference names
# them; its tensors equal the safetensors save of the same run; the retention removes old folders; the
# state is written beside as before; a Diffusers source saves Diffusers by default --------------------------
D --output_dir ds --max_train_steps 4 --save_every_n_steps 1 --stop_text_encoder_training 2 2> ds.err
D --output_dir df --max_train_steps 4 --save_every_n_steps 1 --save_last_n_steps 1 --stop_text_encoder_training 2 \
  --save_model_as diffusers --save_state 2> df.err; rc=$?
ls df | LC_ALL=C sort | tr '\n' ' ' > df.ls
[ $rc = 0 ] && [ "$(cat df.ls)" = "at-step00000002 at-step00000002-state at-step00000003 at-step00000003-state last last-state " ] &&
  [ -f df/last/model_index.json ] && [ -f df/last/unet/diffusion_pytorch_model.safetensors ] &&
  [ -f df/at-step00000003/vae/diffusion_pytorch_model.safetensors ] && ok train_full_diffusers_names ||
  nok train_full_diffusers_names "rc $rc: $(cat df.ls) $(tail -2 df.err)"
grep -q 'removed .*df/at-step00000001$' df.err && ok train_full_diffusers_retention || nok train_full_diffusers_retention
ls -a df | grep -q '\.tmp\.\|\.old\.' && nok train_full_diffusers_no_temp || ok train_full_diffusers_no_temp
for s in at-step00000002 last; do
  "$root/$build/bin/sd-model" convert "df/$s" -o "df_$s.safetensors" > /dev/null 2>> df.err
  sf=ds/$s.safetensors; [ $s = last ] || sf=ds/$s.safetensors
  for p in $UN $TE $VAE; do [ "$(st_cmp "$sf" "df_$s.safetensors" $p)" = same ] || echo "$s $p"; done
done > df.cmp
[ ! -s df.cmp ] && [ -s df_last.safetensors ] && ok train_full_diffusers_equals_safetensors ||
  nok train_full_diffusers_equals_safetensors "$(cat df.cmp) $(tail -2 df.err)"
"$root/$build/bin/sd-model" info df/last --no_hashes > dinfo.txt 2>&1 && grep -q '^format  *diffusers' dinfo.txt &&
  grep -q '(from the Diffusers config.json files)' dinfo.txt && ok train_full_diffusers_loads ||
  nok train_full_diffusers_loads "$(head -3 dinfo.txt)"
# SD1/SD2: the reference's save_diffusers_checkpoint takes no save_dtype: --save_precision does not apply
# (the trained UNet stays float32)
D --output_dir dp --max_train_steps 1 --save_model_as diffusers --save_precision fp16 2> dp.err
python3 - dp/last/unet/diffusion_pytorch_model.safetensors <<'PY' > dp.dt
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
print(' '.join(sorted({v['dtype'] for k, v in h.items() if k != '__metadata__'})))
PY
[ "$(cat dp.dt)" = F32 ] && grep -q "save_precision fp16 has no effect" dp.err && ok train_full_diffusers_no_save_precision || nok train_full_diffusers_no_save_precision "$(cat dp.dt) $(tail -2 dp.err)"
# fine-tuning, diffusers_safetensors, an output name
F --output_dir fd --max_train_steps 2 --save_model_as diffusers_safetensors --output_name ftd 2> fd.err
[ -f fd/ftd/text_encoder/model.safetensors ] && [ -f fd/ftd/tokenizer/vocab.json ] && ok train_full_ft_diffusers ||
  nok train_full_ft_diffusers "$(ls fd) $(tail -2 fd.err)"
# a Diffusers source: the default output is a Diffusers folder (no --model_config: its config.json files)
"$bin" --method db --model df/last --data recs.jsonl --learning_rate 1e-3 --seed 3 --threads 1 --output_dir dd \
  --max_train_steps 1 2> dd.err
[ -f dd/last/model_index.json ] && ok train_full_diffusers_source_default || nok train_full_diffusers_source_default "$(ls dd) $(tail -2 dd.err)"
# the final folder exists as a file: one error line, exit 1
mkdir -p dx && : > dx/last
D --output_dir dx --max_train_steps 1 --save_model_as diffusers 2> dx.err; rc=$?
[ $rc = 1 ] && grep -q 'dx/last: exists and is not a folder' dx.err && [ "$(grep -c 'not a folder' dx.err)" = 1 ] &&
  ok train_full_diffusers_target_is_file || nok train_full_diffusers_target_is_file "rc $rc $(tail -2 dx.err)"

# ---- refusals ----------------------------------------------------------------------------------------------
D --output_dir e --network_dim 8 2> e1.err; rc=$?
[ $rc = 2 ] && grep -q 'network_dim is a LoRA option' e1.err && ok train_full_refuses_lora_option ||
  nok train_full_refuses_lora_option "rc $rc $(cat e1.err)"
"$bin" --method lora --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate_te 1e-4 2> e2.err; rc=$?
[ $rc = 2 ] && grep -q 'learning_rate_te is an option of --method db/ft' e2.err && ok train_full_lora_refuses_full_option ||
  nok train_full_lora_refuses_full_option "rc $rc $(cat e2.err)"
D --output_dir e --train_text_encoder 2> e3.err; rc=$?
[ $rc = 2 ] && grep -q 'train_text_encoder is an option of --method ft' e3.err && ok train_full_db_refuses_ft_option ||
  nok train_full_db_refuses_ft_option "rc $rc"
"$bin" --method lora --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --save_model_as diffusers 2> e4.err; rc=$?
[ $rc = 2 ] && grep -q 'save_model_as diffusers: a LoRA network is saved as safetensors' e4.err &&
  ok train_full_lora_diffusers_refused || nok train_full_lora_diffusers_refused "rc $rc $(cat e4.err)"
"$bin" --method full --model tiny.safetensors --data recs.jsonl 2> e5.err; rc=$?
[ $rc = 2 ] && grep -q 'choose lora, db' e5.err && ok train_full_bad_method || nok train_full_bad_method "rc $rc"

# ---- resume: from a saved state, and after kill -9: byte-identical -----------------------------------------
D --output_dir r1 --max_train_steps 8 --save_every_n_steps 3 --save_state --stop_text_encoder_training 5 \
  --learning_rate_te 5e-4 --gradient_accumulation_steps 1 2> /dev/null
D --output_dir r2 --max_train_steps 8 --stop_text_encoder_training 5 --learning_rate_te 5e-4 \
  --resume r1/at-step00000003-state 2> r2.err
cmp -s r1/last.safetensors r2/last.safetensors && ok train_full_resume_same_bytes || nok train_full_resume_same_bytes "$(tail -2 r2.err)"
D --output_dir r3 --max_train_steps 8 --stop_text_encoder_training 5 --learning_rate_te 5e-4 \
  --resume r1/at-step00000006-state 2> /dev/null
cmp -s r1/last.safetensors r3/last.safetensors && ok train_full_resume_after_te_stop || nok train_full_resume_after_te_stop
D --output_dir r4 --max_train_steps 8 --stop_text_encoder_training -1 --resume r1/at-step00000003-state 2> r4.err; rc=$?
[ $rc = 1 ] && grep -q 'cannot resume' r4.err && ok train_full_resume_mismatch || nok train_full_resume_mismatch "rc $rc"
N=24
D --output_dir k0 --max_train_steps $N 2> /dev/null
( Dbg --output_dir k --max_train_steps $N --save_every_n_steps 2 --save_state 2> /dev/null ) & pid=$!
for _ in $(seq 1 200); do [ -d k/at-step00000004-state ] && break; sleep 0.02; done
kill -9 $pid; wait $pid 2> /dev/null
st=$(ls -d k/at-step*-state 2> /dev/null | LC_ALL=C sort | tail -1)
if [ -n "$st" ] && [ ! -f k/last.safetensors ]; then
  D --output_dir k1 --max_train_steps $N --resume "$st" 2> k1.err
  cmp -s k0/last.safetensors k1/last.safetensors && ok train_full_kill9_resume_same_bytes ||
    nok train_full_kill9_resume_same_bytes "$(tail -2 k1.err)"
else nok train_full_kill9_resume_same_bytes "no state to resume from or the run finished before the kill: '$st'"; fi

# ---- the optimizer through the device ops (what a GPU runs; SD_DEVICE_OPTIM=1 on the CPU): the same bytes --
SD_DEVICE_OPTIM=1 D --output_dir o1 --max_train_steps 8 --save_every_n_steps 3 --save_state --stop_text_encoder_training 5 \
  --learning_rate_te 5e-4 --gradient_accumulation_steps 1 2> o1.err
grep -q 'AdamW runs on the CPU through the device ops' o1.err && cmp -s r1/last.safetensors o1/last.safetensors &&
  ok train_full_device_optim_same_bytes ||
  nok train_full_device_optim_same_bytes "$(tail -2 o1.err)"
SD_DEVICE_OPTIM=1 D --output_dir o2 --max_train_steps 8 --stop_text_encoder_training 5 --learning_rate_te 5e-4 \
  --resume o1/at-step00000003-state 2> o2.err
cmp -s r1/last.safetensors o2/last.safetensors && ok train_full_device_optim_resume ||
  nok train_full_device_optim_resume "$(tail -2 o2.err)"
F --output_dir o3 --max_train_steps 3 --train_text_encoder --mixed_precision fp16 --full_fp16 --optimizer_args eps=1e-4 \
  --max_grad_norm 0.5 2> /dev/null
SD_DEVICE_OPTIM=1 F --output_dir o4 --max_train_steps 3 --train_text_encoder --mixed_precision fp16 --full_fp16 \
  --optimizer_args eps=1e-4 --max_grad_norm 0.5 2> o4.err
o3f=$(ls o3/*.safetensors 2> /dev/null | head -1); o4f=o4/${o3f#o3/}
[ -n "$o3f" ] && cmp -s "$o3f" "$o4f" && ok train_full_device_optim_fp16_same_bytes ||
  nok train_full_device_optim_fp16_same_bytes "$(tail -2 o4.err)"

# ---- Lion, SGDNesterov, Adafactor, AdamW8bit and Lion8bit through the device ops (their GPU path): the host
# loops' bytes (weight decay, clipping, the text encoder stopping; --full_bf16 / --full_fp16 rounding;
# Adafactor's factored 2-D and 4-D weights and unfactored biases, its RMS-scaled relative step and a fixed
# LR with β1; 8-bit blockwise and f32 states)
dk=0
for spec in "Lion|--optimizer_args weight_decay=0.1 betas=0.9,0.99" "SGDNesterov|--optimizer_args weight_decay=0.01" \
            "Adafactor|--max_grad_norm 0.5" \
            "Adafactor|--optimizer_args relative_step=False scale_parameter=False warmup_init=False beta1=0.9 weight_decay=0.01" \
            "Lion|--mixed_precision bf16 --full_bf16" "AdamW8bit|--optimizer_args min_8bit_size=1024 --max_grad_norm 0.5" \
            "Lion8bit|--optimizer_args min_8bit_size=1024 weight_decay=0.1 --mixed_precision fp16 --full_fp16"; do
  dk=$((dk + 1)); kind=${spec%%|*}; extra=${spec#*|}
  # shellcheck disable=SC2086
  D --output_dir dk${dk}h --max_train_steps 3 --stop_text_encoder_training 2 --optimizer_type $kind $extra 2> dk${dk}h.err
  # shellcheck disable=SC2086
  SD_DEVICE_OPTIM=1 D --output_dir dk${dk}d --max_train_steps 3 --stop_text_encoder_training 2 --optimizer_type $kind $extra \
    2> dk${dk}d.err
  [ -f dk${dk}h/last.safetensors ] && cmp -s dk${dk}h/last.safetensors dk${dk}d/last.safetensors &&
    ! cmp -s tiny.safetensors dk${dk}d/last.safetensors && grep -q "$kind runs on the CPU through the device ops" dk${dk}d.err &&
    ok "train_full_device_optim_${kind}_${dk}_same_bytes" ||
    nok "train_full_device_optim_${kind}_${dk}_same_bytes" "$(tail -2 dk${dk}d.err) / $(tail -1 dk${dk}h.err)"
done

# the 8-bit state saved from the device and resumed onto it: the uninterrupted host run's bytes
A8=(--stop_text_encoder_training 2 --optimizer_type AdamW8bit --optimizer_args min_8bit_size=1024 --max_grad_norm 0.5)
SD_DEVICE_OPTIM=1 D --output_dir dk8 --max_train_steps 3 "${A8[@]}" --save_every_n_steps 2 --save_state 2> dk8.err
SD_DEVICE_OPTIM=1 D --output_dir dk9 --max_train_steps 3 "${A8[@]}" --resume dk8/at-step00000002-state 2> dk9.err
[ -f dk9/last.safetensors ] && cmp -s dk6h/last.safetensors dk9/last.safetensors && cmp -s dk8/last.safetensors dk9/last.safetensors &&
  ok train_full_device_optim_8bit_resume || nok train_full_device_optim_8bit_resume "$(tail -2 dk9.err)"

[ -n "${KEEP:-}" ] || rm -rf "$tmp"
