#!/usr/bin/env bash
# The --device cuda paths of sd-sample, sd-encode-latents, sd-train and sd-tag on the fake CUDA device of
# tensor/device.h (SD_FAKE_CUDA=1 in a build without CUDA: host memory, CPU kernels): their CLI
# tests take the GPU branches (weights moved to the device and back, device contexts, the memory
# check, textual-inversion tables on the device, the loss scaler) and compare with the CPU. Only
# the device tests are reported (suffixed _fake_cuda), and every failure. In a CUDA build
# SD_FAKE_CUDA does nothing, and without a GPU the scripts take their "unavailable" branches.
set -u
cd "$(dirname "$0")/../.."
for t in sample encode_latents train tag; do
  SD_FAKE_CUDA=1 bash "tests/cli/$t.sh" 2>&1 |
    grep -E '^(not )?ok .*(device|cuda)|^not ok|^# ' | grep -v '^# ' |
    sed -E 's/^((not )?ok [A-Za-z0-9_]+)/\1_fake_cuda/'
done
