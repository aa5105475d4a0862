// FUZZ_CHECK: aborts (a crash libFuzzer reports, and a test failure in the corpus replay) when
// an invariant of the code under test does not hold.
#ifndef VBUS_TEST_FUZZ_FUZZ_CHECK_H_
#define VBUS_TEST_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

#endif  // VBUS_TEST_FUZZ_FUZZ_CHECK_H_
