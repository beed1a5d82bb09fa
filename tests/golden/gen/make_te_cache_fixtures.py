#!/usr/bin/python3
"""Fixtures (tests/data/te_cache/) for tests/unit/test_te_cache.c: kohya's SDXL text-encoder cache as numpy writes it
(strategy_sdxl.SdxlTextEncoderOutputsCachingStrategy: np.savez(path, hidden_state1=...,
hidden_state2=..., pool2=...)), plus a savez_compressed (deflate) copy and one missing pool2.
Values v[k] = (k % 97 - 48) / 16 (exact in float32), recomputed by the test."""
import os

import numpy as np

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "te_cache")


def vals(n, off):
    k = np.arange(n) + off
    return ((k % 97 - 48) / 16).astype(np.float32)


h1 = vals(3 * 4, 0).reshape(3, 4)
h2 = vals(3 * 5, 100).reshape(3, 5)
p2 = vals(6, 200)
np.savez(os.path.join(D, "img_te_outputs.npz"), hidden_state1=h1, hidden_state2=h2, pool2=p2)
np.savez_compressed(os.path.join(D, "deflate_te_outputs.npz"), hidden_state1=h1, hidden_state2=h2, pool2=p2)
np.savez(os.path.join(D, "nopool_te_outputs.npz"), hidden_state1=h1, hidden_state2=h2)
