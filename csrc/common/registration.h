// Op registration macros. Normally ops live in torch.ops.llmpack with CPU and
// CUDA impls. The SIMT-emulator build (LLMPACK_SIMT_EMULATION) compiles the
// same registry, torch glue and .cu kernels with the host compiler into a
// separate test library whose ops live in torch.ops.llmpack_simt: there the
// *CUDA* impls are registered for CPU tensors and run the emulated kernels,
// so the whole CUDA path (checks, allocation, launch, kernel) is exercised.
#pragma once

#include <torch/csrc/stable/library.h>

#ifndef LLMPACK_NS
#define LLMPACK_NS llmpack
#endif

// Indirection so LLMPACK_NS is expanded before the torch macros paste it.
#define LLMPACK_LIBRARY_X(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define LLMPACK_IMPL_X(ns, key, m) STABLE_TORCH_LIBRARY_IMPL(ns, key, m)

#define LLMPACK_LIBRARY(m) LLMPACK_LIBRARY_X(LLMPACK_NS, m)
#if defined(LLMPACK_SIMT_EMULATION)
#define LLMPACK_CUDA_IMPL(m) LLMPACK_IMPL_X(LLMPACK_NS, CPU, m)
#else
#define LLMPACK_CPU_IMPL(m) LLMPACK_IMPL_X(LLMPACK_NS, CPU, m)
#define LLMPACK_CUDA_IMPL(m) LLMPACK_IMPL_X(LLMPACK_NS, CUDA, m)
#endif
