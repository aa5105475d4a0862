// The guest side of the simulated world: the application and its drivers on top of the
// production runtime. Drivers take the offers the executor hands out and release removed ones
// a little later; the scenario opens and closes channels (callback or polling mode), creates
// and tears down GPADLs and retargets channels through the executor; two senders per channel
// queue packets and wait with WhenWritable when the ring is full; receive callbacks check every
// packet and sometimes block (running the world on from inside the callback); polling channels
// are polled after interrupts. Everything else — the bus protocol, the channel table, rings,
// drains, completions — is the production code's.
#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "mock/host/device_kinds.h"
#include "test/sim/sim_world_internal.h"

namespace vbus::sim {
namespace {

constexpr size_t kPage = protocol::kPageSize;
// Enough transaction slots that requests never run out of them (the rings run out first).
constexpr uint32_t kMaxOutstanding = 4096;

std::vector<uint8_t> Padded(const std::vector<uint8_t>& bytes) {
  std::vector<uint8_t> padded = bytes;
  padded.resize((bytes.size() + 7) & ~size_t{7}, 0);
  return padded;
}

}  // namespace

DeviceKind World::DeviceOf(const Guid& type) const {
  if (type == mock::kEchoDeviceClass) return DeviceKind::kEcho;
  if (type == mock::kRawDeviceClass) return DeviceKind::kRaw;
  return DeviceKind::kOther;
}

std::vector<OfferId> World::ActiveOffers() const {
  std::vector<OfferId> ids;
  for (const auto& [id, offer] : offers_) {
    if (!offer.removed) ids.push_back(id);
  }
  return ids;
}

std::shared_ptr<Channel> World::ChannelOf(OfferId offer) const {
  auto it = offers_.find(offer);
  return it == offers_.end() ? nullptr : it->second.channel;
}

// ---- Drivers (ExecutorListener) ------------------------------------------------------------

void World::OfferAdded(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) {
  if (offers_.contains(offer.id)) {
    Fail(absl::StrCat("offer id ", offer.id.value(), " added twice"));
    return;
  }
  if (channel == nullptr || channel->id() != offer.id || channel->relid() != offer.relid) {
    Fail(absl::StrCat("offer ", offer.id.value(), " (relid ", offer.relid,
                      ") came without its channel"));
    return;
  }
  offers_[offer.id] = GuestOffer{offer, DeviceOf(offer.interface_type), channel, false};
  relids_seen_.insert(offer.relid);
}

void World::OfferRemoved(const OfferInfo& offer, const std::shared_ptr<Channel>& /*channel*/,
                         const absl::Status& reason) {
  auto it = offers_.find(offer.id);
  if (it == offers_.end() || it->second.removed) {
    Fail(absl::StrCat("OfferRemoved for offer ", offer.id.value(), ", which is not a live offer"));
    return;
  }
  if (stuck_.has_value() && stuck_->offer == offer.id) {
    Fail(absl::StrCat("the removal of relid ", offer.relid,
                      " was passed on while a receive callback of its channel still runs"));
    return;
  }
  it->second.removed = true;
  // The driver's Remove runs now: no callback of the channel may run from here on.
  for (auto& [sid, s] : sessions_) {
    if (s.offer == offer.id) s.receive_closed = true;
  }
  Trace(absl::StrCat("    driver: offer ", offer.id.value(), " (relid ", offer.relid,
                     ") removed: ", reason.ToString()));
  ReleaseLater(offer.id);
}

void World::OfferResumed(const OfferInfo& offer, const std::shared_ptr<Channel>& channel) {
  auto it = offers_.find(offer.id);
  if (it == offers_.end() || it->second.removed) {
    Fail(absl::StrCat("OfferResumed for offer ", offer.id.value(), ", which is not a live offer"));
    return;
  }
  if (channel != it->second.channel || channel->relid() != offer.relid) {
    Fail(absl::StrCat("offer ", offer.id.value(), " resumed under relid ", offer.relid,
                      " without its own channel carrying the new relid"));
    return;
  }
  Trace(absl::StrCat("    driver: offer ", offer.id.value(), " resumed: relid ",
                     it->second.info.relid, " -> ", offer.relid));
  it->second.info = offer;
  relids_seen_.insert(offer.relid);
}

void World::ReleaseLater(OfferId offer) {
  // The driver's Remove runs, then the runtime releases the offer (and with it the relid).
  sched_.After(absl::Microseconds(rng_.Range(0, 300)), SimScheduler::kWork,
               absl::StrCat("release offer ", offer.value()), [this, offer] {
                 ExecutorInput([this, offer] {
                   // A failure is logged by the executor (and fails the run there).
                   executor_->ReleaseOffer(offer);
                   offers_.erase(offer);
                 });
               });
}

// ---- Sessions ------------------------------------------------------------------------------

bool World::GuestLive(const Session& s) const {
  if (s.ring_gpadl == 0) return false;
  std::optional<ChannelStatus> st = bus().GetChannel(s.offer);
  if (!st || st->offer_state != OfferState::kActive || st->ring_gpadl != s.ring_gpadl) {
    return false;
  }
  return st->channel_state == ChannelState::kOpeningGpadl ||
         st->channel_state == ChannelState::kOpening || st->channel_state == ChannelState::kOpen;
}

void World::ObserveSessions() {
  for (auto it = live_sessions_.begin(); it != live_sessions_.end();) {
    Session& s = sessions_.at(*it);
    if (GuestLive(s)) {
      ++it;
      continue;
    }
    EndSession(s);
    it = live_sessions_.erase(it);
  }
}

void World::EndSession(Session& s) {
  s.guest_ended = true;
  for (auto& queue : s.senders) queue.clear();  // never sent: the channel closed first
  if (stuck_.has_value() && stuck_->session == s.id) stuck_->overlapped_retire = true;
}

uint64_t World::AttachedSession(OfferId offer) const {
  auto it = attached_.find(offer);
  return it == attached_.end() ? 0 : it->second;
}

void World::OpenStarted(uint64_t sid) {
  Session& s = sessions_.at(sid);
  s.started = true;
  for (const auto& [data, a] : backend_->allocations()) {
    if (a.tag.session != sid) continue;
    s.rings = a.data;  // attached: the executor holds them
    attached_[s.offer] = sid;
  }
  live_sessions_.insert(sid);  // ObserveSessions ends it if it did not get that far
}

// ---- Scenario steps (guest) ----------------------------------------------------------------

std::vector<uint8_t> World::RandomPayload(size_t max) {
  size_t size = 0;
  switch (rng_.Weighted({50, 35, 15})) {
    case 0:
      size = rng_.Range(0, 64);
      break;
    case 1:
      size = rng_.Range(65, 1024);
      break;
    default:
      size = rng_.Range(1025, std::max<size_t>(max, 1025));
      break;
  }
  size = std::min(size, max);
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; i += 8) {
    const uint64_t r = rng_.Next();
    std::memcpy(bytes.data() + i, &r, std::min<size_t>(8, size - i));
  }
  return bytes;
}

void World::OpOpen() {
  std::vector<OfferId> candidates;
  for (OfferId id : ActiveOffers()) {
    std::optional<ChannelStatus> st = bus().GetChannel(id);
    if (!st || st->offer_state != OfferState::kActive ||
        st->channel_state != ChannelState::kClosed || st->orphaned) {
      continue;
    }
    // A sub-channel opens only while its primary is open: mostly try those, sometimes one
    // that must be refused.
    if (st->offer.is_sub_channel()) {
      std::optional<ChannelStatus> primary = bus().GetChannel(st->offer.primary);
      const bool primary_open = primary && primary->channel_state == ChannelState::kOpen;
      if (!primary_open && !rng_.Chance(0.1)) continue;
    }
    candidates.push_back(id);
  }
  if (candidates.empty() || executor_->phase() != BusPhase::kConnected) return;
  OfferId offer = rng_.Pick(candidates);
  // While a callback blocks, try to reopen its channel (refused until the callback returns).
  if (stuck_.has_value() &&
      std::find(candidates.begin(), candidates.end(), stuck_->offer) != candidates.end()) {
    if (rng_.Chance(0.5)) offer = stuck_->offer;
  }
  const GuestOffer& o = offers_.at(offer);
  Session s;
  s.id = next_session_++;
  s.offer = offer;
  s.relid = o.info.relid;
  s.device = o.device;
  s.channel = o.channel;
  ChannelOpenOptions options;
  options.outbound_ring_pages = static_cast<uint32_t>(rng_.Range(2, 5));
  options.inbound_ring_pages = static_cast<uint32_t>(rng_.Range(2, 5));
  options.target_vp = static_cast<uint32_t>(rng_.Range(0, 3));
  options.user_data = std::string(rng_.Range(0, 16), 'u');
  options.max_outstanding_requests = kMaxOutstanding;
  if (rng_.Chance(config_.small_budgets)) {
    options.drain_budget = static_cast<uint32_t>(rng_.Range(1, 8));
  }
  s.callback_mode = !rng_.Chance(config_.polling_opens);
  if (s.callback_mode) {
    // Small and trivially copyable: std::function keeps it inline, and the callback reads
    // nothing of it after it blocked (the executor may drop the function meanwhile only if it
    // is broken — then the run fails there).
    options.on_packet = [world = this, sid = s.id](const PacketView& p) {
      world->OnCallbackPacket(sid, p);
    };
  } else {
    s.poll_batch = rng_.Chance(0.5) ? rng_.Range(1, 8) : SIZE_MAX;
  }
  s.outbound_pages = options.outbound_ring_pages;
  s.max_payload =
      (std::min(options.outbound_ring_pages, options.inbound_ring_pages) - 1) * kPage - 32;
  s.max_host_payload = (options.inbound_ring_pages - 1) * kPage - 32;
  s.target_vp = options.target_vp;
  const uint64_t sid = s.id;
  sessions_[sid] = std::move(s);
  const absl::Time deadline = Deadline();
  Trace(absl::StrCat("    application opens relid ", o.info.relid, " (",
                     options.outbound_ring_pages, "+", options.inbound_ring_pages, " pages, ",
                     options.on_packet ? "callback" : "polling", " mode, budget ",
                     options.drain_budget, ", session ", sid, ")"));
  IssueCall(RequestKind::kOpen, offer, deadline, sid,
            [channel = o.channel, options, deadline](BusExecutor& executor, CallDone done) {
              executor.Open(channel, options, deadline, std::move(done));
            });
}

void World::OpClose() {
  std::vector<OfferId> candidates;
  for (OfferId id : ActiveOffers()) {
    std::optional<ChannelStatus> st = bus().GetChannel(id);
    if (st && st->offer_state == OfferState::kActive &&
        (st->channel_state == ChannelState::kOpen || st->channel_state == ChannelState::kOpening ||
         st->channel_state == ChannelState::kOpeningGpadl)) {
      candidates.push_back(id);
    }
  }
  // While a callback blocks, close its channel (or close it again: held until it returns).
  if (stuck_.has_value() && offers_.contains(stuck_->offer) && rng_.Chance(0.5)) {
    candidates.assign(1, stuck_->offer);
  }
  if (candidates.empty()) return;
  const OfferId offer = rng_.Pick(candidates);
  const absl::Time deadline = Deadline();
  IssueCall(RequestKind::kClose, offer, deadline, 0,
            [channel = ChannelOf(offer), deadline](BusExecutor& executor, CallDone done) {
              executor.Close(channel, deadline, std::move(done));
            });
}

void World::OpCreateGpadl() {
  std::vector<OfferId> candidates = ActiveOffers();
  if (candidates.empty() || executor_->phase() != BusPhase::kConnected) return;
  const OfferId offer = rng_.Pick(candidates);
  // Whole pages (the production Channel creates no partial ranges). Through the binary codec
  // some are big enough to need GPADL_BODY parts (over 26 PFNs).
  const size_t count =
      options_.binary_codec && rng_.Chance(0.2) ? rng_.Range(27, 80) : rng_.Range(1, 4);
  const absl::Time deadline = Deadline();
  IssueCall(RequestKind::kGpadlCreate, offer, deadline, 0,
            [channel = ChannelOf(offer), count, deadline](BusExecutor& executor, CallDone done) {
              executor.CreateGpadl(channel, count, deadline, std::move(done));
            });
}

void World::OpTeardownGpadl() {
  std::vector<GpadlStatus> candidates;
  for (const GpadlStatus& g : bus().Gpadls()) {
    if (g.ring || g.state != GpadlState::kCreated || g.abandoned) continue;
    std::optional<ChannelStatus> st = bus().GetChannel(g.offer);
    if (st && st->offer_state == OfferState::kActive && offers_.contains(g.offer)) {
      candidates.push_back(g);
    }
  }
  if (candidates.empty()) return;
  const GpadlStatus g = rng_.Pick(candidates);
  const absl::Time deadline = Deadline();
  IssueCall(RequestKind::kGpadlTeardown, g.offer, deadline, 0,
            [channel = ChannelOf(g.offer), handle = g.handle, deadline](BusExecutor& executor,
                                                                        CallDone done) {
              executor.TeardownGpadl(channel, handle, deadline, std::move(done));
            });
}

void World::OpModify() {
  std::vector<OfferId> candidates;
  for (OfferId id : ActiveOffers()) {
    std::optional<ChannelStatus> st = bus().GetChannel(id);
    if (st && st->offer_state == OfferState::kActive && st->channel_state == ChannelState::kOpen) {
      candidates.push_back(id);
    }
  }
  if (candidates.empty()) return;
  const OfferId offer = rng_.Pick(candidates);
  const uint32_t vp = static_cast<uint32_t>(rng_.Range(0, 7));
  const absl::Time deadline = Deadline();
  const uint64_t id =
      IssueCall(RequestKind::kModifyChannel, offer, deadline, 0,
                [channel = ChannelOf(offer), vp, deadline](BusExecutor& executor, CallDone done) {
                  executor.ModifyChannel(channel, vp, deadline, std::move(done));
                });
  calls_.at(id).target_vp = vp;
}

void World::OpTraffic() {
  std::vector<uint64_t> candidates;
  for (uint64_t sid : live_sessions_) {
    const Session& s = sessions_.at(sid);
    if (s.guest_open && !s.guest_ended && s.device != DeviceKind::kOther) {
      candidates.push_back(sid);
    }
  }
  if (candidates.empty()) return;
  const uint64_t sid = rng_.Pick(candidates);
  Session& s = sessions_.at(sid);
  // Sender 0 sends any size, sender 1 small packets: a large packet waiting for room must not
  // hold up the small ones, nor they it.
  const int sender = static_cast<int>(rng_.Below(Session::kSenders));
  const uint64_t count = rng_.Range(1, 24);
  for (uint64_t i = 0; i < count; ++i) {
    QueuedPacket p;
    p.payload = RandomPayload(sender == 0 ? s.max_payload : std::min<size_t>(s.max_payload, 64));
    p.request = s.device == DeviceKind::kEcho && rng_.Chance(0.3);
    p.gather = rng_.Chance(0.2);
    s.senders[sender].push_back(std::move(p));
  }
  Trace(absl::StrCat("    sender ", sender, " queues ", count, " packets on relid ", s.relid));
  TrySend(sid, sender);
}

// ---- Sending -------------------------------------------------------------------------------

void World::TrySend(uint64_t sid, int k) {
  Session& s = sessions_.at(sid);
  std::deque<QueuedPacket>& queue = s.senders[k];
  while (!queue.empty() && !failed_) {
    if (s.guest_ended) {
      queue.clear();
      return;
    }
    const QueuedPacket& p = queue.front();
    SimPacket expect;
    expect.type = static_cast<uint16_t>(PacketType::kDataInband);
    expect.payload = Padded(p.payload);
    const bool raw = s.device == DeviceKind::kRaw;
    // The host may read the packet before the send returns (it reacts inside the signal).
    if (raw) s.host_expect.push_back(expect);
    const absl::Span<const uint8_t> whole(p.payload);
    absl::Status sent;
    uint64_t trans_id = 0;
    if (p.request) {
      const absl::Span<const uint8_t> pieces[1] = {whole};
      absl::StatusOr<uint64_t> id = s.channel->SendRequest(
          pieces, [this, sid](const Completion& c) { OnCompletion(sid, c); });
      sent = id.status();
      if (id.ok()) trans_id = *id;
    } else if (p.gather) {
      const size_t cut = whole.size() / 3;
      const absl::Span<const uint8_t> pieces[2] = {whole.subspan(0, cut), whole.subspan(cut)};
      sent = s.channel->SendGather(pieces);
    } else {
      sent = s.channel->Send(whole);
    }
    if (sent.ok()) {
      ++stats_.packets_sent;
      ++s.guest_packets;
      s.guest_bytes += expect.payload.size();
      if (!raw) {
        // The echo device answers with the same bytes: a completion for a request.
        expect.trans_id = trans_id;
        if (p.request) expect.type = static_cast<uint16_t>(PacketType::kCompletion);
        s.echo_expect.push_back(std::move(expect));
      }
      queue.pop_front();
      continue;
    }
    if (raw) s.host_expect.pop_back();
    if (sent.code() == absl::StatusCode::kResourceExhausted) {
      ++stats_.guest_ring_full;
      if (s.sender_waits[k]) return;
      s.sender_waits[k] = true;
      in_when_writable_ = true;
      const absl::Status armed = s.channel->WhenWritable(p.payload.size(), [this, sid, k] {
        Session& ready = sessions_.at(sid);
        ready.sender_waits[k] = false;
        // At once: it fits after all (the send was refused for another reason), retry a
        // little later; otherwise the host freed room.
        const bool now = in_when_writable_;
        if (!now) ++stats_.writable_wakeups;
        sched_.After(now ? absl::Microseconds(50) : absl::ZeroDuration(), SimScheduler::kWork,
                     absl::StrCat("sender ", k, " of relid ", ready.relid, " retries"),
                     [this, sid, k] { TrySend(sid, k); });
      });
      in_when_writable_ = false;
      if (!armed.ok() && GuestLive(s)) {
        Fail(absl::StrCat("WhenWritable on relid ", s.relid, ": ", armed.ToString()));
      }
      return;
    }
    if (!GuestLive(s) || !s.channel->removed_status().ok()) {
      queue.clear();  // the channel closed under the sender
      return;
    }
    Fail(absl::StrCat("send on relid ", s.relid, " (open) failed: ", sent.ToString()));
    return;
  }
}

// ---- Receiving -----------------------------------------------------------------------------

void World::OnCompletion(uint64_t sid, const Completion& c) {
  if (tearing_down_) return;
  Session& s = sessions_.at(sid);
  if (!c.status.ok()) {
    // No answer will come: only a channel that is closing or gone fails its requests.
    if (GuestLive(s)) {
      Fail(absl::StrCat("request 0x", absl::Hex(c.trans_id), " on relid ", s.relid,
                        " failed while the channel is open: ", c.status.ToString()));
      return;
    }
    // Its completion, should it still come, is dropped as stale: nothing to expect.
    auto it = std::find_if(s.echo_expect.begin(), s.echo_expect.end(), [&](const SimPacket& p) {
      return p.type == static_cast<uint16_t>(PacketType::kCompletion) && p.trans_id == c.trans_id;
    });
    if (it != s.echo_expect.end()) s.echo_expect.erase(it);
    return;
  }
  if (s.receive_closed) {
    Fail(absl::StrCat("a completion callback of relid ", s.relid,
                      " ran after its Close returned OK or its offer was removed"));
    return;
  }
  SimPacket got;
  got.trans_id = c.trans_id;
  got.type = c.packet->raw_type();
  got.flags = c.packet->flags();
  got.payload.assign(c.packet->payload().begin(), c.packet->payload().end());
  if (c.packet->trans_id() != c.trans_id) {
    Fail(absl::StrCat("completion 0x", absl::Hex(c.packet->trans_id()), " on relid ", s.relid,
                      " was handed to request 0x", absl::Hex(c.trans_id)));
    return;
  }
  if (ExpectPacket(s.echo_expect, got, absl::StrCat("completion on relid ", s.relid))) {
    ++stats_.completions_verified;
    ++s.host_packets;
    s.host_bytes += got.payload.size();
  }
}

void World::OnGuestPacket(uint64_t sid, const PacketView& packet, bool polled) {
  Session& s = sessions_.at(sid);
  if (s.receive_closed) {
    Fail(absl::StrCat("a receive callback of relid ", s.relid,
                      " ran after its Close returned OK or its offer was removed"));
    return;
  }
  SimPacket got;
  got.trans_id = packet.trans_id();
  got.type = packet.raw_type();
  got.flags = packet.flags();
  got.payload.assign(packet.payload().begin(), packet.payload().end());
  if (polled) ++stats_.polled_packets;
  switch (s.device) {
    case DeviceKind::kEcho:
      if (ExpectPacket(s.echo_expect, got, absl::StrCat("echo reply on relid ", s.relid))) {
        ++s.host_packets;
        s.host_bytes += got.payload.size();
      }
      return;
    case DeviceKind::kRaw:
      ExpectPacket(s.guest_expect, got, absl::StrCat("host packet on relid ", s.relid));
      return;
    case DeviceKind::kOther:
      Fail(absl::StrCat("packet on relid ", s.relid, ", whose device sends none"));
      return;
  }
}

void World::OnCallbackPacket(uint64_t sid, const PacketView& packet) {
  OnGuestPacket(sid, packet, /*polled=*/false);
  // A blocked receive callback: the drain it runs in stays in progress, its dispatcher
  // announces the relid, other raises leave their work to this scan.
  MaybeBlock(sid);
}

void World::OnPolledPacket(uint64_t sid, const PacketView& packet) {
  OnGuestPacket(sid, packet, /*polled=*/true);
  // A blocked poller: it holds the channel's receive side until it returns.
  MaybeBlock(sid);
}

void World::MaybeBlock(uint64_t sid) {
  if (failed_ || nest_depth_ > 0 || !rng_.Chance(config_.stuck_chance)) return;
  // The world goes on around the blocked callback.
  const Session& s = sessions_.at(sid);
  const absl::Duration blocked = absl::Microseconds(
      rng_.Range(1, static_cast<uint64_t>(absl::ToInt64Microseconds(config_.max_stuck))));
  stuck_ = StuckCallback{sid, s.offer, s.relid, false};
  ++stats_.stuck_callbacks;
  Trace(absl::StrCat("    the receive callback of relid ", s.relid, " blocks for ",
                     absl::FormatDuration(blocked)));
  RunNested(blocked);
  if (stuck_->overlapped_retire) ++stats_.stuck_over_retire;
  const uint32_t relid = stuck_->relid;
  stuck_.reset();
  // Unwind the production drain at once after a failure: a broken executor may have taken the
  // receive side away under it.
  if (failed_) throw SimAbort{};
  Trace(absl::StrCat("    the receive callback of relid ", relid, " returns"));
}

void World::SchedulePolls() {
  for (uint64_t sid : live_sessions_) {
    Session& s = sessions_.at(sid);
    if (s.callback_mode || s.poll_pending || s.rings == nullptr) continue;
    s.poll_pending = true;
    sched_.After(absl::Microseconds(rng_.Range(0, 200)), SimScheduler::kWork,
                 absl::StrCat("application polls relid ", s.relid),
                 [this, sid] { PollSession(sid); });
  }
}

void World::PollSession(uint64_t sid) {
  Session& s = sessions_.at(sid);
  s.poll_pending = false;
  if (s.guest_ended || AttachedSession(s.offer) != sid) return;
  absl::StatusOr<size_t> polled =
      s.channel->Poll([this, sid](const PacketView& p) { OnPolledPacket(sid, p); }, s.poll_batch);
  if (!polled.ok()) {
    if (polled.status().code() != absl::StatusCode::kFailedPrecondition) {
      Fail(absl::StrCat("Poll on relid ", s.relid, ": ", polled.status().ToString()));
    }
    return;
  }
  if (*polled > 0) Trace(absl::StrCat("    application polled ", *polled, " packets"));
  // A full batch may have left packets behind (the host does not signal a non-empty ring).
  if (s.poll_batch != SIZE_MAX && *polled == s.poll_batch) {
    s.poll_pending = true;
    sched_.After(absl::Microseconds(rng_.Range(0, 100)), SimScheduler::kWork,
                 absl::StrCat("application polls relid ", s.relid, " again"),
                 [this, sid] { PollSession(sid); });
  }
}

}  // namespace vbus::sim
