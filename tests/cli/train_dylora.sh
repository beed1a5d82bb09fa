#!/usr/bin/env bash
# sd-train --network_module networks.dylora (kohya's networks/dylora.py) on the tiny SD1 model: the
# file has networks.lora's keys and shapes (a plain LoRA file) with ss_network_module
# networks.dylora and ss_network_args; the rows trained differ from networks.lora's result; --threads
# 1 and 2 and --gradient_checkpointing give the same bytes (the rank draws are Philox, the same in the
# recompute); a resumed run gives the bytes of the straight one (with gradient accumulation too); --network_weights loads every row
# (UNet modules at LR 0 come out as loaded); Adafactor and a ScheduleFree optimizer run on the rows;
# what dylora.py does not implement is refused with exit 2 and one line.
. "$(dirname "$0")/lib.sh"
t_init train_dylora
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model sd1.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_dylora_tiny_sd1; exit 1; }
./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null || { nok train_dylora_tiny_xl; exit 1; }
./tiny_model latents "$tmp" 4 4 8 8 > recs.jsonl || { nok train_dylora_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
S() { "$bin" --method lora --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 --max_train_steps 4 "$@"; }
D() { S --network_module networks.dylora "$@"; }
# "key dtype shape" per tensor, sorted; or one metadata value
keys() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
for k in sorted(h):
    if k != '__metadata__': print(k, h[k]['dtype'], h[k]['shape'])
PY
}
# tensors (bytes) of file 1 whose key starts with $3 equal those of file 2; "same" / "differ"
cmp_prefix() { python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}
a, b = load(sys.argv[1]), load(sys.argv[2])
ks = [k for k in a if k.startswith(sys.argv[3])]
print("same" if ks and all(a[k] == b.get(k) for k in ks) else "differ")
PY
}

# ---- a run: kohya's keys, metadata -----------------------------------------------------------------------------
D --output_dir d1 --network_args unit=2 conv_dim=4 2> d1.err || nok train_dylora_runs "$(tail -2 d1.err)"
S --output_dir l1 --network_args conv_dim=4 2> l1.err || nok train_dylora_lora_runs "$(tail -2 l1.err)"
if [ -f d1/last.safetensors ] && [ -f l1/last.safetensors ]; then
  ok train_dylora_runs
  [ "$(keys d1/last.safetensors)" = "$(keys l1/last.safetensors)" ] && ok train_dylora_lora_keys ||
    nok train_dylora_lora_keys "$(diff <(keys d1/last.safetensors) <(keys l1/last.safetensors) | head -4)"
  keys d1/last.safetensors | grep -q 'lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight F32 \[4, 32, 3, 3\]' &&
    ok train_dylora_conv_modules || nok train_dylora_conv_modules "$(keys d1/last.safetensors | grep resnets_0_conv1)"
  [ "$(t_meta d1/last.safetensors ss_network_module)" = networks.dylora ] && ok train_dylora_meta_module ||
    nok train_dylora_meta_module "$(t_meta d1/last.safetensors ss_network_module)"
  [ "$(t_meta d1/last.safetensors ss_network_args)" = '{"unit": "2", "conv_dim": "4", "dropout": null}' ] && ok train_dylora_meta_args ||
    nok train_dylora_meta_args "$(t_meta d1/last.safetensors ss_network_args)"
  [ "$(cmp_prefix d1/last.safetensors l1/last.safetensors lora_)" = differ ] && ok train_dylora_not_lora ||
    nok train_dylora_not_lora "DyLoRA gave networks.lora's tensors"
fi
grep -q 'DyLoRA: unit 2' d1.err && ok train_dylora_logs_unit || nok train_dylora_logs_unit "$(grep -i dylora d1.err)"

# ---- same bytes: threads, gradient checkpointing (tensors: the metadata records it) ---------------------------------------------------------------
D --output_dir d2 --network_args unit=2 conv_dim=4 --threads 2 2> /dev/null
cmp -s d1/last.safetensors d2/last.safetensors && ok train_dylora_threads || nok train_dylora_threads "--threads 2 differs"
D --output_dir d3 --network_args unit=2 conv_dim=4 --gradient_checkpointing 2> d3.err
[ "$(cmp_prefix d3/last.safetensors d1/last.safetensors lora_)" = same ] && ok train_dylora_checkpointing ||
  nok train_dylora_checkpointing "--gradient_checkpointing differs: $(tail -1 d3.err)"

# ---- resume: the bytes of the straight run -----------------------------------------------------------------------
D --output_dir r1 --network_args unit=2 conv_dim=4 --save_state --save_every_n_steps 2 2> /dev/null
st=r1/at-step00000002-state
if [ -d "$st" ]; then
  python3 -c "
import json, struct
b = open('$st/optimizer.safetensors', 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
assert 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_A.3.exp_avg' in h and 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_B.0.step' in h
" && ok train_dylora_state_rows || nok train_dylora_state_rows "no per-row optimizer state"
  D --output_dir r2 --network_args unit=2 conv_dim=4 --resume "$st" 2> r2.err
  cmp -s r2/last.safetensors d1/last.safetensors && ok train_dylora_resume ||
    nok train_dylora_resume "resumed run differs from the straight one: $(tail -1 r2.err)"
  D --output_dir r3 --network_args unit=1 conv_dim=4 --resume "$st" 2> r3.err; rc=$?
  [ $rc -ne 0 ] && grep -q 'network_args' r3.err && ok train_dylora_resume_other_unit ||
    nok train_dylora_resume_other_unit "rc $rc: $(tail -1 r3.err)"
else nok train_dylora_resume "no state $st"; fi

# gradient accumulation: the rows of both micro batches train; resumed from step 1 the same bytes
D --output_dir ga1 --network_args unit=2 --gradient_accumulation_steps 2 --max_train_steps 2 --save_state \
  --save_every_n_steps 1 2> ga1.err
D --output_dir ga2 --network_args unit=2 --gradient_accumulation_steps 2 --max_train_steps 2 \
  --resume ga1/at-step00000001-state 2> ga2.err
[ -f ga1/last.safetensors ] && cmp -s ga1/last.safetensors ga2/last.safetensors && ok train_dylora_accum_resume ||
  nok train_dylora_accum_resume "$(tail -1 ga1.err) / $(tail -1 ga2.err)"

# ---- --network_weights: every row loaded (UNet at LR 0: not trained, written back as read) ----------------------
D --output_dir w1 --network_args unit=2 conv_dim=4 --network_weights d1/last.safetensors --unet_lr 0 2> w1.err
if [ -f w1/last.safetensors ]; then
  [ "$(cmp_prefix w1/last.safetensors d1/last.safetensors lora_unet_)" = same ] && ok train_dylora_weights_roundtrip ||
    nok train_dylora_weights_roundtrip "UNet modules changed"
  [ "$(cmp_prefix w1/last.safetensors d1/last.safetensors lora_te_)" = differ ] && ok train_dylora_weights_te_trains ||
    nok train_dylora_weights_te_trains "text-encoder modules did not move"
else nok train_dylora_weights_roundtrip "$(tail -2 w1.err)"; fi

# ---- other optimizers on the rows -----------------------------------------------------------------------------------
for o in Adafactor AdamWScheduleFree Lion; do
  D --output_dir o_$o --network_args unit=2 --optimizer_type $o 2> o_$o.err && [ -f o_$o/last.safetensors ] &&
    ok train_dylora_optim_$o || nok train_dylora_optim_$o "$(tail -2 o_$o.err)"
done

# ---- refusals: exit 2, one line -------------------------------------------------------------------------------------
refuse() { t_refuse -1 "train_dylora_refuses_$1" 2 "$2" "${@:3}" --output_dir e; }
refuse network_dropout 'network_dropout' D --network_dropout 0.1
refuse rank_dropout 'rank_dropout' D --network_args rank_dropout=0.1
refuse module_dropout 'module_dropout' D --network_args module_dropout=0.1
refuse block_dims 'block_dims' D --network_args "block_dims=4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4,4"
refuse lr_weight 'down_lr_weight' D --network_args down_lr_weight=1
refuse unit 'multiple of unit' D --network_args unit=3
refuse unit_word 'unit=x' D --network_args unit=x
refuse conv_dim 'conv_dim must be same as network_dim' D --network_args conv_dim=8
refuse conv_alpha 'conv_alpha' D --network_args conv_dim=4 conv_alpha=2
refuse max_norm 'scale_weight_norms' D --scale_weight_norms 1
refuse dim_from_weights 'dim_from_weights' D --network_weights d1/last.safetensors --dim_from_weights
refuse sdxl 'SDXL' "$bin" --method lora --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" \
  --data recs.jsonl --network_module networks.dylora --max_train_steps 1
"$bin" --method lora --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --network_module networks.lokr --output_dir e 2> e.err; rc=$?
[ $rc -ne 0 ] && grep -q 'networks.dylora' e.err && ok train_dylora_other_module_refused ||
  nok train_dylora_other_module_refused "rc $rc: $(cat e.err)"
[ -e e ] && nok train_dylora_refusal_no_output || ok train_dylora_refusal_no_output
exit 0
