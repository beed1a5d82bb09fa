#!/usr/bin/env bash
# sd-train --method ti end to end on the tiny random model (examples/tiny_model.c): a textual
# inversion run writes <token>.pt (torch.save layout: zip with <stem>/data.pkl, data/0, version)
# by default and .safetensors (emb_params + modelspec .../textual-inversion) on request; the saved
# embedding loads in sd-sample --textual_inversion_embeddings and changes the image of a prompt
# with the token; N > 1 vectors; --init_word rows; templates; --weights continues from .pt and
# .safetensors; step names; sampling during training with the token; the refusals ("tokenizer has
# same word", LoRA options, weighted captions, caption dropout, bad --save_model_as, --device;
# SDXL: train_ti_sdxl.sh); ScheduleFree (resume byte-identical); Adafactor / Prodigy / DAdaptAdam on the whole table (old rows
# kept, --resume byte-identical); kill -9 then --resume gives a byte-identical embedding.
. "$(dirname "$0")/lib.sh"
t_init train_ti
bin="$root/$build/bin/sd-train"
ss="$root/$build/bin/sd-sample"
t_need "$bin"
t_tiny_build
cd "$tmp"
toml="$root/examples/tiny_model.toml"
./tiny_model model tiny.safetensors "$toml" > /dev/null || { nok train_ti_tiny_model; exit 1; }
./tiny_model latents "$tmp" 4 4 8 8 | sed 's/"caption":"sks, /"caption":"zqtok, /' > recs.jsonl || { nok train_ti_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method ti --model tiny.safetensors --model_config "$toml" --data recs.jsonl --token_string zqtok \
  --learning_rate 5e-2 --seed 3 --threads 1 "$@"; }
Tbg() { exec "$bin" --method ti --model tiny.safetensors --model_config "$toml" --data recs.jsonl --token_string zqtok \
  --learning_rate 5e-2 --seed 3 --threads 1 "$@"; }
# emb FILE: shape and first values of the embedding, read with Python's zipfile/pickle-free parsing
emb() { python3 - "$1" <<'PY'
import json, struct, sys, zipfile
p = sys.argv[1]
if p.endswith('.safetensors'):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); t = h['emb_params']
    s, e = t['data_offsets']; d = b[8 + n + s:8 + n + e]; shape = t['shape']
else:
    z = zipfile.ZipFile(p); names = z.namelist(); stem = names[0].split('/')[0]
    assert names == [stem + '/data.pkl', stem + '/data/0', stem + '/version'], names
    pk = z.read(stem + '/data.pkl'); assert b'emb_params' in pk and b'_rebuild_tensor_v2' in pk
    d = z.read(stem + '/data/0'); shape = [len(d) // 128, 32]
v = struct.unpack('<%df' % (len(d) // 4), d)
print(shape, ' '.join('%.6g' % x for x in v[:3]))
PY
}

# ---- a basic run: .pt by default, named after the token ----------------------------------------------------
if T --output_dir o1 --max_train_steps 4 --log_jsonl o1.log 2> o1.err; then ok train_ti_runs; else nok train_ti_runs "$(tail -3 o1.err)"; fi
[ -f o1/zqtok.pt ] && ok train_ti_default_pt_name || nok train_ti_default_pt_name "$(ls o1)"
e1=$(emb o1/zqtok.pt 2>&1)
case "$e1" in "[1, 32] "*) ok train_ti_pt_layout;; *) nok train_ti_pt_layout "$e1";; esac
grep -q 'tokens are added: zqtok = ids 49408..49408' o1.err && ok train_ti_token_ids || nok train_ti_token_ids "$(cat o1.err)"
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2> /dev/null; then
  r=$(/usr/bin/python3 -c 'import torch,sys; d=torch.load(sys.argv[1]); t=d["emb_params"]; print(list(d), t.dtype, list(t.shape))' o1/zqtok.pt 2>&1)
  [ "$r" = "['emb_params'] torch.float32 [1, 32]" ] && ok train_ti_torch_load || nok train_ti_torch_load "$r"
else echo "ok train_ti_torch_load # SKIP no PyTorch"; fi

# ---- safetensors, --init_word, N > 1, the token in sample prompts, step saves ----------------------------
printf 'a zqtok, red square --w 64 --h 64 --s 2 --d 5\n' > p.txt
if T --output_dir o2 --max_train_steps 4 --num_vectors_per_token 3 --init_word "red square" --save_model_as safetensors \
     --output_name e3 --save_every_n_steps 2 --sample_prompts p.txt --sample_every_n_steps 4 2> o2.err; then
  ok train_ti_n3_runs; else nok train_ti_n3_runs "$(tail -3 o2.err)"; fi
e2=$(emb o2/e3.safetensors 2>&1)
case "$e2" in "[3, 32] "*) ok train_ti_n3_shape;; *) nok train_ti_n3_shape "$e2";; esac
grep -q 'zqtok zqtok1 zqtok2 = ids 49408..49410' o2.err && ok train_ti_n3_tokens || nok train_ti_n3_tokens "$(grep tokens o2.err)"
[ -f o2/e3-step00000002.safetensors ] && [ ! -f o2/e3-step00000004.safetensors ] && ok train_ti_step_names ||
  nok train_ti_step_names "$(ls o2)"
a=$(python3 -c 'import json,struct,sys; b=open(sys.argv[1],"rb").read(); n=struct.unpack("<Q",b[:8])[0]; m=json.loads(b[8:8+n])["__metadata__"]; print(m["modelspec.architecture"], "ss_network_module" in m)' o2/e3.safetensors)
[ "$a" = "stable-diffusion-v1/textual-inversion False" ] && ok train_ti_modelspec || nok train_ti_modelspec "$a"
ls o2/sample/e3_000004_00_*_5.png > /dev/null 2>&1 && ok train_ti_samples || nok train_ti_samples "$(ls o2/sample 2>&1)"
# init_word: the rows are the init word's (--learning_rate 0: AdamW leaves them as they are)
T --output_dir o3 --max_train_steps 1 --learning_rate 0 --num_vectors_per_token 3 --init_word "red square" --save_model_as safetensors 2> o3.err
python3 - o3/zqtok.safetensors tiny.safetensors <<'PY' && ok train_ti_init_word || nok train_ti_init_word "$(tail -2 o3.err)"
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return b, n, json.loads(b[8:8 + n])
b, n, h = load(sys.argv[1]); s, e = h['emb_params']['data_offsets']; v = struct.unpack('<96f', b[8 + n + s:8 + n + e])
mb, mn, mh = load(sys.argv[2])
k = [k for k in mh if k.endswith('token_embedding.weight')][0]; t = mh[k]; s0 = t['data_offsets'][0]
fmt, es = {'F32': ('<32f', 4), 'F16': ('<32e', 2)}[t['dtype']]
row = lambda i: struct.unpack(fmt, mb[8 + mn + s0 + i * 32 * es:8 + mn + s0 + (i + 1) * 32 * es])
red, square = row(736), row(3999)   # "red square" -> 736, 3999; rows: red, square, red
assert v[:32] == red and v[32:64] == square and v[64:] == red, 'rows differ'
PY

# ---- the embedding in sd-sample: the token changes the image, as its vectors --------------------------------
S=(--model tiny.safetensors --model_config "$toml" --W 64 --H 64 --steps 2 --seed 9 --sequential_file_name --threads 1)
"$ss" "${S[@]}" --prompt "a photo of e3" --textual_inversion_embeddings o2/e3.safetensors --outdir s1 > /dev/null 2> s1.err
"$ss" "${S[@]}" --prompt "a photo of e3" --outdir s2 > /dev/null 2> s2.err
if [ -f s1/im_000001.png ] && [ -f s2/im_000001.png ] && ! cmp -s s1/im_000001.png s2/im_000001.png &&
   grep -q "token .e3. = 3 vectors" s1.err; then ok train_ti_loads_in_sd_sample; else
  nok train_ti_loads_in_sd_sample "$(tail -2 s1.err)"; fi
# the default .pt output too (the same vectors as a .safetensors save give the same image)
T --output_dir o9 --max_train_steps 2 --save_model_as pt --output_name e9 2> /dev/null
T --output_dir o9 --max_train_steps 2 --save_model_as safetensors --output_name e9 2> /dev/null
# (--no_metadata: the infotext names the file's hash)
"$ss" "${S[@]}" --no_metadata --prompt "a photo of e9" --textual_inversion_embeddings o9/e9.pt --outdir s3 > /dev/null 2> s3.err
"$ss" "${S[@]}" --no_metadata --prompt "a photo of e9" --textual_inversion_embeddings o9/e9.safetensors --outdir s4 > /dev/null 2> s4.err
"$ss" "${S[@]}" --no_metadata --prompt "a photo of e9" --outdir s5 > /dev/null 2> s5.err
if [ -f s3/im_000001.png ] && cmp -s s3/im_000001.png s4/im_000001.png && ! cmp -s s3/im_000001.png s5/im_000001.png
then ok train_ti_pt_loads_in_sd_sample; else nok train_ti_pt_loads_in_sd_sample "$(tail -2 s3.err)"; fi

# ---- TensorBoard: the reference's textual_inversion run logs loss, lr and loss/epoch -------------------------
T --output_dir o10 --max_train_steps 4 --logging_dir tblogs 2> /dev/null
tags=$(python3 "$root/tests/cli/tb_scalars.py" "tblogs/*/textual_inversion/events.out.tfevents.*" | cut -d' ' -f1 | sort -u | tr '\n' ' ')
[ "$tags" = "loss loss/epoch lr " ] && ok train_ti_tensorboard_tags || nok train_ti_tensorboard_tags "tags: '$tags'"

# ---- templates: the captions are ignored (the same run with other captions gives the same bytes) ----------
sed 's/"caption":"[^"]*"/"caption":"something else entirely"/' recs.jsonl > recs2.jsonl
T --output_dir t1 --max_train_steps 3 --use_object_template 2> /dev/null
T --output_dir t2 --max_train_steps 3 --use_object_template --data recs2.jsonl 2> /dev/null
T --output_dir t3 --max_train_steps 3 --use_style_template 2> /dev/null
if [ -f t1/zqtok.pt ] && cmp -s t1/zqtok.pt t2/zqtok.pt && ! cmp -s t1/zqtok.pt t3/zqtok.pt && ! cmp -s t1/zqtok.pt o1/zqtok.pt
then ok train_ti_templates; else nok train_ti_templates; fi

# ---- --weights: continue from .pt and from .safetensors ---------------------------------------------------------
T --output_dir w1 --max_train_steps 2 --weights o1/zqtok.pt --save_model_as safetensors 2> w1.err &&
T --output_dir w2 --max_train_steps 2 --weights o1/zqtok.pt --save_model_as safetensors 2> /dev/null &&
T --output_dir w3 --max_train_steps 1 --learning_rate 0 --weights o1/zqtok.pt --save_model_as pt 2> /dev/null
if grep -q 'weights loaded' w1.err && cmp -s w1/zqtok.safetensors w2/zqtok.safetensors && cmp -s o1/zqtok.pt w3/zqtok.pt
then ok train_ti_weights_pt; else nok train_ti_weights_pt "$(tail -2 w1.err)"; fi
T --output_dir w4 --max_train_steps 1 --learning_rate 0 --weights w1/zqtok.safetensors --save_model_as safetensors 2> /dev/null
[ "$(emb w4/zqtok.safetensors)" = "$(emb w1/zqtok.safetensors)" ] && ok train_ti_weights_safetensors || nok train_ti_weights_safetensors
T --output_dir w5 --max_train_steps 1 --weights o1/zqtok.pt --num_vectors_per_token 2 2> w5.err; rc=$?
[ $rc = 1 ] && grep -q 'num_vectors_per_token is mismatch' w5.err && ok train_ti_weights_count || nok train_ti_weights_count "rc $rc $(cat w5.err)"

# ---- refusals ----------------------------------------------------------------------------------------------------
"$bin" --method ti --model tiny.safetensors --model_config "$toml" --data recs.jsonl 2> r1.err; rc=$?
[ $rc = 2 ] && grep -q 'token_string' r1.err && ok train_ti_needs_token || nok train_ti_needs_token "rc $rc $(cat r1.err)"
T --output_dir r --max_train_steps 1 --token_string cat 2> r2.err; rc=$?
[ $rc = 1 ] && grep -q 'tokenizer has same word' r2.err && ok train_ti_same_word || nok train_ti_same_word "rc $rc $(cat r2.err)"
T --output_dir r --max_train_steps 1 --network_dim 8 2> r3.err; rc=$?
[ $rc = 2 ] && grep -q 'network_dim is a LoRA option' r3.err && ok train_ti_lora_option || nok train_ti_lora_option "rc $rc $(cat r3.err)"
T --output_dir r --max_train_steps 1 --weighted_captions 2> r4.err; rc=$?
[ $rc = 2 ] && grep -q 'weighted_captions' r4.err && ok train_ti_weighted_refused || nok train_ti_weighted_refused "rc $rc $(cat r4.err)"
T --output_dir r --max_train_steps 1 --caption_dropout_rate 0.1 2> r5.err; rc=$?
[ $rc = 2 ] && grep -q 'caption_dropout' r5.err && ok train_ti_dropout_refused || nok train_ti_dropout_refused "rc $rc $(cat r5.err)"
T --output_dir r --max_train_steps 1 --save_model_as diffusers 2> r6.err; rc=$?
[ $rc = 2 ] && grep -q 'save_model_as diffusers' r6.err && ok train_ti_format_refused || nok train_ti_format_refused "rc $rc $(cat r6.err)"
"$bin" --method xti --model tiny.safetensors --data recs.jsonl 2> r7.err; rc=$?
[ $rc = 2 ] && grep -q 'method xti is not supported' r7.err && ok train_ti_xti_refused || nok train_ti_xti_refused "rc $rc $(cat r7.err)"
"$bin" --method lora --model tiny.safetensors --data recs.jsonl --token_string zqtok 2> r8.err; rc=$?
[ $rc = 2 ] && grep -q 'token_string is an option of --method ti' r8.err && ok train_ti_option_needs_ti ||
  nok train_ti_option_needs_ti "rc $rc $(cat r8.err)"
# optimizers: element-wise ones give the reference's numbers for the new rows (only they are
# parameters); Adafactor / Prodigy / D-Adaptation take the whole table [49409, 32] as their parameter,
# its old rows restored after every step; ScheduleFree steps the new rows in train mode (y saved, as
# train_textual_inversion.py never calls eval()); bitsandbytes takes the table's 8-bit mode
T --output_dir sf1 --max_train_steps 3 --optimizer_type AdamWScheduleFree --save_model_as safetensors \
  --save_state --save_every_n_steps 1 2> sf1.err &&
T --output_dir sf2 --max_train_steps 3 --optimizer_type AdamWScheduleFree --save_model_as safetensors \
  --resume sf1/zqtok-step00000001-state 2> sf2.err
[ -f sf1/zqtok.safetensors ] && cmp -s sf1/zqtok.safetensors sf2/zqtok.safetensors &&
  ! cmp -s sf1/zqtok.safetensors sf1/zqtok-step00000001.safetensors &&
  ok train_ti_schedulefree_resume || nok train_ti_schedulefree_resume "$(tail -n 2 sf1.err sf2.err)"
for opt in Adafactor Prodigy DAdaptAdam; do
  lr=5e-2; [ $opt = Adafactor ] || lr=1
  if T --output_dir f$opt --max_train_steps 3 --optimizer_type $opt --learning_rate $lr --save_model_as safetensors \
       --save_state --save_every_n_steps 1 2> f$opt.err; then ok train_ti_${opt}_runs
  else nok train_ti_${opt}_runs "$(tail -2 f$opt.err)"; fi
  # the state's parameter is the whole table; its old rows are the model's, its new row moved from the init
  if python3 - tiny.safetensors f$opt/zqtok-state/weights.safetensors f$opt/zqtok-step00000001-state/weights.safetensors <<'PY'
import json, struct, sys
def rd(p, key):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); t = h[key]
    s, e = t['data_offsets']; d = b[8 + n + s:8 + n + e]; f = 'e' if t['dtype'] == 'F16' else 'f'
    return t['shape'], struct.unpack('<%d%s' % (len(d) // struct.calcsize(f), f), d)
_, m = rd(sys.argv[1], 'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight')
shape, t = rd(sys.argv[2], 'emb_params')
_, t1 = rd(sys.argv[3], 'emb_params')
ok = shape == [49409, 32] and t[:len(m)] == m and t1[:len(m)] == m and t[len(m):] != t1[len(m):]
sys.exit(0 if ok else print(shape, t[:2], m[:2]) or 1)
PY
  then ok train_ti_${opt}_whole_table_old_rows_kept; else nok train_ti_${opt}_whole_table_old_rows_kept; fi
  T --output_dir g$opt --max_train_steps 3 --optimizer_type $opt --learning_rate $lr --save_model_as safetensors \
    --resume f$opt/zqtok-step00000001-state 2> g$opt.err
  [ -f f$opt/zqtok.safetensors ] && cmp -s f$opt/zqtok.safetensors g$opt/zqtok.safetensors &&
    ok train_ti_${opt}_resume_same_bytes || nok train_ti_${opt}_resume_same_bytes "$(tail -2 g$opt.err)"
done
if T --output_dir o8 --max_train_steps 2 --optimizer_type AdamW8bit --save_model_as safetensors --save_state 2> o8.err &&
   python3 - o8/zqtok-state/optimizer.safetensors <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
d = [k + ':' + v['dtype'] for k, v in h.items() if k.startswith('emb_params') and 'state1' in k]
sys.exit(0 if d and all(x.endswith(':U8') for x in d) else print(d) or 1)
PY
then ok train_ti_adamw8bit_table_mode; else nok train_ti_adamw8bit_table_mode "$(tail -2 o8.err)"; fi

# ---- kill -9, resume: byte-identical embedding -------------------------------------------------------------------
N=60
T --output_dir k0 --max_train_steps $N --save_every_n_steps 5 --save_state --gradient_accumulation_steps 2 2> /dev/null
Tbg --output_dir k1 --max_train_steps $N --save_every_n_steps 5 --save_state --gradient_accumulation_steps 2 2> /dev/null & pid=$!
for i in $(seq 600); do ls -d k1/zqtok-step*-state > /dev/null 2>&1 && break; sleep 0.05; done
kill -9 $pid; wait $pid 2> /dev/null
st=$(ls -d k1/zqtok-step*-state 2> /dev/null | sort | tail -1)
if [ -n "$st" ] && [ ! -f k1/zqtok.pt ]; then
  T --output_dir k1 --max_train_steps $N --save_every_n_steps 5 --save_state --gradient_accumulation_steps 2 --resume "$st" 2> k1.err
  [ -f k0/zqtok.pt ] && cmp -s k0/zqtok.pt k1/zqtok.pt && ok train_ti_kill9_resume_same_bytes ||
    nok train_ti_kill9_resume_same_bytes "$(tail -2 k1.err)"
else nok train_ti_kill9_resume_same_bytes "no state to resume from or the run finished before the kill: '$st'"; fi
T --output_dir k2 --max_train_steps $N --gradient_accumulation_steps 2 --token_string zqother --resume k0/zqtok-step00000010-state 2> k2.err; rc=$?
[ $rc = 1 ] && grep -q 'cannot resume' k2.err && ok train_ti_resume_mismatch || nok train_ti_resume_mismatch "rc $rc $(cat k2.err)"
