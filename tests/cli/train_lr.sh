#!/usr/bin/env bash
# sd-train with the schedulers inverse_sqrt, cosine_with_min_lr, warmup_stable_decay and
# piecewise_constant on a tiny random model: the per-step "lr" of --log_jsonl is bit for bit the
# learning rate × the factor of kohya's get_scheduler_fix over the transformers / diffusers lambdas
# (tests/golden/gen/make_lr_golden.py), from the command line and from a --config_file (same
# bytes); a resumed warmup_stable_decay run ends with the same bytes; options that do not apply
# warn; the reference's errors are usage errors; reduce_lr_on_plateau is refused.
. "$(dirname "$0")/lib.sh"
t_init train_lr
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_lr_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_lr_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 "$@"; }
# check_lr LOG NAME MAX_STEPS WARMUP DECAY|- CYCLES TIMESCALE|- MIN_RATIO|- [ARGS...]: every logged
# rate (both groups) == 1e-3 × factor(step - 1), compared as doubles (the log writes repr())
check_lr() {
  python3 - "$root/tests/golden/gen" "$@" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
import make_lr_golden as g
log, name, mts, wu, dec, cyc, ts, mr = sys.argv[2:10]
args = sys.argv[10:]
lr = 1e-3
fn, W, D, T = g.get_scheduler_fix(name, lr, int(mts), 1, g.int_or_float(wu), g.int_or_float(dec) if dec != "-" else 0,
                                  int(cyc), int(ts) if ts != "-" else None, float(mr) if mr != "-" else None, args)
rows = [json.loads(x) for x in open(log)]
assert len(rows) == int(mts), "%d log lines" % len(rows)
for r in rows:
    want = lr * fn(r["step"] - 1)
    for k, v in r["lr"].items():
        assert v == want, "step %d %s: %r != %r" % (r["step"], k, v, want)
print("# %s: %d steps, lr %s" % (name, len(rows), " ".join(repr(r["lr"]["unet"]) for r in rows)))
PY
}

# ---- each scheduler from the command line and from a config file -------------------------------------------------
run_case() {   # tag, the name of an array of sd-train options, the name of an array of check_lr settings
  local tag=$1 out
  local -n opts=$2 want=$3
  if T --output_dir "o_$tag" --max_train_steps 8 --log_jsonl "$tag.jsonl" "${opts[@]}" 2> "$tag.err" &&
     out=$(check_lr "$tag.jsonl" "${want[@]}" 2>&1); then
    echo "$out"; ok "train_lr_$tag"
  else nok "train_lr_$tag" "$(tail -3 "$tag.err") ${out:-}"; fi
}
o1=(--lr_scheduler inverse_sqrt --lr_warmup_steps 2 --lr_scheduler_timescale 3)
w1=(inverse_sqrt 8 2 - 1 3 -)
run_case inverse_sqrt o1 w1
o2=(--lr_scheduler inverse_sqrt --lr_warmup_steps 3)
w2=(inverse_sqrt 8 3 - 1 - -)
run_case inverse_sqrt_default o2 w2
o3=(--lr_scheduler cosine_with_min_lr --lr_warmup_steps 0.25 --lr_scheduler_num_cycles 3 --lr_scheduler_min_lr_ratio 0.1)
w3=(cosine_with_min_lr 8 0.25 - 3 - 0.1)
run_case cosine_min_lr o3 w3
o4=(--lr_scheduler cosine_with_min_lr --lr_scheduler_args min_lr=1e-4)
w4=(cosine_with_min_lr 8 0 - 1 - - min_lr=1e-4)
run_case cosine_min_lr_arg o4 w4
o5=(--lr_scheduler warmup_stable_decay --lr_warmup_steps 2 --lr_decay_steps 0.5 --lr_scheduler_min_lr_ratio 0.05
    --lr_scheduler_args "warmup_type='cosine'" "decay_type='1-sqrt'")
w5=(warmup_stable_decay 8 2 0.5 1 - 0.05 "warmup_type='cosine'" "decay_type='1-sqrt'")
run_case wsd o5 w5
o6=(--lr_scheduler warmup_stable_decay --lr_warmup_steps 1 --lr_decay_steps 4 --lr_scheduler_num_cycles 2)
w6=(warmup_stable_decay 8 1 4 2 - -)
run_case wsd_default o6 w6
o7=(--lr_scheduler piecewise_constant --lr_scheduler_args 'step_rules="1:3,0.5:5,0.1"')
w7=(piecewise_constant 8 0 - 1 - - 'step_rules="1:3,0.5:5,0.1"')
run_case piecewise o7 w7

# the same runs from a --config_file: the same bytes
cat > c_inverse_sqrt.toml <<'EOF'
lr_scheduler = "inverse_sqrt"
lr_warmup_steps = 2
lr_scheduler_timescale = 3
EOF
cat > c_cosine_min_lr.toml <<'EOF'
lr_scheduler = "cosine_with_min_lr"
lr_warmup_steps = 0.25
lr_scheduler_num_cycles = 3
lr_scheduler_min_lr_ratio = 0.1
EOF
cat > c_cosine_min_lr_arg.toml <<'EOF'
lr_scheduler = "cosine_with_min_lr"
lr_scheduler_args = ["min_lr=1e-4"]
EOF
cat > c_wsd.toml <<'EOF'
lr_scheduler = "warmup_stable_decay"
lr_warmup_steps = 2
lr_decay_steps = 0.5
lr_scheduler_min_lr_ratio = 0.05
lr_scheduler_args = ["warmup_type='cosine'", "decay_type='1-sqrt'"]
EOF
cat > c_piecewise.toml <<'EOF'
lr_scheduler = "piecewise_constant"
lr_scheduler_args = ['step_rules="1:3,0.5:5,0.1"']
EOF
for tag in inverse_sqrt cosine_min_lr cosine_min_lr_arg wsd piecewise; do
  if T --output_dir "c_$tag" --max_train_steps 8 --log_jsonl "c_$tag.jsonl" --config_file "c_$tag.toml" 2> "c_$tag.err" &&
     cmp -s "o_$tag/last.safetensors" "c_$tag/last.safetensors" &&
     [ "$(python3 -c 'import json,sys; print([json.loads(x)["lr"] for x in open(sys.argv[1])])' "c_$tag.jsonl")" = \
       "$(python3 -c 'import json,sys; print([json.loads(x)["lr"] for x in open(sys.argv[1])])' "$tag.jsonl")" ]; then
    ok "train_lr_config_$tag"
  else nok "train_lr_config_$tag" "$(tail -2 "c_$tag.err")"; fi
done
[ "$(t_meta o_wsd/last.safetensors ss_lr_scheduler)" = warmup_stable_decay ] &&
  [ "$(t_meta o_piecewise/last.safetensors ss_lr_scheduler)" = piecewise_constant ] && ok train_lr_metadata ||
  nok train_lr_metadata "$(t_meta o_wsd/last.safetensors ss_lr_scheduler)"
# ss_lr_warmup_steps as the reference writes it: argparse's int 0 when absent, int_or_float's value when given
T --output_dir w0 --max_train_steps 1 2> /dev/null; T --output_dir w1 --max_train_steps 1 --lr_warmup_steps 0 2> /dev/null
T --output_dir w2 --max_train_steps 2 --lr_scheduler linear --lr_warmup_steps 1 2> /dev/null
[ "$(t_meta w0/last.safetensors ss_lr_warmup_steps)" = 0 ] && [ "$(t_meta w1/last.safetensors ss_lr_warmup_steps)" = 0.0 ] &&
  [ "$(t_meta w2/last.safetensors ss_lr_warmup_steps)" = 1 ] && ok train_lr_meta_warmup_steps ||
  nok train_lr_meta_warmup_steps "$(t_meta w0/last.safetensors ss_lr_warmup_steps) $(t_meta w1/last.safetensors ss_lr_warmup_steps) $(t_meta w2/last.safetensors ss_lr_warmup_steps)"

# ---- resume: byte-identical final LoRA, the same rates after the resume ---------------------------------------------
W=(--lr_scheduler warmup_stable_decay --lr_warmup_steps 2 --lr_decay_steps 4 --lr_scheduler_min_lr_ratio 0.1
   --lr_scheduler_args "decay_type='linear'")
T --output_dir r_wsd --max_train_steps 10 --save_every_n_steps 4 --save_state --log_jsonl r_full.jsonl "${W[@]}" 2> /dev/null
T --output_dir q_wsd --max_train_steps 10 --resume r_wsd/at-step00000004-state --log_jsonl r_resumed.jsonl "${W[@]}" \
  2> q_wsd.err
if [ -f r_wsd/last.safetensors ] && cmp -s r_wsd/last.safetensors q_wsd/last.safetensors &&
   [ "$(tail -6 r_full.jsonl | python3 -c 'import json,sys; print([json.loads(x)["lr"] for x in sys.stdin])')" = \
     "$(python3 -c 'import json,sys; print([json.loads(x)["lr"] for x in open(sys.argv[1])])' r_resumed.jsonl)" ]; then
  ok train_lr_resume_wsd
else nok train_lr_resume_wsd "$(tail -2 q_wsd.err)"; fi
# a resume must keep the scheduler options
T --output_dir q_wsd2 --max_train_steps 10 --resume r_wsd/at-step00000004-state "${W[@]:0:4}" --lr_decay_steps 5 \
  "${W[@]:6}" 2> e_resume.err; rc=$?
[ $rc != 0 ] && grep -q 'saved with lr_decay_steps="4", this run has lr_decay_steps="5"' e_resume.err &&
  ok train_lr_resume_other_decay || nok train_lr_resume_other_decay "rc $rc $(cat e_resume.err)"

# ---- warnings: options the scheduler does not use; WSD without decay steps -------------------------------------------
T --output_dir o_w1 --max_train_steps 2 --lr_scheduler cosine --lr_decay_steps 3 --lr_scheduler_timescale 5 \
  --lr_scheduler_min_lr_ratio 0.1 2> w1.err
[ $? = 0 ] && grep -q -- '--lr_decay_steps has no effect with --lr_scheduler cosine' w1.err &&
  grep -q -- '--lr_scheduler_timescale has no effect' w1.err && grep -q -- '--lr_scheduler_min_lr_ratio has no effect' w1.err &&
  ok train_lr_warn_unused || nok train_lr_warn_unused "$(cat w1.err)"
T --output_dir o_w2 --max_train_steps 4 --lr_scheduler warmup_stable_decay --lr_warmup_steps 1 \
  --log_jsonl w2.jsonl 2> w2.err
[ $? = 0 ] && grep -q 'no decay phase' w2.err && out=$(check_lr w2.jsonl warmup_stable_decay 4 1 - 1 - - 2>&1) &&
  ok train_lr_wsd_no_decay || nok train_lr_wsd_no_decay "$(cat w2.err) $out"
T --output_dir o_w3 --max_train_steps 4 --lr_scheduler piecewise_constant --lr_warmup_steps 2 \
  --lr_scheduler_args "step_rules='0.5:2,0.25'" --log_jsonl w3.jsonl 2> w3.err
[ $? = 0 ] && grep -q -- '--lr_warmup_steps has no effect with --lr_scheduler piecewise_constant' w3.err &&
  out=$(check_lr w3.jsonl piecewise_constant 4 2 - 1 - - "step_rules='0.5:2,0.25'" 2>&1) &&
  ok train_lr_piecewise_no_warmup || nok train_lr_piecewise_no_warmup "$(cat w3.err) $out"

# ---- errors -------------------------------------------------------------------------------------------------------
lr_fail() { t_refuse "train_lr_err_$1" "$2" "$3" T --output_dir o_e --max_train_steps 2 "${@:4}"; }   # name rc pattern args...
lr_fail min_lr_missing 2 'One of min_lr or min_lr_rate should be set' --lr_scheduler cosine_with_min_lr
lr_fail min_lr_both 2 'Only one of min_lr or min_lr_rate should be set' --lr_scheduler cosine_with_min_lr \
  --lr_scheduler_min_lr_ratio 0.1 --lr_scheduler_args min_lr=1e-5
lr_fail step_rules_missing 2 "missing 1 required positional argument: 'step_rules'" --lr_scheduler piecewise_constant
lr_fail step_rules_bad 2 "could not convert string to float: 'x'" --lr_scheduler piecewise_constant \
  --lr_scheduler_args "step_rules='x:1,0.5'"
lr_fail step_rules_unquoted 2 'malformed literal' --lr_scheduler piecewise_constant --lr_scheduler_args step_rules=1:10,0.1
lr_fail unknown_key 2 "got an unexpected keyword argument 'T_max'" --lr_scheduler warmup_stable_decay \
  --lr_decay_steps 1 --lr_scheduler_args T_max=10
lr_fail double_key 2 "got multiple values for keyword argument 'num_cycles'" --lr_scheduler cosine_with_restarts \
  --lr_scheduler_args num_cycles=2
lr_fail warmup_type 2 "Unknown warmup type: square" --lr_scheduler warmup_stable_decay --lr_decay_steps 1 \
  --lr_scheduler_args "warmup_type='square'"
lr_fail timescale 2 'lr_scheduler_timescale 0: must be at least 1' --lr_scheduler inverse_sqrt --lr_scheduler_timescale 0
lr_fail decay_syntax 2 'lr_decay_steps 2.5: a value of 1 or more must be a whole number' \
  --lr_scheduler warmup_stable_decay --lr_decay_steps 2.5
lr_fail plateau 1 'reduce_lr_on_plateau is not supported: the reference cannot run it' \
  --lr_scheduler reduce_lr_on_plateau
