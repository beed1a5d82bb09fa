#!/usr/bin/env bash
# sd-tag on ONNX graphs (tests/data/onnx, tests/golden/gen/make_onnx_golden.py) end to end: the
# torch-exported tiny ConvNeXt (dynamic batch) and SwinV2 (batch fixed to 1) taggers give the same
# records as the same weights in safetensors form, with the optimisation pass on and off (SD_ONNX_NO_OPT); --onnx, a .onnx file as --model, the model's fixed
# batch overriding --batch_size (a last batch padded), --threads 1 vs 2, and the refusals (unsupported operator, truncated
# file, tag-count mismatch, cl_tagger layout, --device cuda, --onnx without model.onnx).
. "$(dirname "$0")/lib.sh"
t_init tag_onnx
SD=$root/$build/bin/sd-tag
t_need "$SD"
cd "$tmp"

tags() {   # selected_tags.csv with 4 ratings, $1 general and $2 character tags
  echo 'tag_id,name,category,count'
  for r in general sensitive questionable explicit; do echo "9,$r,9,1"; done
  for i in $(seq 1 "$1"); do echo "$i,general_$i,0,1"; done
  for i in $(seq 1 "$2"); do echo "$i,character_$i,4,1"; done
}
mkdir -p img co cs so ss both
for f in a_97x61 b_203x150_rgba c_640x480 d_50x33_la e_33x517; do cp "$root/tests/data/tagger/$f.png" img/; done
tags 14 6 > co/selected_tags.csv
cp "$root/tests/data/onnx/convnext.onnx" co/model.onnx
cp co/selected_tags.csv cs/ && cp "$root/tests/data/tagger/convnext_tiny.safetensors" cs/model.safetensors
tags 14 6 > so/selected_tags.csv
cp "$root/tests/data/onnx/swinv2.onnx" so/model.onnx
cp so/selected_tags.csv ss/ && cp "$root/tests/data/onnx/swinv2_w4.safetensors" ss/model.safetensors
cp co/model.onnx cs/model.safetensors co/selected_tags.csv both/

# ---- ConvNeXt: ONNX records = safetensors records (a middle threshold: a real selection) --------
"$SD" --model cs --thresh 0.5 --no-sidecar img > st.out 2> st.err || nok tag_onnx_st_ref "$(cat st.err)"
"$SD" --model co --thresh 0.5 --batch_size 3 img > on.out 2> on.err; rc=$?
[ $rc = 0 ] && [ "$(wc -l < on.out)" = 5 ] && cmp -s st.out on.out && ok tag_onnx_convnext_same_tags ||
  nok tag_onnx_convnext_same_tags "exit $rc: $(diff st.out on.out | head -4) $(tail -2 on.err)"
grep -q 'co/model.onnx (no model.safetensors): ONNX graph (pytorch, opset 17' on.err &&
  grep -q 'input \[N,64,64,3\], 24 tags, on the CPU' on.err && ok tag_onnx_info || nok tag_onnx_info "$(head -3 on.err)"
n_tags=$(head -1 on.out | grep -o ', ' | wc -l)
[ "$n_tags" -ge 3 ] && [ "$n_tags" -le 18 ] && ok tag_onnx_selection || nok tag_onnx_selection "$n_tags separators: $(head -1 on.out)"
[ -f img/a_97x61.txt ] && [ "$(cat img/a_97x61.txt)" = "$(head -1 on.out | sed 's/.*"tags":"\(.*\)"}/\1/')" ] &&
  ok tag_onnx_sidecar || nok tag_onnx_sidecar "$(cat img/a_97x61.txt 2>&1)"
"$SD" --model co --thresh 0.5 --no-sidecar --threads 1 --batch_size 2 img > t1.out 2>/dev/null
"$SD" --model co --thresh 0.5 --no-sidecar --threads 2 --batch_size 5 img > t2.out 2>/dev/null
cmp -s t1.out on.out && cmp -s t2.out on.out && ok tag_onnx_threads_batches || nok tag_onnx_threads_batches

# the graph-optimisation pass: reported, and the same records with it off (SD_ONNX_NO_OPT=1)
grep -q 'graph optimised: [0-9]* nodes folded to constants, fused: 0 LayerNorm, 5 activation, 10 linear' on.err &&
  ok tag_onnx_opt_info || nok tag_onnx_opt_info "$(grep optimis on.err)"
SD_ONNX_NO_OPT=1 "$SD" --model co --thresh 0.5 --no-sidecar --batch_size 3 img > nopt.out 2> nopt.err
cmp -s nopt.out on.out && grep -q 'graph optimisation off (SD_ONNX_NO_OPT)' nopt.err &&
  ok tag_onnx_no_opt_same || nok tag_onnx_no_opt_same "$(diff nopt.out on.out | head -4) $(grep optimis nopt.err)"

# --onnx picks model.onnx over model.safetensors; a .onnx file as --model (the CSV beside it)
"$SD" --model both --onnx --thresh 0.5 --no-sidecar img > b.out 2> b.err
grep -q 'both/model.onnx: ONNX graph' b.err && cmp -s b.out on.out &&
  ok tag_onnx_flag || nok tag_onnx_flag "$(tail -2 b.err)"
"$SD" --model co/model.onnx --thresh 0.5 --no-sidecar img > f.out 2> f.err
cmp -s f.out on.out && ok tag_onnx_file || nok tag_onnx_file "$(tail -2 f.err)"

# ---- SwinV2, batch fixed to 1 in the graph: --batch_size gives way, as in the reference -----------
"$SD" --model ss --thresh 0.5 --no-sidecar img > sst.out 2>/dev/null
"$SD" --model so --thresh 0.5 --no-sidecar --batch_size 4 img > son.out 2> son.err; rc=$?
[ $rc = 0 ] && cmp -s sst.out son.out && ok tag_onnx_swinv2_same_tags || nok tag_onnx_swinv2_same_tags "exit $rc: $(diff sst.out son.out | head -4)"
grep -q "Batch size 4 doesn't match onnx model batch size 1, use model batch size 1" son.err &&
  grep -q 'input \[1,64,64,3\]' son.err && ok tag_onnx_fixed_batch || nok tag_onnx_fixed_batch "$(head -4 son.err)"

# ---- a batch fixed to 2 (the ConvNeXt graph with its "batch" dim_param made dim_value 2, padded with an
# unknown field to keep the lengths): 5 images in batches of 2, the last one padded
mkdir -p fb2 && cp co/selected_tags.csv fb2/
LC_ALL=C sed 's/\x12\x05batch/\x08\x02\x7a\x03xxx/g' co/model.onnx > fb2/model.onnx
"$SD" --model fb2 --thresh 0.5 --no-sidecar img > fb2.out 2> fb2.err; rc=$?
[ $rc = 0 ] && cmp -s fb2.out on.out && grep -q "Batch size 1 doesn't match onnx model batch size 2" fb2.err &&
  ok tag_onnx_fixed_batch_padded || nok tag_onnx_fixed_batch_padded "exit $rc: $(tail -2 fb2.err)"

# ---- refusals ---------------------------------------------------------------------------------
mkdir -p bad_op trunc count cl noonnx
cp co/selected_tags.csv bad_op/ && LC_ALL=C sed 's/Tanh/Tanx/g' co/model.onnx > bad_op/model.onnx
t_refuse -1 tag_onnx_unsupported_op 1 'bad_op/model.onnx: operator Tanx (node .Tanx_[0-9]*.) is not supported' \
  "$SD" --model bad_op img
cp co/selected_tags.csv trunc/ && head -c 30000 co/model.onnx > trunc/model.onnx
t_refuse -1 tag_onnx_truncated 1 'trunc/model.onnx: .*\(truncated\|past the end\)' "$SD" --model trunc img
cp "$root/tests/data/onnx/tf2onnx.onnx" count/model.onnx && cp co/selected_tags.csv count/
t_refuse -1 tag_onnx_count_mismatch 1 'has 24 tags but count/model.onnx has 12 outputs' "$SD" --model count img
touch cl/model_optimized.onnx cl/tag_mapping.json
t_refuse -1 tag_onnx_cl_tagger 1 'cl_tagger layout) is not supported' "$SD" --model cl img
cp cs/* noonnx/
t_refuse -1 tag_onnx_flag_without_onnx 1 'noonnx: no model.onnx in this folder (--onnx)' "$SD" --model noonnx --onnx img
t_refuse tag_onnx_flag_with_safetensors_file 2 '--onnx: cs/model.safetensors is not a .onnx file' \
  "$SD" --model cs/model.safetensors --onnx img
t_refuse tag_onnx_cuda 2 'ONNX models run on the CPU only' "$SD" --model co --device cuda img
ls img/.*tmp* 2>/dev/null | grep -q . && nok tag_onnx_no_temp_files || ok tag_onnx_no_temp_files
