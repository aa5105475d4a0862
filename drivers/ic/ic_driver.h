// IcDriver: the vbus Driver every integration component builds on. It opens the IC channel
// (16 KiB rings each way, docs/integration_components.md §1), feeds each packet the host sends to
// an IcEndpoint (the negotiation and the IC's own IcService) and sends the answers back.
//
// The host may send its NEGOTIATE as soon as the rings are mapped, before the guest has seen
// the OpenResult; an answer computed then is held and sent the moment Open returns OK. An
// answer that finds the outbound ring full (the host has not yet released the space of the
// previous ones) waits for room (Channel::WhenWritable) and goes out, in order, once there is.
//
// A concrete IC derives from IcDriver and implements IcService (type, versions, Handle):
//   class HeartbeatDriver final : public IcDriver { ... };
//   registry.Register({"heartbeat", device_class::kHeartbeat, [](const OfferInfo&) {
//     return std::make_unique<HeartbeatDriver>(options); }});
// Its logic can be driven without a bus through endpoint().Process(bytes).
//
// Threading: Probe and Remove run on the device's driver strand; packets are handled on the
// dispatching thread (they must not block: IcService::Handle and IcAnswer::after_send must
// return quickly). The accessors may be called from any thread.
#ifndef VBUS_DRIVERS_IC_IC_DRIVER_H_
#define VBUS_DRIVERS_IC_IC_DRIVER_H_

#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/runtime/channel.h"
#include "core/runtime/driver.h"
#include "drivers/ic/ic_endpoint.h"

namespace vbus::ic {

// IcDriverOptions: what every IC driver takes.
struct IcDriverOptions {
  // One line per notable event (negotiation, each request, refusals); empty = no log.
  // Called from the dispatching thread or the driver strand; must not block.
  std::function<void(absl::string_view)> log;
  // How long Probe waits for the channel to open.
  absl::Duration open_timeout = absl::Seconds(10);
};

class IcDriver : public Driver, public IcService {
 public:
  // `name` prefixes log lines ("heartbeat").
  IcDriver(std::string name, IcDriverOptions options);
  ~IcDriver() override = default;

  // Driver: opens the channel (callback mode) and sends any answer computed meanwhile.
  absl::Status Probe(Channel& channel) override;
  // Driver: closes the channel.
  void Remove() override;

  IcEndpoint& endpoint() { return endpoint_; }
  const std::string& name() const { return name_; }
  // Answers that could not be sent (ring full, channel gone).
  uint64_t send_failures() const;

 protected:
  void Log(absl::string_view line) const;

 private:
  void OnPacket(const PacketView& packet);
  // Sends `out` now or queues it behind answers waiting for room (mu_ held). Returns true if
  // the caller must ask for room (WhenWritable) once it has released mu_.
  bool SendOrQueue(IcEndpoint::Output out, std::vector<std::function<void()>>* after_send);
  // Sends the queued answers that fit (WhenWritable's callback).
  void FlushWaiting();
  void AskForRoom();

  const std::string name_;
  const IcDriverOptions options_;
  IcEndpoint endpoint_{this};
  Channel* channel_ = nullptr;  // set in Probe, before any packet is delivered

  mutable std::mutex mu_;  // guards the fields below; sends happen under it, so answers keep order
  bool open_ = false;
  std::vector<IcEndpoint::Output> held_;    // answers computed before Open returned
  std::deque<IcEndpoint::Output> waiting_;  // answers waiting for room in the ring
  uint64_t send_failures_ = 0;
};

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_IC_IC_DRIVER_H_
