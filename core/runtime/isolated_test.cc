// ChannelBus as an isolated (confidential) guest over TestHost (ChannelBusOptions::isolated):
// the options are checked, classes such a guest does not accept never reach a driver or the
// device list and their relids go back to the host, and every ring and GPADL page is asked of
// the backend as host-visible.
#include <algorithm>
#include <memory>
#include <vector>

#include "core/data/device_classes.h"
#include "core/runtime/channel.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/channel_bus_testing.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using testing::Deadline;
using testing::kInstance1;
using testing::kInstance2;
using testing::TestHost;

TEST(IsolatedBusTest, NeedsAMaxVersionOfAtLeast52) {
  TestHost host;
  ChannelBusOptions options;
  options.isolated = true;
  options.max_version = protocol::kVersion5_1;
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host, options);
  EXPECT_EQ(bus.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus.status().message(),
            "an isolated guest needs version 5.2 or newer; max_version is 5.1");
}

TEST(IsolatedBusTest, AHostWithoutVersion52IsRefused) {
  TestHost host;
  host.Update([](TestHost::Rules& r) { r.max_version = protocol::kVersion5_1; });
  ChannelBusOptions options;
  options.isolated = true;
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host, options);
  ASSERT_TRUE(bus.ok()) << bus.status();
  const absl::Status connected = (*bus)->Connect(Deadline());
  EXPECT_EQ(connected.code(), absl::StatusCode::kFailedPrecondition) << connected;
  for (const v1::ControlMessage& m : host.Posted()) {
    if (m.has_initiate_contact()) {
      EXPECT_GE(m.initiate_contact().version_requested(), protocol::kVersion5_2);
    }
  }
}

TEST(IsolatedBusTest, RefusedClassesAreReleasedAndPagesAreAskedForAsHostVisible) {
  TestHost host;
  host.AddOffer(3, device_class::kHeartbeat, kInstance1);
  host.AddOffer(4, device_class::kKvp, kInstance2);
  ChannelBusOptions options;
  options.isolated = true;
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host, options);
  ASSERT_TRUE(bus.ok()) << bus.status();
  ASSERT_TRUE((*bus)->Connect(Deadline()).ok());
  EXPECT_TRUE(
      host.WaitFor([&] { return host.Released() == std::vector<uint32_t>{4}; }, Deadline()));
  std::vector<DeviceEntry> devices = (*bus)->Devices();
  ASSERT_EQ(devices.size(), 1u);
  EXPECT_EQ(devices[0].offer.relid, 3u);
  EXPECT_EQ((*bus)->FindChannel(4), nullptr);
  EXPECT_EQ((*bus)->stats().host_inputs_ignored, 1u);

  std::shared_ptr<Channel> heartbeat = (*bus)->FindChannel(3);
  ChannelOpenOptions open;
  open.outbound_ring_pages = 4;
  open.inbound_ring_pages = 4;
  ASSERT_TRUE(heartbeat->Open(open, Deadline()).ok());
  ASSERT_TRUE(heartbeat->CreateGpadl(2, Deadline()).ok());
  EXPECT_EQ(host.fake().allocations(PageSharing::kHostVisible), 2u);
  EXPECT_EQ(host.fake().allocations(PageSharing::kDefault), 0u);
}

TEST(IsolatedBusTest, AnOrdinaryBusAsksForDefaultPages) {
  TestHost host;
  host.AddOffer(4, device_class::kKvp, kInstance2);
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&host, {});
  ASSERT_TRUE(bus.ok()) << bus.status();
  ASSERT_TRUE((*bus)->Connect(Deadline()).ok());
  ChannelOpenOptions open;
  open.outbound_ring_pages = 4;
  open.inbound_ring_pages = 4;
  ASSERT_TRUE((*bus)->FindChannel(4)->Open(open, Deadline()).ok());
  EXPECT_EQ(host.fake().allocations(PageSharing::kDefault), 1u);
  EXPECT_EQ(host.fake().allocations(PageSharing::kHostVisible), 0u);
}

}  // namespace
}  // namespace vbus
