/* Emulated CUDA build (tests/emu): cuda_fp16.h is part of tests/emu/cuda_emu.h. */
#include "../cuda_emu.h"
