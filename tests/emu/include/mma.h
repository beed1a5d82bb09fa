/* Emulated CUDA build (tests/emu): mma.h is part of tests/emu/cuda_emu.h. */
#include "../cuda_emu.h"
