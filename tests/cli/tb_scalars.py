#!/usr/bin/env python3
"""Print the scalars of TensorBoard event files: tb_scalars.py GLOB [TAG] -> "tag step value" lines
(only TAG's when given), in file and record order. Standard library only (a minimal TFRecord and
protobuf reader: Event.step = field 2, Event.summary = 5, Summary.value = 1, Value.tag = 1,
Value.simple_value = 2)."""
import glob
import struct
import sys


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7f) << s
        s += 7
        if c < 0x80:
            return v, i


def fields(b):
    i, out = 0, []
    while i < len(b):
        k, i = varint(b, i)
        f, w = k >> 3, k & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise SystemExit('wire type %d' % w)
        out.append((f, v))
    return out


for path in sorted(glob.glob(sys.argv[1])):
    b = open(path, 'rb').read()
    i = 0
    while i < len(b):
        n = struct.unpack('<Q', b[i:i + 8])[0]
        ev = b[i + 12:i + 12 + n]
        i += 16 + n
        step = dict(f for f in fields(ev) if f[0] == 2).get(2, 0)
        for f, summ in fields(ev):
            if f != 5:
                continue
            for g, val in fields(summ):
                vals = dict(fields(val))
                if g != 1 or 2 not in vals:
                    continue
                tag = vals.get(1, b'').decode()
                if len(sys.argv) < 3 or tag == sys.argv[2]:
                    print(tag, step, '%.6g' % struct.unpack('<f', vals[2])[0])
