#!/usr/bin/env bash
# sd-train with the optimizers besides AdamW (lib/train/optim.h) on a tiny random model: every one
# trains and records ss_optimizer as kohya writes it; Adafactor's relative_step records the
# adafactor scheduler and None learning rates; Prodigy logs lr/d*lr/<group>; --use_lion_optimizer is
# Lion and --use_8bit_adam AdamW8bit; the same bytes with --threads 1 and 2; a run resumed from a
# saved state (Prodigy, Adafactor with and without relative_step, Lion, SGDNesterov, DAdaptation,
# DAdaptAdam, DAdaptSGD, DAdaptAdaGrad, DAdaptAdan, DAdaptAdanIP, DAdaptLion, AdamW8bit with 8-bit
# states, Lion8bit, PagedLion8bit, SGDNesterov8bit) or after SIGTERM (Prodigy) ends with the same
# bytes as an uninterrupted one; a state of another optimizer is refused; --optimizer_args and
# scheduler errors.
. "$(dirname "$0")/lib.sh"
t_init train_optim
bin="$root/$build/bin/sd-train"
t_need "$bin"
t_tiny_build
cd "$tmp"
./tiny_model model tiny.safetensors "$root/examples/tiny_model.toml" > /dev/null || { nok train_optim_tiny_model; exit 1; }
./tiny_model latents "$tmp" 6 4 8 8 > recs.jsonl || { nok train_optim_tiny_latents; exit 1; }
export SOURCE_DATE_EPOCH=1700000000
T() { "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 "$@"; }
Tbg() { exec "$bin" --method lora --model tiny.safetensors --model_config "$root/examples/tiny_model.toml" --data recs.jsonl \
  --learning_rate 1e-3 --seed 3 --network_dim 4 --threads 1 "$@"; }

# ---- every optimizer trains; ss_optimizer as kohya writes it ---------------------------------------------
check_run() {   # name expected-ss_optimizer args...
  local name=$1 want=$2; shift 2
  if T --output_dir "o_$name" --max_train_steps 4 "$@" 2> "o_$name.err"; then
    got=$(t_meta "o_$name/last.safetensors" ss_optimizer)
    [ "$got" = "$want" ] && ok "train_optim_$name" || nok "train_optim_$name" "ss_optimizer '$got'"
  else nok "train_optim_$name" "$(tail -2 "o_$name.err")"; fi
}
check_run lion "lion_pytorch.lion_pytorch.Lion" --optimizer_type Lion
check_run lion_args "lion_pytorch.lion_pytorch.Lion(weight_decay=0.01,betas=(0.95, 0.98))" --optimizer_type lion \
  --optimizer_args weight_decay=1e-2 "betas=0.95,0.98"
check_run sgd "torch.optim.sgd.SGD(momentum=0.9)" --optimizer_type SGDNesterov --learning_rate 1e-2
check_run adafactor "transformers.optimization.Adafactor(relative_step=True)" --optimizer_type Adafactor
check_run adafactor_manual "transformers.optimization.Adafactor(scale_parameter=False,relative_step=False,warmup_init=False)" \
  --optimizer_type Adafactor --optimizer_args scale_parameter=False relative_step=False warmup_init=False \
  --lr_scheduler constant_with_warmup --lr_warmup_steps 2 --max_grad_norm 0
check_run prodigy "prodigyopt.prodigy.Prodigy(d_coef=2,use_bias_correction=True,safeguard_warmup=True)" \
  --optimizer_type Prodigy --learning_rate 1 --optimizer_args d_coef=2 use_bias_correction=True safeguard_warmup=True \
  --logging_dir plogs
check_run dadaptation "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint(decouple=True,weight_decay=0.01)" \
  --optimizer_type DAdaptation --learning_rate 1 --optimizer_args decouple=True weight_decay=0.01
check_run dadaptadam "dadaptation.dadapt_adam.DAdaptAdam" --optimizer_type DAdaptAdam --learning_rate 1
check_run adamw8bit "bitsandbytes.optim.adamw.AdamW8bit" --optimizer_type AdamW8bit
check_run dadaptsgd "dadaptation.dadapt_sgd.DAdaptSGD(momentum=0.9)" --optimizer_type DAdaptSGD --learning_rate 1 \
  --optimizer_args momentum=0.9
check_run dadaptadagrad "dadaptation.dadapt_adagrad.DAdaptAdaGrad(momentum=0.5,weight_decay=0.01)" \
  --optimizer_type DAdaptAdaGrad --learning_rate 1 --optimizer_args momentum=0.5 weight_decay=0.01
check_run dadaptadan "dadaptation.dadapt_adan.DAdaptAdan" --optimizer_type DAdaptAdan --learning_rate 1
check_run dadaptadanip "dadaptation.experimental.dadapt_adan_ip.DAdaptAdanIP(no_prox=True,betas=(0.9, 0.9, 0.99))" \
  --optimizer_type DAdaptAdanIP --learning_rate 1 --optimizer_args no_prox=True "betas=0.9,0.9,0.99"
check_run dadaptlion "dadaptation.dadapt_lion.DAdaptLion(weight_decay=0.1)" --optimizer_type DAdaptLion \
  --learning_rate 1 --optimizer_args weight_decay=0.1 --logging_dir dllogs
check_run adamw8bit_args "bitsandbytes.optim.adamw.AdamW8bit(min_8bit_size=16)" \
  --optimizer_type AdamW8bit --optimizer_args min_8bit_size=16
check_run paged8 "bitsandbytes.optim.adamw.PagedAdamW8bit(min_8bit_size=16)" \
  --optimizer_type PagedAdamW8bit --optimizer_args min_8bit_size=16
check_run paged32 "bitsandbytes.optim.adamw.PagedAdamW32bit" --optimizer_type PagedAdamW32bit
check_run lion8bit "bitsandbytes.optim.lion.Lion8bit(min_8bit_size=16,weight_decay=0.1)" --optimizer_type lion8bit \
  --optimizer_args min_8bit_size=16 weight_decay=0.1
check_run pagedlion8bit "bitsandbytes.optim.lion.PagedLion8bit" --optimizer_type PagedLion8bit
check_run sgd8bit "bitsandbytes.optim.sgd.SGD8bit(min_8bit_size=16,momentum=0.9)" --optimizer_type SGDNesterov8bit \
  --learning_rate 1e-2 --optimizer_args min_8bit_size=16
check_run adamwsf "schedulefree.adamw_schedulefree.AdamWScheduleFree(warmup_steps=2,weight_decay=0.01)" \
  --optimizer_type AdamWScheduleFree --optimizer_args warmup_steps=2 weight_decay=0.01
check_run radamsf "schedulefree.radam_schedulefree.RAdamScheduleFree" --optimizer_type radamschedulefree
check_run sgdsf "schedulefree.sgd_schedulefree.SGDScheduleFree(momentum=0.8)" --optimizer_type SGDScheduleFree \
  --learning_rate 0.1 --optimizer_args momentum=0.8
# ScheduleFree: kohya's dummy scheduler ignores --lr_scheduler and its warm-up (no error; the same bytes)
T --output_dir o_sfsched --max_train_steps 4 --optimizer_type AdamWScheduleFree --optimizer_args warmup_steps=2 \
  weight_decay=0.01 --lr_scheduler constant --lr_warmup_steps 3 2> o_sfsched.err &&
  python3 - o_adamwsf/last.safetensors o_sfsched/last.safetensors <<'PY' && ok train_optim_sf_dummy_scheduler ||
import json, struct, sys
def t(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
    return h, b[8 + n:]
sys.exit(0 if t(sys.argv[1]) == t(sys.argv[2]) else 1)
PY
  nok train_optim_sf_dummy_scheduler "$(tail -2 o_sfsched.err)"
grep -q '8-bit SGD with Nesterov must be with momentum, set momentum to 0.9' o_sgd8bit.err &&
  ok train_optim_sgd8bit_warning || nok train_optim_sgd8bit_warning "$(cat o_sgd8bit.err)"

# Adafactor's relative_step: the scheduler and the learning rates as kohya records them; its own LRs logged
[ "$(t_meta o_adafactor/last.safetensors ss_lr_scheduler)" = "adafactor:0.001" ] &&
[ "$(t_meta o_adafactor/last.safetensors ss_learning_rate)" = None ] &&
[ "$(t_meta o_adafactor/last.safetensors ss_unet_lr)" = None ] &&
grep -q 'learning rate is used as initial_lr' o_adafactor.err && ok train_optim_adafactor_schedule ||
  nok train_optim_adafactor_schedule "$(t_meta o_adafactor/last.safetensors ss_lr_scheduler) $(cat o_adafactor.err)"
T --output_dir o_adalog --max_train_steps 2 --optimizer_type Adafactor --log_jsonl adalog.jsonl 2> /dev/null
python3 -c "import json, sys; l = [json.loads(x)['lr']['unet'] for x in open('adalog.jsonl')]
sys.exit(0 if len(l) == 2 and all(v != 0.001 and 1e-5 < v < 0.1 for v in l) else 1)" 2> /dev/null &&
  ok train_optim_adafactor_lr_log || nok train_optim_adafactor_lr_log "$(head -1 adalog.jsonl)"
# Prodigy: lr/d*lr/<group> in the TensorBoard log
strings plogs/*/network_train/events.out.tfevents.* 2> /dev/null | grep -q 'lr/d\*lr/unet' &&
  ok train_optim_prodigy_dlr_tag || nok train_optim_prodigy_dlr_tag
# DAdaptLion: lr/d*lr/<group> too
strings dllogs/*/network_train/events.out.tfevents.* 2> /dev/null | grep -q 'lr/d\*lr/unet' &&
  ok train_optim_dadaptlion_dlr_tag || nok train_optim_dadaptlion_dlr_tag
# --use_lion_optimizer is Lion
T --output_dir o_uselion --max_train_steps 4 --use_lion_optimizer 2> /dev/null
cmp -s o_lion/last.safetensors o_uselion/last.safetensors && ok train_optim_use_lion || nok train_optim_use_lion
T --output_dir o_x --use_lion_optimizer --optimizer_type Lion 2> e0.err; rc=$?
[ $rc != 0 ] && grep -q 'both --use_lion_optimizer and --optimizer_type' e0.err && ok train_optim_use_lion_conflict ||
  nok train_optim_use_lion_conflict "rc $rc $(cat e0.err)"

# --use_8bit_adam is AdamW8bit
T --output_dir o_use8 --max_train_steps 4 --use_8bit_adam 2> /dev/null
cmp -s o_adamw8bit/last.safetensors o_use8/last.safetensors && ok train_optim_use_8bit_adam || nok train_optim_use_8bit_adam
cmp -s o_adamw8bit/last.safetensors o_adamw8bit_args/last.safetensors && nok train_optim_adamw8bit_8bit_path ||
  ok train_optim_adamw8bit_8bit_path   # min_8bit_size=16: 8-bit states, other numbers

# ---- threads: same bytes ------------------------------------------------------------------------------------
for o in Prodigy Adafactor AdamW8bit Lion8bit SGDNesterov8bit AdamWScheduleFree; do
  a=(); case $o in *8bit) a=(--optimizer_args min_8bit_size=16);; esac
  T --output_dir "t1_$o" --max_train_steps 4 --optimizer_type $o --learning_rate 1 --threads 1 "${a[@]}" 2> /dev/null
  T --output_dir "t2_$o" --max_train_steps 4 --optimizer_type $o --learning_rate 1 --threads 2 "${a[@]}" 2> /dev/null
  cmp -s "t1_$o/last.safetensors" "t2_$o/last.safetensors" && ok "train_optim_threads_$o" || nok "train_optim_threads_$o"
done

# ---- resume from a saved state: byte-identical final LoRA ------------------------------------------------------
check_resume() {   # name args...
  local name=$1; shift
  T --output_dir "r_$name" --max_train_steps 10 --save_every_n_steps 4 --save_state "$@" 2> /dev/null
  T --output_dir "q_$name" --max_train_steps 10 --resume "r_$name/at-step00000004-state" "$@" 2> "q_$name.err"
  [ -f "r_$name/last.safetensors" ] && cmp -s "r_$name/last.safetensors" "q_$name/last.safetensors" &&
    ok "train_optim_resume_$name" || nok "train_optim_resume_$name" "$(tail -2 "q_$name.err")"
}
check_resume prodigy --optimizer_type Prodigy --learning_rate 1 --lr_scheduler linear --lr_warmup_steps 2 \
  --optimizer_args weight_decay=0.01 decouple=False slice_p=3
check_resume adafactor --optimizer_type Adafactor --optimizer_args beta1=0.9 weight_decay=0.01
check_resume adafactor_manual --optimizer_type Adafactor --optimizer_args relative_step=False --lr_scheduler cosine
check_resume lion --optimizer_type Lion --optimizer_args weight_decay=0.1 decoupled_weight_decay=True
check_resume sgd --optimizer_type SGDNesterov --learning_rate 1e-2
check_resume dadaptation --optimizer_type DAdaptation --learning_rate 1
check_resume dadaptsgd --optimizer_type DAdaptSGD --learning_rate 1 --optimizer_args weight_decay=0.01
check_resume dadaptadagrad --optimizer_type DAdaptAdaGrad --learning_rate 1 --optimizer_args momentum=0.9
check_resume dadaptadan --optimizer_type DAdaptAdan --learning_rate 1 --lr_scheduler linear --lr_warmup_steps 2
check_resume dadaptadanip --optimizer_type DAdaptAdanIP --learning_rate 1 --optimizer_args no_prox=True
check_resume dadaptlion --optimizer_type DAdaptLion --learning_rate 1 --optimizer_args weight_decay=0.1
check_resume dadaptadam --optimizer_type DAdaptAdam --learning_rate 1 --optimizer_args use_bias_correction=True
check_resume adamw8bit --optimizer_type AdamW8bit --optimizer_args min_8bit_size=16   # 8-bit blockwise states
check_resume lion8bit --optimizer_type Lion8bit --optimizer_args min_8bit_size=16 weight_decay=0.1
check_resume pagedlion8bit --optimizer_type PagedLion8bit   # 32-bit states (small tensors)
check_resume adamwsf --optimizer_type AdamWScheduleFree --optimizer_args weight_decay=0.01 warmup_steps=3
check_resume radamsf --optimizer_type RAdamScheduleFree --learning_rate 1e-2
check_resume sgdsf --optimizer_type SGDScheduleFree --learning_rate 0.1 --optimizer_args weight_decay=0.01
check_resume sgd8bit --optimizer_type SGDNesterov8bit --learning_rate 1e-2 --optimizer_args min_8bit_size=16 weight_decay=0.01
# ScheduleFree: saved in eval mode, as kohya saves: the state's weights are the step's LoRA (x), mode eval
python3 - r_adamwsf/at-step00000004-state r_adamwsf/at-step00000004.safetensors <<'PY' &&
import json, struct, sys
def t(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
    return {k: b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]] for k, v in h.items()}
w, l, o = t(sys.argv[1] + '/weights.safetensors'), t(sys.argv[2]), t(sys.argv[1] + '/optimizer.safetensors')
ok = w and all(l.get(k) == v for k, v in w.items()) and struct.unpack('<d', o['optimizer.sf_train'])[0] == 0.0
sys.exit(0 if ok else 1)
PY
  ok train_optim_sf_saved_eval_mode || nok train_optim_sf_saved_eval_mode
# a state of another optimizer is refused with one line
T --output_dir q_x --max_train_steps 10 --resume r_prodigy/at-step00000004-state 2> e1.err; rc=$?
[ $rc = 1 ] && grep -q "its optimizer state is Prodigy's, this run uses AdamW" e1.err && [ "$(wc -l < e1.err)" -le 3 ] &&
  ok train_optim_resume_other_refused || nok train_optim_resume_other_refused "rc $rc $(cat e1.err)"

# ---- SIGTERM with Prodigy: finish the step, write a state; resume gives the same bytes ------------------------------
N=60
P=(--optimizer_type Prodigy --learning_rate 1)
T --output_dir s0 --max_train_steps $N "${P[@]}" 2> /dev/null
Tbg --output_dir s1 --max_train_steps $N "${P[@]}" --log_jsonl s1.log 2> s1.err & pid=$!
for i in $(seq 300); do [ -s s1.log ] && break; sleep 0.1; done
kill -TERM $pid; wait $pid; rc=$?
st=$(ls -d s1/*-state 2> /dev/null | tail -1)
if [ $rc = 143 ] && [ -n "$st" ]; then
  T --output_dir s1 --max_train_steps $N "${P[@]}" --resume "$st" 2> /dev/null
  cmp -s s0/last.safetensors s1/last.safetensors && ok train_optim_sigterm_resume || nok train_optim_sigterm_resume
elif [ $rc = 0 ] && cmp -s s0/last.safetensors s1/last.safetensors; then
  echo "# the run finished before the signal"; ok train_optim_sigterm_resume
else nok train_optim_sigterm_resume "rc $rc state '$st' $(tail -2 s1.err)"; fi

# ---- errors -----------------------------------------------------------------------------------------------------------
T --output_dir o_e --optimizer_type Prodigy --optimizer_args momentum=0.9 2> e2.err; rc=$?
[ $rc = 2 ] && grep -q "Prodigy has no argument 'momentum'" e2.err && ok train_optim_unknown_arg ||
  nok train_optim_unknown_arg "rc $rc $(cat e2.err)"
T --output_dir o_e --optimizer_type Prodigy --learning_rate 1 --unet_lr 1 --text_encoder_lr 0.5 2> e3.err; rc=$?
[ $rc = 2 ] && grep -q "only supported for values of 0" e3.err && ok train_optim_prodigy_group_lrs ||
  nok train_optim_prodigy_group_lrs "rc $rc $(cat e3.err)"
T --output_dir o_e --lr_scheduler adafactor 2> e4.err; rc=$?
[ $rc = 2 ] && grep -q "adafactor scheduler must be used with Adafactor optimizer" e4.err && ok train_optim_adafactor_sched_alone ||
  nok train_optim_adafactor_sched_alone "rc $rc $(cat e4.err)"
T --output_dir o_e --optimizer_type Adafactor --lr_warmup_steps 2 2> e5.err; rc=$?
[ $rc = 2 ] && grep -q 'adafactor:0.001 does not require `num_warmup_steps`' e5.err && ok train_optim_adafactor_warmup ||
  nok train_optim_adafactor_warmup "rc $rc $(cat e5.err)"
T --output_dir o_e --optimizer_type AdamW8bit --optimizer_args momentum=0.9 2> e8.err; rc=$?
[ $rc = 2 ] && grep -q "AdamW8bit.__init__() got an unexpected keyword argument 'momentum'" e8.err &&
  ok train_optim_adamw8bit_unknown_arg || nok train_optim_adamw8bit_unknown_arg "rc $rc $(cat e8.err)"
T --output_dir o_e --optimizer_type Lion8bit --optimizer_args eps=1e-8 2> e9.err; rc=$?
[ $rc = 2 ] && grep -q "Lion8bit.__init__() got an unexpected keyword argument 'eps'" e9.err &&
  ok train_optim_lion8bit_unknown_arg || nok train_optim_lion8bit_unknown_arg "rc $rc $(cat e9.err)"
T --output_dir o_e --optimizer_type SGDNesterov8bit --optimizer_args nesterov=True 2> e10.err; rc=$?
[ $rc = 2 ] && grep -q "got multiple values for keyword argument 'nesterov'" e10.err &&
  ok train_optim_sgd8bit_nesterov_arg || nok train_optim_sgd8bit_nesterov_arg "rc $rc $(cat e10.err)"
# --full_fp16 with Lion8bit trains (the kernels' half stores); --full_bf16 with SGDNesterov8bit on tensors below
# min_8bit_size is bitsandbytes' ValueError (no bfloat16 32-bit momentum kernel)
T --output_dir o_l8h --max_train_steps 3 --optimizer_type Lion8bit --mixed_precision fp16 --full_fp16 \
  --optimizer_args min_8bit_size=16 weight_decay=0.1 2> o_l8h.err && [ -f o_l8h/last.safetensors ] &&
  ok train_optim_lion8bit_full_fp16 || nok train_optim_lion8bit_full_fp16 "$(tail -2 o_l8h.err)"
T --output_dir o_e --max_train_steps 3 --optimizer_type SGDNesterov8bit --mixed_precision bf16 --full_bf16 2> e11.err; rc=$?
[ $rc = 2 ] && grep -q "Gradient+optimizer bit data type combination not supported" e11.err &&
  ok train_optim_sgd8bit_bf16_refused || nok train_optim_sgd8bit_bf16_refused "rc $rc $(cat e11.err)"
T --output_dir o_e --optimizer_type torch.optim.RMSprop 2> e6.err; rc=$?
[ $rc = 1 ] && grep -q 'optimizer torch.optim.RMSprop is not implemented yet' e6.err && ok train_optim_refused ||
  nok train_optim_refused "rc $rc $(cat e6.err)"
T --output_dir o_e --optimizer_type DAdaptAdam --learning_rate 0 2> e7.err; rc=$?
[ $rc = 2 ] && grep -q 'Invalid learning rate' e7.err && ok train_optim_invalid_lr || nok train_optim_invalid_lr "rc $rc $(cat e7.err)"
exit 0
