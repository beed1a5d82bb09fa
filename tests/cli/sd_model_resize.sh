#!/usr/bin/env bash
# sd-model resize (networks/resize_lora.py): a rank-8 LoRA trained by sd-train on the tiny SD1 model of
# examples/tiny_model.c (linear, 1x1 and 3x3 conv modules, conv_dim) reduced by SVD. Checked against an
# independent numpy computation (Debian's /usr/bin/python3): rank 4 gives the best rank-4 approximation of
# up.down*alpha/rank with alpha = alpha/rank*4; rank 8 keeps the product; --new_conv_rank gives the 4-d
# modules their own rank; sv_ratio picks count(S > S[0]/param) per module, capped by --new_rank; the
# metadata as the reference sets it; sd-sample runs with the result; bad inputs: one line, exit 1 or 2,
# no file.
. "$(dirname "$0")/lib.sh"
t_init sd_model_resize resize
B="$root/$build/bin/sd-model" TR="$root/$build/bin/sd-train" SS="$root/$build/bin/sd-sample"
PY=/usr/bin/python3
t_need "$B" "$TR" "$SS"
t_tiny_build
cd "$tmp"
export SOURCE_DATE_EPOCH=1700000000 SD_PROGRESS=0 SD_ROOT="${SD_ROOT:-$root}" SD_SHARE="${SD_SHARE:-$root/share/sd}"
C1="$root/examples/tiny_model.toml"
./tiny_model model tiny.safetensors "$C1" > /dev/null && ./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl ||
  { nok resize_tiny_model; exit 1; }
"$TR" --method lora --data recs.jsonl --learning_rate 5e-2 --network_dim 8 --network_alpha 4 --threads 1 \
  --max_train_steps 3 --output_dir a --model tiny.safetensors --model_config "$C1" --seed 3 --output_name A \
  --network_args conv_dim=8 conv_alpha=2 2> a.err || { nok resize_lora "$(tail -2 a.err)"; exit 1; }
R() { "$B" resize --threads 1 "$@"; }

if ! $PY -c 'import numpy' 2> /dev/null; then
  echo "ok resize_numpy # SKIP $PY has no numpy"; HAVE_NP=0
else HAVE_NP=1; fi

# check.py ORIG OUT MODE [PARAM]: MODE rank:N:CONV (fixed ranks), ratio:P:CAP (sv_ratio)
cat > check.py <<'PY'
import os, sys; sys.path.insert(0, os.environ['ST_LOAD_DIR'])
import numpy as np
from st_load import load
oh, om, og = load(sys.argv[1]); nh, nm, ng = load(sys.argv[2]); mode = sys.argv[3].split(':')
if set(oh) != set(nh): sys.exit('key sets differ')
mods = [k[:-len('.lora_down.weight')] for k in oh if k.endswith('.lora_down.weight')]
worst = 0
for m in mods:
    d0 = og(m + '.lora_down.weight'); u0 = og(m + '.lora_up.weight'); a0 = float(og(m + '.alpha'))
    r0 = d0.shape[0]; W = u0.reshape(u0.shape[0], -1) @ d0.reshape(r0, -1)
    d1 = ng(m + '.lora_down.weight'); u1 = ng(m + '.lora_up.weight'); a1 = float(ng(m + '.alpha'))
    r1 = d1.shape[0]; W1 = u1.reshape(u1.shape[0], -1) @ d1.reshape(r1, -1)
    if d1.shape[1:] != d0.shape[1:] or u1.shape[0] != u0.shape[0] or u1.shape[1] != r1: sys.exit(m + ': shapes')
    S = np.linalg.svd(W, compute_uv=False)
    U, S_, Vh = np.linalg.svd(W)
    if mode[0] == 'rank':
        want = int(mode[2]) if d0.ndim == 4 else int(mode[1])
    else:
        p, cap = float(mode[1]), int(mode[2])
        want = max(1, min(int(np.sum(S > S[0] / p)), len(S)))
        near = np.any(np.abs(S - S[0] / p) <= 1e-4 * S[0])
        if near: want = r1   # too close to the threshold to tell float32 from float64
        want = min(want, cap)
    if S[0] <= 1e-6: want = 1
    if r1 != want: sys.exit('%s: rank %d, want %d (S %s)' % (m, r1, want, S[:10]))
    if abs(a1 - np.float32(np.float32(a0) / np.float32(r0)) * np.float32(r1)) > 1e-6 * max(1, abs(a1)):
        sys.exit('%s: alpha %r' % (m, a1))
    k = r1
    best = (U[:, :k] * S_[:k]) @ Vh[:k] * (a0 / r0)
    got = W1 * (a1 / r1)
    err = np.abs(best - got).max() / (np.abs(W * a0 / r0).max() + 1e-12)
    # where S[k-1] == S[k] the best approximation is not unique: compare the residual norms then
    if err > 1e-4 and not (k < len(S) and abs(S[k - 1] - S[k]) <= 1e-4 * S[0] and
                           abs(np.linalg.norm(W * a0 / r0 - got) - np.linalg.norm(W * a0 / r0 - best)) <= 1e-4 * np.linalg.norm(W * a0 / r0)):
        sys.exit('%s: product differs by %g (relative)' % (m, err))
    worst = max(worst, err)
print(len(mods), worst)
for key, val in zip(sys.argv[4::2], sys.argv[5::2]):
    if nm.get(key) != val: sys.exit('metadata %s = %r, want %r' % (key, nm.get(key), val))
if 'sshs_model_hash' not in nm or 'sshs_legacy_hash' not in nm: sys.exit('no sshs_* hashes')
PY

R --model a/A.safetensors --save_to r4.safetensors --new_rank 4 > r4.out 2> r4.err || nok resize_rank4 "$(tail -1 r4.err)"
if [ -s r4.safetensors ] && [ $HAVE_NP = 1 ]; then
  $PY check.py a/A.safetensors r4.safetensors rank:4:4 ss_network_dim 4 ss_network_alpha 2.0 \
    ss_training_comment 'dimension is resized from 8 to 4; None' > c.out 2>&1 && ok resize_rank4_best_approximation ||
    nok resize_rank4_best_approximation "$(tail -1 c.out)"
fi
R --model a/A.safetensors --save_to r8.safetensors --new_rank 8 > /dev/null 2> r8.err &&
  { [ $HAVE_NP = 0 ] || $PY check.py a/A.safetensors r8.safetensors rank:8:8 ss_network_dim 8 > c.out 2>&1; } &&
  ok resize_same_rank_same_product || nok resize_same_rank_same_product "$(tail -1 r8.err c.out)"
R --model a/A.safetensors --save_to rc.safetensors --new_rank 4 --new_conv_rank 2 --save_precision float > /dev/null 2> rc.err &&
  { [ $HAVE_NP = 0 ] || $PY check.py a/A.safetensors rc.safetensors rank:4:2 \
    ss_training_comment 'dimension is resized from 8 to 4 (conv: 2); None' > c.out 2>&1; } &&
  ok resize_conv_rank || nok resize_conv_rank "$(tail -1 rc.err c.out)"
R --model a/A.safetensors --save_to rd.safetensors --new_rank 6 --dynamic_method sv_ratio --dynamic_param 4 --verbose \
  > rd.out 2> rd.err &&
  { [ $HAVE_NP = 0 ] || $PY check.py a/A.safetensors rd.safetensors ratio:4:6 ss_network_dim Dynamic \
    ss_network_alpha Dynamic ss_training_comment 'Dynamic resize with sv_ratio: 4.0 from 8; None' > c.out 2>&1; } &&
  grep -q 'dynamic | dim: ' rd.out && grep -q '^Average Frobenius norm retention' rd.out &&
  ok resize_dynamic_sv_ratio || nok resize_dynamic_sv_ratio "$(tail -1 rd.err c.out)"
R --model a/A.safetensors --save_to rh.safetensors --new_rank 4 --save_precision fp16 2> rh.err &&
  grep -q '"F16"' rh.safetensors && ! grep -q '"F32"' rh.safetensors && ok resize_fp16 || nok resize_fp16 "$(tail -1 rh.err)"

# sd-sample with the resized LoRA
S() { "$SS" --W 32 --H 32 --steps 2 --sequential_file_name --threads 1 --prompt cat --seed 5 "$@" > s.out 2>&1; }
S --model tiny.safetensors --model_config "$C1" --network_weights r4.safetensors --network_mul 0.7 --outdir s1 &&
  [ -n "$(ls s1)" ] && ok resize_sample || nok resize_sample "$(tail -1 s.out)"

# fail NAME CODE PATTERN ARGS... (output e.safetensors)
fail() { expect_fail R "$@"; }
head -c 100 a/A.safetensors > bad.safetensors
fail resize_missing 1 'nosuch.safetensors' --model nosuch.safetensors --save_to e.safetensors
fail resize_corrupt 1 'bad.safetensors' --model bad.safetensors --save_to e.safetensors
fail resize_not_a_lora 1 'no LoRA modules' --model tiny.safetensors --save_to e.safetensors
fail resize_no_model 2 'model LORA.safetensors is required' --save_to e.safetensors
fail resize_no_save_to 2 'save_to OUT.safetensors is required' --model a/A.safetensors
fail resize_ckpt_output 2 'only .safetensors output' --model a/A.safetensors --save_to e.ckpt
fail resize_dynamic_no_param 2 'needs a non-zero --dynamic_param' --model a/A.safetensors --save_to e.safetensors \
  --dynamic_method sv_fro
fail resize_bad_method 2 'dynamic_method' --model a/A.safetensors --save_to e.safetensors --dynamic_method svd \
  --dynamic_param 1
fail resize_bad_rank 2 'new_rank' --model a/A.safetensors --save_to e.safetensors --new_rank 0
# resize_lora.py's --device / --svd_lowrank_niter: accepted, each with a line saying it does nothing here
R --model a/A.safetensors --save_to dev.safetensors --new_rank 4 --device cuda --svd_lowrank_niter 3 2> dev.err; rc=$?
[ $rc = 0 ] && [ -f dev.safetensors ] && grep -q -- '--device: no effect' dev.err &&
  grep -q -- '--svd_lowrank_niter: no effect' dev.err && ok resize_noop_options || nok resize_noop_options "rc $rc $(cat dev.err)"
"$B" --help > help.out 2>&1 && grep -q 'resize' help.out && grep -q -- '--new_rank' help.out &&
  grep -q -- '--dynamic_method' help.out && ok resize_help || nok resize_help
exit 0
