#!/usr/bin/env bash
# sd-train --network_module networks.lora_fa (networks/lora_fa.py, LoRA-FA): lora_down drawn from a normal
# distribution with std sqrt(2/(in_dim+rank)) and frozen, only lora_up trained. Checked on the tiny SD1 model:
# the saved lora_down is bit for bit the one of a 1-step run and of the --network_weights file it started
# from, lora_up moves; the down statistics match the std; the file has LoRA's keys and
# ss_network_module networks.lora_fa; the optimizer state holds lora_up only; one SGD step from the same
# weights gives plain LoRA's lora_up bit for bit (the same loss and the same up gradient, max_grad_norm 0)
# while plain LoRA moves lora_down; a resumed run ends with the bytes of a straight one (also under another
# --seed: the state's seed draws lora_down again); refusals (LoRA+, SDXL block arguments, a mid_lr_weight list,
# resuming under the other network module or with --scale_weight_norms); sd-sample takes the file and the
# module name.
. "$(dirname "$0")/lib.sh"
t_init train_lora_fa
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_lora_fa_tiny_model; exit 1; }
./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null || { nok train_lora_fa_tiny_sdxl; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_lora_fa_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 5e-2 --seed 3 --network_dim 4 --threads 1 "$@"; }
F() { T --network_module networks.lora_fa "$@"; }

# compare the tensors of LoRA files: "same KIND A B" / "differ KIND A B" (KIND lora_down | lora_up) exits 0
# when every tensor of that kind is bit-identical / when every one differs; "keys A B": same keys and shapes;
# "std A": the pooled ratio sum(down^2) / sum(numel * 2/(in+rank)) of the lora_down tensors; "meta A K"
cat > lf.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return h, {k: d[t['data_offsets'][0]:t['data_offsets'][1]] for k, t in h.items() if k != '__metadata__'}
op = sys.argv[1]
if op == 'meta':
    h, _ = load(sys.argv[2]); print(h.get('__metadata__', {}).get(sys.argv[3], '<absent>')); sys.exit(0)
if op == 'std':
    h, d = load(sys.argv[2]); s = e = 0.0; cnt = 0
    for k, t in h.items():
        if not k.endswith('.lora_down.weight'): continue
        v = struct.unpack('<%df' % (len(d[k]) // 4), d[k]); r, i = t['shape'][0], t['shape'][1]
        s += sum(x * x for x in v); e += len(v) * 2.0 / (i + r); cnt += 1
    print('%.4f %d' % (s / e, cnt)); sys.exit(0)
if op == 'keys':
    ha, da = load(sys.argv[2]); hb, db = load(sys.argv[3])
    sys.exit(0 if {k: v['shape'] for k, v in ha.items() if k != '__metadata__'} ==
             {k: v['shape'] for k, v in hb.items() if k != '__metadata__'} else 1)
ha, da = load(sys.argv[3]); hb, db = load(sys.argv[4])
ks = [k for k in da if k.endswith('.%s.weight' % sys.argv[2])]
if not ks or any(k not in db for k in ks): sys.exit(2)
same = [da[k] == db[k] for k in ks]
sys.exit(0 if (all(same) if op == 'same' else not any(same)) else 1)
PY
PY=python3
loss1() { sed -n '1s/.*"loss":\([^,]*\),.*/\1/p' "$1"; }

# ---- frozen down, moving up, keys, metadata ------------------------------------------------------------------
F --output_dir a --max_train_steps 6 2> a.err && F --output_dir b --max_train_steps 1 2> b.err &&
T --output_dir p --max_train_steps 6 2> p.err && ok train_lora_fa_runs ||
  { nok train_lora_fa_runs "$(tail -n 3 a.err b.err p.err)"; exit 1; }
$PY lf.py same lora_down a/last.safetensors b/last.safetensors && ok train_lora_fa_down_frozen ||
  nok train_lora_fa_down_frozen "lora_down differs between 1 and 6 steps"
$PY lf.py differ lora_up a/last.safetensors b/last.safetensors && ok train_lora_fa_up_trains ||
  nok train_lora_fa_up_trains "some lora_up did not move between 1 and 6 steps"
$PY lf.py keys a/last.safetensors p/last.safetensors && ok train_lora_fa_keys ||
  nok train_lora_fa_keys "LoRA-FA and LoRA files have different keys or shapes"
$PY lf.py differ lora_down a/last.safetensors p/last.safetensors && ok train_lora_fa_init_differs ||
  nok train_lora_fa_init_differs "a LoRA-FA lora_down equals the kaiming one of networks.lora"
# normal draws at std sqrt(2/(in+rank)): the pooled second moment within 10% of the expected one
s=$($PY lf.py std a/last.safetensors)
awk -v s="${s% *}" 'BEGIN { exit !(s > 0.9 && s < 1.1) }' && ok train_lora_fa_init_std ||
  nok train_lora_fa_init_std "sum(down^2)/expected = $s"
m=$($PY lf.py meta a/last.safetensors ss_network_module)
[ "$m" = networks.lora_fa ] && ok train_lora_fa_meta || nok train_lora_fa_meta "ss_network_module $m"
m=$($PY lf.py meta p/last.safetensors ss_network_module)
[ "$m" = networks.lora ] && ok train_lora_fa_meta_lora || nok train_lora_fa_meta_lora "ss_network_module $m"

# ---- the optimizer holds lora_up only; resume gives the bytes of the straight run -----------------------------
F --output_dir r1 --max_train_steps 6 --save_state --save_every_n_steps 3 2> r1.err
st=r1/at-step00000003-state
if [ -d $st ]; then
  $PY - $st <<'PY' && ok train_lora_fa_state_up_only || nok train_lora_fa_state_up_only "state holds lora_down"
import json, struct, sys
for f in ('weights', 'optimizer'):
    b = open(sys.argv[1] + '/%s.safetensors' % f, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
    ks = [k for k in json.loads(b[8:8 + n]) if k != '__metadata__']
    assert ks and not any('lora_down' in k for k in ks) and any('lora_up' in k for k in ks), f
PY
  cmp -s r1/last.safetensors a/last.safetensors && ok train_lora_fa_state_run_same ||
    nok train_lora_fa_state_run_same "saving states changed the result"
  F --output_dir r2 --max_train_steps 6 --resume $st 2> r2.err &&
    cmp -s r2/last.safetensors a/last.safetensors && ok train_lora_fa_resume ||
    nok train_lora_fa_resume "resumed run differs: $(tail -2 r2.err)"
  # another --seed: the state's seed draws the frozen lora_down again
  F --output_dir r3 --max_train_steps 6 --resume $st --seed 11 2> r3.err &&
    cmp -s r3/last.safetensors a/last.safetensors && ok train_lora_fa_resume_seed ||
    nok train_lora_fa_resume_seed "resumed run under --seed 11 differs: $(tail -2 r3.err)"
  T --output_dir r4 --max_train_steps 6 --resume $st 2> r4.err; rc=$?
  [ $rc -ne 0 ] && grep -q 'cannot resume' r4.err && ok train_lora_fa_resume_other_module ||
    nok train_lora_fa_resume_other_module "rc $rc: $(tail -2 r4.err)"
  F --output_dir r5 --max_train_steps 6 --resume $st --scale_weight_norms 1 2> r5.err; rc=$?
  [ $rc -eq 2 ] && grep -q scale_weight_norms r5.err && ok train_lora_fa_resume_max_norm_refused ||
    nok train_lora_fa_resume_max_norm_refused "rc $rc: $(tail -2 r5.err)"
else nok train_lora_fa_state "no state: $(tail -3 r1.err)"; fi

# ---- --network_weights: the file's lora_down stays, its lora_up trains on ----------------------------------
F --output_dir w --max_train_steps 3 --network_weights a/last.safetensors --seed 5 2> w.err &&
  $PY lf.py same lora_down w/last.safetensors a/last.safetensors &&
  $PY lf.py differ lora_up w/last.safetensors a/last.safetensors && ok train_lora_fa_network_weights ||
  nok train_lora_fa_network_weights "$(tail -2 w.err)"
# a plain LoRA file as start: its (kaiming) lora_down is kept as it is
F --output_dir w2 --max_train_steps 3 --network_weights p/last.safetensors 2> w2.err &&
  $PY lf.py same lora_down w2/last.safetensors p/last.safetensors && ok train_lora_fa_from_lora ||
  nok train_lora_fa_from_lora "$(tail -2 w2.err)"

# ---- one SGD step from the same weights: LoRA-FA's lora_up is plain LoRA's (same loss, same up gradient) -------
G() { "$1" --output_dir "$2" --max_train_steps 1 --network_weights a/last.safetensors --optimizer_type SGDNesterov \
  --optimizer_args momentum=0.9 --max_grad_norm 0 --log_jsonl "$2.jsonl" 2> "$2.err"; }
G F g1 && G T g2 && ok train_lora_fa_sgd_runs || nok train_lora_fa_sgd_runs "$(tail -n 2 g1.err g2.err)"
$PY lf.py same lora_up g1/last.safetensors g2/last.safetensors && ok train_lora_fa_up_grad_as_lora ||
  nok train_lora_fa_up_grad_as_lora "lora_up after one step differs from networks.lora's"
$PY lf.py differ lora_up g1/last.safetensors a/last.safetensors && ok train_lora_fa_sgd_moves ||
  nok train_lora_fa_sgd_moves "one SGD step left some lora_up unchanged"
$PY lf.py same lora_down g1/last.safetensors a/last.safetensors &&
  ! $PY lf.py same lora_down g2/last.safetensors a/last.safetensors && ok train_lora_fa_sgd_down ||
  nok train_lora_fa_sgd_down "LoRA-FA moved lora_down or LoRA did not"
l1=$(loss1 g1.jsonl); l2=$(loss1 g2.jsonl)
[ -n "$l1" ] && [ "$l1" = "$l2" ] && ok train_lora_fa_same_loss || nok train_lora_fa_same_loss "loss '$l1' vs '$l2'"
# the logged rates: lora_fa.py gives no descriptions, so train_network.py names two groups "unet" (the dict keeps the
# last) and more groups "group1", "group2", ...
lr1=$(sed -n '1s/.*"lr":{\([^}]*\)}.*/\1/p' g1.jsonl)
[ "$lr1" = '"unet":0.05' ] && ok train_lora_fa_lr_names || nok train_lora_fa_lr_names "lr {$lr1}"

# ---- kept network_args: block dims (SD1), conv_dim, dropouts --------------------------------------------------
F --output_dir k --max_train_steps 2 --network_args conv_dim=2 "down_lr_weight=1,1,1,0,0,0,0,0,0,0,0,0" \
  rank_dropout=0.1 module_dropout=0.1 --network_dropout 0.1 --log_jsonl k.jsonl 2> k.err && ok train_lora_fa_args ||
  nok train_lora_fa_args "$(tail -2 k.err)"
lrk=$(sed -n '1s/.*"lr":{\([^}]*\)}.*/\1/p' k.jsonl)
case "$lrk" in '"group1":'*'"group2":'*) ok train_lora_fa_lr_group_names;; *) nok train_lora_fa_lr_group_names "lr {$lrk}";; esac

# ---- refusals -------------------------------------------------------------------------------------------------
t_refuse train_lora_fa_no_loraplus 2 loraplus_lr_ratio F --output_dir x --max_train_steps 1 --network_args loraplus_lr_ratio=4
t_refuse train_lora_fa_no_loraplus_unet 2 loraplus_unet_lr_ratio F --output_dir x --max_train_steps 1 \
  --network_args loraplus_unet_lr_ratio=4
t_refuse train_lora_fa_mid_list 2 mid_lr_weight F --output_dir x --max_train_steps 1 --network_args "mid_lr_weight=1,0.5"
t_refuse train_lora_fa_sdxl_blocks 2 "SDXL block" "$bin" --method lora --model xl.safetensors \
  --model_config "$root/examples/tiny_sdxl.toml" --data recs.jsonl --learning_rate 1e-3 --threads 1 \
  --network_module networks.lora_fa --output_dir x --max_train_steps 1 --network_args "block_dims=$(printf '2,%.0s' $(seq 22))2"
t_refuse train_lora_fa_other_module '!0' networks.dylora_x F --output_dir x --max_train_steps 1 --network_module networks.dylora_x
# SDXL without block arguments trains (lora_te1/lora_te2 and SGM names as networks.lora)
"$bin" --method lora --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" --data recs.jsonl \
  --learning_rate 1e-2 --seed 3 --network_dim 4 --threads 1 --network_module networks.lora_fa --output_dir xl \
  --max_train_steps 2 2> xl.err && [ "$($PY lf.py meta xl/last.safetensors ss_network_module)" = networks.lora_fa ] &&
  ok train_lora_fa_sdxl || nok train_lora_fa_sdxl "$(tail -2 xl.err)"

# ---- sd-sample loads the file as a LoRA; --network_module networks.lora_fa is accepted -----------------------
S=("$root/$build/bin/sd-sample" --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --W 16 --H 16
   --steps 2 --sequential_file_name --threads 1 --prompt "a cat" --seed 9)
"${S[@]}" --network_weights a/last.safetensors --network_module networks.lora_fa --outdir sa > /dev/null 2> sa.err &&
  "${S[@]}" --network_weights a/last.safetensors --outdir sb > /dev/null 2>> sa.err &&
  "${S[@]}" --outdir sc > /dev/null 2>> sa.err && cmp -s sa/im_000001.png sb/im_000001.png &&
  ! cmp -s sa/im_000001.png sc/im_000001.png && ok train_lora_fa_sample || nok train_lora_fa_sample "$(tail -2 sa.err)"
"${S[@]}" --network_weights a/last.safetensors --network_module networks.oft_x --outdir sd > /dev/null 2> sd.err; rc=$?
[ $rc -eq 2 ] && grep -q networks.lora_fa sd.err && ok train_lora_fa_sample_other_module ||
  nok train_lora_fa_sample_other_module "rc $rc: $(tail -1 sd.err)"
exit 0
