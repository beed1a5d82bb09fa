"""Goldens for the ScheduleFree optimizers of lib/train (tests/unit/test_optim_sf.c).

The classes below are schedulefree 1.4's (kohya's requirements.txt pins schedulefree==1.4;
facebookresearch/schedule_free commit 49f34e0, 2024-12-02: schedulefree/adamw_schedulefree.py,
radam_schedulefree.py, sgd_schedulefree.py), copied without their docstrings, with what the three
write alike (eval()/train(), the warmup, the averaging weight, the state of a first step) in
ScheduleFree and the sf_* functions once; the package is not installed here, torch is. They run on the CPU in float32 with the default foreach=True path.
kohya (train_network.py) calls optimizer.train() once at construction and eval() ... train()
around every optimizer step's sampling/saving window: each case does the same after every step
and records the eval-mode weights x, then the train-mode y, z and exp_avg_sq at the end.
Output: tests/data/optim_sf/sf.safetensors.  Run: /usr/bin/python3 tests/golden/gen/make_optim_sf_golden.py
"""
import importlib.util
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("g8", os.path.join(HERE, "make_optim8bit_golden.py"))
g8 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(g8)
OUT = os.path.join(HERE, "..", "..", "data", "optim_sf", "sf.safetensors")

if not hasattr(torch, "_foreach_lerp_"):   # torch < 2.0 (this machine's 1.13): the per-tensor kernel,
    def _foreach_lerp_(ys, zs, weight):     # which is what torch 2.x's CPU foreach falls back to
        for y, z in zip(ys, zs):
            y.lerp_(z, weight)
    torch._foreach_lerp_ = _foreach_lerp_


class ScheduleFree(torch.optim.Optimizer):
    """eval() and train() of all three: y <-> x by lerp with z, beta(group) being beta1 (AdamW, RAdam)
    or momentum (SGD)"""

    @staticmethod
    def beta(group):
        return group['betas'][0]

    @torch.no_grad()
    def eval(self):
        for group in self.param_groups:
            train_mode = group['train_mode']
            beta = self.beta(group)
            if train_mode:
                for p in group['params']:
                    state = self.state[p]
                    if 'z' in state:
                        p.lerp_(end=state['z'].to(p.device), weight=1-1/beta)
                group['train_mode'] = False

    @torch.no_grad()
    def train(self):
        for group in self.param_groups:
            train_mode = group['train_mode']
            beta = self.beta(group)
            if not train_mode:
                for p in group['params']:
                    state = self.state[p]
                    if 'z' in state:
                        p.lerp_(end=state['z'].to(p.device), weight=1-beta)
                group['train_mode'] = True

    def check_train_mode(self):
        if not self.param_groups[0]['train_mode']:
            raise Exception("Optimizer was not in train mode when step is called. ")


def sf_warmup(group, k):
    """AdamW's and SGD's linear warmup factor of step k+1"""
    warmup_steps = group['warmup_steps']
    if k < warmup_steps:
        return (k+1) / warmup_steps
    return 1.0


def sf_ckp1(group, k, lr):
    """the averaging weight of step k+1 at this lr (group's scheduled_lr, lr_max and weight_sum updated)"""
    group['scheduled_lr'] = lr
    lr_max = group['lr_max'] = max(lr, group['lr_max'])
    weight = ((k+1)**group['r']) * (lr_max**group['weight_lr_power'])
    weight_sum = group['weight_sum'] = group['weight_sum'] + weight
    try:
        return weight/weight_sum
    except ZeroDivisionError:
        return 0


def sf_active(opt, group, exp_avg_sq):
    """the group's parameters with a gradient, their state started (z = p, and exp_avg_sq = 0 if asked)"""
    active_p = [p for p in group['params'] if p.grad is not None]
    for p in active_p:
        if 'z' not in opt.state[p]:
            opt.state[p]['z'] = torch.clone(p, memory_format=torch.preserve_format)
            if exp_avg_sq:
                opt.state[p]['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return active_p


class AdamWScheduleFree(ScheduleFree):
    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0, r=0.0,
                 weight_lr_power=2.0, foreach=hasattr(torch, "_foreach_mul_")):
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        self.check_train_mode()
        loss = None
        for group in self.param_groups:
            eps = group['eps']
            beta1, beta2 = group['betas']
            decay = group['weight_decay']
            k = group['k']
            sched = sf_warmup(group, k)
            bias_correction2 = 1 - beta2 ** (k+1)
            lr = group['lr']*sched
            ckp1 = sf_ckp1(group, k, lr)
            active_p = sf_active(self, group, True)
            if group['foreach'] and len(active_p) > 0:
                y, grad, exp_avg_sq, z = zip(*[(p, p.grad, self.state[p]['exp_avg_sq'], self.state[p]['z'])
                                               for p in active_p])
                torch._foreach_mul_(exp_avg_sq, beta2)
                torch._foreach_addcmul_(exp_avg_sq, grad, grad, value=1-beta2)
                denom = torch._foreach_div(exp_avg_sq, bias_correction2)
                torch._foreach_sqrt_(denom)
                torch._foreach_add_(denom, eps)
                torch._foreach_div_(grad, denom)
                if decay != 0:
                    torch._foreach_add_(grad, y, alpha=decay)
                torch._foreach_lerp_(y, z, weight=ckp1)
                torch._foreach_add_(y, grad, alpha=lr*(beta1*(1-ckp1)-1))
                torch._foreach_sub_(z, grad, alpha=lr)
            group['k'] = k+1
        return loss


class RAdamScheduleFree(AdamWScheduleFree):
    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, r=0.0,
                 weight_lr_power=2.0, foreach=hasattr(torch, "_foreach_mul_"), silent_sgd_phase=True):
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0,
                        scheduled_lr=0.0, weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                        foreach=foreach, silent_sgd_phase=silent_sgd_phase)
        torch.optim.Optimizer.__init__(self, params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        self.check_train_mode()
        loss = None
        for group in self.param_groups:
            eps = group["eps"]
            beta1, beta2 = group["betas"]
            decay = group["weight_decay"]
            silent_sgd_phase = group["silent_sgd_phase"]
            k = group["k"]
            step = k + 1
            beta2_t = beta2**step
            bias_correction2 = 1 - beta2_t
            rho_inf = 2 / (1 - beta2) - 1
            rho_t = rho_inf - 2 * step * beta2_t / bias_correction2
            rect = (
                ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                if rho_t > 4.0
                else float(not silent_sgd_phase)
            )
            lr = group["lr"] * rect
            ckp1 = sf_ckp1(group, k, lr)
            adaptive_y_lr = lr * (beta1 * (1 - ckp1) - 1)
            active_p = sf_active(self, group, True)
            if group["foreach"] and len(active_p) > 0:
                y, grad, exp_avg_sq, z = zip(
                    *[(p, p.grad, self.state[p]["exp_avg_sq"], self.state[p]["z"]) for p in active_p]
                )
                torch._foreach_mul_(exp_avg_sq, beta2)
                torch._foreach_addcmul_(exp_avg_sq, grad, grad, value=1 - beta2)
                if rho_t > 4.0:
                    denom = torch._foreach_div(exp_avg_sq, bias_correction2)
                    torch._foreach_sqrt_(denom)
                    torch._foreach_add_(denom, eps)
                    torch._foreach_div_(grad, denom)
                if decay != 0:
                    torch._foreach_add_(grad, y, alpha=decay)
                torch._foreach_lerp_(y, z, weight=ckp1)
                torch._foreach_add_(y, grad, alpha=adaptive_y_lr)
                torch._foreach_sub_(z, grad, alpha=lr)
            group["k"] = k + 1
        return loss


class SGDScheduleFree(ScheduleFree):
    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0, warmup_steps=0, r=0.0, weight_lr_power=2,
                 foreach=hasattr(torch, "_foreach_mul_")):
        if lr < 0.0:
            raise ValueError("Invalid learning rate: {}".format(lr))
        if weight_decay < 0.0:
            raise ValueError("Invalid weight_decay value: {}".format(weight_decay))
        if momentum <= 0 or momentum >= 1:
            raise ValueError("Momentum must be between 0 and 1 exclusive: {}".format(momentum))
        defaults = dict(lr=lr, momentum=momentum, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @staticmethod
    def beta(group):
        return group['momentum']

    @torch.no_grad()
    def step(self, closure=None):
        self.check_train_mode()
        loss = None
        for group in self.param_groups:
            momentum = group['momentum']
            weight_decay = group['weight_decay']
            k = group['k']
            sched = sf_warmup(group, k)
            lr = group['lr']*sched
            ckp1 = sf_ckp1(group, k, lr)
            active_p = sf_active(self, group, False)
            if group['foreach'] and len(active_p) > 0:
                y, grad, z = zip(*[(p, p.grad, self.state[p]['z']) for p in active_p])
                if weight_decay != 0:
                    torch._foreach_add_(grad, y, alpha=weight_decay)
                torch._foreach_lerp_(y, z, weight=ckp1)
                torch._foreach_add_(y, grad, alpha=lr*(momentum*(1-ckp1)-1))
                torch._foreach_sub_(z, grad, alpha=lr)
            group['k'] = k+1
        return loss


SHAPES = {"A": (6, 5), "B": (7,), "C": (3, 4)}   # group 0: A; group 1: B, C (C has no gradient at step 2)
# tag, class, kwargs, group LRs, steps
CASES = [
    ("adamw", AdamWScheduleFree, dict(weight_decay=0.01, warmup_steps=3), (1e-2, 5e-3), 6),
    ("adamw_r", AdamWScheduleFree, dict(r=0.5, weight_lr_power=1.0, betas=(0.8, 0.99), eps=1e-6), (2e-2, 2e-2), 4),
    ("radam", RAdamScheduleFree, dict(weight_decay=0.01), (1e-2, 5e-3), 8),
    ("radam_loud", RAdamScheduleFree, dict(silent_sgd_phase=False, betas=(0.9, 0.99)), (1e-2, 1e-2), 6),
    ("sgd", SGDScheduleFree, dict(weight_decay=0.01, warmup_steps=2), (0.1, 0.05), 5),
    ("sgd_m", SGDScheduleFree, dict(momentum=0.5, r=1.0), (0.2, 0.1), 4),
]


def main():
    torch.manual_seed(1234)
    out = {}
    for tag, cls, kw, lrs, nsteps in CASES:
        ps = {k: torch.nn.Parameter(torch.randn(s)) for k, s in SHAPES.items()}
        for k, p in ps.items():
            out[f"{tag}.p0.{k}"] = p.detach().numpy().copy()
        opt = cls([{"params": [ps["A"]], "lr": lrs[0]}, {"params": [ps["B"], ps["C"]], "lr": lrs[1]}], lr=lrs[0], **kw)
        opt.train()   # kohya's get_optimizer
        for s in range(1, nsteps + 1):
            for k, p in ps.items():
                if k == "C" and s == 2:
                    p.grad = None
                    continue
                g = torch.randn(SHAPES[k]) * 0.1
                out[f"{tag}.g{s}.{k}"] = g.numpy().copy()
                p.grad = g.clone()
            opt.step()
            opt.eval()
            for k, p in ps.items():
                out[f"{tag}.x{s}.{k}"] = p.detach().numpy().copy()
            opt.train()
        for k, p in ps.items():
            out[f"{tag}.y.{k}"] = p.detach().numpy().copy()
            out[f"{tag}.z.{k}"] = opt.state[p]["z"].numpy().copy()
            if "exp_avg_sq" in opt.state[p]:
                out[f"{tag}.v.{k}"] = opt.state[p]["exp_avg_sq"].numpy().copy()
    g8.save_safetensors(OUT, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()})
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes,", torch.__version__)


if __name__ == "__main__":
    main()
