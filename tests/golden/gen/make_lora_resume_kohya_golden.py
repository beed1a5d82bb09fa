#!/usr/bin/python3
"""Golden data for tests/golden/test_train_resume_kohya_golden.c and tests/cli/train_resume_kohya.sh
(run once by hand with Debian's /usr/bin/python3, torch 1.13; outputs are committed under
tests/data/train_lora_kohya/).

A kohya-ss/sd-scripts train_network.py --save_state folder for the tiny LoRA run of
make_lora_train_golden.py (its committed model, initial LoRA, noise and timesteps in
tests/data/train_lora/), and the run continued from it:

1. STEPS_BEFORE (4) steps in float64 exactly as make_lora_train_golden.py (AdamW lr 1e-3,
   weight_decay 0.01, clip_grad_norm_ 1.0, constant schedule), one batch of both images per step
   (so one step per epoch).
2. The state as accelerate's save_state + kohya's save_model_hook write it, in float32 as kohya's
   network trains: state/model.safetensors (the network's state_dict: <lora>.lora_down.weight,
   .lora_up.weight, .alpha; metadata {"format": "pt"}), state/optimizer.bin (torch.save of a float32
   torch.optim.AdamW's state_dict() with kohya's two groups, text encoder then UNet, in
   LoRANetwork's module order (HF CLIPAttention registers k_proj, v_proj, q_proj, out_proj;
   original_unet registers down_blocks, up_blocks, mid_block, and attn1, ff, attn2 per transformer
   block), each module's lora_down.weight then lora_up.weight; state step = 0-d float32 tensor as torch >= 1.12 keeps it),
   state/scheduler.bin (torch.save of LambdaLR(lambda _: 1).state_dict() after 4 steps:
   last_epoch 4), state/random_states_0.pkl (python/numpy/torch RNG states, as accelerate saves
   them), state/train_state.json {"current_epoch": 4, "current_step": 4}; pytorch_model_ddp.bin, the
   network as accelerate saves it with safe_serialization=False under DDP ("module." keys); state8bit/,
   the folder with an AdamW8bit optimizer.bin in bitsandbytes' layout (arbitrary states) and names.txt
   (kohya's optimizer index -> parameter name); optimizer_sgd.bin, a torch SGD (nesterov, momentum
   0.9) state_dict with arbitrary momentum buffers; state_sdxl/ (see sdxl_state()).
3. The continuation: the float32 state widened to float64, STEPS_AFTER (6) more steps with the
   golden noise/timesteps of steps 5..10: golden.safetensors holds loss [6], grad_norm [6];
   lora_final.safetensors the LoRA after step 10 (F32).
"""
import json
import os
import random
import struct
import sys
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_clip_golden as CG  # noqa: E402
import make_lora_train_golden as MG  # noqa: E402
import make_unet_golden as UG  # noqa: E402
import make_optim8bit_golden as G8  # noqa: E402
from make_ti_train_golden import read_st  # noqa: E402

SRC = os.path.join(HERE, "..", "..", "data", "train_lora")
OUT = os.path.join(HERE, "..", "..", "data", "train_lora_kohya")
STEPS_BEFORE, STEPS_AFTER = 4, 6
B = MG.B


def write_st(path, tensors, metadata):
    """As safetensors.torch.save_file: keys sorted, F32 here, __metadata__ first."""
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for n in sorted(tensors):
        t = tensors[n].detach().to(torch.float32).contiguous()
        b = t.numpy().tobytes()
        header[n] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = read_st(os.path.join(SRC, "model.safetensors"))
    init = read_st(os.path.join(SRC, "lora_init.safetensors"))
    unet = UG.UNetModel(**MG.UNET).double()
    unet.load_state_dict({k[len("model.diffusion_model."):]: v for k, v in model.items()
                          if k.startswith("model.diffusion_model.")})
    te = CG.CLIPTextModel(MG.WIDTH, MG.LAYERS, MG.HEADS, CG.quick_gelu).double()
    missing, unexpected = te.load_state_dict({k[len("cond_stage_model.transformer."):]: v for k, v in model.items()
                                              if k.startswith("cond_stage_model.transformer.")}, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    for p in list(unet.parameters()) + list(te.parameters()):
        p.requires_grad_(False)

    # the LoRA modules in the reference's order (as make_lora_train_golden.py), weights from lora_init
    gen = torch.Generator().manual_seed(0)
    mods = []
    for name, m in te.named_modules():
        if m.__class__.__name__ in ("CLIPAttention", "CLIPMLP"):
            for cn, c in m.named_modules():
                if isinstance(c, torch.nn.Linear):
                    mods.append(MG.LoRA(c, "lora_te_" + (name + "." + cn).replace(".", "_"), gen))
    conv, resnet, layer = UG.ldm_to_diffusers_map(MG.UNET)
    for name, m in unet.named_modules():
        if isinstance(m, UG.SpatialTransformer):
            dname = None
            for sd_part, hf_part in layer:
                if (name + ".").startswith(sd_part):
                    dname = hf_part + (name + ".")[len(sd_part):]
            for cn, c in m.named_modules():
                if isinstance(c, (torch.nn.Linear, torch.nn.Conv2d)) and cn:
                    mods.append(MG.LoRA(c, "lora_unet_" + (dname + cn).replace(".", "_"), gen))
    # kohya's SD1/SD2 UNet (library/original_unet.py) registers down_blocks, up_blocks, then mid_block
    # (assigned after up_blocks was registered), so LoRANetwork lists the UNet modules in that order;
    # inside a block ldm and original_unet agree (attentions by index; attn1, ff, attn2; proj_in first).
    top = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}
    unet_mods = [m for m in mods if m.name.startswith("lora_unet_")]
    unet_mods.sort(key=lambda m: next(v for k, v in top.items() if m.name.startswith("lora_unet_" + k)))
    mods = [m for m in mods if not m.name.startswith("lora_unet_")] + unet_mods
    with torch.no_grad():
        for m in mods:
            m.down.weight.copy_(init[m.name + ".lora_down.weight"].view_as(m.down.weight))
            m.up.weight.copy_(init[m.name + ".lora_up.weight"].view_as(m.up.weight))
    n_te = sum(1 for m in mods if m.name.startswith("lora_te_"))
    params = [p for m in mods for p in (m.down.weight, m.up.weight)]   # kohya's optimizer index order

    latents = model["golden.latents"]
    ids = model["golden.ids"].to(torch.int64)
    noise = model["golden.noise"]
    ts = model["golden.t"].to(torch.int64)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    acp = torch.cumprod(1.0 - betas, dim=0)

    def step(opt, s):
        opt.zero_grad(set_to_none=True)
        x0 = latents * 0.18215
        ctx = CG.hf_encode(te, ids)
        a = acp[ts[s]].to(torch.float64)
        sa = torch.sqrt(a).view(B, 1, 1, 1)
        sb = torch.sqrt(1 - a).view(B, 1, 1, 1)
        xt = sa * x0 + sb * noise[s]
        pred = unet(xt, ts[s].to(xt.dtype), ctx)
        loss = ((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item(), gn.item()

    # 1. the kohya run up to its --save_state
    opt = torch.optim.AdamW(params, lr=MG.LR)
    for s in range(STEPS_BEFORE):
        l, g = step(opt, s)
        print(f"step {s + 1}: loss {l:.6f} grad norm {g:.6f}")
        # the committed 10-step golden is the same run (from the unrounded initial LoRA)
        ref = model["golden.loss"][s].item()
        assert abs(l - ref) <= 1e-6 * abs(ref), (l, ref)

    # 2. the state folder, float32 as kohya's network and optimizer hold it
    sd = os.path.join(OUT, "state")
    os.makedirs(sd, exist_ok=True)
    net = {}
    for m in mods:
        net[m.name + ".lora_down.weight"] = m.down.weight.detach().float()
        net[m.name + ".lora_up.weight"] = m.up.weight.detach().float()
        net[m.name + ".alpha"] = torch.tensor(MG.ALPHA, dtype=torch.float32)
    write_st(os.path.join(sd, "model.safetensors"), net, {"format": "pt"})
    p32 = [p.detach().float().clone().requires_grad_(True) for p in params]
    groups = [{"params": p32[:2 * n_te], "lr": MG.LR}, {"params": p32[2 * n_te:], "lr": MG.LR}]
    opt32 = torch.optim.AdamW(groups, lr=MG.LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt32, lambda _: 1)
    for p, q in zip(params, p32):
        st = opt.state[p]
        opt32.state[q] = {"step": torch.tensor(float(st["step"])), "exp_avg": st["exp_avg"].float(),
                          "exp_avg_sq": st["exp_avg_sq"].float()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(STEPS_BEFORE):
            sched.step()
    torch.save(opt32.state_dict(), os.path.join(sd, "optimizer.bin"))
    torch.save(sched.state_dict(), os.path.join(sd, "scheduler.bin"))
    torch.save({"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, os.path.join(sd, "random_states_0.pkl"))
    with open(os.path.join(sd, "train_state.json"), "w") as f:
        json.dump({"current_epoch": STEPS_BEFORE, "current_step": STEPS_BEFORE}, f)

    # 2a. the network as accelerate saves it with safe_serialization=False under DistributedDataParallel:
    # pytorch_model.bin, torch.save of the wrapped model's state_dict ("module." keys); the CLI test puts
    # it in a copy of the folder in place of model.safetensors
    torch.save({"module." + k: v for k, v in net.items()}, os.path.join(OUT, "pytorch_model_ddp.bin"))

    # 2b. the same state as bitsandbytes' AdamW8bit (min_8bit_size=256) would hold it: Optimizer2State's
    # state_dict layout (state1/state2 uint8 codes shaped like the parameter, absmax1/absmax2 float32 per
    # 256-element block, the shared qmap1/qmap2 dynamic maps, step a Python int) for tensors of 256
    # elements or more, float32 state1/state2 below; arbitrary codes (no bnb here): the C test checks
    # that every array lands, byte for byte, on the parameter kohya's index names
    s8 = os.path.join(OUT, "state8bit")
    os.makedirs(s8, exist_ok=True)
    for f in ("model.safetensors", "scheduler.bin", "train_state.json"):
        with open(os.path.join(sd, f), "rb") as a, open(os.path.join(s8, f), "wb") as b:
            b.write(a.read())
    q1, q2 = (torch.from_numpy(G8.create_dynamic_map_torch(s)) for s in (True, False))
    g8 = torch.Generator().manual_seed(8)
    st8 = {}
    for i, p in enumerate(params):
        n = p.numel()
        if n >= 256:
            nb = (n + 255) // 256
            st8[i] = {"step": STEPS_BEFORE, "state1": torch.randint(0, 256, p.shape, generator=g8, dtype=torch.uint8),
                      "state2": torch.randint(0, 256, p.shape, generator=g8, dtype=torch.uint8),
                      "qmap1": q1, "qmap2": q2, "absmax1": torch.rand(nb, generator=g8) * 1e-3,
                      "absmax2": torch.rand(nb, generator=g8) * 1e-6}
        else:
            st8[i] = {"step": STEPS_BEFORE, "state1": torch.randn(p.shape, generator=g8).float() * 1e-3,
                      "state2": torch.rand(p.shape, generator=g8).float() * 1e-6}
    pg = [{"lr": MG.LR, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "initial_lr": MG.LR,
           "params": list(range(0, 2 * n_te))},
          {"lr": MG.LR, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "initial_lr": MG.LR,
           "params": list(range(2 * n_te, len(params)))}]
    torch.save({"state": st8, "param_groups": pg}, os.path.join(s8, "optimizer.bin"))
    names = [m.name + k for m in mods for k in (".lora_down.weight", ".lora_up.weight")]
    with open(os.path.join(s8, "names.txt"), "w") as f:   # kohya's optimizer index -> parameter (for the test)
        f.write("\n".join(names) + "\n")

    # 2c. optimizer_sgd.bin: a torch.optim.SGD (kohya's SGDNesterov: momentum 0.9, nesterov) state_dict
    # with arbitrary momentum buffers, kohya's groups and order (the C test puts it in a copy of state8bit/)
    osgd = torch.optim.SGD([{"params": p32[:2 * n_te], "lr": MG.LR}, {"params": p32[2 * n_te:], "lr": MG.LR}],
                           lr=MG.LR, momentum=0.9, nesterov=True)
    torch.optim.lr_scheduler.LambdaLR(osgd, lambda _: 1)
    gs = torch.Generator().manual_seed(5)
    for q in p32:
        osgd.state[q] = {"momentum_buffer": torch.randn(q.shape, generator=gs) * 1e-3}
    torch.save(osgd.state_dict(), os.path.join(OUT, "optimizer_sgd.bin"))

    # 3. continue from the float32 state, widened
    with torch.no_grad():
        for p, q in zip(params, p32):
            p.copy_(q.double())
    opt = torch.optim.AdamW(params, lr=MG.LR)
    for p, q in zip(params, p32):
        st = opt32.state[q]
        opt.state[p] = {"step": st["step"].clone(), "exp_avg": st["exp_avg"].double(),
                        "exp_avg_sq": st["exp_avg_sq"].double()}
    losses, norms = [], []
    for s in range(STEPS_BEFORE, STEPS_BEFORE + STEPS_AFTER):
        l, g = step(opt, s)
        losses.append(l)
        norms.append(g)
        print(f"step {s + 1} (resumed): loss {l:.6f} grad norm {g:.6f}")
    UG.write_safetensors(os.path.join(OUT, "golden.safetensors"),
                         {"golden.loss": torch.tensor(losses, dtype=torch.float64),
                          "golden.grad_norm": torch.tensor(norms, dtype=torch.float64)})
    fin = {}
    for m in mods:
        fin[m.name + ".lora_down.weight"] = m.down.weight.detach()
        fin[m.name + ".lora_up.weight"] = m.up.weight.detach()
        fin[m.name + ".alpha"] = torch.tensor(MG.ALPHA, dtype=torch.float64)
    UG.write_safetensors(os.path.join(OUT, "lora_final.safetensors"), fin)
    print(len(mods), "modules,", len(params), "parameters,", n_te, "text-encoder modules")


def sdxl_state():
    """state_sdxl/: an AdamW state (arbitrary moments, step 3) for the tiny SDXL LoRA of
    make_lora_sdxl_train_golden.py in kohya's index order: TE1 then TE2 modules (k, v, q, out, fc1,
    fc2 per layer), then the UNet's in sdxl_original_unet's order (input_blocks, middle_block,
    output_blocks; attn1, ff, attn2); model.safetensors = that run's lora_init.safetensors;
    names.txt = kohya's optimizer index -> parameter name."""
    import make_lora_sdxl_train_golden as SX
    gen = torch.Generator().manual_seed(1)
    unet = SX.XG.SDXLUNetModel(**SX.UNET).double()
    te1 = CG.CLIPTextModel(SX.W1, SX.L1, SX.H1, CG.quick_gelu).double()
    te2 = SX.SC.CLIPTextModelWithProjection(SX.W2, SX.L2, SX.H2, SX.P2).double()
    mods = []
    for prefix, te in (("lora_te1_", te1), ("lora_te2_", te2)):
        for name, m in te.named_modules():
            if m.__class__.__name__ in ("CLIPAttention", "CLIPMLP"):
                for cn, c in m.named_modules():
                    if isinstance(c, torch.nn.Linear):
                        mods.append(SX.LoRA(c, prefix + (name + "." + cn).replace(".", "_"), gen))
    n_te = len(mods)
    for name, m in unet.named_modules():
        if isinstance(m, UG.SpatialTransformer):
            for cn, c in m.named_modules():
                if isinstance(c, torch.nn.Linear) and cn:
                    mods.append(SX.LoRA(c, "lora_unet_" + (name + "." + cn).replace(".", "_"), gen))
    init = read_st(os.path.join(HERE, "..", "..", "data", "train_lora_sdxl", "lora_init.safetensors"))
    names = [m.name + k for m in mods for k in (".lora_down.weight", ".lora_up.weight")]
    assert sorted(names + [m.name + ".alpha" for m in mods]) == sorted(init), "module sets differ"
    sd = os.path.join(OUT, "state_sdxl")
    os.makedirs(sd, exist_ok=True)
    with open(os.path.join(HERE, "..", "..", "data", "train_lora_sdxl", "lora_init.safetensors"), "rb") as a, \
            open(os.path.join(sd, "model.safetensors"), "wb") as b:
        b.write(a.read())
    p32 = [init[n].float().reshape(p.shape).clone().requires_grad_(True)
           for n, p in zip(names, [p for m in mods for p in (m.down.weight, m.up.weight)])]
    opt = torch.optim.AdamW([{"params": p32[:2 * n_te], "lr": SX.LR}, {"params": p32[2 * n_te:], "lr": SX.LR}],
                            lr=SX.LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1)
    g = torch.Generator().manual_seed(3)
    for q in p32:
        opt.state[q] = {"step": torch.tensor(3.0), "exp_avg": torch.randn(q.shape, generator=g) * 1e-3,
                        "exp_avg_sq": torch.rand(q.shape, generator=g) * 1e-6}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            sched.step()
    torch.save(opt.state_dict(), os.path.join(sd, "optimizer.bin"))
    torch.save(sched.state_dict(), os.path.join(sd, "scheduler.bin"))
    with open(os.path.join(sd, "train_state.json"), "w") as f:
        json.dump({"current_epoch": 3, "current_step": 3}, f)
    with open(os.path.join(sd, "names.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print("SDXL:", len(mods), "modules,", n_te, "text-encoder modules")


if __name__ == "__main__":
    main()
    sdxl_state()
