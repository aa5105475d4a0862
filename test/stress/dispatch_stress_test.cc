// Dispatch stress through the real stack: a ChannelBus over MockBackend against an in-process
// mock host. The host's echo devices answer every packet by writing the guest's inbound ring,
// setting the channel's bit in the guest's event page and ringing the guest's futex doorbell
// (only on the bit's 0 → 1 edge); MockBackend's doorbell thread wakes and raises
// OnEventsPending; extra raiser threads raise it at the same time (spurious raises, which the
// Backend contract allows), so several threads race into EventDispatch's hand-off while the
// channels' drains hand off among themselves and run out of budget.
//
// Proven: every packet each sender thread sent comes back exactly once and in that sender's
// order. In the last phase the raisers are gone: the final packets can only be found through
// the doorbell, and there is no sweep at the end — the test only waits (with a deadline) for
// callbacks, so a lost interrupt is a failure, not something a final scan papers over.
//
// VBUS_DISPATCH_STRESS_PACKETS overrides the packets per sender thread (default 20,000;
// 4,000 under a sanitizer).
#include <atomic>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"
#include "test/stress/stress_util.h"

namespace vbus {
namespace {

constexpr int kChannels = 6;
constexpr int kSendersPerChannel = 2;
constexpr int kRaisers = 2;

absl::Time Deadline(absl::Duration d = absl::Seconds(120)) { return absl::Now() + d; }

// A Backend that adds raiser threads to another: they call the listener's OnEventsPending at
// random moments while `raising` is on, concurrently with the real doorbell thread.
class RaisingBackend final : public Backend, private BackendListener {
 public:
  explicit RaisingBackend(Backend* inner) : inner_(inner) {}
  ~RaisingBackend() override { Stop(); }

  void SetRaising(bool on) {
    MutexLock lock(&mu_);
    raising_ = on;
    cv_.SignalAll();
  }
  uint64_t raises() const { return raises_.load(std::memory_order_relaxed); }

  absl::Status Start(BackendListener* listener) override {
    listener_ = listener;
    if (absl::Status s = inner_->Start(this); !s.ok()) return s;
    for (int i = 0; i < kRaisers; ++i) {
      raisers_.emplace_back([this, i] { Raise(i); });
    }
    return absl::OkStatus();
  }
  void Stop() override {
    {
      MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
      cv_.SignalAll();
    }
    for (std::thread& t : raisers_) t.join();
    inner_->Stop();
  }
  ContactInfo contact_info() const override { return inner_->contact_info(); }
  absl::Status PostMessage(const v1::ControlMessage& m) override { return inner_->PostMessage(m); }
  void SetConnection(const NegotiatedConnection& c) override { inner_->SetConnection(c); }
  void PauseDelivery() override { inner_->PauseDelivery(); }
  void ResumeDelivery() override { inner_->ResumeDelivery(); }
  absl::Status SignalHost(const ChannelSignal& s) override { return inner_->SignalHost(s); }
  uint32_t vp_count() const override { return inner_->vp_count(); }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override {
    return inner_->ReceiveEventFlags(vp);
  }
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override {
    return inner_->AllocatePages(count, sharing);
  }

 private:
  // The inner backend's listener calls go straight through.
  void OnHostMessage(const v1::ControlMessage& m) override { listener_->OnHostMessage(m); }
  void OnEventsPending(uint32_t vp) override { listener_->OnEventsPending(vp); }
  void OnHostLost(const absl::Status& s) override { listener_->OnHostLost(s); }

  void Raise(int index) {
    std::mt19937 rng(17 + index);
    for (;;) {
      {
        MutexLock lock(&mu_);
        // Paced, not spinning: a raise every few dozen microseconds while raising is on.
        const absl::Time next = absl::Now() + absl::Microseconds(rng() % 60);
        cv_.AwaitWithDeadline(&mu_, raising_ ? next : absl::InfiniteFuture(),
                              [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopped_; });
        if (stopped_) return;
        if (!raising_) continue;
      }
      raises_.fetch_add(1, std::memory_order_relaxed);
      listener_->OnEventsPending(static_cast<uint32_t>(rng() % inner_->vp_count()));
    }
  }

  Backend* const inner_;
  BackendListener* listener_ = nullptr;
  Mutex mu_;
  CondVar cv_;
  bool raising_ ABSL_GUARDED_BY(mu_) = true;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> raisers_;
  std::atomic<uint64_t> raises_{0};
};

// What came back on one channel: per sender, the next sequence number expected.
struct Received {
  Mutex mu;
  std::vector<uint64_t> next ABSL_GUARDED_BY(mu) = std::vector<uint64_t>(kSendersPerChannel, 0);
  uint64_t bad ABSL_GUARDED_BY(mu) = 0;
  std::atomic<uint64_t> count{0};

  void Check(const PacketView& p) {
    uint32_t sender = 0;
    uint64_t seq = 0;
    if (p.payload().size() < 16) {
      MutexLock lock(&mu);
      ++bad;
      return;
    }
    std::memcpy(&sender, p.payload().data(), sizeof(sender));
    std::memcpy(&seq, p.payload().data() + 8, sizeof(seq));
    MutexLock lock(&mu);
    if (sender >= kSendersPerChannel || next[sender] != seq) {
      ++bad;
    } else {
      ++next[sender];
    }
    count.fetch_add(1, std::memory_order_relaxed);
  }
};

TEST(DispatchStressTest, EveryEchoArrivesThroughDoorbellsAndConcurrentRaisers) {
  const uint64_t per_sender =
      stress::EnvOr("VBUS_DISPATCH_STRESS_PACKETS", stress::kSanitized ? 4'000 : 20'000);
  absl::StatusOr<std::unique_ptr<e2e::E2eHost>> host =
      e2e::E2eHost::Start(e2e::E2eHost::Mode::kInProcess, Deadline());
  ASSERT_TRUE(host.ok()) << host.status();
  mock::MockBackendOptions backend_options;
  backend_options.guest_name = "stress";
  backend_options.memory_bytes = 64 << 20;
  absl::StatusOr<std::unique_ptr<mock::MockBackend>> mock_backend =
      mock::MockBackend::Connect((*host)->channel(), backend_options);
  ASSERT_TRUE(mock_backend.ok()) << mock_backend.status();
  RaisingBackend backend(mock_backend->get());
  absl::StatusOr<std::unique_ptr<ChannelBus>> bus = ChannelBus::Create(&backend, {});
  ASSERT_TRUE(bus.ok()) << bus.status();  // attaches the guest
  for (int i = 0; i < kChannels; ++i) ASSERT_TRUE((*host)->Offer("stress", "echo").ok());
  ASSERT_TRUE((*bus)->Connect(Deadline()).ok());
  const std::vector<OfferInfo> offers = (*bus)->Offers();
  ASSERT_EQ(offers.size(), static_cast<size_t>(kChannels));

  std::vector<Received> received(kChannels);
  std::vector<std::shared_ptr<Channel>> channels;
  for (int c = 0; c < kChannels; ++c) {
    std::shared_ptr<Channel> channel = (*bus)->FindChannel(offers[c].relid);
    ASSERT_NE(channel, nullptr);
    ChannelOpenOptions options;
    options.outbound_ring_pages = 3;  // small rings: senders wait for room, echoes back up
    options.inbound_ring_pages = 3;
    options.drain_budget = 1 + c;  // budgets from 1 up: deliveries requeue across passes
    options.on_packet = [&r = received[c]](const PacketView& p) { r.Check(p); };
    ASSERT_TRUE(channel->Open(options, Deadline()).ok());
    channels.push_back(std::move(channel));
  }

  // Phase 1 sends all but the last packets with the raisers on; phase 2 sends the rest with
  // only the doorbell left.
  const uint64_t phase1 = per_sender - std::min<uint64_t>(per_sender, 200);
  auto send = [&](uint64_t from, uint64_t to) {
    std::vector<std::thread> senders;
    for (int c = 0; c < kChannels; ++c) {
      for (uint32_t s = 0; s < kSendersPerChannel; ++s) {
        senders.emplace_back([&, c, s] {
          std::mt19937 rng(c * 31 + s);
          SendOptions wait;
          wait.deadline = Deadline();
          std::vector<uint8_t> payload(16 + 8 * (rng() % 64));
          for (uint64_t seq = from; seq < to; ++seq) {
            payload.resize(16 + 8 * (rng() % 64));
            std::memcpy(payload.data(), &s, sizeof(s));
            std::memcpy(payload.data() + 8, &seq, sizeof(seq));
            absl::Status sent = channels[c]->Send(payload, wait);
            if (!sent.ok()) {
              ADD_FAILURE() << "relid " << offers[c].relid << " sender " << s << ": " << sent;
              return;
            }
          }
        });
      }
    }
    for (std::thread& t : senders) t.join();
  };
  send(0, phase1);
  backend.SetRaising(false);
  const uint64_t raises = backend.raises();
  send(phase1, per_sender);

  // Only callbacks move the counters; nothing scans on our behalf.
  const uint64_t per_channel = per_sender * kSendersPerChannel;
  const absl::Time deadline = Deadline();
  auto all_back = [&] {
    for (const Received& r : received) {
      if (r.count.load(std::memory_order_relaxed) < per_channel) return false;
    }
    return true;
  };
  while (!all_back() && absl::Now() < deadline) std::this_thread::yield();
  for (int c = 0; c < kChannels; ++c) {
    MutexLock lock(&received[c].mu);
    EXPECT_EQ(received[c].count.load(), per_channel) << "relid " << offers[c].relid;
    EXPECT_EQ(received[c].bad, 0u) << "relid " << offers[c].relid;
  }
  const BusStats stats = (*bus)->stats();
  EXPECT_EQ(stats.channels.packets_received, per_channel * kChannels);
  EXPECT_GT(raises, 0u);
  std::printf(
      "%llu packets each way on %d channels; %llu extra raises; %llu events raised, %llu "
      "deliveries\n",
      static_cast<unsigned long long>(per_channel * kChannels), kChannels,
      static_cast<unsigned long long>(raises), static_cast<unsigned long long>(stats.events_raised),
      static_cast<unsigned long long>(stats.events_dispatched));
  channels.clear();
  bus->reset();
}

}  // namespace
}  // namespace vbus
