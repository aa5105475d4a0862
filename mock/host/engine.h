// HostEngine: the mock host's side of the channel-bus conversation, as a state machine with
// no I/O.
//
// The engine plays what Hyper-V plays for each attached guest: it negotiates the protocol
// version, offers channels, records GPADLs (checking every PFN against the guest's memory),
// opens and closes channels, rescinds them, hands out and takes back relids, answers
// ModifyChannel and Unload. It owns no threads, sockets, clocks, files or maps. Every input is
// a method call that takes the current time; every effect is an Action appended to the
// caller's list, in the order it must happen:
//
//   inputs                                   outputs (Actions)
//   Attach / Detach a guest                  SendToGuest    a HostToGuest message for a guest
//   HandleGuestMessage (control, signal)     PublishEvent   a ProtocolEvent for watchers
//   HostControl: Offer, Rescind, Configure,  MapRings       map an opening channel's rings;
//     InjectFault                                           answer with CompleteOpen
//   CompleteOpen (the rings are mapped)      UnmapRings     a channel's rings are gone
//   AdvanceTime (timers: delayed messages)   SignalChannel  the guest signalled on the stream
//   OfferSubChannels (a device asked)        DisconnectGuest  end a guest's stream (a fault)
//
// The runtime (mock/host/mock_host.h) wraps it with gRPC streams, the shared memory, the
// doorbell threads and a clock; a deterministic simulation drives it directly with a seeded
// scheduler. Given the same options (seed included) and the same inputs, the outputs are the
// same: relids are the lowest free, guest ids count up, generated GUIDs come from a PRNG
// seeded by EngineOptions::seed, and every container is iterated in a fixed order.
//
// Protocol rules enforced (docs/protocol.md §2 and §5–§9):
// - Before a successful InitiateContact, the only accepted message is InitiateContact; anything
//   else gets a ProtocolError (FAILED_PRECONDITION). Versions 2.4, 3.0, 4.0, 4.1, 5.0, 5.1, 5.2
//   and 5.3 up to HostSettings.max_version are accepted; others get version_supported = false.
//   From 5.0 the VersionResponse carries kMessageConnectionId.
// - Requests the guest waits on (GpadlCreate, OpenChannel, ModifyChannel from 5.3) are answered
//   with a non-zero status when refused; others (CloseChannel, GpadlTeardown, RelidReleased,
//   Unload, ...) get a ProtocolError. Every refusal also publishes an ERROR event.
// - Wire limits (core/data/protocol.h, docs/protocol.md §6, §7, §16) are a real host's: a
//   GpadlCreate of more than 8190 pages is refused (GpadlCreated with a non-zero status), as
//   is an OpenChannel whose ring GPADL does not start at byte 0, does not cover its pages
//   whole, or is not split into two rings of >= 2 pages, or whose user_data exceeds 120 bytes.
// - GPADL PFNs must be data pages inside the guest's file and not held by another live GPADL.
//   An open maps the outbound ring (guest → host) from the first downstream_ring_page_offset
//   pages of the GPADL and the inbound ring from the rest.
// - A rescinded channel stays RESCINDED (its relid taken) until the guest's RelidReleased;
//   sub-channels are rescinded before their primary. A RelidReleased for an offered channel
//   that is neither opening nor open means the guest refused the offer (docs/protocol.md §8):
//   the channel is forgotten and its relid is free again (a refused primary's sub-channels
//   stay offered until the guest releases them too, which it will: they have no primary).
// - Unload (from 3.0) closes every channel, forgets every GPADL and unsent state, and answers
//   UnloadResponse; the guest may then negotiate again and request offers, which re-offers
//   every channel (with new relids if HostSettings.remap_relids_on_resume; with the same relids
//   and monitor ids moved among the channels if permute_relids_on_resume).
//
// Threading: thread-compatible. The runtime serialises all calls under one mutex.
#ifndef VBUS_MOCK_HOST_ENGINE_H_
#define VBUS_MOCK_HOST_ENGINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/data/guid.h"
#include "core/data/protocol.h"
#include "mock/guest_memory.h"
#include "mock/host/device_kinds.h"
#include "mock/host/gpadl_table.h"
#include "mock/host/relid_allocator.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

// --- The mock host's choices ----------------------------------------------------------------
// Protocol constants (versions, relid and monitor-id limits, device-defined bytes, NT status
// codes) come from core/data/protocol.h; these are the host's own policy.

// The protocol versions the engine accepts (up to HostSettings.max_version), oldest first:
// every version a vbus guest may offer.
inline constexpr uint32_t kSupportedVersions[] = {
    protocol::kVersion2_4, protocol::kVersion3_0, protocol::kVersion4_0, protocol::kVersion4_1,
    protocol::kVersion5_0, protocol::kVersion5_1, protocol::kVersion5_2, protocol::kVersion5_3,
};
// HostSettings.max_version when the options leave it unset.
inline constexpr uint32_t kDefaultMaxVersion = protocol::kNewestVersion;
// VersionResponse.message_connection_id from 5.0 (Hyper-V's message connection id 4).
inline constexpr uint32_t kMessageConnectionId = 4;
// Offer.connection_id of relid r is kChannelConnectionIdBase + r (the mock's choice; guests
// only echo it back when they signal).
inline constexpr uint32_t kChannelConnectionIdBase = 0x10000;
// Default monitor-page scan period.
inline constexpr uint32_t kDefaultMonitorLatencyUs = 1000;
// kMaxSubChannels, the most sub-channels one primary may have, is in
// mock/host/device_kinds.h (the echo device's sub-channel request checks it too).

// IsSupportedVersion: whether `version` is one of kSupportedVersions.
bool IsSupportedVersion(uint32_t version);
// MessageTypeName: the ControlMessage oneof field name ("open_result"), or "empty".
std::string MessageTypeName(const v1::ControlMessage& message);
// RelidOf: the child_relid a control message is about, 0 if none.
uint32_t RelidOf(const v1::ControlMessage& message);

// --- Actions --------------------------------------------------------------------------------

// Deliver `message` on the guest's GuestLink stream.
struct SendToGuest {
  std::string guest_id;
  v1::HostToGuest message;
};

// Hand `event` to watchers. sequence is 0: the runtime numbers events host-wide.
struct PublishEvent {
  v1::ProtocolEvent event;
};

// A channel is opening: map its rings from guest memory and start its device, then call
// CompleteOpen with the outcome. The PFNs were checked against the guest's memory.
// Contract: the runtime maps (or fails) and calls CompleteOpen before it feeds the engine any
// later input for this guest. The engine answers a GpadlTeardown, and forgets GPADLs on
// RelidReleased, as soon as those messages arrive; a guest reuses the pages right after, so a
// mapping made later could touch memory the guest has freed. MockHost maps synchronously, in
// action order.
struct MapRings {
  std::string guest_id;
  uint32_t relid = 0;
  // The offer's device kind ("echo", "sink", "raw", ...).
  std::string device;
  uint32_t gpadl = 0;
  // Guest → host ring (the guest's outbound ring): control page + data pages.
  std::vector<uint64_t> outbound_pfns;
  // Host → guest ring (the guest's inbound ring).
  std::vector<uint64_t> inbound_pfns;
  // Set if the guest signals this channel through the monitor pages.
  std::optional<uint32_t> monitor_id;
  // The VP whose event flags the host signals the channel in (< the guest's vp_count).
  uint32_t target_vp = 0;
};

// An open channel's target VP changed (ModifyChannel): signal it in `target_vp`'s event flags
// from now on.
struct RetargetChannel {
  std::string guest_id;
  uint32_t relid = 0;
  uint32_t target_vp = 0;
};

// The channel's rings must no longer be touched (close, rescind, unload, detach). Stop its
// device and unmap. Sent at most once per MapRings.
struct UnmapRings {
  std::string guest_id;
  uint32_t relid = 0;
};

// The guest sent a slow-path Signal for an open channel: drain it as if its event bit were set.
struct SignalChannel {
  std::string guest_id;
  uint32_t relid = 0;
};

// End the guest's GuestLink stream (it will then be detached).
struct DisconnectGuest {
  std::string guest_id;
  std::string reason;
};

using Action = std::variant<SendToGuest, PublishEvent, MapRings, UnmapRings, SignalChannel,
                            RetargetChannel, DisconnectGuest>;
using Actions = std::vector<Action>;

// EngineCounters: what the engine refused, or was refused, since it was created (all guests).
// Each refusal also publishes an ERROR event naming what was wrong.
struct EngineCounters {
  // GpadlCreate, OpenChannel and ModifyChannel answered with a non-zero status (a request past
  // a wire limit, injected refusals and failed ring mappings included).
  uint64_t requests_refused = 0;
  // ProtocolErrors sent: messages a correct guest never sends.
  uint64_t protocol_errors = 0;
  // Offers a guest refused: its RelidReleased for a channel that was offered, not rescinded.
  uint64_t offers_refused_by_guest = 0;
  // Second RelidReleased for a relid freed after a rescind of an offered-only channel (the
  // guest's refusal crossed the rescind), taken quietly.
  uint64_t second_releases_taken = 0;
};

// --- Options --------------------------------------------------------------------------------

struct EngineOptions {
  // Host settings; unset fields take the defaults (max_version 5.3, no relid remapping,
  // monitor latency kDefaultMonitorLatencyUs).
  v1::HostSettings settings;
  // Offered to every guest that attaches, in order.
  std::vector<v1::OfferSpec> default_offers;
  // Device kinds an OfferSpec may name, with their default class GUIDs.
  absl::btree_map<std::string, Guid> device_classes = BuiltinDeviceClasses();
  // Seeds the PRNG that generates instance GUIDs.
  uint64_t seed = 0x76627573;  // "vbus"
};

// --- Engine ---------------------------------------------------------------------------------

class HostEngine {
 public:
  // Create
  // InvalidArgument if the settings or a default offer are invalid (naming which).
  static absl::StatusOr<std::unique_ptr<HostEngine>> Create(EngineOptions options);

  ~HostEngine();
  HostEngine(const HostEngine&) = delete;
  HostEngine& operator=(const HostEngine&) = delete;

  // Attach
  // A guest attached (the runtime has mapped its memory). Checks the name (non-empty, unique)
  // and the memory description (size a positive multiple of 4096, ValidateLayout); creates the
  // default offers (sent once the guest requests offers). Emits the Attached message (with
  // accepts_batches: the guest may send ControlBatch) and a GUEST_ATTACHED event. Returns the new
  // guest id ("guest-1", "guest-2", ...). InvalidArgument / AlreadyExists on a bad request, with
  // nothing emitted.
  absl::StatusOr<std::string> Attach(const v1::Attach& attach, absl::Time now, Actions* out);

  // Detach
  // The guest's stream ended. Unmaps its open channels (UnmapRings each), drops its delayed
  // messages, emits GUEST_DETACHED (with `reason`) and forgets the guest. NotFound for an
  // unknown guest id.
  absl::Status Detach(absl::string_view guest_id, absl::string_view reason, absl::Time now,
                      Actions* out);

  // HandleGuestMessage
  // One message from the guest's stream after Attach: a control message or a slow-path
  // signal (a second Attach is a protocol error). Bad input yields a ProtocolError or a status
  // answer and an ERROR event; it never fails the engine. NotFound only for an unknown guest.
  // A `batch` is not handled here (InvalidArgument, nothing emitted): the MapRings contract
  // needs the runtime between its messages, so batches go through CheckBatch and
  // HandleGuestControl.
  absl::Status HandleGuestMessage(absl::string_view guest_id, const v1::GuestToHost& message,
                                  absl::Time now, Actions* out);

  // CheckBatch
  // A GuestToHost.batch from the guest's stream. True: well-formed; the runtime now feeds its
  // messages in order to HandleGuestControl, carrying out each one's Actions before the next
  // (so a batch means exactly what its messages sent alone would). False: malformed (empty, or
  // more than CONTROL_BATCH_MAX_MESSAGES messages): a ProtocolError INVALID_ARGUMENT and an
  // ERROR event are emitted and none of its messages may be handled. NotFound for an unknown
  // guest.
  absl::StatusOr<bool> CheckBatch(absl::string_view guest_id, const v1::ControlBatch& batch,
                                  absl::Time now, Actions* out);

  // HandleGuestControl
  // One control message from the guest: what HandleGuestMessage does with `control`, without
  // the GuestToHost wrapper (for the messages of a checked batch). NotFound only for an unknown
  // guest.
  absl::Status HandleGuestControl(absl::string_view guest_id, const v1::ControlMessage& message,
                                  absl::Time now, Actions* out);

  // CompleteOpen
  // The outcome of a MapRings. OK → the channel is open: OpenResult(status 0) and a
  // CHANNEL_OPENED event. An error → OpenResult with protocol::kStatusUnsuccessful and an ERROR
  // event naming `mapped`. If the channel stopped opening meanwhile (closed, rescinded, unloaded),
  // a successful mapping is undone with UnmapRings and nothing is sent. NotFound for an
  // unknown guest; FailedPrecondition if no MapRings for this relid is outstanding.
  absl::Status CompleteOpen(absl::string_view guest_id, uint32_t relid, const absl::Status& mapped,
                            absl::Time now, Actions* out);

  // --- HostControl -----------------------------------------------------------------------

  // ResolveGuest
  // The guest id named by `selector`: a guest id, a guest name, or empty for the only
  // attached guest. NotFound if nothing matches; FailedPrecondition for an empty selector
  // with zero or several guests attached.
  absl::StatusOr<std::string> ResolveGuest(absl::string_view selector) const;

  // Offer
  // Offers a device (and its sub-channels) to a guest: relids allocated now; the offers are
  // sent at once if the guest already requested offers (hot-add), else with its
  // RequestOffers answer. InvalidArgument for a bad spec (unknown kind, malformed GUID,
  // user_defined over 120 bytes, too many sub-channels), AlreadyExists for an instance GUID a
  // live primary of that guest uses, ResourceExhausted when relids or monitor ids run out.
  absl::StatusOr<v1::OfferResponse> Offer(const v1::OfferRequest& request, absl::Time now,
                                          Actions* out);

  // OfferSubChannels
  // A device asked for sub-channels of its open primary (the echo device's request:
  // mock/host/sub_channel_request.h). Brings the primary's live (not rescinded) sub-channels
  // up to `count`, offering the lowest sub_channel_index values no live sub-channel uses; each
  // new sub-channel copies the primary's offer (GUIDs, device kind, flags, MMIO sizes,
  // user_defined, ...) with its own relid and, if the primary is monitored, its own monitor
  // id, exactly as Offer builds the sub-channels of an OfferSpec. The offers are sent at once
  // (a hot-add: the primary is open, so the guest has requested offers), with the events Offer
  // emits. Returns the relids newly offered, in index order: none if there are enough already
  // (a repeated request is harmless; a lower count rescinds nothing).
  // NotFound for an unknown guest or relid; InvalidArgument for a count of 0 or above
  // kMaxSubChannels; FailedPrecondition if the relid is a sub-channel, or rescinded, or not
  // open; ResourceExhausted when relids or monitor ids run out (nothing is offered then).
  absl::StatusOr<std::vector<uint32_t>> OfferSubChannels(absl::string_view guest_id,
                                                         uint32_t primary_relid, uint32_t count,
                                                         absl::Time now, Actions* out);

  // Rescind
  // Rescinds a channel: for a primary, its live sub-channels first, then itself. Channels the
  // guest was told about become RESCINDED (RescindOffer sent; open ones are unmapped first);
  // channels it never heard of are forgotten at once. NotFound for an unknown relid;
  // FailedPrecondition if already rescinded.
  absl::StatusOr<v1::RescindResponse> Rescind(const v1::RescindRequest& request, absl::Time now,
                                              Actions* out);

  // ListGuests / ListChannels
  // Snapshots. Channel counters (packets, bytes, signals) are left 0: the data plane owns
  // them and the runtime fills them in. ListChannels: NotFound for an unknown guest.
  v1::ListGuestsResponse ListGuests() const;
  absl::StatusOr<v1::ListChannelsResponse> ListChannels(absl::string_view selector) const;

  // InjectFault
  // Arms a fault for a guest: a MessageFault applies to its next `count` host → guest control
  // messages of the named type (drop, delay by delay_ms, or duplicate); a RefuseNext makes the
  // next GpadlCreate / OpenChannel / ModifyChannel fail with the given status; disconnect
  // emits DisconnectGuest now. Each firing emits a FAULT_FIRED event. InvalidArgument for an
  // unknown message type, a guest → host type, an unset fault, or a RingFault (shared memory
  // is the runtime's: MockHost::InjectFault carries those out).
  absl::Status InjectFault(const v1::InjectFaultRequest& request, absl::Time now, Actions* out);

  // Configure
  // Merges the set fields into the settings and returns the settings now in force.
  // InvalidArgument (nothing changed) for an unsupported max_version or a monitor latency
  // outside 1 µs .. 1 s. A lower max_version affects later negotiations only.
  absl::StatusOr<v1::HostSettings> Configure(const v1::ConfigureRequest& request);
  const v1::HostSettings& settings() const { return settings_; }

  // SetMessageEvents
  // Whether every control message each way is also published as a GUEST_MESSAGE /
  // HOST_MESSAGE event (on by default). The runtime turns them off while nobody watches events,
  // since building them (a copy of each message) is a large part of a message's cost. Other
  // event kinds are always emitted.
  void SetMessageEvents(bool on) { message_events_ = on; }

  // --- Timers ----------------------------------------------------------------------------

  // AdvanceTime: sends every delayed message whose time has come (in due-time order).
  void AdvanceTime(absl::Time now, Actions* out);
  // NextTimer: when AdvanceTime next has work, or nullopt.
  std::optional<absl::Time> NextTimer() const;

  // --- Introspection (runtime, tests, simulation invariants) --------------------------------

  // The state of one channel, as HostControl reports it plus engine-internal detail.
  enum class ChannelState { kOffered, kOpening, kOpen, kRescinded };
  struct ChannelSnapshot {
    uint32_t relid = 0;
    ChannelState state = ChannelState::kOffered;
    bool offer_sent = false;
    uint32_t primary_relid = 0;  // 0 for a primary
    uint32_t ring_gpadl = 0;
    std::optional<uint32_t> monitor_id;
    std::string device;
  };
  // FindChannel: NotFound for an unknown guest or relid.
  absl::StatusOr<ChannelSnapshot> FindChannel(absl::string_view guest_id, uint32_t relid) const;
  // GuestIds in attach order.
  std::vector<std::string> GuestIds() const;
  const EngineCounters& counters() const { return counters_; }
  // The guest's live GPADLs (nullptr for an unknown guest).
  const GpadlTable* Gpadls(absl::string_view guest_id) const;

 private:
  struct Channel;
  struct Guest;
  struct DelayedMessage;

  explicit HostEngine(EngineOptions options);

  Guest* FindGuest(absl::string_view guest_id);
  const Guest* FindGuest(absl::string_view guest_id) const;

  // Guest message handlers.
  void OnInitiateContact(Guest& g, const v1::InitiateContact& m, absl::Time now, Actions* out);
  void OnRequestOffers(Guest& g, absl::Time now, Actions* out);
  void OnGpadlCreate(Guest& g, const v1::GpadlCreate& m, absl::Time now, Actions* out);
  void OnGpadlTeardown(Guest& g, const v1::GpadlTeardown& m, absl::Time now, Actions* out);
  void OnOpenChannel(Guest& g, const v1::OpenChannel& m, absl::Time now, Actions* out);
  void OnCloseChannel(Guest& g, const v1::CloseChannel& m, absl::Time now, Actions* out);
  void OnRelidReleased(Guest& g, const v1::RelidReleased& m, absl::Time now, Actions* out);
  void OnOfferRefused(Guest& g, Channel& c, absl::Time now, Actions* out);
  void OnModifyChannel(Guest& g, const v1::ModifyChannel& m, absl::Time now, Actions* out);
  void OnUnload(Guest& g, absl::Time now, Actions* out);
  void OnTlConnectRequest(Guest& g, const v1::TlConnectRequest& m, absl::Time now, Actions* out);
  void OnSignal(Guest& g, const v1::Signal& m, absl::Time now, Actions* out);
  void OnControl(Guest& g, const v1::ControlMessage& m, absl::Time now, Actions* out);

  // Helpers.
  Channel* KnownChannel(Guest& g, uint32_t relid);  // offered to the guest, else nullptr
  absl::StatusOr<std::vector<uint32_t>> CreateOffer(Guest& g, const v1::OfferSpec& spec,
                                                    absl::Time now, Actions* out,
                                                    v1::Guid* instance_used);
  // Whether `count` more channels fit (relids; monitor ids too if `monitored`):
  // ResourceExhausted naming `what` and the shortage.
  static absl::Status CheckRoom(const Guest& g, uint32_t count, bool monitored,
                                absl::string_view what);
  // Adds a channel under the lowest free relid (room checked with CheckRoom) whose offer is
  // `fields` with this channel's relid, connection id, sub_channel_index and monitor id.
  Channel& AddChannel(Guest& g, const v1::Offer& fields, const std::string& device,
                      uint32_t primary_relid, uint32_t index, bool monitored);
  void SendOffer(Guest& g, Channel& c, absl::Time now, Actions* out);
  void StopChannel(Guest& g, Channel& c, absl::string_view why, absl::Time now, Actions* out);
  void ForgetChannel(Guest& g, uint32_t relid);
  void ForgetInstance(Guest& g, const Channel& primary);  // from live_instances
  // On a resume (engine_resume.cc): new relids, or the old ones permuted with the monitor ids.
  void RemapOnResume(Guest& g);
  Guid NewGuid();

  // Output helpers. Control messages to the guest pass through its armed message faults.
  void SendControl(Guest& g, v1::ControlMessage message, absl::Time now, Actions* out);
  void EmitControl(const std::string& guest_id, const v1::ControlMessage& message, absl::Time now,
                   Actions* out);
  void Reject(Guest& g, absl::StatusCode code, uint32_t relid, const std::string& what,
              absl::Time now, Actions* out);
  void Event(const std::string& guest_id, v1::EventKind kind, uint32_t relid, absl::Time now,
             Actions* out, std::string detail = "", const v1::ControlMessage* message = nullptr);

  EngineOptions options_;
  v1::HostSettings settings_;
  std::mt19937_64 rng_;
  uint64_t next_guest_number_ = 1;
  absl::btree_map<uint64_t, std::unique_ptr<Guest>> guests_;  // by guest number
  uint64_t next_delay_sequence_ = 0;
  bool message_events_ = true;
  absl::btree_map<std::pair<absl::Time, uint64_t>, std::unique_ptr<DelayedMessage>> delayed_;
  EngineCounters counters_;
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_ENGINE_H_
