"""Safetensors reader for the embedded Python of tests/cli/*.sh (numpy: run by /usr/bin/python3).

A script's snippet imports it with
    import os, sys; sys.path.insert(0, os.environ['ST_LOAD_DIR']); from st_load import load
(t_init of tests/cli/lib.sh exports ST_LOAD_DIR and PYTHONDONTWRITEBYTECODE).
  read(p)          -> (header without __metadata__, metadata dict, data bytes after the header)
  array(h, d, k)   -> tensor k as a numpy array of its shape (F32, F16, I64; BF16 widened to float32)
  load(p, dtype)   -> (header, metadata, get): get(k) is array(h, d, k).astype(dtype) (default float64)
"""
import json
import struct

import numpy as np

_DT = {'F32': np.float32, 'F16': np.float16, 'I64': np.int64}


def read(p):
    with open(p, 'rb') as f:
        b = f.read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    m = h.pop('__metadata__', {})
    return h, m, b[8 + n:]


def array(h, d, k):
    t = h[k]
    a, z = t['data_offsets']
    if t['dtype'] == 'BF16':
        v = (np.frombuffer(d[a:z], dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        v = np.frombuffer(d[a:z], dtype=_DT[t['dtype']])
    return v.reshape(t['shape'])


def load(p, dtype=np.float64):
    h, m, d = read(p)
    return h, m, lambda k: array(h, d, k).astype(dtype)
