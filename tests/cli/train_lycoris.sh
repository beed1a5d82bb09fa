#!/usr/bin/env bash
# sd-train --network_module lycoris.kohya (LyCORIS's kohya.py create_network, preset "full") end to end on the
# tiny SD1 and SDXL models: algo=lora/locon targets (text-encoder attention/MLP linears; UNet transformer, resnet
# and sampler layers, and on SD1 conv_in, conv_out, time_embedding.linear_1/_2; 3x3 convs at conv_dim/conv_alpha,
# by default network_dim/network_alpha), LyCORIS key names, float alphas, kohya metadata; --threads 1 and 2 and
# --gradient_checkpointing give the same bytes; a run resumed from a state ends with the same bytes;
# --network_weights continues from a file; sd-sample renders with the file, and the image equals the one
# sd-train sampled with the modules hooked in; options not implemented are refused with exit 2.
. "$(dirname "$0")/lib.sh"
t_init train_lycoris
bin="$root/$build/bin/sd-train" ss="$root/$build/bin/sd-sample"
helper="$root/$build/tests/unit/test_sample"
t_need "$bin" "$ss"
t_tiny_build
cd "$tmp"
C="$root/examples/tiny_model.toml" CX="$root/examples/tiny_sdxl.toml"
./tiny_model model tiny.safetensors "$C" > /dev/null || { nok train_lycoris_tiny_model; exit 1; }
./tiny_model model xl.safetensors "$CX" > /dev/null || { nok train_lycoris_tiny_sdxl; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_lycoris_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0
T() { "$bin" --method lora --network_module lycoris.kohya --model tiny.safetensors --model_config "$C" --data recs.jsonl \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --threads 1 "$@"; }
keys() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
for k, v in sorted(h.items()):
    if k != '__metadata__': print(k, v['dtype'], v['shape'])
PY
}
# a tensor's values (F32), comma separated
val() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); v = h[sys.argv[2]]
s, e = v['data_offsets']; print(','.join('%g' % x for x in struct.unpack('<%df' % ((e - s) // 4), b[8 + n + s:8 + n + e])))
PY
}

# ---- a basic run: targets, keys, alphas, metadata ------------------------------------------------------------
if T --output_dir o1 --output_name t --max_train_steps 8 2> o1.err; then ok train_lycoris_runs
else nok train_lycoris_runs "$(tail -2 o1.err)"; fi
keys o1/t.safetensors > k1.txt
grep -qx 'lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight F32 \[4, 32\]' k1.txt &&
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight F32 \[128, 4\]' k1.txt &&
grep -qx 'lora_unet_conv_in.lora_down.weight F32 \[4, 4, 3, 3\]' k1.txt &&
grep -qx 'lora_unet_conv_in.lora_up.weight F32 \[32, 4, 1, 1\]' k1.txt &&
grep -qx 'lora_unet_conv_out.lora_down.weight F32 \[4, 32, 3, 3\]' k1.txt &&
grep -qx 'lora_unet_time_embedding_linear_1.lora_down.weight F32 \[4, 32\]' k1.txt &&
grep -qx 'lora_unet_time_embedding_linear_2.lora_up.weight F32 \[128, 4\]' k1.txt &&
grep -qx 'lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight F32 \[4, 32, 3, 3\]' k1.txt &&
grep -qx 'lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight F32 \[4, 128\]' k1.txt &&
grep -qx 'lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight F32 \[4, 32, 3, 3\]' k1.txt &&
grep -qx 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight F32 \[4, 32, 1, 1\]' k1.txt &&
grep -qx 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight F32 \[4, 32\]' k1.txt &&
grep -qx 'lora_unet_conv_in.alpha F32 \[\]' k1.txt && ok train_lycoris_keys || nok train_lycoris_keys "$(head -3 k1.txt)"
n=$(grep -c '\.lora_down\.weight ' k1.txt) nu=$(grep -c '\.lora_up\.weight ' k1.txt) na=$(grep -c '\.alpha F32 ' k1.txt)
nt=$(grep -c '^lora_te_.*lora_down' k1.txt) nx=$(grep -vc '\.lora_down\.weight \|\.lora_up\.weight \|\.alpha F32 ' k1.txt)
[ "$n" = 131 ] && [ "$nu" = 131 ] && [ "$na" = 131 ] && [ "$nt" = 12 ] && [ "$nx" = 0 ] && ok train_lycoris_targets ||
  nok train_lycoris_targets "$n $nu $na $nt $nx"
grep -q 'LyCORIS (algo lora): 12 text-encoder modules, 119 UNet modules (dim 4, alpha 1, conv dim 4, conv alpha 1)' o1.err &&
  ok train_lycoris_log_line || nok train_lycoris_log_line "$(grep -i lycoris o1.err)"
[ "$(val o1/t.safetensors lora_unet_conv_in.alpha)" = 1 ] &&
[ "$(t_meta o1/t.safetensors ss_network_module)" = lycoris.kohya ] && [ "$(t_meta o1/t.safetensors ss_network_dim)" = 4 ] &&
[ "$(t_meta o1/t.safetensors ss_network_alpha)" = 1 ] && [ "$(t_meta o1/t.safetensors ss_network_args)" = '<absent>' ] &&
[ "$(t_meta o1/t.safetensors modelspec.architecture)" = stable-diffusion-v1/lora ] &&
[ "$(t_meta o1/t.safetensors sshs_model_hash | wc -c)" = 65 ] && ok train_lycoris_metadata ||
  nok train_lycoris_metadata "$(t_meta o1/t.safetensors ss_network_args)"
d=$(t_wdiff o1/t.safetensors o1/t.safetensors | cut -d' ' -f2)
python3 -c "import sys; sys.exit(0 if float('$d') > 1e-3 else 1)" && ok train_lycoris_trained || nok train_lycoris_trained "$d"

# ---- network_args: conv_dim / conv_alpha, conv_dim=0, algo=locon, rs_lora ------------------------------------
T --output_dir o2 --output_name t --max_train_steps 2 --network_alpha 2 --network_args algo=locon conv_dim=2 conv_alpha=0.5 \
  rs_lora=True 2> o2.err
keys o2/t.safetensors > k2.txt 2> /dev/null
grep -qx 'lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight F32 \[2, 32, 3, 3\]' k2.txt &&
grep -qx 'lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight F32 \[4, 128\]' k2.txt &&
[ "$(val o2/t.safetensors lora_unet_down_blocks_0_resnets_0_conv1.alpha)" = 0.707107 ] &&
[ "$(val o2/t.safetensors lora_unet_down_blocks_0_resnets_0_time_emb_proj.alpha)" = 4 ] &&
[ "$(t_meta o2/t.safetensors ss_network_args)" = '{"algo": "locon", "conv_dim": "2", "conv_alpha": "0.5", "rs_lora": "True", "dropout": null}' ] &&
  ok train_lycoris_conv_dim_rs_lora || nok train_lycoris_conv_dim_rs_lora "$(t_meta o2/t.safetensors ss_network_args)"
# conv_alpha=0 (a non-empty string: float("0") = 0.0) means alpha = rank in the module
T --output_dir o6 --output_name t --max_train_steps 1 --network_args conv_alpha=0 2> /dev/null
[ "$(val o6/t.safetensors lora_unet_down_blocks_0_resnets_0_conv1.alpha 2> /dev/null)" = 4 ] &&
[ "$(val o6/t.safetensors lora_unet_down_blocks_0_resnets_0_time_emb_proj.alpha 2> /dev/null)" = 1 ] &&
  ok train_lycoris_conv_alpha_0 || nok train_lycoris_conv_alpha_0
T --output_dir o3 --output_name t --max_train_steps 1 --network_args conv_dim=0 2> /dev/null
keys o3/t.safetensors > k3.txt 2> /dev/null
# (conv_lora_dim 0 drops the k×k convs only: LyCORIS still gives the resnets' linears and 1×1 convs modules)
[ "$(grep -c 'lora_down.weight F32 \[4, [0-9]*, 3, 3\]' k3.txt)" = 0 ] && [ "$(grep -c 'lora_down.weight' k3.txt)" = 111 ] &&
grep -q '^lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight' k3.txt &&
  ok train_lycoris_conv_dim_0 || nok train_lycoris_conv_dim_0 "$(grep -c 'lora_down.weight' k3.txt)"

# ---- presets (lycoris/config.py): module classes per preset on the tiny SD1 model --------------------------------
classes() { python3 - "$1" <<'PY'
import json, struct, sys, collections
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
c = collections.Counter()
for k in h:
    if not k.endswith('.lora_down.weight'): continue
    m = k[:-len('.lora_down.weight')]
    if m.startswith('lora_te'): c['te_attn' if '_self_attn_' in m else 'te_mlp' if '_mlp_' in m else 'te_other'] += 1
    elif '_attentions_' in m: c['attn' if ('_attn1_' in m or '_attn2_' in m) else 'transformer'] += 1
    elif '_resnets_' in m: c['res3x3' if h[k]['shape'][-1] == 3 else 'res'] += 1
    elif 'samplers_' in m: c['sampler'] += 1
    else: c[m.replace('lora_unet_', '')] += 1
print(' '.join('%s=%d' % kv for kv in sorted(c.items())))
PY
}
full_c='attn=56 conv_in=1 conv_out=1 res=13 res3x3=16 sampler=2 te_attn=8 te_mlp=4 time_embedding_linear_1=1 time_embedding_linear_2=1 transformer=28'
[ "$(classes o1/t.safetensors)" = "$full_c" ] && ok train_lycoris_preset_full || nok train_lycoris_preset_full "$(classes o1/t.safetensors)"
for pc in 'full-lin:attn=56 res=13 te_attn=8 te_mlp=4 time_embedding_linear_1=1 time_embedding_linear_2=1 transformer=28' \
          'attn-mlp:attn=56 te_attn=8 te_mlp=4 transformer=28' 'attn-only:attn=56 te_attn=8' \
          'unet-only:attn=56 conv_in=1 conv_out=1 res=13 res3x3=16 sampler=2 time_embedding_linear_1=1 time_embedding_linear_2=1 transformer=28' \
          'unet-transformer-only:attn=56 transformer=28' 'unet-convblock-only:conv_in=1 conv_out=1 res=13 res3x3=16 sampler=2'; do
  p=${pc%%:*} want=${pc#*:}
  T --output_dir pr_$p --output_name t --max_train_steps 2 --network_args preset=$p 2> pr_$p.err
  got=$(classes pr_$p/t.safetensors 2> /dev/null)
  [ "$got" = "$want" ] && ok train_lycoris_preset_$p || nok train_lycoris_preset_$p "$got $(tail -1 pr_$p.err)"
done
# sd-sample reads a preset's file (fewer modules, same keys)
S0() { "$ss" --model tiny.safetensors --model_config "$C" --W 64 --H 64 --steps 2 --seed 7 --prompt "a red square" \
  --sampler ddim --sequential_file_name --threads 1 "$@" > /dev/null; }
S0 --outdir pq --network_module lycoris.kohya --network_weights pr_attn-only/t.safetensors 2> pq.err &&
  [ -f pq/im_000001.png ] && ok sample_lycoris_preset_file || nok sample_lycoris_preset_file "$(tail -1 pq.err)"

# ---- threads, gradient checkpointing, resume -----------------------------------------------------------------
T --output_dir o4 --output_name t --max_train_steps 8 --threads 2 2> /dev/null
cmp -s o1/t.safetensors o4/t.safetensors && ok train_lycoris_threads_same_bytes || nok train_lycoris_threads_same_bytes
T --output_dir o5 --output_name t --max_train_steps 8 --gradient_checkpointing 2> /dev/null
# (the metadata differs: ss_gradient_checkpointing)
r=$(t_wdiff o1/t.safetensors o5/t.safetensors 2>&1)
[ "${r%% *}" = 0 ] && ok train_lycoris_checkpointing_same_weights || nok train_lycoris_checkpointing_same_weights "$r"
T --output_dir r1 --max_train_steps 8 --network_args module_dropout=0.3 --save_every_n_steps 4 --save_state 2> /dev/null
T --output_dir r2 --max_train_steps 8 --network_args module_dropout=0.3 --resume r1/at-step00000004-state 2> r2.err
[ -f r1/last.safetensors ] && cmp -s r1/last.safetensors r2/last.safetensors && ! cmp -s r1/last.safetensors o1/t.safetensors &&
  ok train_lycoris_resume_same_bytes || nok train_lycoris_resume_same_bytes "$(tail -2 r2.err)"

# ---- dropouts (LyCORIS's semantics, Philox draws keyed by step): rank_dropout for every algo; dropout in bypass_mode --
for algo in locon loha lokr; do
  T --output_dir rd_$algo --output_name t --max_train_steps 6 --network_args algo=$algo rank_dropout=0.5 2> rd_$algo.err
  T --output_dir rn_$algo --output_name t --max_train_steps 6 --network_args algo=$algo 2> /dev/null
  T --output_dir rt_$algo --output_name t --max_train_steps 6 --network_args algo=$algo rank_dropout=0.5 --threads 2 2> /dev/null
  T --output_dir rs_$algo --max_train_steps 6 --network_args algo=$algo rank_dropout=0.5 --save_every_n_steps 3 --save_state 2> /dev/null
  T --output_dir rr_$algo --max_train_steps 6 --network_args algo=$algo rank_dropout=0.5 --resume rs_$algo/at-step00000003-state 2> /dev/null
  r=$(t_wdiff rd_$algo/t.safetensors rn_$algo/t.safetensors 2>&1)
  [ -f rd_$algo/t.safetensors ] && [ "${r%% *}" != 0 ] && cmp -s rd_$algo/t.safetensors rt_$algo/t.safetensors &&
  cmp -s rs_$algo/last.safetensors rr_$algo/last.safetensors &&
    ok train_lycoris_${algo}_rank_dropout || nok train_lycoris_${algo}_rank_dropout "$r $(tail -1 rd_$algo.err)"
done
T --output_dir bd --output_name t --max_train_steps 6 --network_args algo=locon bypass_mode=True dropout=0.3 rank_dropout=0.25 \
  2> bd.err
T --output_dir bn --output_name t --max_train_steps 6 --network_args algo=locon bypass_mode=True 2> /dev/null
T --output_dir bt --output_name t --max_train_steps 6 --network_args algo=locon bypass_mode=True dropout=0.3 rank_dropout=0.25 \
  --threads 2 2> /dev/null
r=$(t_wdiff bd/t.safetensors bn/t.safetensors 2>&1)
[ -f bd/t.safetensors ] && [ "${r%% *}" != 0 ] && cmp -s bd/t.safetensors bt/t.safetensors &&
[ "$(t_meta bd/t.safetensors ss_network_args)" = '{"algo": "locon", "bypass_mode": "True", "dropout": "0.3", "rank_dropout": "0.25"}' ] &&
  ok train_lycoris_bypass_dropout || nok train_lycoris_bypass_dropout "$r $(t_meta bd/t.safetensors ss_network_args) $(tail -1 bd.err)"
# --network_dropout is LyCORIS's dropout (train_network.py's net_kwargs["dropout"]) unless network_args has one
T --output_dir bnd --output_name t --max_train_steps 2 --network_args bypass_mode=True --network_dropout 0.2 2> bnd.err &&
[ "$(t_meta bnd/t.safetensors ss_network_dropout)" = 0.2 ] && ok train_lycoris_network_dropout_bypass ||
  nok train_lycoris_network_dropout_bypass "$(t_meta bnd/t.safetensors ss_network_args) $(tail -1 bnd.err)"

# ---- --network_weights: a LyCORIS file continues (a step at a negligible rate keeps it) -----------------------
T --output_dir w1 --output_name t --max_train_steps 1 --learning_rate 1e-20 --network_weights o1/t.safetensors 2> w1.err
r=$(t_wdiff o1/t.safetensors w1/t.safetensors 2>&1); set -- $r
python3 -c "import sys; sys.exit(0 if float('$1') < 1e-9 and float('$2') > 1e-3 else 1)" 2> /dev/null &&
grep -q 'loaded 131 LoRA modules from o1/t.safetensors' w1.err && ok train_lycoris_network_weights ||
  nok train_lycoris_network_weights "$r $(tail -1 w1.err)"

# ---- sd-sample: changes the image; = the image sampled in training with the modules hooked --------------------
echo 'a red square --w 64 --h 64 --s 3 --d 7' > p.txt
T --output_dir s1 --output_name t --max_train_steps 8 --sample_prompts p.txt --sample_every_n_steps 8 2> /dev/null
S() { "$ss" --model tiny.safetensors --model_config "$C" --W 64 --H 64 --steps 3 --seed 7 --prompt "a red square" \
  --sampler ddim --sequential_file_name --threads 1 "$@" > /dev/null; }
S --outdir q0 2> /dev/null
S --outdir q1 --network_module lycoris.kohya --network_weights s1/t.safetensors 2> q1.err
if [ -x "$helper" ] && [ -f q1/im_000001.png ]; then
  d0=$("$helper" maxdiff q0/im_000001.png q1/im_000001.png)
  dh=$("$helper" maxdiff q1/im_000001.png "$(ls s1/sample/*.png | head -1)")
  echo "# LyCORIS vs base $d0, sd-sample with the file vs sd-train's sample with the modules hooked $dh"
  [ "$d0" -gt 0 ] && ok sample_lycoris_trained_changes_image || nok sample_lycoris_trained_changes_image
  [ "$dh" -ge 0 ] && [ "$dh" -le 1 ] && ok sample_lycoris_trained_equals_hooks || nok sample_lycoris_trained_equals_hooks "$dh"
else
  nok sample_lycoris_trained_changes_image "no image or $helper not built: $(tail -1 q1.err)"
fi

# ---- use_tucker (LoCon Tucker: k×k convs get lora_down [r, in, 1, 1], lora_mid [r, r, k, k], lora_up) ------------
T --output_dir tk1 --output_name t --max_train_steps 8 --network_args algo=locon use_tucker=True conv_dim=2 \
  --sample_prompts p.txt --sample_every_n_steps 8 2> tk1.err
keys tk1/t.safetensors > ktk.txt 2> /dev/null
grep -qx 'lora_unet_conv_in.lora_down.weight F32 \[2, 4, 1, 1\]' ktk.txt &&
grep -qx 'lora_unet_conv_in.lora_mid.weight F32 \[2, 2, 3, 3\]' ktk.txt &&
grep -qx 'lora_unet_conv_in.lora_up.weight F32 \[32, 2, 1, 1\]' ktk.txt &&
grep -qx 'lora_unet_down_blocks_0_downsamplers_0_conv.lora_mid.weight F32 \[2, 2, 3, 3\]' ktk.txt &&
grep -qx 'lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight F32 \[4, 128\]' ktk.txt &&
! grep -q 'time_emb_proj.lora_mid\|proj_in.lora_mid' ktk.txt &&
  ok train_lycoris_tucker_keys || nok train_lycoris_tucker_keys "$(grep -c lora_mid ktk.txt) $(tail -1 tk1.err)"
T --output_dir tk2 --output_name t --max_train_steps 8 --network_args algo=locon use_tucker=True conv_dim=2 --threads 2 \
  --sample_prompts p.txt --sample_every_n_steps 8 2> /dev/null
T --output_dir tk3 --max_train_steps 8 --network_args algo=locon use_tucker=True conv_dim=2 --save_every_n_steps 4 \
  --save_state 2> /dev/null
T --output_dir tk4 --max_train_steps 8 --network_args algo=locon use_tucker=True conv_dim=2 \
  --resume tk3/at-step00000004-state 2> /dev/null
cmp -s tk1/t.safetensors tk2/t.safetensors && cmp -s tk3/last.safetensors tk4/last.safetensors &&
  ok train_lycoris_tucker_threads_resume || nok train_lycoris_tucker_threads_resume
# --network_weights continues a Tucker file (and a file without lora_mid is refused for a Tucker network)
T --output_dir tk5 --output_name t --max_train_steps 1 --learning_rate 1e-20 --network_weights tk1/t.safetensors \
  --network_args algo=locon use_tucker=True conv_dim=2 2> tk5.err
r=$(t_wdiff tk1/t.safetensors tk5/t.safetensors 2>&1); set -- $r
python3 -c "import sys; sys.exit(0 if float('$1') < 1e-9 and float('$2') > 1e-3 else 1)" 2> /dev/null &&
  ok train_lycoris_tucker_network_weights || nok train_lycoris_tucker_network_weights "$r $(tail -1 tk5.err)"
t_refuse train_lycoris_tucker_weights_mismatch 1 'not a Tucker module (lora_mid) in the file, one in the network' \
  T --output_dir bad --max_train_steps 1 --network_weights o1/t.safetensors --network_args use_tucker=True
# sd-sample reads lora_mid (LyCORIS's rebuild_tucker): the image sd-train sampled with the modules hooked
S --outdir tq --network_module lycoris.kohya --network_weights tk1/t.safetensors 2> tq.err
if [ -x "$helper" ] && [ -f tq/im_000001.png ]; then
  d0=$("$helper" maxdiff q0/im_000001.png tq/im_000001.png)
  dh=$("$helper" maxdiff tq/im_000001.png "$(ls tk1/sample/*.png | head -1)")
  echo "# Tucker LoCon vs base $d0, sd-sample with the file vs sd-train's sample $dh"
  [ "$d0" -gt 0 ] && [ "$dh" -ge 0 ] && [ "$dh" -le 1 ] && ok sample_lycoris_tucker_equals_hooks ||
    nok sample_lycoris_tucker_equals_hooks "$d0 $dh"
else
  nok sample_lycoris_tucker_equals_hooks "no image or $helper not built: $(tail -1 tq.err)"
fi

# algo=loha use_tucker: hada_t1/hada_t2 on the k×k convs; threads; sd-sample equals the hooked sample
T --output_dir ht1 --output_name t --max_train_steps 6 --network_args algo=loha use_tucker=True conv_dim=2 \
  --sample_prompts p.txt --sample_every_n_steps 6 2> ht1.err
T --output_dir ht2 --output_name t --max_train_steps 6 --network_args algo=loha use_tucker=True conv_dim=2 --threads 2 \
  --sample_prompts p.txt --sample_every_n_steps 6 2> /dev/null
keys ht1/t.safetensors > kht.txt 2> /dev/null
grep -qx 'lora_unet_conv_in.hada_t1 F32 \[2, 2, 3, 3\]' kht.txt && grep -qx 'lora_unet_conv_in.hada_w1_a F32 \[2, 32\]' kht.txt &&
grep -qx 'lora_unet_conv_in.hada_w2_b F32 \[2, 4\]' kht.txt && grep -qx 'lora_unet_conv_in.hada_t2 F32 \[2, 2, 3, 3\]' kht.txt &&
grep -qx 'lora_unet_down_blocks_0_resnets_0_time_emb_proj.hada_w1_a F32 \[32, 4\]' kht.txt &&
cmp -s ht1/t.safetensors ht2/t.safetensors && ok train_lycoris_loha_tucker || nok train_lycoris_loha_tucker "$(tail -1 ht1.err)"
S --outdir hq --network_module lycoris.kohya --network_weights ht1/t.safetensors 2> hq.err
if [ -x "$helper" ] && [ -f hq/im_000001.png ]; then
  d0=$("$helper" maxdiff q0/im_000001.png hq/im_000001.png)
  dh=$("$helper" maxdiff hq/im_000001.png "$(ls ht1/sample/*.png | head -1)")
  echo "# Tucker LoHa vs base $d0, sd-sample with the file vs sd-train's sample $dh"
  [ "$d0" -gt 0 ] && [ "$dh" -ge 0 ] && [ "$dh" -le 1 ] && ok sample_lycoris_loha_tucker_equals_hooks ||
    nok sample_lycoris_loha_tucker_equals_hooks "$d0 $dh"
else
  nok sample_lycoris_loha_tucker_equals_hooks "no image or $helper not built: $(tail -1 hq.err)"
fi

# ---- SDXL: ldm names, no conv_in/conv_out/time_embedding (kohya's SDXL UNet names them otherwise) ---------------
"$bin" --method lora --network_module lycoris.kohya --model xl.safetensors --model_config "$CX" --data recs.jsonl \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --threads 1 --output_dir x1 --output_name t --max_train_steps 2 2> x1.err; rc=$?
keys x1/t.safetensors > kx.txt 2> /dev/null
[ $rc = 0 ] && grep -q '^lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight F32 \[4, 32, 3, 3\]' kx.txt &&
grep -q '^lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight' kx.txt &&
grep -q '^lora_te2_text_model_encoder_layers_0_mlp_fc2.lora_up.weight' kx.txt &&
! grep -q 'input_blocks_0_0\|time_embed\|lora_unet_out_2' kx.txt &&
[ "$(t_meta x1/t.safetensors modelspec.architecture)" = stable-diffusion-xl-v1-base/lora ] &&
  ok train_lycoris_sdxl || nok train_lycoris_sdxl "rc $rc $(tail -1 x1.err)"

# ---- algo=loha: hada_* factors, threads, checkpointing, resume, --network_weights, sd-sample --------------------
T --output_dir h1 --output_name t --max_train_steps 8 --network_args algo=loha 2> h1.err
keys h1/t.safetensors > kh.txt 2> /dev/null
grep -qx 'lora_unet_conv_in.hada_w1_a F32 \[32, 4\]' kh.txt && grep -qx 'lora_unet_conv_in.hada_w1_b F32 \[4, 36\]' kh.txt &&
grep -qx 'lora_unet_conv_in.hada_w2_a F32 \[32, 4\]' kh.txt && grep -qx 'lora_unet_conv_in.hada_w2_b F32 \[4, 36\]' kh.txt &&
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.hada_w1_b F32 \[4, 32\]' kh.txt &&
grep -qx 'lora_unet_down_blocks_0_attentions_0_proj_in.hada_w2_b F32 \[4, 32\]' kh.txt &&
grep -qx 'lora_unet_conv_in.alpha F32 \[\]' kh.txt && [ "$(wc -l < kh.txt)" = 655 ] &&
[ "$(grep -c 'hada_w1_a' kh.txt)" = 131 ] && [ "$(t_meta h1/t.safetensors ss_network_module)" = lycoris.kohya ] &&
grep -q 'LyCORIS (algo loha): 12 text-encoder modules, 119 UNet modules' h1.err &&
  ok train_lycoris_loha_keys || nok train_lycoris_loha_keys "$(wc -l < kh.txt) $(tail -1 h1.err)"
T --output_dir h2 --output_name t --max_train_steps 8 --network_args algo=loha --threads 2 2> /dev/null
cmp -s h1/t.safetensors h2/t.safetensors && ok train_lycoris_loha_threads_same_bytes || nok train_lycoris_loha_threads_same_bytes
T --output_dir h3 --output_name t --max_train_steps 8 --network_args algo=loha --gradient_checkpointing 2> /dev/null
r=$(t_wdiff h1/t.safetensors h3/t.safetensors 2>&1)
[ "${r%% *}" = 0 ] && ok train_lycoris_loha_checkpointing_same_weights || nok train_lycoris_loha_checkpointing_same_weights "$r"
T --output_dir hr1 --max_train_steps 8 --network_args algo=LoHa module_dropout=0.3 --save_every_n_steps 4 --save_state 2> /dev/null
T --output_dir hr2 --max_train_steps 8 --network_args algo=LoHa module_dropout=0.3 --resume hr1/at-step00000004-state 2> hr2.err
[ -f hr1/last.safetensors ] && cmp -s hr1/last.safetensors hr2/last.safetensors && ! cmp -s hr1/last.safetensors h1/t.safetensors &&
  ok train_lycoris_loha_resume_same_bytes || nok train_lycoris_loha_resume_same_bytes "$(tail -2 hr2.err)"
T --output_dir hw --output_name t --max_train_steps 1 --learning_rate 1e-20 --network_args algo=loha \
  --network_weights h1/t.safetensors 2> hw.err
r=$(t_wdiff h1/t.safetensors hw/t.safetensors 2>&1); set -- $r
python3 -c "import sys; sys.exit(0 if float('$1') < 1e-9 and float('$2') > 1e-3 else 1)" 2> /dev/null &&
grep -q 'loaded 131 LyCORIS modules from h1/t.safetensors' hw.err && ok train_lycoris_loha_network_weights ||
  nok train_lycoris_loha_network_weights "$r $(tail -1 hw.err)"
T --output_dir hs --output_name t --max_train_steps 8 --network_args algo=loha --sample_prompts p.txt \
  --sample_every_n_steps 8 2> /dev/null
S --outdir hq1 --network_module lycoris.kohya --network_weights hs/t.safetensors 2> hq1.err
if [ -x "$helper" ] && [ -f hq1/im_000001.png ]; then
  d0=$("$helper" maxdiff q0/im_000001.png hq1/im_000001.png)
  dh=$("$helper" maxdiff hq1/im_000001.png "$(ls hs/sample/*.png | head -1)")
  echo "# LoHa vs base $d0, sd-sample with the file vs sd-train's sample with the modules hooked $dh"
  [ "$d0" -gt 0 ] && [ "$dh" -ge 0 ] && [ "$dh" -le 1 ] && grep -q 'merged 131 modules (12 text encoder, 119 UNet)' hq1.err &&
    ok sample_lycoris_loha_equals_hooks || nok sample_lycoris_loha_equals_hooks "$d0 $dh $(tail -1 hq1.err)"
else
  nok sample_lycoris_loha_equals_hooks "no image or $helper not built: $(tail -1 hq1.err)"
fi
"$bin" --method lora --network_module lycoris.kohya --model xl.safetensors --model_config "$CX" --data recs.jsonl \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --threads 1 --output_dir hx --output_name t --max_train_steps 2 \
  --network_args algo=loha conv_dim=2 2> hx.err; rc=$?
keys hx/t.safetensors > khx.txt 2> /dev/null
[ $rc = 0 ] && grep -q '^lora_unet_input_blocks_1_0_in_layers_2.hada_w1_b F32 \[2, 288\]' khx.txt &&
grep -q '^lora_te2_text_model_encoder_layers_0_mlp_fc2.hada_w2_a' khx.txt && ok train_lycoris_loha_sdxl ||
  nok train_lycoris_loha_sdxl "rc $rc $(tail -1 hx.err)"

# ---- algo=lokr: lokr_* factors (LyCORIS's factorization and full/factored rules), threads, resume, weights -----
T --output_dir k1 --output_name t --max_train_steps 8 --network_args algo=lokr 2> k1.err
keys k1/t.safetensors > kk.txt 2> /dev/null
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w1 F32 \[8, 4\]' kk.txt &&
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w2_a F32 \[16, 4\]' kk.txt &&
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w2_b F32 \[4, 8\]' kk.txt &&
grep -qx 'lora_unet_conv_in.lokr_w1 F32 \[4, 2\]' kk.txt && grep -qx 'lora_unet_conv_in.lokr_w2 F32 \[8, 2, 3, 3\]' kk.txt &&
grep -qx 'lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w2 F32 \[8, 8, 1, 1\]' kk.txt &&
[ "$(grep -c '\.alpha F32' kk.txt)" = 131 ] && [ "$(val k1/t.safetensors lora_unet_conv_in.alpha)" = 4 ] &&
[ "$(val k1/t.safetensors lora_te_text_model_encoder_layers_0_mlp_fc1.alpha)" = 1 ] &&
grep -q 'LyCORIS (algo lokr): 12 text-encoder modules, 119 UNet modules' k1.err &&
  ok train_lycoris_lokr_keys || nok train_lycoris_lokr_keys "$(wc -l < kk.txt) $(tail -1 k1.err)"
T --output_dir k2 --output_name t --max_train_steps 1 --network_dim 1 --network_args algo=lokr decompose_both=1 factor=4 \
  full_matrix=False unbalanced_factorization=True 2> /dev/null
keys k2/t.safetensors > kk2.txt 2> /dev/null
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w1_a F32 \[32, 1\]' kk2.txt &&
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w1_b F32 \[1, 4\]' kk2.txt &&
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w2_a F32 \[4, 1\]' kk2.txt &&
grep -qx 'lora_te_text_model_encoder_layers_0_mlp_fc1.lokr_w2_b F32 \[1, 8\]' kk2.txt &&
  ok train_lycoris_lokr_options || nok train_lycoris_lokr_options "$(grep mlp_fc1 kk2.txt | head -4)"
T --output_dir k3 --output_name t --max_train_steps 8 --network_args algo=lokr --threads 2 2> /dev/null
cmp -s k1/t.safetensors k3/t.safetensors && ok train_lycoris_lokr_threads_same_bytes || nok train_lycoris_lokr_threads_same_bytes
T --output_dir k4 --output_name t --max_train_steps 8 --network_args algo=lokr --gradient_checkpointing 2> /dev/null
r=$(t_wdiff k1/t.safetensors k4/t.safetensors 2>&1)
[ "${r%% *}" = 0 ] && ok train_lycoris_lokr_checkpointing_same_weights || nok train_lycoris_lokr_checkpointing_same_weights "$r"
T --output_dir kr1 --max_train_steps 8 --network_args algo=lokr --save_every_n_steps 4 --save_state 2> /dev/null
T --output_dir kr2 --max_train_steps 8 --network_args algo=lokr --resume kr1/at-step00000004-state 2> kr2.err
[ -f kr1/last.safetensors ] && cmp -s kr1/last.safetensors kr2/last.safetensors &&
  ok train_lycoris_lokr_resume_same_bytes || nok train_lycoris_lokr_resume_same_bytes "$(tail -2 kr2.err)"
T --output_dir kw --output_name t --max_train_steps 1 --learning_rate 1e-20 --network_args algo=lokr \
  --network_weights k1/t.safetensors 2> kw.err
r=$(t_wdiff k1/t.safetensors kw/t.safetensors 2>&1); set -- $r
python3 -c "import sys; sys.exit(0 if float('$1') < 1e-9 and float('$2') > 1e-3 else 1)" 2> /dev/null &&
grep -q 'loaded 131 LyCORIS modules from k1/t.safetensors' kw.err && ok train_lycoris_lokr_network_weights ||
  nok train_lycoris_lokr_network_weights "$r $(tail -1 kw.err)"
T --output_dir ks --output_name t --max_train_steps 8 --network_args algo=lokr --sample_prompts p.txt \
  --sample_every_n_steps 8 2> /dev/null
S --outdir kq1 --network_module lycoris.kohya --network_weights ks/t.safetensors 2> kq1.err
if [ -x "$helper" ] && [ -f kq1/im_000001.png ]; then
  d0=$("$helper" maxdiff q0/im_000001.png kq1/im_000001.png)
  dh=$("$helper" maxdiff kq1/im_000001.png "$(ls ks/sample/*.png | head -1)")
  echo "# LoKr vs base $d0, sd-sample with the file vs sd-train's sample with the modules hooked $dh"
  [ "$d0" -gt 0 ] && [ "$dh" -ge 0 ] && [ "$dh" -le 1 ] && ok sample_lycoris_lokr_equals_hooks ||
    nok sample_lycoris_lokr_equals_hooks "$d0 $dh $(tail -1 kq1.err)"
else
  nok sample_lycoris_lokr_equals_hooks "no image or $helper not built: $(tail -1 kq1.err)"
fi

# ---- --device cuda: the modules run through the ops, so the CUDA build (or SD_FAKE_CUDA=1) trains them too ------
for algo in locon loha lokr; do
  T --output_dir dg_$algo --output_name t --max_train_steps 4 --network_args algo=$algo --device cuda 2> dg_$algo.err; rc=$?
  if [ $rc = 0 ]; then
    T --output_dir dc_$algo --output_name t --max_train_steps 4 --network_args algo=$algo 2> /dev/null
    r=$(t_wdiff dc_$algo/t.safetensors dg_$algo/t.safetensors 2>&1); set -- $r
    python3 -c "import sys; sys.exit(0 if float('$1') <= 1e-3 * float('$2') else 1)" 2> /dev/null &&
      ok train_lycoris_${algo}_device_cuda_close || nok train_lycoris_${algo}_device_cuda_close "$r"
  else
    [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" dg_$algo.err && ok train_lycoris_${algo}_device_cuda_unavailable ||
      nok train_lycoris_${algo}_device_cuda_unavailable "rc $rc $(tail -2 dg_$algo.err)"
  fi
done

# ---- refusals ------------------------------------------------------------------------------------------------
refuse() { t_refuse "$1" "$2" "$3" T --output_dir bad --max_train_steps 1 "${@:4}"; }
refuse train_lycoris_refuses_algo 2 'algo=ia3: not supported (lora, locon, loha and lokr are)' --network_args algo=ia3
refuse train_lycoris_refuses_dropout 2 'network_args dropout: LyCORIS applies dropout only with bypass_mode=True' \
  --network_args dropout=0.1
refuse train_lycoris_refuses_network_dropout 2 'network_dropout: LyCORIS applies dropout only with bypass_mode=True' \
  --network_dropout 0.1
refuse train_lycoris_refuses_loha_dropout 2 'dropout: not supported with algo=loha' --network_args algo=loha bypass_mode=True dropout=0.1
refuse train_lycoris_refuses_lokr_bypass_rank_dropout 2 "rank_dropout: LyCORIS's LoKr bypass_mode forward never applies it" \
  --network_args algo=lokr bypass_mode=True rank_dropout=0.1
refuse train_lycoris_refuses_rank_dropout_range 2 'rank_dropout=1.5: must be in \[0, 1\]' --network_args rank_dropout=1.5
refuse train_lycoris_refuses_rank_dropout_scale 2 "rank_dropout_scale: not supported with lycoris.kohya (LyCORIS's create_network" \
  --network_args rank_dropout=0.1 rank_dropout_scale=True
refuse train_lycoris_refuses_tucker 2 'use_tucker: Tucker decomposition with algo=lokr' --network_args algo=lokr use_tucker=True
refuse train_lycoris_refuses_deprecated_cp 2 'use_tucker: Tucker decomposition with algo=lokr' --network_args algo=lokr use_conv_cp=1
refuse train_lycoris_refuses_scalar 2 'use_scalar=True: not supported' --network_args use_scalar=True
refuse train_lycoris_refuses_dora 2 'dora_wd=True: not supported' --network_args dora_wd=True
refuse train_lycoris_refuses_preset 2 'preset=ia3: not supported (full, full-lin' --network_args preset=ia3
refuse train_lycoris_refuses_preset_file 2 'preset=my.toml: not supported' --network_args preset=my.toml
refuse train_lycoris_refuses_unknown 2 'block_dims: not supported with lycoris.kohya' --network_args block_dims=1,2
refuse train_lycoris_refuses_max_norm 2 'scale_weight_norms: not supported with lycoris.kohya' --scale_weight_norms 1
refuse train_lycoris_refuses_loha_loraplus 2 'loraplus_\*: not supported with algo=loha' --network_args algo=loha loraplus_lr_ratio=4
refuse train_lycoris_refuses_loha_dim_from_weights 2 'dim_from_weights: not supported with lycoris.kohya algo=loha' \
  --network_args algo=loha --dim_from_weights --network_weights h1/t.safetensors
refuse train_lycoris_refuses_kohya_resume 2 'kohya-ss state folder is read for --network_module networks.lora only' \
  --resume "$root/tests/data/train_lora_kohya/state"
refuse train_lycoris_refuses_loha_fp8 2 'fp8_base: not supported with lycoris.kohya algo=loha' \
  --network_args algo=loha --mixed_precision bf16 --fp8_base
refuse train_lycoris_refuses_lokr_fp8 2 'fp8_base_unet: not supported with lycoris.kohya algo=lokr' \
  --network_args algo=lokr --mixed_precision bf16 --fp8_base_unet
refuse train_lycoris_refuses_factor_without_lokr 2 'factor: an option of algo=lokr' --network_args algo=loha factor=4
refuse train_lycoris_refuses_lokr_rs_lora 2 'rs_lora: not supported with algo=lokr' --network_args algo=lokr rs_lora=1
refuse train_lycoris_refuses_bad_conv_dim 2 'conv_dim=x: expected a whole number' --network_args conv_dim=x
# the off values of the refused booleans are accepted (LyCORIS's str_bool), as are use_tucker without conv modules
T --output_dir ok1 --output_name t --max_train_steps 1 --network_args use_scalar=False train_norm=false bypass_mode=True \
  use_tucker=True conv_dim=0 > /dev/null 2> ok1.err && ok train_lycoris_accepts_off_values || nok train_lycoris_accepts_off_values "$(tail -1 ok1.err)"
