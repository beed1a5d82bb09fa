#!/usr/bin/env bash
# sd-merge-meta end to end: the seed guide's three methods and the folder convention give the
# records the reference trains on; kohya JSON round trips; merging, cleaning, filters; bad input
# gives one-line errors and the exit statuses of architecture.md.
. "$(dirname "$0")/lib.sh"
t_init merge_meta
M="${SD_BIN:-$root/$build/bin}/sd-merge-meta"
t_need "$M"
cd "$tmp" || exit 1
fail=0
check() { if eval "$2"; then ok "$1"; else nok "$1"; fail=1; fi; }  # check NAME SHELL-CONDITION
command -v jq >/dev/null || { ok "merge_meta_cli # SKIP jq not installed"; exit 0; }

# Python's json.dump writes no final newline; heredocs have one.
nonl() { local t; t=$(cat "$1"); printf '%s' "$t" > "$1"; }
# A PNG header (signature + IHDR) of W x H: enough for header probes.
png() {  # $1 path $2 w $3 h
  printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR' >"$1"
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($2>>24&255)) $(($2>>16&255)) $(($2>>8&255)) $(($2&255)))" >>"$1"
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($3>>24&255)) $(($3>>16&255)) $(($3>>8&255)) $(($3&255)))" >>"$1"
  printf '\x08\x02\x00\x00\x00\x00\x00\x00\x00' >>"$1"
}

# ---- data: 3 training images (one with a caption), 5 regularisation images -------------------
mkdir -p hoge reg "train/10_hoge girl" "regs/1_girl" piyo
for i in 1 2 3; do png "hoge/h$i.png" 512 768; cp "hoge/h$i.png" "train/10_hoge girl/h$i.png"; done
for i in 1 2 3 4 5; do png "reg/r$i.png" 512 512; cp "reg/r$i.png" "regs/1_girl/r$i.png"; done
echo "hoge girl in a white dress" > hoge/h2.caption
cp hoge/h2.caption "train/10_hoge girl/h2.caption"
echo "ignored: not an image" > hoge/notes.md

cat > db1.toml <<'T'
[general]
enable_bucket = true                        # aspect ratio bucketing

[[datasets]]
resolution = 512
batch_size = 4

  [[datasets.subsets]]
  image_dir = 'hoge'
  class_tokens = 'hoge girl'
  num_repeats = 10

  [[datasets.subsets]]
  is_reg = true
  image_dir = 'reg'
  class_tokens = 'girl'
  num_repeats = 1
T
"$M" --dataset_config db1.toml > db1.jsonl 2>db1.err; rc=$?
check seed_db_class_identifier_exit "[ $rc = 0 ]"
check seed_db_class_identifier_records "[ \"\$(jq -c '[.image, .caption, .num_repeats, .is_reg, .dataset, .subset]' db1.jsonl | tr -d '\n')\" = '$(printf '%s' \
'["hoge/h1.png","hoge girl",10,false,0,0]["hoge/h2.png","hoge girl in a white dress",10,false,0,0]["hoge/h3.png","hoge girl",10,false,0,0]'\
'["reg/r1.png","girl",1,true,0,1]["reg/r2.png","girl",1,true,0,1]["reg/r3.png","girl",1,true,0,1]["reg/r4.png","girl",1,true,0,1]["reg/r5.png","girl",1,true,0,1]')' ]"
check seed_db_dataset_options "[ \"\$(jq -c '[.resolution, .batch_size, .enable_bucket, .min_bucket_reso, .max_bucket_reso, .bucket_reso_steps, .method, .class_tokens]' db1.jsonl | sort -u | tr -d '\n')\" = '[[512,512],4,true,256,1024,64,\"dreambooth\",\"girl\"][[512,512],4,true,256,1024,64,\"dreambooth\",\"hoge girl\"]' ]"

# the caption method: .caption files, class_tokens only for the reg subset
cat > db2.toml <<'T'
[general]
enable_bucket = true
[[datasets]]
resolution = 512
batch_size = 4
  [[datasets.subsets]]
  image_dir = 'hoge'
  caption_extension = '.caption'
  num_repeats = 10
  [[datasets.subsets]]
  is_reg = true
  image_dir = 'reg'
  class_tokens = 'girl'
  num_repeats = 1
T
"$M" --dataset_config db2.toml > db2.jsonl 2>db2.err; rc=$?
check seed_db_caption_exit "[ $rc = 0 ]"
check seed_db_caption_records "[ \"\$(jq -r '.caption' db2.jsonl | head -3 | tr '\n' '|')\" = '|hoge girl in a white dress||' ]"
check seed_db_caption_warns_empty "grep -q 'neither a caption file' db2.err && grep -q 'hoge/h1.png' db2.err"

# fine tuning with metadata
for i in 1 2; do png "piyo/p$i.png" 640 480; done
cat > piyo/piyo_md.json <<'J'
{
  "p1": {
    "caption": "a cartoon of a frog",
    "tags": "open mouth, simple background, frog"
  },
  "p2": {
    "caption": "a photo",
    "train_resolution": [
      512,
      512
    ]
  }
}
J
nonl piyo/piyo_md.json
cat > ft.toml <<'T'
[general]
shuffle_caption = true
keep_tokens = 1

[[datasets]]
resolution = 512
batch_size = 4

  [[datasets.subsets]]
  image_dir = 'piyo'
  metadata_file = 'piyo/piyo_md.json'
T
"$M" --dataset_config ft.toml > ft.jsonl 2>ft.err; rc=$?
check seed_fine_tuning_exit "[ $rc = 0 ]"
check seed_fine_tuning_records "[ \"\$(jq -c '[.image, .caption, .tags, .num_repeats, .shuffle_caption, .keep_tokens, .method, has(\"is_reg\")]' ft.jsonl | tr -d '\n')\" = \
'[\"piyo/p1.png\",\"a cartoon of a frog\",\"open mouth, simple background, frog\",1,true,1,\"fine_tuning\",false][\"piyo/p2.png\",\"a photo\",null,1,true,1,\"fine_tuning\",false]' ]"
# the legacy form of the same: --in_json with --train_data_dir
"$M" --in_json piyo/piyo_md.json --train_data_dir piyo --shuffle_caption --keep_tokens 1 --resolution 512 --train_batch_size 4 > ft2.jsonl 2>/dev/null
check fine_tuning_legacy_same "[ \"\$(jq -c 'del(.dataset, .subset)' ft.jsonl)\" = \"\$(jq -c 'del(.dataset, .subset)' ft2.jsonl)\" ]"

# the folder convention gives what the equivalent config gives
"$M" --train_data_dir train --reg_data_dir regs --resolution 512 --train_batch_size 4 --enable_bucket > fold.jsonl 2>fold.err; rc=$?
check folder_convention_exit "[ $rc = 0 ]"
check folder_convention_same_as_config "[ \"\$(jq -c '[.caption, .num_repeats, .is_reg, .class_tokens, .resolution, .batch_size, .enable_bucket, (.image | split(\"/\") | last)]' fold.jsonl)\" = \"\$(jq -c '[.caption, .num_repeats, .is_reg, .class_tokens, .resolution, .batch_size, .enable_bucket, (.image | split(\"/\") | last)]' db1.jsonl)\" ]"
check folder_convention_paths "[ \"\$(jq -r .image fold.jsonl | head -1)\" = 'train/10_hoge girl/h1.png' ]"
mkdir -p flat && png flat/a.png 64 64
"$M" --train_data_dir flat > /dev/null 2>flat.err
check folder_convention_parent_hint "grep -q 'must be the parent' flat.err"

# ---- kohya JSON round trips -----------------------------------------------------------------
"$M" --in_json piyo/piyo_md.json --train_data_dir piyo | "$M" --format kohya-json -o rt.json 2>rt.err
check kohya_roundtrip_stem_keys "cmp -s rt.json piyo/piyo_md.json"
cat > full.json <<'J'
{
  "piyo/p1.png": {
    "caption": "\u00e9t\u00e9 \"quoted\"\nline",
    "tags": "a, b",
    "train_resolution": [
      512,
      768
    ],
    "image_size": [
      640,
      480
    ],
    "extra": {
      "n": null,
      "f": 0.25,
      "e": []
    }
  },
  "unresolved/stem": {}
}
J
nonl full.json
"$M" --in_json full.json | "$M" --format kohya-json --full_path > rt2.json
check kohya_roundtrip_full_path "cmp -s rt2.json full.json"
"$M" --in_json full.json --format kohya-json --full_path -o rt3.json
check kohya_direct_roundtrip "cmp -s rt3.json full.json"
printf '{"image_path": "piyo/p1.png", "caption": "c", "image_size": [640, 480]}\n' > m.jsonl
check in_json_jsonl "[ \"\$(\"$M\" --in_json m.jsonl)\" = '{\"image\":\"piyo/p1.png\",\"caption\":\"c\",\"image_size\":[640,480]}' ]"

# ---- merging sidecars (merge_captions + merge_dd_tags + clean) -------------------------------
mkdir -p md/sub
png md/a.png 8 8; png md/b.JPG 8 8; png md/sub/c.png 8 8; png md/d.webp 8 8
echo "a cartoon of a frog" > md/a.caption
printf 'open_mouth, simple_background, frog, rating:safe\n' > md/a.txt
printf '  anime girl  \n' > md/b.caption
"$M" --full_path md --clean --format kohya-json -o md.json; rc=$?
cat > md.want <<'J'
{
  "md/a.png": {
    "caption": "a cartoon of a frog",
    "tags": "open mouth, simple background, frog"
  },
  "md/b.JPG": {
    "caption": "girl"
  },
  "md/d.webp": {}
}
J
nonl md.want
check merge_sidecars_clean "[ $rc = 0 ] && cmp -s md.json md.want"
check merge_recursive "[ \"\$(\"$M\" --recursive md | jq -r .image | tr '\n' ' ')\" = 'md/a.png md/b.JPG md/d.webp md/sub/c.png ' ]"
# existing metadata: sidecars win by default, --prefer existing keeps the metadata
printf '{"a": {"caption": "old", "tags": "x"}, "zz": {"caption": "kept"}}' > old.json
"$M" md --in_json old.json --format kohya-json -o new.json
check merge_into_in_json "[ \"\$(jq -c . new.json)\" = '{\"a\":{\"caption\":\"a cartoon of a frog\",\"tags\":\"open_mouth, simple_background, frog, rating:safe\"},\"zz\":{\"caption\":\"kept\"},\"b\":{\"caption\":\"anime girl\"},\"d\":{}}' ]"
"$M" md --in_json old.json --prefer existing --format kohya-json -o new2.json
check merge_prefer_existing "[ \"\$(jq -c .a new2.json)\" = '{\"caption\":\"old\",\"tags\":\"x\"}' ]"

# stdin: paths and records mixed, unknown keys pass through, --filter, --probe_size
out=$(printf 'md/a.png\n\n{"image":"md/b.JPG","note":"keep","caption":"mine"}\n' | "$M" --probe_size --filter 'select(.image != "md/zz") | .n = 1')
check stdin_paths_and_records "[ \"\$out\" = '{\"image\":\"md/a.png\",\"caption\":\"a cartoon of a frog\",\"tags\":\"open_mouth, simple_background, frog, rating:safe\",\"image_size\":[8,8],\"n\":1}
{\"image\":\"md/b.JPG\",\"note\":\"keep\",\"caption\":\"mine\",\"image_size\":[8,8],\"n\":1}' ]"
"$M" md -o out.jsonl; rc=$?
check output_file "[ $rc = 0 ] && [ \$(wc -l < out.jsonl) = 3 ] && ! ls .out.jsonl.tmp* 2>/dev/null"

# cache_info: metadata_cache.json written, then read instead of the folder
cat > ci.toml <<'T'
[[datasets]]
[[datasets.subsets]]
image_dir = 'hoge'
cache_info = true
class_tokens = 'x'
T
"$M" --dataset_config ci.toml > ci1.jsonl
check cache_info_written "[ -f hoge/metadata_cache.json ] && [ \"\$(jq -c '.[\"hoge/h1.png\"]' hoge/metadata_cache.json)\" = '{\"caption\":\"x\",\"resolution\":[512,768]}' ]"
rm hoge/h3.png; "$M" --dataset_config ci.toml > ci2.jsonl
check cache_info_read "cmp -s ci1.jsonl ci2.jsonl"
rm hoge/metadata_cache.json; png hoge/h3.png 512 768

# JSON dataset config; wildcard captions and the face-crop caption file; kohya JSON of a dataset
mkdir -p wc; png wc/a.png 8 8; png wc/b_1_2_3_4.png 8 8
printf 'first\n\n  second  \n' > wc/a.txt; printf 'shared\n' > wc/b.txt
cat > wc.json <<'J'
{"general": {"caption_extension": "txt"},
 "datasets": [{"resolution": [512, 768], "subsets": [{"image_dir": "wc", "enable_wildcard": true, "num_repeats": 2}]}]}
J
"$M" --dataset_config wc.json > wc.jsonl; rc=$?
check json_config_wildcard "[ $rc = 0 ] && [ \"\$(jq -c '[.caption, .resolution, .num_repeats, .enable_wildcard]' wc.jsonl | tr -d '\n')\" = '[\"first\\nsecond\",[512,768],2,true][\"shared\",[512,768],2,true]' ]"
"$M" --dataset_config wc.json --format kohya-json > wc.kohya
check kohya_json_of_dataset "[ \"\$(jq -c . wc.kohya)\" = '{\"a\":{\"caption\":\"first\\nsecond\"},\"b_1_2_3_4\":{\"caption\":\"shared\"}}' ]"
# mask (ControlNet) subsets need --masked_loss; every image needs its conditioning image
mkdir -p cn/img cn/cond; png cn/img/a.png 8 8; png cn/img/b.png 8 8; png cn/cond/a.png 8 8; png cn/cond/c.png 8 8
printf '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "cn/img"\nconditioning_data_dir = "cn/cond"\n' > cn.toml
"$M" --dataset_config cn.toml > /dev/null 2>cn1.err; rc1=$?
"$M" --dataset_config cn.toml --masked_loss > cn.jsonl 2>cn2.err; rc2=$?
check controlnet_subsets "[ $rc1 = 1 ] && grep -q 'need --masked_loss' cn1.err && [ $rc2 = 3 ] && [ \"\$(jq -c '[.image, .conditioning_image, .method]' cn.jsonl)\" = '[\"cn/img/a.png\",\"cn/cond/a.png\",\"controlnet\"]' ] && grep -q 'no conditioning image named b' cn2.err && grep -q 'cn/cond/c.png): conditioning image without a training image' cn2.err"
# two conditioning images with one stem: the first in sorted order pairs, the other is not "without a training image"
# (the reference compares paths without extension); conditioning_image keeps the directory as given, as image does
mkdir -p cn/cond2; png cn/cond2/a.png 8 8; png cn/cond2/a.jpg 8 8; png cn/cond2/b.png 8 8
printf '[[datasets]]\nresize_interpolation = "area"\n[[datasets.subsets]]\nimage_dir = "cn/img"\nconditioning_data_dir = "cn/cond2"\nresize_interpolation = "box"\n' > cn2.toml
"$M" --dataset_config cn2.toml --masked_loss > cn2.jsonl 2>cn3.err; rc3=$?
check controlnet_same_stem "[ $rc3 = 0 ] && ! grep -q 'without a training image' cn3.err && [ \"\$(jq -r .conditioning_image cn2.jsonl | tr '\n' ' ')\" = 'cn/cond2/a.jpg cn/cond2/b.png ' ]"
# pairing spans the dataset, as the reference's: two subsets share a conditioning_data_dir; an extra image is named once
mkdir -p cn/img2 cn/cond3; png cn/img2/c.png 8 8; for x in a b c d; do png cn/cond3/$x.png 8 8; done
printf '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "cn/img"\nconditioning_data_dir = "cn/cond3"\n[[datasets.subsets]]\nimage_dir = "cn/img2"\nconditioning_data_dir = "./cn/cond3"\n' > cn3.toml
"$M" --dataset_config cn3.toml --masked_loss > cn3.jsonl 2>cn4.err; rc4=$?
check controlnet_shared_dir "[ $rc4 = 3 ] && [ \"\$(jq -r .conditioning_image cn3.jsonl | tr '\n' ' ')\" = 'cn/cond3/a.png cn/cond3/b.png ./cn/cond3/c.png ' ] && [ \"\$(grep -c 'without a training image' cn4.err)\" = 1 ] && grep -q 'cn/cond3/d.png): conditioning image without a training image' cn4.err"
# the dataset's resize_interpolation for the conditioning image (the subset's is the image's); not in kohya-json
"$M" --dataset_config cn2.toml --masked_loss --format kohya-json > cn2.kohya 2>/dev/null
check controlnet_resize_interpolation "[ \"\$(jq -c '[.resize_interpolation, .conditioning_resize_interpolation]' cn2.jsonl | sort -u)\" = '[\"box\",\"area\"]' ] && [ \"\$(jq -c '[.[] | keys[]] | unique' cn2.kohya)\" = '[\"caption\"]' ]"
# --config_file of a training run: the keys sd-merge-meta does not know are ignored with a warning
printf 'learning_rate = 1e-4\nresolution = "640"\nflip_aug = true\n' > args.toml
"$M" --config_file args.toml --dataset_config db1.toml > cf.jsonl 2>cf.err; rc=$?
check config_file_shared "[ $rc = 0 ] && grep -q 'ignoring keys sd-merge-meta does not use: learning_rate' cf.err && [ \"\$(jq -c '[.resolution, .flip_aug]' cf.jsonl | sort -u)\" = '[[512,512],true]' ]"
# stdin records merged into --in_json entries by stem; the record's keys over the entry's
out=$(printf '{"image":"md/a.png","caption":"from record","x":1}\n' | "$M" --in_json old.json - --format kohya-json)
check stdin_records_into_in_json "[ \"\$(printf '%s' \"\$out\" | jq -c .a)\" = '{\"caption\":\"from record\",\"tags\":\"x\",\"x\":1}' ]"

# ---- bad input --------------------------------------------------------------------------------
# missing directory: an error naming it, the other records still written, exit 3
"$M" md nodir > bad1.jsonl 2>bad1.err; rc=$?
check missing_dir "[ $rc = 3 ] && [ \$(wc -l < bad1.jsonl) = 3 ] && grep -q '^sd-merge-meta: error (at nodir): nodir: No such file or directory$' bad1.err"
# non-UTF-8 and unreadable sidecars
mkdir -p bs; png bs/a.png 8 8; png bs/b.png 8 8; png bs/c.png 8 8
printf 'caf\xe9\n' > bs/b.caption; ln -s c.txt bs/c.txt
"$M" bs > bad2.jsonl 2>bad2.err; rc=$?
check bad_sidecars "[ $rc = 3 ] && [ \"\$(jq -r .image bad2.jsonl)\" = bs/a.png ] && grep -q 'bs/b.caption: not valid UTF-8 (byte 0xe9 at offset 3)' bad2.err && grep -q 'bs/c.txt: Too many levels of symbolic links' bad2.err && [ \$(wc -l < bad2.err) = 2 ]"
# a DreamBooth caption file that is empty
mkdir -p de; png de/a.png 8 8; png de/b.png 8 8; : > de/a.caption
printf '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "de"\n' > de.toml
"$M" --dataset_config de.toml > de.jsonl 2>de.err; rc=$?
check empty_caption_file "[ $rc = 3 ] && [ \$(wc -l < de.jsonl) = 1 ] && grep -q 'de/a.caption: caption file is empty' de.err"
# malformed TOML / JSON, unknown key, wrong type: fatal with file:line
printf '[general]\nshuffle_caption = \n' > bad.toml
"$M" --dataset_config bad.toml > /dev/null 2>bad3.err; rc=$?
check malformed_toml "[ $rc = 1 ] && grep -q '^sd-merge-meta: bad.toml:2:19: ' bad3.err && [ \$(wc -l < bad3.err) = 1 ]"
printf '{"a": {"caption": "x"},\n "b": }' > bad.json
"$M" --in_json bad.json > /dev/null 2>bad4.err; rc=$?
check malformed_json "[ $rc = 1 ] && grep -q '^sd-merge-meta: bad.json:2:7: invalid JSON' bad4.err"
sed 's/num_repeats = 10/num_repeat = 10/' db1.toml > unk.toml
"$M" --dataset_config unk.toml > /dev/null 2>bad5.err; rc=$?
check unknown_config_key "[ $rc = 1 ] && grep -qx \"sd-merge-meta: unk.toml:11: datasets\\[0\\].subsets\\[0\\].num_repeat: unknown key (did you mean 'num_repeats'?)\" bad5.err"
printf '[[datasets]]\nresolution = "512"\n' > ty.toml
"$M" --dataset_config ty.toml > /dev/null 2>bad6.err; rc=$?
check wrong_type "[ $rc = 1 ] && grep -q 'ty.toml:2: datasets\[0\].resolution: expected an integer or \[width, height\] integers, got string' bad6.err"
# duplicate stems in the reference's JSON (keys by stem)
mkdir -p dup/x dup/y; png dup/x/a.png 8 8; png dup/y/a.png 8 8; png dup/y/b.png 8 8
"$M" --recursive dup --format kohya-json -o dup.json 2>bad7.err; rc=$?
check duplicate_stems "[ $rc = 3 ] && [ \"\$(jq -c 'keys' dup.json)\" = '[\"a\",\"b\"]' ] && grep -q \"dup/y/a.png: duplicate stem 'a' (also dup/x/a.png); use --full_path\" bad7.err"
"$M" --recursive dup --full_path --format kohya-json -o dup2.json 2>/dev/null; rc=$?
check duplicate_stems_full_path "[ $rc = 0 ] && [ \"\$(jq 'length' dup2.json)\" = 3 ]"
# missing image on stdin, a bad JSON line: the rest still comes out
out=$(printf 'md/a.png\nmd/none.png\n{"image": \n{"image":"md/d.webp"}\n' | "$M" 2>bad8.err); rc=$?
check missing_image "[ $rc = 3 ] && [ \$(printf '%s\n' \"\$out\" | wc -l) = 2 ] && grep -q '^sd-merge-meta: error (at stdin:2): md/none.png: No such file or directory$' bad8.err && grep -q 'error (at stdin:3): invalid JSON' bad8.err"
# missing image of a metadata entry
printf '{"p1": {}, "nothere": {"caption": "x"}}' > miss.json
"$M" --in_json miss.json --train_data_dir piyo > miss.jsonl 2>bad9.err; rc=$?
check missing_metadata_image "[ $rc = 3 ] && [ \$(wc -l < miss.jsonl) = 1 ] && grep -q \"entry 'nothere': image not found in piyo\" bad9.err"
# fatal: a missing --train_data_dir; usage errors: unknown option, bad jq program
"$M" --train_data_dir nowhere > /dev/null 2>bad10.err; rc=$?
check missing_train_data_dir "[ $rc = 1 ] && grep -q 'nowhere: No such file or directory' bad10.err"
"$M" --bogus > /dev/null 2>&1; rc1=$?
"$M" --filter '.a |' md > /dev/null 2>&1; rc2=$?
check usage_errors "[ $rc1 = 2 ] && [ $rc2 = 2 ]"
# a failed run leaves no output file
"$M" --dataset_config bad.toml -o never.json 2>/dev/null
check no_partial_output "[ ! -e never.json ] && ! ls .never.json* 2>/dev/null"

# SIGTERM: exit 143 and nothing at -o's path; SIGINT: 130, the records written so far stay
(echo md/a.png; sleep 3) | "$M" -o sig.jsonl 2>/dev/null & pid=$!
sleep 0.7; kill -TERM $pid; wait $pid; rc=$?
check sigterm "[ $rc = 143 ] && [ ! -e sig.jsonl ] && ! ls .sig.jsonl* 2>/dev/null"
(echo md/a.png; sleep 3) | "$M" > sig2.jsonl 2>/dev/null & pid=$!
sleep 0.7; kill -INT $pid; wait $pid; rc=$?
check sigint "[ $rc = 130 ]"

exit $fail
