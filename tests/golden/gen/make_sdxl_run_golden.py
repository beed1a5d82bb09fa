#!/usr/bin/python3
"""Golden output of `sd-model run unet --vector` on the tiny SDXL single file that tests/cli/sd_model.sh
builds (examples/tiny_model.c with examples/tiny_sdxl.toml, seed 5: deterministic), for that test.
Run once by hand with Debian's /usr/bin/python3 (python3-torch); the output is committed:

  /usr/bin/python3 tests/golden/gen/make_sdxl_run_golden.py XL.safetensors

where XL.safetensors is `tiny_model model XL.safetensors examples/tiny_sdxl.toml 5`. The UNet is the
plain-PyTorch sgm transcription of make_unet_sdxl_golden.py (SDXLUNetModel) in float64, loaded with
the file's model.diffusion_model.* tensors; the inputs are float32 values:
  golden.x [2,4,16,16], golden.t [2], golden.context [2,77,64], golden.vec [2,1552], golden.y.
Written to tests/data/golden/sdxl/golden_sdxl_tiny_unet.safetensors.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_unet_golden import write_safetensors  # noqa: E402
from make_unet_sdxl_golden import SDXLUNetModel  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "golden", "sdxl",
                   "golden_sdxl_tiny_unet.safetensors")
# examples/tiny_sdxl.toml's UNet
CFG = dict(in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1, attention_resolutions=[2],
           channel_mult=[1, 2], num_head_channels=16, transformer_depth=[0, 2], transformer_depth_middle=2,
           context_dim=64, adm_in_channels=1552)


def read_safetensors(path, prefix):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dt = {"F32": np.float32, "F16": np.float16, "BF16": None}
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or not k.startswith(prefix):
            continue
        a, b = v["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dt[v["dtype"]]).reshape(v["shape"])
        out[k[len(prefix):]] = torch.from_numpy(arr.astype(np.float64))
    return out


def arr(shape, scale, phase):
    n = int(np.prod(shape))
    return torch.from_numpy((scale * np.sin(0.37 * np.arange(n) + phase)).astype(np.float32).reshape(shape))


def main():
    sd = read_safetensors(sys.argv[1], "model.diffusion_model.")
    model = SDXLUNetModel(**CFG).double()
    missing, unexpected = model.load_state_dict(sd, strict=True), None
    x, t, c, vec = arr((2, 4, 16, 16), 1, 0.1), arr((2,), 300, 0.5), arr((2, 77, 64), 1, 0.7), arr((2, 1552), 1, 0.2)
    with torch.no_grad():
        y = model(x.double(), t, c.double(), vec.double())
    n = write_safetensors(OUT, {"golden.x": x, "golden.t": t, "golden.context": c, "golden.vec": vec, "golden.y": y})
    print(f"y {tuple(y.shape)} max|y| {y.abs().max().item():.4g}, {n} bytes", missing, unexpected)


if __name__ == "__main__":
    sys.exit(main())
