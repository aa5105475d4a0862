// Host-side device emulators: the plug-in interface and the registry of device kinds.
//
// When a guest opens a channel whose offer names a device kind, the mock host's data plane
// creates that kind's Device and feeds it every packet the guest writes into the channel's
// outbound ring; the device answers through a ChannelPort, which writes into the channel's
// inbound ring and signals the guest when the ring rules say so. The kinds shipped here:
//   "echo"  answers every packet with the same bytes, and sub-channel requests (see EchoDevice)
//   "sink"  consumes and counts (see SinkDevice)
//   "raw"   no emulator: HostControl.SendPacket and WatchPackets drive the channel
// Integration-component emulators (heartbeat, shutdown, timesync, kvp) register the same way.
//
// Example (a new kind):
//   class Doubler : public Device {
//     PacketDisposition OnPacket(ChannelPort& port, const GuestPacketRef& p) override {
//       ...
//       absl::Status s = port.Send(PacketType::kDataInband, 0, p.trans_id, bytes);
//       return s.code() == absl::StatusCode::kResourceExhausted ? PacketDisposition::kRetryLater
//                                                               : PacketDisposition::kConsumed;
//     }
//   };
//   registry.Register({"doubler", kDoublerClass, "doubles", [] { return
//   std::make_unique<Doubler>(); }});
//
// Threading: a Device's methods are called from one thread at a time (the guest's doorbell
// thread, or whoever drives the data plane), never concurrently with each other. They must not
// block. DeviceRegistry is immutable after setup and safe to read from any thread.
#ifndef VBUS_MOCK_HOST_DEVICE_H_
#define VBUS_MOCK_HOST_DEVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/data/guid.h"
#include "core/data/ring_buffer.h"
#include "mock/host/device_kinds.h"

namespace vbus::mock {

// GuestPacketRef
// One packet the guest wrote, as the device sees it. The spans are valid only during the call
// that received them (copy what you keep). `payload` includes the sender's 0-7 padding bytes
// (VMBus does not carry the unpadded length).
struct GuestPacketRef {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t trans_id = 0;
  absl::Span<const uint8_t> sub_header;
  absl::Span<const uint8_t> payload;

  bool completion_requested() const { return (flags & kCompletionRequested) != 0; }
};

// ChannelPort
// A device's way back to the guest: the host → guest (inbound) ring of one open channel.
class ChannelPort {
 public:
  virtual ~ChannelPort() = default;

  // Send
  // Writes one packet into the inbound ring and, when the ring rules say the guest must be
  // woken (the ring was empty and interrupt_mask clear), sets the relid's bit in the guest's
  // event page and rings the guest's doorbell. ResourceExhausted if the ring has no room
  // (nothing written; the data plane re-delivers the current packet once the guest frees
  // space), InvalidArgument for a packet that can never fit, DataLoss if the guest corrupted
  // the ring, FailedPrecondition once the channel is closing.
  virtual absl::Status Send(PacketType type, uint16_t flags, uint64_t trans_id,
                            absl::Span<const uint8_t> payload) = 0;

  // The channel's relid.
  virtual uint32_t relid() const = 0;

  // The id of the guest the channel belongs to ("" where there is no guest, e.g. in tests).
  virtual std::string guest_id() const { return ""; }

  // RequestSubChannels
  // Asks the host to bring this (primary) channel's live sub-channels up to `count`
  // (mock/host/sub_channel_request.h). OK means the host took the request: the offers follow
  // asynchronously, and a failure to make them is reported as an ERROR event, not here. It
  // never blocks. FailedPrecondition if the host takes no sub-channel requests,
  // ResourceExhausted if it has too many queued; Unimplemented (this default) for a port
  // with no host behind it.
  virtual absl::Status RequestSubChannels(uint16_t count) {
    return absl::UnimplementedError(
        absl::StrCat("relid ", relid(),
                     ": this channel port takes no sub-channel requests (asked for ", count, ")"));
  }
};

// PacketDisposition: what a device did with a packet.
enum class PacketDisposition {
  kConsumed,    // done with it; the data plane moves on
  kRetryLater,  // could not finish (the inbound ring was full): hand me this packet again
};

// Device
// One emulator instance per open channel.
class Device {
 public:
  virtual ~Device() = default;

  // OnOpen: the channel's rings are mapped; `port` stays valid until OnClose returns. An error
  // fails the open (the guest gets a non-zero OpenResult status).
  virtual absl::Status OnOpen(ChannelPort& port) {
    (void)port;
    return absl::OkStatus();
  }

  // OnPacket: one packet from the guest, in ring order.
  virtual PacketDisposition OnPacket(ChannelPort& port, const GuestPacketRef& packet) = 0;

  // OnClose: the channel is closing (guest close, rescind, unload or detach). After it returns
  // the port is gone.
  virtual void OnClose() {}
};

// DeviceKind: a name the OfferSpec.device field may carry.
struct DeviceKind {
  std::string name;
  // interface_type used when the offer leaves it unset.
  Guid class_id;
  // One line for `vbusctl` and logs.
  std::string description;
  // Makes an emulator for a newly opened channel; empty for "raw" (no emulator).
  std::function<std::unique_ptr<Device>()> factory;
};

// DeviceRegistry
// The device kinds a host knows, by name.
class DeviceRegistry {
 public:
  // Register: AlreadyExists for a taken name, InvalidArgument for an empty name.
  absl::Status Register(DeviceKind kind);
  // Find: the kind named `name`, or nullptr.
  const DeviceKind* Find(absl::string_view name) const;
  // Names in sorted order.
  std::vector<std::string> Names() const;

  // Default: echo, sink and raw.
  static const DeviceRegistry& Default();

 private:
  absl::btree_map<std::string, DeviceKind> kinds_;
};

// EchoDevice
// Answers every data packet with the same payload bytes and the same transaction id: a
// completion (type 11) if the guest set COMPLETION_REQUESTED, else an in-band packet (type 6).
// Completions the guest sends are consumed without an answer (echoing them would loop).
// A data packet that opens with the sub-channel magic is a sub-channel request
// (mock/host/sub_channel_request.h), answered instead of echoed: a valid count goes to
// ChannelPort::RequestSubChannels, and the answer says 0 if the port took it, else
// protocol::kStatusUnsuccessful (a bad count is refused without asking the port). When the
// answer does not fit the inbound ring, the packet is retried like an echo, but the port is
// asked once per request.
class EchoDevice : public Device {
 public:
  PacketDisposition OnPacket(ChannelPort& port, const GuestPacketRef& packet) override;

 private:
  PacketDisposition AnswerSubChannelRequest(ChannelPort& port, const GuestPacketRef& packet);

  // The status of the sub-channel request whose answer did not fit the inbound ring (the data
  // plane hands that same packet in again before any other), by its transaction id.
  struct UnsentAnswer {
    uint64_t trans_id = 0;
    uint32_t status = 0;
  };
  std::optional<UnsentAnswer> unsent_answer_;
};

// SinkDevice
// Consumes every packet and counts packets and payload bytes. Honours COMPLETION_REQUESTED with
// an empty completion carrying the same transaction id (so a sender that waits for completions
// can keep going). Counters readable from any thread.
class SinkDevice : public Device {
 public:
  PacketDisposition OnPacket(ChannelPort& port, const GuestPacketRef& packet) override;
  uint64_t packets() const { return packets_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  // Relaxed: statistics only, no data published through them.
  std::atomic<uint64_t> packets_{0};
  std::atomic<uint64_t> bytes_{0};
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_DEVICE_H_
