#include "core/runtime/driver.h"

#include <atomic>
#include <thread>

#include "core/data/device_classes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus {
namespace {

using ::testing::ElementsAre;

// Counts Remove calls; Probe is never reached in these tests (it needs the runtime's Channel).
class CountingDriver : public Driver {
 public:
  explicit CountingDriver(int* removed) : removed_(removed) {}
  absl::Status Probe(Channel&) override { return absl::OkStatus(); }
  void Remove() override { ++*removed_; }

 private:
  int* removed_;
};

OfferInfo Offer(uint64_t id, uint32_t relid, const Guid& cls, uint16_t sub = 0) {
  OfferInfo o;
  o.id = OfferId(id);
  o.relid = relid;
  o.interface_type = cls;
  o.interface_instance = Guid::Literal("11111111-2222-3333-4444-555555555555");
  o.sub_channel_index = sub;
  return o;
}

DriverSpec Spec(std::string name, const Guid& cls, int* removed) {
  return DriverSpec{std::move(name), cls, [removed](const OfferInfo&) {
                      return std::make_unique<CountingDriver>(removed);
                    }};
}

TEST(DriverRegistryTest, RegisterChecksItsArguments) {
  DriverRegistry registry;
  int removed = 0;
  EXPECT_EQ(registry.Register(Spec("", device_class::kHeartbeat, &removed)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register(Spec("nil", Guid(), &removed)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register(DriverSpec{"nofactory", device_class::kHeartbeat, nullptr}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(registry.Register(Spec("heartbeat", device_class::kHeartbeat, &removed)).ok());
  absl::Status dup = registry.Register(Spec("hb2", device_class::kHeartbeat, &removed));
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(dup.message(),
            "driver registration of hb2: device class 57164f39-9115-4e78-ab55-382f3bd5422d is "
            "already driven by heartbeat");
  EXPECT_THAT(registry.Names(), ElementsAre("heartbeat"));
}

TEST(DriverRegistryTest, MatchesPrimariesByClassOnly) {
  DriverRegistry registry;
  int removed = 0;
  ASSERT_TRUE(registry.Register(Spec("heartbeat", device_class::kHeartbeat, &removed)).ok());
  ASSERT_TRUE(registry.Register(Spec("shutdown", device_class::kShutdown, &removed)).ok());
  EXPECT_EQ(registry.Match(Offer(1, 5, device_class::kShutdown))->name, "shutdown");
  EXPECT_EQ(registry.Match(Offer(2, 6, device_class::kHeartbeat))->name, "heartbeat");
  EXPECT_EQ(registry.Match(Offer(3, 7, device_class::kKvp)), nullptr);
  EXPECT_EQ(registry.Match(Offer(4, 8, device_class::kHeartbeat, /*sub=*/1)), nullptr);
  EXPECT_EQ(registry.Find(device_class::kShutdown)->device_class, device_class::kShutdown);
}

TEST(DeviceListTest, UnmatchedOffersStayListed) {
  DriverRegistry registry;
  int removed = 0;
  ASSERT_TRUE(registry.Register(Spec("heartbeat", device_class::kHeartbeat, &removed)).ok());
  DeviceList devices(&registry);
  const DriverSpec* hb = devices.Add(Offer(1, 9, device_class::kHeartbeat));
  ASSERT_NE(hb, nullptr);
  EXPECT_EQ(devices.Add(Offer(2, 4, device_class::kKvp)), nullptr);
  EXPECT_EQ(devices.Add(Offer(3, 10, device_class::kHeartbeat, 1)), nullptr);
  ASSERT_TRUE(devices.Bind(OfferId(1), hb->factory(Offer(1, 9, device_class::kHeartbeat))).ok());
  std::vector<DeviceEntry> list = devices.List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].offer.relid, 4u);
  EXPECT_EQ(list[0].binding, Binding::kUnmatched);
  EXPECT_EQ(list[0].driver, "");
  EXPECT_EQ(list[1].offer.relid, 9u);
  EXPECT_EQ(list[1].binding, Binding::kBound);
  EXPECT_EQ(list[1].driver, "heartbeat");
  EXPECT_EQ(list[2].binding, Binding::kSubChannel);
  EXPECT_NE(devices.driver(OfferId(1)), nullptr);
  EXPECT_EQ(devices.driver(OfferId(2)), nullptr);
}

TEST(DeviceListTest, RemoveHandsBackTheBoundDriverOnce) {
  DriverRegistry registry;
  int removed = 0;
  ASSERT_TRUE(registry.Register(Spec("heartbeat", device_class::kHeartbeat, &removed)).ok());
  DeviceList devices(&registry);
  const OfferInfo offer = Offer(1, 9, device_class::kHeartbeat);
  ASSERT_TRUE(devices.Bind(offer.id, nullptr).code() == absl::StatusCode::kNotFound);
  const DriverSpec* spec = devices.Add(offer);
  ASSERT_TRUE(devices.Bind(offer.id, spec->factory(offer)).ok());
  EXPECT_EQ(devices.Bind(offer.id, spec->factory(offer)).code(),
            absl::StatusCode::kFailedPrecondition);
  std::unique_ptr<Driver> driver = devices.Remove(offer.id);
  ASSERT_NE(driver, nullptr);
  driver->Remove();
  EXPECT_EQ(removed, 1);
  EXPECT_EQ(devices.Remove(offer.id), nullptr);
  EXPECT_EQ(devices.size(), 0u);
}

TEST(DeviceListTest, ProbeFailureKeepsTheOfferListedWithTheError) {
  DriverRegistry registry;
  int removed = 0;
  ASSERT_TRUE(registry.Register(Spec("heartbeat", device_class::kHeartbeat, &removed)).ok());
  DeviceList devices(&registry);
  devices.Add(Offer(1, 9, device_class::kHeartbeat));
  ASSERT_TRUE(devices.ProbeFailed(OfferId(1), absl::UnavailableError("open failed")).ok());
  EXPECT_EQ(devices.ProbeFailed(OfferId(1), absl::UnknownError("again")).code(),
            absl::StatusCode::kFailedPrecondition);
  const DeviceEntry e = devices.List()[0];
  EXPECT_EQ(e.binding, Binding::kProbeFailed);
  EXPECT_EQ(e.probe_error, absl::UnavailableError("open failed"));
  EXPECT_TRUE(devices.Unbound().empty());  // failed probes are not retried automatically
  EXPECT_EQ(devices.Remove(OfferId(1)), nullptr);
  EXPECT_EQ(removed, 0);
}

TEST(DeviceListTest, LateRegistrationMatchesListedOffers) {
  DriverRegistry registry;
  int removed = 0;
  DeviceList devices(&registry);
  EXPECT_EQ(devices.Add(Offer(1, 3, device_class::kKvp)), nullptr);
  EXPECT_EQ(devices.Add(Offer(2, 4, device_class::kTimeSync)), nullptr);
  EXPECT_TRUE(devices.Unbound().empty());
  ASSERT_TRUE(registry.Register(Spec("kvp", device_class::kKvp, &removed)).ok());
  auto unbound = devices.Unbound();
  ASSERT_EQ(unbound.size(), 1u);
  EXPECT_EQ(unbound[0].first.relid, 3u);
  EXPECT_EQ(unbound[0].second->name, "kvp");
  EXPECT_EQ(devices.List()[0].binding, Binding::kMatched);
  EXPECT_EQ(devices.List()[1].binding, Binding::kUnmatched);
}

TEST(DriverRegistryTest, ConcurrentRegisterAndMatch) {
  DriverRegistry registry;
  int removed = 0;
  std::atomic<bool> stop{false};
  std::atomic<int> matched{0};
  std::thread reader([&] {
    const OfferInfo offer = Offer(1, 1, device_class::kVss);
    while (!stop.load(std::memory_order_acquire)) {  // [DRT-S2] pairs with [DRT-S1]
      if (registry.Match(offer) != nullptr) matched.fetch_add(1, std::memory_order_relaxed);
    }
  });
  const Guid classes[] = {device_class::kHeartbeat, device_class::kShutdown,
                          device_class::kTimeSync,  device_class::kKvp,
                          device_class::kVss,       device_class::kFileCopy};
  for (const Guid& cls : classes)
    ASSERT_TRUE(registry.Register(Spec(cls.ToString(), cls, &removed)).ok());
  // The reader must eventually see the VSS driver (bounded wait: no sleeping).
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (matched.load(std::memory_order_relaxed) == 0 && absl::Now() < deadline) {
    std::this_thread::yield();
  }
  stop.store(true, std::memory_order_release);  // [DRT-S1] pairs with [DRT-S2]
  reader.join();
  EXPECT_GT(matched.load(), 0);
  EXPECT_EQ(registry.Names().size(), 6u);
}

}  // namespace
}  // namespace vbus
