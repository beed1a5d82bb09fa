#!/usr/bin/env bash
# sd-model svd-merge --lbws (networks/svd_merge_lora.py) and sd-model merge --lbws of SDXL files
# (networks/sdxl_merge_lora.py, LoRA into LoRA and into a model): layer block weights, one JSON list per
# file. The expected weight of every module comes from a Python transcription of the reference's
# LAYER12/17/20/26 tables, format_lbws and get_lbw_block_index, run over all module names of LoRAs trained
# on the tiny SD1 and SDXL models (text encoder(s), attention, resnet, sampler and 3x3 conv modules). The
# tool's output with --lbws must equal its output without --lbws on a copy of the file whose factors were
# multiplied by those weights (numpy, Debian's /usr/bin/python3): svd-merge and merge into a model scale
# lora_up by w, the LoRA-into-LoRA merge both factors (the reference multiplies each key's scale by w).
# Both name readings of svd_merge_lora.py are covered (12/20 values: SDXL names, 17/26: SD1/SD2 names, so
# a 26-value list on an SDXL file weights its text encoders only). Bad lists are refused (exit 2).
. "$(dirname "$0")/lib.sh"
t_init sd_model_lbws lbws
B="$root/$build/bin/sd-model"
TR="$root/$build/bin/sd-train"
PY=/usr/bin/python3
t_need "$B" "$TR"
if ! $PY -c 'import numpy' 2> /dev/null; then
  echo "ok lbws_numpy # SKIP $PY has no numpy"; exit 0
fi
t_tiny_build
cd "$tmp"
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0
./tiny_model model sd1.safetensors "$root/examples/tiny_model.toml" > /dev/null &&
  ./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null &&
  ./tiny_model latents "$tmp" 4 4 8 8 > recs.jsonl || { nok lbws_tiny_model; exit 1; }
# LoRAs with every module kind: two SD1 files (ranks 4 and 2, alphas 2 and none... see below), one SDXL file
T() { "$TR" --method lora --data recs.jsonl --learning_rate 5e-2 --threads 1 --max_train_steps 2 "$@"; }
T --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --seed 1 --network_dim 4 --network_alpha 2 \
  --network_args conv_dim=2 conv_alpha=1 --output_dir s1 2> t.err &&
  T --model sd1.safetensors --model_config "$root/examples/tiny_model.toml" --seed 2 --network_dim 4 --network_alpha 4 \
    --network_args conv_dim=2 --output_dir s2 2>> t.err &&
  T --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" --seed 3 --network_dim 4 --network_alpha 1 \
    --network_args conv_dim=2 --output_dir x1 2>> t.err &&
  T --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" --seed 4 --network_dim 4 --network_alpha 2 \
    --network_args conv_dim=2 --output_dir x2 2>> t.err || { nok lbws_train "$(tail -2 t.err)"; exit 1; }
cp s1/last.safetensors S1.safetensors; cp s2/last.safetensors S2.safetensors
cp x1/last.safetensors X1.safetensors; cp x2/last.safetensors X2.safetensors

# lbw.py: the transcription of svd_merge_lora.py's tables and functions, and the weighting of a LoRA file
cat > lbw.py <<'PY'
import json, re, struct, sys
import numpy as np
ACCEPTABLE = [12, 17, 20, 26]
SDXL_LAYER_NUM = [12, 20]
NAMES = ['BASE'] + ['IN%02d' % i for i in range(12)] + ['MID'] + ['OUT%02d' % i for i in range(12)]
def flags(on): return [n in on for n in NAMES]
LAYER12 = flags({'BASE', 'IN04', 'IN05', 'IN07', 'IN08', 'MID', 'OUT00', 'OUT01', 'OUT02', 'OUT03', 'OUT04', 'OUT05'})
LAYER17 = flags({'BASE', 'IN01', 'IN02', 'IN04', 'IN05', 'IN07', 'IN08', 'MID', 'OUT03', 'OUT04', 'OUT05', 'OUT06',
                 'OUT07', 'OUT08', 'OUT09', 'OUT10', 'OUT11'})
LAYER20 = flags({'BASE', 'MID'} | {'IN%02d' % i for i in range(9)} | {'OUT%02d' % i for i in range(9)})
LAYER26 = flags(set(NAMES))
assert [sum(x) for x in (LAYER12, LAYER17, LAYER20, LAYER26)] == ACCEPTABLE
RE_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")
def get_lbw_block_index(lora_name, is_sdxl=False):
    if "text_model_encoder_" in lora_name:
        return 0
    block_idx = -1
    if not is_sdxl:
        NUM_OF_BLOCKS = 12
        m = RE_UPDOWN.search(lora_name)
        if m:
            g = m.groups(); up_down = g[0]; i = int(g[1]); j = int(g[3])
            if up_down == "down":
                if g[2] == "resnets" or g[2] == "attentions": idx = 3 * i + j + 1
                elif g[2] == "downsamplers": idx = 3 * (i + 1)
                else: return block_idx
            elif up_down == "up":
                if g[2] == "resnets" or g[2] == "attentions": idx = 3 * i + j
                elif g[2] == "upsamplers": idx = 3 * i + 2
                else: return block_idx
            if g[0] == "down": block_idx = 1 + idx
            elif g[0] == "up": block_idx = 1 + NUM_OF_BLOCKS + 1 + idx
        elif "mid_block_" in lora_name:
            block_idx = 1 + NUM_OF_BLOCKS
    else:
        if lora_name.startswith("lora_unet_"):
            name = lora_name[len("lora_unet_"):]
            if name.startswith("time_embed_") or name.startswith("label_emb_"): block_idx = 1
            elif name.startswith("input_blocks_"): block_idx = 1 + int(name.split("_")[2])
            elif name.startswith("middle_block_"): block_idx = 13
            elif name.startswith("output_blocks_"): block_idx = 14 + int(name.split("_")[2])
            elif name.startswith("out_"): block_idx = 23
    return block_idx
def format_lbws(lbws):
    lbws = [json.loads(lbw) for lbw in lbws]
    assert all(isinstance(lbw, list) for lbw in lbws)
    assert len(set(len(lbw) for lbw in lbws)) == 1
    assert all(len(lbw) in ACCEPTABLE for lbw in lbws)
    layer_num = len(lbws[0])
    is_sdxl = layer_num in SDXL_LAYER_NUM
    FLAGS = {12: LAYER12, 17: LAYER17, 20: LAYER20, 26: LAYER26}[layer_num]
    return lbws, is_sdxl, [i for i, f in enumerate(FLAGS) if f]
def weights_of(lbw, target):
    w = [1] * 26
    for index, value in zip(target, lbw): w[index] = value
    return w
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return h, d
def save(p, h, arrays, d):
    hdr, blob = {}, b''
    if '__metadata__' in h: hdr['__metadata__'] = h['__metadata__']
    for k in sorted(x for x in h if x != '__metadata__'):
        t = h[k]; a, z = t['data_offsets']
        raw = arrays[k].astype(np.float32).tobytes() if k in arrays else d[a:z]
        hdr[k] = {'dtype': t['dtype'], 'shape': t['shape'], 'data_offsets': [len(blob), len(blob) + len(raw)]}; blob += raw
    j = json.dumps(hdr).encode(); j += b' ' * (-len(j) % 8)
    open(p, 'wb').write(struct.pack('<Q', len(j)) + j + blob)
op = sys.argv[1]
if op == 'table':   # table FILE IS_SDXL: "index count" lines over the file's modules
    h, _ = load(sys.argv[2]); sdxl = sys.argv[3] == '1'; cnt = {}
    for k in h:
        if k.endswith('.lora_down.weight'):
            i = get_lbw_block_index(k, sdxl); cnt[i] = cnt.get(i, 0) + 1
    print(' '.join('%d:%d' % kv for kv in sorted(cnt.items())))
elif op == 'weight':   # weight IN OUT LBW MODE(svd|sdxl) FACTORS(up|both): the factors times w(module)
    h, d = load(sys.argv[2]); lbws, is_sdxl, target = format_lbws([sys.argv[4]])
    if sys.argv[5] == 'sdxl': is_sdxl = True   # sdxl_merge_lora.py: get_lbw_block_index(key, True)
    w = weights_of(lbws[0], target); arrays = {}
    for k, t in h.items():
        if k == '__metadata__' or t['dtype'] != 'F32': continue
        if not (k.endswith('.lora_up.weight') or (sys.argv[6] == 'both' and k.endswith('.lora_down.weight'))): continue
        i = get_lbw_block_index(k, is_sdxl); a, z = t['data_offsets']
        x = np.frombuffer(d[a:z], dtype=np.float32).astype(np.float64)
        arrays[k] = x * (w[i] if i in target else 1)
    save(sys.argv[3], h, arrays, d)
elif op == 'synth':   # synth OUT sd|xl SEED: 4x5 linear modules under the names of every block of the full models
    kind, rng = sys.argv[3], np.random.default_rng(int(sys.argv[4])); names = []
    if kind == 'sd':
        names.append('lora_te_text_model_encoder_layers_11_mlp_fc2')
        for i in range(4):
            for j in range(2):
                names += ['lora_unet_down_blocks_%d_resnets_%d_conv1' % (i, j)]
                if i < 3: names += ['lora_unet_down_blocks_%d_attentions_%d_proj_in' % (i, j)]
            if i < 3: names.append('lora_unet_down_blocks_%d_downsamplers_0_conv' % i)
            for j in range(3):
                names += ['lora_unet_up_blocks_%d_resnets_%d_conv2' % (i, j)]
                if i > 0: names += ['lora_unet_up_blocks_%d_attentions_%d_transformer_blocks_0_attn1_to_q' % (i, j)]
            if i < 3: names.append('lora_unet_up_blocks_%d_upsamplers_0_conv' % i)
        names += ['lora_unet_mid_block_attentions_0_proj_out', 'lora_unet_mid_block_resnets_1_conv_shortcut']
    else:
        names += ['lora_te1_text_model_encoder_layers_0_mlp_fc1', 'lora_te2_text_model_encoder_layers_31_self_attn_q_proj']
        names += ['lora_unet_input_blocks_%d_0_in_layers_2' % i for i in range(1, 9)]
        names += ['lora_unet_input_blocks_%d_1_transformer_blocks_0_attn2_to_k' % i for i in (4, 5, 7, 8)]
        names += ['lora_unet_input_blocks_%d_0_op' % i for i in (3, 6)]
        names += ['lora_unet_middle_block_%d_emb_layers_1' % i for i in (0, 2)] + ['lora_unet_middle_block_1_proj_in']
        names += ['lora_unet_output_blocks_%d_0_skip_connection' % i for i in range(9)]
        names += ['lora_unet_output_blocks_%d_2_conv' % i for i in (2, 5)]
    h, arrays = {}, {}
    for n in names:
        for suf, shape in (('.lora_down.weight', [4, 5]), ('.lora_up.weight', [6, 4]), ('.alpha', [])):
            k = n + suf; arrays[k] = rng.standard_normal(int(np.prod(shape))) * 0.3 if suf != '.alpha' else np.array([2.0])
            h[k] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [0, 0]}
    save(sys.argv[2], h, arrays, b'')
    print(len(names))
elif op == 'rand':   # rand IN OUT SEED: the file's modules with random factors (generic singular values)
    h, d = load(sys.argv[2]); rng = np.random.default_rng(int(sys.argv[4])); arrays = {}
    for k in sorted(h):
        if k.endswith('.lora_down.weight') or k.endswith('.lora_up.weight'):
            n = int(np.prod(h[k]['shape']))
            arrays[k] = rng.standard_normal(n) * (0.3 if 'down' in k else 0.2)
    save(sys.argv[3], h, arrays, d)
elif op == 'svd':   # svd OUT NEW_RANK NEW_CONV_RANK FILE RATIO LBW...: svd_merge_lora.py in numpy, weights w(module)
    out, nr, ncr = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    files, ratios = sys.argv[5::3], [float(x) for x in sys.argv[6::3]]
    lbws, is_sdxl, target = format_lbws(sys.argv[7::3])
    def getter(p):
        h, d = load(p)
        def get(k):
            t = h[k]; a, z = t['data_offsets']
            dt = {'F32': np.float32, 'F16': np.float16, 'I64': np.int64}[t['dtype']]
            return np.frombuffer(d[a:z], dtype=dt).astype(np.float64).reshape(t['shape'])
        return h, get
    oh, og = getter(out); srcs = [getter(f) for f in files]
    worst = 0.0
    for k in sorted(oh):
        if not k.endswith('.lora_down.weight'): continue
        m = k[:-17]; W = 0
        for (h, g), r, lb in zip(srcs, ratios, lbws):
            if k not in h: continue
            dn = g(k); up = g(m + '.lora_up.weight'); a = float(g(m + '.alpha')) if m + '.alpha' in h else dn.shape[0]
            w = weights_of(lb, target); i = get_lbw_block_index(k, is_sdxl)
            scale = a / dn.shape[0] * (w[i] if i in target else 1)
            W = W + r * scale * (up.reshape(up.shape[0], -1) @ dn.reshape(dn.shape[0], -1))
        d4 = og(k); U = og(m + '.lora_up.weight'); U = U.reshape(U.shape[0], -1); D = d4.reshape(d4.shape[0], -1)
        kk = ncr if d4.ndim == 4 and d4.shape[2:] != (1, 1) else nr
        kk = min(kk, d4.shape[1], U.shape[0])
        Us, S, Vh = np.linalg.svd(W, full_matrices=False)
        Us = Us[:, :kk] * S[:kk]; Vh = Vh[:kk]
        sg = np.sign(np.sum(Us * U, 0)); sg[sg == 0] = 1
        Us = Us * sg; Vh = Vh * sg[:, None]
        hi = np.quantile(np.concatenate([Us.ravel(), Vh.ravel()]), 0.99)
        Us = np.clip(Us, -hi, hi); Vh = np.clip(Vh, -hi, hi)
        e = max(np.abs(U - Us).max() / (np.abs(Us).max() + 1e-12), np.abs(D - Vh).max() / (np.abs(Vh).max() + 1e-12))
        worst = max(worst, e)
    print('%.3g' % worst)
    if worst > 1e-4: sys.exit('relative error %g > 1e-4' % worst)
elif op == 'cmp':   # cmp A B TOL [product]: max relative difference of the F32 tensors (or of alpha/r·up·down)
    ha, da = load(sys.argv[2]); hb, db = load(sys.argv[3]); tol = float(sys.argv[4])
    def get(h, d, k):
        t = h[k]; a, z = t['data_offsets']
        dt = {'F32': np.float32, 'F16': np.float16, 'I64': np.int64}[t['dtype']]
        return np.frombuffer(d[a:z], dtype=dt).astype(np.float64).reshape(t['shape'])
    ka = sorted(k for k in ha if k != '__metadata__'); kb = sorted(k for k in hb if k != '__metadata__')
    if ka != kb: sys.exit('keys differ')
    worst = 0.0
    if len(sys.argv) > 5:
        for k in ka:
            if not k.endswith('.lora_down.weight'): continue
            m = k[:-17]; P = []
            for h, d in ((ha, da), (hb, db)):
                D = get(h, d, k); U = get(h, d, m + '.lora_up.weight'); A = float(get(h, d, m + '.alpha'))
                P.append(A / D.shape[0] * U.reshape(U.shape[0], -1) @ D.reshape(D.shape[0], -1))
            worst = max(worst, np.abs(P[0] - P[1]).max() / (np.abs(P[1]).max() + 1e-12))
    else:
        for k in ka:
            x, y = get(ha, da, k), get(hb, db, k)
            worst = max(worst, np.abs(x - y).max() / (np.abs(y).max() + 1e-12))
    print('%.3g' % worst)
    if worst > tol: sys.exit('relative difference %g > %g' % (worst, tol))
PY

# ---- the module names of the tiny models and their blocks (the transcription's view) ---------------------
t1=$($PY lbw.py table S1.safetensors 0); tx=$($PY lbw.py table X1.safetensors 1)
echo "# SD1 blocks (index:modules) $t1"; echo "# SDXL blocks $tx"
n1=$(echo "$t1" | wc -w); nx=$(echo "$tx" | wc -w)
[ "$n1" -ge 8 ] && [ "$nx" -ge 6 ] && ok lbws_names_cover_blocks || nok lbws_names_cover_blocks "SD1 $n1, SDXL $nx blocks"

# distinct weights per block: value v of a list of N is 0.5 + 0.13 v (one negative, one zero)
lst() { $PY -c "import sys; n = int(sys.argv[1]); v = [round(0.5 + 0.13 * i, 2) for i in range(n)]; v[2] = -0.7; v[n - 2] = 0
print('[' + ','.join(repr(x) for x in v) + ']')" "$1"; }
L12=$(lst 12); L17=$(lst 17); L20=$(lst 20); L26=$(lst 26)
V() { "$B" svd-merge --threads 1 "$@"; }
M() { "$B" merge --threads 1 "$@"; }
MX() { M --model_config "$root/examples/tiny_sdxl.toml" "$@"; }
chk() { local name=$1; shift; $PY lbw.py cmp "$@" > c.out 2>&1 && ok "$name" || nok "$name" "$(tail -1 c.out)"; }

# ---- svd-merge: each list length, on the family it is meant for and on the other one ------------------------
# random factors under the files' module names (generic singular values: the truncation is well defined)
$PY lbw.py rand S1.safetensors R1.safetensors 11 && $PY lbw.py rand S2.safetensors R2.safetensors 12 &&
  $PY lbw.py rand X1.safetensors RX1.safetensors 13 && $PY lbw.py rand X2.safetensors RX2.safetensors 14 || nok lbws_rand
sv() {   # sv NAME LIST FILE1 FILE2 (ratios 0.8 -0.6, rank 3, conv rank 2), against the numpy svd_merge_lora.py
  local name=$1 l=$2 f1=$3 f2=$4
  V --models "$f1" "$f2" --ratios 0.8 -0.6 --new_rank 3 --new_conv_rank 2 --lbws "$l" "$l" --save_to "$name.safetensors" 2> v.err ||
    { nok "$name" "$(tail -2 v.err)"; return; }
  $PY lbw.py svd "$name.safetensors" 3 2 "$f1" 0.8 "$l" "$f2" -0.6 "$l" > c.out 2>&1 && ok "$name" || nok "$name" "$(tail -1 c.out)"
}
sv lbws_svd_sd1_17 "$L17" R1.safetensors R2.safetensors
sv lbws_svd_sd1_26 "$L26" R1.safetensors R2.safetensors
sv lbws_svd_sd1_12 "$L12" R1.safetensors R2.safetensors      # SDXL reading: only the text encoder weighted
sv lbws_svd_sdxl_20 "$L20" RX1.safetensors RX2.safetensors
sv lbws_svd_sdxl_12 "$L12" RX1.safetensors RX2.safetensors
sv lbws_svd_sdxl_26 "$L26" RX1.safetensors RX2.safetensors   # SD1 reading: only the text encoders weighted
# every block of the full SD1/SD2 and SDXL UNets (synthetic names; 4x5 modules)
$PY lbw.py synth FS1.safetensors sd 21 > /dev/null && $PY lbw.py synth FS2.safetensors sd 22 > /dev/null &&
  $PY lbw.py synth FX1.safetensors xl 23 > /dev/null && $PY lbw.py synth FX2.safetensors xl 24 > /dev/null || nok lbws_synth
echo "# full SD1 blocks $($PY lbw.py table FS1.safetensors 0)"; echo "# full SDXL blocks $($PY lbw.py table FX1.safetensors 1)"
sv lbws_svd_full_sd1_26 "$L26" FS1.safetensors FS2.safetensors
sv lbws_svd_full_sd1_17 "$L17" FS1.safetensors FS2.safetensors
sv lbws_svd_full_sdxl_20 "$L20" FX1.safetensors FX2.safetensors
sv lbws_svd_full_sdxl_12 "$L12" FX1.safetensors FX2.safetensors

# the weighting changes the result (the test sees the weights at all); all-ones lists give the bytes of no --lbws
mkdir -p ones
V --models R1.safetensors R2.safetensors --ratios 0.8 -0.6 --new_rank 3 --new_conv_rank 2 --save_to plain.safetensors 2> /dev/null
! $PY lbw.py cmp lbws_svd_sd1_26.safetensors plain.safetensors 1e-3 product > /dev/null 2>&1 && ok lbws_svd_changes ||
  nok lbws_svd_changes "--lbws did not change the merge"
ones=$($PY -c "print('[' + ','.join(['1'] * 26) + ']')"); ones17=$($PY -c "print('[' + ','.join(['1'] * 17) + ']')")
V --models R1.safetensors R2.safetensors --ratios 0.8 -0.6 --new_rank 3 --new_conv_rank 2 --lbws "$ones" "$ones" \
  --save_to ones/plain.safetensors 2> /dev/null && cmp -s ones/plain.safetensors plain.safetensors && ok lbws_svd_ones ||
  nok lbws_svd_ones "all-ones lists differ from no --lbws"
# different lists per file (the trick: the second file's list of ones equals the first file pre-weighted); true counts as 1
V --models R1.safetensors R2.safetensors --ratios 1 1 --new_rank 3 --new_conv_rank 2 --lbws "$L17" \
  "[true,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]" --save_to two.safetensors 2> v.err &&
  V --models R1.safetensors R2.safetensors --ratios 1 1 --new_rank 3 --new_conv_rank 2 --lbws "$L17" "$ones17" \
  --save_to two2.safetensors 2>> v.err && $PY lbw.py cmp two.safetensors two2.safetensors 0 > /dev/null &&
  $PY lbw.py svd two.safetensors 3 2 R1.safetensors 1 "$L17" R2.safetensors 1 "$ones17" > c.out 2>&1 && ok lbws_svd_per_file ||
  nok lbws_svd_per_file "$(tail -1 v.err c.out)"

# ---- merge of SDXL LoRA files (sdxl_merge_lora.py): both factors times w, SDXL names for any length --------
for L in "$L20" "$L26"; do
  n=$($PY -c "import json,sys; print(len(json.loads(sys.argv[1])))" "$L")
  $PY lbw.py weight X1.safetensors w1.safetensors "$L" sdxl both && $PY lbw.py weight X2.safetensors w2.safetensors "$L" sdxl both &&
    M --models X1.safetensors X2.safetensors --ratios 0.8 -0.6 --lbws "$L" "$L" --save_to mx$n.safetensors 2> m.err &&
    M --models w1.safetensors w2.safetensors --ratios 0.8 -0.6 --save_to mx$n.ref.safetensors 2>> m.err &&
    chk lbws_merge_sdxl_$n mx$n.safetensors mx$n.ref.safetensors 1e-6 || nok lbws_merge_sdxl_$n "$(tail -2 m.err)"
done
M --models X1.safetensors X2.safetensors --ratios 0.8 -0.6 --lbws "$L20" "$L20" --concat --save_to mc.safetensors 2> m.err &&
  $PY lbw.py weight X1.safetensors w1.safetensors "$L20" sdxl both && $PY lbw.py weight X2.safetensors w2.safetensors "$L20" sdxl both &&
  M --models w1.safetensors w2.safetensors --ratios 0.8 -0.6 --concat --save_to mc.ref.safetensors 2>> m.err &&
  chk lbws_merge_sdxl_concat mc.safetensors mc.ref.safetensors 1e-6 || nok lbws_merge_sdxl_concat "$(tail -2 m.err)"

# ---- merge into the SDXL model (sdxl_merge_lora.py merge_to_sd_model): W += ratio·w·alpha/rank·up·down ------
$PY lbw.py weight X1.safetensors w1.safetensors "$L20" sdxl up &&
  MX --sd_model xl.safetensors --models X1.safetensors --ratios 0.9 --lbws "$L20" --save_to mm.safetensors 2> mm.err &&
  MX --sd_model xl.safetensors --models w1.safetensors --ratios 0.9 --save_to mm.ref.safetensors 2>> mm.err &&
  chk lbws_merge_into_sdxl mm.safetensors mm.ref.safetensors 1e-6 || nok lbws_merge_into_sdxl "$(tail -2 mm.err)"
MX --sd_model xl.safetensors --models X1.safetensors --ratios 0.9 --save_to mm.plain.safetensors 2> /dev/null
! $PY lbw.py cmp mm.safetensors mm.plain.safetensors 1e-7 > /dev/null 2>&1 && ok lbws_merge_into_sdxl_changes ||
  nok lbws_merge_into_sdxl_changes "--lbws did not change the merged model"

# ---- bad lists and uses ---------------------------------------------------------------------------------------
fv() { expect_fail V "$@"; }
fm() { expect_fail M "$@"; }
fv lbws_not_json 2 'must be JSON' --models S1.safetensors --ratios 1 --lbws '[1,2' --save_to e.safetensors
fv lbws_not_list 2 'must be lists' --models S1.safetensors --ratios 1 --lbws '{"a": 1}' --save_to e.safetensors
fv lbws_length 2 'length of lbw must be 12, 17, 20 or 26' --models S1.safetensors --ratios 1 --lbws '[1,1,1]' --save_to e.safetensors
fv lbws_same_length 2 'same length' --models S1.safetensors S2.safetensors --ratios 1 1 --lbws "$L17" "$L26" --save_to e.safetensors
fv lbws_number 2 'must be numbers' --models S1.safetensors --ratios 1 --lbws "[\"a\"$(printf ',1%.0s' $(seq 16))]" --save_to e.safetensors
fv lbws_count 2 '1 lists for 2 --models' --models S1.safetensors S2.safetensors --ratios 1 1 --lbws "$L17" --save_to e.safetensors
fm lbws_merge_sd1 2 'merge_lora.py' --models S1.safetensors S2.safetensors --ratios 1 1 --lbws "$L17" "$L17" --save_to e.safetensors
fm lbws_merge_into_sd1 2 'merge_lora.py' --model_config "$root/examples/tiny_model.toml" --sd_model sd1.safetensors --models S1.safetensors --ratios 1 --lbws "$L17" --save_to e.safetensors
exit 0
