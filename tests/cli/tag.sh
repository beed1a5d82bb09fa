#!/usr/bin/env bash
# sd-tag end to end on the tiny ViT of tests/data/tagger (tests/golden/gen/make_tagger_golden.py)
# with a generated selected_tags.csv: sidecars and records, folder arguments, thresholds,
# ordering options, append, refused options, per-record errors and exit codes, --threads.
. "$(dirname "$0")/lib.sh"
t_init tag
SD=$root/$build/bin/sd-tag
t_need "$SD"
cd "$tmp"
ok() { echo "ok $1"; }
nok() { echo "not ok $1"; [ -n "${2:-}" ] && echo "# $2"; }

mkdir -p m img sub/deep
cp "$root/tests/data/tagger/tagger_tiny.safetensors" m/model.safetensors
{
  echo 'tag_id,name,category,count'
  for r in general sensitive questionable explicit; do echo "9,$r,9,1"; done
  for g in 1girl solo long_hair '^_^' '"tag, with comma"' open_mouth blue_eyes '>_<' simple_background 1boy smile white_shirt ahoge bow; do
    echo "1,$g,0,1"; done
  for c in hatsune_miku 'kafuu_chino_(gochuumon_wa_usagi_desu_ka?)' c_c 'nobody_(series)' x_y 'mash_(swim)_(fate)'; do echo "2,$c,4,1"; done
} > m/selected_tags.csv
for f in a_97x61 b_203x150_rgba c_640x480 d_50x33_la; do cp "$root/tests/data/tagger/$f.png" img/; done
cp img/a_97x61.png sub/deep/x.png

# ---- all tags (thresh 0): sidecars, records, order = CSV order, then characters ----------------
"$SD" --model m --thresh 0 img > all.out 2> all.err; rc=$?
[ $rc = 0 ] && ok tag_dir_exit || nok tag_dir_exit "exit $rc: $(cat all.err)"
[ "$(wc -l < all.out)" = 4 ] && ok tag_dir_records || nok tag_dir_records
want='1girl, solo, long_hair, ^_^, tag, with comma, open_mouth, blue_eyes, >_<, simple_background, 1boy, smile, white_shirt, ahoge, bow, hatsune_miku, kafuu_chino_(gochuumon_wa_usagi_desu_ka?), c_c, nobody_(series), x_y, mash_(swim)_(fate)'
[ "$(cat img/a_97x61.txt)" = "$want" ] && ok tag_sidecar_all || nok tag_sidecar_all "$(cat img/a_97x61.txt)"
grep -qxF "{\"image\":\"img/a_97x61.png\",\"tags\":\"$want\"}" all.out && ok tag_record_all || nok tag_record_all "$(head -1 all.out)"
ls img/.*tmp* 2>/dev/null | grep -q . && nok tag_no_temp_files || ok tag_no_temp_files

# ---- --device: cuda without a CUDA build or a GPU is a clear fatal error; on a GPU (or the fake device of
# SD_FAKE_CUDA) the same records as the CPU (every tag: thresh 0)
"$SD" --model m --thresh 0 --no-sidecar --batch_size 3 --device cuda img > dcu.out 2> dcu.err; rc=$?
if [ $rc = 0 ]; then
  cmp -s all.out dcu.out && grep -q "running on" dcu.err && ok tag_device_cuda_same_records ||
    nok tag_device_cuda_same_records "$(tail -2 dcu.err)"
  if [ -n "${SD_FAKE_CUDA:-}" ]; then   # a 1 MiB fake device: stopped before any image, with the numbers
    SD_FAKE_CUDA_MIB=1 "$SD" --model m --thresh 0 --no-sidecar --device cuda img > dsm.out 2> dsm.err; rc=$?
    [ $rc = 1 ] && grep -q 'needs about .* GiB of GPU memory (weights' dsm.err && grep -q 'lower --batch_size' dsm.err &&
      [ ! -s dsm.out ] && ok tag_device_cuda_fail_fast || nok tag_device_cuda_fail_fast "rc $rc $(tail -1 dsm.err)"
  fi
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" dcu.err && ok tag_device_cuda_unavailable ||
    nok tag_device_cuda_unavailable "exit $rc: $(tail -2 dcu.err)"
fi

# ---- thresholds -------------------------------------------------------------------------------
"$SD" --model m --thresh 1.1 --no-sidecar img/../img > none.out 2>/dev/null
grep -q '"tags":""' none.out && [ "$(grep -c '"tags":""' none.out)" = 4 ] && ok tag_thresh_none || nok tag_thresh_none "$(head -1 none.out)"
"$SD" --model m --general_threshold 0 --character_threshold 1.1 --no-sidecar img > gen.out 2>/dev/null
grep -q 'bow"}' gen.out && ! grep -q hatsune gen.out && ok tag_general_only || nok tag_general_only
"$SD" --model m --general_threshold 1.1 --character_threshold 0 --character_tags_first --no-sidecar img > chr.out 2>/dev/null
grep -q '"tags":"mash_(swim)_(fate), x_y, nobody_(series), c_c, kafuu_chino_(gochuumon_wa_usagi_desu_ka?), hatsune_miku"' chr.out \
  && ok tag_character_first || nok tag_character_first "$(head -1 chr.out)"
# a middle threshold gives a subset of the tags in the same order
"$SD" --model m --thresh 0.5 --no-sidecar img > mid.out 2>/dev/null
n_mid=$(head -1 mid.out | grep -o ', ' | wc -l); n_all=$(head -1 all.out | grep -o ', ' | wc -l)
[ "$n_mid" -lt "$n_all" ] && ok tag_thresh_subset || nok tag_thresh_subset "$n_mid vs $n_all"

# ---- ordering and post-processing options ------------------------------------------------------
"$SD" --model m --thresh 0 --no-sidecar --use_rating_tags --character_tag_expand --remove_underscore \
  --undesired_tags 'solo, bow' --always_first_tags 'smile,1boy' --caption_separator ' | ' --tag_replacement 'blue eyes,BLUE' \
  img/a_97x61.png 2> opt.err < /dev/null > opt0.out; rc=$?
# an image file argument is tagged directly (not read as records)
[ $rc = 0 ] && grep -qE '^\{"image":"img/a_97x61.png","tags":"(general|sensitive|questionable|explicit) \| 1girl \| solo' opt0.out && ok tag_image_arg || nok tag_image_arg "exit $rc"
echo '{"image":"img/a_97x61.png","keep":[1,{"x":2}]}' | "$SD" --model m --thresh 0 --no-sidecar --use_rating_tags \
  --character_tag_expand --remove_underscore --undesired_tags 'solo| bow' --always_first_tags 'smile|1boy' \
  --caption_separator ' | ' --tag_replacement 'blue eyes,BLUE' > opt.out 2> opt.err
r=$(cat opt.out)
case "$r" in
  '{"image":"img/a_97x61.png","keep":[1,{"x":2}],"tags":"1boy | smile | '*) ok tag_always_first ;;
  *) nok tag_always_first "$r" ;;
esac
echo "$r" | grep -q ' | BLUE | ' && ok tag_replacement || nok tag_replacement "$r"
echo "$r" | grep -q 'long hair' && echo "$r" | grep -q '\^_^' && echo "$r" | grep -q 'x_y' && ok tag_remove_underscore || nok tag_remove_underscore "$r"
echo "$r" | grep -q 'kafuu chino | gochuumon wa usagi desu ka?' && echo "$r" | grep -q 'mash (swim) | fate' && ok tag_character_expand || nok tag_character_expand "$r"
echo "$r" | grep -qE 'solo|bow' && nok tag_undesired "$r" || ok tag_undesired
echo "$r" | grep -qE '"tags":"1boy \| smile \| (general|sensitive|questionable|explicit) \| 1girl' && ok tag_rating_first || nok tag_rating_first "$r"
echo '{"image":"img/a_97x61.png"}' | "$SD" --model m --thresh 1.1 --use_rating_tags_as_last_tag --no-sidecar 2>/dev/null \
  | grep -qE '"tags":"(general|sensitive|questionable|explicit)"' && ok tag_rating_last || nok tag_rating_last

# ---- append, caption extension, recursive ------------------------------------------------------
printf 'old, 1girl\n' > sub/deep/x.tag
"$SD" --model m --thresh 0 --general_threshold 0 --character_threshold 1.1 --recursive --append_tags \
  --caption_extention .tag sub > app.out 2> app.err
[ "$(cat sub/deep/x.tag)" = "old, 1girl, solo, long_hair, ^_^, tag, with comma, open_mouth, blue_eyes, >_<, simple_background, 1boy, smile, white_shirt, ahoge, bow" ] \
  && ok tag_append_recursive || nok tag_append_recursive "$(cat sub/deep/x.tag)"
grep -q '"image":"sub/deep/x.png"' app.out && ok tag_recursive_record || nok tag_recursive_record

# ---- model given as files, --batch_size, --threads: identical output ---------------------------
cp m/selected_tags.csv tags.csv
"$SD" --model m/model.safetensors --tags_csv tags.csv --thresh 0.5 --no-sidecar --batch_size 3 --threads 1 img > b3.out 2>/dev/null
"$SD" --model m --thresh 0.5 --no-sidecar --threads 2 img > b1.out 2>/dev/null
cmp -s b3.out mid.out && cmp -s b1.out mid.out && ok tag_batch_threads_same || nok tag_batch_threads_same
"$SD" --model m --thresh 0 --no-sidecar --frequency_tags --debug img > /dev/null 2> fq.err
grep -qx '1girl: 4' fq.err && grep -q 'General tags: 1girl' fq.err && ok tag_frequency_debug || nok tag_frequency_debug

# ---- per-record errors: exit 3, the others still done -----------------------------------------
head -c 40 img/a_97x61.png > trunc.png
printf 'not an image' > text.png
cat > bad.jsonl <<'X'
{"image":"img/a_97x61.png"}
{"image":"missing.png"}
{"image":"trunc.png"}
{bad json
{"noimage":1}
{"image":"text.png"}
{"image":"img/c_640x480.png"}
X
"$SD" --model m --no-sidecar bad.jsonl > bad.out 2> bad.err; rc=$?
[ $rc = 3 ] && ok tag_partial_exit3 || nok tag_partial_exit3 "exit $rc"
[ "$(wc -l < bad.out)" = 2 ] && ok tag_partial_good_records || nok tag_partial_good_records
for l in 2:missing.png 3:trunc.png 4: 5:image 6:text.png; do
  grep -q "error (at bad.jsonl:${l%%:*}): .*${l#*:}" bad.err || { nok tag_error_lines "line $l: $(cat bad.err)"; l=; break; }
done
[ -n "$l" ] && ok tag_error_lines

# ---- --output_path: the reference's .json / .jsonl instead of sidecars (checked against Python's json) ----
mkdir -p op && cp img/a_97x61.png img/b_203x150_rgba.png op/ && cp op/a_97x61.png "op/é ü.png"
"$SD" --model m --thresh 0 --output_path out.json op > /dev/null 2> op1.err
"$SD" --model m --thresh 0 --output_path out.jsonl op > /dev/null 2> op2.err
if [ -f out.json ] && [ -f out.jsonl ] && ! ls op/*.txt > /dev/null 2>&1 && python3 - out.json out.jsonl <<'PY'
import json, sys
j = open(sys.argv[1], encoding='utf-8').read()
r = json.loads(j)
assert j == json.dumps(r, ensure_ascii=False, indent=4), 'json layout'
assert r['op/b_203x150_rgba.png']['image_size'] == [203, 150], r
lines = open(sys.argv[2], encoding='utf-8').read().splitlines(keepends=True)
assert len(lines) == len(r) == 3, (len(lines), len(r))
for line, (k, v) in zip(lines, r.items()):
    assert line == json.dumps({"image_path": k, "caption": v["tags"], "image_size": v["image_size"]}) + "\n", line
assert '\\u00e9' in ''.join(lines) and 'é' in j
PY
then ok tag_output_path; else nok tag_output_path "$(tail -2 op1.err)"; fi

# ---- fatal and usage errors -------------------------------------------------------------------
"$SD" --thresh 0 img > /dev/null 2> e.err; [ $? = 2 ] && grep -q 'give --model' e.err && ok tag_usage_no_model || nok tag_usage_no_model
for opt in '--repo_id x' '--use_quality_tags' '--meta_threshold 0.5' '--device gpu'; do
  "$SD" --model m $opt img > /dev/null 2> e.err; rc=$?
  [ $rc = 2 ] && [ -s e.err ] || { nok tag_refused_options "$opt: exit $rc"; opt=; break; }
done
[ -n "$opt" ] && ok tag_refused_options
"$SD" --model m --caption_separator '  ' img > /dev/null 2> e.err; [ $? = 2 ] && grep -q caption_separator e.err && ok tag_bad_separator || nok tag_bad_separator
"$SD" --model m --max_data_loader_n_workers 2 --no-sidecar img > /dev/null 2> e.err; [ $? = 0 ] && grep -q 'no effect' e.err && ok tag_workers_noted || nok tag_workers_noted
mkdir -p m2 && head -c 5000 m/model.safetensors > m2/model.safetensors && cp tags.csv m2/selected_tags.csv
"$SD" --model m2 img > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'm2/model.safetensors' e.err && ok tag_truncated_model || nok tag_truncated_model "$(cat e.err)"
mkdir -p m3 && cp m/model.safetensors m3/ && head -n 10 tags.csv > m3/selected_tags.csv
"$SD" --model m3 img > /dev/null 2> e.err; [ $? = 1 ] && grep -q '9 tags but' e.err && ok tag_csv_count_mismatch || nok tag_csv_count_mismatch "$(cat e.err)"
mkdir -p m4 && cp m/model.safetensors m4/ && printf 'tag_id,name,category\n1,"x,0\n' > m4/selected_tags.csv
"$SD" --model m4 img > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'selected_tags.csv:2: unterminated' e.err && ok tag_bad_csv || nok tag_bad_csv "$(cat e.err)"
mkdir -p m5 && touch m5/model.onnx
"$SD" --model m5 img > /dev/null 2> e.err; [ $? = 1 ] && grep -q "m5/model.onnx: no graph (not an ONNX model file?)" e.err && ok tag_onnx_dir || nok tag_onnx_dir "$(cat e.err)"
"$SD" --help > h.out; [ $? = 0 ] && grep -q -- '--character_tags_first' h.out && ok tag_help || nok tag_help

# ---- the ConvNeXt tagger (tests/data/tagger/convnext_tiny.safetensors, tests/golden/gen/make_convnext_golden.py:
# the same 24 outputs): sidecars and records, batches and threads, --device cuda, damaged files ----------
mkdir -p mc imgc
cp "$root/tests/data/tagger/convnext_tiny.safetensors" mc/model.safetensors && cp tags.csv mc/selected_tags.csv
for f in a_97x61 b_203x150_rgba c_640x480 d_50x33_la; do cp "$root/tests/data/tagger/$f.png" imgc/; done
"$SD" --model mc --thresh 0 imgc > call.out 2> call.err; rc=$?
[ $rc = 0 ] && grep -q 'ConvNeXt tagger, 64x64 input, widths 8/16/16/32, blocks 1/1/2/1, 24 tags' call.err &&
  [ "$(wc -l < call.out)" = 4 ] && ok tag_convnext_exit || nok tag_convnext_exit "exit $rc: $(cat call.err)"
[ "$(cat imgc/a_97x61.txt)" = "$want" ] && grep -qxF "{\"image\":\"imgc/a_97x61.png\",\"tags\":\"$want\"}" call.out &&
  ok tag_convnext_sidecar_record || nok tag_convnext_sidecar_record "$(cat imgc/a_97x61.txt)"
"$SD" --model mc --thresh 0.5 --no-sidecar --threads 1 imgc > cmid.out 2>/dev/null
"$SD" --model mc/model.safetensors --tags_csv tags.csv --thresh 0.5 --no-sidecar --batch_size 3 --threads 2 imgc > cb3.out 2>/dev/null
n_cmid=$(head -1 cmid.out | grep -o ', ' | wc -l)
cmp -s cmid.out cb3.out && [ "$n_cmid" -gt 0 ] && [ "$n_cmid" -lt "$n_all" ] && ok tag_convnext_batch_threads_same ||
  nok tag_convnext_batch_threads_same "$(head -1 cmid.out)"
# the tags of a middle threshold are the model's own (a different model from the ViT: different tags)
sed 's/imgc/img/' cmid.out | cmp -s - mid.out && nok tag_convnext_own_tags "the ViT's tags" || ok tag_convnext_own_tags
"$SD" --model mc --thresh 0.5 --no-sidecar --batch_size 3 --device cuda imgc > cdcu.out 2> cdcu.err; rc=$?
if [ $rc = 0 ]; then
  cmp -s cmid.out cdcu.out && grep -q "running on" cdcu.err && ok tag_convnext_device_cuda_same_records ||
    nok tag_convnext_device_cuda_same_records "$(tail -2 cdcu.err)"
  if [ -n "${SD_FAKE_CUDA:-}" ]; then
    SD_FAKE_CUDA_MIB=1 "$SD" --model mc --no-sidecar --device cuda imgc > cdsm.out 2> cdsm.err; rc=$?
    [ $rc = 1 ] && grep -q 'needs about .* GiB of GPU memory (weights' cdsm.err && [ ! -s cdsm.out ] &&
      ok tag_convnext_device_cuda_fail_fast || nok tag_convnext_device_cuda_fail_fast "rc $rc $(tail -1 cdsm.err)"
  fi
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" cdcu.err && ok tag_convnext_device_cuda_unavailable ||
    nok tag_convnext_device_cuda_unavailable "exit $rc: $(tail -2 cdcu.err)"
fi
# damaged: truncated, a tensor of the wrong shape and an unknown act_layer (rewritten by Python); nothing written
mkdir -p mc2 mc3 mc4 && cp tags.csv mc2/selected_tags.csv && cp tags.csv mc3/selected_tags.csv && cp tags.csv mc4/selected_tags.csv
head -c 3000 mc/model.safetensors > mc2/model.safetensors
python3 - mc/model.safetensors mc3/model.safetensors mc4/model.safetensors <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
def write(path, hdr):
    s = json.dumps(hdr).encode()
    s += b' ' * ((8 - len(s) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(s)) + s + b[8 + n:])
h3 = dict(h); h3['stages.3.blocks.0.gamma'] = dict(h['stages.3.blocks.0.gamma'], shape=[4, 8]); write(sys.argv[2], h3)
h4 = dict(h); h4['__metadata__'] = dict(h['__metadata__'], act_layer='swish'); write(sys.argv[3], h4)
PY
rm -f imgc/*.txt
"$SD" --model mc2 imgc > cbad.out 2> e2.err; r2=$?
"$SD" --model mc3 imgc > cbad3.out 2> e3.err; r3=$?
"$SD" --model mc4 imgc > cbad4.out 2> e4.err; r4=$?
[ $r2 = 1 ] && grep -q 'mc2/model.safetensors' e2.err && [ $r3 = 1 ] &&
  grep -q "mc3/model.safetensors: tensor 'stages.3.blocks.0.gamma': expected shape \[32\]" e3.err &&
  [ $r4 = 1 ] && grep -q "mc4/model.safetensors: __metadata__ act_layer 'swish'" e4.err &&
  [ ! -s cbad.out ] && [ ! -s cbad3.out ] && [ ! -s cbad4.out ] && ! ls imgc/*.txt > /dev/null 2>&1 &&
  ok tag_convnext_damaged || nok tag_convnext_damaged "$r2 $r3 $r4: $(cat e2.err e3.err e4.err)"

# ---- the EVA02 tagger (tests/data/tagger/eva02_tiny.safetensors, tests/golden/gen/make_eva02_golden.py:
# 20 outputs, 32x32 input): sidecars and records, batches and threads, --device cuda, damaged files ------
mkdir -p me imge
cp "$root/tests/data/tagger/eva02_tiny.safetensors" me/model.safetensors && head -n 21 tags.csv > me/selected_tags.csv
for f in a_97x61 b_203x150_rgba c_640x480 d_50x33_la e_33x517; do cp "$root/tests/data/tagger/$f.png" imge/; done
want20='1girl, solo, long_hair, ^_^, tag, with comma, open_mouth, blue_eyes, >_<, simple_background, 1boy, smile, white_shirt, ahoge, bow, hatsune_miku, kafuu_chino_(gochuumon_wa_usagi_desu_ka?)'
"$SD" --model me --thresh 0 imge > eall.out 2> eall.err; rc=$?
[ $rc = 0 ] && grep -q 'EVA02 tagger, 32x32 input, width 32, 2 blocks, 2 heads, MLP 85, RoPE reference 3x3, 20 tags' eall.err &&
  [ "$(wc -l < eall.out)" = 5 ] && ok tag_eva02_exit || nok tag_eva02_exit "exit $rc: $(cat eall.err)"
[ "$(cat imge/a_97x61.txt)" = "$want20" ] && grep -qxF "{\"image\":\"imge/a_97x61.png\",\"tags\":\"$want20\"}" eall.out &&
  ok tag_eva02_sidecar_record || nok tag_eva02_sidecar_record "$(cat imge/a_97x61.txt)"
"$SD" --model me --thresh 0.5 --no-sidecar --threads 1 imge > emid.out 2>/dev/null
"$SD" --model me/model.safetensors --tags_csv me/selected_tags.csv --thresh 0.5 --no-sidecar --batch_size 3 --threads 2 imge > eb3.out 2>/dev/null
"$SD" --model me --thresh 0.5 --no-sidecar --batch_size 5 --threads 2 --preprocess wd imge > ewd.out 2>/dev/null
n_emid=$(head -1 emid.out | grep -o ', ' | wc -l); n_eall=$(head -1 eall.out | grep -o ', ' | wc -l)
cmp -s emid.out eb3.out && [ "$n_emid" -gt 0 ] && [ "$n_emid" -lt "$n_eall" ] && [ "$(wc -l < ewd.out)" = 5 ] &&
  ok tag_eva02_batch_threads_same || nok tag_eva02_batch_threads_same "$(head -1 emid.out)"
"$SD" --model me --thresh 0.5 --no-sidecar --batch_size 3 --device cuda imge > edcu.out 2> edcu.err; rc=$?
if [ $rc = 0 ]; then
  cmp -s emid.out edcu.out && grep -q "running on" edcu.err && ok tag_eva02_device_cuda_same_records ||
    nok tag_eva02_device_cuda_same_records "$(tail -2 edcu.err)"
  if [ -n "${SD_FAKE_CUDA:-}" ]; then
    SD_FAKE_CUDA_MIB=1 "$SD" --model me --no-sidecar --device cuda imge > edsm.out 2> edsm.err; rc=$?
    [ $rc = 1 ] && grep -q 'needs about .* GiB of GPU memory (weights' edsm.err && [ ! -s edsm.out ] &&
      ok tag_eva02_device_cuda_fail_fast || nok tag_eva02_device_cuda_fail_fast "rc $rc $(tail -1 edsm.err)"
  fi
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" edcu.err && ok tag_eva02_device_cuda_unavailable ||
    nok tag_eva02_device_cuda_unavailable "exit $rc: $(tail -2 edcu.err)"
fi
# damaged: truncated, a tensor of the wrong shape, a bad ref_feat_shape, a fused qkv (rewritten by Python); nothing written
for d in me2 me3 me4 me5; do mkdir -p $d && cp me/selected_tags.csv $d/; done
head -c 3000 me/model.safetensors > me2/model.safetensors
python3 - me/model.safetensors me3/model.safetensors me4/model.safetensors me5/model.safetensors <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
def write(path, hdr):
    s = json.dumps(hdr).encode()
    s += b' ' * ((8 - len(s) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(s)) + s + b[8 + n:])
h3 = dict(h); h3['blocks.1.mlp.norm.weight'] = dict(h['blocks.1.mlp.norm.weight'], shape=[5, 17]); write(sys.argv[2], h3)
h4 = dict(h); h4['__metadata__'] = dict(h['__metadata__'], ref_feat_shape='3x3'); write(sys.argv[3], h4)
h5 = dict(h); h5['blocks.0.attn.qkv.weight'] = h5.pop('blocks.0.attn.k_proj.weight'); write(sys.argv[4], h5)
PY
rm -f imge/*.txt
"$SD" --model me2 imge > ebad2.out 2> ee2.err; r2=$?
"$SD" --model me3 imge > ebad3.out 2> ee3.err; r3=$?
"$SD" --model me4 imge > ebad4.out 2> ee4.err; r4=$?
"$SD" --model me5 imge > ebad5.out 2> ee5.err; r5=$?
[ $r2 = 1 ] && grep -q 'me2/model.safetensors' ee2.err && [ $r3 = 1 ] &&
  grep -q "me3/model.safetensors: tensor 'blocks.1.mlp.norm.weight': expected shape \[85\]" ee3.err &&
  [ $r4 = 1 ] && grep -q "me4/model.safetensors: __metadata__ ref_feat_shape '3x3'" ee4.err &&
  [ $r5 = 1 ] && grep -q "me5/model.safetensors: an EVA02 with a fused attn.qkv is not supported" ee5.err &&
  [ ! -s ebad2.out ] && [ ! -s ebad3.out ] && [ ! -s ebad4.out ] && [ ! -s ebad5.out ] && ! ls imge/*.txt > /dev/null 2>&1 &&
  ok tag_eva02_damaged || nok tag_eva02_damaged "$r2 $r3 $r4 $r5: $(cat ee2.err ee3.err ee4.err ee5.err)"

# ---- the SwinV2 tagger (tests/data/tagger/swinv2_tiny.safetensors, tests/golden/gen/make_swinv2_golden.py:
# 20 outputs, 64x64 input, window 8): sidecars and records, batches and threads, --device cuda, damaged files --
mkdir -p ms imgs
cp "$root/tests/data/tagger/swinv2_tiny.safetensors" ms/model.safetensors && head -n 21 tags.csv > ms/selected_tags.csv
for f in a_97x61 b_203x150_rgba c_640x480 d_50x33_la; do cp "$root/tests/data/tagger/$f.png" imgs/; done
want_s='1girl, solo, long_hair, ^_^, tag, with comma, open_mouth, blue_eyes, >_<, simple_background, 1boy, smile, white_shirt, ahoge, bow, hatsune_miku, kafuu_chino_(gochuumon_wa_usagi_desu_ka?)'
"$SD" --model ms --thresh 0 imgs > sall.out 2> sall.err; rc=$?
[ $rc = 0 ] && grep -q 'SwinV2 tagger, 64x64 input, window 8, widths 8/16/32, blocks 2/2/2, heads 2/2/4, 20 tags' sall.err &&
  [ "$(wc -l < sall.out)" = 4 ] && ok tag_swinv2_exit || nok tag_swinv2_exit "exit $rc: $(cat sall.err)"
[ "$(cat imgs/a_97x61.txt)" = "$want_s" ] && grep -qxF "{\"image\":\"imgs/a_97x61.png\",\"tags\":\"$want_s\"}" sall.out &&
  ok tag_swinv2_sidecar_record || nok tag_swinv2_sidecar_record "$(cat imgs/a_97x61.txt)"
"$SD" --model ms --thresh 0.5 --no-sidecar --threads 1 imgs > smid.out 2>/dev/null
"$SD" --model ms/model.safetensors --tags_csv ms/selected_tags.csv --thresh 0.5 --no-sidecar --batch_size 3 --threads 2 imgs > sb3.out 2>/dev/null
n_smid=$(head -1 smid.out | grep -o ', ' | wc -l); n_sall=$(head -1 sall.out | grep -o ', ' | wc -l)
cmp -s smid.out sb3.out && [ "$n_smid" -gt 0 ] && [ "$n_smid" -lt "$n_sall" ] && ok tag_swinv2_batch_threads_same ||
  nok tag_swinv2_batch_threads_same "$(head -1 smid.out)"
"$SD" --model ms --thresh 0.5 --no-sidecar --batch_size 3 --device cuda imgs > sdcu.out 2> sdcu.err; rc=$?
if [ $rc = 0 ]; then
  cmp -s smid.out sdcu.out && grep -q "running on" sdcu.err && ok tag_swinv2_device_cuda_same_records ||
    nok tag_swinv2_device_cuda_same_records "$(tail -2 sdcu.err)"
  if [ -n "${SD_FAKE_CUDA:-}" ]; then
    SD_FAKE_CUDA_MIB=1 "$SD" --model ms --no-sidecar --device cuda imgs > sdsm.out 2> sdsm.err; rc=$?
    [ $rc = 1 ] && grep -q 'needs about .* GiB of GPU memory (weights' sdsm.err && [ ! -s sdsm.out ] &&
      ok tag_swinv2_device_cuda_fail_fast || nok tag_swinv2_device_cuda_fail_fast "rc $rc $(tail -1 sdsm.err)"
  fi
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" sdcu.err && ok tag_swinv2_device_cuda_unavailable ||
    nok tag_swinv2_device_cuda_unavailable "exit $rc: $(tail -2 sdcu.err)"
fi
# damaged: truncated, a tensor of the wrong shape, an extra tensor and a window that does not divide the map
mkdir -p ms2 ms3 ms4 ms5
for d in ms2 ms3 ms4 ms5; do cp ms/selected_tags.csv $d/; done
head -c 3000 ms/model.safetensors > ms2/model.safetensors
python3 - ms/model.safetensors ms3/model.safetensors ms4/model.safetensors ms5/model.safetensors <<'PY'
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
def write(path, hdr, tail=b''):
    s = json.dumps(hdr).encode()
    s += b' ' * ((8 - len(s) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(s)) + s + b[8 + n:] + tail)
end = len(b) - 8 - n
h3 = dict(h); h3['layers.1.blocks.0.attn.logit_scale'] = dict(h['layers.1.blocks.0.attn.logit_scale'], shape=[1, 1, 2]); write(sys.argv[2], h3)
h4 = dict(h); h4['layers.0.blocks.0.attn.extra'] = {'dtype': 'F16', 'shape': [4], 'data_offsets': [end, end + 8]}
write(sys.argv[3], h4, b'\0' * 8)
h5 = dict(h); h5['__metadata__'] = dict(h['__metadata__'], window_size='6'); write(sys.argv[4], h5)
PY
rm -f imgs/*.txt
"$SD" --model ms2 imgs > sbad.out 2> se2.err; r2=$?
"$SD" --model ms3 imgs > sbad3.out 2> se3.err; r3=$?
"$SD" --model ms4 imgs > sbad4.out 2> se4.err; r4=$?
"$SD" --model ms5 imgs > sbad5.out 2> se5.err; r5=$?
[ $r2 = 1 ] && grep -q 'ms2/model.safetensors' se2.err && [ $r3 = 1 ] &&
  grep -q "ms3/model.safetensors: layers.1.blocks.0.attn.logit_scale must be \[heads,1,1\]" se3.err &&
  [ $r4 = 1 ] && grep -q "ms4/model.safetensors: unexpected tensor 'layers.0.blocks.0.attn.extra'" se4.err &&
  [ $r5 = 1 ] && grep -q "ms5/model.safetensors: stage 0: the 16x16 map is not a whole number of 6x6 windows" se5.err &&
  [ ! -s sbad.out ] && [ ! -s sbad3.out ] && [ ! -s sbad4.out ] && [ ! -s sbad5.out ] && ! ls imgs/*.txt > /dev/null 2>&1 &&
  ok tag_swinv2_damaged || nok tag_swinv2_damaged "$r2 $r3 $r4 $r5: $(cat se2.err se3.err se4.err se5.err)"
