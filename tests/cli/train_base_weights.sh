#!/usr/bin/env bash
# sd-train --base_weights / --base_weights_multiplier (train_network.py): LoRA files merged into the
# model before the network is built. A text-encoder LoRA merged at 0.5 trains as the model into which
# an independent (pure Python) merge put it; multiplier 0 gives the bytes of a run without base
# weights (also under --mixed_precision fp16/bf16, where the UNet is merged in f32 and then stored in
# half precision); two files at 0.25 train as one at 0.5; files without a multiplier get 1.0; more
# multipliers than files, a non-LoRA method and a missing or corrupt file are refused; a resumed run
# ends with the bytes of an uninterrupted one; the LoRA's metadata does not name the base weights.
. "$(dirname "$0")/lib.sh"
t_init train_base_weights train_bw
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_bw_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_bw_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method lora --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 "$@"; }
loss1() { sed -n '1s/.*"loss":\([^,]*\),.*/\1/p' "$1"; }

# an independent merge of the modules of a LoRA whose names are a checkpoint prefix's keys with '.' → '_'
# (SD1 lora_te_* → cond_stage_model.transformer.*, SDXL lora_unet_* → model.diffusion_model.*)
cat > merge.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]
def vals(h, d, k):
    t = h[k]; a, z = t['data_offsets']; raw = d[a:z]
    f = {'F32': 'f', 'F16': 'e', 'I64': 'q'}[t['dtype']]
    return list(struct.unpack('<%d%s' % (len(raw) // struct.calcsize(f), f), raw))
mh, md = load(sys.argv[1]); lh, ld = load(sys.argv[2]); m = float(sys.argv[4]); pre, lpre = sys.argv[5:7]
out = {}
for k in mh:
    if k == '__metadata__' or not k.startswith(pre) or not k.endswith('.weight'): continue
    name = lpre + k[len(pre):-len('.weight')].replace('.', '_')
    if name + '.lora_down.weight' not in lh: continue
    down = vals(lh, ld, name + '.lora_down.weight'); up = vals(lh, ld, name + '.lora_up.weight')
    r = lh[name + '.lora_down.weight']['shape'][0]; o = mh[k]['shape'][0]; i = len(down) // r
    s = m * (vals(lh, ld, name + '.alpha')[0] if name + '.alpha' in lh else r) / r
    W = vals(mh, md, k)
    out[k] = [W[a * i + b] + s * sum(up[a * r + q] * down[q * i + b] for q in range(r)) for a in range(o) for b in range(i)]
if not out: sys.exit('no modules merged')
hdr, blobs, off = {}, [], 0
for k in sorted(x for x in mh if x != '__metadata__'):
    t = mh[k]
    if k in out: raw = struct.pack('<%df' % len(out[k]), *out[k]); dt = 'F32'
    else: a, z = t['data_offsets']; raw = md[a:z]; dt = t['dtype']
    hdr[k] = {'dtype': dt, 'shape': t['shape'], 'data_offsets': [off, off + len(raw)]}; blobs.append(raw); off += len(raw)
j = json.dumps(hdr).encode(); j += b' ' * (-len(j) % 8)
open(sys.argv[3], 'wb').write(struct.pack('<Q', len(j)) + j + b''.join(blobs))
print(len(out))
PY
# max |a - b| over the F32 tensors of two LoRA files
cat > wdiff.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: struct.unpack('<%df' % ((t['data_offsets'][1] - t['data_offsets'][0]) // 4),
                             d[t['data_offsets'][0]:t['data_offsets'][1]])
            for k, t in h.items() if k != '__metadata__' and t['dtype'] == 'F32'}
A, B = load(sys.argv[1]), load(sys.argv[2])
assert A.keys() == B.keys() and A
print('%.3g' % max(abs(x - y) for k in A for x, y in zip(A[k], B[k])))
PY

# ---- the LoRAs to merge: one with UNet and text-encoder modules, one text-encoder only -------------------
T --model tiny.safetensors --output_dir a --output_name A --max_train_steps 6 --learning_rate 5e-2 2> a.err &&
T --model tiny.safetensors --output_dir a --output_name Ate --max_train_steps 6 --learning_rate 5e-2 \
  --network_train_text_encoder_only 2>> a.err && ok train_bw_sources || { nok train_bw_sources "$(tail -3 a.err)"; exit 1; }

# ---- no base weights; multiplier 0 gives the same bytes ---------------------------------------------------
T --model tiny.safetensors --output_dir b0 --max_train_steps 3 --log_jsonl b0.jsonl 2> b0.err
T --model tiny.safetensors --output_dir bz --max_train_steps 3 --base_weights a/A.safetensors \
  --base_weights_multiplier 0 2> bz.err
cmp -s b0/last.safetensors bz/last.safetensors && ok train_bw_zero_same_bytes || nok train_bw_zero_same_bytes "$(tail -2 bz.err)"
for mp in fp16 bf16; do
  T --model tiny.safetensors --output_dir z$mp --max_train_steps 3 --mixed_precision $mp 2> /dev/null
  T --model tiny.safetensors --output_dir zz$mp --max_train_steps 3 --mixed_precision $mp --base_weights a/A.safetensors \
    --base_weights_multiplier 0 2> zz$mp.err
  [ -s z$mp/last.safetensors ] && cmp -s z$mp/last.safetensors zz$mp/last.safetensors && ok train_bw_zero_same_bytes_$mp ||
    nok train_bw_zero_same_bytes_$mp "$(tail -2 zz$mp.err)"
done

# ---- a text-encoder LoRA at 0.5 = the model merged by an independent route ---------------------------------
n=$(python3 merge.py tiny.safetensors a/Ate.safetensors merged.safetensors 0.5 cond_stage_model.transformer. lora_te_)
[ "$n" = 12 ] && ok train_bw_python_merge || nok train_bw_python_merge "$n"
T --model merged.safetensors --output_dir m1 --max_train_steps 3 --log_jsonl m1.jsonl 2> m1.err
T --model tiny.safetensors --output_dir m2 --max_train_steps 3 --log_jsonl m2.jsonl --base_weights a/Ate.safetensors \
  --base_weights_multiplier 0.5 2> m2.err
l0=$(loss1 b0.jsonl) l1=$(loss1 m1.jsonl) l2=$(loss1 m2.jsonl)
d12=$(python3 wdiff.py m1/last.safetensors m2/last.safetensors 2>&1) d02=$(python3 wdiff.py b0/last.safetensors m2/last.safetensors 2>&1)
python3 -c "import sys; a,b,c=map(float,sys.argv[1:4]); d,e=map(float,sys.argv[4:6]);
sys.exit(not (abs(b-c) <= 1e-6*abs(b) and abs(a-c) > 1e-4*abs(a) and d < 1e-5 and e > 1e-3))" "$l0" "$l1" "$l2" "$d12" "$d02" 2>/dev/null &&
  ok train_bw_te_equals_merged_model || nok train_bw_te_equals_merged_model "loss none $l0 merged $l1 base $l2; weights $d12 vs none $d02"
grep -q 'merging module: a/Ate.safetensors with multiplier 0.5: 12 text-encoder and 0 UNet modules' m2.err &&
grep -q 'all weights merged: a/Ate.safetensors' m2.err && ok train_bw_messages || nok train_bw_messages "$(grep merg m2.err)"

# ---- UNet and text encoder: two files at 0.25 train as one at 0.5; a file without a multiplier gets 1.0 -------
T --model tiny.safetensors --output_dir h1 --max_train_steps 3 --log_jsonl h1.jsonl --base_weights a/A.safetensors \
  --base_weights_multiplier 0.5 2> h1.err
T --model tiny.safetensors --output_dir h2 --max_train_steps 3 --log_jsonl h2.jsonl \
  --base_weights a/A.safetensors a/A.safetensors --base_weights_multiplier 0.25 0.25 2> h2.err
l1=$(loss1 h1.jsonl) l2=$(loss1 h2.jsonl) d=$(python3 wdiff.py h1/last.safetensors h2/last.safetensors 2>&1)
python3 -c "import sys; a,b,c,d=map(float,sys.argv[1:5]); sys.exit(not (abs(b-c) <= 1e-6*abs(b) and abs(a-c) > 1e-4*abs(a) and d < 1e-5))" \
  "$l0" "$l1" "$l2" "$d" 2>/dev/null && ok train_bw_linear || nok train_bw_linear "loss none $l0, 0.5: $l1, 2x0.25: $l2, weights $d"
grep -q '12 text-encoder and 84 UNet modules' h1.err && ok train_bw_unet_and_te || nok train_bw_unet_and_te "$(grep merg h1.err)"
T --model tiny.safetensors --output_dir d1 --max_train_steps 2 --base_weights a/Ate.safetensors a/A.safetensors \
  --base_weights_multiplier 0.5 2> d1.err
T --model tiny.safetensors --output_dir d2 --max_train_steps 2 --base_weights a/Ate.safetensors a/A.safetensors \
  --base_weights_multiplier 0.5 1 2> d2.err
[ -s d1/last.safetensors ] && cmp -s d1/last.safetensors d2/last.safetensors &&
  grep -q 'a/A.safetensors with multiplier 1:' d1.err && ok train_bw_default_multiplier || nok train_bw_default_multiplier "$(tail -2 d1.err)"
meta_keys=$(python3 -c "import json,struct,sys; b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]
print(' '.join(json.loads(b[8:8+n]).get('__metadata__',{}).keys()))" h1/last.safetensors)
case "$meta_keys" in *ss_network_module*) case "$meta_keys" in *base_weights*) nok train_bw_no_metadata "$meta_keys";; *) ok train_bw_no_metadata;; esac;;
  *) nok train_bw_no_metadata "no metadata";; esac

T --model tiny.safetensors --output_dir h3 --max_train_steps 3 --threads 2 --base_weights a/A.safetensors \
  --base_weights_multiplier 0.5 2> /dev/null
cmp -s h1/last.safetensors h3/last.safetensors && ok train_bw_threads_same_bytes || nok train_bw_threads_same_bytes

# ---- SDXL: UNet (SGM names, checked by the independent merge) and both text encoders -----------------------
./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null || nok train_bw_sdxl_model
X() { "$bin" --method lora --model_config "$root/examples/tiny_sdxl.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 "$@"; }
X --model xl.safetensors --output_dir xa --output_name XA --max_train_steps 4 --learning_rate 5e-2 2> xa.err
X --model xl.safetensors --output_dir xa --output_name XU --max_train_steps 4 --learning_rate 5e-2 \
  --network_train_unet_only 2>> xa.err
X --model xl.safetensors --output_dir x0 --max_train_steps 2 --log_jsonl x0.jsonl 2> /dev/null
X --model xl.safetensors --output_dir xf --max_train_steps 2 --base_weights xa/XA.safetensors 2> xf.err
grep -Eq 'merging module: xa/XA.safetensors with multiplier 1: [1-9][0-9]* text-encoder and [1-9][0-9]* UNet modules' xf.err &&
  ! cmp -s x0/last.safetensors xf/last.safetensors && ok train_bw_sdxl_merges || nok train_bw_sdxl_merges "$(tail -2 xf.err)"
n=$(python3 merge.py xl.safetensors xa/XU.safetensors xmerged.safetensors 0.5 model.diffusion_model. lora_unet_ 2>&1)
X --model xmerged.safetensors --output_dir x1 --max_train_steps 2 --log_jsonl x1.jsonl 2> /dev/null
X --model xl.safetensors --output_dir x2 --max_train_steps 2 --log_jsonl x2.jsonl --base_weights xa/XU.safetensors \
  --base_weights_multiplier 0.5 2> x2.err
l0=$(loss1 x0.jsonl) l1=$(loss1 x1.jsonl) l2=$(loss1 x2.jsonl) d=$(python3 wdiff.py x1/last.safetensors x2/last.safetensors 2>&1)
python3 -c "import sys; a,b,c,d=map(float,sys.argv[1:5]); sys.exit(not (abs(b-c) <= 1e-6*abs(b) and abs(a-c) > 1e-5*abs(a) and d < 1e-5))" \
  "$l0" "$l1" "$l2" "$d" 2>/dev/null && ok train_bw_sdxl_unet_equals_merged_model ||
  nok train_bw_sdxl_unet_equals_merged_model "modules $n; loss none $l0 merged $l1 base $l2; weights $d"
X --model xl.safetensors --output_dir xb0 --max_train_steps 2 --mixed_precision bf16 2> /dev/null
X --model xl.safetensors --output_dir xbz --max_train_steps 2 --mixed_precision bf16 --base_weights xa/XA.safetensors \
  --base_weights_multiplier 0 2> xbz.err
[ -s xb0/last.safetensors ] && cmp -s xb0/last.safetensors xbz/last.safetensors && ok train_bw_sdxl_zero_same_bytes_bf16 ||
  nok train_bw_sdxl_zero_same_bytes_bf16 "$(tail -2 xbz.err)"

# ---- resume: the state's run continues on the same merged model -------------------------------------------
T --model tiny.safetensors --output_dir r1 --max_train_steps 8 --save_every_n_steps 4 --save_state \
  --base_weights a/A.safetensors --base_weights_multiplier 0.5 2> r1.err
T --model tiny.safetensors --output_dir r2 --max_train_steps 8 --resume r1/at-step00000004-state \
  --base_weights a/A.safetensors --base_weights_multiplier 0.5 2> r2.err
[ -s r1/last.safetensors ] && cmp -s r1/last.safetensors r2/last.safetensors && ok train_bw_resume_same_bytes ||
  nok train_bw_resume_same_bytes "$(tail -2 r2.err)"
T --model tiny.safetensors --output_dir r3 --max_train_steps 8 --resume r1/at-step00000004-state 2> r3.err; rc=$?
[ $rc = 1 ] && grep -q 'cannot resume.*base_weights' r3.err && ok train_bw_resume_mismatch || nok train_bw_resume_mismatch "rc $rc $(tail -1 r3.err)"

# ---- refusals ----------------------------------------------------------------------------------------------
T --model tiny.safetensors --output_dir e1 --max_train_steps 1 --base_weights a/A.safetensors \
  --base_weights_multiplier 0.5 0.5 2> e1.err; rc=$?
[ $rc = 2 ] && grep -q 'base_weights_multiplier: 2 values for 1 --base_weights file$' e1.err && ok train_bw_count_mismatch ||
  nok train_bw_count_mismatch "rc $rc $(cat e1.err)"
T --model tiny.safetensors --output_dir e2 --max_train_steps 1 --base_weights_multiplier 0.5 2> e2.err; rc=$?
[ $rc = 2 ] && ok train_bw_multiplier_alone || nok train_bw_multiplier_alone "rc $rc $(cat e2.err)"
T --model tiny.safetensors --output_dir e3 --max_train_steps 1 --base_weights nosuch.safetensors 2> e3.err; rc=$?
[ $rc = 1 ] && [ "$(grep -c 'sd-train: error\|sd-train: .*nosuch' e3.err)" = 1 ] &&
  grep -q 'nosuch.safetensors.*No such file' e3.err && ok train_bw_missing_file || nok train_bw_missing_file "rc $rc $(cat e3.err)"
head -c 100 a/A.safetensors > bad.safetensors
T --model tiny.safetensors --output_dir e4 --max_train_steps 1 --base_weights bad.safetensors 2> e4.err; rc=$?
[ $rc = 1 ] && grep -q 'bad.safetensors' e4.err && [ ! -e e4/last.safetensors ] && ok train_bw_corrupt_file ||
  nok train_bw_corrupt_file "rc $rc $(cat e4.err)"
T --model tiny.safetensors --output_dir e5 --max_train_steps 1 --base_weights tiny.safetensors 2> e5.err; rc=$?
[ $rc = 1 ] && grep -q "not a LoRA key" e5.err && ok train_bw_not_lora || nok train_bw_not_lora "rc $rc $(cat e5.err)"
"$bin" --method db --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --max_train_steps 1 --base_weights a/A.safetensors 2> e6.err; rc=$?
[ $rc = 2 ] && grep -q -- '--base_weights is a LoRA option: not used by --method db' e6.err && ok train_bw_lora_only ||
  nok train_bw_lora_only "rc $rc $(cat e6.err)"
exit 0
