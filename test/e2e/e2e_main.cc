// main() for end-to-end tests run as `<test> <path of mock_host>` (Bazel passes
// $(rootpath //mock:mock_host)): the path goes to E2eHost for its process mode.
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) vbus::e2e::g_mock_host_binary = argv[1];
  return RUN_ALL_TESTS();
}
