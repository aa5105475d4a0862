// The fault matrix: every kind of host → guest control message × {dropped, delayed, duplicated},
// injected into the mock host (in this process) while a guest, on MockBackend and on
// HyperVBackend (e2e_params.h), runs one fixed scenario over two echo devices: connect, open both,
// echo, retarget, a GPADL made and torn down, close one, the host rescinds the other, shut down.
// For each cell the test checks that no call waits past its deadline, that every call ends OK or
// with one of the documented errors, that the bus keeps serving the channel the fault did not hit,
// and that shutdown ends in time; and it compares what each step returned with the table below
// (also in docs/security.md). Leaks and memory errors are ASan's part (CI runs this suite under
// --config=asan).
//
// Usage: fault_matrix_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <iostream>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/runtime/channel_bus.h"
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"
#include "test/e2e/eventually.h"

namespace vbus::e2e {
namespace {

constexpr absl::Duration kCallDeadline = absl::Seconds(1);
constexpr uint32_t kDelayMs = 100;
// A call returns by its deadline plus the bus's grace; more is a hang.
const absl::Duration kLatest = kCallDeadline + absl::Seconds(3);

struct Cell {
  const char* message;
  v1::MessageFault::Action action;
  // What the scenario's steps returned, in order ("step=CODE").
  const char* outcome;
};

std::string ActionName(v1::MessageFault::Action a) {
  switch (a) {
    case v1::MessageFault::ACTION_DROP:
      return "Dropped";
    case v1::MessageFault::ACTION_DELAY:
      return "Delayed";
    case v1::MessageFault::ACTION_DUPLICATE:
      return "Duplicated";
    default:
      return "Unknown";
  }
}

class FaultMatrixTest : public ::testing::TestWithParam<std::tuple<Cell, BackendKind>> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host =
        E2eHost::Start(E2eHost::Mode::kInProcess, absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    ChannelBusOptions options;
    options.call_grace = absl::Milliseconds(500);
    options.log = [](absl::string_view) {};
    E2eGuestOptions guest_options;
    guest_options.backend = std::get<1>(GetParam());
    guest_options.memory_bytes = 16 << 20;
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<v1::OfferResponse> offered = host_->Offer(kGuest, "echo");
      ASSERT_TRUE(offered.ok()) << offered.status();
      relids_[i] = offered->child_relid();
    }
  }
  void TearDown() override {
    guest_.reset();
    host_.reset();
  }

  // Runs one step: records "name=CODE", checks it ended in time and with an allowed code.
  void Step(const std::string& name, const std::function<absl::Status()>& call) {
    const absl::Time start = absl::Now();
    const absl::Status s = call();
    const absl::Duration took = absl::Now() - start;
    EXPECT_LE(took, kLatest) << name << " waited " << took;
    const absl::StatusCode c = s.code();
    EXPECT_TRUE(c == absl::StatusCode::kOk || c == absl::StatusCode::kDeadlineExceeded ||
                c == absl::StatusCode::kUnavailable || c == absl::StatusCode::kCancelled ||
                c == absl::StatusCode::kFailedPrecondition || c == absl::StatusCode::kNotFound)
        << name << ": " << s;
    outcome_.push_back(absl::StrCat(name, "=", absl::StatusCodeToString(c)));
  }

  absl::Status Echo(const std::shared_ptr<Channel>& channel) {
    if (channel == nullptr) return absl::NotFoundError("no such channel");
    const uint8_t ping[8] = {'f', 'a', 'u', 'l', 't', '!', '!', '!'};
    return CallEcho(*channel, ping, absl::Now() + kCallDeadline);
  }

  static constexpr char kGuest[] = "fault-matrix";
  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  uint32_t relids_[2] = {0, 0};
  std::vector<std::string> outcome_;
};

TEST_P(FaultMatrixTest, TheGuestEndsEveryStepInTimeAndKeepsServing) {
  const Cell& cell = std::get<0>(GetParam());
  v1::InjectFaultRequest fault;
  fault.set_guest(kGuest);
  fault.mutable_message()->set_message_type(cell.message);
  fault.mutable_message()->set_action(cell.action);
  fault.mutable_message()->set_delay_ms(kDelayMs);
  ASSERT_TRUE(host_->InjectFault(fault).ok());
  ChannelBus& bus = guest_->bus();
  const auto deadline = [] { return absl::Now() + kCallDeadline; };

  Step("connect", [&] { return bus.Connect(deadline()); });
  // A connect that failed is tried once more: recovered, or the documented error again.
  Step("reconnect", [&] {
    return bus.FindChannel(relids_[1]) != nullptr ? absl::OkStatus() : bus.Connect(deadline());
  });
  // An offer that comes late is a hot-add: give it the deadline to arrive.
  std::shared_ptr<Channel> a, b;
  Eventually([&] { return (a = bus.FindChannel(relids_[0])) != nullptr; }, kCallDeadline);
  Eventually([&] { return (b = bus.FindChannel(relids_[1])) != nullptr; }, kCallDeadline);
  Step("open_a",
       [&] { return a ? a->Open(SmallCallbackRings(), deadline()) : absl::NotFoundError("a"); });
  // An open that failed is tried once more: the bus must have cleaned up after it.
  Step("reopen_a", [&] {
    if (a == nullptr) return absl::NotFoundError("a");
    return a->is_open() ? absl::OkStatus() : a->Open(SmallCallbackRings(), deadline());
  });
  Step("open_b",
       [&] { return b ? b->Open(SmallCallbackRings(), deadline()) : absl::NotFoundError("b"); });
  Step("echo_a", [&] { return Echo(a); });
  Step("echo_b", [&] { return Echo(b); });
  Step("retarget_a", [&] { return a ? a->SetTargetVp(0, deadline()) : absl::NotFoundError("a"); });
  uint32_t handle = 0;
  Step("gpadl_b", [&] {
    if (b == nullptr) return absl::NotFoundError("b");
    absl::StatusOr<GpadlBuffer> g = b->CreateGpadl(3, deadline());
    if (g.ok()) handle = g->handle;
    return g.status();
  });
  Step("teardown_b", [&] {
    return handle == 0 ? absl::NotFoundError("no GPADL") : b->TeardownGpadl(handle, deadline());
  });
  Step("close_a", [&] { return a ? a->Close(deadline()) : absl::NotFoundError("a"); });
  // The host takes b away; the guest hears of it (or, with the rescind dropped, does not).
  ASSERT_TRUE(host_->Rescind(kGuest, relids_[1]).ok());
  Step("rescinded_b", [&] {
    if (b == nullptr) return absl::NotFoundError("b");
    if (!Eventually([&] { return bus.FindChannel(relids_[1]) == nullptr; }, kCallDeadline)) {
      return absl::DeadlineExceededError("the rescind did not arrive");
    }
    return absl::OkStatus();
  });
  Step("shutdown", [&] { return bus.Shutdown(absl::Now() + absl::Seconds(2)); });

  const std::string got = absl::StrJoin(outcome_, " ");
  std::cerr << cell.message << " " << ActionName(cell.action) << ": " << got << "\n";
  EXPECT_EQ(got, cell.outcome);
}

// Every step OK: the fault changed nothing the guest could see.
#define ALL_OK                                                                                 \
  "connect=OK reconnect=OK open_a=OK reopen_a=OK open_b=OK echo_a=OK echo_b=OK retarget_a=OK " \
  "gpadl_b=OK teardown_b=OK close_a=OK rescinded_b=OK shutdown=OK"

const Cell kCells[] = {
    {"version_response", v1::MessageFault::ACTION_DROP,
     "connect=DEADLINE_EXCEEDED reconnect=DEADLINE_EXCEEDED open_a=NOT_FOUND "
     "reopen_a=NOT_FOUND open_b=NOT_FOUND echo_a=NOT_FOUND echo_b=NOT_FOUND "
     "retarget_a=NOT_FOUND gpadl_b=NOT_FOUND teardown_b=NOT_FOUND close_a=NOT_FOUND "
     "rescinded_b=NOT_FOUND shutdown=OK"},
    {"version_response", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"version_response", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"offer", v1::MessageFault::ACTION_DROP,
     "connect=OK reconnect=OK open_a=NOT_FOUND reopen_a=NOT_FOUND open_b=OK "
     "echo_a=NOT_FOUND echo_b=OK retarget_a=NOT_FOUND gpadl_b=OK teardown_b=OK "
     "close_a=NOT_FOUND rescinded_b=OK shutdown=OK"},
    {"offer", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"offer", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"all_offers_delivered", v1::MessageFault::ACTION_DROP,
     "connect=DEADLINE_EXCEEDED reconnect=OK open_a=OK reopen_a=OK open_b=OK echo_a=OK "
     "echo_b=OK retarget_a=OK gpadl_b=OK teardown_b=OK close_a=OK rescinded_b=OK "
     "shutdown=OK"},
    {"all_offers_delivered", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"all_offers_delivered", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"gpadl_created", v1::MessageFault::ACTION_DROP,
     "connect=OK reconnect=OK open_a=DEADLINE_EXCEEDED reopen_a=OK open_b=OK echo_a=OK "
     "echo_b=OK retarget_a=OK gpadl_b=OK teardown_b=OK close_a=OK rescinded_b=OK "
     "shutdown=OK"},
    {"gpadl_created", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"gpadl_created", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"open_result", v1::MessageFault::ACTION_DROP,
     "connect=OK reconnect=OK open_a=DEADLINE_EXCEEDED reopen_a=OK open_b=OK echo_a=OK "
     "echo_b=OK retarget_a=OK gpadl_b=OK teardown_b=OK close_a=OK rescinded_b=OK "
     "shutdown=OK"},
    {"open_result", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"open_result", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"modify_channel_response", v1::MessageFault::ACTION_DROP,
     "connect=OK reconnect=OK open_a=OK reopen_a=OK open_b=OK echo_a=OK echo_b=OK "
     "retarget_a=DEADLINE_EXCEEDED gpadl_b=OK teardown_b=OK close_a=OK rescinded_b=OK "
     "shutdown=OK"},
    {"modify_channel_response", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"modify_channel_response", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"gpadl_torndown", v1::MessageFault::ACTION_DROP,
     "connect=OK reconnect=OK open_a=OK reopen_a=OK open_b=OK echo_a=OK echo_b=OK "
     "retarget_a=OK gpadl_b=OK teardown_b=DEADLINE_EXCEEDED close_a=OK rescinded_b=OK "
     "shutdown=OK"},
    {"gpadl_torndown", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"gpadl_torndown", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"rescind_offer", v1::MessageFault::ACTION_DROP,
     "connect=OK reconnect=OK open_a=OK reopen_a=OK open_b=OK echo_a=OK echo_b=OK "
     "retarget_a=OK gpadl_b=OK teardown_b=OK close_a=OK rescinded_b=DEADLINE_EXCEEDED "
     "shutdown=OK"},
    {"rescind_offer", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"rescind_offer", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
    {"unload_response", v1::MessageFault::ACTION_DROP,
     "connect=OK reconnect=OK open_a=OK reopen_a=OK open_b=OK echo_a=OK echo_b=OK "
     "retarget_a=OK gpadl_b=OK teardown_b=OK close_a=OK rescinded_b=OK "
     "shutdown=DEADLINE_EXCEEDED"},
    {"unload_response", v1::MessageFault::ACTION_DELAY, ALL_OK},
    {"unload_response", v1::MessageFault::ACTION_DUPLICATE, ALL_OK},
};

INSTANTIATE_TEST_SUITE_P(Faults, FaultMatrixTest,
                         ::testing::Combine(::testing::ValuesIn(kCells),
                                            ::testing::Values(BackendKind::kMock,
                                                              BackendKind::kHyperV)),
                         [](const ::testing::TestParamInfo<std::tuple<Cell, BackendKind>>& info) {
                           const Cell& cell = std::get<0>(info.param);
                           std::string name;
                           bool upper = true;
                           for (const char* p = cell.message; *p != '\0'; ++p) {
                             if (*p == '_') {
                               upper = true;
                               continue;
                             }
                             name += upper ? static_cast<char>(*p - 'a' + 'A') : *p;
                             upper = false;
                           }
                           return name + ActionName(cell.action) + "_" +
                                  BackendName(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace vbus::e2e
