#!/usr/bin/env bash
# tests/parity/train_cli.sh (CPU vs CUDA runs of sd-train, for a GPU machine) checked without a GPU:
# SD_PARITY_SELFTEST=1 runs its "cuda" side on the CPU, so every comparison must find no
# difference, and its comparison must find the one between a float32 and a bf16-storage run.
cd "$(dirname "$0")/../.." && SD_PARITY_SELFTEST=1 exec bash tests/parity/train_cli.sh
