// GuestDataPlane: the mock host's data path for one attached guest — rings, event pages,
// doorbells, monitor pages and device emulators, all in the guest's shared memory.
//
// The engine (mock/host/engine.h) decides which channels are open; the data plane carries
// their packets. For each open channel it maps the two rings from the guest's memory by PFN
// (MapChannel, answering the engine's MapRings), reads the guest's outbound ring with an
// IncomingRing and writes the guest's inbound ring with an OutgoingRing (core/data/ring_buffer.h),
// hands every packet the guest writes to the channel's Device (echo, sink, ...) and to packet
// watchers, and signals the guest exactly when the ring rules say so: set the relid's bit in
// the guest event page; if it was clear, ring the guest's doorbell.
//
// Guest → host signals arrive as bits in the host event page (and, for monitored channels, as
// pending bits in the guest → host monitor page). ProcessEvents() takes them all and drains
// each signalled channel. It owns no thread: the runtime calls it from the guest's doorbell
// thread (wait on Doorbell::kHost, then ProcessEvents), a simulation may call it directly.
//
// Draining follows the reader's side of the ring protocol: mask interrupts, read and commit,
// unmask, re-check. When a device cannot answer because the inbound ring is full, the packet
// is kept (a private copy), pending_send_sz is armed on the inbound ring, and draining of that
// channel pauses until the guest frees space and signals: back-pressure, never a drop.
//
// The guest is not trusted: a corrupt ring fails that channel only (its status becomes the
// ring's DataLoss, an ERROR event is published, its packets stop); an event bit for a relid
// with no open channel is counted as spurious and ignored.
//
// For tests it also plays a hostile host (InjectRingFault: control-page writes, raw packets,
// event storms, a device that stops reading; RingFault in proto/mock_host.proto).
//
// Threading: MapChannel/UnmapChannel (control path), ProcessEvents (one doorbell thread),
// SendPacket and InjectRingFault (any thread) may run concurrently. Device callbacks run inside
// ProcessEvents.
#ifndef VBUS_MOCK_HOST_DATA_PLANE_H_
#define VBUS_MOCK_HOST_DATA_PLANE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/data/event_page.h"
#include "core/data/protocol.h"
#include "core/data/ring_buffer.h"
#include "core/runtime/sync.h"
#include "mock/guest_memory.h"
#include "mock/host/device.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

// ChannelCounters: what ListChannels reports for an open channel.
struct ChannelCounters {
  uint64_t packets_to_guest = 0;
  uint64_t bytes_to_guest = 0;
  uint64_t packets_from_guest = 0;
  uint64_t bytes_from_guest = 0;
  uint64_t signals_to_guest = 0;
  uint64_t signals_from_guest = 0;
};

// What the data plane needs from the runtime. Every hook may be empty. They are called from
// the thread that called into the data plane, with data-plane locks held: they must not call
// back into this GuestDataPlane and must not block.
struct DataPlaneHooks {
  // Whether anybody watches packets (asked before building a GuestPacket for on_packet).
  std::function<bool()> wants_packets;
  // A packet the guest wrote (guest_id, relid, type, flags, transaction id, payload, time).
  std::function<void(v1::GuestPacket)> on_packet;
  // SIGNALS_FROM_GUEST / SIGNALS_TO_GUEST counts and ERROR events (a corrupt ring).
  std::function<void(v1::ProtocolEvent)> on_event;
  // The clock for event and packet timestamps (absl::Now when empty).
  std::function<absl::Time()> now;
  // A device asked for sub-channels of its open channel `relid`: bring its live sub-channels
  // up to `count` (ChannelPort::RequestSubChannels, mock/host/sub_channel_request.h). OK means
  // the request was taken. Called on the thread draining the channel, with channels_mu_ held as
  // a reader (and the channel's drain lock): the implementer must not call into the data plane
  // or the engine synchronously — offering the sub-channels takes the engine's lock, whose
  // holder may be waiting to map rings, which takes channels_mu_ as the writer. Queue the work
  // and return. When empty, devices are told FailedPrecondition ("this host takes no
  // sub-channel requests").
  std::function<absl::Status(uint32_t relid, uint16_t count)> on_sub_channel_request;
};

// The channel's port into the inbound ring and its state. Defined in data_plane.cc.
class HostChannel;

class GuestDataPlane {
 public:
  // Create
  // Takes the guest's mapped memory. Fails (InvalidArgument) only if the event pages cannot
  // be attached, which ValidateLayout already rules out.
  static absl::StatusOr<std::unique_ptr<GuestDataPlane>> Create(std::string guest_id,
                                                                std::unique_ptr<GuestMemory> memory,
                                                                const DeviceRegistry* devices,
                                                                DataPlaneHooks hooks);
  ~GuestDataPlane();

  GuestMemory& memory() const { return *memory_; }
  const std::string& guest_id() const { return guest_id_; }

  // MapChannel
  // Maps the rings of an opening channel, attaches the ring objects (checking the indices the
  // guest initialised), creates and opens its device. On any failure nothing stays mapped and
  // the error names the step (the engine then answers OpenResult with a failure).
  // AlreadyExists if the relid is mapped already; InvalidArgument for an unknown device kind
  // or a relid out of range.
  absl::Status MapChannel(uint32_t relid, absl::string_view device,
                          absl::Span<const uint64_t> outbound_pfns,
                          absl::Span<const uint64_t> inbound_pfns,
                          std::optional<uint32_t> monitor_id, uint32_t target_vp = 0);

  // SetTargetVp
  // Signals the channel in VP `target_vp`'s event flags from now on (a signal already being
  // made may still use the old VP). NotFound if not mapped; InvalidArgument for a VP the guest
  // does not take events on.
  absl::Status SetTargetVp(uint32_t relid, uint32_t target_vp);

  // UnmapChannel
  // Closes the device and unmaps the rings, after any drain or send in progress finishes.
  // Returns the channel's final counters; NotFound if not mapped.
  absl::StatusOr<ChannelCounters> UnmapChannel(uint32_t relid);

  // ProcessEvents
  // Takes every set bit of the host event page and every pending monitor trigger and drains
  // those channels (devices answer, watchers see packets). Returns the number of channel
  // drains. Call from one thread at a time.
  size_t ProcessEvents();

  // DrainChannel: drains one channel as if its event bit were set (slow-path Signal).
  // NotFound if it is not mapped.
  absl::Status DrainChannel(uint32_t relid);

  // RaiseEvent
  // Sets `relid`'s bit in the host event page and rings the host doorbell, exactly as the
  // guest's own signal would (the runtime uses it for a slow-path Signal on the stream, so the
  // drain happens on the doorbell thread like every other). InvalidArgument for a bad relid.
  absl::Status RaiseEvent(uint32_t relid);

  // SendPacket
  // Writes one packet into the channel's inbound ring and signals the guest when needed.
  // Returns whether it signalled. NotFound if the relid has no open channel (FailedPrecondition
  // semantics are the caller's: the engine knows whether it exists at all); ResourceExhausted
  // if the ring is full (retry later); InvalidArgument for a packet that can never fit or an
  // unsupported type; DataLoss if the guest corrupted the ring.
  absl::StatusOr<bool> SendPacket(uint32_t relid, PacketType type, uint16_t flags,
                                  uint64_t trans_id, absl::Span<const uint8_t> payload);

  // InjectRingFault
  // Plays a hostile host on the channel's rings or the guest's event flags (RingFault in
  // proto/mock_host.proto, helpers in mock/host/ring_fault.h). A field write holds the lock of
  // the host's side of that ring (the writer's for the inbound ring, the reader's for the
  // outbound one), so it never lands inside one of the host's own packets; a raw packet is
  // written under the writer's lock, after which the host's writer continues behind it;
  // READING_STOP pauses the channel's drains (its signals are still taken) and READING_RESUME
  // drains on the calling thread. An event storm needs no channel. NotFound if the relid is not
  // mapped; FailedPrecondition if the channel failed on the host's side (or, for a raw packet,
  // is closing); InvalidArgument for an incomplete or out-of-range fault; ResourceExhausted for
  // a raw packet that does not fit.
  absl::StatusOr<v1::RingFaultResult> InjectRingFault(const v1::RingFault& fault);

  // Counters: an open channel's counters, NotFound if not mapped.
  absl::StatusOr<ChannelCounters> Counters(uint32_t relid) const;
  // Status: OK, or the sticky error that stopped the channel (corrupt ring). NotFound if not
  // mapped.
  absl::Status ChannelStatus(uint32_t relid) const;

  // FlushSignalEvents: publishes a SIGNALS_FROM_GUEST / SIGNALS_TO_GUEST event for every
  // channel whose count grew since the last flush. The runtime calls it a few times a second.
  void FlushSignalEvents();

  // Whether any open channel is monitored (then the runtime scans at the monitor latency).
  bool HasMonitoredChannels() const;
  // Event bits that named no open channel.
  uint64_t spurious_events() const { return spurious_events_.load(std::memory_order_relaxed); }
  // Monitor triggers whose channel's interrupt bit the guest did not set (each also an ERROR
  // event).
  uint64_t monitor_signals_without_bit() const {
    return monitor_signals_without_bit_.load(std::memory_order_relaxed);
  }
  // Interrupt bits found set for a relid when a channel was mapped under it (left by an earlier
  // channel; cleared so they do not swallow the new channel's first signal).
  uint64_t stale_bits_cleared() const {
    return stale_bits_cleared_.load(std::memory_order_relaxed);
  }

 private:
  friend class HostChannel;
  GuestDataPlane(std::string guest_id, std::unique_ptr<GuestMemory> memory,
                 const DeviceRegistry* devices, DataPlaneHooks hooks,
                 std::vector<EventPage> guest_events, EventPage host_events);

  // Drains one channel; channels_mu_ held (shared).
  void Drain(HostChannel& channel) ABSL_SHARED_LOCKS_REQUIRED(channels_mu_);
  enum class DrainResult { kDone, kAgain };
  // One pass of Drain; also the channel's read_mu_ held.
  DrainResult DrainOnce(HostChannel& channel) ABSL_SHARED_LOCKS_REQUIRED(channels_mu_);
  // Sets the relid's bit in VP `vp`'s event flags and rings that VP's doorbell if it was clear
  // (then returns true).
  bool SignalGuest(uint32_t relid, uint32_t vp);
  // InjectRingFault's event storm.
  absl::StatusOr<v1::RingFaultResult> RaiseEventStorm(const v1::RingFault::EventStorm& storm);
  void PublishError(uint32_t relid, const std::string& detail);
  absl::Time Now() const { return hooks_.now ? hooks_.now() : absl::Now(); }

  const std::string guest_id_;
  const std::unique_ptr<GuestMemory> memory_;
  const DeviceRegistry* const devices_;
  const DataPlaneHooks hooks_;
  std::vector<EventPage> guest_events_;  // per VP; host sets bits (host → guest)
  EventPage host_events_;                // guest sets bits, host scans (guest → host)

  // Shared by drains, sends and reads of counters; exclusive to map and unmap a channel.
  mutable SharedMutex channels_mu_;
  absl::btree_map<uint32_t, std::unique_ptr<HostChannel>> channels_ ABSL_GUARDED_BY(channels_mu_);
  // monitor id → relid (0 = none), for monitored open channels.
  std::array<uint32_t, protocol::kMonitorIdCount> monitor_relid_ ABSL_GUARDED_BY(channels_mu_) = {};
  uint32_t monitored_open_ ABSL_GUARDED_BY(channels_mu_) = 0;

  // Relaxed: a statistic.
  std::atomic<uint64_t> spurious_events_{0};
  std::atomic<uint64_t> monitor_signals_without_bit_{0};
  std::atomic<uint64_t> stale_bits_cleared_{0};
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_DATA_PLANE_H_
