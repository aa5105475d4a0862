// Private state of HostEngine, shared by its two source files (engine.cc: guests, HostControl
// and outputs; engine_messages.cc: the guest's control messages). Not for other users.
#ifndef VBUS_MOCK_HOST_ENGINE_INTERNAL_H_
#define VBUS_MOCK_HOST_ENGINE_INTERNAL_H_

#include <bitset>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "mock/guest_memory.h"
#include "mock/host/engine.h"
#include "mock/host/gpadl_table.h"
#include "mock/host/relid_allocator.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

struct HostEngine::Channel {
  uint32_t relid = 0;
  // Creation order: offers go out in this order.
  uint64_t order = 0;
  std::string device;
  // The Offer as sent (child_relid and connection_id follow relid remapping).
  v1::Offer offer;
  // 0 for a primary, and for a sub-channel whose primary the guest refused (forgotten: the
  // sub-channel waits for the guest to refuse it too).
  uint32_t primary_relid = 0;
  std::vector<uint32_t> sub_relids;  // live sub-channels of a primary, by index
  ChannelState state = ChannelState::kOffered;
  // Whether the guest was told about this channel (Offer sent since the last Unload).
  bool offer_sent = false;
  // Whether the runtime holds mapped rings for it (a successful CompleteOpen, not yet undone
  // with UnmapRings).
  bool rings_mapped = false;
  uint32_t ring_gpadl = 0;
  uint32_t open_id = 0;
  uint32_t target_vp = 0;
  std::optional<uint32_t> monitor_id;
  // The host refused the guest's latest OpenChannel and the guest has not opened since: a
  // CloseChannel may still arrive for it (the guest gave up before the refusal reached it) and
  // is accepted quietly instead of drawing a ProtocolError.
  bool open_refused = false;
  // Rescinded while only offered: the guest may have refused the offer and released the relid
  // already, so after the release that completes the rescind one more may follow.
  bool rescinded_while_offered = false;
};

struct ArmedMessageFault {
  v1::MessageFault::Action action = v1::MessageFault::ACTION_UNSPECIFIED;
  uint32_t remaining = 1;
  absl::Duration delay;
};

struct HostEngine::Guest {
  uint64_t number = 0;
  std::string id;
  std::string name;
  v1::Attach attach;
  MemoryLayout layout;
  uint64_t page_count = 0;
  absl::Time attached_at;

  v1::GuestState state = v1::GUEST_STATE_ATTACHED;
  uint32_t version = 0;  // negotiated; 0 before InitiateContact and after Unload
  // Set by Unload: the next RequestOffers is a resume (relids may be remapped).
  bool resumed = false;

  RelidAllocator relids;
  std::bitset<protocol::kMonitorIdCount> monitor_ids;
  absl::btree_map<uint32_t, Channel> channels;  // by relid
  // Instance GUID (text) → relid of the live (not rescinded) primary offering it: an offer of
  // an instance in use is refused without a scan of every channel.
  absl::flat_hash_map<std::string, uint32_t> live_instances;
  uint64_t next_order = 0;
  GpadlTable gpadls;
  // Relids with a MapRings not yet answered by CompleteOpen.
  absl::btree_set<uint32_t> maps_outstanding;
  // Relids freed by a release of a channel rescinded while only offered: a second release
  // (the guest's refusal crossing the rescind: docs/protocol.md §17) is taken quietly until
  // the relid is offered again.
  absl::btree_set<uint32_t> second_release_expected;

  // Armed faults: message faults by ControlMessage field name (first armed fires first), and
  // refusals by request kind (status to answer with).
  absl::btree_map<std::string, std::deque<ArmedMessageFault>> message_faults;
  absl::btree_map<int, uint32_t> refusals;
};

struct HostEngine::DelayedMessage {
  std::string guest_id;
  v1::ControlMessage message;
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_ENGINE_INTERNAL_H_
