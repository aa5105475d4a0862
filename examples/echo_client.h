// EchoClient: a guest driver for the mock host's echo device that measures round trips. It
// opens the channel in callback mode and counts the packets that come back; Pump sends a
// stream of packets and waits until every one has been echoed.
#ifndef VBUS_EXAMPLES_ECHO_CLIENT_H_
#define VBUS_EXAMPLES_ECHO_CLIENT_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/runtime/channel.h"
#include "core/runtime/driver.h"

namespace vbus::examples {

// EchoLink: one open echo channel and its counters, shared by the driver and the agent.
class EchoLink {
 public:
  explicit EchoLink(std::shared_ptr<Channel> channel) : channel_(std::move(channel)) {}

  struct Progress {
    uint64_t sent = 0;
    uint64_t received = 0;
    absl::Duration elapsed;
  };
  // Pump
  // Sends `count` packets of `bytes` bytes (at least 8: the index comes first) and waits until
  // all have come back, or `deadline`. Calls `progress` about every `every` from this thread.
  // Errors: the channel's (closed, rescinded), DeadlineExceeded, DataLoss for an echo that
  // does not match what was sent.
  absl::StatusOr<Progress> Pump(uint64_t count, size_t bytes, absl::Time deadline,
                                const std::function<void(const Progress&)>& progress,
                                absl::Duration every = absl::Milliseconds(100));

  // The channel's receive callback (dispatching thread).
  void OnPacket(const PacketView& packet);
  // The channel went away: wakes a Pump.
  void Detach();
  uint32_t relid() const { return channel_->relid(); }

 private:
  const std::shared_ptr<Channel> channel_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool detached_ = false;  // guarded by mu_
  // Relaxed counters: the dispatcher writes, Pump polls them between sends; the mutex and the
  // condition variable order the final wait.
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> mismatches_{0};
  std::atomic<uint64_t> expected_next_{0};
  std::atomic<uint64_t> target_{UINT64_MAX};
};

// EchoClientDriver: binds an echo offer and hands its EchoLink to `on_link` (nullptr when the
// device goes away). `share` turns the Channel the bus probes with into the bus's shared_ptr
// of it (ChannelBus::FindChannel), so that a Pump in progress keeps it alive.
class EchoClientDriver final : public Driver {
 public:
  EchoClientDriver(std::function<std::shared_ptr<Channel>(const Channel&)> share,
                   std::function<void(std::shared_ptr<EchoLink>)> on_link)
      : share_(std::move(share)), on_link_(std::move(on_link)) {}
  absl::Status Probe(Channel& channel) override;
  void Remove() override;

 private:
  const std::function<std::shared_ptr<Channel>(const Channel&)> share_;
  const std::function<void(std::shared_ptr<EchoLink>)> on_link_;
  Channel* channel_ = nullptr;
  std::shared_ptr<EchoLink> link_;
};

}  // namespace vbus::examples

#endif  // VBUS_EXAMPLES_ECHO_CLIENT_H_
