// X86HvPlatform can only run in ring 0 of a Hyper-V guest, so tests never create one that
// works. What they can check without executing a privileged instruction: Create refuses an
// incomplete environment, naming what is missing, before any CPUID, MSR access or callback.
#include "hyperv/x86_platform.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::hyperv {
namespace {

using ::testing::HasSubstr;

// A complete environment whose callbacks count their calls (none may happen).
struct CountingEnvironment {
  int calls = 0;
  X86HvEnvironment Make() {
    X86HvEnvironment env;
    env.vp_count = 2;
    env.guest_os_id = 0x8100000000000000;
    env.current_vp = [this] { return ++calls, 0u; };
    env.allocate_pages = [this](size_t) -> absl::StatusOr<Pages> {
      ++calls;
      return absl::ResourceExhaustedError("none");
    };
    env.allocate_hypercall_page = [this]() -> absl::StatusOr<Pages> {
      ++calls;
      return absl::ResourceExhaustedError("none");
    };
    env.register_interrupt = [this](uint32_t, uint8_t, std::function<void()>) {
      ++calls;
      return absl::OkStatus();
    };
    env.unregister_interrupt = [this](uint32_t, uint8_t) { ++calls; };
    return env;
  }
};

TEST(X86PlatformTest, RefusesAnIncompleteEnvironmentNamingTheField) {
  CountingEnvironment counting;
  struct Case {
    const char* field;
    void (*clear)(X86HvEnvironment&);
  };
  const Case cases[] = {
      {"vp_count", [](X86HvEnvironment& e) { e.vp_count = 0; }},
      {"current_vp", [](X86HvEnvironment& e) { e.current_vp = nullptr; }},
      {"guest_os_id", [](X86HvEnvironment& e) { e.guest_os_id = 0; }},
      {"allocate_pages", [](X86HvEnvironment& e) { e.allocate_pages = nullptr; }},
      {"allocate_hypercall_page", [](X86HvEnvironment& e) { e.allocate_hypercall_page = nullptr; }},
      {"register_interrupt", [](X86HvEnvironment& e) { e.register_interrupt = nullptr; }},
      {"unregister_interrupt", [](X86HvEnvironment& e) { e.unregister_interrupt = nullptr; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    X86HvEnvironment env = counting.Make();
    c.clear(env);
    absl::StatusOr<std::unique_ptr<X86HvPlatform>> platform = X86HvPlatform::Create(env);
    EXPECT_EQ(platform.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(platform.status().message(), HasSubstr(c.field));
  }
  EXPECT_EQ(counting.calls, 0);
}

}  // namespace
}  // namespace vbus::hyperv
