// CPU instruction-set levels and run-time dispatch.
//
// Each kernel family compiles one translation unit per ISA level
// (<family>_cpu_{generic,avx2,avx512}.cpp), each with only that level's flags
// (cmake/LlmpackIsa.cmake), and exposes one table of function pointers per
// level. pick_isa() returns the table for the active level, falling back to
// the next lower level that exists. Never -march=native: the wheel must run on
// any x86-64 (and on non-x86, where only the generic unit is built).
#pragma once

namespace llmpack {

enum class Isa : int {
  generic = 0,  // plain C++, compiler's baseline flags
  avx2 = 1,     // AVX2 + FMA + F16C + BMI2 (Haswell and later)
  avx512 = 2,   // AVX-512 F/BW/VL/DQ (Skylake-SP and later)
  // avx512 + AVX512_BF16 + AVX512_VNNI (Cooper Lake, Sapphire Rapids, Zen 4):
  // bf16 dot products at twice the fp32 FMA rate, u8 x s8 dot products in one
  // instruction. An optional unit of its own
  // (<family>_cpu_avx512_bf16.cpp); a family without one points this level at
  // its avx512 table.
  avx512_bf16 = 3,
  // avx512_bf16 + AMX-TILE/AMX-BF16 + AVX512-VBMI2 (Sapphire Rapids and
  // later), with the OS's permission for tile state: 2:4 tiles unpacked in
  // registers and multiplied on the AMX unit. Families without an AMX unit
  // (<family>_cpu_amx.cpp) point this level at their avx512_bf16 table.
  amx = 4,
};

// Highest level this CPU (and OS) supports and this build compiled.
Isa cpu_isa();
// Level the kernels use now: cpu_isa(), lowered by LLMPACK_ISA=generic|avx2|avx512
// in the environment (read once) or by set_active_isa(). Never raised above cpu_isa().
Isa active_isa();
// Returns the level that is now active (the request clamped to cpu_isa()).
Isa set_active_isa(Isa requested);
const char* isa_name(Isa isa);

template <class Table>
const Table& pick_isa(const Table* generic, const Table* avx2, const Table* avx512,
                      const Table* avx512_bf16 = nullptr, const Table* amx = nullptr) {
  switch (active_isa()) {
    case Isa::amx:
      if (amx) return *amx;
      [[fallthrough]];
    case Isa::avx512_bf16:
      if (avx512_bf16) return *avx512_bf16;
      [[fallthrough]];
    case Isa::avx512:
      if (avx512) return *avx512;
      [[fallthrough]];
    case Isa::avx2:
      if (avx2) return *avx2;
      [[fallthrough]];
    default:
      return *generic;
  }
}

}  // namespace llmpack

// Address of an ISA table, or nullptr where that unit is not built (non-x86).
#if defined(LLMPACK_HAVE_AVX2)
#define LLMPACK_IF_AVX2(x) (&(x))
#else
#define LLMPACK_IF_AVX2(x) static_cast<decltype(&(x))>(nullptr)
#endif
#if defined(LLMPACK_HAVE_AMX)
#define LLMPACK_IF_AMX(x) (&(x))
#else
#define LLMPACK_IF_AMX(x) static_cast<decltype(&(x))>(nullptr)
#endif
#if defined(LLMPACK_HAVE_AVX512)
#define LLMPACK_IF_AVX512(x) (&(x))
#else
#define LLMPACK_IF_AVX512(x) static_cast<decltype(&(x))>(nullptr)
#endif
