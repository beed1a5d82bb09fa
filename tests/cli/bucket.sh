#!/usr/bin/env bash
# sd-bucket end to end: keys added per record (the worked examples of reference-behaviour.md
# §2.8 in modes A, B and C), unknown keys passed through in order, record options overriding
# the command line, per-record errors with line numbers and exit status 3, the bucket table on
# stderr and --stats. Images come from `test_bucket --mkimg` (tests/unit/test_bucket.c).
. "$(dirname "$0")/lib.sh"
t_init bucket
bin="$build/bin/sd-bucket"
mk="$build/tests/unit/test_bucket"
t_need "$bin" "$mk"
cd "$tmp"
SD=$OLDPWD/$bin
MK=$OLDPWD/$mk
for s in 1200x800 1000x700 768x1024 300x400 2000x500 40x300 512x512; do
  "$MK" --mkimg "i$s.png" "${s%x*}" "${s#*x}" || { echo "not ok bucket_mkimg"; exit 1; }
done
"$MK" --mkimg j1024x768.jpg 1024 768
printf 'GIF89a\001\000\001\000' > gif.gif
printf '\211PNG\r\n\032\n\000\000\000\rIHDR\000\000\000\000\000\000\000\001\010\002\000\000\000' > zero.png
head -c 20 i1200x800.png > trunc.png
: > empty.png

expect_line() {  # name, file, exact line
  if grep -qxF -- "$3" "$2"; then ok "$1"; else nok "$1" "missing line: $3"; sed 's/^/#   /' "$2"; fi
}

# ---- mode A worked examples, key order and pass-through ----------------------------------------
cat > a.jsonl <<'EOF'
{"z_first":1,"image":"i1200x800.png","caption":"a cat","nested":{"k":[1,2]}}
{"image":"i1000x700.png"}
{"image":"i768x1024.png","image_size":null}
{"image":"i300x400.png","tags":"x, y"}
{"image":"i2000x500.png"}
EOF
"$SD" --resolution 512 < a.jsonl > a.out 2> a.err
rc=$?
[ $rc = 0 ] && ok bucket_modeA_exit || nok bucket_modeA_exit "exit $rc"
expect_line bucket_modeA_1200x800 a.out '{"z_first":1,"image":"i1200x800.png","caption":"a cat","nested":{"k":[1,2]},"image_size":[1200,800],"bucket":[640,384],"resized":[640,427],"crop_ltrb":[32,0,608,384],"ar_error":0.16666666666666674}'
expect_line bucket_modeA_1000x700 a.out '{"image":"i1000x700.png","image_size":[1000,700],"bucket":[576,448],"resized":[640,448],"crop_ltrb":[0,22,576,425.2],"ar_error":-0.1428571428571428}'
expect_line bucket_modeA_768x1024_null_size a.out '{"image":"i768x1024.png","image_size":[768,1024],"bucket":[448,576],"resized":[448,597],"crop_ltrb":[8,0,440,576],"ar_error":0.02777777777777779}'
expect_line bucket_modeA_300x400 a.out '{"image":"i300x400.png","tags":"x, y","image_size":[300,400],"bucket":[448,576],"resized":[448,597],"crop_ltrb":[8,0,440,576],"ar_error":0.02777777777777779}'
expect_line bucket_modeA_2000x500 a.out '{"image":"i2000x500.png","image_size":[2000,500],"bucket":[1024,256],"resized":[1024,256],"crop_ltrb":[0,0,1024,256],"ar_error":0}'
[ "$(wc -l < a.out)" = 5 ] && head -1 a.out | grep -q '^{"z_first":1,"image":"i1200x800.png","caption":"a cat","nested":{"k":\[1,2\]},"image_size"' \
  && ok bucket_order_kept || nok bucket_order_kept
expect_line bucket_summary_table a.err 'sd-bucket: bucket 0: resolution (448, 576), count: 2'
expect_line bucket_summary_mean a.err 'sd-bucket: mean ar error (without repeats): 0.07301587301587302'

# ---- mode B (no upscale) and mode C (no bucket) --------------------------------------------------
"$SD" --resolution 512 --bucket_no_upscale < a.jsonl > b.out 2> b.err
expect_line bucket_modeB_1000x700 b.out '{"image":"i1000x700.png","image_size":[1000,700],"bucket":[576,384],"resized":[576,403],"crop_ltrb":[13,0,561.5714285714286,384],"ar_error":0.0714285714285714}'
expect_line bucket_modeB_1200x800 b.out '{"z_first":1,"image":"i1200x800.png","caption":"a cat","nested":{"k":[1,2]},"image_size":[1200,800],"bucket":[576,384],"resized":[576,384],"crop_ltrb":[0,0,576,384],"ar_error":0}'
expect_line bucket_modeB_768x1024 b.out '{"image":"i768x1024.png","image_size":[768,1024],"bucket":[384,512],"resized":[384,512],"crop_ltrb":[0,0,384,512],"ar_error":0}'
expect_line bucket_modeB_300x400 b.out '{"image":"i300x400.png","tags":"x, y","image_size":[300,400],"bucket":[256,384],"resized":[300,400],"crop_ltrb":[0,21,256,362.3333333333333],"ar_error":-0.08333333333333337}'
grep -q 'min_bucket_reso and max_bucket_reso are ignored' b.err && nok bucket_modeB_no_spurious_warning || ok bucket_modeB_no_spurious_warning
"$SD" --resolution 768,512 --no_bucket < a.jsonl > c.out 2> c.err
expect_line bucket_modeC_1000x700 c.out '{"image":"i1000x700.png","image_size":[1000,700],"bucket":[768,512],"resized":[768,538],"crop_ltrb":[18,0,749.4285714285714,512],"ar_error":0.0714285714285714}'
expect_line bucket_modeC_2000x500 c.out '{"image":"i2000x500.png","image_size":[2000,500],"bucket":[768,512],"resized":[2048,512],"crop_ltrb":[0,160,768,352],"ar_error":-2.5}'
"$SD" --resolution 768,512 --no-enable-bucket < a.jsonl > c2.out 2>/dev/null
cmp -s c.out c2.out && ok bucket_modeC_negated_flag || nok bucket_modeC_negated_flag

# ---- record options override the command line (as a subset's do) --------------------------------
cat > r.jsonl <<'EOF'
{"image":"i1000x700.png","resolution":512,"bucket_no_upscale":true}
{"image":"i1000x700.png","resolution":[768,512],"enable_bucket":false}
{"image":"i1000x700.png","bucket_reso_steps":32,"min_bucket_reso":320,"num_repeats":5}
{"image":"i1000x700.png","image_size":[100,100]}
EOF
"$SD" --resolution 1024 --stats st.json < r.jsonl > r.out 2> r.err
rc=$?
[ $rc = 0 ] && ok bucket_record_opts_exit || nok bucket_record_opts_exit "exit $rc"
expect_line bucket_record_resolution r.out '{"image":"i1000x700.png","resolution":512,"bucket_no_upscale":true,"image_size":[1000,700],"bucket":[576,384],"resized":[576,403],"crop_ltrb":[13,0,561.5714285714286,384],"ar_error":0.0714285714285714}'
expect_line bucket_record_no_bucket r.out '{"image":"i1000x700.png","resolution":[768,512],"enable_bucket":false,"image_size":[1000,700],"bucket":[768,512],"resized":[768,538],"crop_ltrb":[18,0,749.4285714285714,512],"ar_error":0.0714285714285714}'
grep -q '"bucket_reso_steps":32,"min_bucket_reso":320,"num_repeats":5,"image_size":\[1000,700\],"bucket":\[1024,704\],"resized":\[1024,717\],"crop_ltrb":\[9,0,1014.7142857142858,704\],"ar_error":0.025974025974025983}' r.out \
  && ok bucket_record_steps || { nok bucket_record_steps; sed 's/^/#   /' r.out; }
expect_line bucket_record_image_size_trusted r.out '{"image":"i1000x700.png","image_size":[100,100],"bucket":[1024,1024],"resized":[1024,1024],"crop_ltrb":[0,0,1024,1024],"ar_error":0}'
"$SD" --resolution 1024 --reprobe < r.jsonl 2>/dev/null | tail -1 | grep -q '"image_size":\[1000,700\]' \
  && ok bucket_reprobe || nok bucket_reprobe
expect_line bucket_summary_repeats r.err 'sd-bucket: bucket 2: resolution (1024, 704), count: 5'
if grep -q '"mean_img_ar_error":' st.json && grep -q '"images":4,"images_with_repeats":8,"skipped":0' st.json \
   && grep -q '"resolution":\[1024,704\],"count":5,"images":1' st.json; then ok bucket_stats_json
else nok bucket_stats_json; sed 's/^/#   /' st.json; fi

# ---- per-dataset tables (records from a dataset config carry "dataset") ---------------------------
cat > d.jsonl <<'EOF'
{"image":"i1200x800.png","dataset":0,"num_repeats":10}
{"image":"i300x400.png","dataset":0,"num_repeats":10}
{"image":"i1200x800.png","dataset":1,"resolution":[768,512]}
{"image":"i300x400.png","dataset":1,"resolution":[768,512]}
EOF
"$SD" --resolution 512 --stats dst.json < d.jsonl > /dev/null 2> d.err
if grep -qxF 'sd-bucket: [Dataset 1]' d.err && grep -qxF 'sd-bucket: bucket 1: resolution (640, 384), count: 10' d.err \
   && grep -qxF 'sd-bucket: bucket 1: resolution (768, 512), count: 1' d.err \
   && grep -q '"images":4,"images_with_repeats":22,"skipped":0,"datasets":\[{"buckets":{"0":{"resolution":\[448,576\],"count":10,"images":1}' dst.json \
   && grep -q '"dataset":1}\]}$' dst.json; then ok bucket_per_dataset
else nok bucket_per_dataset; sed 's/^/#   /' d.err dst.json; fi

# ---- per-record errors: line numbers, exit 3, the other records intact ---------------------------
cat > e.jsonl <<'EOF'
{"image":"i512x512.png","n":1}
{"image":"missing.png"}
{"image":"gif.gif"}
{"image":"zero.png"}

{"image":"trunc.png"}
{"image":"empty.png"}
{"caption":"no image"}
{"image":"i512x512.png","image_size":"512x512"}
not json
{"image":"i512x512.png","resolution":"big"}
{"image":"i40x300.png","bucket_no_upscale":true}
{"image":"i512x512.png","min_bucket_reso":600}
{"image":"i512x512.png","n":2}
EOF
"$SD" --resolution 512 < e.jsonl > e.out 2> e.err
rc=$?
[ $rc = 3 ] && ok bucket_errors_exit3 || nok bucket_errors_exit3 "exit $rc"
[ "$(wc -l < e.out)" = 2 ] && grep -q '"n":1' e.out && grep -q '"n":2' e.out && ok bucket_errors_others_intact \
  || { nok bucket_errors_others_intact; sed 's/^/#   /' e.out; }
experr() {  # name, pattern
  if grep -qE -- "$2" e.err; then ok "$1"; else nok "$1" "no stderr line matching: $2"; sed 's/^/#   /' e.err; fi
}
experr bucket_err_missing    '^sd-bucket: error \(at stdin:2\): missing.png: .*No such file'
experr bucket_err_unknown    '^sd-bucket: error \(at stdin:3\): gif.gif: unknown image format'
experr bucket_err_zero       '^sd-bucket: error \(at stdin:4\): zero.png: .*0'
experr bucket_err_truncated  '^sd-bucket: error \(at stdin:6\): trunc.png: '
experr bucket_err_empty      '^sd-bucket: error \(at stdin:7\): empty.png: '
experr bucket_err_no_image   "^sd-bucket: error \(at stdin:8\): key 'image': missing"
experr bucket_err_bad_size   "^sd-bucket: error \(at stdin:9\): key 'image_size': expected"
experr bucket_err_json       '^sd-bucket: error \(at stdin:10\): invalid JSON'
experr bucket_err_resolution "^sd-bucket: error \(at stdin:11\): key 'resolution': expected"
experr bucket_err_below_step '^sd-bucket: error \(at stdin:12\): i40x300.png: image size 40x300: the width \(40 after the resize\) is smaller than bucket_reso_steps 64'
experr bucket_err_min_reso   '^sd-bucket: error \(at stdin:13\): min_bucket_reso 576 is larger than'
experr bucket_err_summary    '^sd-bucket: 2 records done, 11 skipped$'
grep -q 'bucket":\[0' e.out && nok bucket_never_zero_bucket || ok bucket_never_zero_bucket

# input from files named on the command line, source names in messages
printf '{"image":"i512x512.png"}\n{"image":"nope.png"}\n' > f1.jsonl
"$SD" --resolution 512 a.jsonl f1.jsonl > f.out 2> f.err
rc=$?
[ $rc = 3 ] && [ "$(wc -l < f.out)" = 6 ] && grep -q '^sd-bucket: error (at f1.jsonl:2): nope.png' f.err \
  && ok bucket_files_named || { nok bucket_files_named "exit $rc"; sed 's/^/#   /' f.err; }

# ---- usage errors ------------------------------------------------------------------------------
"$SD" --resolution 512 --interpolation hamming < /dev/null > /dev/null 2> u.err
rc=$?
[ $rc = 2 ] && grep -q "unknown interpolation 'hamming' (choose from lanczos, nearest, bilinear" u.err && ok bucket_usage_interp || nok bucket_usage_interp "exit $rc"
for f in nearest bilinear linear bicubic cubic area box lanczos; do
  "$SD" --resolution 512 --interpolation $f < /dev/null > /dev/null 2> u.err || { echo "# $f: $(cat u.err)"; echo bad; }
done > ui.txt
grep -q '^bad' ui.txt && { nok bucket_usage_interp_names; cat ui.txt; } || ok bucket_usage_interp_names
"$SD" --resolution 0 < /dev/null > /dev/null 2>&1
[ $? = 2 ] && ok bucket_usage_resolution || nok bucket_usage_resolution
"$SD" --bucket-reso-steps 64 --min_bucket_reso 256 --help > h.out 2>&1
[ $? = 0 ] && grep -q -- '--write_images' h.out && ok bucket_help || nok bucket_help
# options from a training config file (tables flattened; keys of other tools warned about)
printf 'resolution = "768,512"\nlearning_rate = 1e-4\n[buckets]\nbucket_reso_steps = 32\nbucket_no_upscale = true\n' > cfg.toml
echo '{"image":"i1000x700.png"}' | "$SD" --config_file cfg.toml > cf.out 2> cf.err
[ $? = 0 ] && grep -qF '"bucket":[736,512],"resized":[736,515]' cf.out && grep -q 'cfg.toml: 1 key not used by sd-bucket: learning_rate' cf.err \
  && ok bucket_config_file || { nok bucket_config_file; sed 's/^/#   /' cf.out cf.err; }
# no resolution anywhere: per-record error
echo '{"image":"i512x512.png"}' | "$SD" > /dev/null 2> n.err
[ $? = 3 ] && grep -q "no resolution" n.err && ok bucket_no_resolution || nok bucket_no_resolution
# a JPEG probed from its header
echo '{"image":"j1024x768.jpg"}' | "$SD" --resolution 512 | grep -q '"image_size":\[1024,768\],"bucket":\[576,448\],"resized":\[597,448\]' \
  && ok bucket_jpeg_probe || nok bucket_jpeg_probe
exit 0
