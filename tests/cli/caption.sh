#!/usr/bin/env bash
# sd-caption end to end on the tiny BLIP of tests/data/blip (tests/golden/gen/make_blip_golden.py):
# greedy and 3-beam captions equal to the PyTorch reference's (expected.txt: preprocessing,
# generation and decoding), sidecars and records, folder/image/record arguments, sampling
# determinism (seed, --batch_size, --threads), per-record errors and exit codes, usage and fatal
# errors, --device.
. "$(dirname "$0")/lib.sh"
t_init caption
SD=$root/$build/bin/sd-caption
t_need "$SD"
cd "$tmp"
ok() { echo "ok $1"; }
nok() { echo "not ok $1"; [ -n "${2:-}" ] && echo "# $2"; }
want() { grep -P "^$1\t$2\t" "$root/tests/data/blip/expected.txt" | cut -f3; }

mkdir -p m img sub/deep
cp "$root/tests/data/blip/blip_tiny_hf.safetensors" m/model.safetensors
cp "$root/tests/data/blip/vocab.txt" m/
for f in a_97x61 b_203x150_rgba c_640x480; do cp "$root/tests/data/tagger/$f.png" img/; done
cp img/a_97x61.png sub/deep/x.png
L="--max_length 40"   # the tiny model has 40 positions

# ---- greedy (--beam_search, 1 beam): the reference's captions, sidecars and records -------------
"$SD" --model m $L --beam_search img > g.out 2> g.err; rc=$?
[ $rc = 0 ] && ok caption_greedy_exit || nok caption_greedy_exit "exit $rc: $(cat g.err)"
[ "$(wc -l < g.out)" = 3 ] && ok caption_greedy_records || nok caption_greedy_records
good=1
for f in a_97x61 b_203x150_rgba c_640x480; do
  w=$(want $f greedy)
  [ -n "$w" ] && [ "$(cat img/$f.caption)" = "$w" ] || { good=0; echo "# $f: '$(cat img/$f.caption 2>/dev/null)' != '$w'"; }
  [ "$(tail -c 1 img/$f.caption | od -An -c | tr -d ' ')" = '\n' ] || good=0
  grep -qxF "{\"image\":\"img/$f.png\",\"caption\":\"$w\"}" g.out || good=0
done
[ $good = 1 ] && ok caption_greedy_matches_reference || nok caption_greedy_matches_reference
ls img/.*tmp* img/*.tmp 2>/dev/null | grep -q . && nok caption_no_temp_files || ok caption_no_temp_files

# ---- beam search, 3 beams ------------------------------------------------------------------------
"$SD" --model m $L --beam_search --num_beams 3 --no-sidecar --caption_extension .b3 img > b3.out 2> b3.err; rc=$?
good=1
for f in a_97x61 b_203x150_rgba c_640x480; do
  grep -qxF "{\"image\":\"img/$f.png\",\"caption\":\"$(want $f beam3)\"}" b3.out || good=0
done
[ $rc = 0 ] && [ $good = 1 ] && ! ls img/*.b3 > /dev/null 2>&1 && ok caption_beam3_matches_reference \
  || nok caption_beam3_matches_reference "exit $rc: $(head -1 b3.out)"
# same with batches and one thread (the image encoder batched)
"$SD" --model m $L --beam_search --num_beams 3 --no-sidecar --batch_size 2 --threads 1 img > b3b.out 2>/dev/null
cmp -s b3.out b3b.out && ok caption_beam3_batch_threads_same || nok caption_beam3_batch_threads_same

# ---- sampling (default): deterministic per seed, independent of batching and threads ------------
"$SD" --model m $L --no-sidecar img > s1.out 2> s1.err; rc=$?
"$SD" --model m $L --no-sidecar --batch_size 3 --threads 1 img > s2.out 2>/dev/null
"$SD" --model m $L --no-sidecar --batch_size 2 --threads 2 --seed 42 img > s3.out 2>/dev/null
[ $rc = 0 ] && [ "$(wc -l < s1.out)" = 3 ] && cmp -s s1.out s2.out && cmp -s s1.out s3.out && ok caption_sample_deterministic \
  || nok caption_sample_deterministic "exit $rc"
"$SD" --model m $L --no-sidecar --seed 7 img > s7.out 2>/dev/null
cmp -s s1.out s7.out && nok caption_sample_seed_changes || ok caption_sample_seed_changes
cmp -s s1.out g.out && nok caption_sample_differs_from_greedy || ok caption_sample_differs_from_greedy
# min_length: no caption may end before it (prompt included: 4 + 15 words)
"$SD" --model m $L --min_length 19 --no-sidecar img > ml.out 2>/dev/null
ok_ml=1
while read -r line; do
  n=$(echo "$line" | sed 's/.*"caption":"//; s/"}$//' | wc -w); [ "$n" -ge 12 ] || ok_ml=0
done < ml.out
[ $ok_ml = 1 ] && ok caption_min_length || nok caption_min_length "$(head -1 ml.out)"
# --max_length 6: at most 2 generated tokens
"$SD" --model m --max_length 6 --beam_search --no-sidecar img/a_97x61.png > mx.out 2>/dev/null
n=$(sed 's/.*"caption":"//; s/"}$//' mx.out | wc -w)
[ "$n" -le 2 ] && [ "$n" -ge 1 ] && ok caption_max_length || nok caption_max_length "$(cat mx.out)"
# --top_p small: effectively greedy except for the repetition penalty; still deterministic
"$SD" --model m $L --top_p 0.0001 --no-sidecar img > tp1.out 2>/dev/null
"$SD" --model m $L --top_p 0.0001 --no-sidecar --seed 9 img > tp2.out 2>/dev/null
cmp -s tp1.out tp2.out && ok caption_top_p_acts || nok caption_top_p_acts

# ---- records: keys passed through, caption replaced, image argument, recursive, file model ------
echo '{"image":"img/a_97x61.png","keep":[1,{"x":2}],"caption":"old"}' | "$SD" --model m $L --beam_search --no-sidecar > r.out 2>/dev/null
[ "$(cat r.out)" = "{\"image\":\"img/a_97x61.png\",\"keep\":[1,{\"x\":2}],\"caption\":\"$(want a_97x61 greedy)\"}" ] \
  && ok caption_record_passthrough || nok caption_record_passthrough "$(cat r.out)"
"$SD" --model m/model.safetensors --vocab m/vocab.txt $L --beam_search --no-sidecar img/c_640x480.png < /dev/null > i.out 2>/dev/null
grep -qxF "{\"image\":\"img/c_640x480.png\",\"caption\":\"$(want c_640x480 greedy)\"}" i.out && ok caption_image_arg_file_model \
  || nok caption_image_arg_file_model "$(cat i.out)"
"$SD" --caption_weights m $L --beam_search --recursive --caption_extention .txt sub > rec.out 2>/dev/null
[ "$(cat sub/deep/x.txt)" = "$(want a_97x61 greedy)" ] && grep -q '"image":"sub/deep/x.png"' rec.out && ok caption_recursive_aliases \
  || nok caption_recursive_aliases
"$SD" --model m $L --debug --no-sidecar img/a_97x61.png > /dev/null 2> dbg.err
grep -q '^sd-caption: img/a_97x61.png ' dbg.err && ok caption_debug || nok caption_debug "$(cat dbg.err)"

# ---- per-record errors: exit 3, the others still done, no partial sidecars ---------------------
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
rm -f img/*.caption
"$SD" --model m $L bad.jsonl > bad.out 2> bad.err; rc=$?
[ $rc = 3 ] && ok caption_partial_exit3 || nok caption_partial_exit3 "exit $rc"
[ "$(wc -l < bad.out)" = 2 ] && [ -f img/a_97x61.caption ] && [ -f img/c_640x480.caption ] && ok caption_partial_good_records \
  || nok caption_partial_good_records
[ ! -e trunc.caption ] && [ ! -e text.caption ] && [ ! -e missing.caption ] && ok caption_no_partial_sidecars || nok caption_no_partial_sidecars
for l in 2:missing.png 3:trunc.png 4: 5:image 6:text.png; do
  grep -q "error (at bad.jsonl:${l%%:*}): .*${l#*:}" bad.err || { nok caption_error_lines "line $l: $(cat bad.err)"; l=; break; }
done
[ -n "$l" ] && ok caption_error_lines
# an unwritable sidecar is a per-record error
mkdir -p ro && cp img/a_97x61.png ro/ && chmod 555 ro
if [ "$(id -u)" != 0 ]; then
  "$SD" --model m $L ro > /dev/null 2> ro.err; rc=$?
  [ $rc = 3 ] && grep -q 'error (at ro:1)' ro.err && ok caption_unwritable_sidecar || nok caption_unwritable_sidecar "exit $rc $(cat ro.err)"
fi
chmod 755 ro

# ---- --device: cuda without a CUDA build or a GPU is a clear fatal error; on a GPU the same records
"$SD" --model m $L --beam_search --num_beams 3 --no-sidecar --device cuda img > dcu.out 2> dcu.err; rc=$?
if [ $rc = 0 ]; then
  cmp -s b3.out dcu.out && grep -q "running on" dcu.err && ok caption_device_cuda_same_records ||
    nok caption_device_cuda_same_records "$(tail -2 dcu.err)"
  if [ -n "${SD_FAKE_CUDA:-}" ]; then   # a 1 MiB fake device: stopped before any image, with the numbers
    SD_FAKE_CUDA_MIB=1 "$SD" --model m $L --no-sidecar --device cuda img > dsm.out 2> dsm.err; rc=$?
    [ $rc = 1 ] && grep -q 'needs about .* GiB of GPU memory (weights' dsm.err && grep -q 'lower --batch_size' dsm.err &&
      [ ! -s dsm.out ] && ok caption_device_cuda_fail_fast || nok caption_device_cuda_fail_fast "rc $rc $(tail -1 dsm.err)"
  fi
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" dcu.err && ok caption_device_cuda_unavailable ||
    nok caption_device_cuda_unavailable "exit $rc: $(tail -2 dcu.err)"
fi

# ---- fatal and usage errors -------------------------------------------------------------------
"$SD" img > /dev/null 2> e.err; [ $? = 2 ] && grep -q 'give --model' e.err && ok caption_usage_no_model || nok caption_usage_no_model
for opt in '--device gpu' '--top_p 0' '--top_p 1.5' '--num_beams 0' '--batch_size 0' '--bogus' '--max_length 75'; do
  "$SD" --model m $opt img > /dev/null 2> e.err; rc=$?
  [ $rc = 2 ] && [ -s e.err ] || { nok caption_usage_errors "$opt: exit $rc"; opt=; break; }
done
[ -n "$opt" ] && ok caption_usage_errors
"$SD" --model https://example.com/model_large_caption.pth img > /dev/null 2> e.err; [ $? = 2 ] && grep -q 'downloads nothing' e.err \
  && ok caption_url_refused || nok caption_url_refused
"$SD" --model nowhere img > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'nowhere' e.err && ok caption_missing_model || nok caption_missing_model
touch model_large_caption.pth
"$SD" --model model_large_caption.pth img > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'not read' e.err && ok caption_pth_refused \
  || nok caption_pth_refused "$(cat e.err)"
mkdir -p m2 && head -c 5000 m/model.safetensors > m2/model.safetensors && cp m/vocab.txt m2/
"$SD" --model m2 $L img > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'm2/model.safetensors' e.err && ok caption_truncated_model \
  || nok caption_truncated_model "$(cat e.err)"
mkdir -p m3 && cp m/model.safetensors m3/ && head -n 150 m/vocab.txt > m3/vocab.txt
"$SD" --model m3 $L img > /dev/null 2> e.err; [ $? = 1 ] && grep -q '150 tokens but' e.err && ok caption_vocab_mismatch \
  || nok caption_vocab_mismatch "$(cat e.err)"
mkdir -p m4 && cp m/model.safetensors m4/
"$SD" --model m4 $L img > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'm4/vocab.txt' e.err && ok caption_no_vocab || nok caption_no_vocab "$(cat e.err)"
mkdir -p m5 && cp "$root/tests/data/tagger/tagger_tiny.safetensors" m5/model.safetensors && cp m/vocab.txt m5/
"$SD" --model m5 $L img > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'not a BLIP captioning model' e.err && ok caption_not_blip \
  || nok caption_not_blip "$(cat e.err)"
ls img/*.caption > before.lst
"$SD" --model m2 $L img > /dev/null 2>&1
ls img/*.caption | cmp -s - before.lst && ok caption_fatal_writes_nothing || nok caption_fatal_writes_nothing
"$SD" --model m $L --max_data_loader_n_workers 2 --no-sidecar img/a_97x61.png > /dev/null 2> e.err
[ $? = 0 ] && grep -q 'no effect' e.err && ok caption_workers_noted || nok caption_workers_noted
"$SD" --model m $L --num_beams 3 --no-sidecar img/a_97x61.png > nb.out 2> e.err
[ $? = 0 ] && grep -q 'num_beams has no effect' e.err && [ "$(head -1 nb.out)" = "$(grep a_97x61 s1.out)" ] && ok caption_num_beams_noted \
  || nok caption_num_beams_noted
"$SD" --help > h.out; [ $? = 0 ] && grep -q -- '--beam_search' h.out && grep -q -- '--caption_extension' h.out && ok caption_help \
  || nok caption_help

# ---- GIT (tests/data/git, tests/golden/gen/make_git_golden.py): the family from the key names ----
gwant() { grep -P "^$1\t$2\t$3\t" "$root/tests/data/git/expected.txt" | cut -f4; }
mkdir -p gm gimg && cp "$root/tests/data/git/git_tiny.safetensors" gm/model.safetensors && cp "$root/tests/data/git/vocab.txt" gm/
G5="a_97x61 b_203x150_rgba c_640x480 d_50x33_la e_33x517"
for f in $G5; do cp "$root/tests/data/tagger/$f.png" gimg/; done
"$SD" --model_id gm gimg > git.out 2> git.err; rc=$?
good=1
for f in $G5; do
  w=$(gwant $f 50 0)
  [ -n "$w" ] && [ "$(cat gimg/$f.caption)" = "$w" ] || { good=0; echo "# $f: '$(cat gimg/$f.caption 2>/dev/null)' != '$w'"; }
  [ "$(tail -c 1 gimg/$f.caption | od -An -c | tr -d ' ')" = '\n' ] || good=0
  grep -qxF "{\"image\":\"gimg/$f.png\",\"caption\":\"$w\"}" git.out || good=0
done
[ $rc = 0 ] && [ $good = 1 ] && [ "$(wc -l < git.out)" = 5 ] && ok caption_git_matches_reference \
  || nok caption_git_matches_reference "exit $rc: $(tail -1 git.err)"
grep -q 'model.safetensors: GIT, 32x32 input' git.err && ok caption_git_model_line || nok caption_git_model_line "$(head -1 git.err)"
# --max_length 10 with and without --remove_words, the records of the reference pipeline
for rw in 0 1; do
  opt=; [ $rw = 1 ] && opt=--remove_words
  "$SD" --model gm --max_length 10 $opt --no-sidecar gimg > gml$rw.out 2>/dev/null; rc=$?
  good=1
  for f in $G5; do grep -qxF "{\"image\":\"gimg/$f.png\",\"caption\":\"$(gwant $f 10 $rw)\"}" gml$rw.out || good=0; done
  [ $rc = 0 ] && [ $good = 1 ] && ok caption_git_max_length_remove_words_$rw || nok caption_git_max_length_remove_words_$rw
done
# batches and threads change nothing
"$SD" --model gm --no-sidecar --batch_size 3 --threads 1 gimg > gb1.out 2>/dev/null
"$SD" --model gm/model.safetensors --no-sidecar --batch_size 2 --threads 2 gimg > gb2.out 2>/dev/null
cmp -s git.out gb1.out && cmp -s git.out gb2.out && ok caption_git_batch_threads_same || nok caption_git_batch_threads_same
# records: keys kept, caption replaced; a bad record is skipped (exit 3)
printf '{"image":"gimg/c_640x480.png","k":1,"caption":"old"}\n{"image":"missing.png"}\n' | "$SD" --model gm --no-sidecar > grec.out 2> grec.err; rc=$?
[ $rc = 3 ] && [ "$(cat grec.out)" = "{\"image\":\"gimg/c_640x480.png\",\"k\":1,\"caption\":\"$(gwant c_640x480 50 0)\"}" ] &&
  grep -q 'error (at stdin:2): missing.png' grec.err && ok caption_git_records || nok caption_git_records "exit $rc $(cat grec.err)"
# --device cuda: the CPU's records (SD_FAKE_CUDA=1 runs the CUDA path on the CPU emulation)
"$SD" --model gm --no-sidecar --device cuda gimg > gcu.out 2> gcu.err; rc=$?
if [ $rc = 0 ]; then
  cmp -s git.out gcu.out && ok caption_git_device_cuda_same_records || nok caption_git_device_cuda_same_records "$(tail -2 gcu.err)"
else
  [ $rc = 1 ] && grep -Eq "CUDA support|CUDA: no device" gcu.err && ok caption_git_device_cuda_unavailable ||
    nok caption_git_device_cuda_unavailable "exit $rc: $(tail -2 gcu.err)"
fi
# the other family's options are usage errors
for opt in --beam_search '--num_beams 3' '--top_p 0.5' '--min_length 3' '--seed 1'; do
  "$SD" --model gm $opt --no-sidecar gimg > /dev/null 2> e.err; rc=$?
  [ $rc = 2 ] && grep -q 'is a BLIP option' e.err || { nok caption_git_refuses_blip_options "$opt: exit $rc $(cat e.err)"; opt=; break; }
done
[ -n "$opt" ] && ok caption_git_refuses_blip_options
"$SD" --model m $L --remove_words --no-sidecar img > /dev/null 2> e.err; rc=$?
[ $rc = 2 ] && grep -q 'remove_words is a GIT option' e.err && ok caption_blip_refuses_remove_words || nok caption_blip_refuses_remove_words "exit $rc"
"$SD" --model gm --model_id gm gimg > /dev/null 2> e.err; [ $? = 2 ] && grep -q 'not both' e.err && ok caption_git_model_and_model_id \
  || nok caption_git_model_and_model_id
"$SD" --model_id microsoft/git-large-textcaps gimg > /dev/null 2> e.err; [ $? = 2 ] && grep -q 'downloads nothing' e.err \
  && ok caption_git_repo_id_refused || nok caption_git_repo_id_refused "$(cat e.err)"
"$SD" --model_id https://huggingface.co/microsoft/git-large-textcaps gimg > /dev/null 2> e.err; [ $? = 2 ] \
  && grep -q 'downloads nothing' e.err && ok caption_git_url_refused || nok caption_git_url_refused
"$SD" --model gm --max_length 65 gimg > /dev/null 2> e.err; [ $? = 2 ] && grep -q '64 positions' e.err \
  && ok caption_git_max_length_positions || nok caption_git_max_length_positions "$(cat e.err)"
# damaged files: fatal, nothing written
ls gimg/*.caption > gbefore.lst
mkdir -p gm2 && head -c 20000 gm/model.safetensors > gm2/model.safetensors && cp gm/vocab.txt gm2/
"$SD" --model gm2 gimg > /dev/null 2> e.err; [ $? = 1 ] && grep -q 'gm2/model.safetensors' e.err && ok caption_git_truncated_model \
  || nok caption_git_truncated_model "$(cat e.err)"
mkdir -p gm3 && cp gm/model.safetensors gm3/ && head -n 150 gm/vocab.txt > gm3/vocab.txt
"$SD" --model gm3 gimg > /dev/null 2> e.err; [ $? = 1 ] && grep -q '150 tokens but' e.err && ok caption_git_vocab_mismatch \
  || nok caption_git_vocab_mismatch "$(cat e.err)"
ls gimg/*.caption | cmp -s - gbefore.lst && ok caption_git_fatal_writes_nothing || nok caption_git_fatal_writes_nothing
