#include "drivers/shutdown/shutdown.h"

#include <cstring>
#include <optional>

#include "drivers/ic/ic_test_bytes.h"
#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

using testing::Get;
using testing::Put;

// A full 2088-byte request: reason @28, timeout @32, flags @36, message @40.
std::vector<uint8_t> Request(uint32_t flags, const char* message = "",
                             size_t body = kShutdownBodySize) {
  std::vector<uint8_t> b = testing::HostRequest(3, 3, 0, 3, 2, body);
  Put(b, 28, 0x80000000, 4);
  Put(b, 32, 30, 4);
  Put(b, 36, flags, 4);
  if (body >= 12 + std::strlen(message)) std::memcpy(b.data() + 40, message, std::strlen(message));
  b.resize(28 + body);
  return b;
}

struct Seen {
  std::optional<ShutdownRequest> decided;
  std::optional<ShutdownRequest> acted;
};

ShutdownDriverOptions Options(Seen* seen, bool accept) {
  ShutdownDriverOptions o;
  o.decide = [seen, accept](const ShutdownRequest& r) {
    seen->decided = r;
    return accept;
  };
  o.on_accepted = [seen](const ShutdownRequest& r) { seen->acted = r; };
  return o;
}

TEST(ShutdownTest, DecodesTheRequestAndActsOnlyAfterTheAnswer) {
  Seen seen;
  ShutdownDriver driver(Options(&seen, true));
  ASSERT_FALSE(driver.endpoint()
                   .Process(testing::Negotiate({{1, 0}, {3, 0}}, {{1, 0}, {3, 0}, {3, 1}, {3, 2}}))
                   .answer.empty());
  EXPECT_EQ(driver.endpoint().negotiated()->message, (IcVersion{3, 2}));
  IcEndpoint::Output out = driver.endpoint().Process(Request(3, "maintenance"));
  ASSERT_EQ(out.answer.size(), 2088u);
  EXPECT_EQ(Get(out.answer, 20, 4), 0u);
  EXPECT_EQ(out.answer[25], 5);
  ASSERT_TRUE(seen.decided.has_value());
  EXPECT_EQ(seen.decided->kind, ShutdownKind::kReboot);
  EXPECT_TRUE(seen.decided->force);
  EXPECT_EQ(seen.decided->reason, 0x80000000u);
  EXPECT_EQ(seen.decided->timeout_seconds, 30u);
  EXPECT_EQ(seen.decided->message, "maintenance");
  EXPECT_FALSE(seen.acted.has_value());  // not before the answer is sent
  ASSERT_TRUE(out.after_send);
  out.after_send();
  EXPECT_EQ(seen.acted->kind, ShutdownKind::kReboot);
}

TEST(ShutdownTest, EveryFlagValue) {
  struct Case {
    uint32_t flags;
    std::optional<ShutdownKind> kind;
    bool force;
  };
  const Case cases[] = {{0, ShutdownKind::kPowerOff, false},
                        {1, ShutdownKind::kPowerOff, true},
                        {2, ShutdownKind::kReboot, false},
                        {3, ShutdownKind::kReboot, true},
                        {4, ShutdownKind::kHibernate, false},
                        {5, ShutdownKind::kHibernate, true},
                        {6, std::nullopt, false},
                        {8, std::nullopt, false}};
  for (const Case& c : cases) {
    Seen seen;
    ShutdownDriver driver(Options(&seen, true));
    (void)driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{3, 0}}));
    IcEndpoint::Output out = driver.endpoint().Process(Request(c.flags));
    if (c.kind) {
      EXPECT_EQ(Get(out.answer, 20, 4), 0u) << c.flags;
      ASSERT_TRUE(seen.decided.has_value()) << c.flags;
      EXPECT_EQ(seen.decided->kind, *c.kind) << c.flags;
      EXPECT_EQ(seen.decided->force, c.force) << c.flags;
    } else {
      EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u) << c.flags;
      EXPECT_FALSE(seen.decided.has_value()) << c.flags;
      EXPECT_FALSE(out.after_send);
    }
  }
}

TEST(ShutdownTest, RefusedRequestIsAnsweredFailAndNotActedOn) {
  Seen seen;
  ShutdownDriver driver(Options(&seen, false));
  (void)driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{3, 0}}));
  IcEndpoint::Output out = driver.endpoint().Process(Request(0));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_FALSE(out.after_send);
  EXPECT_TRUE(seen.decided.has_value());
}

TEST(ShutdownTest, DefaultRefusesHibernate) {
  ShutdownDriver driver(ShutdownDriverOptions{});
  (void)driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{3, 0}}));
  EXPECT_EQ(Get(driver.endpoint().Process(Request(4)).answer, 20, 4), 0x80004005u);
  EXPECT_EQ(Get(driver.endpoint().Process(Request(0)).answer, 20, 4), 0u);
}

TEST(ShutdownTest, TruncatedRequestIsRefused) {
  Seen seen;
  ShutdownDriver driver(Options(&seen, true));
  (void)driver.endpoint().Process(testing::Negotiate({{3, 0}}, {{3, 0}}));
  IcEndpoint::Output out = driver.endpoint().Process(Request(0, "", kShutdownBodySize - 1));
  EXPECT_EQ(Get(out.answer, 20, 4), 0x80004005u);
  EXPECT_FALSE(seen.decided.has_value());
}

TEST(ShutdownTest, MessageWithoutNulIsCutAtTheField) {
  std::vector<uint8_t> body(kShutdownBodySize, 'x');
  absl::StatusOr<ShutdownRequest> r = ParseShutdownBody(body);
  // Flags "xxxx" are not a request.
  EXPECT_FALSE(r.ok());
  testing::Put(body, 8, 0, 4);
  r = ParseShutdownBody(body);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->message.size(), kShutdownMessageBytes);
}

TEST(ShutdownTest, HostEncoderMatchesTheLayout) {
  ShutdownRequest r;
  r.kind = ShutdownKind::kHibernate;
  r.reason = kShutdownReasonPlanned;
  r.message = "bye";
  std::vector<uint8_t> body = EncodeShutdownBody(r);
  ASSERT_EQ(body.size(), 2060u);
  EXPECT_EQ(Get(body, 0, 4), 0x80000000u);
  EXPECT_EQ(Get(body, 8, 4), 4u);
  EXPECT_EQ(body[12], 'b');
  EXPECT_EQ(body[15], 0);
}

}  // namespace
}  // namespace vbus::ic
