#!/usr/bin/env bash
# sd-model convert --to diffusers: tiny SD1 / SD2 (v) / SDXL checkpoints written as Diffusers
# folders, read back by the project's Diffusers loader without --model_config (the config.json
# files describe the model), converted back to one file: every tensor equal (at the stored dtype);
# the configuration sd-model info reports equal to the source's; the layout and JSON keys
# diffusers' save_pretrained writes; atomic replacement; bad outputs (exit 1, one line).
. "$(dirname "$0")/lib.sh"
t_init sd_model_diffusers
B=${SD_BIN:-$build/bin}/sd-model
H=$build/tests/unit/test_sd_model
T=$tmp
trap 'chmod -R u+w "$T" 2>/dev/null' EXIT  # the read-only folder below must not block removing $T
G=tests/data/golden
PY=/usr/bin/python3
nokf() { nok "$1"; sed 's/^/#   /' "$2" | head -20; }  # nokf NAME FILE: "not ok NAME", FILE as comments
check() {
  local name=$1; shift
  if "$@" >"$T/out" 2>"$T/err"; then ok "$name"; else cat "$T/out" >>"$T/err"; nokf "$name" "$T/err"; fi
}
# refuse NAME CODE PATTERN COMMAND... : exit status CODE, one stderr line: "sd-model: ..." matching PATTERN
refuse() { local name=$1 code=$2 pat=$3; shift 3; t_refuse -1 "$name" "$code" "^sd-model: .*\($pat\)" "$@"; }

[ -x "$B" ] && [ -x "$H" ] || { nok sd_model_diffusers_binaries; exit 1; }

cat >"$T/sd1.toml" <<'EOF'
family = "sd1"
[unet]
model_channels = 32
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [1]
num_heads = 2
transformer_depth = 2
context_dim = 32
[clip]
width = 32
layers = 3
heads = 2
vocab_size = 1000
[vae]
ch = 32
ch_mult = [1, 2]
num_res_blocks = 1
attn_resolutions = []
resolution = 32
EOF
cat >"$T/sd2.json" <<'EOF'
{"family": "sd2", "parameterization": "v",
 "unet": {"model_channels": 32, "channel_mult": [1, 1], "num_res_blocks": 1, "attention_resolutions": [2],
          "num_head_channels": 16, "context_dim": 48, "use_linear_in_transformer": true},
 "clip": {"width": 32, "layers": 4, "heads": 4, "vocab_size": 1000},
 "vae": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "resolution": 32}}
EOF
check build_sd1 "$H" combine "$T/sd1.safetensors" $G/unet/sd1_tiny.safetensors $G/clip/golden_clip_sd1.safetensors $G/vae/golden_vae_a.safetensors
check build_sd2 "$H" combine "$T/sd2.safetensors" $G/unet/sd2_tiny.safetensors $G/clip/golden_clip_sd2.safetensors $G/vae/golden_vae_a.safetensors

# config of `sd-model info --json` (the "config" object) of a model
# (the VAE's resolution, unused by the math, is not part of a Diffusers config)
config_of() { "$B" info "$@" --no_hashes --json | sed -e 's/.*"config":\(.*\)}$/\1/' -e 's/"resolution":[0-9]*,//'; }

# roundtrip NAME SINGLE TE_PREFIX READ_ARGS CFGARGS: to Diffusers and back, every tensor equal (the
# text encoder under TE_PREFIX; "" = only UNet and VAE), same config (read with READ_ARGS), same dtypes
roundtrip() {
  local name=$1 single=$2 tep=$3 rargs=$4; shift 4
  local d="$T/$name.d"
  if ! "$B" convert "$single" "$@" --to diffusers -o "$d" 2>"$T/err"; then nokf "${name}_convert" "$T/err"; return; fi
  [ -s "$T/err" ] && nokf "${name}_convert_quiet" "$T/err" || ok "${name}_convert"
  local f
  for f in model_index.json unet/config.json unet/diffusion_pytorch_model.safetensors vae/config.json \
           vae/diffusion_pytorch_model.safetensors text_encoder/config.json text_encoder/model.safetensors \
           tokenizer/vocab.json tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json \
           scheduler/scheduler_config.json; do
    [ -s "$d/$f" ] || { echo "# missing $f" >"$T/err"; nokf "${name}_layout" "$T/err"; return; }
  done
  ok "${name}_layout"
  ls -a "$T" | grep -q '\.tmp\.' && nok "${name}_no_temp_left" || ok "${name}_no_temp_left"
  # read back without --model_config: the config.json files say everything
  config_of "$single" "$@" >"$T/c1" 2>"$T/err" && config_of "$d" $rargs >"$T/c2" 2>>"$T/err" && cmp -s "$T/c1" "$T/c2" &&
    ok "${name}_config_same" || { diff "$T/c1" "$T/c2" >>"$T/err"; nokf "${name}_config_same" "$T/err"; }
  "$B" convert "$d" -o "$T/$name.back.safetensors" 2>"$T/err" &&
    "$H" same "$single" "$T/$name.back.safetensors" model.diffusion_model. >/dev/null 2>>"$T/err" &&
    "$H" same "$single" "$T/$name.back.safetensors" first_stage_model. >/dev/null 2>>"$T/err" &&
    { [ -z "$tep" ] || { "$H" same "$single" "$T/$name.back.safetensors" "$tep" >/dev/null 2>>"$T/err" &&
                         "$H" same "$T/$name.back.safetensors" "$single" "" >/dev/null 2>>"$T/err"; }; } &&
    ok "${name}_tensors_same" || nokf "${name}_tensors_same" "$T/err"
  "$H" dtypes "$single" | grep -v 'logit_scale\|text_projection' | sort >"$T/dt1" &&
    "$H" dtypes "$T/$name.back.safetensors" | sort >"$T/dt2" &&
    join "$T/dt2" "$T/dt1" | awk '$2 != $3 { bad = 1; print } END { exit bad }' >"$T/err" &&
    ok "${name}_dtypes_same" || nokf "${name}_dtypes_same" "$T/err"
}
roundtrip sd1 "$T/sd1.safetensors" cond_stage_model. "" --model_config "$T/sd1.toml"
# SD2: v-prediction is not in the weights (read back with --v_parameterization as the reference
# needs it); the Diffusers text encoder has the layers that run, not OpenCLIP's logit_scale or the
# dropped last layer (a single file made from it has kohya's dummy ones): its outputs are compared
roundtrip sd2 "$T/sd2.safetensors" "" --v_parameterization --model_config "$T/sd2.json"
"$H" ids "$T/ids.npy" 998 5 17 300 999 $(for i in $(seq 72); do echo 0; done) >/dev/null &&
  "$B" run clip --model "$T/sd2.safetensors" --model_config "$T/sd2.json" --tokens "$T/ids.npy" -o "$T/c1.npy" 2>"$T/err" &&
  "$B" run clip --model "$T/sd2.d" --tokens "$T/ids.npy" -o "$T/c2.npy" 2>>"$T/err" && cmp -s "$T/c1.npy" "$T/c2.npy" &&
  ok sd2_te_same_output || nokf sd2_te_same_output "$T/err"

XC=examples/tiny_sdxl.toml
if examples/build_tiny.sh "${SD_BUILD:-build}" "$T/tiny_model" 2>"$T/err" && "$T/tiny_model" model "$T/xl.safetensors" $XC 5 >/dev/null 2>>"$T/err"; then
  roundtrip sdxl "$T/xl.safetensors" conditioner. "" --model_config $XC
  for f in text_encoder_2/config.json text_encoder_2/model.safetensors tokenizer_2/vocab.json tokenizer_2/merges.txt; do
    [ -s "$T/sdxl.d/$f" ] || echo "# missing $f"
  done >"$T/err"
  [ -s "$T/err" ] && nokf sdxl_layout_te2 "$T/err" || ok sdxl_layout_te2
  # the folder runs like the file
  "$B" run clip --model "$T/xl.safetensors" --model_config $XC --prompt "a photo of a cat" -o "$T/a.npy" --pooled_output "$T/ap.npy" 2>"$T/err" &&
    "$B" run clip --model "$T/sdxl.d" --prompt "a photo of a cat" -o "$T/b.npy" --pooled_output "$T/bp.npy" 2>>"$T/err" &&
    cmp -s "$T/a.npy" "$T/b.npy" && cmp -s "$T/ap.npy" "$T/bp.npy" && ok sdxl_run_clip_same || nokf sdxl_run_clip_same "$T/err"
else
  nokf sdxl_tiny_model "$T/err"
fi

# ---- JSON: the keys and values diffusers / transformers write --------------------------------
if [ -x "$PY" ]; then
  cat >"$T/keys.py" <<'EOF'
import json, sys
d, kind = sys.argv[1], sys.argv[2]
j = lambda p: json.load(open(d + "/" + p, encoding="utf-8"))
mi = j("model_index.json")
sdxl = kind == "sdxl"
assert mi["_class_name"] == ("StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline"), mi
for k, v in {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler" if sdxl else "DDIMScheduler"]}.items():
    assert mi[k] == v, (k, mi[k])
if sdxl:
    assert mi["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"] and mi["tokenizer_2"] == ["transformers", "CLIPTokenizer"]
else:
    assert mi["safety_checker"] == [None, None] and mi["requires_safety_checker"] is None
u = j("unet/config.json")
for k in ["_class_name", "act_fn", "attention_head_dim", "block_out_channels", "center_input_sample", "cross_attention_dim",
          "down_block_types", "downsample_padding", "flip_sin_to_cos", "freq_shift", "in_channels", "layers_per_block",
          "mid_block_scale_factor", "norm_eps", "norm_num_groups", "out_channels", "sample_size", "up_block_types",
          "use_linear_projection", "transformer_layers_per_block"]:
    assert k in u, k
assert u["_class_name"] == "UNet2DConditionModel"
assert u["up_block_types"] == [t.replace("Down", "Up") for t in reversed(u["down_block_types"])]
if sdxl:
    assert u["addition_embed_type"] == "text_time" and u["addition_time_embed_dim"] == 256
v = j("vae/config.json")
assert v["_class_name"] == "AutoencoderKL" and isinstance(v["scaling_factor"], float)
assert v["scaling_factor"] == (0.13025 if sdxl else 0.18215), v["scaling_factor"]
t = j("text_encoder/config.json")
assert t["architectures"] == ["CLIPTextModel"] and t["model_type"] == "clip_text_model"
assert t["hidden_act"] == ("gelu" if kind == "sd2" else "quick_gelu")
assert t["intermediate_size"] == 4 * t["hidden_size"]
if sdxl:
    t2 = j("text_encoder_2/config.json")
    assert t2["architectures"] == ["CLIPTextModelWithProjection"] and t2["hidden_act"] == "gelu"
s = j("scheduler/scheduler_config.json")
assert s["_class_name"] == ("EulerDiscreteScheduler" if sdxl else "DDIMScheduler")
assert s["prediction_type"] == ("v_prediction" if kind == "sd2" else "epsilon"), s["prediction_type"]
assert (s["beta_start"], s["beta_end"], s["beta_schedule"], s["num_train_timesteps"]) == (0.00085, 0.012, "scaled_linear", 1000)
for tk, pad in [("tokenizer", "!" if kind == "sd2" else "<|endoftext|>")] + ([("tokenizer_2", "!")] if sdxl else []):
    voc = j(tk + "/vocab.json")
    assert len(voc) == 49408 and voc["<|startoftext|>"] == 49406 and voc["<|endoftext|>"] == 49407 and voc["!"] == 0
    assert voc["a</w>"] == 320 and sorted(voc.values()) == list(range(49408))
    assert list(voc) == sorted(voc)
    m = open(d + "/" + tk + "/merges.txt", encoding="utf-8").read().split("\n")
    assert m[0] == "#version: 0.2" and len(m) == 48896 and m[-1] == "" and m[1] == "i n"
    # every merge joins two vocabulary entries into the entry with the next id
    for r, line in enumerate(m[1:-1]):
        a, b = line.split(" ")
        assert a in voc and b in voc and voc[a + b] == 512 + r, line
    tc = j(tk + "/tokenizer_config.json")
    assert tc["tokenizer_class"] == "CLIPTokenizer" and tc["model_max_length"] == 77 and tc["pad_token"] == pad
    sm = j(tk + "/special_tokens_map.json")
    assert sm["pad_token"] == pad and sm["bos_token"]["content"] == "<|startoftext|>"
# the formatting of json.dumps(indent=2, sort_keys=True)
for p in ["model_index.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json",
          "text_encoder/config.json", "tokenizer/vocab.json", "tokenizer/tokenizer_config.json",
          "tokenizer/special_tokens_map.json"]:
    assert open(d + "/" + p, encoding="utf-8").read() == json.dumps(j(p), indent=2, sort_keys=True, ensure_ascii=False) + "\n", p
EOF
  for k in sd1 sd2 sdxl; do
    [ -d "$T/$k.d" ] || continue
    "$PY" "$T/keys.py" "$T/$k.d" $k >"$T/err" 2>&1 && ok "${k}_json_keys" || nokf "${k}_json_keys" "$T/err"
  done
  if "$PY" -c 'import diffusers' 2>/dev/null; then
    "$PY" -c 'import sys; from diffusers import StableDiffusionPipeline as P; P.from_pretrained(sys.argv[1])' "$T/sd1.d" >"$T/err" 2>&1 &&
      ok sd1_diffusers_loads || nokf sd1_diffusers_loads "$T/err"
  else
    ok "sd1_diffusers_loads # SKIP no diffusers in $PY"
  fi
else
  ok "json_keys # SKIP no $PY"
fi

# ---- replacing, precision, bad outputs -------------------------------------------------------
# an existing folder is replaced whole (stray files of the old one do not survive)
touch "$T/sd1.d/stray.txt"
"$B" convert "$T/sd1.safetensors" --model_config "$T/sd1.toml" --to diffusers -o "$T/sd1.d" --save_precision bf16 2>"$T/err" &&
  [ ! -e "$T/sd1.d/stray.txt" ] && ! ls -a "$T" | grep -q '\.old\.\|\.tmp\.' &&
  "$H" dtypes "$T/sd1.d/unet/diffusion_pytorch_model.safetensors" | awk '$2 != "BF16" { bad = 1 } END { exit bad }' &&
  "$H" dtypes "$T/sd1.d/text_encoder/model.safetensors" | awk '$2 != "BF16" { bad = 1 } END { exit bad }' &&
  ok replace_and_precision || nokf replace_and_precision "$T/err"
: >"$T/afile"
refuse out_is_file 1 'afile: exists and is not a folder' "$B" convert "$T/sd1.safetensors" --model_config "$T/sd1.toml" --to diffusers -o "$T/afile"
mkdir "$T/ro" && chmod a-w "$T/ro"
if [ "$(id -u)" != 0 ]; then
  refuse out_unwritable 1 'ro/out: cannot create: Permission denied' "$B" convert "$T/sd1.safetensors" --model_config "$T/sd1.toml" --to diffusers -o "$T/ro/out"
  [ -z "$(ls -A "$T/ro")" ] && ok out_unwritable_nothing_left || nok out_unwritable_nothing_left
else
  ok "out_unwritable # SKIP running as root"
fi
refuse out_parent_missing 1 'nodir/out: cannot create' "$B" convert "$T/sd1.safetensors" --model_config "$T/sd1.toml" --to diffusers -o "$T/nodir/out"
refuse usage_to 2 "invalid choice 'ckpt'" "$B" convert "$T/sd1.safetensors" --to ckpt -o "$T/x"
exit 0
