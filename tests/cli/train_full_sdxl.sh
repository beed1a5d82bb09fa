#!/usr/bin/env bash
# sd-train --method ft / db on a tiny SDXL model (examples/tiny_sdxl.toml, random weights): kohya's
# sdxl_train.py. The saved checkpoint has the source's key set in SDXL single-file names, the
# SDXL ModelSpec and no ss_* keys, and sd-model info reads it as SDXL; the UNet (label_emb included)
# trains, the text encoders only with --train_text_encoder, each one unless its --learning_rate_te1/2
# is 0; a --block_lr group of 0 leaves its block unchanged; --cache_text_encoder_outputs gives the same
# bytes as without it when the text encoders do not train; db runs the same trainer; resume from a
# saved state is byte-identical; the refusals.
. "$(dirname "$0")/lib.sh"
t_init train_full_sdxl
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
cfg="$root/examples/tiny_sdxl.toml"
./tiny_model model xl.safetensors "$cfg" > /dev/null || { nok train_full_sdxl_tiny_model; exit 1; }
./tiny_model model sd1.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_full_sdxl_tiny_sd1; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_full_sdxl_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
F() { "$bin" --method ft --model xl.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 \
  --seed 3 --threads 1 "$@"; }
D() { "$bin" --method db --model xl.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 \
  --seed 3 --threads 1 "$@"; }
# st_cmp A B PREFIX: same / diff (values of every tensor under PREFIX, as floats) / none
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
meta() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
m = h.get('__metadata__', {})
print(m.get(sys.argv[2], '<absent>') if sys.argv[2] != 'ss' else sum(k.startswith('ss_') for k in m))
PY
}
UN=model.diffusion_model.
TE1=conditioner.embedders.0.
TE2=conditioner.embedders.1.
VAE=first_stage_model.

# ---- ft with the text encoders: keys, metadata, what changed ----------------------------------------------
if F --output_dir f1 --max_train_steps 3 --train_text_encoder --logging_dir logs 2> f1.err; then ok train_full_sdxl_ft_runs
else nok train_full_sdxl_ft_runs "$(tail -3 f1.err)"; fi
keys xl.safetensors > keys0.txt; keys f1/last.safetensors > keys1.txt
cmp -s keys0.txt keys1.txt && ok train_full_sdxl_source_keys || nok train_full_sdxl_source_keys "$(diff keys0.txt keys1.txt | head -3)"
[ "$(meta f1/last.safetensors modelspec.architecture)" = stable-diffusion-xl-v1-base ] &&
[ "$(meta f1/last.safetensors modelspec.resolution)" = 1024x1024 ] &&
[ "$(meta f1/last.safetensors ss)" = 0 ] && ok train_full_sdxl_modelspec ||
  nok train_full_sdxl_modelspec "$(meta f1/last.safetensors modelspec.architecture)"
"$root/$build/bin/sd-model" info f1/last.safetensors --model_config "$cfg" > info.txt 2>&1 &&
  grep -q '^family *SDXL' info.txt && grep -q 'text-encoder-2' info.txt && ok train_full_sdxl_info ||
  nok train_full_sdxl_info "$(head -5 info.txt)"
[ "$(st_cmp xl.safetensors f1/last.safetensors $UN)" = diff ] &&
[ "$(st_cmp xl.safetensors f1/last.safetensors ${UN}label_emb.)" = diff ] &&
[ "$(st_cmp xl.safetensors f1/last.safetensors $TE1)" = diff ] &&
[ "$(st_cmp xl.safetensors f1/last.safetensors $TE2)" = diff ] &&
[ "$(st_cmp xl.safetensors f1/last.safetensors $VAE)" = same ] && ok train_full_sdxl_trained ||
  nok train_full_sdxl_trained
# TE1's output is its penultimate layer's: the last layer and final_layer_norm get no gradient and stay
[ "$(st_cmp xl.safetensors f1/last.safetensors ${TE1}transformer.text_model.encoder.layers.1.)" = same ] &&
[ "$(st_cmp xl.safetensors f1/last.safetensors ${TE1}transformer.text_model.final_layer_norm.)" = same ] &&
[ "$(st_cmp xl.safetensors f1/last.safetensors ${TE1}transformer.text_model.encoder.layers.0.)" = diff ] &&
  ok train_full_sdxl_te1_unused_layer_kept || nok train_full_sdxl_te1_unused_layer_kept
grep -q 'train unet: True, text_encoder1: True, text_encoder2: True' f1.err && ok train_full_sdxl_message ||
  nok train_full_sdxl_message "$(grep 'train unet' f1.err)"
ls logs/*/finetuning/events.out.tfevents.* > /dev/null 2>&1 && ok train_full_sdxl_tracker || nok train_full_sdxl_tracker

# ---- the UNet only; one encoder; --block_lr ------------------------------------------------------------------
F --output_dir f2 --max_train_steps 3 --log_jsonl f2.log 2> f2.err
[ "$(st_cmp xl.safetensors f2/last.safetensors $UN)" = diff ] &&
[ "$(st_cmp xl.safetensors f2/last.safetensors conditioner.)" = same ] && ok train_full_sdxl_unet_only ||
  nok train_full_sdxl_unet_only "$(tail -2 f2.err)"
F --output_dir f3 --max_train_steps 3 --train_text_encoder --learning_rate_te1 0 --learning_rate_te2 5e-4 2> f3.err
[ "$(st_cmp xl.safetensors f3/last.safetensors $TE1)" = same ] &&
[ "$(st_cmp xl.safetensors f3/last.safetensors $TE2)" = diff ] &&
grep -q 'text_encoder1: False, text_encoder2: True' f3.err && ok train_full_sdxl_te2_only || nok train_full_sdxl_te2_only
F --output_dir f4 --max_train_steps 3 --train_text_encoder --learning_rate 0 --learning_rate_te1 5e-4 \
  --learning_rate_te2 0 2> f4.err
[ "$(st_cmp xl.safetensors f4/last.safetensors $UN)" = same ] &&
[ "$(st_cmp xl.safetensors f4/last.safetensors $TE1)" = diff ] &&
[ "$(st_cmp xl.safetensors f4/last.safetensors $TE2)" = same ] && ok train_full_sdxl_te1_only_no_unet ||
  nok train_full_sdxl_te1_only_no_unet "$(tail -2 f4.err)"
# block 0 (time/label embedding), 2 (input_blocks.1), 11 (middle_block.1), 22 (out) at 0
B=0,1e-3,0,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,0,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,0
F --output_dir b1 --max_train_steps 3 --block_lr $B --logging_dir blogs 2> b1.err
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}time_embed.)" = same ] &&
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}label_emb.)" = same ] &&
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}input_blocks.1.)" = same ] &&
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}middle_block.1.)" = same ] &&
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}out.)" = same ] &&
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}input_blocks.3.)" = diff ] &&
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}middle_block.0.)" = diff ] &&
[ "$(st_cmp xl.safetensors b1/last.safetensors ${UN}output_blocks.2.)" = diff ] && ok train_full_sdxl_block_lr ||
  nok train_full_sdxl_block_lr "$(tail -2 b1.err)"
# a block at 0 is not optimized, but its gradients count in the clipping norm (torch's clip_grad_norm_ over
# every UNet parameter): the first step's norm is the UNet-only run's
B0=0,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3
F --output_dir b2 --max_train_steps 1 --block_lr $B0 --log_jsonl b2.log 2> b2.err
n1=$(head -1 f2.log | grep -o '"grad_norm":[^,]*'); n2=$(head -1 b2.log | grep -o '"grad_norm":[^,]*')
[ -n "$n1" ] && [ "$n1" = "$n2" ] && ok train_full_sdxl_block_lr_zero_in_norm || nok train_full_sdxl_block_lr_zero_in_norm "$n1 / $n2"
python3 "$root/tests/cli/tb_scalars.py" "blogs/*/finetuning/events.out.tfevents.*" | cut -d' ' -f1 | sort -u > b1.tags
grep -qx 'lr/block1' b1.tags && grep -qx 'lr/block21' b1.tags && ! grep -qx 'lr/block0\|lr/block22\|lr/unet' b1.tags &&
  ok train_full_sdxl_block_lr_names || nok train_full_sdxl_block_lr_names "$(tr '\n' ' ' < b1.tags)"

# ---- the text-encoder output cache: the same bytes --------------------------------------------------------
F --output_dir c1 --max_train_steps 3 --cache_text_encoder_outputs 2> c1.err
cmp -s f2/last.safetensors c1/last.safetensors && ok train_full_sdxl_cache_te_same_bytes ||
  nok train_full_sdxl_cache_te_same_bytes "$(tail -2 c1.err)"

# ---- --device cuda (the fake device of a build without CUDA, or a GPU): the same numbers as the CPU's ------
if grep -aq 'fake CUDA device' "$bin" || [ -n "${SD_TEST_CUDA:-}" ]; then
  G=(--max_train_steps 3 --train_text_encoder --learning_rate_te1 5e-4 --block_lr $B --log_jsonl)
  F --output_dir gc "${G[@]}" gc.log 2> /dev/null
  if SD_FAKE_CUDA=1 F --output_dir gg --device cuda "${G[@]}" gg.log 2> gg.err; then
    lc=$(grep -o '"loss":[^,]*\|"grad_norm":[^,]*' gc.log | tr '\n' ' '); lg=$(grep -o '"loss":[^,]*\|"grad_norm":[^,]*' gg.log | tr '\n' ' ')
    if grep -q 'fake CUDA' gg.err; then
      [ "$lc" = "$lg" ] && [ "$(st_cmp gc/last.safetensors gg/last.safetensors '')" = same ] && ok train_full_sdxl_device_cuda_same ||
        nok train_full_sdxl_device_cuda_same "$lc / $lg"
    else echo "ok train_full_sdxl_device_cuda_same # SKIP a real GPU: compared by tests/cli/train.sh's tolerances only"; fi
  else nok train_full_sdxl_device_cuda_same "$(tail -2 gg.err)"; fi
fi

# ---- db: the same trainer -----------------------------------------------------------------------------------
D --output_dir d1 --max_train_steps 3 --train_text_encoder 2> d1.err
cmp -s f1/last.safetensors d1/last.safetensors && ok train_full_sdxl_db_same_trainer ||
  nok train_full_sdxl_db_same_trainer "$(tail -2 d1.err)"

# ---- resume: byte-identical ---------------------------------------------------------------------------------
F --output_dir r1 --max_train_steps 6 --save_every_n_steps 3 --save_state --train_text_encoder \
  --learning_rate_te2 5e-4 2> /dev/null
F --output_dir r2 --max_train_steps 6 --train_text_encoder --learning_rate_te2 5e-4 \
  --resume r1/at-step00000003-state 2> r2.err
cmp -s r1/last.safetensors r2/last.safetensors && ok train_full_sdxl_resume_same_bytes ||
  nok train_full_sdxl_resume_same_bytes "$(tail -2 r2.err)"
F --output_dir r3 --max_train_steps 6 --train_text_encoder --learning_rate_te2 1e-4 \
  --resume r1/at-step00000003-state 2> r3.err; rc=$?
[ $rc = 1 ] && grep -q 'cannot resume' r3.err && ok train_full_sdxl_resume_mismatch || nok train_full_sdxl_resume_mismatch "rc $rc"

# ---- Diffusers folders (sdxl_model_util.save_diffusers_checkpoint): the same tensors as the single-file
# save of the same run, --save_precision applied (SDXL passes save_dtype), TE2 with its projection ----------
F --output_dir xs --max_train_steps 2 --train_text_encoder --save_precision fp16 2> xs.err
F --output_dir xd --max_train_steps 2 --train_text_encoder --save_precision fp16 --save_model_as diffusers 2> xd.err; rc=$?
[ $rc = 0 ] && [ -f xd/last/text_encoder_2/model.safetensors ] && [ -f xd/last/tokenizer_2/merges.txt ] &&
  grep -q '"StableDiffusionXLPipeline"' xd/last/model_index.json &&
  grep -q '"EulerDiscreteScheduler"' xd/last/scheduler/scheduler_config.json && ok train_full_sdxl_diffusers_layout ||
  nok train_full_sdxl_diffusers_layout "rc $rc $(ls xd) $(tail -2 xd.err)"
"$root/$build/bin/sd-model" convert xd/last -o xdc.safetensors > /dev/null 2> xdc.err
for p in $UN $TE1 $TE2 $VAE; do [ "$(st_cmp xs/last.safetensors xdc.safetensors $p)" = same ] || echo "$p"; done > xd.cmp
[ -s xdc.safetensors ] && [ ! -s xd.cmp ] && ok train_full_sdxl_diffusers_same || nok train_full_sdxl_diffusers_same "$(cat xd.cmp xdc.err)"
python3 - xd/last/unet/diffusion_pytorch_model.safetensors xd/last/text_encoder_2/model.safetensors <<'PY' > xd.dt
import json, struct, sys
for p in sys.argv[1:]:
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    print(' '.join(sorted({v['dtype'] for k, v in h.items() if k != '__metadata__'})), 'text_projection.weight' in h)
PY
[ "$(cat xd.dt | tr '\n' ' ')" = "F16 False F16 True " ] && ok train_full_sdxl_diffusers_precision ||
  nok train_full_sdxl_diffusers_precision "$(cat xd.dt)"

# ---- refusals ------------------------------------------------------------------------------------------------
F --output_dir e --block_lr 1,2,3 2> e1.err; rc=$?
[ $rc = 2 ] && grep -q 'block_lr must have 23 values' e1.err && ok train_full_sdxl_block_lr_count ||
  nok train_full_sdxl_block_lr_count "rc $rc $(cat e1.err)"
F --output_dir e --train_text_encoder --cache_text_encoder_outputs 2> e2.err; rc=$?
[ $rc = 2 ] && grep -q 'cache_text_encoder_outputs is not supported when training text encoder' e2.err &&
  ok train_full_sdxl_cache_with_te || nok train_full_sdxl_cache_with_te "rc $rc $(cat e2.err)"
D --output_dir e --stop_text_encoder_training 2 2> e3.err; rc=$?
[ $rc = 2 ] && grep -q 'not an option of sdxl_train.py' e3.err && ok train_full_sdxl_no_te_stop ||
  nok train_full_sdxl_no_te_stop "rc $rc $(cat e3.err)"
F --output_dir e --learning_rate_te 1e-4 2> e4.err; rc=$?
[ $rc = 2 ] && grep -q 'learning_rate_te1' e4.err && ok train_full_sdxl_no_learning_rate_te ||
  nok train_full_sdxl_no_learning_rate_te "rc $rc $(cat e4.err)"
F --output_dir e --fused_backward_pass 2> e5.err; rc=$?
[ $rc = 2 ] && grep -q 'fused_backward_pass currently only works with optimizer_type Adafactor' e5.err &&
  ok train_full_sdxl_fused_refused ||
  nok train_full_sdxl_fused_refused "rc $rc $(cat e5.err)"
F --output_dir e --learning_rate 0 2> e6.err; rc=$?
[ $rc = 2 ] && grep -q 'nothing to train' e6.err && ok train_full_sdxl_nothing_to_train ||
  nok train_full_sdxl_nothing_to_train "rc $rc $(cat e6.err)"
"$bin" --method ft --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --output_dir e --block_lr $B 2> e7.err; rc=$?
[ $rc = 2 ] && grep -q 'only for SDXL' e7.err && ok train_full_sdxl_sd1_refuses_block_lr ||
  nok train_full_sdxl_sd1_refuses_block_lr "rc $rc $(cat e7.err)"
exit 0
