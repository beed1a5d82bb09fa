#!/usr/bin/env python3
"""float8_e4m3fn reference from the format definition (no torch: Debian's torch 1.13 has no float8).

Format: 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinity; S.1111.111 is NaN; the
largest finite value is 448 (0.1111.110). PyTorch's c10 fp8e4m3fn_from_fp32_value rounds to nearest
even as if 480 were the code after 448 (0x7f): anything that rounds to it, |x| >= 480, inf and NaN
give NaN (0x7f with the sign). Below 2^-6 the grid is m * 2^-9 (subnormals).
Imported by tests/cli/train_fp8.sh (pre-rounded model) and make_f8_golden.py."""
import math
import struct


def f32(x):
    """x rounded to float32 (as a Python float)."""
    return struct.unpack('<f', struct.pack('<f', x))[0]


def encode(x):
    """float32 value x -> e4m3fn code (0..255)."""
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    if math.isnan(x):
        return sign | 0x7f
    a = abs(x)
    if a >= 480.0:
        return sign | 0x7f
    if a < 2.0 ** -6:
        q = round(a * 512.0)          # round half to even; 8 is 2^-6, code 0x08
        return sign | q
    e = math.frexp(a)[1] - 1          # 2^e <= a < 2^(e+1)
    q = round(a * 2.0 ** (3 - e))     # 8..16, exact in float64; half to even
    code = ((e + 7) << 3) + (q - 8)
    return sign | min(code, 0x7f)


def decode(c):
    """e4m3fn code -> float value (NaN for 0x7f/0xff)."""
    s = -1.0 if c & 0x80 else 1.0
    e, m = (c >> 3) & 15, c & 7
    if e == 15 and m == 7:
        return float('nan')
    if e == 0:
        return s * m * 2.0 ** -9
    return s * (1 + m / 8.0) * 2.0 ** (e - 7)


def round_f32_list(vals):
    return [decode(encode(v)) for v in vals]


if __name__ == '__main__':
    # hand cases from the format definition
    assert encode(448.0) == 0x7e and encode(464.0) == 0x7e and encode(465.0) == 0x7f
    assert encode(480.0) == 0x7f and encode(float('inf')) == 0x7f and encode(-1e30) == 0xff
    assert encode(1e-9) == 0 and encode(-1e-9) == 0x80 and encode(2.0 ** -9) == 1
    assert encode(2.0 ** -10) == 0 and encode(3 * 2.0 ** -10) == 2 and encode(2.0 ** -6) == 8
    assert encode(1.0) == 0x38 and encode(1.0625) == 0x38 and encode(1.1875) == 0x3a
    assert math.isnan(decode(0x7f)) and decode(0x7e) == 448.0 and decode(1) == 2.0 ** -9
    print('ok')
