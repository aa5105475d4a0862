#include "drivers/ic/ic_wire.h"

#include "drivers/ic/ic_test_bytes.h"
#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

using testing::Get;
using testing::HostRequest;
using testing::Put;

TEST(IcWireTest, ParsesTheHeaderAtItsDocumentedOffsets) {
  std::vector<uint8_t> b = HostRequest(/*type=*/1, 3, 0, 3, 1, 40);
  Put(b, 20, 0x80004005, 4);
  b[24] = 7;
  b[26] = 0xAA;
  b[27] = 0xBB;
  b.resize(b.size() + 4);  // VMBus padding after the message
  absl::StatusOr<IcMessage> m = ParseIcMessage(b);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->header.pipe_flags, 1u);
  EXPECT_EQ(m->header.pipe_size, 60u);
  EXPECT_EQ(m->header.framework, (IcVersion{3, 0}));
  EXPECT_EQ(m->header.type, 1);
  EXPECT_EQ(m->header.version, (IcVersion{3, 1}));
  EXPECT_EQ(m->header.body_size, 40);
  EXPECT_EQ(m->header.status, 0x80004005u);
  EXPECT_EQ(m->header.transaction_id, 7);
  EXPECT_EQ(m->header.flags, 3);
  EXPECT_EQ(m->header.reserved[0], 0xAA);
  EXPECT_EQ(m->header.reserved[1], 0xBB);
  EXPECT_EQ(m->body.size(), 40u);
  EXPECT_EQ(m->body.data(), b.data() + 28);
}

TEST(IcWireTest, RefusesShortMessagesAndLyingSizes) {
  std::vector<uint8_t> b = HostRequest(1, 3, 0, 3, 0, 8);
  EXPECT_EQ(ParseIcMessage(absl::MakeConstSpan(b).first(27)).status().code(),
            absl::StatusCode::kInvalidArgument);
  Put(b, 18, 9, 2);  // icmsgsize one past the end
  absl::StatusOr<IcMessage> m = ParseIcMessage(b);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("icmsgsize 9"), std::string::npos) << m.status();
}

TEST(IcWireTest, ResponseKeepsTheRequestHeaderWithFlagsFiveAndExactSizes) {
  std::vector<uint8_t> b = HostRequest(3, 3, 0, 3, 2, 4);
  b[24] = 9;
  absl::StatusOr<IcMessage> m = ParseIcMessage(b);
  ASSERT_TRUE(m.ok());
  const uint8_t body[] = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> r = BuildResponse(m->header, 0x80070103, body);
  ASSERT_EQ(r.size(), 34u);
  EXPECT_EQ(Get(r, 0, 4), 1u);   // DATA
  EXPECT_EQ(Get(r, 4, 4), 26u);  // 20 + 6
  EXPECT_EQ(Get(r, 8, 2), 3u);
  EXPECT_EQ(Get(r, 12, 2), 3u);
  EXPECT_EQ(Get(r, 14, 2), 3u);
  EXPECT_EQ(Get(r, 16, 2), 2u);
  EXPECT_EQ(Get(r, 18, 2), 6u);
  EXPECT_EQ(Get(r, 20, 4), 0x80070103u);
  EXPECT_EQ(r[24], 9);
  EXPECT_EQ(r[25], 5);
  EXPECT_EQ(r[28], 1);
  EXPECT_EQ(r[33], 6);
}

TEST(IcWireTest, NegotiateBodyListsFrameworkThenMessageVersions) {
  std::vector<uint8_t> b = testing::Negotiate({{1, 0}, {3, 0}}, {{3, 0}, {3, 1}, {3, 2}});
  absl::StatusOr<IcMessage> m = ParseIcMessage(b);
  ASSERT_TRUE(m.ok());
  absl::StatusOr<NegotiateBody> n = ParseNegotiateBody(m->body);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->framework, (std::vector<IcVersion>{{1, 0}, {3, 0}}));
  EXPECT_EQ(n->message, (std::vector<IcVersion>{{3, 0}, {3, 1}, {3, 2}}));
  EXPECT_EQ(EncodeNegotiateBody(n->framework, n->message),
            std::vector<uint8_t>(b.begin() + 28, b.end()));
}

TEST(IcWireTest, NegotiateBodyRefusesTooManyVersionsAndShortLists) {
  std::vector<uint8_t> body(8, 0);
  Put(body, 0, 101, 2);
  EXPECT_EQ(ParseNegotiateBody(body).status().code(), absl::StatusCode::kInvalidArgument);
  Put(body, 0, 1, 2);
  Put(body, 2, 1, 2);  // two versions announced, none present
  EXPECT_EQ(ParseNegotiateBody(body).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseNegotiateBody(absl::MakeConstSpan(body).first(7)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(IcWireTest, ChooseVersionsFollowsOurPreference) {
  NegotiateBody offered{{{1, 0}, {3, 0}}, {{1, 0}, {3, 0}, {3, 1}, {3, 2}}};
  const IcVersion ours[] = {{3, 2}, {3, 1}, {3, 0}, {1, 0}};
  absl::StatusOr<Negotiated> n = ChooseVersions(offered, kFrameworkVersions, ours);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->framework, (IcVersion{3, 0}));
  EXPECT_EQ(n->message, (IcVersion{3, 2}));
  offered.message = {{5, 0}};
  EXPECT_EQ(ChooseVersions(offered, kFrameworkVersions, ours).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(IcWireTest, NegotiateReplyIsSixteenBytesWithCountsOneOne) {
  Negotiated chosen{{3, 0}, {4, 0}};
  std::vector<uint8_t> body = NegotiateReplyBody(&chosen);
  ASSERT_EQ(body.size(), 16u);
  EXPECT_EQ(Get(body, 0, 2), 1u);
  EXPECT_EQ(Get(body, 2, 2), 1u);
  EXPECT_EQ(Get(body, 4, 4), 0u);
  EXPECT_EQ(Get(body, 8, 2), 3u);
  EXPECT_EQ(Get(body, 10, 2), 0u);
  EXPECT_EQ(Get(body, 12, 2), 4u);
  EXPECT_EQ(Get(body, 14, 2), 0u);
  EXPECT_EQ(NegotiateReplyBody(nullptr), std::vector<uint8_t>(16, 0));
}

TEST(IcWireTest, HostReadsTheGuestsNegotiateAnswer) {
  Negotiated chosen{{3, 0}, {3, 0}};
  std::vector<uint8_t> request = testing::Negotiate({{3, 0}}, {{3, 0}});
  absl::StatusOr<IcMessage> req = ParseIcMessage(request);
  ASSERT_TRUE(req.ok());
  std::vector<uint8_t> ok = BuildResponse(req->header, 0, NegotiateReplyBody(&chosen));
  absl::StatusOr<IcMessage> answer = ParseIcMessage(ok);
  ASSERT_TRUE(answer.ok());
  absl::StatusOr<Negotiated> got = ParseNegotiateReply(*answer);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->message, (IcVersion{3, 0}));

  std::vector<uint8_t> refused =
      BuildResponse(req->header, 0x80004005, NegotiateReplyBody(nullptr));
  answer = ParseIcMessage(refused);
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(ParseNegotiateReply(*answer).status().code(), absl::StatusCode::kFailedPrecondition);
  // The request itself is no answer.
  EXPECT_EQ(ParseNegotiateReply(*req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(IcWireTest, NamesForLogs) {
  EXPECT_EQ(MessageTypeName(4), "timesync");
  EXPECT_EQ(MessageTypeName(99), "type 99");
  EXPECT_EQ(StatusName(0x80070103), "S_CONT");
  EXPECT_EQ(StatusName(0x12345678), "0x12345678");
}

}  // namespace
}  // namespace vbus::ic
