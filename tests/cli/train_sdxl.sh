#!/usr/bin/env bash
# sd-train --method lora on a tiny SDXL model (examples/tiny_sdxl.toml, random weights): kohya's SDXL
# LoRA names (lora_unet_<ldm names>, lora_te1_*, lora_te2_*) and module counts, the SDXL metadata;
# the same bytes with --threads 1 and 2; --network_train_unet_only with --cache_text_encoder_outputs
# gives the same losses and bytes as without the cache; --cache_text_encoder_outputs_to_disk writes
# <stem>_te_outputs.npz files (hidden_state1, hidden_state2, pool2) and reuses them; resume from a
# saved state is byte-identical; long captions, weighted captions, validation, text-encoder-only
# training and --network_weights run (its UNet modules in SGM or Diffusers names: the same start); the usage errors
# of the reference's SDXL assertions.
. "$(dirname "$0")/lib.sh"
t_init train_sdxl
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null || { nok train_sdxl_tiny_model; exit 1; }
./tiny_model model sd1.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_sdxl_tiny_sd1; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_sdxl_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method lora --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 "$@"; }
keys() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
for k, v in sorted(h.items()):
    if k != '__metadata__': print(k, v['dtype'], v['shape'])
PY
}
losses() { grep -o '"loss":[^,]*' "$1" | tr '\n' ' '; }

# ---- a basic run: names, counts, metadata ----------------------------------------------------------------
if T --output_dir o1 --output_name xl --max_train_steps 4 --log_jsonl o1.log 2> o1.err; then ok train_sdxl_runs
else nok train_sdxl_runs "$(tail -3 o1.err)"; fi
keys o1/xl.safetensors > keys.txt
grep -qx 'lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.lora_down.weight F32 \[4, 64\]' keys.txt &&
grep -qx 'lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k.lora_down.weight F32 \[4, 64\]' keys.txt &&
grep -qx 'lora_unet_middle_block_1_proj_in.lora_up.weight F32 \[64, 4\]' keys.txt &&
grep -qx 'lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_0_proj.lora_up.weight F32 \[512, 4\]' keys.txt &&
grep -qx 'lora_te1_text_model_encoder_layers_1_mlp_fc2.alpha I64 \[\]' keys.txt &&
grep -qx 'lora_te2_text_model_encoder_layers_2_self_attn_out_proj.lora_down.weight F32 \[4, 32\]' keys.txt &&
  ok train_sdxl_kohya_keys || nok train_sdxl_kohya_keys "$(grep -c . keys.txt) keys; $(grep -m3 'lora_unet' keys.txt)"
n1=$(grep -c '^lora_te1_.*lora_down.weight' keys.txt); n2=$(grep -c '^lora_te2_.*lora_down.weight' keys.txt)
nu=$(grep -c '^lora_unet_.*lora_down.weight' keys.txt)
# TE1 2 layers × 6, TE2 3 layers × 6; UNet: 4 transformer models (input, middle, 2 output) × (2 + 2 blocks × 10)
[ "$n1/$n2/$nu" = 12/18/88 ] && ok train_sdxl_module_counts || nok train_sdxl_module_counts "te1 $n1 te2 $n2 unet $nu"
grep -q 'diffusers\|down_blocks\|lora_te_text' keys.txt && nok train_sdxl_no_sd1_names || ok train_sdxl_no_sd1_names
[ "$(t_meta o1/xl.safetensors ss_base_model_version)" = sdxl_base_v1-0 ] && [ "$(t_meta o1/xl.safetensors ss_v2)" = False ] &&
[ "$(t_meta o1/xl.safetensors modelspec.architecture)" = stable-diffusion-xl-v1-base/lora ] &&
[ "$(t_meta o1/xl.safetensors modelspec.resolution)" = 1024x1024 ] &&
[ "$(t_meta o1/xl.safetensors modelspec.implementation)" = https://github.com/Stability-AI/generative-models ] &&
[ "$(t_meta o1/xl.safetensors sshs_model_hash | wc -c)" = 65 ] && [ "$(t_meta o1/xl.safetensors ss_steps)" = 4 ] &&
  ok train_sdxl_metadata || nok train_sdxl_metadata "$(t_meta o1/xl.safetensors ss_base_model_version) $(t_meta o1/xl.safetensors modelspec.architecture)"
l=$(losses o1.log)
case "$l" in *nan*|*inf*|'') nok train_sdxl_loss_finite "$l";; *) ok train_sdxl_loss_finite;; esac

# ---- threads: same bytes -----------------------------------------------------------------------------------
T --output_dir o2 --output_name xl --max_train_steps 4 --threads 2 2> /dev/null
cmp -s o1/xl.safetensors o2/xl.safetensors && ok train_sdxl_threads_same_bytes || nok train_sdxl_threads_same_bytes

# ---- the text encoders train: their LoRA up weights move -----------------------------------------------------
python3 - o1/xl.safetensors <<'PY' && ok train_sdxl_te_trained || nok train_sdxl_te_trained
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
def nz(k):
    s, e = h[k]['data_offsets']; return any(x != 0 for x in d[s:e])
ups = lambda p: [k for k in h if k.startswith(p) and k.endswith('lora_up.weight')]
# TE2's last layer feeds only the pooled output; TE1's last layer is never used (hidden state 11)
ok = any(nz(k) for k in ups('lora_te1_')) and nz('lora_te2_text_model_encoder_layers_2_mlp_fc2.lora_up.weight') \
     and nz('lora_te2_text_model_encoder_layers_0_mlp_fc2.lora_up.weight') and any(nz(k) for k in ups('lora_unet_')) \
     and not nz('lora_te1_text_model_encoder_layers_1_mlp_fc2.lora_up.weight')
sys.exit(0 if ok else 1)
PY

# ---- cached text-encoder outputs: the same losses and bytes ----------------------------------------------------
U=(--network_train_unet_only --max_train_steps 6 --train_batch_size 2)
T --output_dir c0 "${U[@]}" --log_jsonl c0.log 2> c0.err
T --output_dir c1 "${U[@]}" --cache_text_encoder_outputs --log_jsonl c1.log 2> c1.err
if [ -s c0.log ] && [ "$(losses c0.log)" = "$(losses c1.log)" ]; then ok train_sdxl_te_cache_same_losses
else nok train_sdxl_te_cache_same_losses "$(losses c0.log) | $(losses c1.log) $(tail -2 c1.err)"; fi
cmp -s c0/last.safetensors c1/last.safetensors && ok train_sdxl_te_cache_same_bytes || nok train_sdxl_te_cache_same_bytes
T --output_dir c2 "${U[@]}" --cache_text_encoder_outputs_to_disk --log_jsonl c2.log 2> c2.err
n=$(ls lat*_te_outputs.npz 2> /dev/null | wc -l)
[ "$n" = 6 ] && grep -q '0 files reused, 6 written' c2.err && ok train_sdxl_te_cache_disk_written ||
  nok train_sdxl_te_cache_disk_written "$n files; $(tail -2 c2.err)"
python3 - lat000_te_outputs.npz <<'PY' && ok train_sdxl_te_cache_npz || nok train_sdxl_te_cache_npz
import ast, struct, sys, zipfile
z = zipfile.ZipFile(sys.argv[1]); shapes = {}
for name in z.namelist():
    b = z.read(name); assert b[:6] == b'\x93NUMPY'
    hl = struct.unpack('<H', b[8:10])[0] if b[6] == 1 else struct.unpack('<I', b[8:12])[0]
    h = ast.literal_eval(b[10 if b[6] == 1 else 12:][:hl].decode('latin1'))
    assert h['descr'] == '<f4', h; shapes[name] = tuple(h['shape'])
sys.exit(0 if shapes == {'hidden_state1.npy': (77, 32), 'hidden_state2.npy': (77, 32), 'pool2.npy': (16,)} else 1)
PY
cmp -s c0/last.safetensors c2/last.safetensors && ok train_sdxl_te_cache_disk_same_bytes || nok train_sdxl_te_cache_disk_same_bytes
T --output_dir c3 "${U[@]}" --cache_text_encoder_outputs_to_disk 2> c3.err
grep -q '6 files reused, 0 written' c3.err && cmp -s c0/last.safetensors c3/last.safetensors &&
  ok train_sdxl_te_cache_disk_reused || nok train_sdxl_te_cache_disk_reused "$(tail -2 c3.err)"

# ---- resume: byte-identical --------------------------------------------------------------------------------------
T --output_dir r1 --max_train_steps 6 --save_every_n_steps 2 --save_state 2> /dev/null
T --output_dir r2 --max_train_steps 6 --resume r1/at-step00000002-state 2> r2.err
[ -f r1/last.safetensors ] && cmp -s r1/last.safetensors r2/last.safetensors && ok train_sdxl_resume_same_bytes ||
  nok train_sdxl_resume_same_bytes "$(tail -2 r2.err)"

# ---- more paths: long captions, weighted captions, validation, TE-only, --network_weights -------------------------
T --output_dir m1 --max_train_steps 2 --max_token_length 150 2> m1.err && ok train_sdxl_long_captions ||
  nok train_sdxl_long_captions "$(tail -2 m1.err)"
sed 's/"caption":"sks, \([a-z]*\)/"caption":"sks, (\1:1.3)/' recs.jsonl > recw.jsonl
T --data recw.jsonl --output_dir m2 --max_train_steps 2 --weighted_captions 2> m2.err && ok train_sdxl_weighted ||
  nok train_sdxl_weighted "$(tail -2 m2.err)"
T --data recw.jsonl --output_dir m2c --max_train_steps 2 --weighted_captions --network_train_unet_only --log_jsonl m2c0.log 2> /dev/null
T --data recw.jsonl --output_dir m2d --max_train_steps 2 --weighted_captions --network_train_unet_only \
  --cache_text_encoder_outputs --log_jsonl m2c1.log 2> /dev/null
[ -s m2c0.log ] && [ "$(losses m2c0.log)" = "$(losses m2c1.log)" ] && ok train_sdxl_weighted_cache_same ||
  nok train_sdxl_weighted_cache_same "$(losses m2c0.log) | $(losses m2c1.log)"
T --output_dir m3 --max_train_steps 4 --validation_split 0.34 --validate_every_n_steps 2 2> m3.err &&
  grep -q 'val_avg_loss' m3.err && ok train_sdxl_validation || nok train_sdxl_validation "$(tail -2 m3.err)"
T --output_dir m3c --max_train_steps 4 --validation_split 0.34 --validate_every_n_steps 2 --network_train_unet_only \
  --cache_text_encoder_outputs 2> m3c.err && grep -q 'val_avg_loss' m3c.err && ok train_sdxl_validation_te_cache ||
  nok train_sdxl_validation_te_cache "$(tail -2 m3c.err)"
T --output_dir m4 --max_train_steps 2 --network_train_text_encoder_only 2> m4.err; keys m4/last.safetensors > k4.txt 2> /dev/null
[ "$(grep -c '^lora_unet_' k4.txt)" = 0 ] && [ "$(grep -c '^lora_te2_.*lora_down' k4.txt)" = 18 ] &&
  ok train_sdxl_te_only || nok train_sdxl_te_only "$(tail -2 m4.err)"
T --output_dir m5 --max_train_steps 1 --network_weights o1/xl.safetensors 2> m5.err &&
  grep -q 'loaded 118 LoRA modules' m5.err && ok train_sdxl_network_weights || nok train_sdxl_network_weights "$(grep -i 'loaded\|error' m5.err)"
# conv_dim: the 3x3 convs too (output_blocks.1.2 is the upsampler); down_lr_weight 1,0: block 2
# (input_blocks.1) has no modules at all
T --output_dir m6 --max_train_steps 2 --network_args conv_dim=2 "down_lr_weight=1,0" 2> m6.err; keys m6/last.safetensors > k6.txt 2> /dev/null
grep -q '^lora_unet_output_blocks_1_0_in_layers_2.lora_down.weight F32 \[2, [0-9]*, 3, 3\]' k6.txt &&
  grep -q '^lora_unet_output_blocks_1_2_conv.lora_down.weight F32 \[2, 64, 3, 3\]' k6.txt &&
  ! grep -q '^lora_unet_input_blocks_1_' k6.txt && grep -q '^lora_unet_input_blocks_3_1_proj_in' k6.txt &&
  ok train_sdxl_conv_and_blocks || nok train_sdxl_conv_and_blocks "$(tail -2 m6.err)"
# --network_weights / --dim_from_weights with the UNet modules in Diffusers names (lora_unet_down_blocks_…, as
# Diffusers-based trainers write them; renamed by tests/unit/test_sample's helper): the same starting point, so the
# same bytes after a step, as with kohya's SGM names; a file naming one layer both ways is refused naming both
helper="$root/$build/tests/unit/test_sample"
if [ -x "$helper" ]; then
  T --output_dir m7 --max_train_steps 2 --network_args conv_dim=2 2> m7.err
  mkdir -p dn && "$helper" sdxl-lora-diffusers xl.safetensors "$root/examples/tiny_sdxl.toml" m7/last.safetensors \
    dn/last.safetensors > dn.txt 2> dn.err && "$helper" sdxl-lora-diffusers xl.safetensors \
    "$root/examples/tiny_sdxl.toml" m7/last.safetensors mixed.safetensors mixed > /dev/null 2>> dn.err || echo "# $(cat dn.err)"
  nd=$(wc -l < dn.txt); nall=$(keys m7/last.safetensors | grep -c 'lora_down')
  echo "# $nd of $nall modules renamed, e.g. $(grep '_conv ' dn.txt | head -1)"
  for v in "" "--dim_from_weights"; do
    W=(--max_train_steps 1 --network_args conv_dim=2 $v)
    T --output_dir w1 "${W[@]}" --network_weights m7/last.safetensors 2> w1.err
    T --output_dir w2 "${W[@]}" --network_weights dn/last.safetensors 2> w2.err
    [ "$nd" -gt 20 ] && grep -q 'output_blocks_1_2_conv lora_unet_up_blocks_0_upsamplers_0_conv$' dn.txt &&
      grep -q "loaded $nall LoRA modules" w1.err && grep -q "loaded $nall LoRA modules" w2.err &&
      grep -q "dn/last.safetensors: $nd UNet modules with Diffusers names" w2.err &&
      cmp -s w1/last.safetensors w2/last.safetensors && ok "train_sdxl_network_weights_diffusers_names${v:+_dim_from_weights}" ||
      nok "train_sdxl_network_weights_diffusers_names${v:+_dim_from_weights}" "$(grep -i 'loaded\|error' w1.err w2.err)"
  done
  T --output_dir w3 --max_train_steps 1 --network_weights mixed.safetensors 2> w3.err; rc=$?
  m1=$(head -1 dn.txt | cut -d' ' -f1); m2=$(head -1 dn.txt | cut -d' ' -f2)
  [ $rc = 1 ] && grep -q "mixed.safetensors: modules '$m2' (Diffusers name) and '$m1' (SGM name) are the same SDXL UNet layer" w3.err &&
    ok train_sdxl_network_weights_mixed_names_refused || nok train_sdxl_network_weights_mixed_names_refused "rc $rc $(tail -1 w3.err)"
else
  ok "train_sdxl_network_weights_diffusers_names # SKIP $helper not built"
fi

# ---- usage errors ---------------------------------------------------------------------------------------------------
T --output_dir e1 --bucket_reso_steps 48 2> e1.err; rc=$?
[ $rc = 2 ] && grep -q 'multiple of 32' e1.err && ok train_sdxl_bucket_steps_refused || nok train_sdxl_bucket_steps_refused "rc $rc $(cat e1.err)"
T --output_dir e2 --cache_text_encoder_outputs 2> e2.err; rc=$?
[ $rc = 2 ] && grep -q 'network_train_unet_only' e2.err && ok train_sdxl_cache_needs_unet_only || nok train_sdxl_cache_needs_unet_only "rc $rc $(cat e2.err)"
T --output_dir e3 --cache_text_encoder_outputs --network_train_unet_only --shuffle_caption 2> e3.err; rc=$?
[ $rc = 2 ] && grep -q 'shuffle_caption' e3.err && ok train_sdxl_cache_needs_fixed_captions || nok train_sdxl_cache_needs_fixed_captions "rc $rc $(cat e3.err)"
"$bin" --method lora --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --network_train_unet_only --cache_text_encoder_outputs --output_dir e4 2> e4.err; rc=$?
[ $rc = 2 ] && grep -q 'only for SDXL' e4.err && ok train_sdxl_cache_sd1_refused || nok train_sdxl_cache_sd1_refused "rc $rc $(cat e4.err)"
# (--method db / ft on SDXL: tests/cli/train_full_sdxl.sh; --method ti: tests/cli/train_ti_sdxl.sh)
T --output_dir e7 --v2 2> e7.err; rc=$?
[ $rc = 2 ] && grep -q 'v2 cannot be enabled' e7.err && ok train_sdxl_v2_refused || nok train_sdxl_v2_refused "rc $rc $(cat e7.err)"
T --output_dir e8 --max_train_steps 1 --clip_skip 2 2> e8.err && grep -q 'clip_skip will be unexpected' e8.err &&
  ok train_sdxl_clip_skip_warns || nok train_sdxl_clip_skip_warns "$(tail -2 e8.err)"
# ---- --device cuda (a GPU, or SD_FAKE_CUDA=1 in a build without CUDA): the LoRA after 6 steps (both text
# encoders and the UNet, weighted long captions, validation) and the losses match the CPU run within fp32
# drift; cached text-encoder outputs on the device; the fail-fast memory check (fake device) ---------------
cat > lora_cmp.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); o = {}
    for k, v in h.items():
        if k == '__metadata__' or v['dtype'] != 'F32': continue
        s, e = v['data_offsets']; o[k] = struct.unpack('<%df' % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return o
a, g = load(sys.argv[1] + '/last.safetensors'), load(sys.argv[2] + '/last.safetensors')
tol = float(sys.argv[3])
worst = max(max(abs(x - y) for x, y in zip(a[k], g[k])) / max(1e-12, max(abs(x) for x in a[k])) for k in a)
la = [json.loads(l)['loss'] for l in open(sys.argv[1] + '.log')]; lg = [json.loads(l)['loss'] for l in open(sys.argv[2] + '.log')]
dl = max(abs(x - y) / abs(x) for x, y in zip(la, lg))
print('%d tensors, worst max|diff|/max|cpu| %.3g; %d losses, worst relative diff %.3g' % (len(a), worst, len(la), dl))
sys.exit(0 if set(a) == set(g) and len(la) == len(lg) > 0 and worst < tol and dl < tol else 1)
PY
D=(--data recw.jsonl --weighted_captions --max_token_length 150 --max_train_steps 6 --train_batch_size 2
   --validation_split 0.34 --validate_every_n_steps 3 --network_dropout 0.1 --gradient_checkpointing)
T --output_dir dvg --log_jsonl dvg.log --device cuda "${D[@]}" 2> dvg.err; rc=$?
if [ $rc = 0 ]; then
  T --output_dir dvc --log_jsonl dvc.log "${D[@]}" 2> /dev/null
  cmpres=$(python3 lora_cmp.py dvc dvg 1e-3) && ok train_sdxl_device_cuda_matches_cpu || nok train_sdxl_device_cuda_matches_cpu "$cmpres"
  echo "# SDXL GPU vs CPU: $cmpres"
  T --output_dir dtg --log_jsonl dtg.log --device cuda "${U[@]}" --cache_text_encoder_outputs 2> dtg.err
  cp c0.log c0d.log 2> /dev/null; mkdir -p c0d; cp c0/last.safetensors c0d/ 2> /dev/null
  cmpres=$(python3 lora_cmp.py c0d dtg 1e-3) && ok train_sdxl_device_cuda_te_cache_matches_cpu ||
    nok train_sdxl_device_cuda_te_cache_matches_cpu "$cmpres $(tail -1 dtg.err)"
  if [ -n "${SD_FAKE_CUDA:-}" ]; then
    SD_FAKE_CUDA_MIB=1 T --output_dir dsm --device cuda "${D[@]}" 2> dsm.err; rc=$?
    [ $rc = 1 ] && grep -q 'needs about .* GiB of GPU memory (weights .*, 0.00 GiB free on fake CUDA' dsm.err &&
      [ ! -e dsm/last.safetensors ] && ok train_sdxl_device_cuda_fail_fast || nok train_sdxl_device_cuda_fail_fast "rc $rc $(tail -1 dsm.err)"
  fi
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" dvg.err && ok train_sdxl_device_cuda_unavailable ||
    nok train_sdxl_device_cuda_unavailable "rc $rc $(tail -2 dvg.err)"
fi
exit 0
