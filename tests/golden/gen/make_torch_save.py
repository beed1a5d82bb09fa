#!/usr/bin/python3
"""Golden pickles for tests/unit/test_torch_save.c (run once by hand with Debian's /usr/bin/python3
and python3-torch 1.13; outputs are committed, all small).

Writes tests/data/torch_save/<case>.pkl: the data.pkl member of torch.save(<dict>) for
  emb      {"emb_params": arange(6) f32 [2, 3]}               (sd-train --method ti's .pt)
  ckpt     {"state_dict": {tensors of every dtype and 0-4 dims, an empty one}, "epoch": 3,
           "global_step": 70000}                               (sd-train --method db/ft's .ckpt)
  many     {"state_dict": {40 tensors: memo indexes past 255}, "ints": {1000 ints: a full
           SETITEMS batch}, "one": {"x": 1}, "none": {}, big and negative ints}
The C test builds the same dicts with io/torch_save.h and compares the bytes.
"""
import io
import os
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "torch_save")


def ar(n, shape, dt):
    return torch.arange(n, dtype=torch.float32).reshape(shape).to(dt)


def cases():
    yield "emb", {"emb_params": ar(6, (2, 3), torch.float32)}
    sd = {
        "model.a.weight": ar(24, (2, 3, 4), torch.float32),
        "model.b.bias": ar(5, (5,), torch.float16),
        "model.c": ar(6, (2, 3), torch.bfloat16),
        "model.conv.weight": ar(6, (2, 1, 1, 3), torch.float32),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0),
        "steps": torch.arange(3, dtype=torch.int64),
        "d": ar(2, (2,), torch.float64),
        "i32": torch.arange(2, dtype=torch.int32),
        "i16": torch.arange(2, dtype=torch.int16),
        "i8": torch.arange(2, dtype=torch.int8),
        "u8": torch.arange(2, dtype=torch.uint8),
        "b": torch.tensor([True, False]),
        "model.b.weight": ar(5, (5,), torch.float16),
    }
    yield "ckpt", {"state_dict": sd, "epoch": 3, "global_step": 70000}
    many = {"t%d" % i: ar(i + 1, (i + 1,), torch.float32) for i in range(40)}
    ints = {"k%d" % i: i * 1000 - 500000 for i in range(1000)}
    yield "many", {"state_dict": many, "ints": ints, "one": {"x": 1}, "none": {},
                   "big": 2 ** 40, "neg": -5, "min": -2 ** 63, "max": 2 ** 63 - 1, "m32": -2 ** 31,
                   "m32b": -2 ** 31 - 1, "p32": 2 ** 31, "u16": 65535, "u16b": 65536}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, obj in cases():
        buf = io.BytesIO()
        torch.save(obj, buf)
        z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        with open(os.path.join(OUT, name + ".pkl"), "wb") as f:
            f.write(z.read(pkl))


if __name__ == "__main__":
    main()
