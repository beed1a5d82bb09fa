#!/usr/bin/env bash
# sd-train --initial_step / --initial_epoch / --skip_until_initial_step (train_network.py) on a tiny
# random model with --learning_rate 1e-30 (the loss of a step then depends only on its batch and its
# random draws): with --skip_until_initial_step K the logged steps are K+1.. and their losses are bit
# for bit the straight run's steps K+1..; the lr schedule starts from its beginning (no --resume);
# --initial_epoch N --skip_until_initial_step is --initial_step (N-1) x steps per epoch; without
# --skip_until_initial_step the run starts at that epoch with the step count from 0; with --resume
# the state's step is replaced; the reference's assertion and the LoRA-only options are usage errors;
# samples "at first" (--sample_at_first) are those of step 0.
. "$(dirname "$0")/lib.sh"
t_init train_initial_step train_initial
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_initial_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_initial_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --seed 3 --network_dim 4 --threads 1 --max_train_steps 10 "$@"; }
# rows LOG: "step loss lr" per logged step
rows() { python3 -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l); print(r["step"], repr(r["loss"]), repr(r["lr"]["unet"]))' "$1"; }

T --learning_rate 1e-30 --output_dir full --log_jsonl full.jsonl 2> full.err || { nok train_initial_full "$(cat full.err)"; exit 1; }
rows full.jsonl > full.txt
[ "$(wc -l < full.txt)" = 10 ] && ok train_initial_full || nok train_initial_full "$(cat full.txt)"

# --initial_step 3 --skip_until_initial_step: steps 4..10 with the straight run's losses
T --learning_rate 1e-30 --output_dir s3 --log_jsonl s3.jsonl --initial_step 3 --skip_until_initial_step 2> s3.err; rc=$?
rows s3.jsonl > s3.txt 2> /dev/null
if [ $rc = 0 ] && [ "$(cut -d' ' -f1,2 s3.txt)" = "$(sed -n '4,$p' full.txt | cut -d' ' -f1,2)" ] &&
   grep -q 'skipping 3 steps' s3.err; then ok train_initial_skip_same_batches
else nok train_initial_skip_same_batches "rc $rc $(cat s3.txt) // $(cat s3.err)"; fi
# across an epoch (6 batches per epoch): --initial_step 7, and --initial_epoch 2 = --initial_step 6
T --learning_rate 1e-30 --output_dir s7 --log_jsonl s7.jsonl --initial_step 7 --skip_until_initial_step 2> s7.err; rc=$?
rows s7.jsonl > s7.txt 2> /dev/null
[ $rc = 0 ] && [ "$(cut -d' ' -f1,2 s7.txt)" = "$(sed -n '8,$p' full.txt | cut -d' ' -f1,2)" ] &&
  ok train_initial_skip_next_epoch || nok train_initial_skip_next_epoch "rc $rc $(cat s7.txt) // $(cat s7.err)"
T --learning_rate 1e-30 --output_dir e2 --log_jsonl e2.jsonl --initial_epoch 2 --skip_until_initial_step 2> e2.err; rc=$?
rows e2.jsonl > e2.txt 2> /dev/null
[ $rc = 0 ] && [ "$(cut -d' ' -f1,2 e2.txt)" = "$(sed -n '7,$p' full.txt | cut -d' ' -f1,2)" ] &&
  ok train_initial_epoch_skip || nok train_initial_epoch_skip "rc $rc $(cat e2.txt) // $(cat e2.err)"
# --initial_step wins over --initial_epoch
T --learning_rate 1e-30 --output_dir w --log_jsonl w.jsonl --initial_epoch 2 --initial_step 3 --skip_until_initial_step 2> w.err; rc=$?
[ $rc = 0 ] && [ "$(rows w.jsonl)" = "$(cat s3.txt)" ] && ok train_initial_step_wins || nok train_initial_step_wins "rc $rc $(cat w.err)"

# the lr schedule is not moved: a linear decay logs at step 4 the rate of the straight run's step 1
T --learning_rate 1e-3 --lr_scheduler linear --output_dir l0 --log_jsonl l0.jsonl 2> l0.err &&
T --learning_rate 1e-3 --lr_scheduler linear --output_dir l3 --log_jsonl l3.jsonl --initial_step 3 --skip_until_initial_step 2> l3.err; rc=$?
a=$(rows l0.jsonl | head -3 | cut -d' ' -f3); b=$(rows l3.jsonl | head -3 | cut -d' ' -f3)
[ $rc = 0 ] && [ -n "$a" ] && [ "$a" = "$b" ] && [ "$(rows l3.jsonl | head -1 | cut -d' ' -f1)" = 4 ] &&
  grep -q 'lr scheduler starts from the beginning' l3.err && ok train_initial_lr_from_start ||
  nok train_initial_lr_from_start "rc $rc $a // $b // $(cat l3.err)"

# without --skip_until_initial_step: the epoch of step 7 (the second), steps counted from 0, to the last epoch
T --learning_rate 1e-30 --output_dir n7 --log_jsonl n7.jsonl --initial_step 7 2> n7.err; rc=$?
rows n7.jsonl > n7.txt 2> /dev/null
want=$(sed -n '7,$p' full.txt | cut -d' ' -f2)
[ $rc = 0 ] && [ "$(cut -d' ' -f1 n7.txt | tr '\n' ' ')" = "1 2 3 4 5 6 " ] &&
  [ "$(head -4 n7.txt | cut -d' ' -f2)" = "$want" ] && ok train_initial_no_skip || nok train_initial_no_skip "rc $rc $(cat n7.txt) // $want"

# with --resume: the state's step is replaced by --initial_step
T --learning_rate 1e-30 --max_train_steps 2 --output_dir st --save_state 2> st.err; st=$(ls -d st/*-state 2>/dev/null | head -1)
T --learning_rate 1e-30 --output_dir r3 --log_jsonl r3.jsonl --resume "$st" --initial_step 3 --skip_until_initial_step 2> r3.err; rc=$?
[ -n "$st" ] && [ $rc = 0 ] && [ "$(rows r3.jsonl | cut -d' ' -f1,2)" = "$(cut -d' ' -f1,2 s3.txt)" ] &&
  grep -q 'steps from the state are ignored' r3.err && ok train_initial_resume || nok train_initial_resume "rc $rc st=$st $(cat r3.err)"

# errors: usage (exit 2), nothing written
T --learning_rate 1e-30 --output_dir x1 --initial_step 10 2> x1.err; rc=$?
[ $rc = 2 ] && grep -q 'max_train_steps should be greater than initial step: 10 vs 10' x1.err && [ ! -e x1/last.safetensors ] &&
  ok train_initial_assert || nok train_initial_assert "rc $rc $(cat x1.err)"
T --learning_rate 1e-30 --output_dir x2 --initial_epoch 0 2> x2.err; rc=$?
[ $rc = 2 ] && grep -q 'initial_epoch' x2.err && [ ! -e x2 ] && ok train_initial_epoch_range || nok train_initial_epoch_range "rc $rc $(cat x2.err)"
T --learning_rate 1e-30 --output_dir x3 --initial_step -1 2> x3.err; rc=$?
[ $rc = 2 ] && grep -q 'initial_step' x3.err && [ ! -e x3 ] && ok train_initial_step_range || nok train_initial_step_range "rc $rc $(cat x3.err)"
T --method db --learning_rate 1e-30 --output_dir x4 --initial_step 1 2> x4.err; rc=$?
[ $rc = 2 ] && grep -q -- '--initial_step is a LoRA option' x4.err && [ ! -e x4 ] && ok train_initial_lora_only || nok train_initial_lora_only "rc $rc $(cat x4.err)"

# samples "at first" are those of step 0 (the reference samples before its step count moves)
printf 'a red square --w 64 --h 64 --s 2 --d 7\n' > p.txt
T --learning_rate 1e-30 --output_dir sa --max_train_steps 5 --initial_step 3 --skip_until_initial_step --sample_prompts p.txt \
  --sample_at_first 2> sa.err; rc=$?
[ $rc = 0 ] && grep -q 'generating sample images at epoch 0, step 0: 1 prompt' sa.err && [ "$(ls sa/sample | wc -l)" = 1 ] &&
  ok train_initial_sample_at_first || nok train_initial_sample_at_first "rc $rc $(ls sa/sample) $(grep -i sampl sa.err)"

# --debug_dataset: the batches in training order as text, nothing trained or written; exit 0
D() { T --output_dir dd --debug_dataset --shuffle_caption --keep_tokens 1 "$@"; }
D --flip_aug > d1.txt 2> d1.err; rc=$?
D --flip_aug > d2.txt 2> /dev/null
D --seed 4 --flip_aug > d3.txt 2> /dev/null
D > d4.txt 2> /dev/null
python3 - d1.txt recs.jsonl <<'PY' > dchk.txt 2>&1
import json, re, sys
lines = open(sys.argv[1]).read().split("\n")
recs = {json.loads(l)["latents"]: json.loads(l)["caption"] for l in open(sys.argv[2])}
assert lines[0] == "Total dataset length (steps): 6", lines[0]
steps = [l for l in lines if l.startswith("steps: ")]
assert steps == ["steps: %d (%d/6)" % (s, (s - 1) % 6 + 1) for s in range(1, 11)], steps   # --max_train_steps 10
assert [l for l in lines if l.startswith("epoch: ")] == ["epoch: 1", "epoch: 2"]
pat = re.compile(r'^(\S+), size: \(64, 64\), loss weight: 1\.0, caption: "([^"]*)", original size: \(64, 64\), '
                 r'crop top left: \(0, 0\), target size: \(64, 64\), flipped: (True|False)$')
smp = [pat.match(l) for l in lines if ", size: " in l]
assert len(smp) == 10 and all(smp), lines
keys = [m.group(1) for m in smp]
assert sorted(keys[:6]) == sorted(recs), keys          # an epoch visits every record once
for m in smp:
    want = [t.strip() for t in recs[m.group(1)].split(",")]
    got = [t.strip() for t in m.group(2).split(",")]
    assert got[0] == want[0] and sorted(got) == sorted(want), (got, want)   # keep_tokens 1, shuffled rest
assert any(m.group(2) != recs[m.group(1)] for m in smp), "no caption shuffled"
assert {m.group(3) for m in smp} == {"True", "False"}, "flips"
print("# debug_dataset order", " ".join(k[-10:-4] for k in keys))
PY
dk=$?
cat dchk.txt
[ $rc = 0 ] && [ $dk = 0 ] && [ ! -e dd ] && grep -q 'no window is opened' d1.err && ok train_debug_dataset_lines ||
  nok train_debug_dataset_lines "rc $rc $(cat d1.err | tail -3)"
[ -s d1.txt ] && cmp -s d1.txt d2.txt && ! cmp -s d1.txt d3.txt && ok train_debug_dataset_seeded || nok train_debug_dataset_seeded
# train_network.py prints the validation set's batches after the training ones (one pass here);
# train_db.py / fine_tune.py do not
D --validation_split 0.34 > dv.txt 2> dv.err; rc=$?
"$bin" --method db --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl --seed 3 \
  --threads 1 --max_train_steps 10 --output_dir dd --debug_dataset --validation_split 0.34 > dvdb.txt 2> dvdb.err; rcdb=$?
python3 - dv.txt dvdb.txt <<'PY' > dvchk.txt 2>&1
import sys
parts = open(sys.argv[1]).read().split("\nTotal dataset length (steps): ")
assert len(parts) == 2 and parts[0].startswith("Total dataset length (steps): 4\n"), parts
keys = [[l.split(",")[0] for l in p.split("\n") if ", size: " in l] for p in parts]
assert parts[1].startswith("2\n") and parts[1].count("epoch: ") == 1 and len(keys[1]) == 2, parts[1]
assert len(set(keys[1])) == 2 and not set(keys[1]) & set(keys[0]) and len(set(keys[0])) == 4, keys
db = open(sys.argv[2]).read()
assert db.count("Total dataset length") == 1 and db.startswith("Total dataset length (steps): 4\n"), db[:200]
PY
[ $rc = 0 ] && [ $rcdb = 0 ] && [ ! -e dd ] && ok train_debug_dataset_validation ||
  nok train_debug_dataset_validation "rc $rc $rcdb $(cat dvchk.txt) $(tail -2 dv.err) $(tail -2 dvdb.err)"
[ "$(grep -c 'flipped: True' d4.txt)" = 0 ] && [ "$(grep -c 'flipped: False' d4.txt)" = 10 ] &&
  ok train_debug_dataset_no_flip || nok train_debug_dataset_no_flip "$(grep -c flipped d4.txt)"
