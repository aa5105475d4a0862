// End to end: an offer's every wire field, set by the operator through HostControl, reaches
// the guest's Channel::offer() unchanged — through the mock host in this process and as a
// separate //mock:mock_host process, over MockBackend and over HyperVBackend, where the offer
// crosses as OFFERCHANNEL's 196 wire bytes (e2e_params.h). The fields vbus does not interpret
// (interrupt latency, reserved bytes and bits, the second MMIO size) included, at the widest values
// their Hyper-V wire fields hold (docs/protocol.md §4, §16).
//
// Usage: offer_fields_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "core/data/guid.h"
#include "core/data/guid_proto.h"
#include "core/data/protocol.h"
#include "core/runtime/channel_bus.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mock_host.grpc.pb.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"

namespace vbus::e2e {
namespace {

absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

class OfferFieldsTest : public ::testing::TestWithParam<E2eParam> {};

TEST_P(OfferFieldsTest, EveryFieldReachesTheChannelUnchanged) {
  absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
  ASSERT_TRUE(host.ok()) << host.status();
  E2eGuestOptions guest_options;
  guest_options.backend = BackendOf(GetParam());
  absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
      E2eGuest::Attach(**host, "fields", ChannelBusOptions{}, std::move(guest_options));
  ASSERT_TRUE(guest.ok()) << guest.status();

  v1::OfferRequest request;
  request.set_guest("fields");
  v1::OfferSpec& spec = *request.mutable_spec();
  spec.set_device("raw");
  spec.mutable_interface_type()->set_value("f8615163-df3e-46c5-913f-f2d2f965ed0e");
  spec.mutable_interface_instance()->set_value("00112233-4455-6677-8899-aabbccddeeff");
  spec.set_user_defined(std::string("\x04\0\0\0pipe-mode bytes", 20));
  spec.set_flags(0xFFFF);
  spec.set_mmio_megabytes(0xFFFF);
  spec.set_monitored(true);
  spec.set_dedicated_interrupt(true);
  spec.set_interrupt_latency(0xFEDCBA9876543210);
  spec.set_reserved(0x0123456789ABCDEF);
  spec.set_mmio_megabytes_optional(0xFFFF);
  spec.set_monitor_allocated_reserved_bits(0x7F);
  spec.set_dedicated_interrupt_reserved_bits(0x7FFF);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(Deadline()));
  v1::OfferResponse offered;
  const grpc::Status rpc = (*host)->control().Offer(&context, request, &offered);
  ASSERT_TRUE(rpc.ok()) << rpc.error_message();

  ASSERT_TRUE((*guest)->bus().Connect(Deadline()).ok());
  std::shared_ptr<Channel> channel = (*guest)->bus().FindChannel(offered.child_relid());
  ASSERT_NE(channel, nullptr);
  const OfferInfo& o = channel->offer();
  EXPECT_EQ(o.interface_type, Guid::Literal("f8615163-df3e-46c5-913f-f2d2f965ed0e"));
  EXPECT_EQ(o.interface_instance, Guid::Literal("00112233-4455-6677-8899-aabbccddeeff"));
  // The wire field is 120 bytes: a shorter value crosses Hyper-V zero-padded
  // (docs/protocol.md §4).
  std::string user_defined = spec.user_defined();
  if (BackendOf(GetParam()) == BackendKind::kHyperV) {
    user_defined.resize(protocol::kUserDefinedBytes, '\0');
  }
  EXPECT_EQ(o.user_defined, user_defined);
  EXPECT_EQ(o.flags, 0xFFFFu);
  EXPECT_EQ(o.mmio_megabytes, 0xFFFFu);
  EXPECT_EQ(o.sub_channel_index, 0u);
  EXPECT_TRUE(o.monitor_allocated);
  EXPECT_TRUE(o.dedicated_interrupt);
  EXPECT_EQ(o.interrupt_latency, 0xFEDCBA9876543210u);
  EXPECT_EQ(o.reserved, 0x0123456789ABCDEFu);
  EXPECT_EQ(o.mmio_megabytes_optional, 0xFFFFu);
  EXPECT_EQ(o.monitor_allocated_reserved_bits, 0x7Fu);
  EXPECT_EQ(o.dedicated_interrupt_reserved_bits, 0x7FFFu);
  // The host's own record of the fields it chose (relid, monitor id) agrees.
  absl::StatusOr<v1::ChannelInfo> info = (*host)->Channel("fields", offered.child_relid());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->monitor_allocated());
  EXPECT_EQ(o.monitor_id, info->monitor_id());
  EXPECT_EQ(o.relid, info->child_relid());
}

INSTANTIATE_TEST_SUITE_P(Hosts, OfferFieldsTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
