// Echo traffic with checks, and waits with deadlines, for end-to-end tests (testonly).
//
// EchoStream sends numbered packets (12..64 bytes, so most need padding) through a channel
// whose host device echoes them, and its receive callback checks every echo: the right index
// in order, the right bytes, zero padding, and a checksum chained over the stream.
//
// Example:
//   EchoStream stream(/*salt=*/1);
//   ASSERT_TRUE(channel->Open(EchoOptions(&stream), Deadline()).ok());
//   ASSERT_TRUE(stream.SendRange(*channel, 0, 1000).ok());
//   ASSERT_TRUE(stream.WaitFor(1000, Deadline()));
//   EXPECT_EQ(stream.bad(), 0u);
#ifndef VBUS_TEST_E2E_ECHO_STREAM_H_
#define VBUS_TEST_E2E_ECHO_STREAM_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/runtime/channel.h"
#include "core/runtime/sync.h"
#include "test/e2e/eventually.h"

namespace vbus::e2e {

inline absl::Time Deadline(absl::Duration d = absl::Seconds(60)) { return absl::Now() + d; }

// Packet i of a stream: 12..64 bytes (so most need padding): the index (8 bytes, little-endian)
// then bytes derived from the index and the stream's salt.
inline size_t PayloadSize(uint64_t i) { return 12 + (i * 7) % 53; }
inline uint8_t PayloadByte(uint64_t i, size_t j, uint64_t salt) {
  return static_cast<uint8_t>(i * 131 + j * 17 + salt);
}
inline void FillPayload(uint64_t i, uint64_t salt, std::vector<uint8_t>& out) {
  out.resize(PayloadSize(i));
  std::memcpy(out.data(), &i, 8);
  for (size_t j = 8; j < out.size(); ++j) out[j] = PayloadByte(i, j, salt);
}

// FNV-1a, chained over every packet in order: equal sums mean the same bytes in the same order.
inline uint64_t Fnv(uint64_t h, absl::Span<const uint8_t> bytes) {
  for (uint8_t b : bytes) h = (h ^ b) * 0x100000001b3ull;
  return h;
}
constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull;

// One stream of echoed packets on one channel: the receive callback checks every echo (right
// index in order, right bytes, zero padding) and chains the checksum.
class EchoStream {
 public:
  explicit EchoStream(uint64_t salt) : salt_(salt) {}

  // The channel's receive callback (dispatching thread; one call at a time).
  void OnPacket(const PacketView& p) {
    const absl::Span<const uint8_t> payload = p.payload();
    const uint64_t expected = next_;
    uint64_t index = ~uint64_t{0};
    if (payload.size() >= 8) std::memcpy(&index, payload.data(), 8);
    bool good = index == expected && payload.size() == (PayloadSize(index) + 7) / 8 * 8;
    for (size_t j = 8; good && j < payload.size(); ++j) {
      good = payload[j] == (j < PayloadSize(index) ? PayloadByte(index, j, salt_) : 0);
    }
    if (good) {
      received_sum_ = Fnv(received_sum_, payload.subspan(0, PayloadSize(index)));
    } else {
      bad_.fetch_add(1, std::memory_order_relaxed);
    }
    ++next_;
    // [E2E-C1] release: the fields above are complete before the count says so; pairs with
    // [E2E-C2].
    received_.store(next_, std::memory_order_release);
    // Under mu_, so that a WaitFor either sees this packet counted or has set target_ first.
    MutexLock lock(&mu_);
    if (next_ == target_) cv_.SignalAll();
  }

  // Sends packets [first, first + count) with back-pressure waits of up to `room_wait` each.
  // Returns the first error.
  absl::Status SendRange(Channel& channel, uint64_t first, uint64_t count,
                         absl::Duration room_wait = absl::Seconds(60)) {
    std::vector<uint8_t> payload;
    SendOptions wait;
    for (uint64_t i = first; i < first + count; ++i) {
      FillPayload(i, salt_, payload);
      wait.deadline = Deadline(room_wait);
      if (absl::Status s = channel.Send(payload, wait); !s.ok()) return s;
      sent_sum_ = Fnv(sent_sum_, payload);
      sent_ = i + 1;
    }
    return absl::OkStatus();
  }

  // Waits until `count` echoes arrived (or the deadline).
  bool WaitFor(uint64_t count, absl::Time deadline) {
    MutexLock lock(&mu_);
    target_ = count;
    return cv_.AwaitWithDeadline(&mu_, deadline, [&] { return received() >= count; });
  }

  // [E2E-C2] acquire: pairs with [E2E-C1].
  uint64_t received() const { return received_.load(std::memory_order_acquire); }
  uint64_t bad() const { return bad_.load(std::memory_order_relaxed); }
  uint64_t sent() const { return sent_; }
  uint64_t sent_sum() const { return sent_sum_; }
  // Valid once received() covers every packet (read after [E2E-C2]).
  uint64_t received_sum() const { return received_sum_; }

 private:
  const uint64_t salt_;
  // Receiver side (the dispatching thread).
  uint64_t next_ = 0;
  uint64_t received_sum_ = kFnvBasis;
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> bad_{0};
  // Sender side (the sending thread).
  uint64_t sent_ = 0;
  uint64_t sent_sum_ = kFnvBasis;
  // The waiter's count (WaitFor): the receive callback signals when it reaches it.
  Mutex mu_;
  CondVar cv_;
  uint64_t target_ ABSL_GUARDED_BY(mu_) = 0;
};

// SmallCallbackRings: 4 + 4 ring pages in callback mode (so that a Call's completion is matched
// by dispatch); `on_packet` gets the data packets (none: dropped).
inline ChannelOpenOptions SmallCallbackRings(
    std::function<void(const PacketView&)> on_packet = nullptr) {
  ChannelOpenOptions o;
  o.outbound_ring_pages = 4;
  o.inbound_ring_pages = 4;
  o.on_packet = on_packet ? std::move(on_packet) : [](const PacketView&) {};
  return o;
}

// CallEcho: one request through the host's echo device (Channel::Call); DataLoss if the answer
// is not the request.
inline absl::Status CallEcho(Channel& channel, absl::Span<const uint8_t> ping,
                             absl::Time deadline) {
  absl::StatusOr<std::vector<uint8_t>> pong = channel.Call(ping, deadline);
  if (!pong.ok()) return pong.status();
  if (*pong != std::vector<uint8_t>(ping.begin(), ping.end())) {
    return absl::DataLossError("the echo is not the request");
  }
  return absl::OkStatus();
}

inline ChannelOpenOptions EchoOptions(EchoStream* stream, uint32_t pages = 16) {
  ChannelOpenOptions o;
  o.outbound_ring_pages = pages;
  o.inbound_ring_pages = pages;
  o.on_packet = [stream](const PacketView& p) { stream->OnPacket(p); };
  return o;
}

}  // namespace vbus::e2e

#endif  // VBUS_TEST_E2E_ECHO_STREAM_H_
