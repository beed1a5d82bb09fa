/* Emulated CUDA build (tests/emu): cuda_bf16.h is part of tests/emu/cuda_emu.h. */
#include "../cuda_emu.h"
