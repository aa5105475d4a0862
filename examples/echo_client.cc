#include "examples/echo_client.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vbus::examples {

void EchoLink::OnPacket(const PacketView& packet) {
  uint64_t index = UINT64_MAX;
  if (packet.payload().size() >= 8) std::memcpy(&index, packet.payload().data(), 8);
  // Echoes come back in order: each carries the next index.
  const uint64_t expected = expected_next_.load(std::memory_order_relaxed);
  if (index != expected) mismatches_.fetch_add(1, std::memory_order_relaxed);
  expected_next_.store(expected + 1, std::memory_order_relaxed);
  const uint64_t n = received_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n >= target_.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
}

void EchoLink::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  detached_ = true;
  cv_.notify_all();
}

absl::StatusOr<EchoLink::Progress> EchoLink::Pump(
    uint64_t count, size_t bytes, absl::Time deadline,
    const std::function<void(const Progress&)>& progress, absl::Duration every) {
  if (bytes < 8) return absl::InvalidArgumentError("echo packets carry at least 8 bytes");
  const uint64_t base = received_.load(std::memory_order_relaxed);
  target_.store(base + count, std::memory_order_relaxed);
  const absl::Time start = absl::Now();
  absl::Time next_report = start + every;
  std::vector<uint8_t> payload(bytes, 0x5A);
  SendOptions options;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t index = base + i;
    std::memcpy(payload.data(), &index, 8);
    options.deadline = deadline;  // wait for room when the ring is full
    if (absl::Status s = channel_->Send(payload, options); !s.ok()) return s;
    if (progress && (i & 255) == 0 && absl::Now() >= next_report) {
      progress({i + 1, received_.load(std::memory_order_relaxed) - base, absl::Now() - start});
      next_report += every;
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  while (received_.load(std::memory_order_relaxed) < base + count && !detached_) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat("echo: ", received_.load(std::memory_order_relaxed) - base, " of ", count,
                       " packets came back in time"));
    }
    cv_.wait_for(lock, absl::ToChronoNanoseconds(std::min(left, every)));
    if (progress && absl::Now() >= next_report) {
      lock.unlock();
      progress({count, received_.load(std::memory_order_relaxed) - base, absl::Now() - start});
      next_report += every;
      lock.lock();
    }
  }
  if (detached_) return absl::UnavailableError("the echo channel went away");
  if (const uint64_t bad = mismatches_.load(std::memory_order_relaxed); bad != 0) {
    return absl::DataLossError(absl::StrCat(bad, " echoes came back out of order"));
  }
  return Progress{count, count, absl::Now() - start};
}

absl::Status EchoClientDriver::Probe(Channel& channel) {
  channel_ = &channel;
  std::shared_ptr<Channel> shared = share_ ? share_(channel) : nullptr;
  if (shared == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("relid ", channel.relid(), " is no longer offered"));
  }
  auto link = std::make_shared<EchoLink>(std::move(shared));
  ChannelOpenOptions options;
  options.on_packet = [link](const PacketView& p) { link->OnPacket(p); };
  if (absl::Status s = channel.Open(options, absl::Now() + absl::Seconds(10)); !s.ok()) return s;
  link_ = link;
  if (on_link_) on_link_(link_);
  return absl::OkStatus();
}

void EchoClientDriver::Remove() {
  if (link_) link_->Detach();
  if (on_link_) on_link_(nullptr);
  if (channel_ != nullptr) (void)channel_->Close(absl::Now() + absl::Seconds(5));
}

}  // namespace vbus::examples
