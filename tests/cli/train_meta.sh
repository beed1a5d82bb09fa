#!/usr/bin/env bash
# sd-train --dataset_config: the metadata keys train_network.py writes for a dataset config
# (ss_datasets, ss_tag_frequency, ss_dataset_dirs right after ss_resize_interpolation; none of the
# legacy ss_batch_size_per_device ... ss_bucket_info), their values recomputed from the config and
# the caption files with the reference's code path transcribed (train_network.py "if use_user_config",
# train_util.set_tag_frequency, BucketManager), for a DreamBooth dataset with a subset and a reg subset.
# The byte-exact formatting is checked against the reference in tests/unit/test_train_meta.c.
. "$(dirname "$0")/lib.sh"
t_init train_meta
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build --build
cd "$tmp"
export SOURCE_DATE_EPOCH=1700000000
mkdir -p data/img/3_sks data/reg/1_dog
./tiny_model images data/img/3_sks 3 64 64 > /dev/null && ./tiny_model images data/reg/1_dog 2 64 96 > /dev/null
./tiny_model model tinyv.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null ||
  { nok train_meta_tiny_model; exit 1; }
cat > ds.toml <<'TOML'
[general]
resolution = 64
enable_bucket = true
min_bucket_reso = 64
max_bucket_reso = 128
bucket_reso_steps = 64
[[datasets]]
batch_size = 2
  [[datasets.subsets]]
  image_dir = "data/img/3_sks"
  num_repeats = 3
  class_tokens = "sks"
  shuffle_caption = true
  keep_tokens = 1
  caption_prefix = "photo of "
  flip_aug = true
  [[datasets.subsets]]
  image_dir = "data/reg/1_dog"
  is_reg = true
  class_tokens = "dog"
  secondary_separator = ";;;"
  caption_suffix = ", best"
TOML
"$bin" --method lora --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 --threads 1 \
  --learning_rate 1e-3 --dataset_config ds.toml --cache_latents --max_train_steps 1 --output_dir o 2> o.err; rc=$?
[ $rc = 0 ] && [ -f o/last.safetensors ] && ok train_meta_runs || { nok train_meta_runs "rc $rc $(tail -3 o.err)"; exit 1; }
out=$(python3 - o/last.safetensors <<'PY' 2>&1
import json, os, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
m = json.loads(b[8:8 + n])['__metadata__']
keys = list(m)
bad = []
i = keys.index('ss_resize_interpolation')
if keys[i + 1:i + 4] != ['ss_datasets', 'ss_tag_frequency', 'ss_dataset_dirs']:
    bad.append('order %r' % keys[i + 1:i + 4])
for k in ['ss_batch_size_per_device', 'ss_total_batch_size', 'ss_resolution', 'ss_reg_dataset_dirs', 'ss_bucket_info',
          'ss_keep_tokens', 'ss_enable_bucket']:
    if k in m: bad.append('legacy key ' + k)
# the reference's code path
def set_tag_frequency(tf, dir_name, captions):
    f = tf.get(dir_name, {}); tf[dir_name] = f
    for caption in captions:
        for tag in caption.split(","):
            tag = tag.strip()
            if tag:
                tag = tag.lower(); f[tag] = f.get(tag, 0) + 1
def captions(d):
    imgs = sorted(x for x in os.listdir(d) if x.endswith('.png'))
    out = []
    for x in imgs:
        c = os.path.join(d, os.path.splitext(x)[0] + '.caption')
        out.append(open(c).readline().rstrip('\n') if os.path.exists(c) else os.path.basename(d).split('_', 1)[1])
    return out
tf = {}
set_tag_frequency(tf, '3_sks', captions('data/img/3_sks'))
set_tag_frequency(tf, '1_dog', captions('data/reg/1_dog'))
common = dict(color_aug=False, random_crop=False, keep_tokens_separator="", enable_wildcard=False, resize_interpolation=None)
s0 = {"img_count": 3, "num_repeats": 3, "color_aug": False, "flip_aug": True, "random_crop": False, "shuffle_caption": True,
      "keep_tokens": 1, "keep_tokens_separator": "", "secondary_separator": None, "enable_wildcard": False,
      "caption_prefix": "photo of ", "caption_suffix": None, "resize_interpolation": None, "image_dir": "3_sks",
      "class_tokens": "sks", "is_reg": False}
s1 = {"img_count": 2, "num_repeats": 1, "color_aug": False, "flip_aug": False, "random_crop": False, "shuffle_caption": False,
      "keep_tokens": 0, "keep_tokens_separator": "", "secondary_separator": ";;;", "enable_wildcard": False,
      "caption_prefix": None, "caption_suffix": ", best", "resize_interpolation": None, "image_dir": "1_dog",
      "class_tokens": "dog", "is_reg": True}
# buckets: make_bucket_resolutions((64, 64), 64, 128, 64) = [(64, 64)]; 3 x 3 + reg balanced to 9
err = [0.0, 0.0, 0.0, abs(1.0 - 64 / 96), abs(1.0 - 64 / 96)]
ds = [{"is_dreambooth": True, "batch_size_per_device": 2, "num_train_images": 9, "num_reg_images": 2,
       "resolution": (64, 64), "enable_bucket": True, "min_bucket_reso": 64, "max_bucket_reso": 128, "tag_frequency": tf,
       "bucket_info": {"buckets": {0: {"resolution": (64, 64), "count": 18}}, "mean_img_ar_error": sum(err) / len(err)},
       "resize_interpolation": None, "subsets": [s0, s1]}]
want = {"ss_datasets": json.dumps(ds), "ss_tag_frequency": json.dumps(tf),
        "ss_dataset_dirs": json.dumps({"3_sks": {"n_repeats": 3, "img_count": 3}})}
for k, v in want.items():
    if m.get(k) != v: bad.append('%s:\n#  got  %s\n#  want %s' % (k, m.get(k), v))
print('\n# '.join(bad) if bad else 'same')
PY
)
[ "$out" = same ] && ok train_meta_dataset_config || nok train_meta_dataset_config "$out"
exit 0
