#!/usr/bin/env bash
# sd-model end to end on tiny SD1/SD2/SDXL checkpoints built from the golden files of
# tests/data/golden/ (by tests/unit/test_sd_model's helper mode): info (text, JSON, hashes),
# convert (ckpt, SD .ckpt, Diffusers folder, --vae, --save_precision) with round-trip checks,
# run clip / vae-encode / vae-decode / unet against the golden outputs (max|Δ| ≤ 1e-4·max|ref|),
# SDXL: run clip (both text encoders, pooled) against the PyTorch goldens, run unet --vector, a tiny
# SDXL Diffusers folder,
# bad input (exit 1, one line) and usage errors (exit 2).
. "$(dirname "$0")/lib.sh"
t_init sd_model
B=${SD_BIN:-$build/bin}/sd-model
H=$build/tests/unit/test_sd_model
T=$tmp
G=tests/data/golden
U1=$G/unet/sd1_tiny.safetensors U2=$G/unet/sd2_tiny.safetensors
C1=$G/clip/golden_clip_sd1.safetensors C2=$G/clip/golden_clip_sd2.safetensors
V=$G/vae/golden_vae_a.safetensors

n=0
nokf() { nok "$1"; sed 's/^/#   /' "$2" | head -20; }  # nokf NAME FILE: "not ok NAME", FILE as comments
check() {  # check NAME COMMAND... : the command must succeed
  local name=$1; shift
  if "$@" >"$T/out" 2>"$T/err"; then ok "$name"; else cat "$T/out" >>"$T/err"; nokf "$name" "$T/err"; fi
}
# refuse NAME CODE PATTERN COMMAND... : exit status CODE, one stderr line: "sd-model: ..." matching PATTERN
refuse() { local name=$1 code=$2 pat=$3; shift 3; t_refuse -1 "$name" "$code" "^sd-model: .*\($pat\)" "$@"; }

[ -x "$B" ] && [ -x "$H" ] || { nok sd_model_binaries "build sd-model and tests/unit/test_sd_model"; exit 1; }

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
S1="--model_config $T/sd1.toml"
S2="--model_config $T/sd2.json"

# ---- tiny full checkpoints -------------------------------------------------------------------
check build_sd1_checkpoint "$H" combine "$T/sd1.safetensors" $U1 $C1 $V
check build_sd2_checkpoint "$H" combine "$T/sd2.safetensors" $U2 $C2 $V
check build_sd1_ckpt "$H" mkckpt "$T/sd1.ckpt" "$T/sd1.safetensors"

# ---- usage errors ------------------------------------------------------------------------------
"$B" --help >"$T/out" 2>&1 && grep -q 'vae-encode' "$T/out" && ok usage_help || nokf usage_help "$T/out"
refuse usage_no_subcommand 2 'missing subcommand' "$B"
refuse usage_unknown_subcommand 2 "unknown subcommand 'frobnicate'" "$B" frobnicate
refuse usage_unknown_option 2 "unknown option '--modle'" "$B" info --modle x
refuse usage_run_no_model 2 '--model is required' "$B" run clip -o "$T/x.npy"
refuse usage_run_no_output 2 '--output' "$B" run clip --model "$T/sd1.safetensors"
refuse usage_run_component 2 "unknown component 'vea'" "$B" run vea --model "$T/sd1.safetensors" -o "$T/x.npy"
refuse usage_clip_inputs 2 'exactly one of --tokens' "$B" run clip --model "$T/sd1.safetensors" -o "$T/x.npy"
refuse usage_unet_inputs 2 'are required' "$B" run unet --model "$T/sd1.safetensors" -i x.npy -o "$T/x.npy"
refuse usage_save_precision 2 "invalid choice 'fp8'" "$B" convert "$T/sd1.safetensors" -o "$T/x.safetensors" --save_precision fp8
refuse usage_convert_args 2 'name the source and the output' "$B" convert "$T/sd1.safetensors"
refuse usage_convert_dir 2 'is a directory' "$B" convert "$T/sd1.safetensors" "$T"
refuse usage_max_token_length 2 '--max_token_length' "$B" run clip --model "$T/sd1.safetensors" --prompt a --max_token_length 100 -o "$T/x.npy"

# ---- info --------------------------------------------------------------------------------------
if "$B" info "$T/sd1.safetensors" $S1 >"$T/info" 2>"$T/err" &&
   grep -q '^family  *SD1.x (from --model_config)' "$T/info" &&
   grep -q '^unet  *934,948 parameters in 288 tensors (F16), names ldm' "$T/info" &&
   grep -q '^text_encoder  *72,640 parameters in 52 tensors (F32), names ldm' "$T/info" &&
   grep -q '^vae  .* parameters in 124 tensors (F16), names ldm' "$T/info" &&
   ! grep -q '^other' "$T/info"; then ok info_sd1; else cat "$T/info" >>"$T/err"; nokf info_sd1 "$T/err"; fi
sha=$(sha256sum "$T/sd1.safetensors" | cut -c1-64)
legacy=$(dd if="$T/sd1.safetensors" bs=65536 skip=16 count=1 2>/dev/null | sha256sum | cut -c1-8)
if grep -q "^sha256  *$sha\$" "$T/info" && grep -q "^shorthash  *${sha:0:10} " "$T/info" &&
   grep -q "^model_hash  *$legacy " "$T/info" && grep -q '^sshs_model_hash  *[0-9a-f]\{64\}$' "$T/info" &&
   grep -q '^sshs_legacy_hash  *[0-9a-f]\{8\}$' "$T/info"; then ok info_hashes; else nokf info_hashes "$T/info"; fi
"$B" info "$T/sd1.safetensors" $S1 --no_hashes >"$T/info" && ! grep -q 'sha256\|hash' "$T/info" && grep -q '^total' "$T/info" &&
  ok info_no_hashes || nokf info_no_hashes "$T/info"
if "$B" info "$T/sd2.safetensors" $S2 --json >"$T/info.json" 2>"$T/err" &&
   grep -q '"family":"SD2.x"' "$T/info.json" && grep -q '"parameterization":"v"' "$T/info.json" &&
   grep -q '"text_encoder":{"layout":"ldm","tensors":54,' "$T/info.json" &&
   grep -q "\"sha256\":\"$(sha256sum "$T/sd2.safetensors" | cut -c1-64)\"" "$T/info.json" &&
   [ "$(wc -l <"$T/info.json")" = 1 ]; then ok info_sd2_json; else cat "$T/info.json" >>"$T/err"; nokf info_sd2_json "$T/err"; fi
if [ -x /usr/bin/python3 ]; then
  /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["components"]["unet"]["parameters"] > 0' \
    "$T/info.json" && ok info_json_valid || nok info_json_valid
else
  ok "info_json_valid # SKIP no /usr/bin/python3"
fi
# the JSON config describes the model: fed back as --model_config it gives the same report
if [ -x /usr/bin/python3 ]; then
  "$B" info "$T/sd1.safetensors" $S1 --json | /usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["config"]))' >"$T/back.json" &&
  "$B" info "$T/sd1.safetensors" --model_config "$T/back.json" --json >"$T/i2.json" 2>"$T/err" &&
  "$B" info "$T/sd1.safetensors" $S1 --json >"$T/i1.json" && cmp -s "$T/i1.json" "$T/i2.json" &&
  ok info_config_roundtrip || nokf info_config_roundtrip "$T/err"
else
  ok "info_config_roundtrip # SKIP no /usr/bin/python3"
fi
"$B" info "$T/sd1.ckpt" $S1 >"$T/info" 2>"$T/err" && grep -q '^format  *ckpt' "$T/info" &&
  grep -q 'global_step = 1234' "$T/info" && ! grep -q sshs "$T/info" && ok info_ckpt || nokf info_ckpt "$T/err"
"$B" info $C1 $S1 >"$T/info" 2>"$T/err" && grep -q '^other .* in 60 tensors (F32 58, I32 2)' "$T/info" &&
  ok info_component_file || { cat "$T/info" >>"$T/err"; nokf info_component_file "$T/err"; }
"$B" info --v_parameterization "$T/sd1.safetensors" $S1 | grep -q '^parameterization  *v$' && ok info_v_param || nok info_v_param
refuse info_tiny_needs_config 1 'describe it with --model_config' "$B" info "$T/sd1.safetensors"
# an SDXL-named stub: refused, naming the family
mkst() {  # mkst FILE JSON-HEADER DATA-BYTES(printf escapes)
  local h=$2 len
  while [ $(( ${#h} % 8 )) != 0 ]; do h="$h "; done
  len=${#h}
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' $((len & 255)) $((len >> 8 & 255)) $((len >> 16 & 255)) $((len >> 24 & 255)))" >"$1"
  printf '%s' "$h" >>"$1"
  printf "$3" >>"$1"
}
mkst "$T/refiner.safetensors" '{"conditioner.embedders.0.model.ln_final.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"model.diffusion_model.label_emb.0.0.weight":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}' '\0\0\0\0\0\0\0\0'
# header lengths whose low bytes look like a pickle (0x80) or a zip ("PK"): still safetensors
mkstlen() {  # mkstlen FILE LEN: one 1-element tensor, header padded to exactly LEN bytes
  local h='{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
  h=$(printf '%-*s' "$2" "$h")
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x\\x00\\x00\\x00\\x00' $(($2 & 255)) $(($2 >> 8 & 255)) $(($2 >> 16 & 255)) $(($2 >> 24 & 255)))" >"$1"
  printf '%s' "$h" >>"$1"; printf '\0\0\0\0' >>"$1"
}
mkstlen "$T/len80.safetensors" 128
mkstlen "$T/lenpk.safetensors" 19280
refuse info_header_0x80 1 'len80.safetensors: no UNet, VAE or text encoder' "$B" info "$T/len80.safetensors"
refuse info_header_pk 1 'lenpk.safetensors: no UNet, VAE or text encoder' "$B" info "$T/lenpk.safetensors"
refuse info_sdxl_refiner_refused 1 'refiner.safetensors: SDXL refiner model: not supported' "$B" info "$T/refiner.safetensors"
mkst "$T/flux.safetensors" '{"double_blocks.0.img_attn.qkv.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' '\0\0\0\0'
refuse info_flux_refused 1 'FLUX' "$B" info "$T/flux.safetensors"
refuse run_sdxl_refiner_refused 1 'SDXL refiner' "$B" run clip --model "$T/refiner.safetensors" --tokens x.npy -o "$T/x.npy"

# ---- SDXL: a tiny single-file checkpoint (examples/tiny_model.c, sgm names, TE2 in OpenCLIP names) ----
XC=examples/tiny_sdxl.toml
if examples/build_tiny.sh "${SD_BUILD:-build}" "$T/tiny_model" 2>"$T/err" && "$T/tiny_model" model "$T/xl.safetensors" $XC 5 >/dev/null 2>>"$T/err"; then
  "$B" info "$T/xl.safetensors" --model_config $XC --no_hashes >"$T/info" 2>"$T/err" &&
    grep -q '^model  *SDXL single-file checkpoint: UNet text-encoder text-encoder-2 VAE' "$T/info" &&
    grep -q '^family  *SDXL (from --model_config)' "$T/info" && ok info_sdxl || nokf info_sdxl "$T/info"
  "$B" info "$T/xl.safetensors" --model_config $XC --no_hashes --json >"$T/info.json" 2>"$T/err" &&
    python3 - "$T/info.json" <<'PY' && ok info_sdxl_json || nokf info_sdxl_json "$T/info.json"
import json, sys
j = json.load(open(sys.argv[1]))
c = j["config"]
assert c["family"] == "sdxl", c["family"]
assert c["unet"]["transformer_depth"] == [0, 2] and c["unet"]["adm_in_channels"] == 1552, c["unet"]
assert c["clip2"]["projection_dim"] == 16 and c["clip2"]["layers"] == 3, c["clip2"]
PY
  # load + write back: TE2's q/k/v split and joined again, text_projection transposed twice
  check convert_sdxl "$B" convert "$T/xl.safetensors" -o "$T/xlc.safetensors" --model_config $XC
  check convert_sdxl_same "$H" same "$T/xl.safetensors" "$T/xlc.safetensors" ""
  check convert_sdxl_same_back "$H" same "$T/xlc.safetensors" "$T/xl.safetensors" ""
else
  nokf sdxl_tiny_model "$T/err"
fi

# ---- run: golden outputs ----------------------------------------------------------------------
cmpg() {  # cmpg NAME OUT.npy GOLDENFILE TENSOR [ignored flat indices]
  local name=$1; shift
  if "$H" cmp "$@" >"$T/cmp" 2>&1; then ok "$name"; else nokf "$name" "$T/cmp"; fi
}
"$H" golden $C1 golden.ids "$T/ids.npy" && "$H" golden $C1 golden.long_ids "$T/long_ids.npy" &&
"$H" golden $C2 golden.ids "$T/ids2.npy" && "$H" golden $V golden.x "$T/img.npy" &&
"$H" golden $V golden.z "$T/z.npy" && "$H" golden $U1 golden.x "$T/ux.npy" &&
"$H" golden $U1 golden.t "$T/ut.npy" && "$H" golden $U1 golden.context "$T/uc.npy" &&
"$H" golden $U2 golden.x "$T/ux2.npy" && "$H" golden $U2 golden.t "$T/ut2.npy" &&
"$H" golden $U2 golden.context "$T/uc2.npy" || nok golden_inputs

"$B" run clip --model "$T/sd1.safetensors" $S1 --tokens "$T/ids.npy" -o "$T/h.npy" 2>"$T/err" || nokf run_clip "$T/err"
cmpg run_clip "$T/h.npy" $C1 golden.y
"$B" run clip --model "$T/sd1.safetensors" $S1 --tokens "$T/ids.npy" --clip_skip 2 -o "$T/h2.npy" 2>"$T/err" || nokf run_clip_skip2 "$T/err"
cmpg run_clip_skip2 "$T/h2.npy" $C1 golden.y_skip2
"$B" run clip --model "$T/sd1.safetensors" $S1 --tokens "$T/long_ids.npy" -o "$T/hl.npy" 2>"$T/err" || nokf run_clip_long "$T/err"
cmpg run_clip_long "$T/hl.npy" $C1 golden.long_y
"$B" run clip --model "$T/sd2.safetensors" $S2 --tokens "$T/ids2.npy" -o "$T/hs2.npy" 2>"$T/err" || nokf run_clip_sd2 "$T/err"
cmpg run_clip_sd2 "$T/hs2.npy" $C2 golden.y
# the generator overwrote two logvar pixels of sample 1 (channels 4..7) to exercise the clamp
ign=""; for c in 4 5 6 7; do ign="$ign $(( (8 + c) * 256 )) $(( (8 + c) * 256 + 1 ))"; done
"$B" run vae-encode --model "$T/sd1.safetensors" $S1 -i "$T/img.npy" -o "$T/m.npy" 2>"$T/err" || nokf run_vae_encode "$T/err"
cmpg run_vae_encode "$T/m.npy" $V golden.moments $ign
"$B" run vae-decode --model "$T/sd1.safetensors" $S1 -i "$T/z.npy" -o "$T/dec.npy" 2>"$T/err" || nokf run_vae_decode "$T/err"
cmpg run_vae_decode "$T/dec.npy" $V golden.dec
"$B" run unet --model "$T/sd1.safetensors" $S1 -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc.npy" -o "$T/eps.npy" 2>"$T/err" || nokf run_unet "$T/err"
cmpg run_unet "$T/eps.npy" $U1 golden.y
"$B" run unet --model "$T/sd2.safetensors" $S2 -i "$T/ux2.npy" --timesteps "$T/ut2.npy" --context "$T/uc2.npy" -o "$T/eps2.npy" 2>"$T/err" || nokf run_unet_sd2 "$T/err"
cmpg run_unet_sd2 "$T/eps2.npy" $U2 golden.y
# thread count does not change a byte
"$B" run unet --model "$T/sd1.safetensors" $S1 -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc.npy" -o "$T/eps1.npy" --threads 1 &&
"$B" run unet --model "$T/sd1.safetensors" $S1 -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc.npy" -o "$T/eps2t.npy" --threads 2 &&
cmp -s "$T/eps1.npy" "$T/eps2t.npy" && ok run_unet_threads || nok run_unet_threads
"$B" run vae-encode --model "$T/sd1.safetensors" $S1 -i "$T/img.npy" -o "$T/m1.npy" --threads 1 &&
cmp -s "$T/m.npy" "$T/m1.npy" && ok run_vae_threads || nok run_vae_threads
# tiling: a tile covering the whole input is the untiled result; smaller tiles run and keep the shape
"$B" run vae-decode --model "$T/sd1.safetensors" $S1 -i "$T/z.npy" -o "$T/dt16.npy" --tile 16 2>"$T/err" &&
  cmp -s "$T/dec.npy" "$T/dt16.npy" && ok run_vae_tile_whole || nokf run_vae_tile_whole "$T/err"
"$B" run vae-decode --model "$T/sd1.safetensors" $S1 -i "$T/z.npy" -o "$T/dt8.npy" --tile 8 --tile_overlap 4 2>"$T/err" &&
"$B" run vae-encode --model "$T/sd1.safetensors" $S1 -i "$T/img.npy" -o "$T/mt.npy" --tile 16 2>>"$T/err" &&
  [ "$(stat -c %s "$T/dt8.npy")" = "$(stat -c %s "$T/dec.npy")" ] && [ "$(stat -c %s "$T/mt.npy")" = "$(stat -c %s "$T/m.npy")" ] &&
  ! cmp -s "$T/dt8.npy" "$T/dec.npy" && ok run_vae_tiled || nokf run_vae_tiled "$T/err"
refuse usage_tile_factor 2 "'--tile': 7 is not a multiple" "$B" run vae-encode --model "$T/sd1.safetensors" $S1 -i "$T/img.npy" -o "$T/x.npy" --tile 7
refuse usage_tile_overlap 2 'must be smaller than --tile' "$B" run vae-decode --model "$T/sd1.safetensors" $S1 -i "$T/z.npy" -o "$T/x.npy" --tile 4 --tile_overlap 4
# from the .ckpt, and with the VAE taken from --vae
"$B" run clip --model "$T/sd1.ckpt" $S1 --tokens "$T/ids.npy" -o "$T/hc.npy" 2>"$T/err" || nokf run_clip_ckpt "$T/err"
cmpg run_clip_ckpt "$T/hc.npy" $C1 golden.y
"$B" run vae-decode --model $C1 --vae $V $S1 -i "$T/z.npy" -o "$T/decv.npy" 2>"$T/err" || nokf run_vae_replacement "$T/err"
cmpg run_vae_replacement "$T/decv.npy" $V golden.dec
# --prompt: the real tokenizer's ids do not fit the tiny vocabulary: said so
refuse run_prompt_vocab 1 "does not fit the model's vocabulary" "$B" run clip --model "$T/sd1.safetensors" $S1 --prompt "a photo of a cat" -o "$T/x.npy"

# --prompt with the real vocabulary: the tokenizer's rows (tests/data/clip_tokenizer/framed.tsv,
# "a photo of a cat") give the same bytes as --tokens
framed() { awk -F'\t' -v m="$1" -v p="$2" '$1 == 0 && $2 == m && $3 == p { print $4 }' tests/data/clip_tokenizer/framed.tsv; }
printf 'family = "sd1"\n[clip]\nwidth = 32\nlayers = 2\nheads = 2\n' >"$T/clipv1.toml"
printf 'family = "sd2"\n[clip]\nwidth = 32\nlayers = 3\nheads = 2\n' >"$T/clipv2.toml"
"$H" mkclip sd1 "$T/clipv1.safetensors" && "$H" mkclip sd2 "$T/clipv2.safetensors" &&
"$H" ids "$T/p75.npy" $(framed 75 49407) && "$H" ids "$T/p150.npy" $(framed 150 49407) &&
"$H" ids "$T/p75sd2.npy" $(framed 75 0) || nok prompt_inputs
for v in "75 p75 clipv1" "150 p150 clipv1" "75 p75sd2 clipv2"; do
  set -- $v
  if "$B" run clip --model "$T/$3.safetensors" --model_config "$T/$3.toml" --prompt "a photo of a cat" \
       --max_token_length $1 -o "$T/pp.npy" 2>"$T/err" &&
     "$B" run clip --model "$T/$3.safetensors" --model_config "$T/$3.toml" --tokens "$T/$2.npy" -o "$T/pt.npy" 2>>"$T/err" &&
     cmp -s "$T/pp.npy" "$T/pt.npy"; then ok "run_clip_prompt_$2"; else nokf "run_clip_prompt_$2" "$T/err"; fi
done
# two prompts: a batch whose rows are the single-prompt results
"$B" run clip --model "$T/clipv1.safetensors" --model_config "$T/clipv1.toml" --prompt "a photo of a cat" --prompt "a photo of a cat" -o "$T/pb.npy" 2>"$T/err" &&
  "$B" run clip --model "$T/clipv1.safetensors" --model_config "$T/clipv1.toml" --prompt "a photo of a cat" -o "$T/p1.npy" 2>>"$T/err" &&
  [ "$(tail -c 9856 "$T/pb.npy" | od -An -tx1 | md5sum)" = "$(tail -c 9856 "$T/p1.npy" | od -An -tx1 | md5sum)" ] &&
  ok run_clip_prompt_batch || nokf run_clip_prompt_batch "$T/err"

# ---- SDXL run: both text encoders, the UNet's vector input, a Diffusers folder ----------------
# --tokens/--tokens2 on the PyTorch goldens of make_sdxl_clip_golden.py (its TE-only file,
# described by a config): context = cat(h1, h2), pooled, and the long-prompt chunks
GX=$G/sdxl/golden_sdxl_clip.safetensors
printf 'family = "sdxl"\n[unet]\ncontext_dim = 24\nadm_in_channels = 1548\n[clip]\nwidth = 8\nlayers = 3\nheads = 2\nvocab_size = 64\n[clip2]\nwidth = 16\nlayers = 3\nheads = 2\nvocab_size = 64\nprojection_dim = 12\n' >"$T/gxl.toml"
for v in ids1 ids2 long_ids1 long_ids2; do "$H" golden $GX golden.$v "$T/gx_$v.npy" || nok golden_sdxl_inputs; done
GXC="--model $GX --model_config $T/gxl.toml"
"$B" run clip $GXC --tokens "$T/gx_ids1.npy" --tokens2 "$T/gx_ids2.npy" -o "$T/gxc.npy" --pooled_output "$T/gxp.npy" 2>"$T/err" || nokf run_clip_sdxl_golden "$T/err"
if "$H" cmpcat "$T/gxc.npy" $GX golden.h1 golden.h2 >"$T/cmp" 2>&1 && "$H" cmp "$T/gxp.npy" $GX golden.pool >>"$T/cmp" 2>&1; then
  ok run_clip_sdxl_golden; else nokf run_clip_sdxl_golden "$T/cmp"; fi
"$B" run clip $GXC --tokens "$T/gx_long_ids1.npy" --tokens2 "$T/gx_long_ids2.npy" -o "$T/gxlc.npy" --pooled_output "$T/gxlp.npy" 2>"$T/err" || nokf run_clip_sdxl_golden_long "$T/err"
if "$H" cmpcat "$T/gxlc.npy" $GX golden.long_h1 golden.long_h2 >"$T/cmp" 2>&1 && "$H" cmp "$T/gxlp.npy" $GX golden.long_pool >>"$T/cmp" 2>&1; then
  ok run_clip_sdxl_golden_long; else nokf run_clip_sdxl_golden_long "$T/cmp"; fi
# without --pooled_output: the same context (TE2 then skips its last layer)
"$B" run clip $GXC --tokens "$T/gx_ids1.npy" --tokens2 "$T/gx_ids2.npy" -o "$T/gxc2.npy" 2>"$T/err" && cmp -s "$T/gxc.npy" "$T/gxc2.npy" &&
  ok run_clip_sdxl_no_pooled || nokf run_clip_sdxl_no_pooled "$T/err"
refuse run_clip_sdxl_tokens2_missing 1 'golden_sdxl_clip.safetensors: SDXL has two text encoders: .*--tokens2' "$B" run clip $GXC --tokens "$T/gx_ids1.npy" -o "$T/x.npy"
refuse run_clip_sdxl_tokens2_shape 1 'gx_long_ids2.npy: shape .*expected the shape of --tokens' "$B" run clip $GXC --tokens "$T/gx_ids1.npy" --tokens2 "$T/gx_long_ids2.npy" -o "$T/x.npy"
refuse run_clip_sdxl_tokens2_prompt 2 '--tokens2 goes with --tokens' "$B" run clip $GXC --prompt a --tokens2 "$T/gx_ids2.npy" -o "$T/x.npy"
refuse usage_pooled_output_sd1 2 '--pooled_output: only SDXL' "$B" run clip --model "$T/sd1.safetensors" $S1 --tokens "$T/ids.npy" --pooled_output "$T/x2.npy" -o "$T/x.npy"
refuse usage_tokens2_sd1 2 '--tokens2: only SDXL' "$B" run clip --model "$T/sd1.safetensors" $S1 --tokens "$T/ids.npy" --tokens2 "$T/ids.npy" -o "$T/x.npy"
refuse usage_vector_sd1 2 '--vector: only SDXL' "$B" run unet --model "$T/sd1.safetensors" $S1 -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc.npy" --vector "$T/ut.npy" -o "$T/x.npy"

shape_is() { head -c 128 "$1" | grep -q "'shape': ($2)"; }
if [ -s "$T/xl.safetensors" ]; then
  XLM="--model $T/xl.safetensors --model_config $XC"
  # --prompt: TE1 framed with pad 49407, TE2 with pad 0 (the tokenizer rows of framed.tsv)
  "$H" ids "$T/p150sd2.npy" $(framed 150 0) || nok prompt_inputs_sdxl
  "$B" run clip $XLM --prompt "a photo of a cat" -o "$T/xc.npy" --pooled_output "$T/xp.npy" 2>"$T/err" &&
    shape_is "$T/xc.npy" '1, 77, 64' && shape_is "$T/xp.npy" '1, 16' && ok run_clip_sdxl_shapes || nokf run_clip_sdxl_shapes "$T/err"
  "$B" run clip $XLM --tokens "$T/p75.npy" --tokens2 "$T/p75sd2.npy" -o "$T/xct.npy" --pooled_output "$T/xpt.npy" 2>"$T/err" &&
    cmp -s "$T/xc.npy" "$T/xct.npy" && cmp -s "$T/xp.npy" "$T/xpt.npy" && ok run_clip_sdxl_prompt_tokens || nokf run_clip_sdxl_prompt_tokens "$T/err"
  "$B" run clip $XLM --prompt "a photo of a cat" --max_token_length 150 -o "$T/xcl.npy" --pooled_output "$T/xpl.npy" 2>"$T/err" &&
  "$B" run clip $XLM --tokens "$T/p150.npy" --tokens2 "$T/p150sd2.npy" -o "$T/xclt.npy" --pooled_output "$T/xplt.npy" 2>>"$T/err" &&
    shape_is "$T/xcl.npy" '1, 152, 64' && cmp -s "$T/xcl.npy" "$T/xclt.npy" && cmp -s "$T/xpl.npy" "$T/xplt.npy" &&
    ok run_clip_sdxl_prompt_long || nokf run_clip_sdxl_prompt_long "$T/err"
  # the first 32 channels are TE1's alone: TE2's ids (pad 49407 instead of 0) change only the rest
  "$B" run clip $XLM --tokens "$T/p75.npy" --tokens2 "$T/p75.npy" -o "$T/xcs.npy" 2>"$T/err" &&
    "$H" slice "$T/xc.npy" "$T/a1.npy" 0 32 && "$H" slice "$T/xcs.npy" "$T/b1.npy" 0 32 &&
    "$H" slice "$T/xc.npy" "$T/a2.npy" 32 64 && "$H" slice "$T/xcs.npy" "$T/b2.npy" 32 64 &&
    cmp -s "$T/a1.npy" "$T/b1.npy" && ! cmp -s "$T/a2.npy" "$T/b2.npy" && ok run_clip_sdxl_te1_part || nokf run_clip_sdxl_te1_part "$T/err"
  # a batch of two prompts: rows equal to the single prompt's; --clip_skip warned about and ignored
  "$B" run clip $XLM --prompt "a photo of a cat" --prompt "a photo of a cat" -o "$T/xcb.npy" --pooled_output "$T/xpb.npy" --clip_skip 2 2>"$T/err" &&
    [ "$(grep -c 'clip_skip is ignored for SDXL' "$T/err")" = 1 ] && shape_is "$T/xcb.npy" '2, 77, 64' &&
    [ "$(tail -c 19712 "$T/xcb.npy" | md5sum)" = "$(tail -c 19712 "$T/xc.npy" | md5sum)" ] &&
    [ "$(tail -c 64 "$T/xpb.npy" | md5sum)" = "$(tail -c 64 "$T/xp.npy" | md5sum)" ] &&
    ok run_clip_sdxl_batch || nokf run_clip_sdxl_batch "$T/err"
  # UNet with the vector input, against PyTorch (tests/golden/gen/make_sdxl_run_golden.py: the sgm
  # UNet transcription on this very checkpoint, which tiny_model writes deterministically)
  GU=$G/sdxl/golden_sdxl_tiny_unet.safetensors
  "$H" golden $GU golden.x "$T/xx.npy" && "$H" golden $GU golden.t "$T/xt.npy" && "$H" golden $GU golden.vec "$T/xv.npy" &&
  "$H" golden $GU golden.context "$T/xctx.npy" && "$H" arr "$T/xv2.npy" 1 1.3 2 1552 && "$H" arr "$T/xv3.npy" 1 0.2 2 100 ||
    nok unet_inputs_sdxl
  XU="-i $T/xx.npy --timesteps $T/xt.npy --context $T/xctx.npy"
  "$B" run unet $XLM $XU --vector "$T/xv.npy" -o "$T/xe.npy" 2>"$T/err" && shape_is "$T/xe.npy" '2, 4, 16, 16' ||
    nokf run_unet_sdxl "$T/err"
  cmpg run_unet_sdxl "$T/xe.npy" $GU golden.y
  "$B" run unet $XLM $XU --vector "$T/xv2.npy" -o "$T/xe2.npy" --threads 1 2>"$T/err" && ! cmp -s "$T/xe.npy" "$T/xe2.npy" &&
    "$B" run unet $XLM $XU --vector "$T/xv.npy" -o "$T/xe1.npy" --threads 1 2>>"$T/err" && cmp -s "$T/xe.npy" "$T/xe1.npy" &&
    ok run_unet_sdxl_vector_used || nokf run_unet_sdxl_vector_used "$T/err"
  refuse run_unet_sdxl_no_vector 1 'xl.safetensors: the SDXL UNet needs --vector FILE.npy \[B,1552\]' "$B" run unet $XLM $XU -o "$T/x.npy"
  refuse run_unet_sdxl_vector_shape 1 'xv3.npy: shape .*expected \[2,1552\]' "$B" run unet $XLM $XU --vector "$T/xv3.npy" -o "$T/x.npy"
  # a Diffusers folder made from the single file (unet/, text_encoder/, text_encoder_2/ with
  # config.json files; no vae/): opened from its config.json files, every parameter equal, the
  # same outputs, converted back to the single-file tensors
  if "$H" mkdiffusersxl "$T/xl.safetensors" $XC "$T/xld" 2>"$T/err" && "$H" samemodel "$T/xl.safetensors" $XC "$T/xld" "" >"$T/out" 2>>"$T/err"; then
    ok sdxl_diffusers_same_parameters; else nokf sdxl_diffusers_same_parameters "$T/err"; fi
  "$B" info "$T/xld" --no_hashes >"$T/info" 2>"$T/err" && grep -q '^family  *SDXL (from the Diffusers config.json files)' "$T/info" &&
    grep -q '^format  *diffusers' "$T/info" && ok info_sdxl_diffusers || nokf info_sdxl_diffusers "$T/info"
  # the config.json files map onto the single file's config (transformer_layers_per_block [1, 2] of
  # a DownBlock2D + CrossAttnDownBlock2D UNet is ldm's transformer_depth [0, 2])
  "$B" info "$T/xld" --no_hashes --json >"$T/i1.json" 2>"$T/err" && "$B" info $XLM --no_hashes --json >"$T/i2.json" 2>>"$T/err" &&
    grep -o '"unet":{"in_channels[^}]*}' "$T/i1.json" >"$T/u1" && grep -o '"unet":{"in_channels[^}]*}' "$T/i2.json" >"$T/u2" && cmp -s "$T/u1" "$T/u2" &&
    grep -q '"transformer_depth":\[0,2\]' "$T/u1" && ok info_sdxl_diffusers_config || { cat "$T/u1" "$T/u2" >>"$T/err"; nokf info_sdxl_diffusers_config "$T/err"; }
  "$B" run clip --model "$T/xld" --prompt "a photo of a cat" -o "$T/dxc.npy" --pooled_output "$T/dxp.npy" 2>"$T/err" &&
    cmp -s "$T/xc.npy" "$T/dxc.npy" && cmp -s "$T/xp.npy" "$T/dxp.npy" && ok run_clip_sdxl_diffusers || nokf run_clip_sdxl_diffusers "$T/err"
  "$B" run unet --model "$T/xld" $XU --vector "$T/xv.npy" -o "$T/dxe.npy" 2>"$T/err" && cmp -s "$T/xe.npy" "$T/dxe.npy" &&
    ok run_unet_sdxl_diffusers || nokf run_unet_sdxl_diffusers "$T/err"
  "$B" convert "$T/xld" -o "$T/xldc.safetensors" 2>"$T/err" &&
    "$H" same "$T/xl.safetensors" "$T/xldc.safetensors" model.diffusion_model. >/dev/null 2>>"$T/err" &&
    "$H" same "$T/xl.safetensors" "$T/xldc.safetensors" conditioner. >/dev/null 2>>"$T/err" &&
    "$H" same "$T/xldc.safetensors" "$T/xl.safetensors" "" >/dev/null 2>>"$T/err" &&
    ok convert_sdxl_diffusers || nokf convert_sdxl_diffusers "$T/err"
fi

# ---- convert ----------------------------------------------------------------------------------
check convert_ckpt "$B" convert tests/data/ckpt/basic.ckpt -o "$T/basic.safetensors"
check convert_ckpt_roundtrip "$H" expect "$T/basic.safetensors" tests/data/ckpt/basic.expect
check convert_ckpt_wrapped "$B" convert tests/data/ckpt/wrapped.ckpt "$T/wrapped.safetensors"
check convert_ckpt_wrapped_roundtrip "$H" expect "$T/wrapped.safetensors" tests/data/ckpt/wrapped.expect
check convert_ckpt_views "$B" convert tests/data/ckpt/views.ckpt -o "$T/views.safetensors"
check convert_ckpt_views_roundtrip "$H" expect "$T/views.safetensors" tests/data/ckpt/views.expect
"$B" convert tests/data/ckpt/basic.ckpt -o "$T/basic16.safetensors" --save_precision fp16 2>"$T/err" &&
"$H" dtypes "$T/basic16.safetensors" >"$T/dt" &&
grep -q '^f32 F16$' "$T/dt" && grep -q '^bf16 F16$' "$T/dt" && grep -q '^f64 F16$' "$T/dt" &&
grep -q '^i64 I64$' "$T/dt" && grep -q '^bool BOOL$' "$T/dt" && ok convert_save_precision || nokf convert_save_precision "$T/err"
# an SD .ckpt: every tensor as in the safetensors it was made from, metadata noting the source
check convert_sd_ckpt "$B" convert "$T/sd1.ckpt" -o "$T/sd1c.safetensors"
check convert_sd_ckpt_same "$H" same "$T/sd1.safetensors" "$T/sd1c.safetensors" ""
check convert_sd_ckpt_same_back "$H" same "$T/sd1c.safetensors" "$T/sd1.safetensors" ""
"$B" info "$T/sd1c.safetensors" $S1 >"$T/info" && grep -q 'sd_model_source = sd1.ckpt' "$T/info" &&
  grep -q 'sd_model_source_format = ckpt' "$T/info" && grep -q 'global_step = 1234' "$T/info" &&
  ok convert_metadata || nokf convert_metadata "$T/info"
ls -a "$T" | grep -q '\.tmp\.' && nok convert_no_temp_files || ok convert_no_temp_files
# Diffusers folder -> one ldm file: same UNet/VAE tensors as the golden ldm files, same outputs
check build_diffusers "$H" mkdiffusers "$T/diffusers"
"$B" info "$T/diffusers" $S2 >"$T/info" 2>"$T/err" && grep -q '^format  *diffusers' "$T/info" &&
  grep -q '^unet .*names diffusers' "$T/info" && ok info_diffusers || nokf info_diffusers "$T/err"
check convert_diffusers "$B" convert "$T/diffusers" -o "$T/fromdiff.safetensors" $S2
[ -s "$T/err" ] && nokf convert_diffusers_no_warning "$T/err" || ok convert_diffusers_no_warning
check convert_diffusers_unet_same "$H" same $U2 "$T/fromdiff.safetensors" model.diffusion_model.
check convert_diffusers_vae_same "$H" same $V "$T/fromdiff.safetensors" first_stage_model.
"$B" info "$T/fromdiff.safetensors" $S2 >"$T/info" 2>"$T/err" && grep -q '^text_encoder .*names ldm' "$T/info" &&
  ok convert_diffusers_layout || nokf convert_diffusers_layout "$T/err"
"$B" run clip --model "$T/fromdiff.safetensors" $S2 --tokens "$T/ids2.npy" -o "$T/hd.npy" 2>"$T/err" || nokf convert_diffusers_clip "$T/err"
cmpg convert_diffusers_clip "$T/hd.npy" $C2 golden.y
"$B" run unet --model "$T/fromdiff.safetensors" $S2 -i "$T/ux2.npy" --timesteps "$T/ut2.npy" --context "$T/uc2.npy" -o "$T/ed.npy" 2>"$T/err" || nokf convert_diffusers_unet "$T/err"
cmpg convert_diffusers_unet "$T/ed.npy" $U2 golden.y
"$B" info "$T/diffusers" >"$T/info" 2>"$T/err" && grep -q '^family  *SD2.x (from the Diffusers config.json files)' "$T/info" &&
  ok info_diffusers_config_json || nokf info_diffusers_config_json "$T/err"
"$B" run unet --model "$T/diffusers" -i "$T/ux2.npy" --timesteps "$T/ut2.npy" --context "$T/uc2.npy" -o "$T/edj.npy" 2>"$T/err" || nokf run_unet_diffusers_config_json "$T/err"
cmpg run_unet_diffusers_config_json "$T/edj.npy" $U2 golden.y
"$B" run unet --model "$T/diffusers" $S2 -i "$T/ux2.npy" --timesteps "$T/ut2.npy" --context "$T/uc2.npy" -o "$T/edf.npy" 2>"$T/err" || nokf run_unet_diffusers "$T/err"
cmpg run_unet_diffusers "$T/edf.npy" $U2 golden.y
# --vae baked in: the VAE tensors come from the --vae file, everything else from the model
"$H" combine "$T/novae.safetensors" $U1 $C1 && "$B" convert "$T/novae.safetensors" --vae $V $S1 -o "$T/baked.safetensors" 2>"$T/err" &&
  "$H" same $V "$T/baked.safetensors" first_stage_model. >/dev/null && "$H" same "$T/novae.safetensors" "$T/baked.safetensors" "" >/dev/null &&
  ok convert_vae_baked || nokf convert_vae_baked "$T/err"

# ---- bad input ----------------------------------------------------------------------------------
head -c 100000 "$T/sd1.safetensors" >"$T/trunc.safetensors"
refuse bad_truncated 1 'trunc.safetensors: ' "$B" run unet --model "$T/trunc.safetensors" $S1 -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc.npy" -o "$T/x.npy"
refuse bad_truncated_info 1 'trunc.safetensors: ' "$B" info "$T/trunc.safetensors" $S1
"$H" drop "$T/missing.safetensors" "$T/sd1.safetensors" model.diffusion_model.out.2.weight
refuse bad_missing_key 1 'out.2.weight' "$B" run unet --model "$T/missing.safetensors" $S1 -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc.npy" -o "$T/x.npy"
sed 's/^context_dim = 32/context_dim = 64/' "$T/sd1.toml" >"$T/wrong.toml"
refuse bad_shape 1 'expected shape' "$B" run unet --model "$T/sd1.safetensors" --model_config "$T/wrong.toml" -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc.npy" -o "$T/x.npy"
refuse bad_hostile_pickle 1 'os_system.ckpt: refusing to load: pickle references posix.system' "$B" run clip --model tests/data/ckpt/hostile/os_system.ckpt $S1 --tokens "$T/ids.npy" -o "$T/x.npy"
# every malformed/hostile ckpt of the reader's corpus: exit 1 and one line naming the file
bad=""
for f in tests/data/ckpt/hostile/*.ckpt; do
  "$B" info "$f" >/dev/null 2>"$T/err"; rc=$?
  { [ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "^sd-model: $f: " "$T/err"; } || bad="$bad $f:$rc"
done
[ -z "$bad" ] && ok bad_hostile_corpus || { echo "#  $bad"; nok bad_hostile_corpus; }
"$B" info --v2 $V >"$T/info" && grep -q '^family  *SD2.x (from --v2)' "$T/info" && grep -q '^model  *SD2.x component file: VAE' "$T/info" &&
  ok info_vae_v2 || nokf info_vae_v2 "$T/info"
refuse bad_hostile_convert 1 'exec.ckpt: refusing to load' "$B" convert tests/data/ckpt/hostile/exec.ckpt -o "$T/x.safetensors"
[ -e "$T/x.safetensors" ] && nok bad_no_output_left || ok bad_no_output_left
refuse bad_not_a_model 1 'no UNet, VAE or text encoder' "$B" info "$T/basic.safetensors"
refuse bad_missing_file 1 'nope.safetensors: No such file' "$B" info "$T/nope.safetensors"
refuse bad_config 1 'sd1.toml' "$B" info "$T/sd1.safetensors" --model_config "$T/sd1.toml.missing"
printf 'not an npy' >"$T/bad.npy"
refuse bad_npy 1 'bad.npy' "$B" run vae-decode --model "$T/sd1.safetensors" $S1 -i "$T/bad.npy" -o "$T/x.npy"
refuse bad_input_shape 1 'expected \[B,3,H,W\]' "$B" run vae-encode --model "$T/sd1.safetensors" $S1 -i "$T/z.npy" -o "$T/x.npy"
refuse bad_context_shape 1 'uc2.npy: shape' "$B" run unet --model "$T/sd1.safetensors" $S1 -i "$T/ux.npy" --timesteps "$T/ut.npy" --context "$T/uc2.npy" -o "$T/x.npy"
refuse bad_token_float 1 'must be integers' "$B" run clip --model "$T/sd1.safetensors" $S1 --tokens "$T/ut.npy" -o "$T/x.npy"
refuse bad_no_vae 1 'no VAE in this model (give one with --vae)' "$B" run vae-encode --model $C1 $S1 -i "$T/img.npy" -o "$T/x.npy"
exit 0
