// CPU feature detection for ISA dispatch (see isa.h), straight from CPUID and
// XGETBV (not __builtin_cpu_supports: compilers disagree on which feature
// names it knows, e.g. clang 14 has no "amx-tile"). A level is reported only
// when the OS also saves its register state (XCR0), so it is usable.
#include "common/isa.h"

#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace llmpack {
namespace {

struct CpuFlags {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false, popcnt = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avx512fp16 = false, avx512vbmi2 = false;
  bool avx512vpopcntdq = false, avxvnni = false, amx_tile = false, amx_bf16 = false, amx_int8 = false;
};

#if defined(__x86_64__) || defined(_M_X64)
uint64_t xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

bool bit(uint32_t reg, int i) { return (reg >> i) & 1u; }

CpuFlags read_flags() {
  CpuFlags f;
  uint32_t a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = bit(c, 27), avx = bit(c, 28);
  f.popcnt = bit(c, 23);
  const uint64_t xcr = osxsave ? xcr0() : 0;
  const bool os_avx = avx && (xcr & 0x6) == 0x6;            // XMM + YMM state
  const bool os_avx512 = os_avx && (xcr & 0xE0) == 0xE0;    // opmask + ZMM state
  const bool os_amx = (xcr & 0x60000) == 0x60000;           // XTILECFG + XTILEDATA
  f.fma = os_avx && bit(c, 12);
  f.f16c = os_avx && bit(c, 29);
  uint32_t max_leaf = 0;
  __get_cpuid(0, &max_leaf, &b, &c, &d);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const uint32_t sub1 = a;  // highest subleaf of leaf 7
  f.avx2 = os_avx && bit(b, 5);
  f.bmi2 = bit(b, 8);
  f.avx512f = os_avx512 && bit(b, 16);
  f.avx512dq = os_avx512 && bit(b, 17);
  f.avx512bw = os_avx512 && bit(b, 30);
  f.avx512vl = os_avx512 && bit(b, 31);
  f.avx512vbmi2 = os_avx512 && bit(c, 6);
  f.avx512vnni = os_avx512 && bit(c, 11);
  f.avx512vpopcntdq = os_avx512 && bit(c, 14);
  f.amx_bf16 = os_amx && bit(d, 22);
  f.avx512fp16 = os_avx512 && bit(d, 23);
  f.amx_tile = os_amx && bit(d, 24);
  f.amx_int8 = os_amx && bit(d, 25);
  if (sub1 >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avxvnni = os_avx && bit(a, 4);
    f.avx512bf16 = os_avx512 && bit(a, 5);
  }
  return f;
}
#else
CpuFlags read_flags() { return {}; }
#endif

const CpuFlags& flags() {
  static const CpuFlags f = read_flags();
  return f;
}

#if defined(LLMPACK_HAVE_AMX)
// Linux hands out AMX tile state only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA), once per process.
bool os_grants_amx() {
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
}
#endif

Isa detect() {
  [[maybe_unused]] const CpuFlags& f = flags();
#if defined(LLMPACK_HAVE_AVX512)
  const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx2 && f.fma;
  const bool bf16 = avx512 && f.avx512bf16 && f.avx512vnni;  // the unit uses both (isa.h)
#if defined(LLMPACK_HAVE_AMX)
  if (bf16 && f.amx_tile && f.amx_bf16 && f.avx512vbmi2 && os_grants_amx()) return Isa::amx;
#endif
  if (bf16) return Isa::avx512_bf16;
  if (avx512) return Isa::avx512;
#endif
#if defined(LLMPACK_HAVE_AVX2)
  if (f.avx2 && f.fma && f.bmi2 && f.f16c) return Isa::avx2;
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
  const CpuFlags& f = flags();
  const struct { const char* name; bool on; } feats[] = {
      {"popcnt", f.popcnt}, {"avx2", f.avx2}, {"fma", f.fma}, {"f16c", f.f16c}, {"bmi2", f.bmi2},
      {"avxvnni", f.avxvnni}, {"avx512f", f.avx512f}, {"avx512bw", f.avx512bw},
      {"avx512vl", f.avx512vl}, {"avx512dq", f.avx512dq}, {"avx512vnni", f.avx512vnni},
      {"avx512bf16", f.avx512bf16}, {"avx512fp16", f.avx512fp16}, {"avx512vbmi2", f.avx512vbmi2},
      {"avx512vpopcntdq", f.avx512vpopcntdq}, {"amx-tile", f.amx_tile}, {"amx-bf16", f.amx_bf16},
      {"amx-int8", f.amx_int8},
  };
  std::string out;
  for (const auto& feat : feats)
    if (feat.on) out += (out.empty() ? "" : ",") + std::string(feat.name);
  return out;
}

}  // namespace llmpack
