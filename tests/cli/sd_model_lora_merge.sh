#!/usr/bin/env bash
# sd-model merge without --sd_model (networks/merge_lora.py / sdxl_merge_lora.py merge_lora_models, --concat,
# --shuffle) and sd-model svd-merge (networks/svd_merge_lora.py) on small LoRA files written by a numpy
# generator under real kohya module names (SD1: lora_te_*, Diffusers UNet names, a 1x1-conv proj_in and a
# 3x3 conv; SDXL: lora_te1_/lora_te2_, SGM UNet names). Checked against independent numpy computations of
# the reference's formulas (Debian's /usr/bin/python3):
#   - plain merge: down = sum s_i down_i, up = sum |s_i| up_i with s_i = sqrt(alpha_i/base_alpha) * ratio_i
#     (base = the first file holding the module), alpha = base_alpha; so the merged dW is
#     base/rank * (sum |s_i| up_i)(sum s_i down_i), not sum ratio_i dW_i; modules in one file only;
#   - concat: the scaled factors concatenated, so dW = sum ratio_i |ratio_i| alpha_i / sum(rank) up_i down_i;
#   - shuffle: the same dW, the rank rows permuted; --seed repeats the bytes;
#   - svd-merge: dW = sum ratio_i alpha_i/rank_i up_i down_i, numpy SVD at min(new_rank, in, out) (3x3
#     convs: new_conv_rank), quantile-0.99 clamp, compared factor by factor after aligning each singular
#     pair's sign with the file's, alpha = rank as int64;
#   - metadata (ss_network_dim/alpha, "Dynamic", ss_v2 / ss_base_model_version from the first file with
#     them, ss_network_args, sshs_model_hash = SHA-256 of the data, modelspec title / merged_from /
#     architecture), --save_precision / --precision dtypes, --threads 1 and 2 give the same bytes;
#   - bad input: one line, exit 1 or 2, no file.
# And sd-model merge-models (tools/merge_models.py): the weighted key-by-key average of small checkpoints against
# numpy (old text-encoder names, missing and extra keys, --unet_only, precisions).
. "$(dirname "$0")/lib.sh"
t_init sd_model_lora_merge lora_merge
B="$root/$build/bin/sd-model"
PY=/usr/bin/python3
t_need "$B"
cd "$tmp"
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0
if ! $PY -c 'import numpy' 2> /dev/null; then
  echo "ok lora_merge_numpy # SKIP $PY has no numpy"; exit 0
fi

# gen.py OUT SEED RANK ALPHA SET(sd|xl) [--drop M] [--extra] [--noalpha M] [--wide M] [--meta k=v] [--dtype F16]
cat > gen.py <<'PY'
import json, struct, sys
import numpy as np
out, seed, rank, alpha, kset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rest = sys.argv[6:]
drop, noalpha, meta, extra, dtype, wide = set(), set(), {}, False, 'F32', set()
i = 0
while i < len(rest):
    a = rest[i]
    if a == '--drop': drop.add(rest[i + 1]); i += 2
    elif a == '--noalpha': noalpha.add(rest[i + 1]); i += 2
    elif a == '--wide': wide.add(rest[i + 1]); i += 2
    elif a == '--meta': k, v = rest[i + 1].split('=', 1); meta[k] = v; i += 2
    elif a == '--dtype': dtype = rest[i + 1]; i += 2
    elif a == '--extra': extra = True; i += 1
    else: sys.exit('bad arg ' + a)
SD = {'lora_te_text_model_encoder_layers_0_self_attn_q_proj': (16, 16, 0),
      'lora_te_text_model_encoder_layers_0_mlp_fc1': (24, 16, 0),
      'lora_unet_down_blocks_0_attentions_0_proj_in': (8, 8, 1),
      'lora_unet_down_blocks_0_resnets_0_conv1': (8, 6, 3),
      'lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k': (8, 12, 0)}
XL = {'lora_te1_text_model_encoder_layers_0_self_attn_q_proj': (16, 16, 0),
      'lora_te2_text_model_encoder_layers_0_self_attn_k_proj': (20, 20, 0),
      'lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q': (12, 12, 0),
      'lora_unet_input_blocks_4_1_proj_in': (12, 12, 0),
      'lora_unet_output_blocks_0_0_in_layers_2': (10, 8, 3)}
mods = dict(SD if kset == 'sd' else XL)
if extra:
    if kset == 'sd': mods['lora_unet_mid_block_attentions_0_proj_out'] = (8, 8, 1)
    else: mods['lora_unet_middle_block_1_proj_out'] = (12, 12, 0)
for m in drop: mods.pop(m)
rng = np.random.default_rng(seed)
tensors = {}
for m, (o, n, k) in mods.items():
    if m in wide: n += 2
    if k: d = rng.standard_normal((rank, n, k, k)) * 0.3; u = rng.standard_normal((o, rank, 1, 1)) * 0.2
    else: d = rng.standard_normal((rank, n)) * 0.3; u = rng.standard_normal((o, rank)) * 0.2
    tensors[m + '.lora_down.weight'] = d; tensors[m + '.lora_up.weight'] = u
    # the mlp module gets half the alpha (so ss_network_alpha can be "Dynamic")
    if m not in noalpha: tensors[m + '.alpha'] = np.array(alpha / 2 if m.endswith('mlp_fc1') else alpha)
npd = {'F32': np.float32, 'F16': np.float16}[dtype]
hdr = {'__metadata__': meta} if meta else {}
blob = b''
for k in sorted(tensors):
    b = tensors[k].astype(npd).tobytes()
    hdr[k] = {'dtype': dtype, 'shape': list(tensors[k].shape), 'data_offsets': [len(blob), len(blob) + len(b)]}
    blob += b
h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
open(out, 'wb').write(struct.pack('<Q', len(h)) + h + blob)
PY

# check.py MODE OUT FILE RATIO [FILE RATIO...] [-- KEY VALUE...]; MODE sum | concat | svd:RANK:CONV | same:OTHER
cat > check.py <<'PY'
import hashlib, json, os, struct, sys
import numpy as np
sys.path.insert(0, os.environ['ST_LOAD_DIR']); import st_load
args = sys.argv[1:]
meta_want = []
if '--' in args: i = args.index('--'); meta_want = args[i + 1:]; args = args[:i]
mode, out = args[0], args[1]
files, ratios = args[2::2], [float(x) for x in args[3::2]]
def load(p):
    h, m, d = st_load.read(p)
    return h, m, lambda k: st_load.array(h, d, k).astype(np.float64), d
oh, om, og, odata = load(out)
srcs = [load(f) for f in files]
mods = sorted({k[:-17] for s in srcs for k in s[0] if k.endswith('.lora_down.weight')})
got = sorted(k[:-17] for k in oh if k.endswith('.lora_down.weight'))
if got != mods: sys.exit('modules %s, want %s' % (got, mods))
worst = 0
def rel(a, b): return np.abs(a - b).max() / (np.abs(b).max() + 1e-12)
def mat(x): return x.reshape(x.shape[0], -1)
for m in mods:
    have = [(s, r) for s, r in zip(srcs, ratios) if m + '.lora_down.weight' in s[0]]
    ups = [mat(s[2](m + '.lora_up.weight')) for s, r in have]
    downs = [mat(s[2](m + '.lora_down.weight')) for s, r in have]
    alphas = [float(s[2](m + '.alpha')) if m + '.alpha' in s[0] else d.shape[0] for (s, r), d in zip(have, downs)]
    rs = [r for s, r in have]
    U = mat(og(m + '.lora_up.weight')); D = mat(og(m + '.lora_down.weight')); A = float(og(m + '.alpha'))
    if og(m + '.lora_down.weight').shape[1:] != have[0][0][2](m + '.lora_down.weight').shape[1:]:
        sys.exit(m + ': down shape')
    if mode in ('sum', 'concat'):
        base = alphas[0]
        sc = [np.sqrt(a / base) * r for a, r in zip(alphas, rs)]
        if mode == 'sum':
            wd = sum(s * d for s, d in zip(sc, downs)); wu = sum(abs(s) * u for s, u in zip(sc, ups))
        else:
            wd = np.concatenate([s * d for s, d in zip(sc, downs)], 0)
            wu = np.concatenate([abs(s) * u for s, u in zip(sc, ups)], 1)
        if D.shape != wd.shape or U.shape != wu.shape: sys.exit('%s: shapes %s %s, want %s %s' % (m, D.shape, U.shape, wd.shape, wu.shape))
        if A != base: sys.exit('%s: alpha %r, want %r' % (m, A, base))
        worst = max(worst, rel(D, wd), rel(U, wu))
        # the merged product, as the module applies it
        dW = A / D.shape[0] * U @ D
        if mode == 'concat':
            want = sum(r * abs(r) * a / D.shape[0] * u @ d for r, a, u, d in zip(rs, alphas, ups, downs))
        else:
            want = base / D.shape[0] * wu @ wd
        worst = max(worst, rel(dW, want))
    elif mode.startswith('same:'):
        oh2, om2, og2, _ = load(mode[5:])
        U2 = mat(og2(m + '.lora_up.weight')); D2 = mat(og2(m + '.lora_down.weight'))
        worst = max(worst, rel(A / D.shape[0] * U @ D, float(og2(m + '.alpha')) / D2.shape[0] * U2 @ D2))
        if sorted(map(tuple, D.round(6))) != sorted(map(tuple, D2.round(6))): sys.exit(m + ': rows are not a permutation')
    else:
        nr, ncr = int(mode.split(':')[1]), int(mode.split(':')[2])
        W = sum(r * a / d.shape[0] * u @ d for r, a, u, d in zip(rs, alphas, ups, downs))
        d4 = have[0][0][2](m + '.lora_down.weight')
        k = ncr if d4.ndim == 4 and d4.shape[2:] != (1, 1) else nr
        k = min(k, d4.shape[1], ups[0].shape[0])
        if D.shape[0] != k or U.shape[1] != k or A != k: sys.exit('%s: rank %d alpha %r, want %d' % (m, D.shape[0], A, k))
        if oh[m + '.alpha']['dtype'] != 'I64': sys.exit(m + ': alpha is not int64')
        if __import__('os').environ.get('SHAPES_ONLY'): continue
        Us, S, Vh = np.linalg.svd(W, full_matrices=False)
        Us = Us[:, :k] * S[:k]; Vh = Vh[:k]
        sg = np.sign(np.sum(Us * U, 0)); sg[sg == 0] = 1
        Us = Us * sg; Vh = Vh * sg[:, None]
        hi = np.quantile(np.concatenate([Us.ravel(), Vh.ravel()]), 0.99)
        Us = np.clip(Us, -hi, hi); Vh = np.clip(Vh, -hi, hi)
        worst = max(worst, rel(U, Us), rel(D, Vh))
print(len(mods), worst)
tol = float(__import__('os').environ.get('TOL', '1e-5'))
if worst > tol: sys.exit('relative error %g > %g' % (worst, tol))
for key, val in zip(meta_want[::2], meta_want[1::2]):
    if val == '-':
        if key in om: sys.exit('metadata %s present' % key)
    elif om.get(key) != val: sys.exit('metadata %s = %r, want %r' % (key, om.get(key), val))
if om.get('sshs_model_hash') != hashlib.sha256(odata).hexdigest(): sys.exit('sshs_model_hash is not the data hash')
PY

$PY gen.py A.safetensors 1 4 2 sd --meta ss_base_model_version=sd_v1 &&
  $PY gen.py B.safetensors 2 4 4 sd --drop lora_te_text_model_encoder_layers_0_self_attn_q_proj --extra \
    --meta modelspec.title=Btitle --meta ss_v2=False --meta ss_base_model_version=sd_v2 &&
  $PY gen.py C.safetensors 3 8 8 sd --noalpha lora_unet_down_blocks_0_resnets_0_conv1 &&
  $PY gen.py D.safetensors 4 4 2 sd --dtype F16 &&
  $PY gen.py W.safetensors 5 4 2 sd --wide lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k &&
  $PY gen.py X1.safetensors 6 4 4 xl --meta ss_base_model_version=sdxl_base_v1-0 --meta ss_v2=False &&
  $PY gen.py X2.safetensors 7 4 1 xl --drop lora_te2_text_model_encoder_layers_0_self_attn_k_proj --extra \
    --noalpha lora_unet_input_blocks_4_1_proj_in && $PY gen.py X3.safetensors 8 6 3 xl ||
  { nok lora_merge_gen; exit 1; }
M() { "$B" merge --threads 1 "$@"; }
V() { "$B" svd-merge --threads 1 "$@"; }
chk() { local name=$1; shift; local py=check.py; case ${1:-} in *.py) py=$1; shift;; esac
  $PY "$py" "$@" > c.out 2>&1 && ok "$name" || nok "$name" "$(tail -1 c.out)"; }

# plain merge: a module only in A (te q_proj), one only in B (mid_block proj_out), different alphas
M --models A.safetensors B.safetensors --ratios 0.7 -0.5 --save_to m.safetensors 2> m.err ||
  nok lora_merge_sum "$(tail -1 m.err)"
[ -f m.safetensors ] && chk lora_merge_sum sum m.safetensors A.safetensors 0.7 B.safetensors -0.5 -- \
  ss_network_module networks.lora ss_network_dim 4 ss_network_alpha Dynamic ss_v2 False \
  ss_base_model_version sd_v1 modelspec.title m modelspec.merged_from 'A, Btitle' \
  modelspec.architecture stable-diffusion-v1/lora ss_network_args -
grep -q '"F32"' m.safetensors && ! grep -q '"F16"' m.safetensors && ok lora_merge_f32 || nok lora_merge_f32
# equal alphas: "4.0"; --no_metadata: no modelspec keys; --save_precision fp16
M --models A.safetensors --ratios 1 --save_to one.safetensors --no_metadata --save_precision fp16 2> one.err &&
  TOL=1e-3 chk lora_merge_one_file_fp16 sum one.safetensors A.safetensors 1 -- ss_network_dim 4 \
    ss_network_alpha Dynamic modelspec.title - &&
  grep -q '"F16"' one.safetensors && ! grep -q '"F32"' one.safetensors && ok lora_merge_save_fp16 ||
  nok lora_merge_save_fp16 "$(tail -1 one.err)"
M --models X1.safetensors X1.safetensors --ratios 1 1 --save_to xx.safetensors 2> xx.err &&
  chk lora_merge_same_alpha sum xx.safetensors X1.safetensors 1 X1.safetensors 1 -- ss_network_alpha 4.0 \
    modelspec.merged_from 'X1, X1' || nok lora_merge_same_alpha "$(tail -1 xx.err)"
# --precision fp16: stored as F16 (the save dtype follows), within fp16 rounding; an F16 input
M --models A.safetensors D.safetensors --ratios 0.6 0.6 --precision fp16 --save_to h.safetensors 2> h.err &&
  grep -q '"F16"' h.safetensors && ! grep -q '"F32"' h.safetensors &&
  TOL=3e-3 chk lora_merge_precision_fp16 sum h.safetensors A.safetensors 0.6 D.safetensors 0.6 ||
  nok lora_merge_precision_fp16 "$(tail -1 h.err)"

# concat: ranks 4 + 8, a module without alpha in C (its alpha comes from A)
M --models A.safetensors C.safetensors --ratios 0.7 -0.5 --concat --save_to c.safetensors 2> c.err ||
  nok lora_merge_concat "$(tail -1 c.err)"
[ -f c.safetensors ] && chk lora_merge_concat concat c.safetensors A.safetensors 0.7 C.safetensors -0.5 -- \
  ss_network_dim 4 ss_network_alpha Dynamic modelspec.merged_from 'A, C'
grep -q '"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight":{"dtype":"F32","shape":\[12,6,3,3\]' c.safetensors &&
  ok lora_merge_concat_rank || nok lora_merge_concat_rank
M --models C.safetensors A.safetensors B.safetensors --ratios 1 0.5 2 --concat --save_to c3.safetensors 2> c3.err &&
  chk lora_merge_concat3 concat c3.safetensors C.safetensors 1 A.safetensors 0.5 B.safetensors 2 -- ss_network_dim Dynamic ||
  nok lora_merge_concat3 "$(tail -1 c3.err)"

# shuffle: same product, permuted rows, --seed repeats, another seed differs
M --models A.safetensors C.safetensors --ratios 0.7 -0.5 --concat --shuffle --seed 7 --save_to sh.safetensors 2> sh.err &&
  chk lora_merge_shuffle same:c.safetensors sh.safetensors A.safetensors 0.7 C.safetensors -0.5 &&
  ! cmp -s sh.safetensors c.safetensors || nok lora_merge_shuffle_differs "$(tail -1 sh.err)"
mkdir -p again
M --models A.safetensors C.safetensors --ratios 0.7 -0.5 --concat --shuffle --seed 7 --save_to again/sh.safetensors \
  2> /dev/null && cmp -s sh.safetensors again/sh.safetensors && ok lora_merge_shuffle_seed || nok lora_merge_shuffle_seed
M --models A.safetensors C.safetensors --ratios 0.7 -0.5 --concat --shuffle --seed 8 --save_to sh3.safetensors 2> /dev/null &&
  ! cmp -s sh.safetensors sh3.safetensors && ok lora_merge_shuffle_other_seed || nok lora_merge_shuffle_other_seed
M --models A.safetensors B.safetensors --ratios 0.7 -0.5 --shuffle --save_to sh4.safetensors 2> sh4.err &&
  grep -q 'seed [0-9]' sh4.err && chk lora_merge_shuffle_random_seed same:m.safetensors sh4.safetensors A.safetensors 0.7 \
  B.safetensors -0.5 || nok lora_merge_shuffle_random_seed "$(tail -1 sh4.err)"

# SDXL: lora_te1/te2 and SGM names; a module without alpha stored as int64 (sdxl_merge_lora.py)
M --models X2.safetensors X1.safetensors --ratios 1 0.5 --save_to x.safetensors 2> x.err &&
  chk lora_merge_sdxl sum x.safetensors X2.safetensors 1 X1.safetensors 0.5 -- ss_v2 False \
    ss_base_model_version sdxl_base_v1-0 modelspec.architecture stable-diffusion-xl-v1-base/lora &&
  grep -q '"lora_unet_input_blocks_4_1_proj_in.alpha":{"dtype":"I64"' x.safetensors && ok lora_merge_sdxl_int_alpha ||
  nok lora_merge_sdxl_int_alpha "$(tail -1 x.err)"

# svd-merge: three files, ranks 4/4/8, modules missing in some, 3x3 conv at --new_conv_rank
V --models A.safetensors B.safetensors C.safetensors --ratios 0.7 -0.5 1 --new_rank 3 --new_conv_rank 2 \
  --save_to s.safetensors 2> s.err || nok lora_svd_merge "$(tail -1 s.err)"
[ -f s.safetensors ] && TOL=1e-4 chk lora_svd_merge svd:3:2 s.safetensors A.safetensors 0.7 B.safetensors -0.5 \
  C.safetensors 1 -- ss_network_dim 3 ss_network_alpha 3 ss_network_args '{"conv_dim": 2, "conv_alpha": 2}' \
  ss_base_model_version sd_v1 ss_v2 False modelspec.merged_from 'A, Btitle, C'
"$B" svd_merge --threads 2 --models A.safetensors B.safetensors C.safetensors --ratios 0.7 -0.5 1 --new_rank 3 \
  --new_conv_rank 2 --save_to again/s.safetensors 2> /dev/null && cmp -s s.safetensors again/s.safetensors &&
  ok lora_svd_merge_threads || nok lora_svd_merge_threads
# SDXL, default conv rank = new_rank, fp16 output, --device: a no-effect line
V --models X1.safetensors X3.safetensors X2.safetensors --ratios 1 1 -1 --new_rank 4 --save_precision fp16 \
  --device cuda --save_to sx.safetensors 2> sx.err &&
  TOL=2e-3 chk lora_svd_merge_sdxl svd:4:4 sx.safetensors X1.safetensors 1 X3.safetensors 1 X2.safetensors -1 -- \
    ss_network_dim 4 modelspec.architecture stable-diffusion-xl-v1-base/lora &&
  grep -q '"F16"' sx.safetensors && ! grep -q '"F32"' sx.safetensors && grep -q -- '--device: no effect' sx.err &&
  ok lora_svd_merge_fp16_device || nok lora_svd_merge_fp16_device "$(tail -1 sx.err)"

# the rank capped by the layer: min(new_rank, in, out) (shapes only: the trailing singular vectors of a
# rank-deficient sum are arbitrary)
V --models X1.safetensors X3.safetensors --ratios 1 1 --new_rank 16 --save_to cap.safetensors 2> cap.err &&
  SHAPES_ONLY=1 chk lora_svd_merge_rank_cap svd:16:16 cap.safetensors X1.safetensors 1 X3.safetensors 1 ||
  nok lora_svd_merge_rank_cap "$(tail -1 cap.err)"

# bad input (fail NAME CODE PATTERN ARGS..., output e.safetensors)
fm() { expect_fail M "$@"; }
fv() { expect_fail V "$@"; }
head -c 100 A.safetensors > bad.safetensors
printf 'not a lora' > junk.txt
fm lora_merge_rank_mismatch 1 'merge only with --concat' --models A.safetensors C.safetensors --ratios 1 1 --save_to e.safetensors
fm lora_merge_families 1 'different model families' --models A.safetensors X1.safetensors --ratios 1 1 --save_to e.safetensors
fv lora_svd_merge_families 1 'different model families' --models X1.safetensors A.safetensors --ratios 1 1 --save_to e.safetensors
fm lora_merge_shape 1 'W.safetensors: lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k: down \[4,14\]' \
  --models A.safetensors W.safetensors --ratios 1 1 --concat --save_to e.safetensors
fv lora_svd_merge_shape 1 'cannot be merged' --models A.safetensors W.safetensors --ratios 1 1 --save_to e.safetensors
fm lora_merge_ratios 2 '1 values for 2 --models' --models A.safetensors B.safetensors --ratios 1 --save_to e.safetensors
fv lora_svd_merge_ratios 2 '3 values for 2 --models' --models A.safetensors B.safetensors --ratios 1 1 1 --save_to e.safetensors
fm lora_merge_missing 1 'nosuch.safetensors' --models A.safetensors nosuch.safetensors --ratios 1 1 --save_to e.safetensors
fm lora_merge_corrupt 1 'bad.safetensors' --models bad.safetensors --ratios 1 --save_to e.safetensors
$PY -c "
import json, struct
h = json.dumps({'model.diffusion_model.out.2.weight': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}}).encode()
h += b' ' * (-len(h) % 8); open('NL.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + bytes(8))"
fv lora_svd_merge_not_lora 1 'NL.safetensors: tensor .model.diffusion_model.out.2.weight. is not a LoRA key' \
  --models A.safetensors NL.safetensors --ratios 1 1 --save_to e.safetensors
fm lora_merge_no_models 2 'name at least one LoRA' --ratios 1 --save_to e.safetensors
fm lora_merge_ckpt 2 'only .safetensors output' --models A.safetensors --ratios 1 --save_to e.ckpt
fm lora_merge_seed_alone 2 'seed goes with --shuffle' --models A.safetensors --ratios 1 --seed 3 --save_to e.safetensors
fv lora_svd_merge_concat 2 'merge options' --models A.safetensors --ratios 1 --concat --save_to e.safetensors
fv lora_svd_merge_no_save_to 2 'save_to OUT.safetensors is required' --models A.safetensors --ratios 1
fv lora_svd_merge_bad_rank 2 'new_rank' --models A.safetensors --ratios 1 --new_rank 0 --save_to e.safetensors
fv lora_svd_merge_sd_model 2 'no --sd_model' --sd_model A.safetensors --models A.safetensors --ratios 1 --save_to e.safetensors
# ---- merge-models (tools/merge_models.py): checkpoints averaged key by key ----------------------------------
# genm.py OUT SEED [--oldte] [--drop KEY] [--shape KEY] [--extra]: a small checkpoint (UNet F32/F16 keys, VAE,
# text encoder with an int64 position_ids; --oldte: the old text-encoder names without "text_model.")
cat > genm.py <<'PY'
import json, struct, sys
import numpy as np
out, seed = sys.argv[1], int(sys.argv[2]); rest = sys.argv[3:]
rng = np.random.default_rng(seed)
keys = {'model.diffusion_model.input_blocks.0.0.weight': ((4, 3, 3, 3), 'F32'),
        'model.diffusion_model.out.2.bias': ((4,), 'F16'),
        'model.diffusion_model.time_embed.0.weight': ((8, 4), 'F32'),
        'first_stage_model.decoder.conv_in.weight': ((4, 2, 1, 1), 'F32'),
        'cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight': ((6, 4), 'F32'),
        'cond_stage_model.transformer.text_model.embeddings.position_ids': ((1, 5), 'I64')}
if '--oldte' in rest: keys = {k.replace('transformer.text_model.', 'transformer.'): v for k, v in keys.items()}
if '--extra' in rest: keys['model.diffusion_model.extra.weight'] = ((3,), 'F32')
i = 0
while i < len(rest):
    if rest[i] == '--drop': keys.pop(rest[i + 1]); i += 2
    elif rest[i] == '--shape': keys[rest[i + 1]] = ((5,), keys[rest[i + 1]][1]); i += 2
    else: i += 1
hdr, blob = {}, b''
for k in sorted(keys):
    shp, dt = keys[k]
    if dt == 'I64': a = np.arange(int(np.prod(shp))).reshape(shp).astype(np.int64)
    else: a = rng.standard_normal(shp).astype({'F32': np.float32, 'F16': np.float16}[dt])
    b = a.tobytes(); hdr[k] = {'dtype': dt, 'shape': list(shp), 'data_offsets': [len(blob), len(blob) + len(b)]}; blob += b
h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
open(out, 'wb').write(struct.pack('<Q', len(h)) + h + blob)
PY
# mcheck.py OUT DTYPE UNET_ONLY FILE RATIO...: out[k] = sum r_i v_i over the models holding k (renamed) + (sum of
# the missing ones' ratios) * v_0 (UNET_ONLY 1: non-UNet keys = v_0), stored as DTYPE
cat > mcheck.py <<'PY'
import os, sys
import numpy as np
sys.path.insert(0, os.environ['ST_LOAD_DIR']); import st_load
out, dtype, unet_only = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
files, ratios = sys.argv[4::2], [float(x) for x in sys.argv[5::2]]
def load(p):
    h, _, d = st_load.read(p); r = {}
    for k, t in h.items():
        v = st_load.array(h, d, k)
        r[k.replace('cond_stage_model.transformer.encoder.', 'cond_stage_model.transformer.text_model.encoder.')
           .replace('cond_stage_model.transformer.embeddings.', 'cond_stage_model.transformer.text_model.embeddings.')] = \
            (v.astype(np.float64), t['dtype'])
    return r
o = load(out); ms = [load(f) for f in files]
if set(o) != set(ms[0]): sys.exit('keys %s' % sorted(set(o) ^ set(ms[0])))
worst = 0
for k, (v, dt) in o.items():
    if dt != dtype: sys.exit('%s: dtype %s' % (k, dt))
    first = ms[0][k][0]
    if unet_only and any(s in k for s in ('first_stage_model', 'cond_stage_model', 'conditioner.')): want = first
    else: want = sum(r * (m[k][0] if k in m else first) for m, r in zip(ms, ratios))
    worst = max(worst, np.abs(v - want).max() / (np.abs(want).max() + 1e-12))
print(len(o), worst)
tol = float(__import__('os').environ.get('TOL', '1e-6'))
if worst > tol: sys.exit('relative error %g > %g' % (worst, tol))
PY
$PY genm.py M1.safetensors 1 && $PY genm.py M2.safetensors 2 --oldte &&
  $PY genm.py M3.safetensors 3 --drop model.diffusion_model.time_embed.0.weight --extra &&
  $PY genm.py M4.safetensors 4 --shape model.diffusion_model.out.2.bias || nok merge_models_gen
MM() { "$B" merge-models --threads 1 "$@"; }
# three models, old text-encoder names in one, a key missing in one (its ratio goes to the first model's value),
# a key only in a later model (skipped, --show_skipped says so); the output name gains .safetensors
MM --models M1.safetensors M2.safetensors M3.safetensors --ratios 0.5 0.3 0.2 -o mm --show_skipped 2> mm.err &&
  chk merge_models_average mcheck.py mm.safetensors F32 0 M1.safetensors 0.5 M2.safetensors 0.3 M3.safetensors 0.2 &&
  grep -q 'skip: model.diffusion_model.extra.weight' mm.err && grep -q 'time_embed.0.weight missing' mm.err &&
  ok merge_models_messages || nok merge_models_messages "$(tail -1 mm.err)"
# default ratios 1/n; --unet_only; --precision fp16 with --saving_precision bf16; merge_models spelling
"$B" merge_models --models M1.safetensors M3.safetensors --output mu.safetensors --unet_only --precision fp16 \
  --saving_precision bf16 2> mu.err &&
  TOL=8e-3 chk merge_models_unet_only_bf16 mcheck.py mu.safetensors BF16 1 M1.safetensors 0.5 M3.safetensors 0.5 ||
  nok merge_models_unet_only_bf16 "$(tail -1 mu.err)"
MM --models M1.safetensors M3.safetensors -o md.safetensors --save_precision fp16 2> md.err &&
  TOL=1e-3 chk merge_models_default_ratios mcheck.py md.safetensors F16 0 M1.safetensors 0.5 M3.safetensors 0.5 ||
  nok merge_models_default_ratios "$(tail -1 md.err)"
fmm() { expect_fail MM "$@"; }
fmm merge_models_shape 1 "M4.safetensors: tensor 'model.diffusion_model.out.2.bias' has shape \[5\]" \
  --models M1.safetensors M4.safetensors -o e.safetensors
fmm merge_models_ratios 2 '1 values for 2 --models' --models M1.safetensors M3.safetensors --ratios 1 -o e.safetensors
fmm merge_models_not_safetensors 1 'x.ckpt: not a .safetensors file' --models M1.safetensors x.ckpt -o e.safetensors
fmm merge_models_missing 1 'nosuch.safetensors' --models M1.safetensors nosuch.safetensors -o e.safetensors
fmm merge_models_no_output 2 'output OUT.safetensors is required' --models M1.safetensors M3.safetensors
fmm merge_models_precisions 2 'disagree' --models M1.safetensors -o e.safetensors --saving_precision fp16 --save_precision bf16
"$B" --help > help.out 2>&1 && grep -q 'svd-merge' help.out && grep -q -- '--concat' help.out &&
  grep -q -- '--shuffle' help.out && grep -q -- '--seed' help.out && grep -q 'merge-models' help.out &&
  grep -q -- '--unet_only' help.out && ok lora_merge_help || nok lora_merge_help
exit 0
