#!/usr/bin/env bash
# sd-train --network_module networks.oft (kohya networks/oft.py) end to end on the tiny SD1 and SDXL models:
# the file's keys, shapes, alpha dtypes and ss_* metadata as the reference writes them; the target sets
# (attention only, enable_all_linear, enable_conv); --threads 1 and 2 give the same bytes; a run resumed from a
# state ends with the same bytes; --network_weights loads the blocks (and --dim_from_weights the file's dim,
# alpha and targets); sd-sample with the file draws another image than without it, the base image at
# --network_mul 0, and the very image sd-train sampled with the modules hooked in; options OFT has no use for
# are refused (exit 2), a dim that does not divide a layer's rows is an error (exit 1); sd-model merge refuses
# OFT files (merge_lora.py merges LoRA keys only).
. "$(dirname "$0")/lib.sh"
t_init train_oft
bin="$root/$build/bin/sd-train" ss="$root/$build/bin/sd-sample" sm="$root/$build/bin/sd-model"
helper="$root/$build/tests/unit/test_sample"
t_need "$bin" "$ss"
t_tiny_build
cd "$tmp"
C="$root/examples/tiny_model.toml" CX="$root/examples/tiny_sdxl.toml"
./tiny_model model tiny.safetensors "$C" > /dev/null || { nok train_oft_tiny_model; exit 1; }
./tiny_model model xl.safetensors "$CX" > /dev/null || { nok train_oft_tiny_sdxl; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_oft_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0
T() { "$bin" --method lora --network_module networks.oft --model tiny.safetensors --model_config "$C" --data recs.jsonl \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --threads 1 "$@"; }
keys() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
for k, v in sorted(h.items()):
    if k != '__metadata__': print(k, v['dtype'], v['shape'])
PY
}
# max |a - b| over the oft_blocks of two files with the same keys (and the largest |a|)
blkdiff() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    out = {}
    for k, v in h.items():
        if k.endswith('.oft_blocks') and v['dtype'] == 'F32':
            s, e = v['data_offsets']; out[k] = struct.unpack('<%df' % ((e - s) // 4), d[s:e])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys() and a
print('%.3g %.3g' % (max(abs(x - y) for k in a for x, y in zip(a[k], b[k])), max(abs(x) for k in a for x in a[k])))
PY
}

# ---- a basic run: attention-only modules, keys and metadata -------------------------------------------------
if T --output_dir o1 --output_name t --max_train_steps 8 --network_alpha 1e-2 2> o1.err; then ok train_oft_runs
else nok train_oft_runs "$(tail -2 o1.err)"; fi
keys o1/t.safetensors > k1.txt
grep -qx 'oft_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.oft_blocks F32 \[4, 8, 8\]' k1.txt &&
grep -qx 'oft_unet_up_blocks_1_attentions_1_transformer_blocks_0_attn2_to_out_0.oft_blocks F32 \[4, 8, 8\]' k1.txt &&
grep -qx 'oft_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v.alpha F32 \[\]' k1.txt &&
grep -qx 'oft_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v.oft_blocks F32 \[4, 16, 16\]' k1.txt &&
  ok train_oft_keys || nok train_oft_keys "$(head -3 k1.txt)"
n=$(grep -c '\.oft_blocks ' k1.txt) na=$(grep -c '\.alpha ' k1.txt) nx=$(grep -vc 'attn[12]_to_' k1.txt)
[ "$n" = 56 ] && [ "$na" = 56 ] && [ "$nx" = 0 ] && ok train_oft_attention_only || nok train_oft_attention_only "$n $na $nx"
[ "$(t_meta o1/t.safetensors ss_network_module)" = networks.oft ] && [ "$(t_meta o1/t.safetensors ss_network_dim)" = 4 ] &&
[ "$(t_meta o1/t.safetensors ss_network_alpha)" = 0.01 ] && [ "$(t_meta o1/t.safetensors ss_network_dropout)" = None ] &&
[ "$(t_meta o1/t.safetensors modelspec.architecture)" = stable-diffusion-v1/lora ] &&
[ "$(t_meta o1/t.safetensors sshs_model_hash | wc -c)" = 65 ] && ok train_oft_metadata || nok train_oft_metadata
grep -q 'create OFT network. num blocks: 4, constraint: 0.01, multiplier: 1, enable_conv: False, enable_all_linear: False' o1.err &&
  ok train_oft_log_line || nok train_oft_log_line "$(grep OFT o1.err)"
# the blocks moved from their zero init (and stayed antisymmetric-free: only B - B^T matters, B itself is free)
d=$(blkdiff o1/t.safetensors o1/t.safetensors | cut -d' ' -f2)
python3 -c "import sys; sys.exit(0 if float('$d') > 1e-3 else 1)" && ok train_oft_trained || nok train_oft_trained "max|B| $d"

# the default alpha is the reference's argparse default 1 (an integer: I64), with its warning
T --output_dir o0 --output_name t --max_train_steps 1 2> o0.err
keys o0/t.safetensors > k0.txt 2> /dev/null
grep -qx 'oft_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha I64 \[\]' k0.txt &&
grep -q 'network_alpha is too large' o0.err && ok train_oft_default_alpha || nok train_oft_default_alpha
T --output_dir o0p --output_name t --max_train_steps 1 --save_precision fp16 2> /dev/null
keys o0p/t.safetensors > k0p.txt 2> /dev/null
grep -qx 'oft_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha F16 \[\]' k0p.txt &&
grep -qx 'oft_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.oft_blocks F16 \[4, 8, 8\]' k0p.txt &&
  ok train_oft_save_precision || nok train_oft_save_precision

# ---- targets: enable_all_linear, enable_conv --------------------------------------------------------------
T --output_dir o2 --output_name t --max_train_steps 2 --network_alpha 1e-2 --network_args enable_all_linear=1 \
  enable_conv=True 2> o2.err
keys o2/t.safetensors > k2.txt
grep -qx 'oft_unet_down_blocks_0_attentions_0_proj_in.oft_blocks F32 \[4, 8, 8\]' k2.txt &&
grep -qx 'oft_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj.oft_blocks F32 \[4, 128, 128\]' k2.txt &&
grep -qx 'oft_unet_down_blocks_0_resnets_0_conv1.oft_blocks F32 \[4, 8, 8\]' k2.txt &&
grep -qx 'oft_unet_down_blocks_0_resnets_0_time_emb_proj.oft_blocks F32 \[4, 8, 8\]' k2.txt &&
grep -qx 'oft_unet_down_blocks_0_downsamplers_0_conv.oft_blocks F32 \[4, 8, 8\]' k2.txt &&
[ "$(grep -c '\.oft_blocks ' k2.txt)" = 115 ] && ok train_oft_all_linear_conv || nok train_oft_all_linear_conv "$(grep -c oft_blocks k2.txt)"
[ "$(t_meta o2/t.safetensors ss_network_args)" = '{"enable_all_linear": "1", "enable_conv": "True", "dropout": null}' ] &&
  ok train_oft_network_args_meta || nok train_oft_network_args_meta "$(t_meta o2/t.safetensors ss_network_args)"

# ---- threads, resume ----------------------------------------------------------------------------------------
T --output_dir o3 --output_name t --max_train_steps 8 --network_alpha 1e-2 --threads 2 2> /dev/null
cmp -s o1/t.safetensors o3/t.safetensors && ok train_oft_threads_same_bytes || nok train_oft_threads_same_bytes
T --output_dir r1 --max_train_steps 8 --network_alpha 1e-2 --network_args enable_conv=1 --save_every_n_steps 4 --save_state 2> /dev/null
T --output_dir r2 --max_train_steps 8 --network_alpha 1e-2 --network_args enable_conv=1 --resume r1/at-step00000004-state 2> r2.err
[ -f r1/last.safetensors ] && cmp -s r1/last.safetensors r2/last.safetensors && ok train_oft_resume_same_bytes ||
  nok train_oft_resume_same_bytes "$(tail -2 r2.err)"

# ---- --network_weights: the blocks load (a step at a negligible rate keeps them); --dim_from_weights ----------
T --output_dir w1 --output_name t --max_train_steps 1 --learning_rate 1e-20 --network_alpha 1e-2 \
  --network_weights o1/t.safetensors 2> w1.err
r=$(blkdiff o1/t.safetensors w1/t.safetensors 2>&1); set -- $r
python3 -c "import sys; sys.exit(0 if float('$1') < 1e-9 and float('$2') > 1e-3 else 1)" 2> /dev/null &&
grep -q 'loaded 56 OFT modules from o1/t.safetensors' w1.err && ok train_oft_network_weights || nok train_oft_network_weights "$r"
T --output_dir w2 --max_train_steps 1 --network_alpha 0.5 --network_weights o1/t.safetensors 2> w2.err; rc=$?
[ $rc = 1 ] && grep -q 'alpha 0.01 in the file, 0.5 in the network' w2.err && ok train_oft_network_weights_alpha ||
  nok train_oft_network_weights_alpha "rc $rc $(tail -1 w2.err)"
T --output_dir w3 --output_name t --max_train_steps 1 --network_dim 2 --network_alpha 7 --dim_from_weights \
  --network_weights o2/t.safetensors 2> w3.err; rc=$?
[ $rc = 0 ] && [ "$(keys w3/t.safetensors | grep -c oft_blocks)" = 115 ] &&
grep -q 'num blocks: 4, constraint: 0.01, .*enable_conv: True, enable_all_linear: True' w3.err &&
grep -q '^oft_unet_down_blocks_0_resnets_0_conv1.alpha F32 \[\]' <(keys w3/t.safetensors 2> /dev/null) &&
[ "$(t_meta w3/t.safetensors ss_network_dim)" = 2 ] && [ "$(t_meta w3/t.safetensors ss_network_alpha)" = 7.0 ] &&
  ok train_oft_dim_from_weights || nok train_oft_dim_from_weights "rc $rc $(grep -i 'oft\|error' w3.err | head -2)"
# the file's integer alpha stays an integer (the reference's .item() of an int64 tensor)
T --output_dir w4 --output_name t --max_train_steps 1 --network_alpha 0.5 --dim_from_weights \
  --network_weights o0/t.safetensors 2> w4.err; rc=$?
[ $rc = 0 ] && grep -q '^oft_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha I64 \[\]' <(keys w4/t.safetensors 2> /dev/null) &&
  ok train_oft_dim_from_weights_int_alpha || nok train_oft_dim_from_weights_int_alpha "rc $rc $(tail -1 w4.err)"

# ---- --base_weights are OFT files here: multiplier 0 = no base weights (R = I exactly), 1 changes the run
T --output_dir b0 --output_name t --max_train_steps 2 --network_alpha 1e-2 2> /dev/null
T --output_dir b1 --output_name t --max_train_steps 2 --network_alpha 1e-2 --base_weights o1/t.safetensors \
  --base_weights_multiplier 0 2> b1.err
T --output_dir b2 --output_name t --max_train_steps 2 --network_alpha 1e-2 --base_weights o1/t.safetensors 2> b2.err
cmp -s b0/t.safetensors b1/t.safetensors && [ -f b2/t.safetensors ] && ! cmp -s b0/t.safetensors b2/t.safetensors &&
grep -q 'merging module: o1/t.safetensors with multiplier 1: 0 text-encoder and 56 UNet modules' b2.err &&
  ok train_oft_base_weights || nok train_oft_base_weights "$(tail -1 b2.err)"

# ---- sd-sample: changes the image; mul 0 = base; = the image sampled in training with the modules hooked --------
echo 'a red square --w 64 --h 64 --s 3 --d 7' > p.txt
T --output_dir s1 --output_name t --max_train_steps 8 --network_alpha 1e-2 --network_args enable_conv=1 \
  --sample_prompts p.txt --sample_every_n_steps 8 2> /dev/null
S() { "$ss" --model tiny.safetensors --model_config "$C" --W 64 --H 64 --steps 3 --seed 7 --prompt "a red square" \
  --sampler ddim --sequential_file_name --threads 1 "$@" > /dev/null; }
S --outdir q0 2> /dev/null
S --outdir q1 --network_weights s1/t.safetensors 2> q1.err
S --outdir q2 --network_weights s1/t.safetensors --network_mul 0 2> /dev/null
S --outdir q3 --network_weights s1/t.safetensors --network_module networks.oft 2> /dev/null
grep -q 's1/t.safetensors: merged 87 modules (0 text encoder, 87 UNet) with multiplier 1' q1.err &&
  ok sample_oft_merged_message || nok sample_oft_merged_message "$(cat q1.err)"
if [ -x "$helper" ]; then
  d0=$("$helper" maxdiff q0/im_000001.png q1/im_000001.png) dm=$("$helper" maxdiff q0/im_000001.png q2/im_000001.png)
  dh=$("$helper" maxdiff q1/im_000001.png "$(ls s1/sample/*.png | head -1)") d3=$("$helper" maxdiff q1/im_000001.png q3/im_000001.png)
  echo "# OFT vs base $d0, mul 0 vs base $dm, merged vs hooked (training sample) $dh, --network_module given $d3"
  [ "$d0" -gt 0 ] && ok sample_oft_changes_image || nok sample_oft_changes_image
  [ "$dm" = 0 ] && ok sample_oft_mul0_is_base || nok sample_oft_mul0_is_base
  # up to float rounding (the conv ops of the two runs may sum in another order): at most 1 level
  [ "$dh" -ge 0 ] && [ "$dh" -le 1 ] && [ "$d3" = 0 ] && ok sample_oft_merge_equals_hooks || nok sample_oft_merge_equals_hooks
else
  echo "ok sample_oft_changes_image # SKIP $helper not built"
fi
S --outdir qb --network_weights s1/t.safetensors --network_module networks.lora 2> qb.err; rc=$?
[ $rc = 1 ] && grep -q 's1/t.safetensors: an OFT file, but --network_module networks.lora' qb.err &&
  ok sample_oft_module_mismatch || nok sample_oft_module_mismatch "rc $rc $(cat qb.err)"
S --outdir qc --network_weights s1/t.safetensors --network_module networks.oft networks.oft 2> qc.err; rc=$?
[ $rc = 2 ] && ok sample_oft_too_many_modules || nok sample_oft_too_many_modules "rc $rc"

# ---- SDXL: ldm names, conv modules, sd-sample ------------------------------------------------------------------
"$bin" --method lora --network_module networks.oft --model xl.safetensors --model_config "$CX" --data recs.jsonl \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --network_alpha 1e-2 --threads 1 --network_args enable_conv=1 \
  --output_dir x1 --output_name t --max_train_steps 4 2> x1.err; rc=$?
keys x1/t.safetensors > kx.txt 2> /dev/null
[ $rc = 0 ] && grep -q '^oft_unet_input_blocks_1_0_in_layers_2.oft_blocks F32' kx.txt &&
grep -q '^oft_unet_input_blocks_3_1_transformer_blocks_1_attn1_to_q.oft_blocks F32 \[4, 16, 16\]' kx.txt &&
[ "$(t_meta x1/t.safetensors modelspec.architecture)" = stable-diffusion-xl-v1-base/lora ] &&
  ok train_oft_sdxl || nok train_oft_sdxl "rc $rc $(tail -1 x1.err)"
"$ss" --model xl.safetensors --model_config "$CX" --W 64 --H 64 --steps 2 --seed 7 --prompt x --sequential_file_name \
  --threads 1 --outdir xq0 > /dev/null 2>&1
"$ss" --model xl.safetensors --model_config "$CX" --W 64 --H 64 --steps 2 --seed 7 --prompt x --sequential_file_name \
  --threads 1 --outdir xq1 --network_weights x1/t.safetensors > /dev/null 2>&1
if [ ! -f xq1/im_000001.png ] || [ ! -f xq0/im_000001.png ]; then nok sample_oft_sdxl "no image"
elif [ -x "$helper" ]; then
  [ "$("$helper" maxdiff xq0/im_000001.png xq1/im_000001.png)" -gt 0 ] && ok sample_oft_sdxl || nok sample_oft_sdxl
else echo "ok sample_oft_sdxl # SKIP $helper not built"; fi

# ---- refusals ------------------------------------------------------------------------------------------------
refuse() { t_refuse "$1" "$2" "$3" T --output_dir bad --max_train_steps 1 "${@:4}"; }
refuse train_oft_refuses_dropout 2 'network_dropout: networks.oft has no dropout' --network_dropout 0.1
refuse train_oft_refuses_max_norm 2 'scale_weight_norms: networks.oft' --scale_weight_norms 1
refuse train_oft_refuses_te_lr 2 'text_encoder_lr: networks.oft has no text-encoder modules' --text_encoder_lr 1e-4
refuse train_oft_refuses_te_only 2 'network_train_text_encoder_only: networks.oft' --network_train_text_encoder_only
refuse train_oft_refuses_lora_args 2 'conv_dim=4: not an option of networks.oft' --network_args conv_dim=4
refuse train_oft_refuses_args_with_dim_from_weights 2 'network_args with --dim_from_weights' \
  --network_args enable_conv=1 --dim_from_weights --network_weights o1/t.safetensors
refuse train_oft_dim_must_divide 1 '32 output rows are not divisible by network_dim 3' --network_dim 3
refuse train_oft_weights_not_oft 1 "is not an OFT tensor" --network_weights tiny.safetensors
T --output_dir bad2 --max_train_steps 1 --network_module networks.loha > /dev/null 2> bad2.err; rc=$?
[ $rc = 1 ] && grep -q 'networks.loha is not supported (networks.lora, .*networks.oft are)' bad2.err &&
  ok train_oft_other_module_refused || nok train_oft_other_module_refused "rc $rc $(tail -1 bad2.err)"
if [ -x "$sm" ]; then
  "$sm" merge --sd_model tiny.safetensors --model_config "$C" --models o1/t.safetensors --ratios 1 --save_to mm.safetensors \
    > /dev/null 2> mm.err; rc=$?
  [ $rc = 1 ] && grep -q 'OFT network, which is not supported' mm.err && [ ! -e mm.safetensors ] &&
    ok model_merge_refuses_oft || nok model_merge_refuses_oft "rc $rc $(cat mm.err)"
fi
