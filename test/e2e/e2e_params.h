// The parameters of the end-to-end suites (testonly): every scenario runs over each host mode
// (the mock host in this process, or as a //mock:mock_host process) × each guest backend
// (MockBackend, or HyperVBackend on the FakeHypervisor bridged to the mock host).
//
// Example:
//   class BusE2eTest : public ::testing::TestWithParam<E2eParam> { ... };
//   INSTANTIATE_TEST_SUITE_P(Hosts, BusE2eTest, AllHostsAndBackends(), E2eParamName());
// gives BusE2eTest.X/InProcess_Mock, …/InProcess_HyperV, …/Process_Mock, …/Process_HyperV.
#ifndef VBUS_TEST_E2E_E2E_PARAMS_H_
#define VBUS_TEST_E2E_E2E_PARAMS_H_

#include <string>
#include <tuple>

#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"

namespace vbus::e2e {

using E2eParam = std::tuple<E2eHost::Mode, BackendKind>;

inline E2eHost::Mode ModeOf(const E2eParam& p) { return std::get<0>(p); }
inline BackendKind BackendOf(const E2eParam& p) { return std::get<1>(p); }

// "Mock" or "HyperV".
inline std::string BackendName(BackendKind kind) {
  return kind == BackendKind::kMock ? "Mock" : "HyperV";
}

// Every host mode × every backend.
inline auto AllHostsAndBackends() {
  return ::testing::Combine(::testing::Values(E2eHost::Mode::kInProcess, E2eHost::Mode::kProcess),
                            ::testing::Values(BackendKind::kMock, BackendKind::kHyperV));
}

// "InProcess_Mock", "Process_HyperV", …
struct E2eParamName {
  template <typename ParamInfo>
  std::string operator()(const ParamInfo& info) const {
    return std::string(ModeOf(info.param) == E2eHost::Mode::kInProcess ? "InProcess" : "Process") +
           "_" + BackendName(BackendOf(info.param));
  }
};

}  // namespace vbus::e2e

#endif  // VBUS_TEST_E2E_E2E_PARAMS_H_
