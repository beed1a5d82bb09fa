#!/usr/bin/env bash
# sd-bucket --write-images: output files have the bucket's size, the records point at them and
# keep source_image, --threads 1 and 2 give identical files and records, the pixels equal the
# reference's trim_and_resize_if_required (PIL LANCZOS / OpenCV INTER_AREA by default, and each
# forced OpenCV filter: nearest, linear, cubic, area; run with
# /usr/bin/python3 when it has PIL, numpy and cv2), and decode failures, name collisions and
# overwriting the source are per-record errors.
. "$(dirname "$0")/lib.sh"
t_init bucket_images
bin="$build/bin/sd-bucket"
mk="$build/tests/unit/test_bucket"
t_need "$bin" "$mk"
cd "$tmp"
SD=$OLDPWD/$bin
MK=$OLDPWD/$mk

mkdir -p src/a src/b
sizes="1200x800 1000x700 768x1024 300x400 2000x500 512x512 640x360 333x777 97x131 1030x1030"
: > in.jsonl
for s in $sizes; do
  "$MK" --mkimg "src/a/p$s.png" "${s%x*}" "${s#*x}" || { nok bucket_images_mkimg; exit 1; }
  echo "{\"image\":\"src/a/p$s.png\",\"id\":\"$s\"}" >> in.jsonl
done
"$MK" --mkimg src/b/p512x512.png 512 768          # same base name, other folder
"$MK" --mkimg src/b/rgba.png 300 200 4
"$MK" --mkimg src/b/j.jpg 1024 768
echo '{"image":"src/b/p512x512.png","id":"b"}' >> in.jsonl
echo '{"image":"src/b/rgba.png","alpha_mask":true,"id":"rgba"}' >> in.jsonl
echo '{"image":"./src/b/j.jpg","id":"jpg"}' >> in.jsonl

for t in 1 2; do
  "$SD" --resolution 512 --write-images "out$t" --threads $t < in.jsonl > "r$t.jsonl" 2> "e$t.txt"
  echo $? > "rc$t"
done
[ "$(cat rc1)" = 0 ] && [ "$(cat rc2)" = 0 ] && ok bucket_images_exit || { nok bucket_images_exit; cat e1.txt e2.txt | sed 's/^/#   /'; }
[ "$(wc -l < r1.jsonl)" = 13 ] && ok bucket_images_all_records || nok bucket_images_all_records
sed 's/out2/out1/g' r2.jsonl | cmp -s - r1.jsonl && ok bucket_images_records_threads_identical || nok bucket_images_records_threads_identical
diff -r out1 out2 > /dev/null && ok bucket_images_files_threads_identical || nok bucket_images_files_threads_identical
grep -q '"image":"out1/src/a/p1200x800.png","id":"1200x800","image_size":\[1200,800\],"bucket":\[640,384\].*"source_image":"src/a/p1200x800.png"}$' r1.jsonl \
  && ok bucket_images_record_keys || { nok bucket_images_record_keys; head -2 r1.jsonl | sed 's/^/#   /'; }
grep -q '"image":"out1/src/b/j.png"' r1.jsonl && ok bucket_images_dot_path || nok bucket_images_dot_path

# every written file has its record's bucket size (sizes read back through sd-bucket --reprobe)
sed 's/"image_size":\[[0-9]*,[0-9]*\],//' r1.jsonl | "$SD" --resolution 512 --reprobe > back.jsonl 2>/dev/null
bad=0
paste -d '\n' r1.jsonl back.jsonl | while read -r orig && read -r again; do
  b=$(echo "$orig" | grep -o '"bucket":\[[0-9]*,[0-9]*\]' | grep -o '\[.*')
  s=$(echo "$again" | grep -o '"image_size":\[[0-9]*,[0-9]*\]' | grep -o '\[.*')
  [ "$b" = "$s" ] || { echo "# $orig: file is $s, bucket $b"; echo bad; }
done > sizes.txt
grep -q '^bad' sizes.txt && { nok bucket_images_sizes; cat sizes.txt; } || ok bucket_images_sizes

# JPEG output, forced filter, RGBA stays PNG
grep -e p1200x800 -e rgba -e p97x131 in.jsonl > small.jsonl
"$SD" --resolution 512 --write-images outj --image-format jpeg --interpolation lanczos < small.jsonl > rj.jsonl 2>/dev/null
[ $? = 0 ] && [ -f outj/src/a/p1200x800.jpg ] && [ -f outj/src/b/rgba.png ] && ok bucket_images_jpeg || nok bucket_images_jpeg
grep -e p300x400 -e p97x131 in.jsonl > small2.jsonl
"$SD" --resolution 256 --min_bucket_reso 128 --write-images outa --interpolation area < small2.jsonl > ra.jsonl 2> ea.txt
rc=$?
[ $rc = 0 ] && [ "$(wc -l < ra.jsonl)" = 2 ] && [ -f outa/src/a/p97x131.png ] && ok bucket_images_area_enlarges \
  || { nok bucket_images_area_enlarges "exit $rc"; sed 's/^/#   /' ea.txt; }

# every OpenCV filter of the reference, forced, on all the images (pixels checked below)
for f in nearest linear cubic area; do
  "$SD" --resolution 512 --write-images "o_$f" --interpolation $f < in.jsonl > "r_$f.jsonl" 2> "e_$f.txt"
  rc=$?
  [ $rc = 0 ] && [ "$(wc -l < "r_$f.jsonl")" = 13 ] && ok "bucket_images_interp_$f" \
    || { nok "bucket_images_interp_$f" "exit $rc"; sed 's/^/#   /' "e_$f.txt"; }
done
if cmp -s o_linear/src/a/p1200x800.png o_cubic/src/a/p1200x800.png || cmp -s o_nearest/src/a/p97x131.png o_area/src/a/p97x131.png \
   || cmp -s o_area/src/a/p97x131.png out1/src/a/p97x131.png; then nok bucket_images_interp_differ; else ok bucket_images_interp_differ; fi

# a record's resize_interpolation wins over --interpolation; an unknown name fails that record
printf '%s\n' '{"image":"src/a/p97x131.png","resize_interpolation":"lanczos"}' '{"image":"src/a/p97x131.png","resize_interpolation":"lanczos4"}' \
  | "$SD" --resolution 256 --min_bucket_reso 128 --write-images outi --interpolation area > ri.jsonl 2> ei.txt
rc=$?
[ $rc = 3 ] && [ "$(wc -l < ri.jsonl)" = 1 ] && grep -q "error (at stdin:2): key 'resize_interpolation': unknown interpolation 'lanczos4'" ei.txt \
  && ok bucket_images_record_interpolation || { nok bucket_images_record_interpolation "exit $rc"; sed 's/^/#   /' ei.txt; }
printf '%s\n' '{"image":"src/a/p1200x800.png","resize_interpolation":"bicubic"}' \
  | "$SD" --resolution 512 --write-images outk --interpolation nearest > rk.jsonl 2> ek.txt
rc=$?
[ $rc = 0 ] && cmp -s outk/src/a/p1200x800.png o_cubic/src/a/p1200x800.png && ok bucket_images_record_interpolation_wins \
  || { nok bucket_images_record_interpolation_wins "exit $rc"; sed 's/^/#   /' ek.txt; }

# per-record errors in the write stage
head -c 400 src/a/p1200x800.png > trunc.png     # header intact, pixels cut
"$MK" --mkimg same.png 600 600
cat > bad.jsonl <<'EOF'
{"image":"trunc.png"}
{"image":"src/a/p640x360.png","image_size":[500,500]}
{"image":"src/a/p512x512.png","n":1}
{"image":"src/a/p512x512.png","n":2}
{"image":"src/a/p512x512.png","resolution":768}
{"image":"same.png"}
EOF
"$SD" --resolution 512 --write-images outb < bad.jsonl > rb.jsonl 2> eb.txt
rc=$?
[ $rc = 3 ] && ok bucket_images_errors_exit3 || nok bucket_images_errors_exit3 "exit $rc"
grep -q '^sd-bucket: error (at stdin:1): trunc.png: ' eb.txt && ok bucket_images_truncated || { nok bucket_images_truncated; sed 's/^/#   /' eb.txt; }
grep -q "^sd-bucket: error (at stdin:2): src/a/p640x360.png: the image is 640x360 but the record's image_size is \[500,500\]" eb.txt \
  && ok bucket_images_stale_size || nok bucket_images_stale_size
[ "$(grep -c '"image":"outb/src/a/p512x512.png"' rb.jsonl)" = 2 ] && ok bucket_images_same_plan_shared || nok bucket_images_same_plan_shared
grep -q '^sd-bucket: error (at stdin:5): outb/src/a/p512x512.png: output file already written for line 3 with a different source or bucket' eb.txt \
  && ok bucket_images_collision || nok bucket_images_collision
"$SD" --resolution 512 --write-images . < bad.jsonl 2> es.txt | grep -q same.png && nok bucket_images_no_overwrite_source
grep -q '^sd-bucket: error (at stdin:6): ./same.png: --write-images would overwrite the source image' es.txt \
  && ok bucket_images_no_overwrite_source || { nok bucket_images_no_overwrite_source; sed 's/^/#   /' es.txt; }

# pixels against the reference's own code path (PIL + OpenCV), PNG sources decode identically
py=/usr/bin/python3
if [ -x "$py" ]; then
  out=$("$py" - r1.jsonl:auto r_nearest.jsonl:nearest r_linear.jsonl:linear r_cubic.jsonl:cubic r_area.jsonl:area <<'EOF' 2>&1
import json, sys
try:
    import numpy as np, cv2
    from PIL import Image
except ImportError:
    sys.exit(77)
# trim_and_resize_if_required / resize_image of kohya-ss/sd-scripts (library/utils.py), transcribed
CV = {"nearest": cv2.INTER_NEAREST_EXACT, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
      "area": cv2.INTER_AREA}
def resize_image(image, w, h, rw, rh, interp):
    if interp == "auto":
        interp = "area" if w >= rw and h >= rh else "lanczos"
    if interp in CV:
        return cv2.resize(image, (rw, rh), interpolation=CV[interp])
    mode = "RGBA" if image.shape[2] == 4 else "RGB"
    return np.array(Image.fromarray(image, mode).resize((rw, rh), resample=Image.LANCZOS))
n = 0
recs = []
for arg in sys.argv[1:]:
    path, interp = arg.split(":")
    recs += [(json.loads(line), interp) for line in open(path)]
for r, interp in recs:
    im = Image.open(r["source_image"])
    im = im.convert("RGBA" if r.get("alpha_mask") else "RGB")
    a = np.array(im)
    h, w = a.shape[:2]
    rw, rh = r["resized"]
    bw, bh = r["bucket"]
    if (w, h) != (rw, rh):
        a = resize_image(a, w, h, rw, rh, interp)
    if a.shape[1] > bw:
        p = (a.shape[1] - bw) // 2
        a = a[:, p:p + bw]
    if a.shape[0] > bh:
        p = (a.shape[0] - bh) // 2
        a = a[p:p + bh]
    ours = np.array(Image.open(r["image"]))
    assert ours.shape == a.shape, (r["image"], ours.shape, a.shape)
    d = np.abs(ours.astype(int) - a.astype(int)).max()
    assert d == 0, (r["image"], "max diff", d)
    n += 1
print("%d images identical to the reference" % n)
EOF
  )
  rc=$?
  if [ $rc = 0 ]; then echo "# $out"; ok bucket_images_pixels_match_reference
  elif [ $rc = 77 ]; then echo "ok bucket_images_pixels_match_reference # SKIP PIL, numpy or cv2 missing"
  else echo "$out" | sed 's/^/# /'; nok bucket_images_pixels_match_reference; fi
else
  echo "ok bucket_images_pixels_match_reference # SKIP no /usr/bin/python3"
fi
exit 0
