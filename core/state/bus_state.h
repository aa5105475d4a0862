// BusState: the guest's channel-bus state machine, with no I/O.
//
// BusState owns no threads, sockets, clocks or memory. It consumes inputs —
//   - a host control message            (OnHostMessage),
//   - a transport event                 (OnPostFailed, OnLinkLost),
//   - a call from a driver or runtime   (Connect, Open, Close, CreateGpadl, TeardownGpadl,
//                                        ModifyChannel, Unload, ReleaseOffer),
//   - a timer expiry with the time now  (OnTimer)
// — and appends the resulting Actions (core/state/bus_actions.h) to a list the caller carries out
// in order: messages to post, channels to publish in or retire from the channel table,
// completions of waiting calls, timers to arm or cancel, offers added or removed, GPADL memory
// that may be freed, and host input that was ignored (and counted).
//
// The ChannelBus runtime wraps it with one control thread, a clock and a Backend; the
// deterministic simulation wires it to the mock host's engine through a seeded in-memory
// scheduler. Both simply feed inputs and execute actions.
//
// Example (a whole connect + open, as a test would drive it):
//   BusState bus(BusConfig{});
//   Actions out;
//   RequestId connect = bus.Connect(deadline, &out);     // send InitiateContact{5.3}
//   bus.OnHostMessage(VersionResponse(true, 4), &out);   // connection_ready, RequestOffers
//   bus.OnHostMessage(OfferMsg(7, kEcho, instance), &out);  // offer_added offer=1 relid=7
//   bus.OnHostMessage(AllOffersDelivered(), &out);       // complete connect: OK
//   RequestId open = bus.Open(OfferId(1), {.ring_pfns = pfns, .outbound_ring_pages = 4},
//                             deadline, &out);           // send GpadlCreate
//   bus.OnHostMessage(GpadlCreated(7, 0xE1E10, 0), &out);   // publish, send OpenChannel
//   bus.OnHostMessage(OpenResult(7, open_id, 0), &out);     // complete open: OK
//
// The protocol rules it enforces (docs/protocol.md §2–§9):
//   - Negotiation: newest version first, from BusConfig::max_version down to 2.4 (5.3, 5.2,
//     5.1, 5.0, 4.1, 4.0, 3.0, 2.4); the next one after version_supported = false or (5.x
//     only) a post failure with NotFound; from 5.0 later messages go to the connection id the
//     host returned (ConnectionReady). Then RequestOffers; Connect completes at
//     AllOffersDelivered.
//   - Offers: validated (core/state/offer_validation.h), relid and (type, instance, sub-channel
//     index) unique among live offers, sub-channels linked to a live primary by type and
//     instance. Offers after AllOffersDelivered are hot-adds. A refused offer is ignored and
//     its relid released at once (RelidReleased), as is a later rescind of that relid, so the
//     host never holds it forever — unless the relid is outside 1..2047 or another (active or
//     rescinded) offer holds it: that offer's relid is not the refused offer's to give back.
//   - Rescind: sub-channels of a rescinded primary are closed first; the channel is retired
//     (its pending calls fail with Unavailable); the host answers nothing more for it, so no
//     message is sent for it until the runtime calls ReleaseOffer, which sends RelidReleased.
//   - GPADLs: handles chosen here, from 0xE1E10 up, unique among live ones. A GPADL is live
//     until GpadlTorndown, a refusal, or the release of its rescinded/detached offer; each
//     ends with exactly one ReleaseGpadl action.
//   - Open: GpadlCreate for both rings → GpadlCreated → PublishChannel → OpenChannel →
//     OpenResult. Close: RetireChannel → CloseChannel → GpadlTeardown → GpadlTorndown. Each
//     OpenChannel carries a fresh open_id, so a late OpenResult of an abandoned open cannot
//     complete a newer one.
//   - ModifyChannel from 4.1 on open channels; answered (ModifyChannelResponse) from 5.3,
//     completed at once below.
//   - Unload from 3.0 with every channel closed; UnloadResponse ends the connection.
// Matching host replies: VersionResponse ↔ the pending InitiateContact; GpadlCreated ↔
// (child_relid, gpadl); GpadlTorndown ↔ gpadl; OpenResult ↔ (child_relid, open_id);
// ModifyChannelResponse ↔ child_relid. Anything else the host sends is ignored with an
// InputIgnored action and counted (counters()); BusState never crashes on host input and
// stays usable afterwards.
//
// Calls and completions: every call that waits for the host returns a RequestId at once; its
// result comes later as exactly one Complete action with that id (possibly already in `out`
// when the call returns, e.g. a precondition failure). Failures name what happened:
//   FailedPrecondition  the call is not allowed now, or the host refused it
//                       ("open of relid 7 refused by host: status 0xC0000001")
//   NotFound            unknown offer or GPADL
//   InvalidArgument     malformed parameters
//   DeadlineExceeded    the host did not answer by the deadline
//   Unavailable         the channel was rescinded or the link to the host was lost
//   Cancelled           a Close cancelled an Open in progress
// A call's deadline is an absl::Time; absl::InfiniteFuture() arms no timer.
//
// Thread safety: none. One thread (the bus's control thread, or the simulation) makes every
// call; the runtime serialises host messages, calls and timers onto it.
#ifndef VBUS_CORE_STATE_BUS_STATE_H_
#define VBUS_CORE_STATE_BUS_STATE_H_

#include <array>
#include <bitset>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/data/guid.h"
#include "core/data/protocol.h"
#include "core/state/bus_actions.h"
#include "core/state/bus_ids.h"
#include "core/state/ignore_reason.h"
#include "core/state/offer_validation.h"
#include "proto/control.pb.h"

namespace vbus {

// BusConfig
// Fixed for a BusState's life. The InitiateContact fields come from Backend::contact_info().
struct BusConfig {
  // Newest version to try; negotiation starts at the newest known version not above it.
  uint32_t max_version = protocol::kNewestVersion;
  uint32_t target_vcpu = 0;
  uint32_t message_sint = 2;
  uint32_t message_vtl = 0;
  // Sent only with versions below 5.0.
  uint64_t interrupt_page = 0;
  uint64_t monitor_page1 = 0;
  uint64_t monitor_page2 = 0;
  // An isolated (confidential) guest: only versions from 5.2 are negotiated, and offers of
  // device classes such a guest does not accept (AllowedInIsolatedGuest) are refused and their
  // relids given back (docs/protocol.md §4).
  bool isolated = false;
};

// Where the bus is in its connection.
enum class BusPhase {
  kDisconnected,  // no version agreed (initially, after a failed connect, unload or link loss)
  kNegotiating,   // an InitiateContact is waiting for its VersionResponse
  kConnected,     // a version is agreed (offers may still be arriving)
  kUnloading,     // Unload sent, waiting for UnloadResponse
  kSuspended,     // unloaded for a hibernation (UnloadMode::kSuspend): primaries parked, no
                  // version agreed; only Resume (or the loss of the link) leaves it
};
absl::string_view BusPhaseName(BusPhase phase);

// An offer's life in the guest.
enum class OfferState {
  kActive,     // offered by the host
  kRescinded,  // rescinded; its relid stays reserved until ReleaseOffer
  kDetached,   // the connection that offered it ended (link lost, unloaded); relid not held
  kParked,     // a primary kept across a suspend: relid not held; a re-offer of the same
               // (type, instance) after Resume makes it active again under the new relid
};
absl::string_view OfferStateName(OfferState state);

// A channel's open/close state (only an active offer's channel is ever other than kClosed).
enum class ChannelState {
  kClosed,
  kOpeningGpadl,  // ring GPADL sent, waiting for GpadlCreated
  kOpening,       // published, OpenChannel sent, waiting for OpenResult
  kOpen,
  kClosing,  // retired, CloseChannel + GpadlTeardown sent, waiting for GpadlTorndown
};
absl::string_view ChannelStateName(ChannelState state);

enum class GpadlState {
  kCreating,     // GpadlCreate sent
  kCreated,      // host confirmed
  kTearingDown,  // GpadlTeardown sent
  kDropped,      // its offer was rescinded or detached: the host holds no mapping; the handle
                 // stays reserved until ReleaseOffer
};
absl::string_view GpadlStateName(GpadlState state);

// OpenParams
// What Open needs: the PFNs of both rings' pages, which the runtime allocated from the
// backend — the outbound (guest → host) ring's pages first, then the inbound ring's. Each ring
// is one control page plus at least one data page.
struct OpenParams {
  std::vector<uint64_t> ring_pfns;
  // Pages of the outbound ring = OpenChannel.downstream_ring_page_offset.
  uint32_t outbound_ring_pages = 0;
  // Virtual processor for the channel's interrupts.
  uint32_t target_vp = 0;
  // Device-defined bytes for OpenChannel (at most 120).
  std::string user_data;
};

// UnloadMode: how BusState::Unload treats channels still open.
enum class UnloadMode {
  kOrderly,  // refuse while any channel is open
  kForced,   // unload anyway; the host tears every channel down
  kSuspend,  // as kOrderly, then park the primaries for Resume (hibernation)
};

// GpadlParams
// One range of whole pages. byte_count 0 means "all of the pages".
struct GpadlParams {
  std::vector<uint64_t> pfns;
  uint32_t byte_count = 0;
  uint32_t byte_offset = 0;
};

// ChannelStatus: a snapshot of one offer and its channel.
struct ChannelStatus {
  OfferInfo offer;
  OfferState offer_state = OfferState::kActive;
  ChannelState channel_state = ChannelState::kClosed;
  // In the channel table (between PublishChannel and RetireChannel).
  bool published = false;
  // A sub-channel whose primary was rescinded: it cannot be opened again.
  bool orphaned = false;
  // The GPADL holding the rings while opening or open; 0 otherwise.
  uint32_t ring_gpadl = 0;
  // Every live GPADL of the channel, ascending.
  std::vector<uint32_t> gpadls;
};

// GpadlStatus: a snapshot of one live GPADL.
struct GpadlStatus {
  uint32_t handle = 0;
  OfferId offer;
  uint32_t relid = 0;
  GpadlState state = GpadlState::kCreating;
  // Holds a channel's rings (created by Open).
  bool ring = false;
  // Its creator gave up (deadline, cancelled open); it is torn down as soon as it exists.
  bool abandoned = false;
};

// BusCounters: everything BusState counted since construction.
struct BusCounters {
  uint64_t messages_received = 0;  // host messages fed to OnHostMessage, of any kind
  uint64_t messages_sent = 0;      // SendMessage actions emitted
  uint64_t offers_accepted = 0;
  uint64_t offers_resumed = 0;  // parked offers matched again after a Resume
  uint64_t rescinds = 0;
  // RelidReleased sent for a refused offer, or for a rescind of a refused offer's relid.
  uint64_t refused_relids_released = 0;
  // Posts that failed without ending the connection (see OnPostFailed): the request failed
  // alone (`posts_failed`), nothing could be undone for a RelidReleased (`posts_lost`), or a
  // GPADL the host may still map was kept instead of being torn down (`gpadls_stranded`).
  uint64_t posts_failed = 0;
  uint64_t posts_lost = 0;
  uint64_t gpadls_stranded = 0;
  uint64_t teardowns_unsent = 0;  // teardowns left to RetryUnsentTeardowns
  uint64_t ignored_total = 0;
  std::array<uint64_t, kIgnoreReasonCount> ignored{};

  uint64_t ignored_for(IgnoreReason reason) const { return ignored[static_cast<size_t>(reason)]; }
};

class BusState {
 public:
  explicit BusState(BusConfig config);
  BusState(const BusState&) = delete;
  BusState& operator=(const BusState&) = delete;

  // ---- Inputs from the host and the transport -------------------------------------------

  // OnHostMessage
  // Feeds one host → guest message. Untrusted: anything unacceptable becomes an InputIgnored
  // action plus a counter, never a failure of the bus.
  void OnHostMessage(const v1::ControlMessage& message, Actions* out);

  // OnPostFailed
  // Executing SendMessage(message) failed with `status`; the Backend contract
  // (backends/backend.h) gives the code its meaning (docs/protocol.md §5):
  //   - Unavailable: the link is gone; as OnLinkLost.
  //   - NotFound for the InitiateContact of the 5.x version being negotiated: that version's
  //     connection was rejected; negotiation moves to the next older version.
  //   - any other code (ResourceExhausted: host message buffers still full after the backend's
  //     retries; InvalidArgument: the backend cannot encode it): the host never saw this one
  //     message. Only the request that sent it fails, with `status`'s code and a message naming
  //     the request and the message, and what it set up is undone: a GpadlCreate's GPADL is
  //     released, an OpenChannel's channel is retired and its ring GPADL torn down, a
  //     ModifyChannel, TeardownGpadl or Unload leaves everything as before the call, an
  //     InitiateContact or RequestOffers fails the Connect. A CloseChannel cannot be taken
  //     back: Close fails, the channel stays closed on the guest's side, and the ring GPADL the
  //     host may still map stays (its memory held) until the host forgets it. A teardown
  //     nobody can take the failure for (Close's, after its CloseChannel went out, or one in
  //     the background) is sent again later (RetryUnsentTeardowns); a Close waits for it.
  //     The bus and every other channel carry on.
  // A message that is no longer current (its request finished or moved on) changes nothing.
  void OnPostFailed(const v1::ControlMessage& message, const absl::Status& status, Actions* out);

  // OnPosted
  // The SendMessage whose `completes` is `request` was posted: that request completes OK
  // (a ModifyChannel below 5.3, which the host never answers). Stale requests are ignored.
  void OnPosted(RequestId request, Actions* out);

  // unsent_teardowns / RetryUnsentTeardowns
  // GPADL teardowns whose post failed where nobody can take the failure (Close's ring GPADL,
  // background teardowns of abandoned creations and failed opens) stay being torn down; the
  // runtime calls RetryUnsentTeardowns after a back-off while unsent_teardowns() > 0, which
  // sends each again (only while connected: an unload or a lost link drops them anyway).
  size_t unsent_teardowns() const;
  void RetryUnsentTeardowns(Actions* out);

  // PostWanted
  // Whether a SendMessage emitted earlier in the action list being carried out should still be
  // posted. After OnPostFailed or OnPublishFailed undid a request, the messages queued behind
  // the failure that belong to it must not go out (the OpenChannel behind a failed publish; the
  // ring GpadlTeardown behind a CloseChannel the host never received). Executors ask for each
  // later SendMessage once an input of the same list failed.
  bool PostWanted(const v1::ControlMessage& message) const;

  // OnLinkLost
  // The link to the host is gone. Every published channel is retired, every waiting call
  // completes with Unavailable naming `status`, every offer is removed (OfferRemoved, then
  // detached until ReleaseOffer), and the phase becomes kDisconnected. No message is sent.
  void OnLinkLost(const absl::Status& status, Actions* out);

  // OnPublishFailed
  // Executing PublishChannel(offer) failed with `status` (its table slot was taken). The open
  // fails with FailedPrecondition naming `status` and its ring GPADL is torn down; the runtime
  // must not send the OpenChannel that followed the PublishChannel in the same action list (the
  // host never learns of the open). Ignored unless that offer's open is waiting for its publish.
  void OnPublishFailed(OfferId offer, const absl::Status& status, Actions* out);

  // OnTimer
  // The timer armed for `request` fired at `now`. A stale timer (request already complete)
  // is ignored; one that fired early (now < deadline) is armed again.
  void OnTimer(RequestId request, absl::Time now, Actions* out);

  // ---- Calls (from drivers through the runtime) -----------------------------------------
  // Each returns the RequestId whose Complete action carries the result.

  // Connect
  // Negotiates a version and collects the offers; completes (with the version) at
  // AllOffersDelivered. FailedPrecondition if not kDisconnected, or if the host accepts none
  // of the versions; InvalidArgument if max_version is below 2.4; DeadlineExceeded if the
  // host does not answer an InitiateContact in time (back to kDisconnected) or has not sent
  // AllOffersDelivered in time (the bus stays connected: later offers still arrive).
  RequestId Connect(absl::Time deadline, Actions* out);

  // Open
  // Opens the channel of an active offer on the rings in `params`. Needs kConnected and a
  // closed channel; sub-channels need their primary. Completes OK when the host's OpenResult
  // says 0. On refusal or deadline the channel is closed again (a ring GPADL already created
  // is torn down in the background and released with ReleaseGpadl).
  RequestId Open(OfferId offer, OpenParams params, absl::Time deadline, Actions* out);

  // Close
  // Closes an open channel: retire, CloseChannel, tear down the ring GPADL; completes at
  // GpadlTorndown. Closing a channel whose open is in progress cancels the open (it completes
  // with Cancelled). Closing a rescinded or detached offer's channel completes OK at once (it
  // is already closed). FailedPrecondition if closed or already closing.
  RequestId Close(OfferId offer, absl::Time deadline, Actions* out);

  // CreateGpadl
  // Describes guest memory to the host for an active offer's channel (open or not). Completes
  // with the new handle. The handle's memory must stay valid until its ReleaseGpadl action.
  RequestId CreateGpadl(OfferId offer, GpadlParams params, absl::Time deadline, Actions* out);

  // TeardownGpadl
  // Tears down a GPADL made by CreateGpadl for this offer; completes at GpadlTorndown (then
  // ReleaseGpadl). Ring GPADLs are not accepted (Close tears them down). On a rescinded or
  // detached offer it completes OK at once (the host already dropped it); FailedPrecondition
  // while unloading (the unload drops it).
  RequestId TeardownGpadl(OfferId offer, uint32_t gpadl, absl::Time deadline, Actions* out);

  // ModifyChannel
  // Retargets an open channel's interrupts to `target_vp`. Needs version 4.1; from 5.3
  // completes at ModifyChannelResponse, below at once after sending. One at a time per
  // channel.
  RequestId ModifyChannel(OfferId offer, uint32_t target_vp, absl::Time deadline, Actions* out);

  // Unload
  // Disconnects from the bus. Needs version 3.0. Completes at UnloadResponse; every offer is
  // then removed (reason Cancelled) and the phase is kDisconnected, so Connect may run again.
  // On deadline the connection is considered ended the same way.
  //   - kOrderly (suspend, shutdown): every channel must be closed first (FailedPrecondition
  //     naming the open ones).
  //   - kForced (crash dump, kexec: docs/protocol.md §9): channels may be open. Before the
  //     Unload is sent every channel is retired and every call waiting on a channel completes
  //     (opens, modifies and GPADL creations fail with Cancelled, closes and teardowns
  //     succeed: the host drops everything); GPADLs stay reserved, their memory held, until
  //     the offers are released after the UnloadResponse, since the host may use them until
  //     it has processed the Unload.
  //   - kSuspend (hibernation, docs/protocol.md §9): as kOrderly, and GPADLs other than rings
  //     must be torn down too; at the UnloadResponse — or at the deadline, the host having gone
  //     quiet — every active primary offer is parked (OfferState::kParked: its OfferId and
  //     channel kept, its relid no longer held) instead of removed, everything else is removed
  //     as by kOrderly, and the phase is kSuspended. The Unload then completes (OK, or
  //     DeadlineExceeded), and only Resume, or the loss of the link, follows.
  RequestId Unload(absl::Time deadline, Actions* out, UnloadMode mode = UnloadMode::kOrderly);

  // Resume
  // Reconnects after a suspend (kSuspended): negotiates exactly the version agreed before it —
  // a host that refuses it fails the Resume with FailedPrecondition naming the version, and
  // the bus stays suspended (Resume may be tried again) — then requests the offers. A primary
  // offer whose (type, instance) matches a parked offer takes that offer's place: the OfferId
  // stays, the relid and every other field come from the new offer, and an OfferResumed action
  // (not OfferAdded) reports it. Other offers are ordinary additions. Completes at
  // AllOffersDelivered (with the version). Offers still parked then stay parked — a later
  // offer may still match them — until DropParked. DeadlineExceeded as for Connect: before a
  // VersionResponse the bus is suspended again; after one it stays connected.
  RequestId Resume(absl::Time deadline, Actions* out);

  // DropParked
  // Removes every offer still parked: OfferRemoved with `why` (NotFound naming the device is
  // what the runtime passes after a resume), then detached until ReleaseOffer.
  void DropParked(const absl::Status& why, Actions* out);

  // ReleaseOffer
  // The runtime has finished with a removed (rescinded or detached) offer: for a rescinded one
  // while connected (not unloading: the Unload makes the host forget every relid), RelidReleased
  // is sent (the host then forgets the relid and its GPADLs and may reuse both), then its GPADLs
  // are released (ReleaseGpadl each). Synchronous: NotFound for an unknown offer,
  // FailedPrecondition for an active one.
  absl::Status ReleaseOffer(OfferId offer, Actions* out);

  // ---- Inspection (for the runtime, tests and simulation invariants) --------------------

  BusPhase phase() const { return phase_; }
  // The agreed version; 0 unless connected or unloading.
  uint32_t version() const { return version_; }
  uint32_t message_connection_id() const { return message_connection_id_; }
  bool all_offers_delivered() const { return all_offers_delivered_; }
  // The version a suspend saved for Resume; 0 unless suspended or resuming.
  uint32_t suspended_version() const { return suspended_version_; }
  // Primary offers parked by a suspend and not re-offered yet, by OfferId.
  std::vector<OfferInfo> ParkedOffers() const;
  // Active offers, by relid.
  std::vector<OfferInfo> Offers() const;
  // Any offer not yet released (active, rescinded or detached).
  std::optional<ChannelStatus> GetChannel(OfferId offer) const;
  // The active or rescinded offer holding `relid`, if any.
  std::optional<OfferId> FindOfferByRelid(uint32_t relid) const;
  // Every live GPADL, by handle.
  std::vector<GpadlStatus> Gpadls() const;
  // Calls waiting for a Complete.
  size_t pending_requests() const { return requests_.size(); }
  // RequestGpadl
  // The GPADL handle a pending Open (its ring GPADL), CreateGpadl, TeardownGpadl or Close
  // (the ring GPADL it tears down) is tied to, chosen when the call was made; nullopt for
  // other or finished requests. The runtime files the memory it allocated under this handle
  // right after the call, and frees it at the handle's ReleaseGpadl action.
  std::optional<uint32_t> RequestGpadl(RequestId request) const;
  const BusCounters& counters() const { return counters_; }

  // CheckInvariants
  // Cross-checks the internal tables (relid index, GPADL ownership, channel states against
  // pending calls and publication). OK, or Internal naming the first broken invariant. For
  // tests and the simulation; O(offers + GPADLs + requests).
  absl::Status CheckInvariants() const;

 private:
  struct OfferRecord {
    OfferInfo info;
    OfferState state = OfferState::kActive;
    ChannelState channel = ChannelState::kClosed;
    bool published = false;
    bool orphaned = false;
    // A sub-channel its primary's Close closed: a later Close of it completes OK at once.
    bool closed_with_primary = false;
    uint32_t ring_gpadl = 0;
    uint32_t open_id = 0;  // of the OpenChannel in flight or in force
    // Parameters of the open in progress, used once the ring GPADL exists.
    uint32_t outbound_ring_pages = 0;
    uint32_t target_vp = 0;
    std::string user_data;
    RequestId open_request;
    RequestId close_request;
    RequestId modify_request;
    std::vector<uint32_t> gpadls;       // live GPADL handles (unordered; small)
    std::vector<OfferId> sub_channels;  // live sub-channels of a primary
  };
  struct GpadlRecord {
    OfferId offer;
    uint32_t relid = 0;
    GpadlState state = GpadlState::kCreating;
    bool ring = false;
    bool abandoned = false;
    // A GpadlTeardown was sent before the GPADL was dropped: the host may still answer it.
    bool teardown_sent = false;
    // Being torn down, but the GpadlTeardown could not be posted: RetryUnsentTeardowns sends it.
    bool teardown_unsent = false;
    RequestId waiter;  // CreateGpadl / TeardownGpadl / Close waiting on it
  };
  struct PendingRequest {
    RequestKind kind = RequestKind::kConnect;
    OfferId offer;
    uint32_t gpadl = 0;
    absl::Time deadline;
    bool timer_armed = false;
  };
  using InstanceKey = std::tuple<Guid, Guid, uint16_t>;

  // Host message handlers (bus_state.cc, bus_state_offers.cc, bus_state_channels.cc).
  void HandleVersionResponse(const v1::VersionResponse& m, Actions* out);
  void HandleAllOffersDelivered(Actions* out);
  void HandleOffer(const v1::Offer& m, Actions* out);
  void HandleRescind(const v1::RescindOffer& m, Actions* out);
  void HandleGpadlCreated(const v1::GpadlCreated& m, Actions* out);
  void HandleGpadlTorndown(const v1::GpadlTorndown& m, Actions* out);
  void HandleOpenResult(const v1::OpenResult& m, Actions* out);
  void HandleModifyResponse(const v1::ModifyChannelResponse& m, Actions* out);
  void HandleUnloadResponse(Actions* out);
  // The end of an Unload in UnloadMode::kSuspend (bus_state_suspend.cc).
  void ParkAll(Actions* out);
  // Makes parked `id` active again as `info` (a re-offer after Resume).
  void Unpark(OfferId id, OfferInfo info, Actions* out);

  // Timer expiry per kind.
  void ConnectTimedOut(RequestId id, Actions* out);
  void OpenTimedOut(RequestId id, const PendingRequest& req, Actions* out);
  void CloseTimedOut(RequestId id, const PendingRequest& req, Actions* out);

  // Connection helpers.
  // Sends the InitiateContact for versions_to_try_[0] and arms the connect request's timer.
  RequestId StartNegotiation(absl::Time deadline, Actions* out);
  void SendInitiateContact(Actions* out);
  void TryNextVersion(absl::string_view why, Actions* out);
  // The host refused the version a Resume must get back: the bus is suspended again.
  void ResumeRefused(absl::string_view why, Actions* out);
  // The Resume fails with `status` before a version was agreed: the bus is suspended again.
  void ResumeFailed(absl::Status status, Actions* out);
  // `keep_parked`: parked offers stay (a suspend parking its primaries); otherwise they go too.
  void DetachAll(const absl::Status& reason, Actions* out, bool keep_parked = false);
  // Sends RelidReleased for the relid of an offer just refused, unless it is not a valid relid,
  // another offer holds it, or the bus is not kConnected; remembers it so that a rescind of it
  // is answered the same way.
  void ReleaseRefusedRelid(uint32_t relid, Actions* out);

  // Post failures per message kind (bus_state_posts.cc).
  void GpadlCreateNotPosted(const v1::ControlMessage& m, const absl::Status& s, Actions* out);
  void OpenChannelNotPosted(const v1::ControlMessage& m, const absl::Status& s, Actions* out);
  void GpadlTeardownNotPosted(const v1::ControlMessage& m, const absl::Status& s, Actions* out);
  void CloseChannelNotPosted(const v1::ControlMessage& m, const absl::Status& s, Actions* out);
  bool negotiated() const {
    return phase_ == BusPhase::kConnected || phase_ == BusPhase::kUnloading;
  }

  // Channel helpers.
  void ContinueOpen(OfferRecord& rec, Actions* out);
  void StartClose(OfferRecord& rec, RequestId waiter, Actions* out);
  // Stops an open in progress (no completion); returns its request for the caller to finish.
  RequestId AbandonOpen(OfferRecord& rec, Actions* out);
  // A GPADL that a Close or TeardownGpadl waited for is gone: complete that waiter.
  void GpadlWaiterDone(RequestId waiter, Actions* out);
  void StartTeardown(uint32_t handle, GpadlRecord& g, RequestId waiter, Actions* out);
  void OrphanSubChannel(OfferRecord& sub, const OfferRecord& primary, Actions* out);
  // Closes a sub-channel because of its primary (rescinded, or being closed): an open in
  // progress fails with `why`, a modify too, an open channel starts its close with no waiter.
  void CloseForPrimary(OfferRecord& sub, const absl::Status& why, Actions* out);
  void DropChannel(OfferRecord& rec, const absl::Status& why, Actions* out);
  void EraseGpadl(uint32_t handle, Actions* out);
  uint32_t AllocateGpadlHandle();
  // Checks a channel call's common preconditions; on success *rec points at the offer.
  absl::Status CheckChannelCall(OfferId offer, absl::string_view what, OfferRecord** rec);

  // Requests.
  RequestId NewRequest(RequestKind kind, OfferId offer, absl::Time deadline, uint32_t gpadl = 0);
  void ArmTimer(RequestId id, Actions* out);
  // A request that completes at once (never registered, no timer).
  RequestId CompleteNow(RequestKind kind, OfferId offer, absl::Status status, Actions* out);
  void Finish(RequestId id, absl::Status status, Actions* out, uint32_t gpadl = 0,
              uint32_t version = 0);

  // Output helpers.
  // `completes`: a request that completes OK once the message is posted (OnPosted).
  void Send(v1::ControlMessage message, Actions* out, RequestId completes = RequestId());
  void Ignore(IgnoreReason reason, absl::Status status, Actions* out);

  OfferRecord* FindOffer(OfferId id);
  const OfferRecord* FindOffer(OfferId id) const;
  OfferRecord* FindByRelid(uint32_t relid);
  GpadlRecord* FindGpadl(uint32_t handle);
  PendingRequest* FindRequest(RequestId id);
  // An internal table broke an invariant: counted and reported as ignored input (it can only
  // come from a bug, but host input must never reach an exception).
  void Inconsistent(absl::string_view what, Actions* out);

  const BusConfig config_;
  BusPhase phase_ = BusPhase::kDisconnected;
  uint32_t version_ = 0;
  uint32_t message_connection_id_ = 0;
  bool all_offers_delivered_ = false;
  std::vector<uint32_t> versions_to_try_;
  size_t attempt_ = 0;
  RequestId connect_request_;
  RequestId unload_request_;
  UnloadMode unload_mode_ = UnloadMode::kOrderly;
  // Suspend / resume: the version to renegotiate (0 unless suspended or resuming), and the
  // parked primaries by (type, instance, 0).
  uint32_t suspended_version_ = 0;
  std::map<InstanceKey, OfferId> parked_;

  // Ordered maps keep every action list deterministic (iteration order = id order).
  std::map<OfferId, OfferRecord> offers_;
  std::array<OfferId, protocol::kRelidCount> relid_index_{};  // active + rescinded offers
  std::map<InstanceKey, OfferId> instance_index_;             // active offers
  // Relids of refused offers released since the host last offered them (none is in
  // relid_index_): a rescind of one is answered with RelidReleased.
  std::bitset<protocol::kRelidCount> refused_relids_;
  std::map<uint32_t, GpadlRecord> gpadls_;
  std::map<RequestId, PendingRequest> requests_;

  uint64_t next_offer_id_ = 1;
  uint64_t next_request_id_ = 1;
  uint32_t next_gpadl_handle_ = protocol::kFirstGpadlHandle;
  uint32_t next_open_id_ = 1;
  BusCounters counters_;
};

}  // namespace vbus

#endif  // VBUS_CORE_STATE_BUS_STATE_H_
