#!/usr/bin/env bash
# sd-model merge (networks/merge_lora.py / sdxl_merge_lora.py with --sd_model): LoRA files trained
# by sd-train on the tiny SD1 and SDXL models of examples/tiny_model.c (linear, 1x1 and 3x3 conv
# modules, conv_dim) merged into the checkpoint. The merged weights equal an independent pure-Python
# computation (W + ratio * alpha/rank * up.down, matched to the changed tensors without using any
# naming; SDXL TE2's q/k/v thirds of in_proj), every other key is kept; ratio 0 gives the base bytes;
# two files merge as the sum; sd-sample with the merged model draws what sd-sample draws with the
# base model and --network_weights at the same multiplier; bad inputs: one line, exit 1 or 2, no file.
. "$(dirname "$0")/lib.sh"
t_init sd_model_merge merge
B="$root/$build/bin/sd-model" TR="$root/$build/bin/sd-train" SS="$root/$build/bin/sd-sample"
helper="$root/$build/tests/unit/test_sample"
t_need "$B" "$TR" "$SS"
t_tiny_build
cd "$tmp"
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0 SD_ROOT="${SD_ROOT:-$root}" SD_SHARE="${SD_SHARE:-$root/share/sd}"
C1="$root/examples/tiny_model.toml" CX="$root/examples/tiny_sdxl.toml"
./tiny_model model tiny.safetensors "$C1" > /dev/null && ./tiny_model model xl.safetensors "$CX" > /dev/null &&
  ./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok merge_tiny_model; exit 1; }
T() { "$TR" --method lora --data recs.jsonl --learning_rate 5e-2 --network_dim 4 --network_alpha 2 --threads 1 \
  --max_train_steps 3 --output_dir a "$@"; }
T --model tiny.safetensors --model_config "$C1" --seed 3 --output_name A --network_args conv_dim=2 conv_alpha=1 2> a.err &&
  T --model tiny.safetensors --model_config "$C1" --seed 4 --output_name B 2>> a.err &&
  T --model xl.safetensors --model_config "$CX" --seed 3 --output_name XA --network_args conv_dim=2 conv_alpha=1 2>> a.err ||
  { nok merge_loras "$(tail -2 a.err)"; exit 1; }
M() { "$B" merge --model_config "$C1" --threads 1 "$@"; }
MX() { "$B" merge --model_config "$CX" --threads 1 "$@"; }

# OUT = BASE + RATIO * alpha/rank * up.down, found in the output by value (no naming used)
cat > mcheck.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]
def vals(h, d, k):
    t = h[k]; a, z = t['data_offsets']; raw = d[a:z]
    if t['dtype'] == 'BF16':
        return [struct.unpack('<f', b'\0\0' + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
    f = {'F32': 'f', 'F16': 'e', 'I64': 'q', 'I32': 'i'}[t['dtype']]
    return list(struct.unpack('<%d%s' % (len(raw) // struct.calcsize(f), f), raw))
bh, bd = load(sys.argv[1]); oh, od = load(sys.argv[2]); lh, ld = load(sys.argv[3]); ratio = float(sys.argv[4])
kb = set(bh) - {'__metadata__'}; ko = set(oh) - {'__metadata__'}
if kb != ko: sys.exit('key sets differ: %s' % sorted(kb ^ ko)[:4])
deltas = []
for k in lh:
    if not k.endswith('.lora_down.weight'): continue
    name = k[:-len('.lora_down.weight')]
    down = vals(lh, ld, k); up = vals(lh, ld, name + '.lora_up.weight')
    r = lh[k]['shape'][0]; o = lh[name + '.lora_up.weight']['shape'][0]; i = len(down) // r
    s = ratio * (vals(lh, ld, name + '.alpha')[0] if name + '.alpha' in lh else r) / r
    # linear [o,r]x[r,i]; conv 1x1 and kxk: up [o,r,1,1], down [r,i,k,k] -> [o,i,k,k]
    deltas.append((name, [s * sum(up[a * r + q] * down[q * i + b] for q in range(r)) for a in range(o) for b in range(i)]))
changed, nconv = [], sum(1 for k in lh if k.endswith('.lora_down.weight') and lh[k]['shape'][2:] == [3, 3])
for k in sorted(kb):
    if bh[k]['shape'] != oh[k]['shape']: sys.exit('%s: shape differs' % k)
    B = vals(bh, bd, k); O = vals(oh, od, k)
    parts = 3 if k.endswith('in_proj_weight') else 1
    n = len(B) // parts
    for p in range(parts):
        b, o = B[p * n:(p + 1) * n], O[p * n:(p + 1) * n]
        if b != o: changed.append(('%s[%d]' % (k, p), b, o))
used = set(j for j, (name, d) in enumerate(deltas) if not any(d))   # untrained layers (up = 0) change nothing
for k, b, o in changed:
    scale = max(abs(x) for x in b) + 1e-3
    hit = None
    for j, (name, d) in enumerate(deltas):
        if j in used or len(d) != len(b): continue
        if all(abs(b[t] + d[t] - o[t]) <= 2e-6 * scale + 1e-6 for t in range(min(8, len(b)))) and \
           all(abs(x + y - z) <= 2e-6 * scale + 1e-6 for x, y, z in zip(b, d, o)):
            hit = j; break
    if hit is None: sys.exit('%s changed but matches no LoRA module' % k)
    used.add(hit)
if len(used) != len(deltas):
    sys.exit('%d of %d modules found (missing %s)' % (len(used), len(deltas), [deltas[j][0] for j in range(len(deltas)) if j not in used][:4]))
print(len(deltas), len(changed), nconv)
PY
# max |(AB - base) - (A - base) - (B - base)| / max|base| over the floating tensors
cat > sumcheck.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    f = {'F32': 'f', 'F16': 'e'}
    return {k: struct.unpack('<%d%s' % ((t['data_offsets'][1] - t['data_offsets'][0]) // struct.calcsize(f[t['dtype']]), f[t['dtype']]),
                             d[t['data_offsets'][0]:t['data_offsets'][1]])
            for k, t in h.items() if k != '__metadata__' and t['dtype'] in f}
Z, A, Bm, AB = (load(p) for p in sys.argv[1:5])
assert Z.keys() == A.keys() == Bm.keys() == AB.keys()
err = max(abs((ab - z) - (a - z) - (b - z)) for k in Z for z, a, b, ab in zip(Z[k], A[k], Bm[k], AB[k]))
big = max(abs(z) for k in Z for z in Z[k])
nb = sum(1 for k in Z if Bm[k] != Z[k] and A[k] != Z[k])   # tensors both files change
print('%.3g %d' % (err / big, nb))
PY

# ---- SD1: kohya's command line; the weights of an independent merge; other keys kept ---------------------
M --sd_model tiny.safetensors --models a/A.safetensors --ratios 0.7 --save_to m1.safetensors 2> m1.err; rc=$?
r=$(python3 mcheck.py tiny.safetensors m1.safetensors a/A.safetensors 0.7 2>&1)
set -- $r
[ $rc = 0 ] && [ "${1:-0}" = 127 ] && [ "${2:-0}" -gt 100 ] && [ "${3:-0}" -gt 0 ] && ok merge_sd1_weights ||
  nok merge_sd1_weights "rc $rc: $r $(tail -1 m1.err)"
grep -q '^sd-model: a/A.safetensors: merged 127 modules (12 text encoder, 115 UNet) with ratio 0.7$' m1.err &&
  ok merge_message || nok merge_message "$(head -1 m1.err)"
python3 -c "import json,struct,sys; b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n])
assert set(t['dtype'] for k, t in h.items() if k != '__metadata__') == {'F32'}
assert h['__metadata__'] == {'sd_merge_base': 'tiny.safetensors', 'sd_merge_models': 'A.safetensors', 'sd_merge_ratios': '0.7'}" \
  m1.safetensors 2> /dev/null && ok merge_float_and_metadata || nok merge_float_and_metadata
ls -a | grep -q '^\.m1\|m1.safetensors.*tmp\|tmp.*m1' && nok merge_no_temp_left || ok merge_no_temp_left

# ratio 0: the base bytes (saved in the base's fp16); --model/-o as the other subcommands
M --model tiny.safetensors --models a/A.safetensors --ratios 0 -o z.safetensors --save_precision fp16 --no_metadata 2> z.err
r=$(python3 -c "import json,struct,sys
def load(p):
    b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); return h, b[8+n:]
(A,a),(B,b)=load(sys.argv[1]),load(sys.argv[2])
assert set(A)==set(B) and '__metadata__' not in B
print(sum(A[k]['dtype']!=B[k]['dtype'] or A[k]['shape']!=B[k]['shape'] or a[slice(*A[k]['data_offsets'])]!=b[slice(*B[k]['data_offsets'])] for k in A))" \
  tiny.safetensors z.safetensors 2>&1)
[ "$r" = 0 ] && ok merge_ratio_0_base_bytes || nok merge_ratio_0_base_bytes "$r $(tail -1 z.err)"

# two files: the sum of their merges
M --sd_model tiny.safetensors --models a/B.safetensors --ratios 0.5 --save_to mb.safetensors 2> /dev/null
M --sd_model tiny.safetensors --models a/A.safetensors --ratios 0 --save_to m0.safetensors 2> /dev/null
M --sd_model tiny.safetensors --models a/A.safetensors a/B.safetensors --ratios 0.7 0.5 --save_to mab.safetensors 2> mab.err
r=$(python3 sumcheck.py m0.safetensors m1.safetensors mb.safetensors mab.safetensors 2>&1)
python3 -c "import sys; e, n = sys.argv[1:3]; sys.exit(not (float(e) < 1e-6 and int(n) > 10))" $r 2> /dev/null &&
  [ "$(grep -c 'merged 127 modules\|merged 96 modules' mab.err)" = 2 ] && ok merge_two_files_sum || nok merge_two_files_sum "$r $(cat mab.err)"

# LoRA into LoRA (no --sd_model, tests/cli/sd_model_lora_merge.sh checks the factors): A and C (the same
# ranks and alphas) concatenated at ratios 1 1 apply (A + C)/2 (alpha over the summed rank), so merged into
# the model at ratio 2 they give the model merged with A and C
T --model tiny.safetensors --model_config "$C1" --seed 5 --output_name C --network_args conv_dim=2 conv_alpha=1 2> c.err
"$B" merge --models a/A.safetensors a/C.safetensors --ratios 1 1 --concat --save_to ac.safetensors 2> ac.err
M --sd_model tiny.safetensors --models ac.safetensors --ratios 2 --save_to mac.safetensors 2> /dev/null
M --sd_model tiny.safetensors --models a/A.safetensors --ratios 1 --save_to ma1.safetensors 2> /dev/null
M --sd_model tiny.safetensors --models a/C.safetensors --ratios 1 --save_to mc1.safetensors 2> /dev/null
r=$(python3 sumcheck.py m0.safetensors ma1.safetensors mc1.safetensors mac.safetensors 2>&1)
python3 -c "import sys; e, n = sys.argv[1:3]; sys.exit(not (float(e) < 1e-6 and int(n) > 10))" $r 2> /dev/null &&
  ok merge_lora_concat_into_model || nok merge_lora_concat_into_model "$r $(tail -n 1 c.err ac.err)"

# --precision fp16: saved as fp16 by default, weights = the merge rounded to fp16
M --sd_model tiny.safetensors --models a/A.safetensors --ratios 0.7 --save_to p16.safetensors --precision fp16 2> p16.err
python3 -c "import json,struct,sys
def load(p):
    b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); return h, b[8+n:]
(A,a),(B,b)=load(sys.argv[1]),load(sys.argv[2])
assert set(t['dtype'] for k,t in B.items() if k!='__metadata__')=={'F16'}
k='model.diffusion_model.input_blocks.1.0.in_layers.2.weight'
x=struct.unpack('<%df'%(A[k]['shape'][0]*A[k]['shape'][1]*9), a[slice(*A[k]['data_offsets'])])
y=struct.unpack('<%de'%len(x), b[slice(*B[k]['data_offsets'])])
assert max(abs(p-q) for p,q in zip(x,y)) <= 1e-3*max(abs(p) for p in x) and x!=y" m1.safetensors p16.safetensors 2> p16.py.err &&
  ok merge_precision_fp16 || nok merge_precision_fp16 "$(tail -1 p16.py.err) $(tail -1 p16.err)"

# sd-sample: the merged model draws the base model + --network_weights at the same multiplier
S() { "$SS" --W 32 --H 32 --steps 3 --sequential_file_name --threads 1 --prompt cat --seed 5 "$@" > /dev/null 2>&1; }
S --model tiny.safetensors --model_config "$C1" --network_weights a/A.safetensors --network_mul 0.7 --outdir s1
S --model m1.safetensors --model_config "$C1" --outdir s2
S --model tiny.safetensors --model_config "$C1" --outdir s0
if [ -x "$helper" ]; then
  d=$("$helper" maxdiff s1/im_000001.png s2/im_000001.png) d0=$("$helper" maxdiff s1/im_000001.png s0/im_000001.png)
  [ -n "$d" ] && [ "$d" -ge 0 ] && [ "$d" -le 1 ] && [ "$d0" -gt 1 ] && ok merge_sd1_sample_equals_network_weights ||
    nok merge_sd1_sample_equals_network_weights "merged vs LoRA $d, vs base $d0"
else echo "ok merge_sd1_sample_equals_network_weights # SKIP $helper not built"; fi

# ---- SDXL: SGM names, both text encoders (TE2 q/k/v in in_proj), 3x3 conv modules --------------------------
MX --sd_model xl.safetensors --models a/XA.safetensors --ratios 0.7 --save_to x1.safetensors 2> x1.err; rc=$?
r=$(python3 mcheck.py xl.safetensors x1.safetensors a/XA.safetensors 0.7 2>&1)
set -- $r
[ $rc = 0 ] && [ "${1:-0}" -gt 100 ] && [ "${3:-0}" -gt 0 ] && ok merge_sdxl_weights || nok merge_sdxl_weights "rc $rc: $r $(tail -1 x1.err)"
grep -q 'XA.safetensors: merged [0-9]* modules ([1-9][0-9]* text encoder, [1-9][0-9]* UNet) with ratio 0.7' x1.err &&
  ok merge_sdxl_message || nok merge_sdxl_message "$(head -1 x1.err)"
S --model xl.safetensors --model_config "$CX" --network_weights a/XA.safetensors --network_mul 0.7 --outdir x1
S --model x1.safetensors --model_config "$CX" --outdir x2
S --model xl.safetensors --model_config "$CX" --outdir x0
if [ -x "$helper" ]; then
  d=$("$helper" maxdiff x1/im_000001.png x2/im_000001.png) d0=$("$helper" maxdiff x1/im_000001.png x0/im_000001.png)
  [ -n "$d" ] && [ "$d" -ge 0 ] && [ "$d" -le 1 ] && [ "$d0" -gt 1 ] && ok merge_sdxl_sample_equals_network_weights ||
    nok merge_sdxl_sample_equals_network_weights "merged vs LoRA $d, vs base $d0"
else echo "ok merge_sdxl_sample_equals_network_weights # SKIP $helper not built"; fi

# ---- bad input: one line, exit 1 (fatal) or 2 (usage), no output file ---------------------------------------
# fail NAME CODE PATTERN ARGS... (merge on the SD1 model, output e.safetensors)
fail() { expect_fail M "$@"; }
head -c 100 a/A.safetensors > bad.safetensors
fail merge_missing_lora 1 'nosuch.safetensors' --sd_model tiny.safetensors --models a/A.safetensors nosuch.safetensors \
  --ratios 1 1 --save_to e.safetensors
fail merge_corrupt_lora 1 'bad.safetensors' --sd_model tiny.safetensors --models bad.safetensors --ratios 1 --save_to e.safetensors
fail merge_not_a_lora 1 'tiny.safetensors' --sd_model tiny.safetensors --models tiny.safetensors --ratios 1 --save_to e.safetensors
fail merge_sdxl_lora_into_sd1 1 'XA.safetensors' --sd_model tiny.safetensors --models a/XA.safetensors --ratios 1 --save_to e.safetensors
fail merge_missing_model 1 'nosuch_model' --sd_model nosuch_model.safetensors --models a/A.safetensors --ratios 1 --save_to e.safetensors
fail merge_ratio_count 2 'ratios: 1 values for 2 --models files' --sd_model tiny.safetensors --models a/A.safetensors a/B.safetensors \
  --ratios 1 --save_to e.safetensors
fail merge_no_ratios 2 'ratios: 0 values for 1 --models file$' --sd_model tiny.safetensors --models a/A.safetensors --save_to e.safetensors
fail merge_no_models 2 'name at least one LoRA file' --sd_model tiny.safetensors --save_to e.safetensors
fail merge_no_save_to 2 'save_to OUT.safetensors is required' --sd_model tiny.safetensors --models a/A.safetensors --ratios 1
fail merge_ckpt_output 2 'only .safetensors output' --sd_model tiny.safetensors --models a/A.safetensors --ratios 1 --save_to e.ckpt
fail merge_bad_precision 2 'precision' --sd_model tiny.safetensors --models a/A.safetensors --ratios 1 --save_to e.safetensors \
  --precision fp8
"$B" --help > help.out 2>&1 && grep -q 'merge' help.out && grep -q -- '--save_to' help.out && grep -q -- '--ratios' help.out &&
  ok merge_help || nok merge_help
exit 0
