// Minimal test harness for the SIMT emulator's C++ tests (no dependencies):
// SIMT_TEST(name) registers a test; `simt_unit_tests --list` prints them,
// `simt_unit_tests NAME...` runs some, no argument runs all. The Python side
// (tests/test_emulator_ptx.py) runs one process per test.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda/launch.cuh"
#include "common/cuda/ptx.cuh"

extern "C" int llmpack_simt_set_schedule(const char* spec);
extern "C" const char* llmpack_simt_schedule();

namespace simt_test {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Case {
  const char* name;
  void (*fn)();
};
std::vector<Case>& cases();

struct Reg {
  Reg(const char* n, void (*f)()) { cases().push_back({n, f}); }
};

std::string format(const char* f, ...) __attribute__((format(printf, 1, 2)));

// Runs `f`, which must throw std::runtime_error whose message contains every
// string in `parts`.
template <class F>
void expect_error(F f, const char* file, int line, std::initializer_list<const char*> parts) {
  try {
    f();
  } catch (const Failure&) {
    throw;
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (const char* p : parts) {
      if (msg.find(p) == std::string::npos) {
        throw Failure(format("%s:%d: error message lacks \"%s\":\n  %s", file, line, p, msg.c_str()));
      }
    }
    std::printf("  expected error: %s\n", msg.c_str());
    return;
  }
  throw Failure(format("%s:%d: expected an error, but the launch succeeded", file, line));
}

// Sets the emulator's schedule for a scope.
struct Schedule {
  std::string before;
  explicit Schedule(const char* spec) : before(llmpack_simt_schedule()) {
    if (llmpack_simt_set_schedule(spec) != 0) throw Failure(std::string("bad schedule ") + spec);
  }
  ~Schedule() { llmpack_simt_set_schedule(before.c_str()); }
};
inline const char* const kSchedules[] = {"forward", "reverse", "random:7"};

}  // namespace simt_test

#define SIMT_TEST(name)                                              \
  static void name();                                                \
  static ::simt_test::Reg simt_test_reg_##name(#name, &name);        \
  static void name()

#define CHECK(cond)                                                                                   \
  do {                                                                                                \
    if (!(cond)) throw ::simt_test::Failure(::simt_test::format("%s:%d: CHECK(%s) failed", __FILE__, __LINE__, #cond)); \
  } while (0)

#define CHECK_MSG(cond, ...)                                                                                 \
  do {                                                                                                       \
    if (!(cond))                                                                                             \
      throw ::simt_test::Failure(::simt_test::format("%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond) + \
                                 ::simt_test::format(__VA_ARGS__));                                          \
  } while (0)

#define EXPECT_ERROR(expr, ...) ::simt_test::expect_error([&] { expr; }, __FILE__, __LINE__, {__VA_ARGS__})
