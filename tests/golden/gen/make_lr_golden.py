#!/usr/bin/python3
"""Golden factors for the schedulers lib/train/lr_sched.c added after the first six
(tests/unit/test_lr_sched.c reads tests/data/train/lr_sched_ext.txt).

Run by hand with /usr/bin/python3; neither transformers nor diffusers is installed here, so the
lambdas below are transcribed verbatim from the sources kohya-ss/sd-scripts pins
(requirements.txt: transformers==4.54.1, diffusers[torch]==0.32.1):

  huggingface/transformers src/transformers/optimization.py
      _get_inverse_sqrt_schedule_lr_lambda, get_inverse_sqrt_schedule,
      _get_cosine_schedule_with_warmup_lr_lambda (the second definition, with min_lr_rate),
      get_cosine_with_min_lr_schedule_with_warmup, _get_wsd_scheduler_lambda, get_wsd_schedule,
      and _get_cosine_schedule_with_warmup_lr_lambda / _get_polynomial_decay_... for the
      num_cycles= / lr_end= keyword arguments of cosine / polynomial
  huggingface/diffusers src/diffusers/optimization.py  get_piecewise_constant_schedule
  kohya-ss/sd-scripts library/train_util.py  get_scheduler_fix (how they are called:
      num_cycles = lr_scheduler_num_cycles / 2, min_lr_rate / min_lr_ratio, num_stable_steps =
      T - W - D, --lr_scheduler_args through ast.literal_eval as keyword arguments)

Values are written with float.hex(); the C side must reproduce them bit for bit.
Format: "case NAME mts P warmup decay cycles timescale minratio lr_hex W= D= args=ITEMS" where
decay / timescale / minratio are "-" for None and ITEMS are the --lr_scheduler_args items joined
by ";" (the rest of the line), then "f COUNT hex..." for scheduler steps 0..T+2.
"""
import ast
import math
import os
from functools import partial

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train")


# ---- transformers (optimization.py) ------------------------------------------------------------
def _get_inverse_sqrt_schedule_lr_lambda(current_step: int, *, num_warmup_steps: int, timescale=None):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    shift = timescale - num_warmup_steps
    decay = 1.0 / math.sqrt((current_step + shift) / timescale)
    return decay


def get_inverse_sqrt_schedule(num_warmup_steps, timescale=None, last_epoch=-1):
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    return partial(_get_inverse_sqrt_schedule_lr_lambda, num_warmup_steps=num_warmup_steps, timescale=timescale)


def _get_cosine_schedule_with_warmup_lr_lambda(
    current_step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float, min_lr_rate: float = 0.0
):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    factor = factor * (1 - min_lr_rate) + min_lr_rate
    return max(0, factor)


def get_cosine_schedule_with_warmup(num_warmup_steps, num_training_steps, num_cycles=0.5, last_epoch=-1):
    return partial(_get_cosine_schedule_with_warmup_lr_lambda, num_warmup_steps=num_warmup_steps,
                   num_training_steps=num_training_steps, num_cycles=num_cycles)


def get_cosine_with_min_lr_schedule_with_warmup(num_warmup_steps, num_training_steps, num_cycles=0.5, last_epoch=-1,
                                                min_lr=None, min_lr_rate=None, *, optimizer_lr):
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Only one of min_lr or min_lr_rate should be set")
    elif min_lr is not None:
        min_lr_rate = min_lr / optimizer_lr  # optimizer.defaults["lr"]
    elif min_lr_rate is None:
        raise ValueError("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`")
    return partial(_get_cosine_schedule_with_warmup_lr_lambda, num_warmup_steps=num_warmup_steps,
                   num_training_steps=num_training_steps, num_cycles=num_cycles, min_lr_rate=min_lr_rate)


def _get_polynomial_decay_schedule_with_warmup_lr_lambda(current_step, *, num_warmup_steps, num_training_steps,
                                                         lr_end, power, lr_init):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    elif current_step > num_training_steps:
        return lr_end / lr_init  # as LambdaLR multiplies by lr_init
    else:
        lr_range = lr_init - lr_end
        decay_steps = num_training_steps - num_warmup_steps
        pct_remaining = 1 - (current_step - num_warmup_steps) / decay_steps
        decay = lr_range * pct_remaining**power + lr_end
        return decay / lr_init  # as LambdaLR multiplies by lr_init


def get_polynomial_decay_schedule_with_warmup(num_warmup_steps, num_training_steps, lr_end=1e-7, power=1.0,
                                              last_epoch=-1, *, optimizer_lr):
    lr_init = optimizer_lr
    if not (lr_init > lr_end):
        raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
    return partial(_get_polynomial_decay_schedule_with_warmup_lr_lambda, num_warmup_steps=num_warmup_steps,
                   num_training_steps=num_training_steps, lr_end=lr_end, power=power, lr_init=lr_init)


def _get_wsd_scheduler_lambda(current_step, *, num_warmup_steps, num_stable_steps, num_decay_steps, warmup_type,
                              decay_type, min_lr_ratio, num_cycles):
    if current_step < num_warmup_steps:
        progress = float(current_step) / float(max(1, num_warmup_steps))
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "cosine":
            factor = 0.5 * (1.0 - math.cos(math.pi * progress))
        elif warmup_type == "1-sqrt":
            factor = 1.0 - math.sqrt(1.0 - progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)

    if current_step < num_warmup_steps + num_stable_steps:
        return 1.0

    if current_step < num_warmup_steps + num_stable_steps + num_decay_steps:
        progress = float(current_step - num_warmup_steps - num_stable_steps) / float(max(1, num_decay_steps))
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        elif decay_type == "1-sqrt":
            factor = 1.0 - math.sqrt(progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    return min_lr_ratio


def get_wsd_schedule(num_warmup_steps, num_decay_steps, num_training_steps=None, num_stable_steps=None,
                     warmup_type="linear", decay_type="cosine", min_lr_ratio=0, num_cycles=0.5, last_epoch=-1):
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
    if warmup_type not in ["linear", "cosine", "1-sqrt"]:
        raise ValueError(f"Unknown warmup type: {warmup_type}, expected 'linear', 'cosine' or '1-sqrt'")
    if decay_type not in ["linear", "cosine", "1-sqrt"]:
        raise ValueError(f"Unknown decay type: {decay_type}, expected 'linear', 'cosine' or '1-sqrt'")
    if num_stable_steps is None:
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
    return partial(_get_wsd_scheduler_lambda, num_warmup_steps=num_warmup_steps, num_stable_steps=num_stable_steps,
                   num_decay_steps=num_decay_steps, warmup_type=warmup_type, decay_type=decay_type,
                   min_lr_ratio=min_lr_ratio, num_cycles=num_cycles)


# ---- diffusers (optimization.py) ---------------------------------------------------------------
def get_piecewise_constant_schedule(step_rules: str, last_epoch: int = -1):
    rules_dict = {}
    rule_list = step_rules.split(",")
    for rule_str in rule_list[:-1]:
        value_str, steps_str = rule_str.split(":")
        steps = int(steps_str)
        value = float(value_str)
        rules_dict[steps] = value
    last_lr_multiple = float(rule_list[-1])

    def create_rules_function(rules_dict, last_lr_multiple):
        def rule_func(steps: int) -> float:
            sorted_steps = sorted(rules_dict.keys())
            for i, sorted_step in enumerate(sorted_steps):
                if steps < sorted_step:
                    return rules_dict[sorted_steps[i]]
            return last_lr_multiple

        return rule_func

    return create_rules_function(rules_dict, last_lr_multiple)


# ---- kohya's get_scheduler_fix (the parts these schedulers go through) ---------------------------
def int_or_float(value):
    if value.endswith("%"):
        return float(value[:-1]) / 100.0
    float_value = float(value)
    if float_value >= 1:
        return int(value)
    return float(value)


def get_scheduler_fix(name, lr, max_train_steps, num_processes, lr_warmup_steps, lr_decay_steps, num_cycles,
                      timescale, min_lr_ratio, lr_scheduler_args, power=1.0):
    num_training_steps = max_train_steps * num_processes
    num_warmup_steps = int(lr_warmup_steps * num_training_steps) if isinstance(lr_warmup_steps, float) else lr_warmup_steps
    num_decay_steps = int(lr_decay_steps * num_training_steps) if isinstance(lr_decay_steps, float) else lr_decay_steps
    num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
    lr_scheduler_kwargs = {}
    for arg in lr_scheduler_args:
        key, value = arg.split("=")
        value = ast.literal_eval(value)
        lr_scheduler_kwargs[key] = value
    if name == "piecewise_constant":
        f = get_piecewise_constant_schedule(**lr_scheduler_kwargs)
    elif name == "inverse_sqrt":
        f = get_inverse_sqrt_schedule(num_warmup_steps=num_warmup_steps, timescale=timescale, **lr_scheduler_kwargs)
    elif name == "cosine":
        f = get_cosine_schedule_with_warmup(num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                                            **lr_scheduler_kwargs)
    elif name == "polynomial":
        f = get_polynomial_decay_schedule_with_warmup(num_warmup_steps=num_warmup_steps,
                                                      num_training_steps=num_training_steps, power=power,
                                                      optimizer_lr=lr, **lr_scheduler_kwargs)
    elif name == "cosine_with_min_lr":
        f = get_cosine_with_min_lr_schedule_with_warmup(num_warmup_steps=num_warmup_steps,
                                                        num_training_steps=num_training_steps,
                                                        num_cycles=num_cycles / 2, min_lr_rate=min_lr_ratio,
                                                        optimizer_lr=lr, **lr_scheduler_kwargs)
    elif name == "warmup_stable_decay":
        f = get_wsd_schedule(num_warmup_steps=num_warmup_steps, num_stable_steps=num_stable_steps,
                             num_decay_steps=num_decay_steps, num_cycles=num_cycles / 2,
                             min_lr_ratio=min_lr_ratio if min_lr_ratio is not None else 0.0, **lr_scheduler_kwargs)
    else:
        raise ValueError(name)
    return f, num_warmup_steps, num_decay_steps, num_training_steps


CASES = [
    # name, max_train_steps, num_processes, warmup, decay (None), num_cycles, timescale, min_lr_ratio, lr, args
    ("inverse_sqrt", 20, 1, "0", None, 1, None, None, 1e-4, []),
    ("inverse_sqrt", 20, 1, "5", None, 1, None, None, 1e-4, []),
    ("inverse_sqrt", 20, 2, "0.25", None, 1, 7, None, 1e-4, []),
    ("inverse_sqrt", 15, 1, "0", None, 1, 3, None, 1e-4, []),
    ("inverse_sqrt", 15, 1, "4", None, 1, 1, None, 1e-4, []),
    ("cosine_with_min_lr", 20, 1, "0", None, 1, None, 0.1, 1e-4, []),
    ("cosine_with_min_lr", 24, 1, "4", None, 3, None, 0.05, 1e-4, []),
    ("cosine_with_min_lr", 30, 1, "10%", None, 1, None, None, 1e-4, ["min_lr=1e-5"]),
    ("cosine_with_min_lr", 17, 2, "0.2", None, 2, None, 0.0, 3e-4, ["last_epoch=-1"]),
    ("cosine_with_min_lr", 12, 1, "0", None, 1, None, None, 2e-3, ["min_lr=3e-4"]),
    ("warmup_stable_decay", 20, 1, "3", "5", 1, None, None, 1e-4, []),
    ("warmup_stable_decay", 20, 1, "0", "0.25", 1, None, 0.1, 1e-4, []),
    ("warmup_stable_decay", 20, 1, "4", "6", 1, None, 0.2, 1e-4, ["warmup_type='cosine'", "decay_type='linear'"]),
    ("warmup_stable_decay", 30, 1, "0.2", "30%", 1, None, None, 1e-4, ["warmup_type='1-sqrt'", "decay_type='1-sqrt'"]),
    ("warmup_stable_decay", 24, 1, "2", "12", 3, None, 0.05, 1e-4, ["decay_type=\"cosine\""]),
    ("warmup_stable_decay", 16, 1, "3", None, 1, None, 0.1, 1e-4, []),
    ("warmup_stable_decay", 10, 1, "5", "8", 1, None, 0.3, 1e-4, ["warmup_type='cosine'"]),
    ("warmup_stable_decay", 20, 1, "5", "10", 1, None, None, 1e-4, ["warmup_type='linear'", "decay_type='cosine'",
                                                                   "num_training_steps=20"]),
    ("piecewise_constant", 25, 1, "0", None, 1, None, None, 1e-4, ["step_rules=\"1:10,0.1:20,0.01\""]),
    ("piecewise_constant", 12, 1, "0", None, 1, None, None, 1e-4, ["step_rules='0.5:3,2:1,0.25:8,1.5:3,0.1'"]),
    ("piecewise_constant", 5, 1, "0", None, 1, None, None, 1e-4, ["step_rules='0.3'"]),
    ("piecewise_constant", 20, 2, "0", None, 1, None, None, 1e-4, ["step_rules=' 1 : 1_0 ,5e-1:15, 0.2 '"]),
    ("piecewise_constant", 10, 1, "3", None, 1, None, None, 1e-4, ["step_rules='2:-1,0.5:4,-0.25'"]),
    ("cosine", 20, 1, "2", None, 1, None, None, 1e-4, ["num_cycles=1.5"]),
    ("cosine", 20, 1, "0", None, 1, None, None, 1e-4, ["num_cycles=2"]),
    ("polynomial", 20, 1, "3", None, 1, None, None, 1e-4, ["lr_end=1e-5"]),
]


def hx(v):
    return float(v).hex()


def main():
    with open(os.path.join(OUT, "lr_sched_ext.txt"), "w") as f:
        f.write("# make_lr_golden.py: case NAME mts P warmup decay cycles timescale minratio lr W= D= args=ITEMS ; "
                "factors for scheduler steps 0..T+2\n")
        for name, mts, P, wu, dec, cyc, ts, mr, lr, args in CASES:
            w = int_or_float(wu)
            d = int_or_float(dec) if dec is not None else 0
            fn, W, D, T = get_scheduler_fix(name, lr, mts, P, w, d, cyc, ts, mr, args)
            vals = [float(fn(s)) for s in range(T + 3)]
            f.write("case %s %d %d %s %s %d %s %s %s W=%d D=%d args=%s\n" % (
                name, mts, P, wu, dec if dec is not None else "-", cyc, ts if ts is not None else "-",
                hx(mr) if mr is not None else "-", hx(lr), W, D, ";".join(args)))
            f.write("f %d %s\n" % (len(vals), " ".join(hx(v) for v in vals)))


if __name__ == "__main__":
    main()
