#include "drivers/kvp/kvp.h"

#include "drivers/ic/ic_test_bytes.h"
#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

using testing::Get;

constexpr uint32_t kFail = 0x80004005;

class KvpDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(Get(driver_.endpoint().Process(testing::Negotiate({{3, 0}}, {{5, 0}, {4, 0}})).answer,
                  20, 4),
              0u);
  }
  // Sends `request` (an IC body) and returns the answer (headers included).
  std::vector<uint8_t> Send(const KvpRequest& request) {
    absl::StatusOr<std::vector<uint8_t>> body = EncodeKvpRequest(request);
    EXPECT_TRUE(body.ok());
    std::vector<uint8_t> msg = testing::HostRequest(2, 3, 0, 4, 0, body->size());
    std::copy(body->begin(), body->end(), msg.begin() + 28);
    return driver_.endpoint().Process(msg).answer;
  }
  static KvpRequest Req(KvpOperation op, uint8_t pool, std::string key = "", std::string value = "",
                        uint32_t index = 0) {
    KvpRequest r;
    r.operation = static_cast<uint8_t>(op);
    r.pool = pool;
    r.index = index;
    r.record = {kKvpString, std::move(key), std::move(value)};
    return r;
  }

  std::shared_ptr<MemoryKvpStore> store_ = std::make_shared<MemoryKvpStore>(4);
  KvpDriver driver_{[this] {
    KvpDriverOptions o;
    o.store = store_;
    o.auto_pool = {{kKvpString, "FullyQualifiedDomainName", "vm.example"},
                   {kKvpString, "IntegrationServicesVersion", "vbus 1.0"}};
    return o;
  }()};
};

TEST_F(KvpDriverTest, SetGetEnumerateDelete) {
  std::vector<uint8_t> a = Send(Req(KvpOperation::kSet, kKvpPoolExternal, "color", "blue"));
  EXPECT_EQ(Get(a, 20, 4), 0u);
  EXPECT_EQ((*store_->Get(0, "color"))->value, "blue");

  a = Send(Req(KvpOperation::kGet, kKvpPoolExternal, "color"));
  EXPECT_EQ(Get(a, 20, 4), 0u);
  absl::StatusOr<KvpRecord> got = ParseKvpAnswer(0, absl::MakeConstSpan(a).subspan(28));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->value, "blue");

  a = Send(Req(KvpOperation::kEnumerate, kKvpPoolExternal, "", "", 0));
  EXPECT_EQ(Get(a, 20, 4), 0u);
  EXPECT_EQ(ParseKvpAnswer(3, absl::MakeConstSpan(a).subspan(28))->key, "color");
  a = Send(Req(KvpOperation::kEnumerate, kKvpPoolExternal, "", "", 1));
  EXPECT_EQ(Get(a, 20, 4), 0x80070103u);  // no more items

  EXPECT_EQ(Get(Send(Req(KvpOperation::kDelete, kKvpPoolExternal, "color")), 20, 4), 0u);
  EXPECT_EQ(Get(Send(Req(KvpOperation::kGet, kKvpPoolExternal, "color")), 20, 4), kFail);
  EXPECT_EQ(Get(Send(Req(KvpOperation::kDelete, kKvpPoolExternal, "color")), 20, 4), kFail);
}

TEST_F(KvpDriverTest, AutoPoolIsReadOnlyAndEnumeratesItsFacts) {
  std::vector<uint8_t> a = Send(Req(KvpOperation::kEnumerate, kKvpPoolAuto, "", "", 1));
  EXPECT_EQ(Get(a, 20, 4), 0u);
  EXPECT_EQ(ParseKvpAnswer(3, absl::MakeConstSpan(a).subspan(28))->value, "vbus 1.0");
  EXPECT_EQ(Get(Send(Req(KvpOperation::kEnumerate, kKvpPoolAuto, "", "", 2)), 20, 4), 0x80070103u);
  a = Send(Req(KvpOperation::kGet, kKvpPoolAuto, "FullyQualifiedDomainName"));
  EXPECT_EQ(ParseKvpAnswer(0, absl::MakeConstSpan(a).subspan(28))->value, "vm.example");
  EXPECT_EQ(Get(Send(Req(KvpOperation::kSet, kKvpPoolAuto, "x", "y")), 20, 4), kFail);
}

TEST_F(KvpDriverTest, ForbiddenPoolsFullStoreAndIpOperations) {
  EXPECT_EQ(Get(Send(Req(KvpOperation::kSet, kKvpPoolAutoInternal, "x", "y")), 20, 4), 0x80070057u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(
        Get(Send(Req(KvpOperation::kSet, kKvpPoolGuest, "k" + std::to_string(i), "v")), 20, 4), 0u);
  }
  EXPECT_EQ(Get(Send(Req(KvpOperation::kSet, kKvpPoolGuest, "k5", "v")), 20, 4), 0x80070070u);
  // GET_IP_INFO: a 7428-byte body (op @0, pool @1).
  std::vector<uint8_t> ip = testing::HostRequest(2, 3, 0, 4, 0, 7428);
  ip[28] = 4;
  EXPECT_EQ(Get(driver_.endpoint().Process(ip).answer, 20, 4), kFail);
}

}  // namespace
}  // namespace vbus::ic
