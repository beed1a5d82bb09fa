#!/usr/bin/env bash
# sd-model extract (networks/extract_lora_from_models.py): a LoRA from the difference of two tiny
# checkpoints (examples/tiny_model.c, SD1 and SDXL). The tuned models are the original plus known deltas
# on chosen tensors (a linear, SD1's 1x1-conv proj_in / SDXL's linear proj_in, a GEGLU linear, a 3x3
# conv, a ResnetBlock linear, text-encoder linears) written by a pure-Python generator. Checked:
#   - against an independent numpy extraction (Debian's /usr/bin/python3; float64 SVD of tuned - org,
#     each singular pair's sign aligned with the file's since the reference's clamp depends on it,
#     clamp at numpy's linear-interpolation quantile): every changed tensor matches one module, every
#     other module has up = 0; relative error <= 1e-4 (float32 factors; fp16 output: 1e-3);
#   - the round trip: `sd-model merge` of the extracted LoRA into the original gives the tuned model
#     (sign-symmetric rank-1 deltas with --clamp_quantile 1 clamp nothing): max error <= 1e-5 on deltas
#     of 0.1; with the default clamp the error is visible;
#   - 3x3 convs and ResnetBlock linears only with --conv_dim; the text encoder skipped when identical or
#     below --min_diff; --load_precision fp16; --save_precision dtypes; metadata and sshs_* hashes;
#     sd-train loads every module of the file into its own network; --threads 1 and 2 give the same bytes;
#   - bad input: one line, exit 1 or 2, no file.
. "$(dirname "$0")/lib.sh"
t_init sd_model_extract extract
B="$root/$build/bin/sd-model" TR="$root/$build/bin/sd-train"
PY=/usr/bin/python3
t_need "$B" "$TR"
t_tiny_build
cd "$tmp"
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0 SD_ROOT="${SD_ROOT:-$root}" SD_SHARE="${SD_SHARE:-$root/share/sd}"
C1="$root/examples/tiny_model.toml" CX="$root/examples/tiny_sdxl.toml"
./tiny_model model tiny.safetensors "$C1" > /dev/null && ./tiny_model model xl.safetensors "$CX" > /dev/null &&
  ./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok extract_tiny_model; exit 1; }
if ! $PY -c 'import numpy' 2> /dev/null; then
  echo "ok extract_numpy # SKIP $PY has no numpy"; HAVE_NP=0
else HAVE_NP=1; fi

# gen.py ORG OUT MODE SEED KEY...: OUT = ORG with a known delta added to each KEY (stored as F32, every
# other tensor byte-identical). lowrank: rank 4 (singular values about .2, .1, .05, .025) + 1e-4 uniform
# noise; sym: rank 1 a.b^T with sign-symmetric a and b (max |delta| 0.1); small: the same at 0.005;
# shape: the first KEY's last axis halved.
cat > gen.py <<'PY'
import json, random, struct, sys
org, out, mode, seed, keys = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
b = open(org, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
rnd = random.Random(seed)
def vals(t):
    raw = d[t['data_offsets'][0]:t['data_offsets'][1]]
    f = {'F32': 'f', 'F16': 'e'}[t['dtype']]
    return list(struct.unpack('<%d%s' % (len(raw) // struct.calcsize(f), f), raw))
def f32(x): return struct.unpack('<f', struct.pack('<f', x))[0]
def unit(v):
    s = sum(x * x for x in v) ** 0.5; return [x / s for x in v]
new = {}
for k in keys:
    t = h[k]; rows = t['shape'][0]; cols = 1
    for s in t['shape'][1:]: cols *= s
    if mode == 'shape':
        sh = t['shape'][:-1] + [t['shape'][-1] // 2]; m = 1
        for s in sh: m *= s
        new[k] = (sh, [0.0] * m); continue
    W = vals(t); D = [0.0] * (rows * cols)
    if mode == 'lowrank':
        for j, sv in enumerate([0.2, 0.1, 0.05, 0.025]):
            a = unit([rnd.gauss(0, 1) for _ in range(rows)]); c = unit([rnd.gauss(0, 1) for _ in range(cols)])
            for i in range(rows):
                for q in range(cols): D[i * cols + q] += sv * a[i] * c[q]
        D = [x + rnd.uniform(-1e-4, 1e-4) for x in D]
    else:
        a = []
        for i in range(rows // 2): x = rnd.uniform(0.2, 1); a += [x, -x]
        c = [1.0 if q % 2 == 0 else -1.0 for q in range(cols)]
        amp = 0.1 if mode == 'sym' else 0.005
        D = [amp * a[i] * c[q] for i in range(rows) for q in range(cols)]
    new[k] = (t['shape'], [f32(f32(w) + f32(x)) for w, x in zip(W, D)])
hdr, blobs, off = {}, [], 0
if '__metadata__' in h: hdr['__metadata__'] = h['__metadata__']
for k, t in h.items():
    if k == '__metadata__': continue
    if k in new:
        sh, v = new[k]; raw = struct.pack('<%df' % len(v), *v); hdr[k] = {'dtype': 'F32', 'shape': sh}
    else:
        raw = d[t['data_offsets'][0]:t['data_offsets'][1]]; hdr[k] = {'dtype': t['dtype'], 'shape': t['shape']}
    hdr[k]['data_offsets'] = [off, off + len(raw)]; blobs.append(raw); off += len(raw)
j = json.dumps(hdr).encode(); j += b' ' * (-len(j) % 8)
open(out, 'wb').write(struct.pack('<Q', len(j)) + j + b''.join(blobs))
PY

# check.py ORG TUNED LORA DIM CONV_DIM Q [fp16]: the independent extraction (see the top); fp16: the
# weights and their difference rounded to fp16 first (--load_precision fp16). Prints: modules matched,
# zero modules, worst relative error, changed tensors that match no module.
cat > check.py <<'PY'
import os, sys; sys.path.insert(0, os.environ['ST_LOAD_DIR'])
import numpy as np
import st_load
def load(p): return st_load.load(p, np.float32)
oh, _, og = load(sys.argv[1]); th, _, tg = load(sys.argv[2]); lh, lm, lg = load(sys.argv[3])
dim, conv_dim, q = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
r16 = (lambda x: x.astype(np.float16).astype(np.float32)) if sys.argv[7:] == ['fp16'] else (lambda x: x)
mods = {k[:-len('.lora_down.weight')] for k in lh if k.endswith('.lora_down.weight')}
F = {m: (lg(m + '.lora_up.weight'), lg(m + '.lora_down.weight'), lg(m + '.alpha')) for m in mods}
for m, (u, dn, al) in F.items():
    if float(al) != dn.shape[0] or u.shape[1] != dn.shape[0]: sys.exit('%s: alpha %r, rank %d' % (m, float(al), dn.shape[0]))
used, worst, unmatched = set(), 0.0, []
for k in oh:
    if oh[k]['dtype'] not in ('F16', 'F32') or len(oh[k]['shape']) < 2: continue
    D = r16(r16(tg(k)) - r16(og(k)))
    if not D.any(): continue
    out, inn = D.shape[0], D.shape[1]; k3 = D.ndim == 4 and D.shape[2:] != (1, 1)
    r = min(conv_dim if k3 else dim, inn, out)
    U, S, Vh = np.linalg.svd(D.reshape(out, -1).astype(np.float64), full_matrices=False)
    hit = None
    for m, (u, dn, al) in F.items():
        if m in used or dn.ndim != D.ndim or u.shape[0] != out or dn.shape[0] != r or dn[0].size != D[0].size: continue
        up, down = u.reshape(out, r).astype(np.float64), dn.reshape(r, -1).astype(np.float64)
        sg = np.sign(np.sum(down * Vh[:r], axis=1)); sg[sg == 0] = 1
        ue, de = U[:, :r] * S[:r] * sg, Vh[:r] * sg[:, None]
        hi = np.quantile(np.concatenate([ue.ravel(), de.ravel()]), q)
        ue, de = np.clip(ue, -hi, hi), np.clip(de, -hi, hi)
        err = max(np.abs(up - ue).max() / np.abs(ue).max(), np.abs(down - de).max() / np.abs(de).max())
        if err < 1e-2: hit = m; worst = max(worst, err); break
    if hit is None: unmatched.append(k)
    else: used.add(hit)
zero = sum(1 for m in mods - used if not F[m][0].any())
if len(used) + zero != len(mods): sys.exit('%d modules neither matched nor zero' % (len(mods) - len(used) - zero))
print(len(used), zero, '%.3g' % worst, ' '.join(unmatched))
PY

# rt.py A B: max |A - B| over the floating tensors (the key sets must be equal)
cat > rt.py <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    f = {'F32': 'f', 'F16': 'e'}
    return {k: struct.unpack('<%d%s' % ((t['data_offsets'][1] - t['data_offsets'][0]) // struct.calcsize(f[t['dtype']]), f[t['dtype']]),
                             d[t['data_offsets'][0]:t['data_offsets'][1]])
            for k, t in h.items() if k != '__metadata__' and t['dtype'] in f}
T, M = load(sys.argv[1]), load(sys.argv[2])
if set(T) != set(M): sys.exit('key sets differ')
print('%.3g' % max(abs(x - y) for k in T for x, y in zip(T[k], M[k])))
PY

# meta.py FILE [KEY VALUE]... [-KEY]...: the metadata has KEY = VALUE and no -KEY; sshs_model_hash is the
# SHA-256 of the data section; prints the dtypes of the tensors and the number of lora_te modules
cat > meta.py <<'PY'
import hashlib, json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); m = h.pop('__metadata__', {})
a = sys.argv[2:]; i = 0
while i < len(a):
    if a[i].startswith('-'):
        if any(k.startswith(a[i][1:]) for k in m): sys.exit('%s present' % a[i][1:])
        i += 1
    else:
        if m.get(a[i]) != a[i + 1]: sys.exit('%s = %r, want %r' % (a[i], m.get(a[i]), a[i + 1]))
        i += 2
if m.get('sshs_model_hash') != hashlib.sha256(b[8 + n:]).hexdigest(): sys.exit('sshs_model_hash differs')
if len(m.get('sshs_legacy_hash', '')) != 8: sys.exit('no sshs_legacy_hash')
print(','.join(sorted(set(t['dtype'] for t in h.values()))), sum(1 for k in h if k.startswith('lora_te') and k.endswith('.alpha')))
PY

E() { "$B" extract --model_config "$C1" --threads 1 "$@"; }
EX() { "$B" extract --model_config "$CX" --threads 1 "$@"; }
U=model.diffusion_model TE=cond_stage_model.transformer.text_model.encoder.layers.0
K1="$U.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight $U.input_blocks.1.1.proj_in.weight
    $U.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight"
KR="$U.input_blocks.1.0.in_layers.2.weight $U.input_blocks.1.0.emb_layers.1.weight"
python3 gen.py tiny.safetensors t1.safetensors lowrank 1 $K1 $KR $TE.self_attn.q_proj.weight &&
  python3 gen.py tiny.safetensors tu.safetensors lowrank 2 $K1 &&
  python3 gen.py tiny.safetensors ts.safetensors sym 3 $K1 $KR $TE.self_attn.q_proj.weight &&
  python3 gen.py tiny.safetensors tsmall.safetensors lowrank 4 $K1 &&
  python3 gen.py t1.safetensors tsm.safetensors small 5 $TE.self_attn.k_proj.weight &&
  python3 gen.py tiny.safetensors tbad.safetensors shape 1 $U.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight ||
  { nok extract_gen; exit 1; }
# numpy check: "matched zero worst unmatched..."; NP NAME EXPECT_MATCHED EXPECT_UNMATCHED_COUNT TOL ARGS...
NP() {
  local name=$1 want=$2 wantun=$3 tol=$4; shift 4
  [ $HAVE_NP = 1 ] || { echo "ok $name # SKIP no numpy"; return; }
  local r; r=$($PY check.py "$@" 2>&1)
  set -- $r
  if [ "${1:-}" = "$want" ] && [ $(($# - 3)) = "$wantun" ] && $PY -c "import sys; sys.exit(not float(sys.argv[1]) <= $tol)" "${3:-9}"
  then ok "$name"; echo "# $name: $1 modules match, $2 zero, worst relative error $3"
  else nok "$name" "$r"; fi
}

# ---- SD1: kohya's command line; linear, 1x1-conv proj_in, GEGLU, text encoder; 3x3/resblock only with conv_dim
E --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e1.safetensors 2> e1.err; rc=$?
[ $rc = 0 ] && grep -q '^sd-model: extracted 96 modules (12 text encoder, 84 UNet) at rank 4; saved e1.safetensors$' e1.err &&
  ok extract_sd1 || nok extract_sd1 "rc $rc $(tail -1 e1.err)"
NP extract_sd1_numpy 4 2 1e-4 tiny.safetensors t1.safetensors e1.safetensors 4 0 0.99
r=$(python3 meta.py e1.safetensors ss_v2 False ss_base_model_version sd_v1 ss_network_module networks.lora ss_network_dim 4 \
  ss_network_alpha 4.0 ss_network_args '{}' modelspec.architecture stable-diffusion-v1/lora modelspec.title e1 \
  modelspec.prediction_type epsilon modelspec.resolution 512x512 2>&1)
[ "$r" = "F32 12" ] && ok extract_metadata_float32 || nok extract_metadata_float32 "$r"
python3 -c "import json,struct,sys; b=open(sys.argv[1],'rb').read(); h=json.loads(b[8:8+struct.unpack('<Q',b[:8])[0]])
n='lora_unet_down_blocks_0_attentions_0_'
assert h[n+'proj_in.lora_down.weight']['shape']==[4,32,1,1] and h[n+'proj_in.lora_up.weight']['shape']==[32,4,1,1]
assert h[n+'transformer_blocks_0_attn1_to_q.lora_down.weight']['shape']==[4,32]
assert h[n+'transformer_blocks_0_ff_net_0_proj.lora_up.weight']['shape']==[256,4]
assert h['lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha']['shape']==[]
assert not any('resnets' in k for k in h)" e1.safetensors 2> n.err && ok extract_sd1_names_shapes || nok extract_sd1_names_shapes "$(tail -1 n.err)"

E --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e2.safetensors --conv_dim 2 --save_precision bf16 2> e2.err
grep -q 'extracted 127 modules (12 text encoder, 115 UNet)' e2.err && ok extract_conv_dim || nok extract_conv_dim "$(tail -1 e2.err)"
NP extract_conv_dim_numpy 6 0 1e-2 tiny.safetensors t1.safetensors e2.safetensors 4 2 0.99
r=$(python3 meta.py e2.safetensors ss_network_args '{"conv_dim": "2", "conv_alpha": "2.0"}' 2>&1)
[ "$r" = "BF16 12" ] && python3 -c "import json,struct,sys; b=open(sys.argv[1],'rb').read(); h=json.loads(b[8:8+struct.unpack('<Q',b[:8])[0]])
assert h['lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight']['shape']==[2,32,3,3]
assert h['lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight']['shape']==[32,2,1,1]
assert h['lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight']['shape']==[4,128]" e2.safetensors 2> n.err &&
  ok extract_conv_dim_bf16 || nok extract_conv_dim_bf16 "$r $(tail -1 n.err)"
E --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e3.safetensors --conv_dim 2 --save_precision fp16 \
  --no_metadata 2> /dev/null
NP extract_fp16_numpy 6 0 1e-3 tiny.safetensors t1.safetensors e3.safetensors 4 2 0.99
r=$(python3 meta.py e3.safetensors ss_network_dim 4 -modelspec 2>&1)
[ "$r" = "F16 12" ] && ok extract_fp16_no_metadata || nok extract_fp16_no_metadata "$r"
# sd-train builds the same modules (names, shapes, alpha = rank) and loads all 127
"$TR" --method lora --data recs.jsonl --learning_rate 1e-3 --network_dim 4 --network_alpha 4 --threads 1 --max_train_steps 1 \
  --output_dir tr --model tiny.safetensors --model_config "$C1" --network_weights e3.safetensors \
  --network_args conv_dim=2 conv_alpha=2 --output_name T > tr.out 2>&1
grep -q 'LoRA: 12 text-encoder modules, 115 UNet modules' tr.out && grep -q 'loaded 127 LoRA modules from e3.safetensors' tr.out &&
  ok extract_loads_in_sd_train || nok extract_loads_in_sd_train "$(tail -2 tr.out)"
# --load_precision fp16: weights and difference rounded to fp16 before the SVD
E --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e4.safetensors --load_precision fp16 2> e4.err
NP extract_load_precision_fp16 4 2 1e-4 tiny.safetensors t1.safetensors e4.safetensors 4 0 0.99 fp16
# --threads 1 and 2: the same bytes
mkdir -p th1 th2
E --model_org tiny.safetensors --model_tuned t1.safetensors --save_to th1/e.safetensors --conv_dim 2 2> /dev/null
"$B" extract --model_config "$C1" --threads 2 --model_org tiny.safetensors --model_tuned t1.safetensors \
  --save_to th2/e.safetensors --conv_dim 2 2> /dev/null
cmp -s th1/e.safetensors th2/e.safetensors && ok extract_threads_same_bytes || nok extract_threads_same_bytes

# ---- text encoder: skipped when identical or within --min_diff ----------------------------------------------
E --model_org tiny.safetensors --model_tuned tu.safetensors --save_to eu.safetensors 2> eu.err
r=$(python3 meta.py eu.safetensors 2>&1)
[ "$r" = "F32 0" ] && grep -q 'text encoder is the same (max |diff| 0 <= --min_diff 0.01): extracting the UNet only' eu.err &&
  grep -q 'extracted 84 modules (0 text encoder, 84 UNet)' eu.err && ok extract_te_identical_skipped ||
  nok extract_te_identical_skipped "$r $(cat eu.err)"
E --model_org t1.safetensors --model_tuned tsm.safetensors --save_to es1.safetensors 2> es1.err
E --model_org t1.safetensors --model_tuned tsm.safetensors --save_to es2.safetensors --min_diff 0.001 2> es2.err
r1=$(python3 meta.py es1.safetensors 2>&1) r2=$(python3 meta.py es2.safetensors 2>&1)
[ "$r1" = "F32 0" ] && [ "$r2" = "F32 12" ] && grep -q 'text encoder is the same' es1.err &&
  grep -q 'text encoder is different: max |diff| 0.00[45][0-9]* > --min_diff 0.001' es2.err &&
  ok extract_te_min_diff || nok extract_te_min_diff "$r1 / $r2 $(cat es1.err es2.err)"

# ---- round trip: merge(org, extract(org, tuned)) = tuned --------------------------------------------------
E --model_org tiny.safetensors --model_tuned ts.safetensors --save_to rt.safetensors --conv_dim 2 --clamp_quantile 1 2> rt.err &&
  "$B" merge --model_config "$C1" --threads 1 --sd_model tiny.safetensors --models rt.safetensors --ratios 1 \
    --save_to m.safetensors 2>> rt.err
d=$(python3 rt.py ts.safetensors m.safetensors 2>&1) d0=$(python3 rt.py tiny.safetensors ts.safetensors 2>&1)
python3 -c "import sys; sys.exit(not (float(sys.argv[1]) <= 1e-5 and float(sys.argv[2]) > 0.05))" "$d" "$d0" 2> /dev/null &&
  { ok extract_sd1_round_trip; echo "# extract_sd1_round_trip: max |merged - tuned| $d (deltas up to $d0)"; } ||
  nok extract_sd1_round_trip "$d $d0 $(tail -1 rt.err)"
E --model_org tiny.safetensors --model_tuned ts.safetensors --save_to rq.safetensors --conv_dim 2 2> /dev/null &&
  "$B" merge --model_config "$C1" --threads 1 --sd_model tiny.safetensors --models rq.safetensors --ratios 1 \
    --save_to mq.safetensors 2> /dev/null
d=$(python3 rt.py ts.safetensors mq.safetensors 2>&1)
python3 -c "import sys; sys.exit(not float(sys.argv[1]) > 1e-3)" "$d" 2> /dev/null && ok extract_default_clamp_changes_product ||
  nok extract_default_clamp_changes_product "$d"

# ---- SDXL: ldm UNet names, lora_te1_ / lora_te2_, linear proj_in ---------------------------------------------
T1=conditioner.embedders.0.transformer.text_model.encoder.layers.0 T2=conditioner.embedders.1.model.transformer.resblocks.1
KX="$U.input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight $U.input_blocks.3.1.proj_in.weight
    $U.input_blocks.3.0.in_layers.2.weight $T1.self_attn.q_proj.weight $T2.mlp.c_fc.weight"
python3 gen.py xl.safetensors x1.safetensors lowrank 6 $KX && python3 gen.py xl.safetensors xs.safetensors sym 7 $KX ||
  { nok extract_gen_sdxl; exit 1; }
EX --model_org xl.safetensors --model_tuned x1.safetensors --save_to x1e.safetensors --conv_dim 2 --sdxl 2> x1.err
grep -q 'extracted 149 modules (30 text encoder, 119 UNet)' x1.err && ok extract_sdxl || nok extract_sdxl "$(tail -1 x1.err)"
NP extract_sdxl_numpy 5 0 1e-4 xl.safetensors x1.safetensors x1e.safetensors 4 2 0.99
r=$(python3 meta.py x1e.safetensors ss_v2 False ss_base_model_version sdxl_base_v1-0 \
  modelspec.architecture stable-diffusion-xl-v1-base/lora modelspec.resolution 1024x1024 2>&1)
[ "$r" = "F32 30" ] && python3 -c "import json,struct,sys; b=open(sys.argv[1],'rb').read(); h=json.loads(b[8:8+struct.unpack('<Q',b[:8])[0]])
assert h['lora_unet_input_blocks_3_1_proj_in.lora_down.weight']['shape']==[4,64]
assert h['lora_te2_text_model_encoder_layers_1_mlp_fc1.lora_up.weight']['shape']==[128,4]
assert 'lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha' in h" x1e.safetensors 2> n.err &&
  ok extract_sdxl_names_metadata || nok extract_sdxl_names_metadata "$r $(tail -1 n.err)"
EX --model_org xl.safetensors --model_tuned xs.safetensors --save_to xrt.safetensors --conv_dim 2 --clamp_quantile 1 2> xrt.err &&
  "$B" merge --model_config "$CX" --threads 1 --sd_model xl.safetensors --models xrt.safetensors --ratios 1 \
    --save_to xm.safetensors 2>> xrt.err
d=$(python3 rt.py xs.safetensors xm.safetensors 2>&1)
python3 -c "import sys; sys.exit(not float(sys.argv[1]) <= 1e-5)" "$d" 2> /dev/null &&
  { ok extract_sdxl_round_trip; echo "# extract_sdxl_round_trip: max |merged - tuned| $d"; } ||
  nok extract_sdxl_round_trip "$d $(tail -1 xrt.err)"

# ---- bad input: one line, exit 1 (fatal) or 2 (usage), no output file ---------------------------------------
fail() { expect_fail E "$@"; }
head -c 100 t1.safetensors > bad.safetensors
fail extract_missing_org 1 'nosuch.safetensors: No such file' --model_org nosuch.safetensors --model_tuned t1.safetensors \
  --save_to e.safetensors
fail extract_corrupt_tuned 1 'bad.safetensors' --model_org tiny.safetensors --model_tuned bad.safetensors --save_to e.safetensors
fail extract_different_families 1 'tiny.safetensors is SD1.x, xl.safetensors is SDXL: the models must be of the same family' \
  --model_org tiny.safetensors --model_tuned xl.safetensors --save_to e.safetensors
fail extract_shape_mismatch 1 "tbad.safetensors: tensor '.*attn1.to_q.weight': expected shape \[32,32\], got \[32,16\]" \
  --model_org tiny.safetensors --model_tuned tbad.safetensors --save_to e.safetensors
fail extract_sdxl_flag_on_sd1 1 'tiny.safetensors: the model is SD1.x, not SDXL (--sdxl)' --model_org tiny.safetensors \
  --model_tuned t1.safetensors --save_to e.safetensors --sdxl
fail extract_v2_flag_on_sd1 1 'not SD2.x (--v2)' --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e.safetensors --v2
fail extract_v2_and_sdxl 2 '--v2 and --sdxl cannot be given together' --model_org tiny.safetensors --model_tuned t1.safetensors \
  --save_to e.safetensors --v2 --sdxl
fail extract_no_org 2 'model_org MODEL is required' --model_tuned t1.safetensors --save_to e.safetensors
fail extract_no_tuned 2 'model_tuned MODEL is required' --model_org tiny.safetensors --save_to e.safetensors
fail extract_no_save_to 2 'save_to OUT.safetensors is required' --model_org tiny.safetensors --model_tuned t1.safetensors
fail extract_ckpt_output 2 'only .safetensors output' --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e.ckpt
fail extract_bad_quantile 2 'clamp_quantile' --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e.safetensors \
  --clamp_quantile 1.5
fail extract_bad_dim 2 "'--dim'" --model_org tiny.safetensors --model_tuned t1.safetensors --save_to e.safetensors --dim 0
fail extract_bad_save_precision 2 'save_precision' --model_org tiny.safetensors --model_tuned t1.safetensors \
  --save_to e.safetensors --save_precision fp8
# --device / --load_original_model_to / --load_tuned_model_to: accepted, each with a line saying it does nothing here
E --model_org tiny.safetensors --model_tuned t1.safetensors --save_to dev.safetensors --device cuda \
  --load_original_model_to cuda:0 --load_tuned_model_to cpu 2> dev.err; rc=$?
[ $rc = 0 ] && [ -f dev.safetensors ] && [ "$(grep -c -- '^sd-model: --[a-z_]*: no effect' dev.err)" = 3 ] &&
  ok extract_noop_options || nok extract_noop_options "rc $rc $(cat dev.err)"
"$B" --help > help.out 2>&1 && grep -q 'extract' help.out && grep -q -- '--model_org' help.out && grep -q -- '--conv_dim' help.out &&
  grep -q -- '--clamp_quantile' help.out && ok extract_help || nok extract_help
exit 0
