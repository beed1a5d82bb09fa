#!/usr/bin/python3
"""The VAE encode of sd-encode-latents in PyTorch (Debian's python3-torch 1.13), for
bench/encode_latents.sh.

  torch_vae.py VAE.safetensors SIZE RUNS THREADS

Builds ldm's Encoder + quant_conv (the transcription in tests/golden/gen/make_vae_golden.py, the
same code kohya-ss/sd-scripts runs through diffusers' AutoencoderKL at this shape), loads the
encoder weights of VAE.safetensors (first_stage_model.* keys, F32), and times one image
SIZE x SIZE per run (wall and process CPU time): encode + posterior sample (mean + std * randn), under torch.no_grad(), after
one warm-up run. Prints one JSON line: {"name": "torch_vae_encode", "size": ..., "threads": ...,
"seconds": median, "min": ..., "per_second": 1 / median, "runs": [...]}.
"""
import importlib.util
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("vae_golden", os.path.join(here, "..", "tests", "golden", "gen",
                                                                         "make_vae_golden.py"))
vg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vg)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np.float32).reshape(v["shape"]).copy())
    return out


class EncoderKL(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = vg.Encoder(ch=cfg["ch"], ch_mult=tuple(cfg["ch_mult"]), num_res_blocks=cfg["num_res_blocks"],
                                  attn_resolutions=[], in_channels=3, resolution=256, z_channels=4, double_z=True)
        self.quant_conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def main():
    path, size, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    sd = load_safetensors(path)
    cfg = {"ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2}
    cfg_path = os.path.splitext(path)[0] + ".json"
    if len(sys.argv) > 5:
        cfg_path = sys.argv[5]
    if os.path.exists(cfg_path):
        cfg.update(json.load(open(cfg_path)).get("vae", {}))
    m = EncoderKL(cfg)
    pre = "first_stage_model."
    want = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre + "encoder.") or k.startswith(pre + "quant_conv.")}
    m.load_state_dict(want, strict=True)
    m.eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    times, cpu = [], []
    with torch.no_grad():
        m(x)
        for _ in range(runs):
            t, c = time.perf_counter(), time.process_time()
            z = m(x)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    assert torch.isfinite(z).all()
    times.sort()
    cpu.sort()
    med = times[len(times) // 2]
    print(json.dumps({"name": "torch_vae_encode", "size": size, "threads": threads, "seconds": round(med, 4),
                      "min": round(times[0], 4), "cpu_seconds": round(cpu[len(cpu) // 2], 4), "per_second": round(1 / med, 4),
                      "runs": [round(t, 4) for t in times]}))


if __name__ == "__main__":
    main()
