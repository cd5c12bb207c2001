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

// An op whose impl is one template over the device, impl<kOnCuda>: impl<true>
// (the CUDA path) for CUDA tensors, or for CPU tensors in the emulator build;
// impl<false> (the host path) for CPU tensors in the real library.
#if defined(LLMPACK_SIMT_EMULATION)
#define LLMPACK_IMPL_ON_EACH_DEVICE(op_name, op_impl) \
  LLMPACK_CUDA_IMPL(m) { m.impl(op_name, TORCH_BOX(&op_impl<true>)); }
#elif defined(LLMPACK_WITH_CUDA)
#define LLMPACK_IMPL_ON_EACH_DEVICE(op_name, op_impl)                    \
  LLMPACK_CUDA_IMPL(m) { m.impl(op_name, TORCH_BOX(&op_impl<true>)); } \
  LLMPACK_CPU_IMPL(m) { m.impl(op_name, TORCH_BOX(&op_impl<false>)); }
#else
#define LLMPACK_IMPL_ON_EACH_DEVICE(op_name, op_impl) \
  LLMPACK_CPU_IMPL(m) { m.impl(op_name, TORCH_BOX(&op_impl<false>)); }
#endif
