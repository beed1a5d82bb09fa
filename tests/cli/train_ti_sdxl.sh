#!/usr/bin/env bash
# sd-train --method ti on the tiny SDXL model (examples/tiny_sdxl.toml, random weights), as kohya's
# sdxl_train_textual_inversion.py: the tokens go into both text encoders, the file holds clip_l
# [N, TE1 width] and clip_g [N, TE2 width] (.pt by default, .safetensors with the SDXL
# textual-inversion ModelSpec), --init_word rows per encoder's own table, both encoders' rows train
# (TE1 through the context, TE2 through the context and the pooled vector), --weights continues
# from an SDXL file and refuses an SD1/SD2 one, samples during training; a resumed run gives the same
# bytes (Adafactor too, on both encoders' whole tables, their old rows kept); sd-sample loads the embedding with the SDXL model (the image changes, deterministically) and
# refuses the other family's files with one line naming the file; long captions; --device cuda as on the CPU.
. "$(dirname "$0")/lib.sh"
t_init train_ti_sdxl
bin="$root/$build/bin/sd-train"
ss="$root/$build/bin/sd-sample"
t_need "$bin" "$ss"
t_tiny_build
cd "$tmp"
xcfg="$root/examples/tiny_sdxl.toml"
scfg="$root/examples/tiny_model.toml"
./tiny_model model xl.safetensors "$xcfg" > /dev/null || { nok train_ti_sdxl_tiny_model; exit 1; }
./tiny_model model sd1.safetensors "$scfg" > /dev/null || { nok train_ti_sdxl_tiny_sd1; exit 1; }
./tiny_model latents "$tmp" 4 4 8 8 | sed 's/"caption":"sks, /"caption":"zqtok, /' > recs.jsonl || { nok train_ti_sdxl_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method ti --model xl.safetensors --model_config "$xcfg" --data recs.jsonl --token_string zqtok \
  --learning_rate 5e-2 --seed 3 --threads 1 "$@"; }
# st FILE: "key dtype shape" per tensor of a safetensors file
st() { python3 - "$1" <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
for k, v in sorted(h.items()):
    if k != '__metadata__': print(k, v['dtype'], v['shape'])
print('arch', h.get('__metadata__', {}).get('modelspec.architecture'))
PY
}

# ---- a basic run: clip_l / clip_g, metadata, samples -------------------------------------------------------
printf 'a zqtok, red square --w 64 --h 64 --s 2 --d 5\n' > p.txt
if T --output_dir o1 --max_train_steps 4 --num_vectors_per_token 2 --init_word "red square" --save_model_as safetensors \
     --sample_prompts p.txt --sample_every_n_steps 4 2> o1.err; then ok train_ti_sdxl_runs
else nok train_ti_sdxl_runs "$(tail -3 o1.err)"; fi
k=$(st o1/zqtok.safetensors 2>&1 | tr '\n' ';')
[ "$k" = "clip_g F32 [2, 32];clip_l F32 [2, 32];arch stable-diffusion-xl-v1-base/textual-inversion;" ] &&
  ok train_ti_sdxl_keys || nok train_ti_sdxl_keys "$k"
grep -q 'tokens are added to text encoder 1: zqtok zqtok1 = ids 49408..49409' o1.err &&
grep -q 'tokens are added to text encoder 2: zqtok zqtok1 = ids 49408..49409' o1.err &&
  ok train_ti_sdxl_tokens || nok train_ti_sdxl_tokens "$(grep tokens o1.err)"
ls o1/sample/*000004_00_*_5.png > /dev/null 2>&1 && ok train_ti_sdxl_samples || nok train_ti_sdxl_samples "$(ls o1/sample 2>&1)"

# ---- init word per encoder (lr 0: the rows stay the init word's), training moves both encoders' rows ---------
T --output_dir o0 --max_train_steps 1 --learning_rate 0 --num_vectors_per_token 2 --init_word "red square" \
  --save_model_as safetensors 2> o0.err
python3 - o0/zqtok.safetensors o1/zqtok.safetensors xl.safetensors <<'PY' && ok train_ti_sdxl_init_and_train || nok train_ti_sdxl_init_and_train "$(tail -2 o0.err)"
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    def get(k):
        t = h[k]; s, e = t['data_offsets']; es = {'F32': 4, 'F16': 2}[t['dtype']]
        return struct.unpack('<%d%s' % ((e - s) // es, 'f' if es == 4 else 'e'), b[8 + n + s:8 + n + e])
    return h, get
_, g0 = load(sys.argv[1]); _, g1 = load(sys.argv[2]); mh, gm = load(sys.argv[3])
tabs = {'clip_l': 'conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight',
        'clip_g': 'conditioner.embedders.1.model.token_embedding.weight'}
for key, name in tabs.items():
    assert name in mh, (name, [k for k in mh if 'token_embedding' in k])
    tab = gm(name); W = 32
    init = [tab[i * W:(i + 1) * W] for i in (736, 3999)]   # "red square" -> 736, 3999
    v0 = g0(key); v1 = g1(key)
    for r in range(2):
        assert v0[r * W:(r + 1) * W] == init[r], (key, r)
        d = max(abs(a - b) for a, b in zip(v1[r * W:(r + 1) * W], init[r]))
        assert d > 1e-3, (key, r, d)
PY

# ---- .pt by default (torch.save {"clip_l", "clip_g"}), --weights from SDXL files, SD1 files refused -----------
T --output_dir o2 --max_train_steps 2 2> o2.err && [ -f o2/zqtok.pt ] && ok train_ti_sdxl_pt || nok train_ti_sdxl_pt "$(tail -2 o2.err)"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2> /dev/null; then
  r=$(/usr/bin/python3 -c 'import torch,sys; d=torch.load(sys.argv[1]); print(list(d), [list(t.shape) for t in d.values()])' o2/zqtok.pt 2>&1)
  [ "$r" = "['clip_l', 'clip_g'] [[1, 32], [1, 32]]" ] && ok train_ti_sdxl_torch_load || nok train_ti_sdxl_torch_load "$r"
else echo "ok train_ti_sdxl_torch_load # SKIP no PyTorch"; fi
T --output_dir o3 --max_train_steps 1 --num_vectors_per_token 2 --weights o1/zqtok.safetensors 2> o3.err &&
  grep -q 'weights loaded: o1/zqtok.safetensors' o3.err && ok train_ti_sdxl_weights || nok train_ti_sdxl_weights "$(tail -2 o3.err)"
"$bin" --method ti --model sd1.safetensors --model_config "$scfg" --data recs.jsonl --token_string zqtok --seed 3 \
  --threads 1 --max_train_steps 1 --output_dir s1 --save_model_as safetensors 2> s1.err || nok train_ti_sdxl_sd1_emb "$(tail -2 s1.err)"
T --output_dir o4 --max_train_steps 1 --weights s1/zqtok.safetensors 2> o4.err; rc=$?
[ $rc != 0 ] && [ "$(grep -c . o4.err)" = 1 ] && grep -q 's1/zqtok.safetensors: not an SDXL embedding' o4.err &&
  ok train_ti_sdxl_weights_sd1_refused || nok train_ti_sdxl_weights_sd1_refused "rc $rc $(cat o4.err)"

# ---- resume from a saved state: the same bytes ---------------------------------------------------------------
T --output_dir r0 --max_train_steps 4 --num_vectors_per_token 2 --save_every_n_steps 2 --save_state 2> r0.err
T --output_dir r1 --max_train_steps 4 --num_vectors_per_token 2 --resume r0/zqtok-step00000002-state 2> r1.err
[ -f r0/zqtok.pt ] && cmp -s r0/zqtok.pt r1/zqtok.pt && ok train_ti_sdxl_resume_same_bytes ||
  nok train_ti_sdxl_resume_same_bytes "$(ls r0; tail -2 r1.err)"

# Adafactor: both encoders' whole tables are the parameter (one group); their old rows stay the model's
T --output_dir a0 --max_train_steps 3 --optimizer_type Adafactor --save_model_as safetensors --save_every_n_steps 1 \
  --save_state 2> a0.err
T --output_dir a1 --max_train_steps 3 --optimizer_type Adafactor --save_model_as safetensors \
  --resume a0/zqtok-step00000001-state 2> a1.err
[ -f a0/zqtok.safetensors ] && cmp -s a0/zqtok.safetensors a1/zqtok.safetensors && ok train_ti_sdxl_adafactor_resume_same_bytes ||
  nok train_ti_sdxl_adafactor_resume_same_bytes "$(tail -2 a0.err; tail -2 a1.err)"
if python3 - xl.safetensors a0/zqtok-state/weights.safetensors a0/zqtok.safetensors <<'PY'
import json, struct, sys
def rd(p, key):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); t = h[key]
    s, e = t['data_offsets']; d = b[8 + n + s:8 + n + e]; f = 'e' if t['dtype'] == 'F16' else 'f'
    return t['shape'], struct.unpack('<%d%s' % (len(d) // struct.calcsize(f), f), d)
tabs = {'clip_l': 'conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight',
        'clip_g': 'conditioner.embedders.1.model.token_embedding.weight'}
for name, key in tabs.items():
    ms, m = rd(sys.argv[1], key)
    shape, t = rd(sys.argv[2], name)
    _, v = rd(sys.argv[3], name)
    assert shape == [ms[0] + 1, ms[1]] and t[:len(m)] == m and t[len(m):] == v, (name, shape, ms)
PY
then ok train_ti_sdxl_adafactor_whole_tables; else nok train_ti_sdxl_adafactor_whole_tables; fi

# ---- sd-sample: the SDXL embedding changes the image, deterministically; the other family refused -------------
S() { "$ss" --W 64 --H 64 --steps 3 --seed 7 --sampler euler --sequential_file_name --threads 1 "$@"; }
S --model xl.safetensors --model_config "$xcfg" --prompt "a zqtok cat" --outdir n0 > /dev/null 2> n0.err
S --model xl.safetensors --model_config "$xcfg" --prompt "a zqtok cat" --outdir e0 --textual_inversion_embeddings o1/zqtok.safetensors > /dev/null 2> e0.err
S --model xl.safetensors --model_config "$xcfg" --prompt "a zqtok cat" --outdir e1 --textual_inversion_embeddings o1/zqtok.safetensors > /dev/null 2> e1.err
S --model xl.safetensors --model_config "$xcfg" --prompt "a zqtok cat" --outdir e2 --textual_inversion_embeddings o2/zqtok.pt > /dev/null 2> e2.err
f0=$(ls n0/*.png 2> /dev/null | head -1); f1=$(ls e0/*.png 2> /dev/null | head -1); f2=$(ls e1/*.png 2> /dev/null | head -1)
f3=$(ls e2/*.png 2> /dev/null | head -1)
grep -q "token 'zqtok' = 2 vectors" e0.err && [ -n "$f0" ] && [ -n "$f1" ] && ! cmp -s "$f0" "$f1" &&
  ok sample_ti_sdxl_changes_image || nok sample_ti_sdxl_changes_image "$(tail -2 e0.err)"
[ -n "$f1" ] && [ -n "$f2" ] && cmp -s "$f1" "$f2" && ok sample_ti_sdxl_deterministic || nok sample_ti_sdxl_deterministic
[ -n "$f3" ] && ! cmp -s "$f0" "$f3" && ok sample_ti_sdxl_pt || nok sample_ti_sdxl_pt "$(tail -2 e2.err)"
S --model xl.safetensors --model_config "$xcfg" --prompt "a zqtok cat" --outdir x1 --textual_inversion_embeddings s1/zqtok.safetensors > /dev/null 2> x1.err; rc=$?
[ $rc != 0 ] && [ "$(grep -c . x1.err)" = 1 ] && grep -q 's1/zqtok.safetensors: not an SDXL embedding' x1.err &&
  ok sample_ti_sdxl_sd1_refused || nok sample_ti_sdxl_sd1_refused "rc $rc $(cat x1.err)"
S --model sd1.safetensors --model_config "$scfg" --prompt "a zqtok cat" --outdir x2 --textual_inversion_embeddings o1/zqtok.safetensors > /dev/null 2> x2.err; rc=$?
[ $rc != 0 ] && [ "$(grep -c . x2.err)" = 1 ] && grep -q 'o1/zqtok.safetensors: an SDXL embedding' x2.err &&
  ok sample_ti_sd1_sdxl_refused || nok sample_ti_sd1_sdxl_refused "rc $rc $(cat x2.err)"

# ---- long captions (--max_token_length 150: both encoders chunked, the pooled vector of chunk 0); --device cuda
# (a GPU, or SD_FAKE_CUDA=1 in a build without CUDA): both widened tables on the device, the embedding as on the CPU
# (within fp32 drift: relative 1e-3 per tensor) ----------------------------------------------------------------
L=(--max_train_steps 4 --num_vectors_per_token 2 --init_word "red square" --save_model_as safetensors --max_token_length 150)
T --output_dir lc "${L[@]}" 2> lc.err && [ -f lc/zqtok.safetensors ] && ok train_ti_sdxl_long_captions ||
  nok train_ti_sdxl_long_captions "$(tail -2 lc.err)"
T --output_dir lg --device cuda "${L[@]}" 2> lg.err; rc=$?
if [ $rc = 0 ]; then
  r=$(python3 - lc/zqtok.safetensors lg/zqtok.safetensors <<'PY'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, t in h.items():
        if k != '__metadata__':
            s, e = t['data_offsets']; out[k] = struct.unpack('<%df' % ((e - s) // 4), b[8 + n + s:8 + n + e])
    return out
a, g = load(sys.argv[1]), load(sys.argv[2]); worst = 0
for k in ('clip_l', 'clip_g'):
    m = max(abs(x) for x in a[k]); d = max(abs(x - y) for x, y in zip(a[k], g[k])); worst = max(worst, d / m)
print('%.3g' % worst); sys.exit(0 if worst <= 1e-3 else 1)
PY
) && ok train_ti_sdxl_device_cuda_matches_cpu || nok train_ti_sdxl_device_cuda_matches_cpu "$r"
  echo "# SDXL TI GPU vs CPU: relative $r"
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" lg.err && ok train_ti_sdxl_device_cuda_unavailable ||
    nok train_ti_sdxl_device_cuda_unavailable "rc $rc $(tail -2 lg.err)"
fi
exit 0
