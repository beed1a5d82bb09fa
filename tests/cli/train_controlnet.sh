#!/usr/bin/env bash
# sd-train --method controlnet (train_control_net.py, SD1.x/SD2.x) on a tiny random model with generated
# image / conditioning-image pairs (a --dataset_config subset with conditioning_data_dir, --train_data_dir with
# --conditioning_data_dir, records from sd-merge-meta): the loss on the same noise and timesteps is below the
# untrained run's (--learning_rate 0: the zero-initialised ControlNet changes nothing) at every step after the
# first, by more at the end; another conditioning image trains other weights; samples during training with the
# prompts' --cn (training bytes unchanged) and sd-sample --controlnet (a zero ControlNet gives the plain image); --threads 1/2, --gradient_checkpointing
# and --cache_latents give the same bytes; a resumed run equals the uninterrupted one; the saved file has exactly
# the reference's names (convert_controlnet_state_dict_to_sd: the UNet's encoder half, input_hint_block.*,
# zero_convs.*, middle_block_out.*), no metadata, F32 (F16 with --save_precision fp16);
# --controlnet_model_name_or_path starts from a saved file; refusals: records without conditioning images
# (exit 2), --masked_loss (exit 2), an SDXL model (exit 1, "not supported yet"), a sample prompt without --cn (exit 2),
# --controlnet_model_name_or_path with another method (exit 2), a file that is not a ControlNet (exit 1).
. "$(dirname "$0")/lib.sh"
t_init train_controlnet
B="$root/$build/bin"
t_need "$B/sd-train" "$B/sd-merge-meta"
t_tiny_build --build
cd "$tmp"
./tiny_model model tinyv.safetensors "$root/examples/tiny_model.toml" 1 tiny_vae.safetensors > /dev/null &&
  ./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null || { nok train_controlnet_tiny_model; exit 1; }

python3 - <<'PY' || { nok train_controlnet_images; exit 1; }
import os, struct, zlib
def png(path, w, h, px):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = b''.join(b'\0' + bytes(v for x in range(w) for v in px(x, y)) for y in range(h))
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) +
                chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
for k, stem in enumerate(('a', 'b')):
    png(f'img/{stem}.png', 64, 64, lambda x, y: ((x * 7 + y * 13 + k * 50) % 256, (x * 3 + y * 5 + k * 90) % 256, (x * x + y + k * 20) % 256))
    open(f'img/{stem}.caption', 'w').write('sks')
    png(f'cond/{stem}.png', 64, 64, lambda x, y: (255 if x < 32 + 8 * k else 0, (x * y) % 256, 37))
    png(f'cond2/{stem}.png', 64, 64, lambda x, y: (0, 255 if y < 20 + 8 * k else 0, (x + y) % 256))
PY
printf '[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "img"\nconditioning_data_dir = "%s"\n' cond > cn.toml
printf '[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "img"\nconditioning_data_dir = "%s"\n' cond2 > cn2.toml
printf '[general]\nresolution = 64\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "img"\n' > db.toml
T() { "$B/sd-train" --method controlnet --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" \
  --seed 3 --threads 1 --learning_rate 3e-3 "$@"; }
tensors() { python3 -c 'import struct, sys; b = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(b[8 + struct.unpack("<Q", b[:8])[0]:])' "$1"; }
same() { [ -f "$1" ] && [ -f "$2" ] && cmp -s <(tensors "$1") <(tensors "$2"); }

# ---- the loss goes down: per step against the untrained run on the same noise and timesteps --------------------
T --dataset_config cn.toml --cache_latents --max_train_steps 30 --learning_rate 0 --output_dir r0 --log_jsonl r0/log.jsonl 2> r0.err &&
  T --dataset_config cn.toml --cache_latents --max_train_steps 30 --output_dir r1 --log_jsonl r1/log.jsonl 2> r1.err; rc=$?
res=$(python3 - <<'PY'
import json
a = [json.loads(l)['loss'] for l in open('r0/log.jsonl')]; b = [json.loads(l)['loss'] for l in open('r1/log.jsonl')]
d = [x - y for x, y in zip(a, b)]
ok = len(a) == len(b) == 30 and d[0] == 0 and all(v > 0 for v in d[1:]) and sum(d[-10:]) > 2 * sum(d[:10])
print('yes' if ok else 'no', ' '.join('%.4f' % v for v in d))
PY
)
[ $rc = 0 ] && [ "${res%% *}" = yes ] && grep -q 'controlnet: 2 images with a conditioning image' r1.err &&
  grep -q 'the UNet and the text encoder are frozen' r1.err && ok train_controlnet_loss_goes_down ||
  nok train_controlnet_loss_goes_down "rc $rc $res $(tail -2 r1.err)"

# ---- TensorBoard: train_control_net.py's tracker and tags ----------------------------------------------------------
T --dataset_config cn.toml --max_train_steps 2 --logging_dir tblogs --output_dir tb 2> tb.err; rc=$?
tags=$(python3 "$root/tests/cli/tb_scalars.py" "tblogs/*/controlnet_train/events.out.tfevents.*" | cut -d' ' -f1 | sort -u | tr '\n' ' ')
[ $rc = 0 ] && [ "$tags" = "loss/average loss/current loss/epoch lr " ] && ok train_controlnet_tensorboard ||
  nok train_controlnet_tensorboard "rc $rc tags '$tags' $(tail -n 2 tb.err)"

# ---- the conditioning image is the input: another one trains other weights ---------------------------------------
T --dataset_config cn.toml --max_train_steps 3 --output_dir c1 2> c1.err &&
  T --dataset_config cn2.toml --max_train_steps 3 --output_dir c2 2> c2.err; rc=$?
[ $rc = 0 ] && [ -f c1/last.safetensors ] && ! same c1/last.safetensors c2/last.safetensors && ok train_controlnet_cond_used ||
  nok train_controlnet_cond_used "rc $rc $(tail -2 c2.err)"

# ---- same bytes: threads, gradient checkpointing; --train_data_dir + --conditioning_data_dir; sd-merge-meta records
T --dataset_config cn.toml --max_train_steps 3 --threads 2 --output_dir c1t 2> c1t.err &&
  T --dataset_config cn.toml --max_train_steps 3 --gradient_checkpointing --output_dir c1g 2> c1g.err; rc=$?
[ $rc = 0 ] && same c1/last.safetensors c1t/last.safetensors && same c1/last.safetensors c1g/last.safetensors &&
  ok train_controlnet_threads_checkpointing || nok train_controlnet_threads_checkpointing "rc $rc $(tail -2 c1g.err)"
T --train_data_dir img --conditioning_data_dir cond --resolution 64 --caption_extension .caption --max_train_steps 3 \
  --output_dir c1d 2> c1d.err; rc=$?
[ $rc = 0 ] && same c1/last.safetensors c1d/last.safetensors && ok train_controlnet_train_data_dir ||
  nok train_controlnet_train_data_dir "rc $rc $(tail -2 c1d.err)"
"$B/sd-merge-meta" --dataset_config cn.toml --controlnet > recs.jsonl 2> mm.err && T --data recs.jsonl --max_train_steps 3 --output_dir c1r 2> c1r.err; rc=$?
[ $rc = 0 ] && same c1/last.safetensors c1r/last.safetensors && ok train_controlnet_records ||
  nok train_controlnet_records "rc $rc $(tail -n 2 mm.err c1r.err)"

# ---- resume: a state at step 2 continued to 4 equals the uninterrupted run ---------------------------------------
T --dataset_config cn.toml --max_train_steps 4 --save_every_n_steps 2 --save_state --output_dir rf 2> rf.err &&
  T --dataset_config cn.toml --max_train_steps 4 --resume rf/at-step00000002-state --output_dir rr 2> rr.err; rc=$?
[ $rc = 0 ] && same rf/last.safetensors rr/last.safetensors && ! same rf/at-step00000002.safetensors rf/last.safetensors &&
  grep -q 'resumed from rf/at-step00000002-state: step 2' rr.err && ok train_controlnet_resume ||
  nok train_controlnet_resume "rc $rc $(tail -2 rr.err)"

# ---- the saved names: convert_controlnet_state_dict_to_sd's (tiny model: 4 input blocks) ---------------------------
T --dataset_config cn.toml --max_train_steps 1 --save_precision fp16 --output_dir c16 2> c16.err; rc=$?
res=$(python3 - <<'PY'
import json, struct
def hdr(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return json.loads(b[8:8 + n])
m = hdr('tinyv.safetensors')
want = {k[len('model.diffusion_model.'):] for k in m if k.startswith(('model.diffusion_model.time_embed.',
        'model.diffusion_model.input_blocks.', 'model.diffusion_model.middle_block.'))}
want |= {f'input_hint_block.{i}.{p}' for i in range(0, 16, 2) for p in ('weight', 'bias')}
want |= {f'zero_convs.{i}.0.{p}' for i in range(4) for p in ('weight', 'bias')}
want |= {f'middle_block_out.0.{p}' for p in ('weight', 'bias')}
h = hdr('c1/last.safetensors'); h16 = hdr('c16/last.safetensors')
got = set(h) - {'__metadata__'}
ok = got == want and '__metadata__' not in h and all(v['dtype'] == 'F32' for v in h.values()) and \
     set(h16) == set(h) and all(v['dtype'] == 'F16' for v in h16.values()) and \
     h['input_hint_block.0.weight']['shape'] == [16, 3, 3, 3] and h['input_hint_block.14.weight']['shape'] == [32, 256, 3, 3]
print('yes' if ok else 'no', len(got), len(want), sorted(got ^ want)[:4])
PY
)
[ $rc = 0 ] && [ "${res%% *}" = yes ] && ok train_controlnet_saved_names || nok train_controlnet_saved_names "rc $rc $res"

# ---- --controlnet_model_name_or_path: the file's weights (lr 0 keeps them) -----------------------------------------
T --dataset_config cn.toml --max_train_steps 1 --learning_rate 0 --controlnet_model_name_or_path c1/last.safetensors \
  --output_dir cm 2> cm.err; rc=$?
[ $rc = 0 ] && same c1/last.safetensors cm/last.safetensors && grep -q 'controlnet: weights from c1/last.safetensors' cm.err &&
  ok train_controlnet_from_file || nok train_controlnet_from_file "rc $rc $(tail -2 cm.err)"

# ---- sample images during training with the prompts' --cn: the training bytes do not change -----------------------
printf 'sks --cn cond/a.png --w 64 --h 64 --s 2 --d 7\n' > ps.txt
T --dataset_config cn.toml --max_train_steps 3 --sample_prompts ps.txt --sample_every_n_steps 1 --output_dir smp 2> smp.err; rc=$?
n=$(ls smp/sample/*.png 2> /dev/null | wc -l)
s1=$(ls smp/sample/000001_*.png 2> /dev/null) s3=$(ls smp/sample/000003_*.png 2> /dev/null)
[ $rc = 0 ] && [ "$n" = 3 ] && same c1/last.safetensors smp/last.safetensors && ! cmp -s "$s1" "$s3" &&
  ok train_controlnet_samples || nok train_controlnet_samples "rc $rc $n images $(tail -2 smp.err)"

# ---- sd-sample --controlnet: the untrained (zero) ControlNet gives the plain image; a trained one and another
# control image change it; --cn and --controlnet need each other --------------------------------------------------
S() { "$B/sd-sample" --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --W 64 --H 64 --steps 3 \
  --seed 5 --threads 1 --no_metadata --sequential_file_name "$@"; }
T --dataset_config cn.toml --max_train_steps 1 --learning_rate 0 --output_dir z0 2> z0.err &&
  S --prompt "sks" --outdir s_plain > /dev/null 2> s.err && S --prompt "sks --cn cond/a.png" --controlnet z0/last.safetensors --outdir s_zero > /dev/null 2>> s.err &&
  S --prompt "sks --cn cond/a.png" --controlnet r1/last.safetensors --outdir s_tr > /dev/null 2>> s.err &&
  S --prompt "sks --cn cond/b.png" --controlnet r1/last.safetensors --outdir s_tr2 > /dev/null 2>> s.err; rc=$?
[ $rc = 0 ] && cmp -s s_plain/im_000001.png s_zero/im_000001.png && [ -f s_tr/im_000001.png ] &&
  ! cmp -s s_plain/im_000001.png s_tr/im_000001.png && ! cmp -s s_tr/im_000001.png s_tr2/im_000001.png &&
  ok train_controlnet_sd_sample || nok train_controlnet_sd_sample "rc $rc $(tail -n 2 s.err z0.err)"
t_refuse train_controlnet_sd_sample_cn_alone 1 'needs --controlnet FILE' S --prompt "sks --cn cond/a.png" --outdir e8
t_refuse train_controlnet_sd_sample_no_cn 1 'needs a control image in every prompt' \
  S --prompt "sks" --controlnet r1/last.safetensors --outdir e9

# ---- --device cuda: the fake device (SD_FAKE_CUDA=1 in a build without CUDA: host memory, the CPU kernels) and the
# emulated CUDA build ($build/emu/bin: the CUDA kernels' source on the CPU) train the ControlNet within 1e-4 of the
# CPU run's largest weight, and sd-sample runs a ControlNet there (the image within 8 levels of the CPU's) ------------
helper="$root/$build/tests/unit/test_sample"
for mode in fake emu; do
  if [ $mode = fake ]; then
    bin=$B; envs=SD_FAKE_CUDA=1
    grep -aq 'fake CUDA device' "$bin/sd-train" || { echo "ok train_controlnet_device_cuda_$mode # SKIP a CUDA build"; continue; }
  else
    bin="$root/$build/emu/bin"; envs=SD_NONE=1
    [ -x "$bin/sd-train" ] || { echo "ok train_controlnet_device_cuda_$mode # SKIP no $build/emu/bin (make emu-bin)"; continue; }
  fi
  env $envs "$bin/sd-train" --method controlnet --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" \
    --seed 3 --threads 1 --learning_rate 3e-3 --dataset_config cn.toml --max_train_steps 3 --device cuda \
    --output_dir dv_$mode 2> dv_$mode.err; rc=$?
  r=$([ $rc = 0 ] && t_wdiff c1/last.safetensors dv_$mode/last.safetensors 2>&1); set -- $r
  [ $rc = 0 ] && python3 -c "import sys; sys.exit(0 if float('$1') <= 1e-4 * float('$2') else 1)" 2> /dev/null &&
    ok train_controlnet_device_cuda_$mode || nok train_controlnet_device_cuda_$mode "rc $rc $r $(tail -2 dv_$mode.err)"
  env $envs "$bin/sd-sample" --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" --W 64 --H 64 \
    --steps 3 --seed 5 --threads 1 --no_metadata --sequential_file_name --device cuda --prompt "sks --cn cond/a.png" \
    --controlnet r1/last.safetensors --outdir sv_$mode > /dev/null 2> sv_$mode.err; rc=$?
  d=$([ $rc = 0 ] && [ -x "$helper" ] && "$helper" maxdiff s_tr/im_000001.png sv_$mode/im_000001.png)
  [ $rc = 0 ] && [ -n "$d" ] && [ "$d" -le 8 ] && ok train_controlnet_sd_sample_device_cuda_$mode ||
    nok train_controlnet_sd_sample_device_cuda_$mode "rc $rc maxdiff '$d' $(tail -2 sv_$mode.err)"
done

# ---- refusals ---------------------------------------------------------------------------------------------------
t_refuse train_controlnet_no_cond 2 'training records have no conditioning_image' \
  T --dataset_config db.toml --max_train_steps 1 --output_dir e1
t_refuse train_controlnet_masked_loss 2 'train_control_net.py has no masked loss' \
  T --dataset_config cn.toml --masked_loss --max_train_steps 1 --output_dir e2
t_refuse train_controlnet_sdxl 1 'SDXL ControlNet training .* is not supported yet' \
  "$B/sd-train" --method controlnet --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" \
  --dataset_config cn.toml --max_train_steps 1 --output_dir e3
printf 'sks --w 64 --h 64\n' > p.txt
t_refuse train_controlnet_sample_needs_cn 2 'sample prompt 0 has no control image' \
  T --dataset_config cn.toml --sample_prompts p.txt --sample_every_n_steps 1 --max_train_steps 1 --output_dir e4
t_refuse train_controlnet_min_timestep 2 'min_timestep is not used by train_control_net.py' \
  T --dataset_config cn.toml --min_timestep 100 --max_train_steps 1 --output_dir e5
t_refuse train_controlnet_option_other_method 2 'controlnet_model_name_or_path is an option of --method controlnet' \
  "$B/sd-train" --method lora --model tinyv.safetensors --model_config "$root/examples/tiny_model.toml" \
  --dataset_config db.toml --controlnet_model_name_or_path c1/last.safetensors --output_dir e6
t_refuse train_controlnet_not_a_controlnet 1 'not a ControlNet file' \
  T --dataset_config cn.toml --controlnet_model_name_or_path tiny_vae.safetensors --max_train_steps 1 --output_dir e7
[ ! -e e1/last.safetensors ] && [ ! -e e3/last.safetensors ] && [ ! -e e7/last.safetensors ] && ok train_controlnet_refused_no_output ||
  nok train_controlnet_refused_no_output
