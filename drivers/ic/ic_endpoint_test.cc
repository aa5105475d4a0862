#include "drivers/ic/ic_endpoint.h"

#include "drivers/ic/ic_test_bytes.h"
#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

using testing::Get;
using testing::HostRequest;
using testing::Negotiate;

// A service that answers type-1 requests with status 0 and a 2-byte body, and refuses bodies
// shorter than 4 bytes.
class FakeService : public IcService {
 public:
  MessageType type() const override { return MessageType::kHeartbeat; }
  absl::Span<const IcVersion> message_versions() const override { return versions_; }
  absl::StatusOr<IcAnswer> Handle(IcVersion version, absl::Span<const uint8_t> body) override {
    last_version = version;
    if (body.size() < 4) return absl::InvalidArgumentError("short");
    IcAnswer a;
    a.body = {0xAB, 0xCD};
    return a;
  }
  IcVersion last_version;

 private:
  const IcVersion versions_[2] = {{3, 0}, {1, 0}};
};

TEST(IcEndpointTest, NegotiatesThenServes) {
  FakeService service;
  IcEndpoint endpoint(&service);
  IcEndpoint::Output out = endpoint.Process(Negotiate({{1, 0}, {3, 0}}, {{1, 0}, {3, 0}}));
  ASSERT_EQ(out.answer.size(), 28u + 16u);
  EXPECT_EQ(out.answer[25], 5);            // TRANSACTION | RESPONSE
  EXPECT_EQ(Get(out.answer, 20, 4), 0u);   // S_OK
  EXPECT_EQ(Get(out.answer, 18, 2), 16u);  // icmsgsize
  EXPECT_EQ(Get(out.answer, 28, 2), 1u);   // one framework version
  EXPECT_EQ(Get(out.answer, 30, 2), 1u);   // one message version
  EXPECT_EQ(Get(out.answer, 36, 2), 3u);   // framework 3.0 (ours first)
  EXPECT_EQ(Get(out.answer, 40, 2), 3u);   // message 3.0
  ASSERT_TRUE(endpoint.negotiated().has_value());

  out = endpoint.Process(HostRequest(1, 3, 0, 3, 0, 8));
  ASSERT_EQ(out.answer.size(), 30u);
  EXPECT_EQ(Get(out.answer, 20, 4), 0u);
  EXPECT_EQ(out.answer[28], 0xAB);
  EXPECT_EQ(service.last_version, (IcVersion{3, 0}));
  EXPECT_EQ(endpoint.stats().requests, 2u);
  EXPECT_EQ(endpoint.stats().negotiations, 1u);
}

TEST(IcEndpointTest, HostOfferingOnlyUnknownVersionsGetsCountsZeroAndFail) {
  FakeService service;
  IcEndpoint endpoint(&service);
  IcEndpoint::Output out = endpoint.Process(Negotiate({{3, 0}}, {{7, 0}, {8, 0}}));
  ASSERT_EQ(out.answer.size(), 28u + 16u);
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_EQ(Get(out.answer, 28, 2), 0u);
  EXPECT_EQ(Get(out.answer, 30, 2), 0u);
  EXPECT_FALSE(endpoint.negotiated().has_value());
  // Unknown framework versions fail the same way.
  out = endpoint.Process(Negotiate({{2, 0}}, {{3, 0}}));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_EQ(endpoint.stats().failed_answers, 2u);
}

TEST(IcEndpointTest, BadInputIsAnsweredWithFailOrDropped) {
  FakeService service;
  IcEndpoint endpoint(&service);
  // Before the negotiation: E_FAIL.
  IcEndpoint::Output out = endpoint.Process(HostRequest(1, 3, 0, 3, 0, 8));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  ASSERT_FALSE(endpoint.Process(Negotiate({{3, 0}}, {{3, 0}})).answer.empty());

  // Shorter than the headers: nothing to answer with.
  std::vector<uint8_t> tiny(27, 0);
  EXPECT_TRUE(endpoint.Process(tiny).answer.empty());
  // A response (flags 5) or a message without REQUEST: dropped.
  std::vector<uint8_t> response = HostRequest(1, 3, 0, 3, 0, 8);
  response[25] = 5;
  EXPECT_TRUE(endpoint.Process(response).answer.empty());
  response[25] = 1;
  EXPECT_TRUE(endpoint.Process(response).answer.empty());
  EXPECT_EQ(endpoint.stats().dropped, 3u);

  // icmsgsize past the payload: answered E_FAIL with an empty body.
  std::vector<uint8_t> lying = HostRequest(1, 3, 0, 3, 0, 8);
  lying[18] = 200;
  out = endpoint.Process(lying);
  ASSERT_EQ(out.answer.size(), 28u);
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_EQ(Get(out.answer, 18, 2), 0u);
  // A foreign message type on this channel: E_FAIL.
  out = endpoint.Process(HostRequest(3, 3, 0, 3, 0, 8));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  // A body the service refuses: E_FAIL.
  out = endpoint.Process(HostRequest(1, 3, 0, 3, 0, 2));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  // A malformed negotiation (count above 100): E_FAIL with counts 0/0.
  std::vector<uint8_t> many = Negotiate({{3, 0}}, {{3, 0}});
  testing::Put(many, 28, 101, 2);
  out = endpoint.Process(many);
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_EQ(Get(out.answer, 28, 4), 0u);
}

}  // namespace
}  // namespace vbus::ic
