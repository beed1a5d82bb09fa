#!/usr/bin/env bash
# sd-train and kohya's options that do nothing here or are not implemented (sd-train(1) "kohya options"):
# the no-op options run and each prints its line; --console_log_level/--console_log_file work; the
# refused options, on the command line and in a --config_file (also keys sd-train does not know), exit 2
# naming the option (conditioning_data_dir there: no effect, as train_network.py), while false values pass; dataset subsets and records with
# custom_attributes is refused (exit 2, naming the file and the key), color_aug / random_crop /
# face_crop_aug_range with --cache_latents (the reference's assertion) or on records with a latent file; a dataset's resize_interpolation now reaches --cache_latents' resize.
. "$(dirname "$0")/lib.sh"
t_init train_kohya_opts train_kohya
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build --build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null ||
  { nok train_kohya_tiny_model; exit 1; }
./tiny_model latents "$tmp" 4 4 8 8 > recs.jsonl || { nok train_kohya_tiny_latents; exit 1; }
mkdir -p img
./tiny_model images img 3 80 72 > /dev/null || { nok train_kohya_images; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --seed 3 \
  --learning_rate 1e-3 --network_dim 4 --threads 1 --max_train_steps 1 "$@"; }

# ---- accepted without effect: the run goes on, one line per option ------------------------------------------
noop=(xformers sdpa mem_eff_attn diffusers_xformers torch_compile persistent_data_loader_workers lowram highvram
      disable_mmap_load_safetensors cpu_offload_checkpointing skip_cache_check console_log_simple)
args=()
for o in "${noop[@]}"; do args+=("--$o"); done
T --data recs.jsonl --output_dir n1 "${args[@]}" --max_data_loader_n_workers 4 --vae_batch_size 2 \
  --dynamo_backend inductor 2> n1.err; rc=$?
[ $rc = 0 ] && [ -f n1/last.safetensors ] && ok train_kohya_noop_runs || nok train_kohya_noop_runs "rc $rc $(tail -3 n1.err)"
for o in "${noop[@]}" max_data_loader_n_workers vae_batch_size dynamo_backend; do
  [ "$(grep -c "^sd-train: --$o: no effect: " n1.err)" = 1 ] && ok "train_kohya_noop_$o" || nok "train_kohya_noop_$o"
done
grep -q 'attention here is always memory-efficient' n1.err && ok train_kohya_noop_says_why || nok train_kohya_noop_says_why
# the same bytes as a run without them
T --data recs.jsonl --output_dir n0 2> n0.err
cmp -s n0/last.safetensors n1/last.safetensors && ok train_kohya_noop_same_bytes || nok train_kohya_noop_same_bytes
# --help lists them
"$bin" --help > help.txt
grep -q -- '--max_data_loader_n_workers N' help.txt && grep -q -- '--xformers ' help.txt && grep -q -- '--console_log_level' help.txt &&
  ok train_kohya_help || nok train_kohya_help

# ---- --console_log_level and --console_log_file -----------------------------------------------------------------
T --data recs.jsonl --output_dir l1 --console_log_level WARNING --xformers 2> l1.err; rc=$?
[ $rc = 0 ] && [ -f l1/last.safetensors ] && ! grep -q 'model saved' l1.err && ! grep -q xformers l1.err &&
  grep -q 'model saved' n0.err && ok train_kohya_console_log_level || nok train_kohya_console_log_level "rc $rc $(cat l1.err)"
T --data recs.jsonl --output_dir l2 --console_log_level warning 2> l2.err; rc=$?
[ $rc = 2 ] && grep -q 'invalid choice' l2.err && ok train_kohya_console_log_level_choice ||
  nok train_kohya_console_log_level_choice "rc $rc $(cat l2.err)"
echo 'old text that must go' > log.txt
T --data recs.jsonl --output_dir l3 --console_log_file log.txt 2> l3.err; rc=$?
[ $rc = 0 ] && [ ! -s l3.err ] && grep -q 'model saved' log.txt && ! grep -q 'old text' log.txt &&
  ok train_kohya_console_log_file || nok train_kohya_console_log_file "rc $rc $(cat l3.err) / $(cat log.txt)"

# ---- refused on the command line: exit 2, the option named, its value consumed ------------------------------------
refuse() {  # name, then the option's arguments
  local name=$1; shift
  T --data recs.jsonl --output_dir "r_$name" "$@" 2> "r_$name.err"; local rc=$?
  [ $rc = 2 ] && grep -q "^sd-train: --$name: not implemented: " "r_$name.err" && ! grep -q unknown "r_$name.err" &&
    [ ! -e "r_$name" ] && ok "train_kohya_refused_$name" || nok "train_kohya_refused_$name" "rc $rc $(cat "r_$name.err")"
}
refuse lr_scheduler_type --lr_scheduler_type mylib.MyScheduler
# color_aug / random_crop are options now: on records with latent files they are refused (file:line, exit 2)
for o in color_aug random_crop face_crop_aug_range; do
  v=; [ $o = face_crop_aug_range ] && v=2.0,4.0
  T --data recs.jsonl --output_dir "r_$o" --$o $v 2> "r_$o.err"; rc=$?
  [ $rc = 2 ] && grep -q "^sd-train: recs.jsonl:1: .*: the record has a 'latents' file, which is fixed: $o needs" "r_$o.err" &&
    [ ! -e "r_$o" ] && ok "train_kohya_latents_refuse_$o" || nok "train_kohya_latents_refuse_$o" "rc $rc $(cat "r_$o.err")"
done
refuse dataset_class --dataset_class x
T --data recs.jsonl --output_dir r_off --no-color_aug --no-fp8_base 2> r_off.err; rc=$?
[ $rc = 0 ] && ! grep -q 'color_aug\|fp8' r_off.err && ok train_kohya_refused_off_passes || nok train_kohya_refused_off_passes "rc $rc $(cat r_off.err)"

# ---- --config_file: no-op keys said so, training keys refused (also ones sd-train does not know), the rest warned --
cat > c1.toml <<'TOML'
[training_arguments]
xformers = true
dataset_class = "x"
conditioning_data_dir = "masks"
fp8_base = false
wandb_run_name = "x"
TOML
T --data recs.jsonl --output_dir c1 --config_file c1.toml 2> c1.err; rc=$?
[ $rc = 2 ] && grep -q '^sd-train: c1.toml: dataset_class: not implemented: ' c1.err &&
  grep -q '^sd-train: c1.toml: conditioning_data_dir: no effect: train_network.py parses it and never reads it' c1.err && grep -q 'c1.toml: xformers: no effect' c1.err &&
  ! grep -q fp8_base c1.err && grep -q 'not used by sd-train: wandb_run_name$' c1.err && [ ! -e c1 ] &&
  ok train_kohya_config_refused || nok train_kohya_config_refused "rc $rc $(cat c1.err)"
cat > c2.toml <<'TOML'
masked_loss = true
TOML
T --data recs.jsonl --output_dir c2 --config_file c2.toml 2> c2.err; rc=$?
[ $rc = 0 ] && ! grep -q 'not implemented\|not used' c2.err && [ -f c2/last.safetensors ] &&
  ok train_kohya_config_masked_loss_is_an_option || nok train_kohya_config_masked_loss_is_an_option "rc $rc $(cat c2.err)"
cat > c3.toml <<'TOML'
masked_loss = false
alpha_mask = false
color_aug = false
random_crop = false
save_n_epoch_ratio = 0
lr_scheduler_type = ""
TOML
T --data recs.jsonl --output_dir c3 --config_file c3.toml 2> c3.err; rc=$?
[ $rc = 0 ] && ! grep -q 'not used\|not implemented' c3.err && ok train_kohya_config_false_values ||
  nok train_kohya_config_false_values "rc $rc $(cat c3.err)"

# ---- dataset subsets and records ------------------------------------------------------------------------------------
D() { T --dataset_config "$1" --cache_latents --output_dir "$2"; }
ds() {  # file, [general] lines, subset lines
  printf '[general]\nresolution = 64\n%b\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "img"\n%b\n' "$2" "$3" > "$1"
}
ds d_ok.toml '' ''
D d_ok.toml d_ok 2> d_ok.err; rc=$?
[ $rc = 0 ] && [ -f d_ok/last.safetensors ] && ok train_kohya_dataset_ok || nok train_kohya_dataset_ok "rc $rc $(tail -3 d_ok.err)"
dsrefuse() {  # test name, expected message part, [general] lines, subset lines
  ds "$1.toml" "$3" "$4"
  D "$1.toml" "$1" 2> "$1.err"; local rc=$?
  [ $rc = 2 ] && grep -q "^sd-train: $1.toml:[0-9]*: datasets\[0\].subsets\[0\]: $2" "$1.err" && [ ! -e "$1" ] &&
    ok "train_kohya_$1" || nok "train_kohya_$1" "rc $rc $(cat "$1.err")"
}
dsrefuse dataset_random_crop 'random_crop = true: when caching latents, either color_aug or random_crop cannot be used' '' 'random_crop = true'
dsrefuse dataset_color_aug_general 'color_aug = true: when caching latents' 'color_aug = true' ''
dsrefuse dataset_face_crop 'face_crop_aug_range = \[2,4\]: the face crop applies to images encoded at every step' '' 'face_crop_aug_range = [2.0, 4.0]'
dsrefuse dataset_custom_attributes 'custom_attributes = {"diff_output_preservation":true}: not implemented' '' \
  'custom_attributes = { diff_output_preservation = true }'
awk 'NR == 2 { sub(/}$/, ",\"color_aug\":true}") } { print }' recs.jsonl > r_aug.jsonl
T --data r_aug.jsonl --output_dir rr 2> rr.err; rc=$?
[ $rc = 2 ] && grep -q "^sd-train: r_aug.jsonl:2: color_aug = true: the record has a 'latents' file" rr.err && [ ! -e rr ] &&
  ok train_kohya_record_refused || nok train_kohya_record_refused "rc $rc $(cat rr.err)"
awk '{ sub(/}$/, ",\"color_aug\":false,\"random_crop\":false,\"custom_attributes\":{},\"face_crop_aug_range\":null}") } { print }' \
  recs.jsonl > r_off.jsonl
T --data r_off.jsonl --output_dir rr2 2> rr2.err; rc=$?
[ $rc = 0 ] && ok train_kohya_record_false_passes || nok train_kohya_record_false_passes "rc $rc $(cat rr2.err)"

# ---- resize_interpolation reaches --cache_latents (80x72 images shrink to 64: "area" is the automatic choice;
# OpenCV's "cubic" is accepted and gives other latents) ----
tensors() { python3 -c "
import hashlib,struct,sys;b=open(sys.argv[1],'rb').read();n=struct.unpack('<Q',b[:8])[0];print(hashlib.sha256(b[8+n:]).hexdigest())" "$1"; }
for f in area lanczos cubic; do
  ds "d_$f.toml" "resize_interpolation = \"$f\"" ''
  D "d_$f.toml" "d_$f" 2> "d_$f.err" || nok "train_kohya_resize_$f" "$(tail -2 "d_$f.err")"
done
a0=$(tensors d_ok/last.safetensors); a1=$(tensors d_area/last.safetensors); a2=$(tensors d_lanczos/last.safetensors)
a3=$(tensors d_cubic/last.safetensors)
[ -n "$a0" ] && [ "$a0" = "$a1" ] && [ "$a0" != "$a2" ] && [ -n "$a3" ] && [ "$a3" != "$a0" ] && [ "$a3" != "$a2" ] &&
  ok train_kohya_resize_interpolation || nok train_kohya_resize_interpolation "auto $a0 area $a1 lanczos $a2 cubic $a3"
