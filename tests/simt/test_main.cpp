// Runner for the SIMT emulator's C++ tests: --list | NAME... | (all).
#include <chrono>

#include "simt_test.h"

namespace simt_test {
std::vector<Case>& cases() {
  static std::vector<Case> c;
  return c;
}
std::string format(const char* f, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
}  // namespace simt_test

int main(int argc, char** argv) {
  using namespace simt_test;
  if (argc > 1 && !std::strcmp(argv[1], "--list")) {
    for (const Case& c : cases()) std::printf("%s\n", c.name);
    return 0;
  }
  std::vector<const Case*> run;
  for (int i = 1; i < argc; ++i) {
    const Case* found = nullptr;
    for (const Case& c : cases())
      if (!std::strcmp(c.name, argv[i])) found = &c;
    if (!found) {
      std::fprintf(stderr, "unknown test %s (--list shows them)\n", argv[i]);
      return 2;
    }
    run.push_back(found);
  }
  if (run.empty())
    for (const Case& c : cases()) run.push_back(&c);
  int failed = 0;
  for (const Case* c : run) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      c->fn();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("PASS %s (%.1f ms)\n", c->name, ms);
    } catch (const std::exception& e) {
      std::printf("FAIL %s: %s\n", c->name, e.what());
      ++failed;
    }
    std::fflush(stdout);
  }
  return failed ? 1 : 0;
}
