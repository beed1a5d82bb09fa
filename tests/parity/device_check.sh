#!/usr/bin/env bash
# One-shot check on a GPU machine (e.g. an H100, a few minutes): shows the GPU, builds the suite
# with CUDA=1 from source in build/gpu and runs the parity tests (CPU vs CUDA) verbosely.
#
#   bash tests/parity/device_check.sh        (from anywhere; exit 0 when every parity test passed)
#
# The machine may have no internet: if build dependencies (-dev packages) are missing and apt
# cannot reach its mirrors, the full build is impossible; the script then says which ones are
# missing and falls back to a minimal build (lib/base + lib/tensor + lib/tensor/cuda + lib/nn, the
# optimizer and the UNet with its built-in presets, which need only gcc, nvcc and the CUDA
# libraries) so the GPU kernels are still checked and the UNet benchmark still runs.
# DEVICE_CHECK_MINIMAL=1 skips `make deps` and the full build (tests the fallback). The fallback
# needs no BLAS package: without OpenBLAS the CPU reference kernels use tests/parity/refblas
# (plain loops).
# Tests: tests/parity/test_cuda_basic (device API) and tests/parity/test_parity_ops (every op of
# lib/tensor/ops.h, forward and backward, CPU vs CUDA, with per-op max differences), then whole
# sd-train runs on both devices (tests/parity/train_cli.sh: from the full build, or from a carried
# bundle made here by tests/parity/make_bundle.sh when the GPU machine lacks the libraries), and
# the reference's torch AdamW on CUDA f16/bf16 against the --full_bf16/--full_fp16 transcription.
#
# On the device tool (one call; the bundle is an ignored folder, so carry it):
#   bash tests/parity/make_bundle.sh          (here, first)
#   run: bash tests/parity/device_check.sh    carry: ["build/gpu-bundle.tar.xz"]
# After the tests, bench/bench_cuda_unet (SD1.5 UNet forward and frozen-weight training step,
# batch 1/4/16, one JSON line each) runs in either build; DEVICE_CHECK_NO_BENCH=1 skips it; then
# the training step at batch 16 with SD_CUDA_MATH=bf16, attention through cuBLAS and with SD_CUDA_ATTN=flash (the fused
# kernels; at most 100 s each; DEVICE_CHECK_NO_FLASH_BENCH=1 skips these two), and with
# SD_CUDA_CONV=cudnn (cuDNN convolutions; DEVICE_CHECK_NO_CUDNN_BENCH=1 skips it). After the parity
# tests, test_parity_ops and test_parity_train run again with SD_CUDA_CONV=cudnn (cuDNN is loaded
# at run time from libcudnn.so.9 when the machine has it; otherwise they check the fallback).
# Expected time on an H100 with 16 cores: about 1-2 min build, under 1 min of tests and at most
# 4 min (+ 3 × 100 s bf16) of UNet benchmark. DEVICE_CHECK_BUILD=DIR builds there instead of build/gpu.
set -u
cd "$(dirname "$0")/../.."
B=${DEVICE_CHECK_BUILD:-build/gpu}
JOBS=$(nproc 2>/dev/null || echo 4)
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
t0=$(date +%s)
say() { printf '\n== %s (%ds)\n' "$*" $(($(date +%s) - t0)); }

say "GPU"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi || echo "nvidia-smi failed (exit $?)"
else
  echo "nvidia-smi not found"
fi
echo "nvcc: $("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | tail -1 || echo "not found at $CUDA_HOME/bin/nvcc")"
echo "cc:   $(cc --version 2>/dev/null | head -1)"

say "build dependencies"
missing=()
for p in openblas libarchive libzstd libwebp; do pkg-config --exists "$p" 2>/dev/null || missing+=("$p (pkg-config)"); done
for h in jq.h stb/stb_image.h; do [ -e "/usr/include/$h" ] || missing+=("/usr/include/$h"); done
command -v pkg-config >/dev/null || missing+=("pkg-config")
command -v bc >/dev/null || missing+=("bc (tests/run timing)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}"
  if [ -n "${DEVICE_CHECK_MINIMAL:-}" ]; then
    echo "not installing (DEVICE_CHECK_MINIMAL set)"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && timeout 25 apt-get update -qq >/dev/null 2>&1; then
    echo "apt works: running make deps"
    timeout 240 make deps >/tmp/sd-deps.log 2>&1 || { echo "make deps failed:"; tail -5 /tmp/sd-deps.log; }
  else
    echo "apt cannot reach its mirrors (no internet?): not installing"
  fi
else
  echo "all present"
fi

say "make -j$JOBS CUDA=1 BUILD=$B tests"
full=0
if [ -z "${DEVICE_CHECK_MINIMAL:-}" ] && make -j"$JOBS" CUDA=1 BUILD=$B tests >/tmp/sd-build.log 2>&1; then
  full=1
  # The Makefile appends /cuda to BUILD unless BUILD is given on the command line: find the tests.
  if [ -x $B/cuda/tests/parity/test_cuda_basic ]; then SD_BUILD=$B/cuda; else SD_BUILD=$B; fi
  echo "built into $SD_BUILD; warnings: $(grep -c 'warning:' /tmp/sd-build.log)"
else
  if [ -n "${DEVICE_CHECK_MINIMAL:-}" ]; then
    echo "skipped (DEVICE_CHECK_MINIMAL set)"
  else
    echo "full build FAILED; first errors and last lines:"
    grep -E 'error|Error' /tmp/sd-build.log | head -15
    tail -5 /tmp/sd-build.log
  fi
  say "fallback: minimal CUDA build in $B/min (base, tensor, cuda, nn, optimizer, UNet)"
  SD_BUILD=$B/min
  O=$SD_BUILD/obj
  mkdir -p "$O" "$SD_BUILD/tests/parity" "$SD_BUILD/bench"
  CF="-std=c11 -D_GNU_SOURCE -O2 -g -fopenmp -Ilib -DSD_CUDA -I$CUDA_HOME/include -DSD_VERSION=\"0\" -DSD_SHAREDIR=\"/tmp\""
  NF="-O2 -std=c++17 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80 -Ilib -DSD_CUDA -Xcompiler -fPIC"
  # BLAS for the CPU reference kernels: OpenBLAS when its headers are there, else the plain
  # reference GEMM of tests/parity/refblas (correct, slower; only the parity tests' CPU side)
  BLAS_CF="" BLAS_LIB=""
  if pkg-config --exists openblas 2>/dev/null; then
    BLAS_CF=$(pkg-config --cflags openblas) BLAS_LIB=$(pkg-config --libs openblas)
  elif [ -e /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ]; then
    BLAS_CF=-I/usr/include/x86_64-linux-gnu/openblas-pthread
    BLAS_LIB="-L/usr/lib/x86_64-linux-gnu/openblas-pthread -lopenblas"
  fi
  CF="$CF $BLAS_CF"
  objs=()
  if [ -z "$BLAS_LIB" ]; then
    echo "no OpenBLAS here: CPU reference GEMM from tests/parity/refblas"
    CF="$CF -Itests/parity/refblas"
    cc $CF -O3 -march=native -c tests/parity/refblas/refblas.c -o "$O/refblas.o" && objs+=("$O/refblas.o")
  fi
  # (-ffunction-sections + --gc-sections: the parity tests and the benchmark link without the
  # loaders that lib/nn's and the UNet's checkpoint functions reference, e.g. safetensors/libjq,
  # which this build leaves out. lib/models/model_config.c is the jq-free part of the model
  # configuration: presets and validation; the JSON/TOML parser is model_config_parse.c.)
  CF="$CF -ffunction-sections -fdata-sections"
  csrc=(lib/base/*.c lib/tensor/*.c lib/nn/*.c lib/train/optim.c lib/train/pyfmt.c lib/models/model_config.c
        lib/models/unet.c)
  cusrc=(lib/tensor/cuda/*.cu)
  : >/tmp/sd-min.log
  # compile in parallel, $JOBS at a time; each object's messages in OBJ.log
  for f in "${csrc[@]}" "${cusrc[@]}"; do
    o=$O/$(echo "$f" | tr / _).o
    rm -f "$o"
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n 2>/dev/null || true; done
    case $f in
      *.cu) ( "$CUDA_HOME/bin/nvcc" $NF -c "$f" -o "$o" >"$o.log" 2>&1 || rm -f "$o" ) & ;;
      *) ( cc $CF -c "$f" -o "$o" >"$o.log" 2>&1 || rm -f "$o" ) & ;;
    esac
  done
  wait
  nwarn=0
  for f in "${csrc[@]}" "${cusrc[@]}"; do
    o=$O/$(echo "$f" | tr / _).o
    cat "$o.log" >>/tmp/sd-min.log
    if [ -e "$o" ]; then
      objs+=("$o")
      nwarn=$((nwarn + $(grep -c 'warning' "$o.log")))
    elif [ "${f%.cu}" = "$f" ]; then
      echo "  skipped $f (does not compile here)"
    else
      echo "nvcc FAILED on $f:"; cat "$o.log"; exit 1
    fi
  done
  rm -f "$SD_BUILD/libsd.a" && ar rcs "$SD_BUILD/libsd.a" "${objs[@]}"
  LINK=(-Wl,--gc-sections "$SD_BUILD/libsd.a" -fopenmp -L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64"
        -lcublasLt -lcublas -lcudart -lstdc++ $BLAS_LIB -lm -lpthread -ldl)
  for t in tests/parity/*.c; do
    out=$SD_BUILD/tests/parity/$(basename "$t" .c)
    cc $CF -Itests "$t" -o "$out" "${LINK[@]}" 2>>/tmp/sd-min.log || echo "  could not link $t without the full build"
  done
  rm -f "$SD_BUILD/bench/bench_cuda_unet"
  cc $CF bench/bench_cuda_unet.c -o "$SD_BUILD/bench/bench_cuda_unet" "${LINK[@]}" >/tmp/sd-bench-build.log 2>&1
  echo "built into $SD_BUILD: $(ls "$SD_BUILD"/tests/parity | wc -l) parity tests," \
    "bench_cuda_unet $([ -x "$SD_BUILD/bench/bench_cuda_unet" ] && echo yes || echo no);" \
    "warnings in what compiled: $((nwarn + $(grep -c 'warning' /tmp/sd-bench-build.log)))"
fi

say "SD_BUILD=$SD_BUILD TESTS_FILTER=parity tests/run"
SD_BUILD=$SD_BUILD TESTS_FILTER=parity TESTS_VERBOSE=1 TESTS_JOBS=1 tests/run
rc=$?

# The same parity programs with the opt-in cuDNN convolutions (SD_CUDA_CONV=cudnn, libcudnn.so.9 loaded
# at run time; without it every convolution falls back to im2col and test_parity_ops says so)
say "parity with SD_CUDA_CONV=cudnn"
echo "libcudnn.so.9: $(ls "$CUDA_HOME"/lib64/libcudnn.so.9 2>/dev/null || true) $(ldconfig -p 2>/dev/null | grep -o '/[^ ]*libcudnn.so.9$' | head -1)"
for t in test_parity_ops test_parity_train; do
  if [ -x "$SD_BUILD/tests/parity/$t" ]; then
    SD_CUDA_CONV=cudnn timeout 300 "$SD_BUILD/tests/parity/$t" >/tmp/sd-cudnn-$t.log 2>&1
    trc=$?
    grep -E '^(not )?ok|FAIL|cuDNN|warning|largest' /tmp/sd-cudnn-$t.log | head -60
    echo "$t with SD_CUDA_CONV=cudnn: exit $trc (full log /tmp/sd-cudnn-$t.log)"
    [ $trc = 0 ] || rc=1
  else
    echo "$t: not built"
  fi
done

# Whole sd-train runs, CPU vs CUDA (LoRA f32/bf16/fp16/full_bf16, db, ft full_fp16, resume): with
# the full build, or else with a carried bundle (tests/parity/make_bundle.sh, made on a machine with
# every library: binaries plus the shared libraries the GPU machine lacks).
say "sd-train CPU vs CUDA (tests/parity/train_cli.sh)"
BUNDLE=${DEVICE_CHECK_BUNDLE:-build/gpu-bundle}
if [ $full = 0 ] && [ ! -x "$BUNDLE/bin/sd-train" ] && [ -f "$BUNDLE.tar.xz" ]; then
  tar -xJf "$BUNDLE.tar.xz" -C "$(dirname "$BUNDLE")" || echo "could not unpack $BUNDLE.tar.xz"
fi
if [ $full = 1 ]; then
  SD_BUILD=$SD_BUILD timeout 300 bash tests/parity/train_cli.sh || rc=1
elif [ -x "$BUNDLE/bin/sd-train" ]; then
  echo "using the bundle $BUNDLE ($(cat "$BUNDLE/ORIGIN" 2>/dev/null))"
  LD_LIBRARY_PATH="$PWD/$BUNDLE/lib:$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" SD_BUILD=$BUNDLE \
    TINY_MODEL="$PWD/$BUNDLE/bin/tiny_model" timeout 300 bash tests/parity/train_cli.sh || rc=1
else
  echo "skipped: no full build here and no bundle at $BUNDLE[.tar.xz] (make one with tests/parity/make_bundle.sh and carry it)"
fi

# The reference's AdamW and clip_grad_norm_ on CUDA f16/bf16 (torch 2.x, when python3 has it)
# against the transcription that --full_fp16/--full_bf16 follow bit for bit
say "torch AdamW on CUDA f16/bf16 vs tests/golden/gen/make_optim_half_golden.py"
if python3 -c 'import torch, numpy, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  timeout 120 python3 tests/golden/gen/make_optim_half_golden.py --cuda-check || echo "(differences above; exit $?)"
else
  echo "skipped: no python3 with torch, numpy and CUDA"
fi

# Optional, after the parity results: the SD1.5 UNet on the GPU (either build; the fallback
# linked it above). Bounded to a few minutes; its failure does not change the exit status.
if [ -z "${DEVICE_CHECK_NO_BENCH:-}" ]; then
  say "bench_cuda_unet (SD1.5 UNet, 64x64, batch ${BENCH_BATCHES:-1,4,16}, fp32)"
  if [ $full = 1 ]; then
    make -j"$JOBS" CUDA=1 BUILD=$B "$SD_BUILD/bench/bench_cuda_unet" >/tmp/sd-bench-build.log 2>&1 ||
      rm -f "$SD_BUILD/bench/bench_cuda_unet"
  fi
  if [ -x "$SD_BUILD/bench/bench_cuda_unet" ]; then
    BENCH_RUNS=${BENCH_RUNS:-2} timeout 240 "$SD_BUILD/bench/bench_cuda_unet"
    brc=$?
    [ $brc = 0 ] || echo "bench_cuda_unet: exit $brc$([ $brc = 124 ] && echo ' (timed out after 240 s)')"
    # bf16 tensor-core products at batch 16 (the training case): attention through cuBLAS, then the
    # fused kernels of SD_CUDA_ATTN=flash (each run bounded; DEVICE_CHECK_NO_FLASH_BENCH=1 skips both)
    if [ -z "${DEVICE_CHECK_NO_FLASH_BENCH:-}" ]; then
      for attn in cublas flash; do
        say "bench_cuda_unet batch 16, SD_CUDA_MATH=bf16, attention $attn"
        if [ $attn = flash ]; then export SD_CUDA_ATTN=flash; else unset SD_CUDA_ATTN; fi
        SD_CUDA_MATH=bf16 BENCH_BATCHES=16 BENCH_RUNS=2 BENCH_FILTER=sd15_step timeout 100 "$SD_BUILD/bench/bench_cuda_unet"
        brc=$?
        [ $brc = 0 ] || echo "bench_cuda_unet ($attn): exit $brc$([ $brc = 124 ] && echo ' (timed out after 100 s)')"
      done
      unset SD_CUDA_ATTN
      # the bf16 step as before the 16-bit operands (fp32 operands, FAST_16BF compute type): their gain
      say "bench_cuda_unet batch 16, SD_CUDA_MATH=bf16, SD_CUDA_GEMM16=0 (fp32 operands)"
      SD_CUDA_GEMM16=0 SD_CUDA_MATH=bf16 BENCH_BATCHES=16 BENCH_RUNS=2 BENCH_FILTER=sd15_step timeout 100 \
        "$SD_BUILD/bench/bench_cuda_unet"
      brc=$?
      [ $brc = 0 ] || echo "bench_cuda_unet (gemm16 off): exit $brc$([ $brc = 124 ] && echo ' (timed out after 100 s)')"
    fi
    # the same bf16 step with the cuDNN convolutions (compare with "attention cublas" above;
    # DEVICE_CHECK_NO_CUDNN_BENCH=1 skips it)
    if [ -z "${DEVICE_CHECK_NO_CUDNN_BENCH:-}" ]; then
      say "bench_cuda_unet batch 16, SD_CUDA_MATH=bf16, SD_CUDA_CONV=cudnn"
      SD_CUDA_CONV=cudnn SD_CUDA_MATH=bf16 BENCH_BATCHES=16 BENCH_RUNS=2 BENCH_FILTER=sd15_step timeout 100 \
        "$SD_BUILD/bench/bench_cuda_unet"
      brc=$?
      [ $brc = 0 ] || echo "bench_cuda_unet (cudnn): exit $brc$([ $brc = 124 ] && echo ' (timed out after 100 s)')"
    fi
  else
    echo "bench_cuda_unet did not build:"; grep -E 'error|undefined' /tmp/sd-bench-build.log | head -10
    tail -5 /tmp/sd-bench-build.log
  fi
fi
say "done: $([ $rc = 0 ] && echo PASS || echo FAIL), $([ $full = 1 ] && echo "full build" || echo "minimal fallback build")"
exit $rc
