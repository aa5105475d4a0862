// Guest-side ring helpers for tests of the mock host's data path (test-only).
//
// A raw test guest holds its GuestMemory, hands out data pages with GuestPages (a bump
// allocator), and talks through one channel's rings with GuestRings: the guest's outbound ring
// (guest → host) first, then its inbound ring, both in one GPADL, exactly as a real guest lays
// them out. Signalling follows the mock platform's rules (mock/guest_memory.h): to wake the
// host, set the relid's bit in the host event page and, if it was clear, ring the host
// doorbell; to wait for the host, read the guest doorbell, scan (clear) the guest event page,
// look at the ring, then wait on the doorbell.
//
// Example:
//   GuestPages pages(*memory);
//   ASSIGN_OR_RETURN(std::vector<uint64_t> pfns, pages.Allocate(16));
//   ASSIGN_OR_RETURN(std::unique_ptr<GuestRings> rings, GuestRings::Create(*memory, relid, pfns,
//   8));
//   // ... GpadlCreate with pfns, OpenChannel with downstream offset 8 ...
//   rings->Send(PacketType::kDataInband, 0, 1, payload);
//   ASSIGN_OR_RETURN(ReceivedPacket p, rings->WaitForPacket(deadline));
//
// Thread-compatible: one sender thread and one receiver thread may use a GuestRings at once
// (the two rings are independent).
#ifndef VBUS_MOCK_TESTING_GUEST_RINGS_H_
#define VBUS_MOCK_TESTING_GUEST_RINGS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/data/event_page.h"
#include "core/data/ring_buffer.h"
#include "core/runtime/sync.h"
#include "mock/guest_memory.h"

namespace vbus::mock::testing {

// GuestPages: hands out data pages from first_data_pfn upwards, never reusing them.
class GuestPages {
 public:
  explicit GuestPages(const GuestMemory& memory)
      : next_(memory.layout().first_data_pfn), end_(memory.page_count()) {}
  // `count` consecutive PFNs; ResourceExhausted when the file is used up.
  absl::StatusOr<std::vector<uint64_t>> Allocate(uint32_t count);

 private:
  uint64_t next_;
  uint64_t end_;
};

struct ReceivedPacket {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t trans_id = 0;
  std::vector<uint8_t> payload;  // includes the sender's padding to 8 bytes
};

class GuestRings {
 public:
  // Create
  // Initialises both rings in `pfns` (outbound = the first `outbound_pages`) through a
  // contiguous view of the pages and attaches the guest's ring objects.
  static absl::StatusOr<std::unique_ptr<GuestRings>> Create(const GuestMemory& memory,
                                                            uint32_t relid,
                                                            std::vector<uint64_t> pfns,
                                                            uint32_t outbound_pages);

  uint32_t relid() const { return relid_; }
  const std::vector<uint64_t>& pfns() const { return pfns_; }
  uint32_t downstream_ring_page_offset() const { return outbound_pages_; }

  // Send
  // Writes one packet into the outbound ring and signals the host if the ring rules say so.
  // Returns whether it signalled; ResourceExhausted if the ring is full.
  absl::StatusOr<bool> Send(PacketType type, uint16_t flags, uint64_t trans_id,
                            absl::Span<const uint8_t> payload);
  // SendWaiting: Send, but when the ring is full, arms pending_send_sz and waits for the host
  // to make room (doorbell wait) until `deadline`.
  absl::StatusOr<bool> SendWaiting(PacketType type, uint16_t flags, uint64_t trans_id,
                                   absl::Span<const uint8_t> payload, absl::Time deadline);

  // TryReceive: the next packet of the inbound ring, or nullopt. Commits the read at once and
  // signals the host if it waits for room (pending_send_sz).
  absl::StatusOr<std::optional<ReceivedPacket>> TryReceive();
  // WaitForPacket: TryReceive, waiting on the guest doorbell until `deadline`
  // (DeadlineExceeded). Clears the guest event page while waiting.
  absl::StatusOr<ReceivedPacket> WaitForPacket(absl::Time deadline);

  // Signals the host for this channel (event bit + doorbell), whatever the ring says.
  void SignalHost();
  // The raw control pages, for tests that corrupt them.
  RingControlPage* outbound_control() const;
  RingControlPage* inbound_control() const;

 private:
  GuestRings(const GuestMemory& memory, uint32_t relid, std::vector<uint64_t> pfns,
             uint32_t outbound_pages, MappedPages view, EventPage guest_events,
             EventPage host_events);

  const GuestMemory& memory_;
  const uint32_t relid_;
  const std::vector<uint64_t> pfns_;
  const uint32_t outbound_pages_;
  MappedPages view_;
  EventPage guest_events_;
  EventPage host_events_;
  std::vector<uint8_t> scratch_;

  Mutex send_mu_;
  std::optional<OutgoingRing> out_ ABSL_GUARDED_BY(send_mu_);
  Mutex receive_mu_;
  std::optional<IncomingRing> in_ ABSL_GUARDED_BY(receive_mu_);
};

}  // namespace vbus::mock::testing

#endif  // VBUS_MOCK_TESTING_GUEST_RINGS_H_
