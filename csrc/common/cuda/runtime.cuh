// The one include a kernel file (.cu) starts with. Under nvcc it is the CUDA
// runtime plus fp16/bf16 types; in the SIMT emulator build (host compiler,
// LLMPACK_SIMT_EMULATION defined) the same names come from the emulator, so
// the kernel source is identical in both. Never include torch headers here.
#pragma once

#if defined(LLMPACK_SIMT_EMULATION)
#include "common/simt/simt.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include "common/hostdevice.h"
