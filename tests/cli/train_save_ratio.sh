#!/usr/bin/env bash
# sd-train --save_n_epoch_ratio N (the reference: save_every_n_epochs = math.floor(num_train_epochs / N) or 1,
# overriding --save_every_n_epochs; --save_last_n_epochs and --save_state follow the new period) for LoRA, TI
# and DreamBooth; and the --metadata_* options as get_sai_model_spec writes them (modelspec.author ... and the
# extras usage_hint, thumbnail (a file → data:<mime>;base64, a data: URL as given, a missing file left out with
# a warning), merged_from, trigger_phrase, preprocessor, is_negative_embedding) in LoRA, TI and checkpoint files.
. "$(dirname "$0")/lib.sh"
t_init train_save_ratio train_ratio
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
cfg="$root/examples/tiny_model.toml"
./tiny_model model tiny.safetensors "$cfg" > /dev/null || { nok train_ratio_tiny_model; exit 1; }
# 2 records, batch 1: 2 steps per epoch
./tiny_model latents "$tmp" 2 4 8 8 | sed 's/"caption":"sks, /"caption":"zqtok, /' > recs.jsonl ||
  { nok train_ratio_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
L() { "$bin" --method lora --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 \
  --seed 3 --network_dim 4 --threads 1 --output_name n "$@"; }
files() { ls "$1" | LC_ALL=C sort | tr '\n' ' '; }

# ---- --save_n_epoch_ratio ----------------------------------------------------------------------------------------
# 7 epochs, ratio 3: every floor(7/3) = 2 epochs (the last epoch is the final file)
L --output_dir r1 --max_train_epochs 7 --save_n_epoch_ratio 3 2> r1.err; rc=$?
[ $rc = 0 ] && [ "$(files r1)" = "n-000002.safetensors n-000004.safetensors n-000006.safetensors n.safetensors " ] &&
  grep -q 'save_n_epoch_ratio 3: saving every 2 epochs' r1.err && ok train_ratio_every_2 ||
  nok train_ratio_every_2 "rc $rc $(files r1) $(tail -2 r1.err)"
# overrides --save_every_n_epochs: 7 epochs, ratio 2 → every 3
L --output_dir r2 --max_train_epochs 7 --save_every_n_epochs 1 --save_n_epoch_ratio 2 2> r2.err; rc=$?
[ $rc = 0 ] && [ "$(files r2)" = "n-000003.safetensors n-000006.safetensors n.safetensors " ] &&
  ok train_ratio_overrides_every || nok train_ratio_overrides_every "rc $rc $(files r2)"
# a ratio above the epoch count: floor(3/5) = 0 → every epoch
L --output_dir r3 --max_train_epochs 3 --save_n_epoch_ratio 5 2> r3.err; rc=$?
[ $rc = 0 ] && [ "$(files r3)" = "n-000001.safetensors n-000002.safetensors n.safetensors " ] &&
  ok train_ratio_at_least_1 || nok train_ratio_at_least_1 "rc $rc $(files r3)"
# from --max_train_steps: 13 steps = 7 epochs; 0 (and negative) is off
L --output_dir r4 --max_train_steps 13 --save_n_epoch_ratio 3 2> r4.err; rc=$?
[ $rc = 0 ] && [ "$(files r4)" = "n-000002.safetensors n-000004.safetensors n-000006.safetensors n.safetensors " ] &&
  ok train_ratio_from_steps || nok train_ratio_from_steps "rc $rc $(files r4)"
L --output_dir r5 --max_train_epochs 3 --save_n_epoch_ratio 0 2> r5.err; rc=$?
[ $rc = 0 ] && [ "$(files r5)" = "n.safetensors " ] && ok train_ratio_zero_off || nok train_ratio_zero_off "rc $rc $(files r5)"
# retention and states follow the new period: every 2, keep 1 → epoch 6 only; states (keep 2) 4 and 6
L --output_dir r6 --max_train_epochs 7 --save_n_epoch_ratio 3 --save_last_n_epochs 1 --save_last_n_epochs_state 2 \
  --save_state 2> r6.err; rc=$?
[ $rc = 0 ] && [ "$(files r6)" = "n-000004-state n-000006-state n-000006.safetensors n-state n.safetensors " ] &&
  ok train_ratio_retention_state || nok train_ratio_retention_state "rc $rc $(files r6)"
# in a --config_file too
printf 'save_n_epoch_ratio = 3\n' > ratio.toml
L --output_dir r7 --max_train_epochs 7 --config_file ratio.toml 2> r7.err; rc=$?
[ $rc = 0 ] && [ "$(files r7)" = "n-000002.safetensors n-000004.safetensors n-000006.safetensors n.safetensors " ] && ok train_ratio_config_file || nok train_ratio_config_file "rc $rc $(files r7)"
# textual inversion and DreamBooth (train_textual_inversion.py / train_db.py do the same)
"$bin" --method ti --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --token_string zqtok \
  --learning_rate 5e-2 --seed 3 --threads 1 --output_name n --output_dir t1 --max_train_epochs 5 --save_n_epoch_ratio 2 \
  --save_model_as safetensors 2> t1.err; rc=$?
[ $rc = 0 ] && [ "$(files t1)" = "n-000002.safetensors n-000004.safetensors n.safetensors " ] && ok train_ratio_ti ||
  nok train_ratio_ti "rc $rc $(files t1) $(tail -2 t1.err)"
"$bin" --method db --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 --seed 3 \
  --threads 1 --output_name n --output_dir d1 --max_train_epochs 3 --save_n_epoch_ratio 2 --save_model_as safetensors \
  2> d1.err; rc=$?
[ $rc = 0 ] && [ "$(files d1)" = "n-000001.safetensors n-000002.safetensors n.safetensors " ] && ok train_ratio_db ||
  nok train_ratio_db "rc $rc $(files d1) $(tail -2 d1.err)"
"$bin" --help | grep -q -- '--save_n_epoch_ratio N' && ok train_ratio_help || nok train_ratio_help

# ---- --metadata_* --------------------------------------------------------------------------------------------------
printf '\x89PNG fake' > thumb.png
M=(--metadata_title "My title" --metadata_author "A. Author" --metadata_description "déscription" --metadata_license mit
   --metadata_tags "a,b" --metadata_usage_hint "use zqtok" --metadata_thumbnail thumb.png --metadata_merged_from "x, y"
   --metadata_trigger_phrase "zqtok style" --metadata_preprocessor canny --metadata_is_negative_embedding True)
# meta FILE [KEY=VALUE ...] [-KEY ...]: "same" when the metadata has these values (KEY absent for -KEY), else the
# differences; the extras after modelspec.encoder_layer/prediction_type in the reference's order
meta() { python3 - "$@" <<'PY'
import base64, json, struct, sys
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; m = json.loads(b[8:8 + n]).get('__metadata__', {})
bad = []
for a in sys.argv[2:]:
    if a.startswith('-'):
        if a[1:] in m: bad.append('%s present' % a[1:])
        continue
    k, v = a.split('=', 1)
    if v == '@thumb': v = 'data:image/png;base64,' + base64.b64encode(open('thumb.png', 'rb').read()).decode()
    if m.get(k) != v: bad.append('%s: got %r want %r' % (k, m.get(k), v))
ex = [k for k in m if k.startswith('modelspec.')]
order = ['modelspec.is_negative_embedding', 'modelspec.merged_from', 'modelspec.preprocessor', 'modelspec.thumbnail',
         'modelspec.trigger_phrase', 'modelspec.usage_hint', 'modelspec.implementation_version']
got = [k for k in ex if k in order]
if got != [k for k in order if k in m]: bad.append('order %r' % got)
print('; '.join(bad) if bad else 'same')
PY
}
W=(modelspec.title="My title" modelspec.author="A. Author" modelspec.description="déscription" modelspec.license=mit
   modelspec.tags="a,b" modelspec.usage_hint="use zqtok" modelspec.thumbnail=@thumb modelspec.merged_from="x, y"
   modelspec.trigger_phrase="zqtok style" modelspec.preprocessor=canny modelspec.is_negative_embedding=True)
L --output_dir m1 --max_train_steps 1 "${M[@]}" 2> m1.err; rc=$?
out=$(meta m1/n.safetensors "${W[@]}" modelspec.architecture=stable-diffusion-v1/lora)
[ $rc = 0 ] && [ "$out" = same ] && ok train_metadata_lora || nok train_metadata_lora "rc $rc $out $(tail -2 m1.err)"
out=$(L --output_dir m0 --max_train_steps 1 2> /dev/null; meta m0/n.safetensors modelspec.title=n -modelspec.author \
  -modelspec.usage_hint -modelspec.thumbnail -modelspec.merged_from -modelspec.trigger_phrase -modelspec.preprocessor \
  -modelspec.is_negative_embedding)
[ "$out" = same ] && ok train_metadata_absent_by_default || nok train_metadata_absent_by_default "$out"
"$bin" --method ti --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --token_string zqtok \
  --learning_rate 5e-2 --seed 3 --threads 1 --output_name n --output_dir m2 --max_train_steps 1 \
  --save_model_as safetensors "${M[@]}" 2> m2.err; rc=$?
out=$(meta m2/n.safetensors "${W[@]}" modelspec.architecture=stable-diffusion-v1/textual-inversion)
[ $rc = 0 ] && [ "$out" = same ] && ok train_metadata_ti || nok train_metadata_ti "rc $rc $out $(tail -2 m2.err)"
"$bin" --method db --model tiny.safetensors --model_config "$cfg" --data recs.jsonl --learning_rate 1e-3 --seed 3 \
  --threads 1 --output_name n --output_dir m3 --max_train_steps 1 --save_model_as safetensors "${M[@]}" 2> m3.err; rc=$?
out=$(meta m3/n.safetensors "${W[@]}" modelspec.architecture=stable-diffusion-v1)
[ $rc = 0 ] && [ "$out" = same ] && ok train_metadata_db || nok train_metadata_db "rc $rc $out $(tail -2 m3.err)"
# a data: URL as given; a missing file: a warning, no key (the reference's "Thumbnail file not found, skipping")
L --output_dir m4 --max_train_steps 1 --metadata_thumbnail 'data:image/png;base64,QUJD' 2> m4.err; rc=$?
out=$(meta m4/n.safetensors modelspec.thumbnail='data:image/png;base64,QUJD')
[ $rc = 0 ] && [ "$out" = same ] && ok train_metadata_thumbnail_data_url || nok train_metadata_thumbnail_data_url "rc $rc $out"
L --output_dir m5 --max_train_steps 1 --metadata_thumbnail nothere.png 2> m5.err; rc=$?
out=$(meta m5/n.safetensors -modelspec.thumbnail)
[ $rc = 0 ] && [ "$out" = same ] && grep -q 'metadata_thumbnail nothere.png: .*no modelspec.thumbnail' m5.err &&
  ok train_metadata_thumbnail_missing || nok train_metadata_thumbnail_missing "rc $rc $out $(cat m5.err)"
exit 0
