#!/usr/bin/env bash
# Make build/gpu-bundle for tests/parity/device_check.sh on a GPU machine that lacks the build's
# libraries (libjq, stb, libwebp, libarchive, OpenBLAS, ...; the device machines have nvcc and the
# CUDA libraries but no apt): sd-train, sd-sample, sd-encode-latents and sd-tag from a `make CUDA=1`
# build, the tiny-model generator (examples/tiny_model.c, from the CPU build), and every shared
# library they load except glibc's, libgcc_s, libstdc++ and the CUDA toolkit's, plus ORIGIN (what
# it was built from). Binaries
# are stripped; OUT.tar.xz (about 17 MB: OpenBLAS and ICU's data are 80 MB unpacked, over the device
# tool's 64 MiB carry) is what travels; device_check.sh unpacks it.
# cuDNN (SD_CUDA_CONV=cudnn) is not linked but loaded with dlopen, so ldd does not list it and it is
# not carried (about 400 MB): the binaries find libcudnn.so.9 in CUDA_HOME/lib64 (their rpath, and
# device_check.sh's LD_LIBRARY_PATH) when the GPU machine has it, and fall back to im2col otherwise.
#   bash tests/parity/make_bundle.sh [OUT]     (default build/gpu-bundle; run on the build machine)
#   then on the device tool: carry ["build/gpu-bundle.tar.xz"], run bash tests/parity/device_check.sh
set -eu
cd "$(dirname "$0")/../.."
out=${1:-build/gpu-bundle}
jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs" CUDA=1 >/tmp/sd-bundle-build.log 2>&1 || { tail -20 /tmp/sd-bundle-build.log; exit 1; }
make -j"$jobs" >>/tmp/sd-bundle-build.log 2>&1 || { tail -20 /tmp/sd-bundle-build.log; exit 1; }
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp build/cuda/bin/sd-train build/cuda/bin/sd-sample build/cuda/bin/sd-encode-latents build/cuda/bin/sd-tag "$out/bin/"
examples/build_tiny.sh build "$out/bin/tiny_model"
strip "$out"/bin/*
for b in "$out"/bin/*; do
  ldd "$b" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libnvrtc*|libnvJitLink*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo +changes), built $(date -u +%F) on $(. /etc/os-release && echo "$PRETTY_NAME")" \
  > "$out/ORIGIN"
tar -cJf "$out.tar.xz" -C "$(dirname "$out")" "$(basename "$out")"
echo "$out.tar.xz: $(ls "$out/bin" | tr '\n' ' ')+ $(ls "$out/lib" | wc -l) libraries, $(du -sh "$out" | cut -f1) unpacked," \
  "$(du -h "$out.tar.xz" | cut -f1) packed"
