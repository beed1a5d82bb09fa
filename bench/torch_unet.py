#!/usr/bin/python3
"""The same work as bench_unet.c in PyTorch (Debian's python3-torch 1.13, CPU), for ratios.

The network is the ldm UNetModel transcription of tests/golden/gen/make_unet_golden.py (the real
ldm code path: einsum attention) on the 104 M-parameter configuration (model_channels 128, mult
1,2,4, 2 res blocks, attention at all levels, 8 heads, context 768), x 1x4x64x64, 77 context tokens.
  unet_104m_fwd        forward under torch.no_grad()
  unet_104m_lora_step  forward + backward with every weight frozen (requires_grad False) and the
                       gradient flowing to the input latents (the LoRA path through the base model)
  unet_104m_full_step  forward + backward with every weight trainable (a full fine-tune step without
                       the optimizer; gradients reset to None before each step, as
                       optimizer.zero_grad(set_to_none=True) does)
Prints one JSON object per line: {"name", "torch_seconds" (median of BENCH_RUNS after one warm-up),
"torch_min_seconds", "torch_cpu_seconds", "torch_peak_rss_mib", "torch_threads"}. SD_THREADS threads (default all CPUs),
BENCH_FILTER selects by name, BENCH_UNET_SD15=1 adds the SD1.5 shape.
Run with /usr/bin/python3:  /usr/bin/python3 bench/torch_unet.py
(A memory-retaining allocator changes PyTorch's numbers a lot here: compare also with
LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true.)
"""
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "gen"))
from make_unet_golden import UNetModel  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
THREADS = int(os.environ.get("SD_THREADS", "0")) or os.cpu_count()
FILTER = os.environ.get("BENCH_FILTER", "")
torch.set_num_threads(THREADS)
torch.manual_seed(0)


def timeit(name, fn):
    if FILTER and FILTER not in name:
        return
    fn()
    ts, cs = [], []
    for _ in range(RUNS):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"name": name, "torch_seconds": round(statistics.median(ts), 4),
                      "torch_min_seconds": round(min(ts), 4),
                      "torch_cpu_seconds": round(statistics.median(cs), 4), "torch_peak_rss_mib": round(rss),
                      "torch_threads": THREADS}))
    sys.stdout.flush()


def bench(tag, cfg, hw=64, seq=77):
    names = [f"unet_{tag}_fwd", f"unet_{tag}_lora_step", f"unet_{tag}_full_step"]
    if FILTER and not any(FILTER in n for n in names):
        return
    model = UNetModel(**cfg).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 4, hw, hw)
    c = torch.randn(1, seq, cfg["context_dim"])
    t = torch.tensor([500.0])
    dy = torch.randn(1, 4, hw, hw) * 1e-3

    def fwd():
        with torch.no_grad():
            model(x, t, c)

    def step():
        xg = x.clone().requires_grad_(True)
        y = model(xg, t, c)
        y.backward(dy)

    timeit(names[0], fwd)
    timeit(names[1], step)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)

    def full_step():
        for p in params:
            p.grad = None
        y = model(x, t, c)
        y.backward(dy)

    timeit(names[2], full_step)


def main():
    small = dict(in_channels=4, model_channels=128, out_channels=4, num_res_blocks=2,
                 attention_resolutions=[1, 2, 4], channel_mult=[1, 2, 4], num_heads=8, num_head_channels=-1,
                 transformer_depth=1, context_dim=768, use_linear_in_transformer=False)
    bench("104m", small)
    if os.environ.get("BENCH_UNET_SD15") == "1":
        sd15 = dict(small, model_channels=320, channel_mult=[1, 2, 4, 4], attention_resolutions=[4, 2, 1])
        bench("sd15", sd15)


if __name__ == "__main__":
    main()
