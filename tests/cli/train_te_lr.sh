#!/usr/bin/env bash
# sd-train --text_encoder_lr as a list (nargs="*"), as kohya's train_network.py: networks.lora gets the
# first value (SDXL: for both text encoders), none given is None (--learning_rate), and
# ss_text_encoder_lr is that one value. Checks: (a, b) gives the bytes of (a) on SDXL and SD1;
# "0 1e-3" freezes TE1 and TE2 (lora_te1_/lora_te2_ at their initial values) while the UNet moves;
# an empty list gives the bytes of no option and ss_text_encoder_lr None; a TOML number, a TOML list
# and the command line agree; a state saved with a number resumes with a list of the same first value
# and refuses another first value; bad values exit 2 with one line.
. "$(dirname "$0")/lib.sh"
t_init train_te_lr
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null || { nok train_te_lr_tiny_model; exit 1; }
./tiny_model model sd1.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_te_lr_tiny_sd1; exit 1; }
./tiny_model latents "$tmp" 4 4 8 8 > recs.jsonl || { nok train_te_lr_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
X() { "$bin" --method lora --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 --max_train_steps 2 "$@"; }
S() { "$bin" --method lora --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 --max_train_steps 2 "$@"; }
# lora_up tensors of prefix P that are not all zero (kohya starts lora_up at zero): "nonzero/total"
upmoved() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
ks = [k for k in h if k.startswith(sys.argv[2]) and k.endswith('.lora_up.weight')]
nz = sum(any(b[8 + n + h[k]['data_offsets'][0]:8 + n + h[k]['data_offsets'][1]]) for k in ks)
print(f"{nz}/{len(ks)}")
PY
}
# the tensors only (the metadata holds the session id and times)
same_tensors() { python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}
sys.exit(0 if load(sys.argv[1]) == load(sys.argv[2]) else 1)
PY
}

# ---- SDXL: one value, two values ------------------------------------------------------------------------------
X --output_dir x1 --text_encoder_lr 5e-4 2> x1.err || nok train_te_lr_sdxl_one "$(tail -2 x1.err)"
if X --output_dir x2 --text_encoder_lr 5e-4 1e-2 2> x2.err; then
  cmp -s x1/last.safetensors x2/last.safetensors && ok train_te_lr_sdxl_first_value ||
    nok train_te_lr_sdxl_first_value "(5e-4, 1e-2) differs from (5e-4)"
  grep -q 'text_encoder_lr: 2 values given; LoRA uses the first' x2.err && ok train_te_lr_sdxl_warns ||
    nok train_te_lr_sdxl_warns "$(cat x2.err)"
else nok train_te_lr_sdxl_first_value "$(tail -2 x2.err)"; fi
[ "$(t_meta x2/last.safetensors ss_text_encoder_lr)" = 0.0005 ] && ok train_te_lr_sdxl_meta ||
  nok train_te_lr_sdxl_meta "ss_text_encoder_lr $(t_meta x2/last.safetensors ss_text_encoder_lr)"
# "0 1e-3": LR 0 for both text encoders (the second value is not TE2's): their lora_up stay zero;
# "1e-3 0": both move
X --output_dir x3 --text_encoder_lr 0 1e-3 2> x3.err || nok train_te_lr_sdxl_zero_first "$(tail -2 x3.err)"
X --output_dir x4 --text_encoder_lr 1e-3 0 2> x4.err || nok train_te_lr_sdxl_zero_second "$(tail -2 x4.err)"
a1=$(upmoved x3/last.safetensors lora_te1_) a2=$(upmoved x3/last.safetensors lora_te2_)
au=$(upmoved x3/last.safetensors lora_unet_)
b1=$(upmoved x4/last.safetensors lora_te1_) b2=$(upmoved x4/last.safetensors lora_te2_)
[ "$a1/$a2" = 0/12/0/18 ] && [ "${au%/*}" -gt 0 ] && ok train_te_lr_sdxl_zero_first ||
  nok train_te_lr_sdxl_zero_first "(0, 1e-3): te1 $a1 te2 $a2 unet $au lora_up non-zero"
[ "${b1%/*}" -gt 0 ] && [ "$b2" = 18/18 ] && ok train_te_lr_sdxl_zero_second ||
  nok train_te_lr_sdxl_zero_second "(1e-3, 0): te1 $b1 te2 $b2 lora_up non-zero"
# an empty list: None (--learning_rate), as no option; ss_text_encoder_lr None
X --output_dir x6 2> /dev/null
if X --output_dir x5 --text_encoder_lr --unet_lr 1e-3 2> x5.err; then
  same_tensors x5/last.safetensors x6/last.safetensors && ok train_te_lr_empty_is_none ||
    nok train_te_lr_empty_is_none "an empty --text_encoder_lr differs from none"
  [ "$(t_meta x5/last.safetensors ss_text_encoder_lr)" = None ] && ok train_te_lr_empty_meta ||
    nok train_te_lr_empty_meta "ss_text_encoder_lr $(t_meta x5/last.safetensors ss_text_encoder_lr)"
else nok train_te_lr_empty_is_none "$(tail -2 x5.err)"; fi
# a config file: a number or a list
printf 'text_encoder_lr = 5e-4\n' > c1.toml; printf 'text_encoder_lr = [5e-4, 1e-2]\n' > c2.toml
X --output_dir c1 --config_file c1.toml 2> /dev/null; X --output_dir c2 --config_file c2.toml 2> /dev/null
cmp -s c1/last.safetensors x1/last.safetensors && cmp -s c2/last.safetensors x1/last.safetensors &&
  ok train_te_lr_config || nok train_te_lr_config "a TOML number or list differs from the command line"

# ---- SD1 (one text encoder): the same rule ----------------------------------------------------------------------
S --output_dir s1 --text_encoder_lr 0 2> /dev/null
if S --output_dir s2 --text_encoder_lr 0 5e-4 2> s2.err; then
  cmp -s s1/last.safetensors s2/last.safetensors && [ "$(upmoved s2/last.safetensors lora_te_)" = 0/12 ] &&
    ok train_te_lr_sd1_first_value || nok train_te_lr_sd1_first_value "te $(upmoved s2/last.safetensors lora_te_)"
  [ "$(t_meta s2/last.safetensors ss_text_encoder_lr)" = 0.0 ] && ok train_te_lr_sd1_meta ||
    nok train_te_lr_sd1_meta "ss_text_encoder_lr $(t_meta s2/last.safetensors ss_text_encoder_lr)"
else nok train_te_lr_sd1_first_value "$(tail -2 s2.err)"; fi

# ---- resume: compared by the first value ---------------------------------------------------------------------
X --output_dir r1 --text_encoder_lr 5e-4 --save_state --save_every_n_steps 1 2> /dev/null
st=r1/at-step00000001-state
[ "$(python3 -c "import json; print(json.load(open('$st/state.json'))['options']['text_encoder_lr'])")" = "[0.0005]" ] &&
  ok train_te_lr_state_records_list || nok train_te_lr_state_records_list "$(grep -o '"text_encoder_lr":[^,]*' $st/state.json)"
# an older state records a number: write one
python3 - $st/state.json <<'PY'
import json, sys
p = sys.argv[1]; o = json.load(open(p)); o['options']['text_encoder_lr'] = 0.0005; json.dump(o, open(p, 'w'))
PY
if X --output_dir r2 --text_encoder_lr 5e-4 1e-2 --resume $st 2> r2.err; then
  cmp -s r2/last.safetensors x1/last.safetensors && ok train_te_lr_resume ||
    nok train_te_lr_resume "resumed run differs from the straight one"
else nok train_te_lr_resume "$(tail -2 r2.err)"; fi
X --output_dir r3 --text_encoder_lr 1e-3 5e-4 --resume $st 2> r3.err; rc=$?
[ $rc -ne 0 ] && grep -q 'text_encoder_lr' r3.err && ok train_te_lr_resume_differs ||
  nok train_te_lr_resume_differs "rc $rc: $(tail -2 r3.err)"

# ---- usage errors: exit 2, one line (and the try line) --------------------------------------------------------
for v in "-1e-4" "1e-4 -1" "abc" "1e-4 inf" "nan"; do
  X --output_dir e --text_encoder_lr $v 2> e.err; rc=$?
  n=$(grep -vc "^Try 'sd-train --help'" e.err)
  [ $rc = 2 ] && [ "$n" = 1 ] && grep -q 'text_encoder_lr' e.err && ok "train_te_lr_usage_${v// /_}" ||
    nok "train_te_lr_usage_${v// /_}" "rc $rc: $(cat e.err)"
done
[ -e e ] && nok train_te_lr_usage_no_output || ok train_te_lr_usage_no_output
exit 0
