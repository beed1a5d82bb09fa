#!/usr/bin/env bash
# sd-train --method ft/db --fused_backward_pass / --fused_optimizer_groups N on a tiny SDXL model
# (sdxl_train.py's optimizer steps inside the backward pass, train/fused.h): without clipping
# (--max_grad_norm 0) the maths is that of the plain run, so the saved checkpoint has the same bytes
# (Adafactor for fused_backward_pass; AdamW and Lion for the groups, with the text encoders, --block_lr
# groups of different LRs and a block at 0, gradient accumulation); with clipping each tensor is clipped
# alone (the reference's hook), which differs from the plain run's global norm (the per-tensor numbers
# are checked against PyTorch in tests/unit/test_fused.c); resume from a saved state is byte-identical;
# the peak memory (max RSS) is lower than the plain run's on a model whose gradients dominate; the
# reference's assertions and what is not implemented are refused (exit 2).
. "$(dirname "$0")/lib.sh"
t_init train_fused
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
cfg="$root/examples/tiny_sdxl.toml"
./tiny_model model xl.safetensors "$cfg" > /dev/null || { nok train_fused_tiny_model; exit 1; }
./tiny_model model sd1.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_fused_tiny_sd1; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_fused_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
F() { "$bin" --method ft --model xl.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 \
  --seed 3 --threads 1 "$@"; }
AF=(--optimizer_type Adafactor --optimizer_args relative_step=False scale_parameter=False warmup_init=False)
same() { cmp -s "$1/last.safetensors" "$2/last.safetensors"; }

# ---- fused_backward_pass (Adafactor): the plain run's bytes without clipping -------------------------------
F --output_dir a0 --max_train_steps 3 "${AF[@]}" --max_grad_norm 0 --train_text_encoder 2> a0.err
F --output_dir a1 --max_train_steps 3 "${AF[@]}" --max_grad_norm 0 --train_text_encoder --fused_backward_pass 2> a1.err
same a0 a1 && ! cmp -s xl.safetensors a1/last.safetensors && grep -q 'fused_backward_pass: each weight steps' a1.err &&
  ok train_fused_backward_pass_same || nok train_fused_backward_pass_same "$(tail -2 a1.err)"
# Adafactor with relative_step (kohya's default: AdafactorSchedule), db
F --output_dir a2 --max_train_steps 3 --optimizer_type Adafactor --max_grad_norm 0 --method db 2> a2.err
F --output_dir a3 --max_train_steps 3 --optimizer_type Adafactor --max_grad_norm 0 --method db --fused_backward_pass 2> a3.err
same a2 a3 && ok train_fused_backward_pass_relative_step || nok train_fused_backward_pass_relative_step "$(tail -2 a3.err)"
# clipping: each tensor alone, not the global norm
F --output_dir a4 --max_train_steps 3 "${AF[@]}" --max_grad_norm 1e-3 --train_text_encoder 2> a4.err
F --output_dir a5 --max_train_steps 3 "${AF[@]}" --max_grad_norm 1e-3 --train_text_encoder --fused_backward_pass 2> a5.err
F --output_dir a6 --max_train_steps 3 "${AF[@]}" --max_grad_norm 1e-3 --train_text_encoder --fused_optimizer_groups 5 2> a6.err
[ -f a5/last.safetensors ] && ! same a4 a5 && ! same a1 a5 && same a5 a6 && ok train_fused_clip_per_tensor ||
  nok train_fused_clip_per_tensor "$(tail -2 a5.err)"

# ---- fused_optimizer_groups: the plain run's bytes without clipping ----------------------------------------
F --output_dir g0 --max_train_steps 3 --max_grad_norm 0 --train_text_encoder --learning_rate_te2 5e-4 2> g0.err
for n in 1 3 1000; do
  F --output_dir g$n --max_train_steps 3 --max_grad_norm 0 --train_text_encoder --learning_rate_te2 5e-4 \
    --fused_optimizer_groups $n 2> g$n.err
done
grep -q 'using 2 optimizers for fused optimizer groups' g1.err && grep -q 'using 4 optimizers' g3.err &&
  ok train_fused_groups_count || nok train_fused_groups_count "$(grep optimizers g1.err g3.err)"
same g0 g1 && same g0 g3 && same g0 g1000 && ok train_fused_groups_same || nok train_fused_groups_same "$(tail -2 g3.err)"
B=0,1e-3,2e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,5e-4,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3,1e-3
F --output_dir b0 --max_train_steps 3 --max_grad_norm 0 --block_lr $B --optimizer_type Lion 2> b0.err
F --output_dir b1 --max_train_steps 3 --max_grad_norm 0 --block_lr $B --optimizer_type Lion --fused_optimizer_groups 6 2> b1.err
same b0 b1 && ok train_fused_groups_block_lr || nok train_fused_groups_block_lr "$(tail -2 b1.err)"
F --output_dir c0 --max_train_steps 2 --max_grad_norm 0 --gradient_accumulation_steps 2 --train_text_encoder 2> c0.err
F --output_dir c1 --max_train_steps 2 --max_grad_norm 0 --gradient_accumulation_steps 2 --train_text_encoder \
  --fused_optimizer_groups 4 2> c1.err
same c0 c1 && ok train_fused_groups_accumulation || nok train_fused_groups_accumulation "$(tail -2 c1.err)"
# gradient checkpointing (the blocks' forward again inside the backward); SD_DEVICE_OPTIM=1 (AdamW and the
# per-tensor clipping through the device ops of the CPU context): the same bytes
F --output_dir k0 --max_train_steps 3 --max_grad_norm 0 --train_text_encoder --gradient_checkpointing 2> k0.err
F --output_dir k1 --max_train_steps 3 --max_grad_norm 0 --train_text_encoder --gradient_checkpointing \
  --fused_optimizer_groups 2 2> k1.err
SD_DEVICE_OPTIM=1 F --output_dir k2 --max_train_steps 3 --max_grad_norm 0 --train_text_encoder \
  --gradient_checkpointing --fused_optimizer_groups 2 2> k2.err
same k0 k1 && same k0 k2 && ok train_fused_checkpointing || nok train_fused_checkpointing "$(tail -n 2 k1.err k2.err)"
F --output_dir k3 --max_train_steps 3 --max_grad_norm 1e-3 --train_text_encoder --fused_optimizer_groups 2 2> k3.err
SD_DEVICE_OPTIM=1 F --output_dir k4 --max_train_steps 3 --max_grad_norm 1e-3 --train_text_encoder \
  --fused_optimizer_groups 2 2> k4.err
[ -f k4/last.safetensors ] && same k3 k4 && ! same k1 k3 && ok train_fused_device_ops_clip ||
  nok train_fused_device_ops_clip "$(tail -2 k4.err)"

# ---- the CUDA backend (emulated on the CPU: make emu-bin): gradients in device memory, clipped by the
# device ops; AdamW, Lion, Adafactor and AdamW8bit step there (SD_DEVICE_OPTIM=0: on host copies of each tensor): the
# plain run's bytes, and the host step's ----------------------------------------------------------------------
ebin="$root/$build/emu/bin/sd-train"
if [ -x "$ebin" ]; then
  E() { "$ebin" --method ft --model xl.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 \
    --seed 3 --threads 1 --device cuda --max_train_steps 3 --max_grad_norm 0 --train_text_encoder "$@"; }
  E --output_dir ue0 "${AF[@]}" 2> ue0.err; E --output_dir ue1 "${AF[@]}" --fused_backward_pass 2> ue1.err
  E --output_dir ue2 2> ue2.err; E --output_dir ue3 --fused_optimizer_groups 3 2> ue3.err
  [ -f ue1/last.safetensors ] && same ue0 ue1 && same ue2 ue3 && ok train_fused_cuda_emu ||
    nok train_fused_cuda_emu "$(tail -n 2 ue1.err ue3.err)"
  SD_DEVICE_OPTIM=0 E --output_dir ue4 "${AF[@]}" --fused_backward_pass 2> ue4.err
  E --output_dir ue5 --optimizer_type Lion --fused_optimizer_groups 3 2> ue5.err
  SD_DEVICE_OPTIM=0 E --output_dir ue6 --optimizer_type Lion --fused_optimizer_groups 3 2> ue6.err
  E --output_dir ue7 --optimizer_type AdamW8bit --optimizer_args min_8bit_size=512 --fused_optimizer_groups 3 2> ue7.err
  SD_DEVICE_OPTIM=0 E --output_dir ue8 --optimizer_type AdamW8bit --optimizer_args min_8bit_size=512 \
    --fused_optimizer_groups 3 2> ue8.err
  [ -f ue4/last.safetensors ] && same ue1 ue4 && [ -f ue5/last.safetensors ] && same ue5 ue6 &&
    [ -f ue7/last.safetensors ] && same ue7 ue8 && grep -q 'AdamW8bit runs on the GPU' ue7.err &&
    grep -q 'Adafactor runs on the GPU' ue1.err && grep -q 'Lion runs on the GPU' ue5.err && ok train_fused_cuda_emu_device_optim ||
    nok train_fused_cuda_emu_device_optim "$(tail -n 2 ue4.err ue5.err ue6.err ue7.err ue8.err)"
else
  echo "ok train_fused_cuda_emu # SKIP no $build/emu/bin/sd-train (make emu-bin)"
  echo "ok train_fused_cuda_emu_device_optim # SKIP no $build/emu/bin/sd-train (make emu-bin)"
fi

# ---- resume from a saved state: byte-identical -------------------------------------------------------------
F --output_dir r1 --max_train_steps 4 --save_every_n_steps 2 --save_state --train_text_encoder \
  --fused_optimizer_groups 3 2> r1.err
F --output_dir r2 --max_train_steps 4 --train_text_encoder --fused_optimizer_groups 3 \
  --resume r1/at-step00000002-state 2> r2.err
[ -f r2/last.safetensors ] && same r1 r2 && ok train_fused_resume_groups || nok train_fused_resume_groups "$(tail -2 r2.err)"
F --output_dir r3 --max_train_steps 4 --save_every_n_steps 2 --save_state "${AF[@]}" --fused_backward_pass 2> r3.err
F --output_dir r4 --max_train_steps 4 "${AF[@]}" --fused_backward_pass --resume r3/at-step00000002-state 2> r4.err
[ -f r4/last.safetensors ] && same r3 r4 && ok train_fused_resume_backward_pass ||
  nok train_fused_resume_backward_pass "$(tail -2 r4.err)"

# ---- memory: a model whose gradients dominate (max RSS, /usr/bin/time) ----------------------------------------
if [ -x /usr/bin/time ]; then
  sed -e 's/^model_channels = 32/model_channels = 96/' -e 's/^context_dim = 64/context_dim = 256/' \
      -e 's/^adm_in_channels = 1552/adm_in_channels = 1600/' -e 's/^width = 32/width = 128/' \
      -e 's/^projection_dim = 16/projection_dim = 64/' "$cfg" > mem.toml
  ./tiny_model model mem.safetensors mem.toml > /dev/null
  # ASan keeps freed memory in quarantine: none here, so freed gradients leave the resident set
  M() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0" /usr/bin/time -f '%M' -o "$1.rss" "$bin" --method ft --model mem.safetensors --model_config mem.toml \
    --data recs.jsonl --learning_rate 1e-4 --seed 3 --threads 1 --max_train_steps 1 --max_grad_norm 0 \
    "${AF[@]}" --output_dir "$@" 2> "$1.err"; }
  M m0; M m1 --fused_backward_pass
  r0=$(cat m0.rss 2>/dev/null); r1=$(cat m1.rss 2>/dev/null)
  same m0 m1 && [ -n "$r0" ] && [ -n "$r1" ] && [ "$r1" -lt $((r0 - r0 / 10)) ] && ok train_fused_memory ||
    nok train_fused_memory "max RSS $r0 kB plain, $r1 kB fused"
  echo "# max RSS: plain $r0 kB, fused_backward_pass $r1 kB"
else
  echo "ok train_fused_memory # SKIP no /usr/bin/time"
fi

# ---- refusals --------------------------------------------------------------------------------------------------
t_refuse -1 train_fused_adamw_refused 2 'fused_backward_pass currently only works with optimizer_type Adafactor' \
  F --output_dir e --fused_backward_pass
t_refuse -1 train_fused_accum_refused 2 'fused_backward_pass does not work with gradient_accumulation_steps > 1' \
  F --output_dir e "${AF[@]}" --fused_backward_pass --gradient_accumulation_steps 2
t_refuse -1 train_fused_both_refused 2 'choose one' F --output_dir e "${AF[@]}" --fused_backward_pass --fused_optimizer_groups 2
t_refuse -1 train_fused_prodigy_refused 2 'Prodigy: not implemented' \
  F --output_dir e --optimizer_type Prodigy --learning_rate 1 --fused_optimizer_groups 2
t_refuse -1 train_fused_fp16_refused 2 'mixed_precision fp16: not supported' \
  F --output_dir e --mixed_precision fp16 --fused_optimizer_groups 2
t_refuse -1 train_fused_full_bf16_refused 2 'full_bf16: not implemented' \
  F --output_dir e --mixed_precision bf16 --full_bf16 "${AF[@]}" --fused_backward_pass
t_refuse -1 train_fused_sd1_refused 2 'only for SDXL models' \
  "$bin" --method db --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --output_dir e --fused_optimizer_groups 2
t_refuse train_fused_lora_refused 2 'fused_optimizer_groups is an option of --method db/ft' \
  F --method lora --output_dir e --fused_optimizer_groups 2
t_refuse train_fused_negative_refused 2 'fused_optimizer_groups' F --output_dir e --fused_optimizer_groups -1
exit 0
