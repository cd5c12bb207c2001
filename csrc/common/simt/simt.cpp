// SIMT emulator runtime: fibers, the block scheduler, barriers, warp
// collectives, deadlock diagnosis and error reporting. The PTX instructions
// are in ptx_emu.cpp. See simt.h for the model and docs/emulator.md.
#include "common/simt/simt.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define LLMPACK_SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LLMPACK_SIMT_ASAN 1
#endif
#endif
#ifndef LLMPACK_SIMT_ASAN
#define LLMPACK_SIMT_ASAN 0
#endif
#if LLMPACK_SIMT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define LLMPACK_SIMT_NO_ASAN __attribute__((no_sanitize_address))
#else
#define LLMPACK_SIMT_NO_ASAN
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#define LLMPACK_SIMT_EXPORT extern "C" __attribute__((visibility("default")))

// ---- context switch -------------------------------------------------------------
// x86-64: save the callee-saved registers (and MXCSR / x87 control word) on
// the current stack, store the stack pointer, load the other one, restore.
// A new fiber's stack is laid out so that the first switch "returns" into the
// trampoline, which calls fiber_entry(arg) with r12 = arg, r13 = entry.
#if defined(__x86_64__)
extern "C" void llmpack_simt_switch(void** save_sp, void* to_sp);
extern "C" void llmpack_simt_trampoline();
asm(R"(
  .text
  .p2align 4
  .globl llmpack_simt_switch
  .hidden llmpack_simt_switch
  .type llmpack_simt_switch, @function
llmpack_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size llmpack_simt_switch, .-llmpack_simt_switch

  .p2align 4
  .globl llmpack_simt_trampoline
  .hidden llmpack_simt_trampoline
  .type llmpack_simt_trampoline, @function
llmpack_simt_trampoline:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size llmpack_simt_trampoline, .-llmpack_simt_trampoline
)");
#endif

namespace llmpack::simt {

namespace detail {

std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

Builtins g_builtins{};
}

namespace {

using detail::LaneIO;
using detail::WarpOp;

// ---- fibers ------------------------------------------------------------------------
struct FiberCtx {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

#if !defined(__x86_64__)
void (*g_uc_entry)(void*) = nullptr;
void uc_trampoline(unsigned lo, unsigned hi) {
  void* arg = reinterpret_cast<void*>((static_cast<uintptr_t>(hi) << 32) | lo);
  g_uc_entry(arg);
}
#endif

void fiber_init(FiberCtx& f, char* lo, size_t size, void (*entry)(void*), void* arg) {
#if LLMPACK_SIMT_ASAN
  // A finished fiber never returns from its entry frame: clear what ASan
  // still has poisoned near the top of the stack before reusing it.
  const size_t dirty = size < 16384 ? size : 16384;
  __asan_unpoison_memory_region(lo + size - dirty, dirty);
#endif
#if defined(__x86_64__)
  uint32_t mx;
  uint16_t cw;
  asm volatile("stmxcsr %0" : "=m"(mx));
  asm volatile("fnstcw %0" : "=m"(cw));
  const uintptr_t top = (reinterpret_cast<uintptr_t>(lo) + size) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top) - 8;
  sp[0] = mx | (static_cast<uint64_t>(cw) << 32);
  sp[1] = 0;                                    // r15
  sp[2] = 0;                                    // r14
  sp[3] = reinterpret_cast<uint64_t>(entry);    // r13
  sp[4] = reinterpret_cast<uint64_t>(arg);      // r12
  sp[5] = 0;                                    // rbx
  sp[6] = 0;                                    // rbp
  sp[7] = reinterpret_cast<uint64_t>(&llmpack_simt_trampoline);  // return address
  f.sp = sp;
#else
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = lo;
  f.uc.uc_stack.ss_size = size;
  f.uc.uc_link = nullptr;
  g_uc_entry = entry;
  const uintptr_t a = reinterpret_cast<uintptr_t>(arg);
  makecontext(&f.uc, reinterpret_cast<void (*)()>(&uc_trampoline), 2, static_cast<unsigned>(a),
              static_cast<unsigned>(a >> 32));
#endif
}

inline void fiber_switch(FiberCtx& from, FiberCtx& to) {
#if defined(__x86_64__)
  llmpack_simt_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// ---- state -------------------------------------------------------------------------
enum class St : uint8_t { ready, running, barrier, warp, done };

struct Stack {
  char* map = nullptr;  // mapping start: guard page, then the stack
  size_t map_size = 0;
  char* lo = nullptr;
  size_t size = 0;
};

struct CpCopy {
  void* dst;
  const void* src;
  uint64_t group;  // 0 while not committed
};

struct Thread {
  FiberCtx ctx;
  Stack* stack = nullptr;
  St state = St::ready;
  bool started = false;
  unsigned linear = 0, lane = 0, warp = 0;
  uint3 idx{};
  Loc loc;  // where it waits / last synchronising call
  detail::BarOp bar_op = detail::BarOp::sync;
  int bar_pred = 0, bar_result = 0;
  const WarpOp* wop = nullptr;
  unsigned wmask = 0;
  LaneIO* wio = nullptr;
  std::vector<CpCopy> cp;
  uint64_t cp_seq = 0;
  void* asan_fake = nullptr;
};

struct Launch {
  LaunchSpec spec{};
  std::string name;
  void (*body)(const void*) = nullptr;
  const void* ctx = nullptr;
  unsigned nthreads = 0;
  uint3 block{};
  unsigned done = 0, at_barrier = 0;
  bool aborting = false, failed = false;
  std::string error;
  char* dsmem = nullptr;
  size_t dsmem_size = 0;
  char* dsmem_map = nullptr;
  size_t dsmem_map_size = 0;
  std::vector<unsigned> order;
  uint64_t rng = 0;
};

struct Config {
  int order = 0;  // 0 forward, 1 reverse, 2 random
  uint64_t seed = 1;
  size_t stack_bytes = 256 * 1024;
  unsigned watchdog_s = 120;
  char spec[64] = "forward";
};

std::mutex g_launch_mutex;
std::mutex g_config_mutex;
Config g_config;
bool g_config_loaded = false;
Launch g_L;
Launch* g_launch = nullptr;  // non-null while a launch runs
std::vector<Thread> g_threads;
std::vector<Stack> g_stacks;
size_t g_stacks_bytes = 0;
Thread* g_cur = nullptr;  // the CUDA thread running now (on its fiber)
FiberCtx g_sched;
const void* g_main_bottom = nullptr;
size_t g_main_size = 0;
void* g_main_fake = nullptr;
thread_local cudaError_t g_last_error = cudaSuccess;

std::atomic<uint64_t> g_n_launches{0}, g_n_blocks{0}, g_n_threads{0}, g_n_switches{0};
// Synchronisation events (barrier or collective arrivals, thread exits): what
// the watchdog counts as progress. __nanosleep yields are not progress.
std::atomic<uint64_t> g_n_progress{0};
std::atomic<bool> g_watch_active{false};
std::atomic<uint64_t> g_watch_launch{0};

struct Abort {};  // unwinds a suspended thread when its block is abandoned
struct KernelFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void asan_start(void** fake_save, const void* bottom, size_t size) {
#if LLMPACK_SIMT_ASAN
  __sanitizer_start_switch_fiber(fake_save, bottom, size);
#else
  (void)fake_save, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void* fake_save, const void** bottom_old, size_t* size_old) {
#if LLMPACK_SIMT_ASAN
  __sanitizer_finish_switch_fiber(fake_save, bottom_old, size_old);
#else
  (void)fake_save, (void)bottom_old, (void)size_old;
#endif
}

using detail::fmt;

// "csrc/sparse24/sparse24_cuda.cu:42" rather than an absolute path.
std::string where(const Loc& loc) {
  const char* f = loc.file_name();
  if (!f || !*f) return "?";
  for (const char* key : {"/csrc/", "/tests/"}) {
    const char* p = std::strstr(f, key);
    if (p) {
      f = p + 1;
      break;
    }
  }
  return fmt("%s:%u", f, static_cast<unsigned>(loc.line()));
}

std::string dim_str(dim3 d) { return fmt("(%u,%u,%u)", d.x, d.y, d.z); }
std::string idx_str(uint3 d) { return fmt("(%u,%u,%u)", d.x, d.y, d.z); }
std::string thread_str(const Thread& t) {
  return fmt("thread %s [warp %u, lane %u]", idx_str(t.idx).c_str(), t.warp, t.lane);
}
std::string mask_str(unsigned m) { return fmt("0x%08x", m); }

[[noreturn]] void fail_at(const Loc& loc, const std::string& what) { throw KernelFailure(where(loc) + ": " + what); }

void record_failure(Launch& L, const std::string& what) {
  if (L.failed) return;
  L.failed = true;
  L.error = what;
}

Thread& current(const Loc& loc, const char* what) {
  if (!g_cur) {
    throw std::runtime_error(fmt("llmpack SIMT emulator: %s called outside a kernel launch (%s)", what,
                                 where(loc).c_str()));
  }
  return *g_cur;
}

// ---- configuration -----------------------------------------------------------------
bool parse_schedule(const char* s, Config& c) {
  if (!s || !*s || !std::strcmp(s, "forward")) {
    c.order = 0;
  } else if (!std::strcmp(s, "reverse")) {
    c.order = 1;
  } else if (!std::strncmp(s, "random", 6) && (s[6] == 0 || s[6] == ':')) {
    c.order = 2;
    c.seed = s[6] == ':' ? std::strtoull(s + 7, nullptr, 10) : 1;
  } else {
    return false;
  }
  std::snprintf(c.spec, sizeof c.spec, "%s", (s && *s) ? s : "forward");
  return true;
}

void load_config_locked() {
  if (g_config_loaded) return;
  g_config_loaded = true;
  if (const char* s = std::getenv("LLMPACK_SIMT_SCHEDULE")) {
    if (!parse_schedule(s, g_config)) {
      std::fprintf(stderr, "llmpack SIMT emulator: ignoring LLMPACK_SIMT_SCHEDULE=%s (want forward, reverse, random[:seed])\n", s);
    }
  }
  if (const char* s = std::getenv("LLMPACK_SIMT_STACK_KB")) {
    const long kb = std::strtol(s, nullptr, 10);
    if (kb >= 16) g_config.stack_bytes = static_cast<size_t>(kb) * 1024;
  }
  if (const char* s = std::getenv("LLMPACK_SIMT_WATCHDOG_S")) g_config.watchdog_s = static_cast<unsigned>(std::strtoul(s, nullptr, 10));
}

Config config() {
  std::lock_guard<std::mutex> g(g_config_mutex);
  load_config_locked();
  return g_config;
}

// ---- stacks ------------------------------------------------------------------------
size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

void ensure_stacks(unsigned n, size_t bytes) {
  const size_t pg = page_size();
  bytes = (bytes + pg - 1) / pg * pg;
  if (g_stacks_bytes != bytes) {
    for (Stack& s : g_stacks) munmap(s.map, s.map_size);
    g_stacks.clear();
    g_stacks_bytes = bytes;
  }
  while (g_stacks.size() < n) {
    Stack s;
    s.map_size = bytes + pg;
    void* m = mmap(nullptr, s.map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("llmpack SIMT emulator: cannot allocate fiber stacks (mmap failed)");
    s.map = static_cast<char*>(m);
    mprotect(s.map, pg, PROT_NONE);  // guard page below the stack
    s.lo = s.map + pg;
    s.size = bytes;
    g_stacks.push_back(s);
  }
}

// ---- dynamic shared memory -----------------------------------------------------------
// Plain build: the buffer ends at a PROT_NONE page, so running off its end
// faults (reported by the SIGSEGV handler below). ASan build: a heap block of
// exactly the launch's size, so ASan reports any access past it.
void alloc_dsmem(Launch& L, size_t bytes) {
  L.dsmem_size = bytes;
#if LLMPACK_SIMT_ASAN
  L.dsmem = static_cast<char*>(::operator new(bytes ? bytes : 1, std::align_val_t(16)));
  if (bytes == 0) {
    // Zero-size launch: keep a valid pointer with no accessible bytes.
    ::operator delete(L.dsmem, std::align_val_t(16));
    L.dsmem = static_cast<char*>(::operator new(0, std::align_val_t(16)));
  }
#else
  const size_t pg = page_size();
  const size_t rounded = (bytes + 15) / 16 * 16;
  const size_t body = (rounded + pg - 1) / pg * pg;
  L.dsmem_map_size = body + pg;
  void* m = mmap(nullptr, L.dsmem_map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::runtime_error("llmpack SIMT emulator: cannot allocate dynamic shared memory");
  L.dsmem_map = static_cast<char*>(m);
  mprotect(L.dsmem_map + body, pg, PROT_NONE);
  L.dsmem = L.dsmem_map + body - rounded;
#endif
}

void free_dsmem(Launch& L) {
#if LLMPACK_SIMT_ASAN
  if (L.dsmem) ::operator delete(L.dsmem, std::align_val_t(16));
#else
  if (L.dsmem_map) munmap(L.dsmem_map, L.dsmem_map_size);
#endif
  L.dsmem = L.dsmem_map = nullptr;
  L.dsmem_size = L.dsmem_map_size = 0;
}

// ---- fault reporting (plain build) ---------------------------------------------------
#if !LLMPACK_SIMT_ASAN
struct sigaction g_old_segv, g_old_bus;
stack_t g_old_altstack;
alignas(16) char g_altstack[64 * 1024];
char g_fault_prefix[512];
bool g_handler_installed = false;

struct SigWriter {
  char buf[1536];
  size_t n = 0;
  SigWriter& s(const char* p) {
    while (p && *p && n + 1 < sizeof buf) buf[n++] = *p++;
    return *this;
  }
  SigWriter& c(char ch) {
    if (n + 1 < sizeof buf) buf[n++] = ch;
    return *this;
  }
  SigWriter& u(unsigned long long v) {
    char t[24];
    int k = 0;
    do {
      t[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    while (k) c(t[--k]);
    return *this;
  }
  SigWriter& x(unsigned long long v) {
    s("0x");
    char t[20];
    int k = 0;
    do {
      t[k++] = "0123456789abcdef"[v & 15];
      v >>= 4;
    } while (v);
    while (k) c(t[--k]);
    return *this;
  }
  void flush() {
    ssize_t r = write(2, buf, n);
    (void)r;
  }
};

void fault_handler(int sig, siginfo_t* si, void*) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  SigWriter w;
  w.s("\nllmpack SIMT emulator: ").s(sig == SIGSEGV ? "segmentation fault" : "bus error").s(" in ").s(g_fault_prefix);
  if (Thread* t = g_cur) {
    w.s(": block (").u(g_L.block.x).s(",").u(g_L.block.y).s(",").u(g_L.block.z).s("), thread (");
    w.u(t->idx.x).s(",").u(t->idx.y).s(",").u(t->idx.z).s(")");
  }
  const size_t pg = page_size();
  const uintptr_t end = reinterpret_cast<uintptr_t>(g_L.dsmem) + g_L.dsmem_size;
  const uintptr_t guard = reinterpret_cast<uintptr_t>(g_L.dsmem_map) + g_L.dsmem_map_size - pg;
  bool known = false;
  if (g_L.dsmem_map && a >= guard && a < guard + pg) {
    w.s(": out-of-bounds access to dynamic shared memory: address ").x(a).s(" is ").u(a - end).s(" bytes past the end of the ");
    w.u(g_L.dsmem_size).s("-byte dynamic shared memory of this launch");
    known = true;
  } else {
    for (const Stack& s : g_stacks) {
      const uintptr_t lo = reinterpret_cast<uintptr_t>(s.map);
      if (a >= lo && a < lo + pg) {
        w.s(": stack overflow: a CUDA thread used more than ").u(s.size / 1024).s(" KiB of stack (raise LLMPACK_SIMT_STACK_KB)");
        known = true;
        break;
      }
    }
  }
  if (!known) w.s(": invalid memory access at address ").x(a).s(" (out-of-bounds global memory? run the ASan build: scripts/build_simt.sh, tests/test_emulator_asan.py)");
  w.s("\n").flush();
  // Give the signal back to whoever had it; the faulting access re-executes.
  sigaction(sig, sig == SIGSEGV ? &g_old_segv : &g_old_bus, nullptr);
}

void install_fault_handler(const Launch& L) {
  std::snprintf(g_fault_prefix, sizeof g_fault_prefix, "kernel %s <<<%s, %s, %zu>>>", L.name.c_str(),
                dim_str(L.spec.grid).c_str(), dim_str(L.spec.block).c_str(), L.spec.smem);
  stack_t ss{};
  ss.ss_sp = g_altstack;
  ss.ss_size = sizeof g_altstack;
  sigaltstack(&ss, &g_old_altstack);
  struct sigaction sa {};
  sa.sa_sigaction = &fault_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
  g_handler_installed = true;
}

void remove_fault_handler() {
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  sigaction(SIGBUS, &g_old_bus, nullptr);
  sigaltstack(&g_old_altstack, nullptr);
  g_handler_installed = false;
}
#endif

// ---- watchdog ------------------------------------------------------------------------
// A thread that spins without ever synchronising (waiting for a flag another
// thread of the block, or another block, would set) never gives the scheduler
// control back. Rather than hang a CI job, abort with a message.
void watchdog_loop() {
  uint64_t last_switches = 0, last_launch = 0;
  auto since = std::chrono::steady_clock::now();
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const unsigned limit = g_config.watchdog_s;
    const uint64_t sw = g_n_progress.load(), ln = g_watch_launch.load();
    const auto now = std::chrono::steady_clock::now();
    if (!g_watch_active.load() || sw != last_switches || ln != last_launch || limit == 0) {
      last_switches = sw;
      last_launch = ln;
      since = now;
      continue;
    }
    if (now - since > std::chrono::seconds(limit)) {
      std::fprintf(stderr,
                   "\nllmpack SIMT emulator: watchdog: kernel %s has run %u s without any thread reaching a "
                   "barrier, a warp-synchronous operation or its end. A spin-wait for another block never ends "
                   "here (blocks run one after another), nor one for another thread without __nanosleep() in "
                   "the loop (threads run until they synchronise). (LLMPACK_SIMT_WATCHDOG_S=0 disables.)\n",
                   g_L.name.c_str(), limit);
      std::fflush(stderr);
      std::abort();
    }
  }
}

void start_watchdog() {
  static std::once_flag once;
  std::call_once(once, [] { std::thread(watchdog_loop).detach(); });
}

// ---- scheduling ------------------------------------------------------------------------
uint64_t next_rand(uint64_t& s) {
  // splitmix64
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <class V>
void shuffle(V& v, uint64_t& s) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next_rand(s) % i]);
}

void resume(Thread& t) {
  g_cur = &t;
  detail::g_builtins.thread_idx = t.idx;
  t.state = St::running;
  t.started = true;
  g_n_switches.fetch_add(1, std::memory_order_relaxed);
  asan_start(&g_main_fake, t.stack->lo, t.stack->size);
  fiber_switch(g_sched, t.ctx);
  asan_finish(g_main_fake, nullptr, nullptr);
  g_cur = nullptr;
}

// On the thread's fiber: back to the scheduler until resumed.
void suspend(Thread& t) {
  asan_start(&t.asan_fake, g_main_bottom, g_main_size);
  fiber_switch(t.ctx, g_sched);
  asan_finish(t.asan_fake, &g_main_bottom, &g_main_size);
  if (g_L.aborting) throw Abort{};
}

void complete_cp_async(Thread& t, uint64_t upto_group, bool all) {
  size_t k = 0;
  for (CpCopy& c : t.cp) {
    if (all || (c.group != 0 && c.group <= upto_group)) {
      std::memcpy(c.dst, c.src, 16);
    } else {
      t.cp[k++] = c;
    }
  }
  t.cp.resize(k);
}

// Not instrumented: this frame is never popped (the fiber ends by switching
// away), so it must leave no poisoned redzones on the stack.
LLMPACK_SIMT_NO_ASAN void fiber_main(void* arg) {
  Thread& t = *static_cast<Thread*>(arg);
  asan_finish(nullptr, &g_main_bottom, &g_main_size);
  Launch& L = g_L;
  if (!L.aborting) {
    try {
      L.body(L.ctx);
      complete_cp_async(t, 0, true);  // outstanding cp.async land eventually
    } catch (const Abort&) {
    } catch (const KernelFailure& e) {
      record_failure(L, thread_str(t) + ": " + e.what());
    } catch (const std::exception& e) {
      record_failure(L, thread_str(t) + ": the kernel threw an exception: " + e.what());
    } catch (...) {
      record_failure(L, thread_str(t) + ": the kernel threw an unknown exception");
    }
  }
  t.state = St::done;
  ++L.done;
  g_n_progress.fetch_add(1, std::memory_order_relaxed);
  asan_start(nullptr, g_main_bottom, g_main_size);  // this fiber is finished
  fiber_switch(t.ctx, g_sched);
  std::abort();  // never resumed
}

unsigned lanes_in_warp(const Launch& L, unsigned warp) {
  const unsigned n = std::min(32u, L.nthreads - 32 * warp);
  return n == 32 ? 0xFFFFFFFFu : ((1u << n) - 1);
}

Thread& lane_thread(const Thread& t, unsigned lane) { return g_threads[t.warp * 32 + lane]; }

bool same_site(const Loc& a, const Loc& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

const char* state_name(St s) {
  switch (s) {
    case St::ready: return "ready";
    case St::running: return "running";
    case St::barrier: return "at a barrier";
    case St::warp: return "in a warp collective";
    case St::done: return "exited";
  }
  return "?";
}

std::string waiting_on(const Thread& u) {
  switch (u.state) {
    case St::barrier: return fmt("is waiting at __syncthreads (%s)", where(u.loc).c_str());
    case St::warp: return fmt("is at %s (%s) with mask %s", u.wop->name, where(u.loc).c_str(), mask_str(u.wmask).c_str());
    case St::done: return "has exited";
    default: return state_name(u.state);
  }
}

// Every live thread is blocked: say why, as precisely as possible.
std::string diagnose_deadlock(Launch& L) {
  // 1. A warp collective that cannot complete.
  for (unsigned i = 0; i < L.nthreads; ++i) {
    const Thread& t = g_threads[i];
    if (t.state != St::warp) continue;
    const unsigned exist = lanes_in_warp(L, t.warp);
    for (unsigned j = 0; j < 32; ++j) {
      if (!(t.wmask >> j & 1) || j == t.lane || !(exist >> j & 1)) continue;
      const Thread& u = lane_thread(t, j);
      if (u.state == St::done || (u.state == St::warp && u.wop == t.wop && u.wmask == t.wmask)) continue;
      return fmt("deadlock: %s waits at %s (%s) with mask %s, but lane %u (%s) %s; every lane named in the mask "
                 "must execute the same warp-synchronous operation with the same mask",
                 thread_str(t).c_str(), t.wop->name, where(t.loc).c_str(), mask_str(t.wmask).c_str(), j,
                 idx_str(u.idx).c_str(), waiting_on(u).c_str());
    }
  }
  // 2. A block barrier that cannot complete.
  unsigned waiting = 0, exited = 0;
  const Thread *first_wait = nullptr, *first_exit = nullptr, *other_site = nullptr;
  for (unsigned i = 0; i < L.nthreads; ++i) {
    const Thread& t = g_threads[i];
    if (t.state == St::barrier) {
      ++waiting;
      if (!first_wait) first_wait = &t;
      else if (!other_site && !same_site(t.loc, first_wait->loc)) other_site = &t;
    } else if (t.state == St::done) {
      ++exited;
      if (!first_exit) first_exit = &t;
    }
  }
  if (first_wait && other_site) {
    return fmt("deadlock: threads wait at different barriers: %s at %s, %s at %s; all threads of a block must "
               "reach the same __syncthreads",
               thread_str(*first_wait).c_str(), where(first_wait->loc).c_str(), thread_str(*other_site).c_str(),
               where(other_site->loc).c_str());
  }
  if (first_wait && first_exit) {
    return fmt("deadlock: __syncthreads at %s was reached by %u of %u threads; %u threads exited without reaching "
               "it (first: %s); every thread of the block must reach the barrier",
               where(first_wait->loc).c_str(), waiting, L.nthreads, exited, thread_str(*first_exit).c_str());
  }
  return fmt("deadlock: no thread can make progress (%u at barriers, %u exited of %u)", waiting, exited, L.nthreads);
}

// Completes t's collective if every lane named in its mask has either arrived
// at the same operation with the same mask or exited (lanes past the end of a
// partial warp count as exited): CUDA requires the *non-exited* lanes of the
// mask to take part. Runs exec over the arrived lanes (exited ones are null:
// reading their value is an error) and makes them ready. Returns false if some
// named lane is still running or waits elsewhere.
bool try_complete(const Thread& t, bool exits_settled) {
  const Launch& L = g_L;
  const WarpOp& op = *t.wop;
  const unsigned mask = t.wmask, exist = lanes_in_warp(L, t.warp);
  unsigned arrived = 0;
  for (unsigned j = 0; j < 32; ++j) {
    if (!(mask >> j & 1)) continue;
    if (!(exist >> j & 1)) continue;
    const Thread& u = lane_thread(t, j);
    if (u.state == St::warp && u.wop == &op && u.wmask == mask) {
      arrived |= 1u << j;
    } else if (u.state != St::done || !exits_settled) {
      return false;
    }
  }
  LaneIO* lanes[32] = {};
  for (unsigned j = 0; j < 32; ++j)
    if (arrived >> j & 1) lanes[j] = lane_thread(t, j).wio;
  op.exec(lanes, arrived);
  for (unsigned j = 0; j < 32; ++j)
    if (arrived >> j & 1) lane_thread(t, j).state = St::ready;
  return true;
}

// At quiescence: collectives whose missing lanes have all exited can now complete.
bool complete_with_exited_lanes(Launch& L) {
  bool any = false;
  for (unsigned i = 0; i < L.nthreads && !L.failed; ++i) {
    Thread& t = g_threads[i];
    if (t.state != St::warp) continue;
    g_cur = &t;  // exec reports errors as this lane's
    try {
      any |= try_complete(t, true);
    } catch (const KernelFailure& e) {
      record_failure(L, thread_str(t) + ": " + e.what());
    }
    g_cur = nullptr;
  }
  return any;
}

void abort_block(Launch& L) {
  L.aborting = true;
  for (unsigned i = 0; i < L.nthreads; ++i) {
    Thread& t = g_threads[i];
    if (t.state == St::done) continue;
    if (!t.started) {
      t.state = St::done;
      ++L.done;
      continue;
    }
    resume(t);  // its suspend() throws Abort and the fiber unwinds
  }
}

void run_block(Launch& L, const Config& cfg) {
  const unsigned n = L.nthreads;
  const dim3 bd = L.spec.block;
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = g_threads[i];
    t.stack = &g_stacks[i];
    t.state = St::ready;
    t.started = false;
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.idx = {i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    t.wop = nullptr;
    t.wio = nullptr;
    t.cp.clear();
    t.cp_seq = 0;
    t.asan_fake = nullptr;
    fiber_init(t.ctx, t.stack->lo, t.stack->size, &fiber_main, &t);
  }
  L.done = L.at_barrier = 0;
  L.aborting = false;
  if (L.dsmem_size) std::memset(L.dsmem, 0xFF, L.dsmem_size);  // uninitialised shared memory reads as NaN / -1
  detail::g_builtins.block_idx = L.block;
  g_n_blocks.fetch_add(1, std::memory_order_relaxed);
  g_n_threads.fetch_add(n, std::memory_order_relaxed);

  while (L.done < n && !L.failed) {
    if (cfg.order == 2) shuffle(L.order, L.rng);
    bool ran = false;
    for (unsigned i : L.order) {
      Thread& t = g_threads[i];
      if (t.state != St::ready) continue;
      ran = true;
      resume(t);
      if (L.failed) break;
    }
    if (L.failed || L.done == n) break;
    if (!ran && !complete_with_exited_lanes(L) && !L.failed) record_failure(L, diagnose_deadlock(L));
  }
  if (L.failed) abort_block(L);
}

size_t smem_limit() {
  // Maximum shared memory per block (opt-in) of the modelled architecture.
  if (LLMPACK_SIMT_ARCH >= 900) return 227 * 1024;
  if (LLMPACK_SIMT_ARCH >= 800) return 163 * 1024;
  return 48 * 1024;
}

std::string launch_title(const Launch& L) {
  return fmt("kernel %s <<<grid %s, block %s, smem %zu>>>", L.name.c_str(), dim_str(L.spec.grid).c_str(),
             dim_str(L.spec.block).c_str(), L.spec.smem);
}

[[noreturn]] void config_error(const Launch& L, const std::string& why) {
  g_last_error = cudaErrorInvalidConfiguration;
  throw std::runtime_error("llmpack SIMT emulator: " + launch_title(L) + ": invalid launch: " + why);
}

}  // namespace

// ---- public entry points ---------------------------------------------------------------
void fail(const Loc& loc, const char* what) {
  current(loc, "a device-side check");
  throw KernelFailure(where(loc) + ": " + what);
}

cudaError_t get_last_error(bool reset) {
  const cudaError_t e = g_last_error;
  if (reset) g_last_error = cudaSuccess;
  return e;
}
void set_last_error(cudaError_t e) { g_last_error = e; }

void run_kernel(const LaunchSpec& spec, void (*body)(const void*), const void* ctx) {
  if (g_cur) {
    throw std::runtime_error("llmpack SIMT emulator: a kernel launched a kernel (dynamic parallelism is not emulated)");
  }
  const Config cfg = config();
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  Launch& L = g_L;
  L.spec = spec;
  L.name = spec.name ? spec.name : "<kernel>";
  L.body = body;
  L.ctx = ctx;
  L.failed = false;
  L.error.clear();
  const dim3 b = spec.block, g = spec.grid;
  if (b.x == 0 || b.y == 0 || b.z == 0) config_error(L, "block has a zero dimension");
  if (g.x == 0 || g.y == 0 || g.z == 0) config_error(L, "grid has a zero dimension");
  if (b.x > 1024 || b.y > 1024 || b.z > 64 || static_cast<unsigned long long>(b.x) * b.y * b.z > 1024) {
    config_error(L, fmt("block size %s: at most 1024 threads per block (x, y <= 1024, z <= 64)", dim_str(b).c_str()));
  }
  if (g.x > 0x7FFFFFFFu || g.y > 65535 || g.z > 65535) {
    config_error(L, fmt("grid size %s: x <= 2^31-1, y, z <= 65535", dim_str(g).c_str()));
  }
  if (spec.smem > smem_limit()) {
    config_error(L, fmt("%zu bytes of dynamic shared memory exceed the %zu-byte per-block maximum of sm_%d",
                        spec.smem, smem_limit(), LLMPACK_SIMT_ARCH / 10));
  }
  L.nthreads = b.x * b.y * b.z;
  ensure_stacks(L.nthreads, cfg.stack_bytes);
  if (g_threads.size() < L.nthreads) g_threads.resize(1024);
  alloc_dsmem(L, spec.smem);
  struct Cleanup {
    Launch& L;
    ~Cleanup() {
#if !LLMPACK_SIMT_ASAN
      if (g_handler_installed) remove_fault_handler();
#endif
      g_watch_active = false;
      g_launch = nullptr;
      free_dsmem(L);
    }
  } cleanup{L};
  L.order.resize(L.nthreads);
  for (unsigned i = 0; i < L.nthreads; ++i) L.order[i] = cfg.order == 1 ? L.nthreads - 1 - i : i;
  L.rng = cfg.seed;
  detail::g_builtins.block_dim = b;
  detail::g_builtins.grid_dim = g;
  g_launch = &L;
  g_n_launches.fetch_add(1, std::memory_order_relaxed);
  if (cfg.watchdog_s) start_watchdog();
  g_watch_launch.fetch_add(1);
  g_watch_active = true;
#if !LLMPACK_SIMT_ASAN
  install_fault_handler(L);
#endif

  const unsigned long long nblocks = static_cast<unsigned long long>(g.x) * g.y * g.z;
  std::vector<unsigned long long> block_order;
  if (cfg.order != 0 && nblocks <= (1ull << 22)) {
    block_order.resize(nblocks);
    for (unsigned long long i = 0; i < nblocks; ++i) block_order[i] = cfg.order == 1 ? nblocks - 1 - i : i;
    if (cfg.order == 2) shuffle(block_order, L.rng);
  }
  for (unsigned long long k = 0; k < nblocks && !L.failed; ++k) {
    const unsigned long long lin = block_order.empty() ? k : block_order[k];
    L.block = {static_cast<unsigned>(lin % g.x), static_cast<unsigned>((lin / g.x) % g.y),
               static_cast<unsigned>(lin / (static_cast<unsigned long long>(g.x) * g.y))};
    run_block(L, cfg);
  }

  if (L.failed) {
    g_last_error = cudaErrorLaunchFailure;
    throw std::runtime_error(fmt("llmpack SIMT emulator: %s: block %s, %s", launch_title(L).c_str(),
                                 idx_str(L.block).c_str(), L.error.c_str()));
  }
}

namespace detail {

int block_barrier(BarOp op, int pred, const Loc& loc) {
  Thread& t = current(loc, "__syncthreads");
  Launch& L = g_L;
  if (L.aborting) throw Abort{};
  g_n_progress.fetch_add(1, std::memory_order_relaxed);
  t.state = St::barrier;
  t.loc = loc;
  t.bar_op = op;
  t.bar_pred = pred;
  if (++L.at_barrier == L.nthreads) {
    // Everyone arrived (nobody exited): same call site required.
    int count = 0;
    for (unsigned i = 0; i < L.nthreads; ++i) {
      const Thread& u = g_threads[i];
      if (!same_site(u.loc, t.loc)) {
        fail_at(t.loc, fmt("threads of the block wait at different barriers: %s at %s and %s at %s; all threads "
                                "must reach the same __syncthreads",
                                thread_str(u).c_str(), where(u.loc).c_str(), thread_str(t).c_str(), where(t.loc).c_str()));
      }
      count += u.bar_pred != 0;
    }
    int result = 0;
    switch (op) {
      case BarOp::sync: result = 0; break;
      case BarOp::count: result = count; break;
      case BarOp::all: result = count == static_cast<int>(L.nthreads); break;
      case BarOp::any: result = count != 0; break;
    }
    for (unsigned i = 0; i < L.nthreads; ++i) {
      g_threads[i].bar_result = result;
      g_threads[i].state = St::ready;
    }
    L.at_barrier = 0;
  }
  suspend(t);
  return t.bar_result;
}

void warp_collective(const WarpOp& op, unsigned mask, LaneIO& io, const Loc& loc) {
  Thread& t = current(loc, op.name);
  Launch& L = g_L;
  if (L.aborting) throw Abort{};
  t.loc = loc;
  const unsigned exist = lanes_in_warp(L, t.warp);
  if (op.whole_warp) {
    // .aligned: all 32 lanes, none exited.
    if (exist != 0xFFFFFFFFu) {
      fail_at(loc, fmt("%s: warp %u has only %d threads; this instruction needs all 32 lanes (make the block "
                       "size a multiple of 32)",
                       op.name, t.warp, __builtin_popcount(exist)));
    }
    for (unsigned j = 0; j < 32; ++j) {
      if (lane_thread(t, j).state == St::done) {
        fail_at(loc, fmt("%s: lane %u of the warp has exited; this instruction needs all 32 lanes", op.name, j));
      }
    }
  }
  if (!(mask >> t.lane & 1)) {
    fail_at(loc, fmt("%s: mask %s does not include the calling lane %u", op.name, mask_str(mask).c_str(), t.lane));
  }
  g_n_progress.fetch_add(1, std::memory_order_relaxed);
  t.state = St::warp;
  t.wop = &op;
  t.wmask = mask;
  t.wio = &io;
  for (unsigned j = 0; j < 32; ++j) {
    if (!(mask >> j & 1) || j == t.lane || !(exist >> j & 1)) continue;
    const Thread& u = lane_thread(t, j);
    if (u.state == St::warp && (u.wop != &op || u.wmask != mask) && (u.wmask >> t.lane & 1)) {
      // Each waits for the other at a different instruction: a deadlock now.
      fail_at(loc, fmt("lanes disagree: lane %u is at %s (%s) with mask %s while lane %u is at %s (%s) with "
                       "mask %s; all lanes in a mask must execute the same warp-synchronous operation with "
                       "the same mask",
                       t.lane, op.name, where(loc).c_str(), mask_str(mask).c_str(), j, u.wop->name,
                       where(u.loc).c_str(), mask_str(u.wmask).c_str()));
    }
  }
  // Lanes that exited may still be followed by ones that arrive: exited lanes
  // are only written off when nothing else can run (complete_with_exited_lanes).
  try_complete(t, false);
  suspend(t);
}

// ---- shuffles, votes, match, reduce -------------------------------------------------
namespace {

void exec_shfl(int mode, LaneIO* const* L, unsigned mask) {
  uint32_t v0[32], v1[32];
  for (unsigned i = 0; i < 32; ++i)
    if (mask >> i & 1) v0[i] = L[i]->in[0], v1[i] = L[i]->in[1];
  for (unsigned i = 0; i < 32; ++i) {
    if (!(mask >> i & 1)) continue;
    // PTX shfl.sync: c = ((32 - width) << 8) | clamp, clamp = 0 for .up else 31.
    const long long b = L[i]->arg[0];
    const int width = L[i]->arg[1];
    const long long segmask = (32 - width) & 31;
    const long long clamp = mode == kShflUp ? 0 : 31;
    const long long lane = i;
    const long long min_lane = lane & segmask;
    const long long max_lane = min_lane | (clamp & ~segmask);
    long long j = lane;
    bool in_range = false;
    switch (mode) {
      case kShflIdx: j = min_lane | ((b & 31) & ~segmask); in_range = j <= max_lane; break;
      case kShflUp: j = lane - b; in_range = j >= max_lane; break;
      case kShflDown: j = lane + b; in_range = j <= max_lane; break;
      case kShflBfly: j = lane ^ b; in_range = j <= max_lane; break;
    }
    if (!in_range) j = lane;
    if (!(mask >> j & 1)) {
      fail_at(g_cur->loc, fmt("%s: lane %u reads lane %lld, which %s (undefined on the GPU)", g_cur->wop->name, i, j,
                              (g_cur->wmask >> j & 1) ? "has exited or does not exist"
                                                      : ("is not in the mask " + mask_str(g_cur->wmask)).c_str()));
    }
    L[i]->out[0] = v0[j];
    L[i]->out[1] = v1[j];
  }
}
void exec_shfl_idx(LaneIO* const* L, unsigned m) { exec_shfl(kShflIdx, L, m); }
void exec_shfl_up(LaneIO* const* L, unsigned m) { exec_shfl(kShflUp, L, m); }
void exec_shfl_down(LaneIO* const* L, unsigned m) { exec_shfl(kShflDown, L, m); }
void exec_shfl_bfly(LaneIO* const* L, unsigned m) { exec_shfl(kShflBfly, L, m); }
const WarpOp kShfl[4] = {{"__shfl_sync", &exec_shfl_idx, false},
                         {"__shfl_up_sync", &exec_shfl_up, false},
                         {"__shfl_down_sync", &exec_shfl_down, false},
                         {"__shfl_xor_sync", &exec_shfl_bfly, false}};

unsigned ballot_of(LaneIO* const* L, unsigned mask) {
  unsigned b = 0;
  for (unsigned i = 0; i < 32; ++i)
    if ((mask >> i & 1) && L[i]->arg[0]) b |= 1u << i;
  return b;
}
void exec_vote(int mode, LaneIO* const* L, unsigned mask) {
  const unsigned b = ballot_of(L, mask);
  const unsigned r = mode == kBallot ? b : mode == kAny ? (b != 0) : (b == mask);
  for (unsigned i = 0; i < 32; ++i)
    if (mask >> i & 1) L[i]->out[0] = r;
}
void exec_ballot(LaneIO* const* L, unsigned m) { exec_vote(kBallot, L, m); }
void exec_any(LaneIO* const* L, unsigned m) { exec_vote(kAny, L, m); }
void exec_all(LaneIO* const* L, unsigned m) { exec_vote(kAll, L, m); }
const WarpOp kVote[3] = {{"__ballot_sync", &exec_ballot, false},
                         {"__any_sync", &exec_any, false},
                         {"__all_sync", &exec_all, false}};

void exec_nothing(LaneIO* const*, unsigned) {}
const WarpOp kSyncwarp = {"__syncwarp", &exec_nothing, false};

uint64_t value64(const LaneIO* io) { return io->in[0] | (static_cast<uint64_t>(io->in[1]) << 32); }
void exec_match_any(LaneIO* const* L, unsigned mask) {
  for (unsigned i = 0; i < 32; ++i) {
    if (!(mask >> i & 1)) continue;
    unsigned r = 0;
    for (unsigned j = 0; j < 32; ++j)
      if ((mask >> j & 1) && value64(L[j]) == value64(L[i])) r |= 1u << j;
    L[i]->out[0] = r;
  }
}
void exec_match_all(LaneIO* const* L, unsigned mask) {
  bool all = true;
  const unsigned first = static_cast<unsigned>(__builtin_ctz(mask));
  for (unsigned j = 0; j < 32; ++j)
    if ((mask >> j & 1) && value64(L[j]) != value64(L[first])) all = false;
  for (unsigned i = 0; i < 32; ++i)
    if (mask >> i & 1) L[i]->out[0] = all ? mask : 0, L[i]->out[1] = all;
}
const WarpOp kMatch[2] = {{"__match_any_sync", &exec_match_any, false}, {"__match_all_sync", &exec_match_all, false}};

template <int Mode, bool Signed>
void exec_reduce(LaneIO* const* L, unsigned mask) {
  uint32_t acc = 0;
  bool first = true;
  for (unsigned i = 0; i < 32; ++i) {
    if (!(mask >> i & 1)) continue;
    const uint32_t v = L[i]->in[0];
    if (first) {
      acc = v;
      first = false;
      continue;
    }
    switch (Mode) {
      case kRedAdd: acc += v; break;
      case kRedMin: acc = Signed ? (static_cast<int32_t>(v) < static_cast<int32_t>(acc) ? v : acc) : std::min(acc, v); break;
      case kRedMax: acc = Signed ? (static_cast<int32_t>(v) > static_cast<int32_t>(acc) ? v : acc) : std::max(acc, v); break;
      case kRedAnd: acc &= v; break;
      case kRedOr: acc |= v; break;
      case kRedXor: acc ^= v; break;
    }
  }
  for (unsigned i = 0; i < 32; ++i)
    if (mask >> i & 1) L[i]->out[0] = acc;
}
const WarpOp kReduce[2][6] = {
    {{"__reduce_add_sync", &exec_reduce<kRedAdd, false>, false},
     {"__reduce_min_sync", &exec_reduce<kRedMin, false>, false},
     {"__reduce_max_sync", &exec_reduce<kRedMax, false>, false},
     {"__reduce_and_sync", &exec_reduce<kRedAnd, false>, false},
     {"__reduce_or_sync", &exec_reduce<kRedOr, false>, false},
     {"__reduce_xor_sync", &exec_reduce<kRedXor, false>, false}},
    {{"__reduce_add_sync", &exec_reduce<kRedAdd, true>, false},
     {"__reduce_min_sync(int)", &exec_reduce<kRedMin, true>, false},
     {"__reduce_max_sync(int)", &exec_reduce<kRedMax, true>, false},
     {"__reduce_and_sync", &exec_reduce<kRedAnd, true>, false},
     {"__reduce_or_sync", &exec_reduce<kRedOr, true>, false},
     {"__reduce_xor_sync", &exec_reduce<kRedXor, true>, false}}};

}  // namespace

uint64_t shfl(int mode, unsigned mask, uint64_t value, int b, int width, const Loc& loc) {
  if (width < 1 || width > 32 || (width & (width - 1))) {
    current(loc, kShfl[mode].name);
    fail_at(loc, fmt("%s: width %d must be a power of two in 1..32", kShfl[mode].name, width));
  }
  LaneIO io;
  io.in[0] = static_cast<uint32_t>(value);
  io.in[1] = static_cast<uint32_t>(value >> 32);
  io.arg[0] = b;
  io.arg[1] = width;
  warp_collective(kShfl[mode], mask, io, loc);
  return io.out[0] | (static_cast<uint64_t>(io.out[1]) << 32);
}

unsigned vote(int mode, unsigned mask, int pred, const Loc& loc) {
  LaneIO io;
  io.arg[0] = pred != 0;
  warp_collective(kVote[mode], mask, io, loc);
  return io.out[0];
}

void syncwarp(unsigned mask, const Loc& loc) {
  LaneIO io;
  warp_collective(kSyncwarp, mask, io, loc);
}

unsigned match(bool all, unsigned mask, uint64_t value, int* pred, const Loc& loc) {
  LaneIO io;
  io.in[0] = static_cast<uint32_t>(value);
  io.in[1] = static_cast<uint32_t>(value >> 32);
  warp_collective(kMatch[all], mask, io, loc);
  if (pred) *pred = static_cast<int>(io.out[1]);
  return io.out[0];
}

unsigned reduce(int mode, bool is_signed, unsigned mask, unsigned value, const Loc& loc) {
  LaneIO io;
  io.in[0] = value;
  warp_collective(kReduce[is_signed][mode], mask, io, loc);
  return io.out[0];
}

unsigned lane_id() {
  if (!g_cur) return 0;
  return g_cur->lane;
}

unsigned active_mask() {
  if (!g_cur) return 0;
  const unsigned exist = lanes_in_warp(g_L, g_cur->warp);
  unsigned m = 0;
  for (unsigned j = 0; j < 32; ++j)
    if ((exist >> j & 1) && lane_thread(*g_cur, j).state != St::done) m |= 1u << j;
  return m;
}

void yield_now() {
  if (!g_cur) return;
  if (g_L.aborting) throw Abort{};
  g_cur->state = St::ready;
  suspend(*g_cur);
}

unsigned long long clock_now() {
  return static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
}

void* dynamic_smem_base(const Loc& loc) {
  current(loc, "dynamic_smem");
  return g_L.dsmem;
}
size_t dynamic_smem_size() { return g_cur ? g_L.dsmem_size : 0; }

void check_dynamic_smem(size_t bytes, const Loc& loc) {
  current(loc, "dynamic_smem");
  if (bytes > g_L.dsmem_size) {
    fail_at(loc, fmt("the kernel uses %zu bytes of dynamic shared memory but the launch provides %zu "
                     "(the smem argument of LLMPACK_LAUNCH)",
                     bytes, g_L.dsmem_size));
  }
}

// Used by ptx_emu.cpp.
[[noreturn]] void ptx_fail(const std::string& what) { fail_at(g_cur->loc, what); }
bool in_dynamic_smem(const void* p, size_t n, size_t* offset) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), lo = reinterpret_cast<uintptr_t>(g_L.dsmem);
  if (!g_cur || !g_L.dsmem) return false;
  // Within the buffer, or touching the (guarded) bytes just past it.
  if (a < lo || a >= lo + g_L.dsmem_size + 4096) return false;
  (void)n;
  *offset = a - lo;
  return true;
}
size_t dynamic_smem_bytes_now() { return g_L.dsmem_size; }

void cp_async_push(void* dst, const void* src) { g_cur->cp.push_back({dst, src, 0}); }
void cp_async_commit_now() {
  Thread& t = *g_cur;
  ++t.cp_seq;
  for (CpCopy& c : t.cp)
    if (c.group == 0) c.group = t.cp_seq;
}
void cp_async_wait_now(int n) {
  Thread& t = *g_cur;
  if (n < 0) {
    cp_async_commit_now();
    complete_cp_async(t, t.cp_seq, false);
    return;
  }
  const uint64_t upto = t.cp_seq > static_cast<uint64_t>(n) ? t.cp_seq - n : 0;
  complete_cp_async(t, upto, false);
}
bool in_kernel() { return g_cur != nullptr; }

}  // namespace detail
}  // namespace llmpack::simt

// ---- C API for tests (ctypes) -------------------------------------------------------
LLMPACK_SIMT_EXPORT int llmpack_simt_set_schedule(const char* spec) {
  using namespace llmpack::simt;
  std::lock_guard<std::mutex> g(g_config_mutex);
  load_config_locked();
  Config c = g_config;
  if (!parse_schedule(spec, c)) return -1;
  g_config = c;
  return 0;
}

LLMPACK_SIMT_EXPORT const char* llmpack_simt_schedule() {
  using namespace llmpack::simt;
  std::lock_guard<std::mutex> g(g_config_mutex);
  load_config_locked();
  return g_config.spec;
}

// launches, blocks, threads, context switches since load.
LLMPACK_SIMT_EXPORT void llmpack_simt_counters(unsigned long long out[4]) {
  using namespace llmpack::simt;
  out[0] = g_n_launches.load();
  out[1] = g_n_blocks.load();
  out[2] = g_n_threads.load();
  out[3] = g_n_switches.load();
}

LLMPACK_SIMT_EXPORT int llmpack_simt_is_asan() { return LLMPACK_SIMT_ASAN; }
