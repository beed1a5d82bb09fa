#!/usr/bin/python3
"""Golden safetensors files for tests/unit/test_safetensors.c (run once by hand with Debian's
/usr/bin/python3; needs only json, struct and numpy; outputs are committed).

Writes tests/data/safetensors/:
  dtypes.safetensors  one tensor per dtype (+ a scalar, an empty tensor and metadata), laid out
                      exactly as huggingface safetensors' serializer does: tensors sorted by dtype
                      (descending enum order) then name, compact JSON (dtype, shape, data_offsets),
                      "__metadata__" first, header padded with spaces to a multiple of 8.
  dtypes.expect       for every tensor: its dtype and shape, then the correctly rounded f32, f16 and
                      bf16 bit patterns of each element (computed exactly with fractions, independent
                      of the C code), "nan" where the value is NaN.
"""
import json
import math
import os
import struct
import sys
from fractions import Fraction

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "safetensors")

# The reference's Dtype enum order (increasing alignment) and element sizes.
ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32",
         "F32", "F64", "I64", "U64"]
SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
        "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
INF = float("inf")
NAN = float("nan")


def round_bits(x, p, emin, emax):
    """Bits of the IEEE binary format (p-bit significand, exponents emin..emax) nearest to x
    (round half to even, overflow to inf). x is a float (inf/nan allowed), int or Fraction."""
    ebits = {11: 5, 8: 8, 24: 8}[p]
    bias = (1 << (ebits - 1)) - 1
    if isinstance(x, float) and math.isnan(x):
        return None
    neg = (x < 0) or (isinstance(x, float) and math.copysign(1.0, x) < 0)
    sign = 1 << (ebits + p - 1)
    if isinstance(x, float) and math.isinf(x):
        return (sign if neg else 0) | (((1 << ebits) - 1) << (p - 1))
    a = abs(Fraction(x))
    if a == 0:
        return sign if neg else 0
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, emin)
    ulp = Fraction(2) ** (e - (p - 1))
    q = a / ulp
    n = q.numerator // q.denominator
    rem = q - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2 == 1):
        n += 1
    r = n * ulp
    if r == 0:
        return sign if neg else 0
    if r >= Fraction(2) ** (emax + 1):
        return (sign if neg else 0) | (((1 << ebits) - 1) << (p - 1))
    e2 = r.numerator.bit_length() - r.denominator.bit_length()
    if Fraction(2) ** e2 > r:
        e2 -= 1
    if e2 < emin:   # subnormal
        mant = r / Fraction(2) ** (emin - (p - 1))
        bits = int(mant)
    else:
        mant = r / Fraction(2) ** (e2 - (p - 1)) - (1 << (p - 1))
        bits = ((e2 + bias) << (p - 1)) | int(mant)
    return (sign if neg else 0) | bits


def f32_bits(x): return round_bits(x, 24, -126, 127)
def f16_bits(x): return round_bits(x, 11, -14, 15)
def bf16_bits(x): return round_bits(x, 8, -126, 127)


def e5m2_value(b):
    s = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 2) & 31, b & 3
    if e == 31:
        return NAN if m else s * INF
    if e == 0:
        return s * m * 2.0 ** -16
    return s * (1 + m / 4) * 2.0 ** (e - 15)


def e4m3_value(b):
    s = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 15, b & 7
    if e == 15 and m == 7:
        return NAN
    if e == 0:
        return s * m * 2.0 ** -9
    return s * (1 + m / 8) * 2.0 ** (e - 7)


def bf16_value(bits):
    return struct.unpack("<f", struct.pack("<I", bits << 16))[0]


# name -> (dtype, shape, raw bytes, exact values)
tensors = {}


def add(name, dtype, shape, raw, values):
    assert len(raw) == SIZE[dtype] * int(np.prod(shape, dtype=np.int64)), name
    tensors[name] = (dtype, list(shape), raw, values)


def add_np(name, dtype, npdt, shape, values):
    arr = np.array(values, dtype=npdt).reshape(shape)
    add(name, dtype, shape, arr.astype(np.dtype(npdt).newbyteorder("<")).tobytes(),
        [v.item() if hasattr(v, "item") else v for v in arr.reshape(-1)])


add_np("bool", "BOOL", np.bool_, [3], [True, False, True])
tensors["bool"] = tensors["bool"][:3] + ([1, 0, 1],)
add_np("u8", "U8", np.uint8, [3], [0, 1, 255])
add_np("i8", "I8", np.int8, [3], [-128, -1, 127])
e5 = [0x3C, 0xC0, 0x7C, 0x01, 0x7B, 0x7E, 0x80]
add("f8_e5m2", "F8_E5M2", [7], bytes(e5), [e5m2_value(b) for b in e5])
e4 = [0x38, 0xB0, 0x7E, 0x01, 0x7F, 0x77, 0xFF, 0x80]
add("f8_e4m3", "F8_E4M3", [2, 4], bytes(e4), [e4m3_value(b) for b in e4])
add_np("i16", "I16", np.int16, [3], [-32768, 0, 32767])
add_np("u16", "U16", np.uint16, [3], [0, 65535, 12345])
add_np("f16", "F16", np.float16, [2, 4], [1.0, -2.5, 65504.0, 2.0 ** -24, 0.1, INF, -0.0, NAN])
bf = [bf16_bits(1.0), bf16_bits(math.pi), 0x7F7F, 0x0001, 0xFF80, 0x7FC0, bf16_bits(-1e-3)]
add("bf16", "BF16", [7], struct.pack("<7H", *bf), [bf16_value(b) for b in bf])
add_np("i32", "I32", np.int32, [5], [-2 ** 31, 2 ** 24 + 1, 2 ** 31 - 1, 7, 2 ** 24 + 2 ** 16 + 1])
add_np("u32", "U32", np.uint32, [3], [2 ** 32 - 1, 2 ** 24 + 1, 3])
add_np("f32", "F32", np.float32, [8],
       [math.pi, 1e-45, 3.4e38, 2.0 ** -25, 1.5 * 2.0 ** -25, 65519.0, -INF, NAN])
# F64 values chosen so that rounding through f32 first would give the wrong f16/bf16 result.
add_np("f64", "F64", np.float64, [2, 4],
       [1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -8 + 2.0 ** -40, 1e300, 5e-324, -0.1, NAN,
        -(1 + 2.0 ** -24 + 2.0 ** -50), 65520.0 - 2.0 ** -30])
add_np("i64", "I64", np.int64, [5], [2 ** 24 + 2 ** 16 + 1, -(2 ** 53 + 1), 2 ** 63 - 1, -2 ** 63, 0])
add_np("u64", "U64", np.uint64, [3], [2 ** 64 - 1, 2 ** 24 + 2 ** 16 + 1, 1])
add_np("scalar", "F32", np.float32, [], [42.5])
add_np("empty", "F16", np.float16, [0, 3], [])
add_np("model.diffusion_model.input_blocks.0.0.weight", "F16", np.float16, [2, 2, 1, 1],
       [0.5, -0.25, 1024.0, 1.0 / 3.0])

metadata = {"format": "pt", "ss_note": "\u00fcn\u00efc\u00f8d\u00e9 \"q\" \\ line\nbreak\ttab\x01 \U0001F600",
            "ss_network_dim": "4"}

# Serialize like the reference.
names = sorted(tensors, key=lambda n: (-ORDER.index(tensors[n][0]), n.encode()))
header = {"__metadata__": dict(sorted(metadata.items()))}
off = 0
for n in names:
    dt, shape, raw, _ = tensors[n]
    header[n] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
    off += len(raw)
hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
blob = struct.pack("<Q", len(hb)) + hb + b"".join(tensors[n][2] for n in names)

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "dtypes.safetensors"), "wb") as f:
    f.write(blob)


def fmt(bits, width):
    return "nan" if bits is None else "%0*x" % (width, bits)


with open(os.path.join(OUT, "dtypes.expect"), "w") as f:
    f.write("# generated by tests/golden/gen/make_safetensors.py: tensor NAME DTYPE NDIM DIMS...,\n"
            "# then f32/f16/bf16 NAME and the correctly rounded bit patterns of each element\n")
    for n in names:
        dt, shape, raw, vals = tensors[n]
        f.write("tensor %s %s %d%s\n" % (n, dt, len(shape), "".join(" %d" % d for d in shape)))
        for kind, fn, w in (("f32", f32_bits, 8), ("f16", f16_bits, 4), ("bf16", bf16_bits, 4)):
            f.write("%s %s%s\n" % (kind, n, "".join(" " + fmt(fn(v), w) for v in vals)))
print("wrote", len(blob), "bytes,", len(names), "tensors", file=sys.stderr)
