#!/usr/bin/python3
"""ss_datasets / ss_tag_frequency / ss_dataset_dirs of train_network.py (kohya-ss/sd-scripts,
train_network.py "if use_user_config:" block; set_tag_frequency of library/train_util.py),
transcribed, for two small datasets: a DreamBooth one with two subsets (one reg) and a
fine-tuning one. Output: tests/data/train_meta/datasets_golden.txt (three lines:
key<TAB>value). Run with /usr/bin/python3 from the repository root."""
import json
import os


class Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def set_tag_frequency(tf, dir_name, captions):
    frequency_for_dir = tf.get(dir_name, {})
    tf[dir_name] = frequency_for_dir
    for caption in captions:
        for tag in caption.split(","):
            tag = tag.strip()
            if tag:
                tag = tag.lower()
                frequency = frequency_for_dir.get(tag, 0)
                frequency_for_dir[tag] = frequency + 1


def sub(**kw):
    d = dict(color_aug=False, flip_aug=False, random_crop=False, shuffle_caption=False, keep_tokens=0,
             keep_tokens_separator="", secondary_separator=None, enable_wildcard=False, caption_prefix=None,
             caption_suffix=None, resize_interpolation=None, image_dir=None, class_tokens=None, is_reg=False,
             metadata_file=None)
    d.update(kw)
    return Obj(**d)


# dataset 0: DreamBooth, subsets "img/10_sks dog" (3 images, 10 repeats) and "reg/1_dog" (2 images, reg)
db_tf = {}
set_tag_frequency(db_tf, "10_sks dog", ["sks dog, Sitting, grass", "sks dog,running", "  sks dog , grass,, "])
set_tag_frequency(db_tf, "1_dog", ["dog", "dog, Caf\u00e9 \"q\""])
db = Obj(is_db=True, batch_size=2, num_train_images=30, num_reg_images=2, width=512, height=448,
         enable_bucket=True, min_bucket_reso=256, max_bucket_reso=1024, tag_frequency=db_tf,
         bucket_info={"buckets": {0: {"resolution": (448, 512), "count": 20}, 3: {"resolution": (512, 448), "count": 12}},
                      "mean_img_ar_error": 0.0123},
         resize_interpolation=None,
         subsets=[sub(img_count=3, num_repeats=10, flip_aug=True, shuffle_caption=True, keep_tokens=1,
                      keep_tokens_separator="|||", caption_prefix="photo of ", image_dir="/data/img/10_sks dog",
                      class_tokens="sks dog", is_reg=False),
                  sub(img_count=2, num_repeats=1, color_aug=True, random_crop=True, secondary_separator=";;;",
                      enable_wildcard=True, caption_suffix=", best", resize_interpolation="lanczos",
                      image_dir="/data/reg/1_dog", class_tokens="dog", is_reg=True)])
# dataset 1: fine-tuning, two subsets over the same metadata file name (" (2)" suffix), no bucketing
ft_tf = {}
set_tag_frequency(ft_tf, "meta.json", ["a, b", "B"])
ft = Obj(is_db=False, batch_size=1, num_train_images=4, num_reg_images=0, width=512, height=512,
         enable_bucket=False, min_bucket_reso=256, max_bucket_reso=1024, tag_frequency=ft_tf, bucket_info=None,
         resize_interpolation="area",
         subsets=[sub(img_count=2, num_repeats=2, image_dir="/data/ft", metadata_file="/data/meta.json"),
                  sub(img_count=2, num_repeats=1, metadata_file="/other/meta.json")])
# a third dataset repeating dir "1_dog" in its tag frequency: counted once
db2_tf = {}
set_tag_frequency(db2_tf, "1_dog", ["other"])
db2 = Obj(is_db=True, batch_size=1, num_train_images=1, num_reg_images=0, width=512, height=512,
          enable_bucket=False, min_bucket_reso=256, max_bucket_reso=1024, tag_frequency=db2_tf, bucket_info=None,
          resize_interpolation=None,
          subsets=[sub(img_count=1, num_repeats=1, image_dir="x/1_dog", class_tokens=None)])

datasets_metadata = []
tag_frequency = {}
dataset_dirs_info = {}
for dataset in [db, ft, db2]:
    is_dreambooth_dataset = dataset.is_db
    dataset_metadata = {
        "is_dreambooth": is_dreambooth_dataset,
        "batch_size_per_device": dataset.batch_size,
        "num_train_images": dataset.num_train_images,
        "num_reg_images": dataset.num_reg_images,
        "resolution": (dataset.width, dataset.height),
        "enable_bucket": bool(dataset.enable_bucket),
        "min_bucket_reso": dataset.min_bucket_reso,
        "max_bucket_reso": dataset.max_bucket_reso,
        "tag_frequency": dataset.tag_frequency,
        "bucket_info": dataset.bucket_info,
        "resize_interpolation": dataset.resize_interpolation,
    }
    subsets_metadata = []
    for subset in dataset.subsets:
        subset_metadata = {
            "img_count": subset.img_count,
            "num_repeats": subset.num_repeats,
            "color_aug": bool(subset.color_aug),
            "flip_aug": bool(subset.flip_aug),
            "random_crop": bool(subset.random_crop),
            "shuffle_caption": bool(subset.shuffle_caption),
            "keep_tokens": subset.keep_tokens,
            "keep_tokens_separator": subset.keep_tokens_separator,
            "secondary_separator": subset.secondary_separator,
            "enable_wildcard": bool(subset.enable_wildcard),
            "caption_prefix": subset.caption_prefix,
            "caption_suffix": subset.caption_suffix,
            "resize_interpolation": subset.resize_interpolation,
        }
        image_dir_or_metadata_file = None
        if subset.image_dir:
            image_dir = os.path.basename(subset.image_dir)
            subset_metadata["image_dir"] = image_dir
            image_dir_or_metadata_file = image_dir
        if is_dreambooth_dataset:
            subset_metadata["class_tokens"] = subset.class_tokens
            subset_metadata["is_reg"] = subset.is_reg
            if subset.is_reg:
                image_dir_or_metadata_file = None
        else:
            metadata_file = os.path.basename(subset.metadata_file)
            subset_metadata["metadata_file"] = metadata_file
            image_dir_or_metadata_file = metadata_file
        subsets_metadata.append(subset_metadata)
        if image_dir_or_metadata_file is not None:
            v = image_dir_or_metadata_file
            i = 2
            while v in dataset_dirs_info:
                v = image_dir_or_metadata_file + f" ({i})"
                i += 1
            image_dir_or_metadata_file = v
            dataset_dirs_info[image_dir_or_metadata_file] = {"n_repeats": subset.num_repeats, "img_count": subset.img_count}
    dataset_metadata["subsets"] = subsets_metadata
    datasets_metadata.append(dataset_metadata)
    for ds_dir_name, ds_freq_for_dir in dataset.tag_frequency.items():
        if ds_dir_name in tag_frequency:
            continue
        tag_frequency[ds_dir_name] = ds_freq_for_dir

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train_meta", "datasets_golden.txt")
with open(out, "w") as f:
    f.write("ss_datasets\t" + str(json.dumps(datasets_metadata)) + "\n")
    f.write("ss_tag_frequency\t" + str(json.dumps(tag_frequency)) + "\n")
    f.write("ss_dataset_dirs\t" + str(json.dumps(dataset_dirs_info)) + "\n")
