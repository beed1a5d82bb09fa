#!/usr/bin/python3
"""Golden values for the optimizers of lib/train/optim (tests/unit/test_optim_kinds.c) besides AdamW
(whose goldens are make_train_golden.py's adamw.txt).

Run by hand with /usr/bin/python3 (Debian's torch 1.13); writes tests/data/train/optim.txt. Values
are written with float.hex() so the C side reads them exactly.

None of the optimizer packages is installed here, so each step() below is a transcription, in the
same torch operations and the same order, of the reference source kohya-ss/sd-scripts pins
(requirements.txt at sd-scripts 48d368fa, library/train_util.py get_optimizer):

  Lion                lion-pytorch 0.2.3, lion_pytorch/lion_pytorch.py
                      (github.com/lucidrains/lion-pytorch @ 6a74fdc0ba572ab5683dc0270c66c20ecbc02d09)
  SGDNesterov         torch.optim.SGD itself (nesterov=True, momentum 0.9 unless given, as kohya)
  Adafactor           transformers.optimization.Adafactor and AdafactorSchedule.get_lr
                      (github.com/huggingface/transformers src/transformers/optimization.py
                      @ 005edacb6b5dabbf0843e92c6623de9e07ca6241; kohya pins 4.54.1, the class is
                      the same there)
  Prodigy             prodigyopt 1.1.2, prodigyopt/prodigy.py
                      (github.com/konstmish/prodigy @ 3efb213ee8af5a6bf76f28726398433a847b38e9)
  DAdaptAdam          dadaptation 3.2, dadaptation/dadapt_adam.py
  DAdaptSGD           dadaptation 3.2, dadaptation/dadapt_sgd.py
  DAdaptAdaGrad       dadaptation 3.2, dadaptation/dadapt_adagrad.py (dense gradients)
  DAdaptAdan          dadaptation 3.2, dadaptation/dadapt_adan.py
  DAdaptLion          dadaptation 3.2, dadaptation/dadapt_lion.py
  DAdaptAdanIP        dadaptation 3.2, dadaptation/experimental/dadapt_adan_ip.py
  DAdaptAdamPreprint  dadaptation 3.2, dadaptation/experimental/dadapt_adam_preprint.py (kohya's
                      "DAdaptation") (github.com/facebookresearch/dadaptation
                      @ c984980213a989ff7cac1e3d68c19a2257bcd571)

Each case: four parameters (5,), (3, 4), (2, 2, 2, 2) and (3, 2) (the last one starts at zero, like a
LoRA up weight), in two parameter groups ([0, 0, 1, 1]), five steps with random gradients, a
per-step LR factor (a scheduler), a zero gradient for parameter 0 at step 2 and no gradient
(grad None: skipped) for parameter 1 at step 3. Lines:
  <tag>.p<i>.init, <tag>.s<k>.g<i>, <tag>.s<k>.p<i>   parameters and gradients (f32 values)
  <tag>.s<k>.d                                        D-Adaptation/Prodigy d after step k
  <tag>.s<k>.lr                                       Adafactor: AdafactorSchedule.get_lr() after step k
  <tag>.final.<i>.<name>                              every state tensor after the last step
"""
import math
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "train")
SHAPES = [(5,), (3, 4), (2, 2, 2, 2), (3, 2)]
GROUP_OF = [0, 0, 1, 1]
ZERO = (2, 0)   # (step, param): zero gradient
SKIP = (3, 1)   # (step, param): grad None


def hx(v):
    h = float(v).hex()   # 0x1.8000000000000p-3 -> 0x1.8p-3 (same value, shorter)
    m, e = h.split("p")
    if "." in m:
        m = m.rstrip("0").rstrip(".")
    return m + "p" + e


def put(f, name, values):
    values = [float(x) for x in values]
    f.write("%s %d %s\n" % (name, len(values), " ".join(hx(v) for v in values)))


# ---- transcriptions ---------------------------------------------------------------------------------
# Pieces Prodigy and the D-Adaptation Adam variants write alike.
def check_group_lr(group_lr, lr):
    if group_lr not in [lr, 0.0]:
        raise RuntimeError("Setting different lr values in different parameter groups is only supported "
                           "for values of 0")


def coupled_grads(opt, group, decouple):
    """(p, grad, state) of each parameter of `group` that has a gradient, in order; the weight decay is
    added to grad first unless it is decoupled."""
    decay = group["weight_decay"]
    for p in group["params"]:
        if p.grad is None:
            continue
        grad = p.grad.data
        if decay != 0 and not decouple:
            grad.add_(p.data, alpha=decay)
        yield p, grad, opt.state[p]


def bias_corrected_dlr(group, d, lr):
    """d·lr, times Adam's bias correction when the group's use_bias_correction is set"""
    beta1, beta2 = group["betas"]
    k = group["k"]
    if group["use_bias_correction"]:
        bias_correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
    else:
        bias_correction = 1
    return d * lr * bias_correction


def stepped(opt, group):
    """(p, state) of each parameter of `group` that has a gradient, its state's step counted"""
    for p in group["params"]:
        if p.grad is None:
            continue
        state = opt.state[p]
        state["step"] += 1
        yield p, state


def init_adam_state(state, p):
    """DAdaptAdam's and DAdaptAdamPreprint's state at a parameter's first step"""
    if "step" not in state:
        state["step"] = 0
        state["s"] = torch.zeros_like(p.data).detach()
        state["exp_avg"] = torch.zeros_like(p.data).detach()
        state["exp_avg_sq"] = torch.zeros_like(p.data).detach()


def adam_apply(opt, group, dlr, decouple, decay_if_lr):
    """DAdaptAdam's and DAdaptAdamPreprint's update of `group`: the decoupled weight decay (Preprint:
    decay_if_lr, only where the group's lr > 0), then p -= exp_avg / (sqrt(exp_avg_sq) + eps)"""
    group_lr = group["lr"]
    decay = group["weight_decay"]
    k = group["k"]
    eps = group["eps"]
    for p, state in stepped(opt, group):
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        denom = exp_avg_sq.sqrt().add_(eps)
        if decay != 0 and decouple and (group_lr > 0 or not decay_if_lr):
            p.data.add_(p.data, alpha=-decay * dlr)
        p.data.addcdiv_(exp_avg, denom, value=-1)
    group["k"] = k + 1


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, use_triton=False,
                 decoupled_weight_decay=False):
        assert lr > 0.0
        assert all([0.0 <= beta <= 1.0 for beta in betas])
        self._init_lr = lr
        self.decoupled_wd = decoupled_weight_decay
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in filter(lambda p: p.grad is not None, group["params"]):
                grad, lr, wd = p.grad, group["lr"], group["weight_decay"]
                beta1, beta2 = group["betas"]
                state = self.state[p]
                if self.decoupled_wd:
                    wd /= self._init_lr
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.data.mul_(1.0 - lr * wd)
                update = exp_avg.clone().mul_(beta1).add(grad, alpha=1.0 - beta1).sign_()
                p.add_(update, alpha=-lr)
                exp_avg.mul_(beta2).add_(grad, alpha=1.0 - beta2)


class Adafactor(torch.optim.Optimizer):
    def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                 weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False):
        if lr is not None and relative_step:
            raise ValueError("Cannot combine manual `lr` and `relative_step=True` options")
        if warmup_init and not relative_step:
            raise ValueError("`warmup_init=True` requires `relative_step=True`")
        super().__init__(params, dict(lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate,
                                      beta1=beta1, weight_decay=weight_decay, scale_parameter=scale_parameter,
                                      relative_step=relative_step, warmup_init=warmup_init))

    @staticmethod
    def _get_lr(param_group, param_state):
        rel_step_sz = param_group["lr"]
        if param_group["relative_step"]:
            min_step = 1e-6 * param_state["step"] if param_group["warmup_init"] else 1e-2
            rel_step_sz = min(min_step, 1.0 / math.sqrt(param_state["step"]))
        param_scale = 1.0
        if param_group["scale_parameter"]:
            param_scale = max(param_group["eps"][1], param_state["RMS"])
        return param_scale * rel_step_sz

    @staticmethod
    def _rms(tensor):
        return tensor.norm(2) / (tensor.numel() ** 0.5)

    @staticmethod
    def _approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col):
        r_factor = (exp_avg_sq_row / exp_avg_sq_row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        c_factor = exp_avg_sq_col.unsqueeze(-2).rsqrt()
        return torch.mul(r_factor, c_factor)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                grad_shape = grad.shape
                factored = len(grad_shape) >= 2
                use_first_moment = group["beta1"] is not None
                if len(state) == 0:
                    state["step"] = 0
                    if use_first_moment:
                        state["exp_avg"] = torch.zeros_like(grad)
                    if factored:
                        state["exp_avg_sq_row"] = torch.zeros(grad_shape[:-1]).to(grad)
                        state["exp_avg_sq_col"] = torch.zeros(grad_shape[:-2] + grad_shape[-1:]).to(grad)
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(grad)
                    state["RMS"] = 0
                p_data_fp32 = p
                state["step"] += 1
                state["RMS"] = self._rms(p_data_fp32)
                lr = self._get_lr(group, state)
                beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
                update = (grad ** 2) + group["eps"][0]
                if factored:
                    exp_avg_sq_row = state["exp_avg_sq_row"]
                    exp_avg_sq_col = state["exp_avg_sq_col"]
                    exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=-1), alpha=(1.0 - beta2t))
                    exp_avg_sq_col.mul_(beta2t).add_(update.mean(dim=-2), alpha=(1.0 - beta2t))
                    update = self._approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col)
                    update.mul_(grad)
                else:
                    exp_avg_sq = state["exp_avg_sq"]
                    exp_avg_sq.mul_(beta2t).add_(update, alpha=(1.0 - beta2t))
                    update = exp_avg_sq.rsqrt().mul_(grad)
                update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                update.mul_(lr)
                if use_first_moment:
                    exp_avg = state["exp_avg"]
                    exp_avg.mul_(group["beta1"]).add_(update, alpha=(1 - group["beta1"]))
                    update = exp_avg
                if group["weight_decay"] != 0:
                    p_data_fp32.add_(p_data_fp32, alpha=(-group["weight_decay"] * lr))
                p_data_fp32.add_(-update)

    def schedule_lrs(self):
        """AdafactorSchedule.get_lr() (what kohya logs as lr/<group> after a step)."""
        lrs = [self._get_lr(group, self.state[group["params"][0]]) for group in self.param_groups
               if group["params"][0].grad is not None]
        return [float(x) for x in lrs]


class Prodigy(torch.optim.Optimizer):
    def __init__(self, params, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0, decouple=True,
                 use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0,
                 growth_rate=float("inf"), fsdp_in_use=False, slice_p=1):
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay, d=d0, d0=d0,
                        d_max=d0, d_numerator=0.0, d_coef=d_coef, k=0, growth_rate=growth_rate,
                        use_bias_correction=use_bias_correction, decouple=decouple,
                        safeguard_warmup=safeguard_warmup, fsdp_in_use=fsdp_in_use, slice_p=slice_p)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        d_denom = 0.0
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        beta3 = group["beta3"]
        if beta3 is None:
            beta3 = math.sqrt(beta2)
        d = group["d"]
        d_max = group["d_max"]
        d_coef = group["d_coef"]
        lr = max(group["lr"] for group in self.param_groups)
        dlr = bias_corrected_dlr(group, d, lr)
        growth_rate = group["growth_rate"]
        decouple = group["decouple"]
        d_numerator = group["d_numerator"]
        d_numerator *= beta3
        delta_numerator = 0.0
        for group in self.param_groups:
            group_lr = group["lr"]
            d0 = group["d0"]
            safeguard_warmup = group["safeguard_warmup"]
            slice_p = group["slice_p"]
            check_group_lr(group_lr, lr)
            for p, grad, state in coupled_grads(self, group, decouple):
                if "step" not in state:
                    state["step"] = 0
                    state["s"] = torch.zeros_like(p.data.flatten()[::slice_p]).detach()
                    if p.any():
                        state["p0"] = p.flatten()[::slice_p].detach().clone()
                    else:
                        state["p0"] = torch.tensor(0, device=p.device, dtype=p.dtype)
                    if beta1 > 0:
                        state["exp_avg"] = torch.zeros_like(p.data).detach()
                    state["exp_avg_sq"] = torch.zeros_like(p.data).detach()
                exp_avg_sq = state["exp_avg_sq"]
                s = state["s"]
                p0 = state["p0"]
                if group_lr > 0.0:
                    sliced_grad = grad.flatten()[::slice_p]
                    delta_numerator += (d / d0) * dlr * torch.dot(sliced_grad, p0.data - p.data.flatten()[::slice_p]).item()
                    if beta1 > 0:
                        exp_avg = state["exp_avg"]
                        exp_avg.mul_(beta1).add_(grad, alpha=d * (1 - beta1))
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))
                    if safeguard_warmup:
                        s.mul_(beta3).add_(sliced_grad, alpha=((d / d0) * d))
                    else:
                        s.mul_(beta3).add_(sliced_grad, alpha=((d / d0) * dlr))
                    d_denom += s.abs().sum().item()
        d_hat = d
        if d_denom == 0:
            return
        if lr > 0.0:
            global_d_numerator = d_numerator + delta_numerator
            global_d_denom = d_denom
            d_hat = d_coef * global_d_numerator / global_d_denom
            if d == group["d0"]:
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * growth_rate)
        for group in self.param_groups:
            group["d_numerator"] = global_d_numerator
            group["d_denom"] = global_d_denom
            group["d"] = d
            group["d_max"] = d_max
            group["d_hat"] = d_hat
            decay = group["weight_decay"]
            k = group["k"]
            eps = group["eps"]
            for p, state in stepped(self, group):
                grad = p.grad.data
                exp_avg_sq = state["exp_avg_sq"]
                denom = exp_avg_sq.sqrt().add_(d * eps)
                if decay != 0 and decouple:
                    p.data.add_(p.data, alpha=-decay * dlr)
                if beta1 > 0:
                    exp_avg = state["exp_avg"]
                    p.data.addcdiv_(exp_avg, denom, value=-dlr)
                else:
                    p.data.addcdiv_(grad, denom, value=-dlr * d)
            group["k"] = k + 1


class DAdaptAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, log_every=0, decouple=False,
                 use_bias_correction=False, d0=1e-6, growth_rate=float("inf"), fsdp_in_use=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, d=d0, k=0, layer_scale=1.0,
                        numerator_weighted=0.0, log_every=log_every, growth_rate=growth_rate,
                        use_bias_correction=use_bias_correction, decouple=decouple, fsdp_in_use=fsdp_in_use)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        sk_l1 = 0.0
        group = self.param_groups[0]
        numerator_weighted = group["numerator_weighted"]
        beta1, beta2 = group["betas"]
        d = group["d"]
        lr = max(group["lr"] for group in self.param_groups)
        dlr = bias_corrected_dlr(group, d, lr)
        growth_rate = group["growth_rate"]
        decouple = group["decouple"]
        sqrt_beta2 = beta2 ** (0.5)
        numerator_acum = 0.0
        for group in self.param_groups:
            eps = group["eps"]
            group_lr = group["lr"]
            r = group["layer_scale"]
            check_group_lr(group_lr, lr)
            for p, grad, state in coupled_grads(self, group, decouple):
                init_adam_state(state, p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                s = state["s"]
                if group_lr > 0.0:
                    denom = exp_avg_sq.sqrt().add_(eps)
                    numerator_acum += r * dlr * torch.dot(grad.flatten(), s.div(denom).flatten()).item()
                    exp_avg.mul_(beta1).add_(grad, alpha=r * dlr * (1 - beta1))
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    s.mul_(sqrt_beta2).add_(grad, alpha=dlr * (1 - sqrt_beta2))
                    sk_l1 += r * s.abs().sum().item()
        d_hat = d
        if sk_l1 == 0:
            return
        global_numerator_weighted = sqrt_beta2 * numerator_weighted + (1 - sqrt_beta2) * numerator_acum
        global_sk_l1 = sk_l1
        if lr > 0.0:
            d_hat = global_numerator_weighted / ((1 - sqrt_beta2) * global_sk_l1)
            d = max(d, min(d_hat, d * growth_rate))
        for group in self.param_groups:
            group["numerator_weighted"] = global_numerator_weighted
            group["d"] = d
            adam_apply(self, group, dlr, decouple, False)


class DAdaptAdamPreprint(torch.optim.Optimizer):
    def __init__(self, params, lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, log_every=0, decouple=False,
                 d0=1e-6, growth_rate=float("inf"), fsdp_in_use=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, d=d0, k=0, gsq_weighted=0.0,
                        log_every=log_every, decouple=decouple, growth_rate=growth_rate, fsdp_in_use=fsdp_in_use)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        g_sq = 0.0
        sksq_weighted = 0.0
        sk_l1 = 0.0
        lr = max(group["lr"] for group in self.param_groups)
        group = self.param_groups[0]
        gsq_weighted = group["gsq_weighted"]
        d = group["d"]
        dlr = d * lr
        growth_rate = group["growth_rate"]
        decouple = group["decouple"]
        beta1, beta2 = group["betas"]
        for group in self.param_groups:
            group_lr = group["lr"]
            eps = group["eps"]
            check_group_lr(group_lr, lr)
            for p, grad, state in coupled_grads(self, group, decouple):
                init_adam_state(state, p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                grad_grad = grad * grad.conj()
                if group_lr > 0:
                    exp_avg.mul_(beta1).add_(grad, alpha=dlr * (1 - beta1))
                    exp_avg_sq.mul_(beta2).add_(grad_grad, alpha=1 - beta2)
                    denom = exp_avg_sq.sqrt().add_(eps)
                    g_sq += grad_grad.div_(denom).sum().item()
                    s = state["s"]
                    s.mul_(beta2).add_(grad, alpha=dlr * (1 - beta2))
                    sksq_weighted += (s * s.conj()).div_(denom).sum().item()
                    sk_l1 += s.abs().sum().item()
        gsq_weighted = beta2 * gsq_weighted + g_sq * (dlr ** 2) * (1 - beta2)
        d_hat = d
        if sk_l1 == 0:
            return
        if lr > 0.0:
            d_hat = (sksq_weighted / (1 - beta2) - gsq_weighted) / sk_l1
            d = max(d, min(d_hat, d * growth_rate))
        for group in self.param_groups:
            group["gsq_weighted"] = gsq_weighted
            group["d"] = d
            adam_apply(self, group, dlr, decouple, True)


class DAdaptSGD(torch.optim.Optimizer):
    """dadaptation 3.2 dadaptation/dadapt_sgd.py (@ c984980), step() without logging and FSDP."""

    def __init__(self, params, lr=1.0, momentum=0.0, weight_decay=0, log_every=0, d0=1e-6,
                 growth_rate=float('inf'), fsdp_in_use=False):
        if not 0.0 < d0:
            raise ValueError("Invalid d0 value: {}".format(d0))
        if not 0.0 < lr:
            raise ValueError("Invalid learning rate: {}".format(lr))
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, k=0, log_every=log_every,
                        numerator_weighted=0.0, d=d0, growth_rate=growth_rate, fsdp_in_use=fsdp_in_use)
        super().__init__(params, defaults)

    def step(self, closure=None):
        loss = None
        group = self.param_groups[0]
        lr = max(group['lr'] for group in self.param_groups)
        decay = group['weight_decay']
        momentum = group['momentum']
        ck = 1 - momentum
        k = group['k']
        numerator_weighted = group['numerator_weighted']
        growth_rate = group['growth_rate']
        d = group['d']
        group = self.param_groups[0]
        sk_sq = 0.0
        delta_numerator_weighted = 0.0
        if k == 0:
            g_sq = 0.0
            for group in self.param_groups:
                group_lr = group['lr']
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    if decay != 0:
                        grad.add(p.data, alpha=decay)
                    state = self.state[p]
                    if group_lr > 0.0:
                        g_sq += (grad * grad).sum().item()
            global_gsq = g_sq
            group['g0_norm'] = g0_norm = math.sqrt(global_gsq)
        g0_norm = group['g0_norm']
        dlr = d*lr/g0_norm
        for group in self.param_groups:
            group_lr = group['lr']
            check_group_lr(group_lr, lr)
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                if 'z' not in state:
                    z = state['z'] = torch.clone(p.data).detach()
                    s = state['s'] = torch.zeros_like(p.data).detach()
                    x0 = state['x0'] = torch.clone(p.data).detach()
                if decay != 0:
                    grad.add_(p.data, alpha=decay)
                s = state['s']
                if group_lr > 0.0:
                    delta_numerator_weighted += dlr * torch.dot(grad.flatten(), s.flatten()).item()
                    s.data.add_(grad, alpha=dlr)
                    sk_sq += (s * s).sum().item()
        d_hat = d
        global_sk_sq = sk_sq
        global_numerator_weighted = numerator_weighted + delta_numerator_weighted
        if lr > 0.0:
            d_hat = 2*global_numerator_weighted/math.sqrt(global_sk_sq)
            d = max(d, min(d_hat, d*growth_rate))
        if global_sk_sq == 0:
            return loss
        for group in self.param_groups:
            group['numerator_weighted'] = global_numerator_weighted
            group['d'] = d
            group['g0_norm'] = g0_norm
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                s = state['s']
                x0 = state['x0']
                z = state['z']
                z.data.copy_(x0 - s)
                p.data.mul_(1-ck).add_(z, alpha=ck)
            group['k'] = k + 1
        return loss


class DAdaptAdaGrad(torch.optim.Optimizer):
    """dadaptation 3.2 dadapt_adagrad.py (@ c984980), step() for dense gradients, without logging."""

    def __init__(self, params, lr=1.0, momentum=0, log_every=0, weight_decay=0.0, eps=1e-6, d0=1e-6,
                 growth_rate=float('inf')):
        defaults = dict(lr=lr, momentum=momentum, eps=eps, weight_decay=weight_decay, gsq_weighted=0.0,
                        log_every=log_every, d=d0, growth_rate=growth_rate, k=0, sksq_weighted=0.0, skl1=0.0)
        super().__init__(params, defaults)

    def step(self):
        group = self.param_groups[0]
        lr = group["lr"]
        momentum = group["momentum"]
        ck = 1 - momentum
        growth_rate = group["growth_rate"]
        gsq_weighted, sksq_weighted, skl1, d = group["gsq_weighted"], group["sksq_weighted"], group["skl1"], group["d"]
        dlr = d * lr
        g_sq = sksq_change = skl1_change = 0.0
        for group in self.param_groups:
            eps, decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                st = self.state[p]
                if "alphak" not in st:
                    st["alphak"] = torch.full_like(p.data, fill_value=1e-6).detach()
                    st["sk"] = torch.zeros_like(p.data).detach()
                    st["x0"] = torch.clone(p.data).detach()
                sk, alphak = st["sk"], st["alphak"]
                if decay != 0:
                    grad.add_(p.data, alpha=decay)
                old_sq = (sk * sk).div(torch.sqrt(alphak) + eps).sum().item()
                old_l1 = sk.abs().sum().item()
                alphak.data.add_(grad * grad)
                g_sq += (grad * grad).div(torch.sqrt(alphak) + eps).sum().item()
                sk.data.add_(grad, alpha=dlr)
                sksq_change += (sk * sk).div(torch.sqrt(alphak) + eps).sum().item() - old_sq
                skl1_change += sk.abs().sum().item() - old_l1
        sksq_weighted = sksq_weighted + sksq_change
        skl1 = skl1 + skl1_change
        if skl1 == 0:
            return
        gsq_weighted = gsq_weighted + dlr * dlr * g_sq
        if lr > 0.0:
            d_hat = (sksq_weighted - gsq_weighted) / skl1
            d = max(d, min(d_hat, d * growth_rate))
        for group in self.param_groups:
            group["gsq_weighted"], group["skl1"], group["sksq_weighted"], group["d"] = gsq_weighted, skl1, sksq_weighted, d
            eps = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                z = st["x0"] - st["sk"].div(torch.sqrt(st["alphak"]) + eps)
                if momentum != 0:
                    p.data.mul_(1 - ck).add_(z, alpha=ck)
                else:
                    p.data.copy_(z)
            group["k"] = group["k"] + 1


class DAdaptAdan(torch.optim.Optimizer):
    """dadaptation 3.2 dadapt_adan.py (ip=False) and experimental/dadapt_adan_ip.py (ip=True) (@ c984980),
    step() without logging. AdanIP's own unpacking swaps two state names (exp_avg_sq <-> exp_avg_diff);
    its numerator is a tensor (torch.dot without .item()), kept as such."""

    def __init__(self, params, lr=1.0, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.02, no_prox=False,
                 log_every=0, d0=1e-6, growth_rate=float('inf'), ip=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox, d=d0, k=0,
                        gsq_weighted=0.0, numerator_weighted=0.0, log_every=log_every, growth_rate=growth_rate)
        self.ip = ip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        ip = self.ip
        g_sq = sksq_weighted = sk_l1 = 0.0
        group = self.param_groups[0]
        gsq_weighted, numerator_weighted = group["gsq_weighted"], group["numerator_weighted"]
        d = group["d"]
        lr = group["lr"]
        dlr = d * lr
        no_prox, growth_rate = group["no_prox"], group["growth_rate"]
        beta1, beta2, beta3 = group["betas"]
        numerator_acum = 0.0
        for group in self.param_groups:
            eps = group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                st = self.state[p]
                if "step" not in st:
                    st["step"] = 0
                    st["s"] = torch.zeros_like(p.data).detach()
                    st["exp_avg"] = torch.zeros_like(p.data).detach()
                    st["exp_avg_diff"] = torch.zeros_like(p.data).detach()
                    st["exp_avg_sq"] = torch.zeros_like(p.data).detach()
                if st["step"] == 0:
                    st["pre_grad"] = grad.clone()
                if ip:
                    exp_avg, exp_avg_sq, exp_avg_diff = st["exp_avg"], st["exp_avg_diff"], st["exp_avg_sq"]
                else:
                    exp_avg, exp_avg_diff, exp_avg_sq = st["exp_avg"], st["exp_avg_diff"], st["exp_avg_sq"]
                grad_diff = grad - st["pre_grad"]
                grad_grad = grad * grad
                update = grad + beta2 * grad_diff
                update_update = update * update
                s = st["s"]
                if ip:
                    denom = exp_avg_sq.sqrt().add_(eps)
                    numerator_acum += dlr * torch.dot(grad.flatten(), s.div(denom).flatten())
                exp_avg.mul_(beta1).add_(grad, alpha=dlr * (1. - beta1))
                exp_avg_diff.mul_(beta2).add_(grad_diff, alpha=dlr * (1. - beta2))
                exp_avg_sq.mul_(beta3).add_(update_update, alpha=1. - beta3)
                if not ip:
                    denom = exp_avg_sq.sqrt().add_(eps)
                    g_sq += grad_grad.div_(denom).sum().item()
                s.mul_(beta3).add_(grad, alpha=dlr * (1. - beta3))
                if not ip:
                    sksq_weighted += (s * s).div_(denom).sum().item()
                sk_l1 += s.abs().sum().item()
        if ip:
            numerator_weighted = beta3 * numerator_weighted + (1 - beta3) * numerator_acum
        else:
            gsq_weighted = beta3 * gsq_weighted + g_sq * (dlr ** 2) * (1 - beta3)
        if sk_l1 == 0:
            return
        if lr > 0.0:
            if ip:
                d_hat = 2 * (beta3 / (1 - beta3)) * numerator_weighted / sk_l1
            else:
                d_hat = (sksq_weighted / (1 - beta3) - gsq_weighted) / sk_l1
            d = max(d, min(d_hat, d * growth_rate))
        for group in self.param_groups:
            group["gsq_weighted"], group["numerator_weighted"], group["d"] = gsq_weighted, numerator_weighted, d
            decay, eps = group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                st = self.state[p]
                if ip:
                    exp_avg, exp_avg_sq, exp_avg_diff = st["exp_avg"], st["exp_avg_diff"], st["exp_avg_sq"]
                else:
                    exp_avg, exp_avg_diff, exp_avg_sq = st["exp_avg"], st["exp_avg_diff"], st["exp_avg_sq"]
                st["step"] += 1
                denom = exp_avg_sq.sqrt().add_(eps)
                update = (exp_avg + beta2 * exp_avg_diff).div_(denom)
                if no_prox:
                    p.data.mul_(1 - dlr * decay)
                    p.add_(update, alpha=-1)
                else:
                    p.add_(update, alpha=-1)
                    p.data.div_(1 + dlr * decay)
                st["pre_grad"].copy_(grad)
            group["k"] = group["k"] + 1


class DAdaptLion(torch.optim.Optimizer):
    """dadaptation 3.2 dadapt_lion.py (@ c984980), step() without logging and FSDP."""

    def __init__(self, params, lr=1.0, betas=(0.9, 0.99), weight_decay=0.0, log_every=0, d0=1e-6):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, d=d0, k=0, log_every=log_every,
                        numerator_weighted=0.0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        group = self.param_groups[0]
        numerator_weighted, d = group["numerator_weighted"], group["d"]
        lr = max(group["lr"] for group in self.param_groups)
        dlr = d * lr
        beta1, beta2 = group["betas"]
        sqrt_beta2 = beta2 ** 0.5
        numerator_acum = sk_l1 = 0.0
        for group in self.param_groups:
            wd = group["weight_decay"]
            check_group_lr(group["lr"], lr)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                st = self.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p).detach()
                    st["s"] = torch.zeros_like(p).detach()
                exp_avg, s = st["exp_avg"], st["s"]
                p.data.mul_(1 - dlr * wd)
                update = exp_avg.clone().mul_(beta1).add_(grad, alpha=(1 - beta1)).sign_()
                p.data.add_(update, alpha=-dlr)
                exp_avg.mul_(beta2).add_(grad, alpha=(1 - beta2) * dlr)
                numerator_acum += dlr * torch.dot(update.flatten(), s.flatten()).item()
                s.mul_(sqrt_beta2).add_(update, alpha=(1 - sqrt_beta2) * dlr)
                sk_l1 += s.abs().sum().item()
        if sk_l1 == 0:
            return
        global_numerator_weighted = sqrt_beta2 * numerator_weighted + (1 - sqrt_beta2) * numerator_acum
        if lr > 0.0:
            d_hat = global_numerator_weighted / ((1 - sqrt_beta2) * sk_l1)
            d = max(d, d_hat)
        for group in self.param_groups:
            group["numerator_weighted"] = global_numerator_weighted
            group["d"] = d
            group["k"] = group["k"] + 1


# ---- cases ----------------------------------------------------------------------------------------------
def run_case(f, tag, make, lrs, factors, set_lr=True, log_d=False, log_lr=False, drift=False):
    """drift: each gradient is a fixed random direction plus 0.1 x the noise, so that D-Adaptation's
    numerator grows and d moves within five steps (the other cases' gradients are pure noise)."""
    g = torch.Generator().manual_seed(4321 + sum(map(ord, tag)))
    params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]
    base = [torch.randn(*s, generator=g) for s in SHAPES] if drift else None
    with torch.no_grad():
        params[3].zero_()
    groups = []
    for gi, lr in enumerate(lrs):
        grp = {"params": [p for p, k in zip(params, GROUP_OF) if k == gi]}
        if lr is not None:
            grp["lr"] = lr
        groups.append(grp)
    opt = make(groups)
    for i, p in enumerate(params):
        put(f, "%s.p%d.init" % (tag, i), p.detach().flatten().tolist())
    for step in range(len(factors)):
        for i, p in enumerate(params):
            gr = torch.randn(*p.shape, generator=g) * (0.5 + step)
            if drift:
                gr = base[i] + gr * 0.1
            if (step, i) == ZERO:
                gr = gr * 0
            put(f, "%s.s%d.g%d" % (tag, step, i), gr.flatten().tolist())
            p.grad = None if (step, i) == SKIP else gr.clone()
        if set_lr:
            for gi, grp in enumerate(opt.param_groups):
                grp["lr"] = lrs[gi] * factors[step]
        opt.step()
        for i, p in enumerate(params):
            put(f, "%s.s%d.p%d" % (tag, step, i), p.detach().flatten().tolist())
        if log_d:
            put(f, "%s.s%d.d" % (tag, step), [opt.param_groups[0]["d"]])
        if log_lr:
            put(f, "%s.s%d.lr" % (tag, step), opt.schedule_lrs())
        for p in params:
            p.grad = None
    for i, p in enumerate(params):
        st = opt.state[p]
        for name in sorted(st):
            v = st[name]
            if torch.is_tensor(v) and v.dim() > 0 or (torch.is_tensor(v) and name == "p0"):
                put(f, "%s.final.%d.%s" % (tag, i, name), v.flatten().tolist())
            elif name == "step":
                put(f, "%s.final.%d.step" % (tag, i), [float(v)])


def main():
    F5 = [1.0, 1.0, 1.0, 1.0, 1.0]
    with open(os.path.join(OUT, "optim.txt"), "w") as f:
        f.write("# torch %s; optimizer goldens (make_optim_golden.py)\n" % torch.__version__)
        # Lion: defaults; decoupled weight decay (wd / the constructor's lr) with other betas
        run_case(f, "lion", lambda gr: Lion(gr, lr=1e-3), [1e-3, 5e-4], [1.0, 0.5, 1.0, 0.75, 0.25])
        run_case(f, "lion_args", lambda gr: Lion(gr, lr=1e-3, betas=(0.95, 0.98), weight_decay=0.1,
                                                 decoupled_weight_decay=True),
                 [1e-3, 2e-3], [0.0, 1.0, 0.9, 0.8, 0.7])
        # SGDNesterov: kohya's SGD(nesterov=True, momentum=0.9 unless given)
        run_case(f, "sgd", lambda gr: torch.optim.SGD(gr, lr=1e-2, nesterov=True, momentum=0.9),
                 [1e-2, 5e-3], [1.0, 0.5, 1.0, 0.75, 0.25])
        run_case(f, "sgd_args", lambda gr: torch.optim.SGD(gr, lr=1e-2, nesterov=True, momentum=0.8,
                                                           weight_decay=0.01),
                 [1e-2, 3e-2], F5)
        # Adafactor: kohya's default relative_step=True (lr None, group LRs removed)
        run_case(f, "adafactor", lambda gr: Adafactor(gr, lr=None, relative_step=True), [None, None], F5,
                 set_lr=False, log_lr=True)
        run_case(f, "adafactor_warmup", lambda gr: Adafactor(gr, lr=None, relative_step=True, warmup_init=True,
                                                             weight_decay=0.01, beta1=0.9),
                 [None, None], F5, set_lr=False, log_lr=True)
        run_case(f, "adafactor_manual", lambda gr: Adafactor(gr, lr=1e-3, relative_step=False, scale_parameter=False,
                                                             clip_threshold=0.5, decay_rate=-0.5, beta1=0.8,
                                                             weight_decay=0.1, eps=(1e-20, 1e-2)),
                 [1e-3, 5e-3], [0.0, 0.5, 1.0, 0.75, 0.25])
        run_case(f, "adafactor_scaled", lambda gr: Adafactor(gr, lr=1e-2, relative_step=False),
                 [1e-2, 2e-2], [1.0, 0.5, 1.0, 0.75, 0.25], log_lr=True)
        # Prodigy
        run_case(f, "prodigy", lambda gr: Prodigy(gr, lr=1.0), [1.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0], log_d=True)
        run_case(f, "prodigy_args", lambda gr: Prodigy(gr, lr=1.0, d_coef=2.0, use_bias_correction=True,
                                                       safeguard_warmup=True, weight_decay=0.01, decouple=False,
                                                       betas=(0.9, 0.99)),
                 [1.0, 1.0], F5, log_d=True)
        run_case(f, "prodigy_slice", lambda gr: Prodigy(gr, lr=0.5, betas=(0.0, 0.99), beta3=0.9, slice_p=3,
                                                        growth_rate=1.02, weight_decay=0.1, d0=1e-4, eps=1e-6),
                 [0.5, 0.5], [1.0, 0.8, 0.6, 0.4, 0.2], log_d=True)
        run_case(f, "prodigy_zero_group", lambda gr: Prodigy(gr, lr=1.0, weight_decay=0.1),
                 [1.0, 0.0], F5, log_d=True)
        # D-Adaptation
        run_case(f, "dadapt_adam", lambda gr: DAdaptAdam(gr, lr=1.0), [1.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0],
                 log_d=True)
        run_case(f, "dadapt_adam_args", lambda gr: DAdaptAdam(gr, lr=1.0, decouple=True, weight_decay=0.01,
                                                              use_bias_correction=True, growth_rate=1.5, d0=1e-5),
                 [1.0, 1.0], F5, log_d=True)
        run_case(f, "dadapt_pre", lambda gr: DAdaptAdamPreprint(gr, lr=1.0), [1.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0],
                 log_d=True)
        run_case(f, "dadapt_pre_args", lambda gr: DAdaptAdamPreprint(gr, lr=1.0, weight_decay=0.01, betas=(0.8, 0.99),
                                                                     eps=1e-6, growth_rate=2.0),
                 [1.0, 0.0], F5, log_d=True)
        run_case(f, "dadapt_sgd", lambda gr: DAdaptSGD(gr, lr=1.0), [1.0, 1.0], [1.0, 0.5, 1.0, 0.0, 1.0],
                 log_d=True)
        run_case(f, "dadapt_sgd_args", lambda gr: DAdaptSGD(gr, lr=1.0, momentum=0.9, weight_decay=0.01,
                                                            growth_rate=1.5, d0=1e-5),
                 [1.0, 0.0], F5, log_d=True)

        # DAdaptAdaGrad: group 0's lr only (the second group's LR is never read); momentum averaging
        run_case(f, "dadapt_adagrad", lambda gr: DAdaptAdaGrad(gr, lr=1.0), [1.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0],
                 log_d=True, drift=True)
        run_case(f, "dadapt_adagrad_args", lambda gr: DAdaptAdaGrad(gr, lr=1.0, momentum=0.5, weight_decay=0.01,
                                                                    eps=1e-5, growth_rate=1.5, d0=1e-5),
                 [1.0, 0.5], F5, log_d=True, drift=True)
        # DAdaptAdan: kohya passes no weight_decay, so the constructor's 0.02 applies (prox form)
        run_case(f, "dadapt_adan", lambda gr: DAdaptAdan(gr, lr=1.0), [1.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0],
                 log_d=True, drift=True)
        run_case(f, "dadapt_adan_args", lambda gr: DAdaptAdan(gr, lr=1.0, no_prox=True, weight_decay=0.1,
                                                              betas=(0.9, 0.9, 0.999), eps=1e-6, growth_rate=2.0,
                                                              d0=1e-5),
                 [1.0, 0.0], F5, log_d=True, drift=True)
        run_case(f, "dadapt_adan_ip", lambda gr: DAdaptAdan(gr, lr=1.0, ip=True), [1.0, 1.0],
                 [0.0, 0.5, 1.0, 1.0, 1.0], log_d=True, drift=True)
        run_case(f, "dadapt_adan_ip_args", lambda gr: DAdaptAdan(gr, lr=1.0, ip=True, no_prox=True, weight_decay=0.0,
                                                                 betas=(0.95, 0.9, 0.98), growth_rate=1.2, d0=1e-5),
                 [1.0, 0.5], F5, log_d=True, drift=True)
        # DAdaptLion: decoupled decay by d*lr; a group with LR 0 still moves (the reference's dlr is global)
        run_case(f, "dadapt_lion", lambda gr: DAdaptLion(gr, lr=1.0), [1.0, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0],
                 log_d=True, drift=True)
        run_case(f, "dadapt_lion_args", lambda gr: DAdaptLion(gr, lr=1.0, weight_decay=0.1, betas=(0.8, 0.95),
                                                              d0=1e-5),
                 [1.0, 0.0], F5, log_d=True, drift=True)

if __name__ == "__main__":
    main()
