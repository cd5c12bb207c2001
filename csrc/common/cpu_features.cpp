// CPU feature detection for ISA dispatch (see isa.h). Uses the compiler's
// cpuid-based __builtin_cpu_supports, which also checks that the OS saves the
// AVX/AVX-512 register state (XGETBV), so a level reported here is usable.
#include "common/isa.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace llmpack {
namespace {

#if defined(LLMPACK_HAVE_AMX)
// Linux hands out AMX tile state only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA), once per process.
bool os_grants_amx() {
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
}
#endif

Isa detect() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
#if defined(LLMPACK_HAVE_AVX512)
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
#if defined(LLMPACK_HAVE_AMX)
  if (bf16 && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
      __builtin_cpu_supports("avx512vbmi2") && os_grants_amx())
    return Isa::amx;
#endif
  if (bf16) return Isa::avx512_bf16;
  if (avx512) return Isa::avx512;
#endif
#if defined(LLMPACK_HAVE_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2"))
    return Isa::avx2;
#endif
#endif
  return Isa::generic;
}

Isa parse_env() {
  const char* v = std::getenv("LLMPACK_ISA");
  if (!v || !*v) return Isa::amx;  // no request: highest available
  if (!std::strcmp(v, "generic")) return Isa::generic;
  if (!std::strcmp(v, "avx2")) return Isa::avx2;
  if (!std::strcmp(v, "avx512")) return Isa::avx512;
  if (!std::strcmp(v, "avx512_bf16")) return Isa::avx512_bf16;
  return Isa::amx;
}

Isa clamp(Isa want) {
  return static_cast<int>(want) < static_cast<int>(cpu_isa()) ? want : cpu_isa();
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(clamp(parse_env()))};
  return slot;
}

}  // namespace

Isa cpu_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

Isa set_active_isa(Isa requested) {
  Isa got = clamp(requested);
  active_slot().store(static_cast<int>(got), std::memory_order_relaxed);
  return got;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::amx: return "amx";
    case Isa::avx512_bf16: return "avx512_bf16";
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

// Extra features some kernels check before taking a faster path; reported by
// `llmpack info`.
std::string cpu_feature_list() {
  std::string out;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  const struct { const char* name; int on; } feats[] = {
      {"avx2", __builtin_cpu_supports("avx2")},
      {"fma", __builtin_cpu_supports("fma")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512dq", __builtin_cpu_supports("avx512dq")},
      {"avx512vnni", __builtin_cpu_supports("avx512vnni")},
      {"avx512bf16", __builtin_cpu_supports("avx512bf16")},
      {"avx512fp16", __builtin_cpu_supports("avx512fp16")},
      {"avx512vbmi2", __builtin_cpu_supports("avx512vbmi2")},
      {"avx512vpopcntdq", __builtin_cpu_supports("avx512vpopcntdq")},
      {"amx-tile", __builtin_cpu_supports("amx-tile")},
      {"amx-bf16", __builtin_cpu_supports("amx-bf16")},
  };
  for (const auto& f : feats)
    if (f.on) out += (out.empty() ? "" : ",") + std::string(f.name);
#endif
  return out;
}

}  // namespace llmpack
