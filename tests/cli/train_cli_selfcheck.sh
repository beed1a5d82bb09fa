#!/usr/bin/env bash
# tests/parity/train_cli.sh (CPU vs CUDA runs of sd-train, for a GPU machine) checked without a GPU:
#  - SD_PARITY_SELFTEST=1: its "cuda" side on the CPU, so every comparison finds no difference, and
#    its comparison must find the one between a float32 and a bf16-storage run;
#  - SD_FAKE_CUDA=1 (this build has no CUDA): the "cuda" runs on the fake device of tensor/device.h
#    (host memory, CPU kernels), which takes every device code path of sd-train (registry moves,
#    uploads and downloads, the optimizer on the device, the textual-inversion table copy, device
#    contexts and the memory check) and must give the CPU's results; and the 3-step LoRA parity
#    program (tests/parity/test_parity_train) the same way. (In a CUDA build SD_FAKE_CUDA does
#    nothing: the runs then need a GPU, and are skipped without one.)
set -u
cd "$(dirname "$0")/../.."
build=${SD_BUILD:-build}
SD_PARITY_SELFTEST=1 SD_PARITY_TAG=_selftest bash tests/parity/train_cli.sh
SD_FAKE_CUDA=1 SD_PARITY_TAG=_fake_cuda bash tests/parity/train_cli.sh
p="$build/tests/parity/test_parity_train"
if [ -x "$p" ]; then
  out=$(SD_FAKE_CUDA=1 "$p" 2>&1); rc=$?
  printf '%s\n' "$out" | sed 's/^\(\(not \)\{0,1\}ok [a-z_0-9]*\)/\1_fake_cuda/'
  [ $rc = 0 ] || echo "not ok test_parity_train_fake_cuda_exit # exited $rc"
fi
