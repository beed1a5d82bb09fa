#!/usr/bin/env bash
# sd-train --resume DIR where DIR is a kohya-ss/sd-scripts train_network.py --save_state folder
# (tests/data/train_lora_kohya/state, written by tests/golden/gen/make_lora_resume_kohya_golden.py
# for the tiny model of tests/data/train_lora/): the run continues at step 5 (train_state.json's
# current_step 4), saves step files with the continued numbers, warns once that kohya's random
# states do not carry over, and our own --save_state of the continued run resumes again; a
# pytorch_model.bin with DDP's "module." keys gives the same run; the LR schedule continues at
# scheduler.bin's last_epoch; without train_state.json the step count starts at 0. Refusals,
# each exit 1 with one error line naming the file: no optimizer.bin, no model file, an optimizer
# sd-train does not read from kohya states (Prodigy), another optimizer than the state's (Lion),
# a different network_dim (optimizer.bin's shapes) or network_alpha (model.safetensors), another
# learning rate (optimizer.bin's group), a method other than lora (exit 2), an SD1 state for an
# SDXL network.
. "$(dirname "$0")/lib.sh"
t_init train_resume_kohya
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
data="$root/tests/data/train_lora"
state="$root/tests/data/train_lora_kohya/state"
cd "$tmp"
./tiny_model latents "$tmp" 2 4 8 8 > recs.jsonl || { nok train_resume_kohya_latents; exit 1; }
T() { "$bin" --method lora --model "$data/model.safetensors" --model_config "$data/tiny.toml" --data recs.jsonl \
  --seed 1 --threads 1 --network_dim 4 --network_alpha 2 --learning_rate 1e-3 --train_batch_size 2 \
  --max_train_steps 8 "$@"; }

# resume: steps 5..8, step files 6 and 8 (kohya's numbering continued), one warning about the RNG
T --resume "$state" --save_every_n_steps 2 --save_state --output_dir out --output_name r --log_jsonl log.jsonl 2> r.err
rc=$?
steps=$(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1])))' log.jsonl 2>/dev/null)
if [ $rc = 0 ] && [ "$steps" = "5 6 7 8" ] && [ -f out/r-step00000006.safetensors ] && [ ! -e out/r-step00000004.safetensors ] &&
   [ -f out/r.safetensors ] && [ -d out/r-step00000006-state ] && grep -q 'resumed from kohya-ss state .*: step 4, epoch 5' r.err &&
   [ "$(grep -c 'cannot carry over' r.err)" = 1 ]; then ok train_resume_kohya_continues
else nok train_resume_kohya_continues "rc $rc steps '$steps' $(ls out 2>&1 | tr '\n' ' ') $(tail -3 r.err)"; fi
# avr_loss: kohya's loss recorder starts empty on a resume (the first step's average is its loss)
python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
sys.exit(0 if r["avr_loss"] == r["loss"] else 1)' log.jsonl && ok train_resume_kohya_avr_loss ||
  nok train_resume_kohya_avr_loss "$(head -1 log.jsonl)"
# our own state of the continued run resumes as usual
T --resume out/r-step00000006-state --output_dir out2 --output_name r --log_jsonl log2.jsonl 2> r2.err; rc=$?
steps=$(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1])))' log2.jsonl 2>/dev/null)
[ $rc = 0 ] && [ "$steps" = "7 8" ] && ok train_resume_kohya_then_own || nok train_resume_kohya_then_own "rc $rc '$steps' $(tail -2 r2.err)"

# pytorch_model.bin (safe_serialization=False) with DDP's "module." keys: the same run, bit for bit
mkdir ddp && cp "$state"/optimizer.bin "$state"/scheduler.bin "$state"/train_state.json ddp/ &&
  cp "$root/tests/data/train_lora_kohya/pytorch_model_ddp.bin" ddp/pytorch_model.bin
T --resume ddp --output_dir out3 --output_name r --log_jsonl log3.jsonl 2> r3.err; rc=$?
T --resume "$state" --output_dir out4 --output_name r --log_jsonl log4.jsonl 2> r4.err
losses() { python3 -c 'import json,sys; print(" ".join(repr(json.loads(l)["loss"]) for l in open(sys.argv[1])))' "$1"; }
if [ $rc = 0 ] && [ -n "$(losses log3.jsonl)" ] && [ "$(losses log3.jsonl)" = "$(losses log4.jsonl)" ]; then
  ok train_resume_kohya_pytorch_model_bin
else nok train_resume_kohya_pytorch_model_bin "rc $rc $(tail -2 r3.err)"; fi
# the scheduler's last_epoch wins for the schedule (an info line when it differs from current_step):
# a linear schedule logs the LR of step last_epoch + 1
mkdir sch && cp "$state"/* sch/ && echo '{"current_epoch": 3, "current_step": 3}' > sch/train_state.json
T --resume sch --lr_scheduler linear --output_dir out5 --output_name r --log_jsonl log5.jsonl 2> r5.err; rc=$?
lr=$(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(r["step"], r["lr"]["unet"])' log5.jsonl 2>/dev/null)
if [ $rc = 0 ] && [ "$lr" = "4 0.0005" ] && grep -q 'the LR scheduler is at 4, the step count at 3' r5.err; then
  ok train_resume_kohya_scheduler_position
else nok train_resume_kohya_scheduler_position "rc $rc '$lr' $(tail -2 r5.err)"; fi
# a scheduler.bin the safe reader refuses (here: numpy objects): a warning, the schedule from current_step
mkdir bsch && cp "$state"/* bsch/ && cp "$state"/random_states_0.pkl bsch/scheduler.bin
T --resume bsch --max_train_steps 5 --output_dir out7 --output_name r --log_jsonl log7.jsonl 2> r7.err; rc=$?
[ $rc = 0 ] && grep -q 'bsch/scheduler.bin: refusing to load.*the LR schedule continues from step 4' r7.err &&
  ok train_resume_kohya_bad_scheduler || nok train_resume_kohya_bad_scheduler "rc $rc $(tail -2 r7.err)"
# no train_state.json: kohya starts at step 0 (a warning)
mkdir nots && cp "$state"/* nots/ && rm nots/train_state.json
T --resume nots --max_train_steps 2 --output_dir out6 --output_name r --log_jsonl log6.jsonl 2> r6.err; rc=$?
steps=$(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1])))' log6.jsonl 2>/dev/null)
[ $rc = 0 ] && [ "$steps" = "1 2" ] && grep -q 'has no train_state.json: the step count starts at 0' r6.err &&
  ok train_resume_kohya_no_train_state || nok train_resume_kohya_no_train_state "rc $rc '$steps' $(tail -2 r6.err)"

# refusals: exit 1, one error line naming the file
fails() {   # NAME PATTERN ARGS...
  local name=$1 pat=$2; shift 2
  rm -rf fo
  T --output_dir fo "$@" > f.out 2> f.err; local rc=$?
  if [ $rc = 1 ] && grep -q -- "$pat" f.err && [ ! -e fo/last.safetensors ] && [ -z "$(ls fo 2>/dev/null)" ]; then ok "$name"
  else nok "$name" "rc $rc, $(tail -2 f.err)"; fi
}
cp -r "$state" noopt && rm noopt/optimizer.bin
fails train_resume_kohya_no_optimizer "noopt: no optimizer.bin" --resume noopt
cp -r "$state" nomodel && rm nomodel/model.safetensors
fails train_resume_kohya_no_model "nomodel: no model.safetensors or pytorch_model.bin" --resume nomodel
fails train_resume_kohya_unsupported_optimizer "optimizer.bin of a kohya-ss state is read for AdamW, AdamW8bit.*this run uses Prodigy" \
  --resume "$state" --optimizer_type Prodigy --learning_rate 1
fails train_resume_kohya_other_optimizer "optimizer.bin: parameter 0 (.*) has state 'exp_avg_sq', which Lion does not keep" \
  --resume "$state" --optimizer_type Lion
fails train_resume_kohya_dim "optimizer.bin: state 0.exp_avg is \[4,16\], this run's parameter 0 (lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight) needs \[8,16\]" \
  --resume "$state" --network_dim 8
fails train_resume_kohya_alpha "model.safetensors: .*: alpha 2 in the file, 1 in the network" --resume "$state" --network_alpha 1
fails train_resume_kohya_lr "optimizer.bin: optimizer group 0 (textencoder) has learning rate 0.001, this run 0.002" \
  --resume "$state" --learning_rate 2e-3
fails train_resume_kohya_wd "optimizer.bin: optimizer group 0 has weight_decay 0.01, this run 0" \
  --resume "$state" --optimizer_args weight_decay=0
# a kohya state holds a network: --method ti/db refuse it (usage)
"$bin" --method ti --model "$data/model.safetensors" --model_config "$data/tiny.toml" --data recs.jsonl --threads 1 \
  --token_string sks --init_word cat --max_train_steps 8 --resume "$state" --output_dir fo > f.out 2> f.err; rc=$?
[ $rc = 2 ] && grep -q 'a kohya-ss state folder is read for --method lora only' f.err && ok train_resume_kohya_method ||
  nok train_resume_kohya_method "rc $rc $(tail -2 f.err)"
# an SD1 state on an SDXL network: refused, naming optimizer.bin
./tiny_model model xl.safetensors "$root/examples/tiny_sdxl.toml" > /dev/null
"$bin" --method lora --model xl.safetensors --model_config "$root/examples/tiny_sdxl.toml" --data recs.jsonl --threads 1 \
  --network_dim 4 --learning_rate 1e-3 --max_train_steps 8 --resume "$state" --output_dir fo > f.out 2> f.err; rc=$?
[ $rc = 1 ] && grep -q "state/optimizer.bin: optimizer group 0 has 24 parameters, this run's group textencoder has" f.err &&
  ok train_resume_kohya_sd1_state_on_sdxl || nok train_resume_kohya_sd1_state_on_sdxl "rc $rc $(tail -2 f.err)"
