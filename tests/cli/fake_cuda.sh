#!/usr/bin/env bash
# The --device cuda paths of sd-sample, sd-encode-latents, sd-train, sd-tag and sd-caption on the fake CUDA device of
# tensor/device.h (SD_FAKE_CUDA=1 in a build without CUDA: host memory, CPU kernels): their CLI
# tests take the GPU branches (weights moved to the device and back, device contexts, the memory
# check, textual-inversion tables on the device, the loss scaler) and compare with the CPU. Only
# the device tests are reported (suffixed _fake_cuda), and every failure; a script that exits
# non-zero, or that reports no GPU-branch test at all (the fake device not taken), is a failure
# too. In a CUDA build SD_FAKE_CUDA does nothing and the scripts take their real-GPU branches.
set -u
cd "$(dirname "$0")/../.."
build=${SD_BUILD:-build}
# the fake device exists in builds without CUDA (its name is in the binary)
fake=0; grep -aq 'fake CUDA device' "$build/bin/sd-train" 2>/dev/null && fake=1
for t in sample encode_latents train tag caption; do
  out=$(SD_FAKE_CUDA=1 bash "tests/cli/$t.sh" 2>&1); rc=$?
  printf '%s\n' "$out" | grep -E '^(not )?ok .*(device|cuda)|^not ok' | sed -E 's/^((not )?ok [A-Za-z0-9_]+)/\1_fake_cuda/'
  [ $rc = 0 ] || echo "not ok ${t}_fake_cuda_exit # tests/cli/$t.sh exited $rc"
  if [ $fake = 0 ]; then
    echo "ok ${t}_fake_cuda_gpu_branch # SKIP a CUDA build without a GPU (the fake device is for builds without CUDA)"
  elif ! printf '%s\n' "$out" | grep -Eq '^ok [a-z_]*device_cuda_(close|matches|same)'; then
    echo "not ok ${t}_fake_cuda_gpu_branch # no GPU-branch comparison ran"
  fi
done
