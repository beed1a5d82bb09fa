#!/usr/bin/env python3
"""The work of bench_cuda_unet.c in PyTorch on the same GPU, for ratios (run on a GPU machine with
PyTorch 2.x; not part of `make bench`, which runs on the CPU machine).

The SD1.5 UNet as tests/golden/gen/make_unet_golden.py transcribes ldm's UNetModel, random weights,
x Bx4x64x64, 77 context tokens of 768, batch 1, 4 and 16:
  cuda_unet_sd15_fwd    forward under torch.no_grad()
  cuda_unet_sd15_step   forward + backward with every weight frozen and the gradient flowing to the
                        input (the LoRA path through the base model), as bench_cuda_unet's step
  cuda_unet_sd15_full_step  forward + backward with every weight trainable (fp32 master weights;
                        gradients reset to None first, as optimizer.zero_grad(set_to_none=True);
                        no optimizer), as bench_cuda_unet's full step
Variants (the "variant" field):
  fp32       float32, TF32 off (cuBLAS/cuDNN full fp32, as our CUDA backend computes)
  fp32_sdpa  the same with attention through F.scaled_dot_product_attention (PyTorch's fused
             attention kernels, what kohya-ss/sd-scripts uses with --sdpa)
  bf16_sdpa  autocast bf16 + SDPA (kohya's usual --mixed_precision bf16 --sdpa; our backend has no
             bf16 compute yet, so this is the target, not a like-for-like ratio)
One JSON object per line: {"name","variant","batch","torch_seconds" (median of BENCH_RUNS after two
warm-ups, each run ended by torch.cuda.synchronize()),"samples_per_s","peak_mib"}.
  BENCH_RUNS (default 3), BENCH_BATCHES (default "1,4,16"), BENCH_VARIANTS (default all three).
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "gen"))
import make_unet_golden as G  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
BATCHES = [int(b) for b in os.environ.get("BENCH_BATCHES", "1,4,16").split(",")]
VARIANTS = os.environ.get("BENCH_VARIANTS", "fp32,fp32_sdpa,bf16_sdpa").split(",")


def sdpa_forward(self, x, context=None):
    h = self.heads
    q = self.to_q(x)
    context = context if context is not None else x
    k, v = self.to_k(context), self.to_v(context)
    b, n, hd = q.shape
    q, k, v = (t.reshape(b, t.shape[1], h, hd // h).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, n, hd))


def timed(fn):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cfg = dict(in_channels=4, model_channels=320, out_channels=4, num_res_blocks=2, attention_resolutions=[4, 2, 1],
               channel_mult=[1, 2, 4, 4], num_heads=8, num_head_channels=-1, transformer_depth=1, context_dim=768,
               use_linear_in_transformer=False)
    dev = torch.device("cuda")
    torch.set_default_device(dev)   # the transcription makes its timestep frequencies with torch.arange
    model = G.UNetModel(**cfg).float().eval().to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    plain = G.CrossAttention.forward
    for variant in VARIANTS:
        G.CrossAttention.forward = sdpa_forward if variant.endswith("sdpa") else plain
        amp = variant.startswith("bf16")
        for b in BATCHES:
            x = torch.randn(b, 4, 64, 64, device=dev)
            c = torch.randn(b, 77, 768, device=dev)
            t = torch.full((b,), 500.0, device=dev)
            dy = torch.randn(b, 4, 64, 64, device=dev) * 1e-3

            def fwd():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    model(x, t, c)

            def step():
                xg = x.clone().requires_grad_(True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    y = model(xg, t, c)
                y.float().backward(dy)

            def full_step():
                for p in model.parameters():
                    p.requires_grad_(True)
                    p.grad = None
                try:
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        y = model(x, t, c)
                    y.float().backward(dy)
                finally:
                    for p in model.parameters():
                        p.requires_grad_(False)
                        p.grad = None

            for name, fn in (("cuda_unet_sd15_fwd", fwd), ("cuda_unet_sd15_step", step),
                             ("cuda_unet_sd15_full_step", full_step)):
                torch.cuda.reset_peak_memory_stats()
                try:
                    s = timed(fn)
                except torch.cuda.OutOfMemoryError:
                    print(json.dumps({"name": name, "variant": variant, "batch": b, "error": "out of memory"}))
                    torch.cuda.empty_cache()
                    continue
                print(json.dumps({"name": name, "variant": variant, "batch": b, "torch_seconds": round(s, 5),
                                  "samples_per_s": round(b / s, 2),
                                  "peak_mib": round(torch.cuda.max_memory_allocated() / 2 ** 20)}))
                sys.stdout.flush()
    print(json.dumps({"name": "torch_cuda", "device": torch.cuda.get_device_name(0), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
