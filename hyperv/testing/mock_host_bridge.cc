#include "hyperv/testing/mock_host_bridge.h"

#include <pthread.h>

#include <bit>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/host_text.h"
#include "google/protobuf/descriptor.h"

namespace vbus::hyperv::testing {

namespace {

// "gpadl_create", "offer_channel", …: the ControlMessage field that is set.
std::string KindOf(const v1::ControlMessage& message) {
  const google::protobuf::FieldDescriptor* field =
      message.GetDescriptor()->FindFieldByNumber(message.message_case());
  return field == nullptr ? std::string("an empty ControlMessage") : field->name();
}

uint64_t GpaOf(uint64_t pfn) { return pfn * protocol::kPageSize; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------------------------

MockHostBridge::MockHostBridge(mock::GuestLinkOpener open, MockHostBridgeOptions options,
                               std::unique_ptr<mock::GuestMemory> memory,
                               std::unique_ptr<FakeHypervisor> hv)
    : open_(std::move(open)),
      options_(std::move(options)),
      memory_(std::move(memory)),
      hv_(std::move(hv)) {}

absl::StatusOr<std::unique_ptr<MockHostBridge>> MockHostBridge::Create(
    mock::GuestLinkOpener open, MockHostBridgeOptions options) {
  if (!open) return absl::InvalidArgumentError("MockHostBridge needs a GuestLink opener");
  if (options.vp_count == 0 || options.vp_count > mock::kMaxGuestVps) {
    return absl::InvalidArgumentError(absl::StrCat("MockHostBridge: vp_count ", options.vp_count,
                                                   " is outside 1..", mock::kMaxGuestVps));
  }
  mock::MemoryLayout layout;
  layout.vp_count = options.vp_count;
  absl::StatusOr<std::unique_ptr<mock::GuestMemory>> memory =
      mock::GuestMemory::Create(/*path=*/"", options.memory_bytes, layout);
  if (!memory.ok()) return memory.status();
  const mock::MemoryLayout& made = (*memory)->layout();
  absl::StatusOr<uint8_t*> first = (*memory)->Translate(made.first_data_pfn);
  if (!first.ok()) return first.status();
  FakeHypervisorOptions hv_options = options.hypervisor;
  hv_options.vp_count = options.vp_count;
  hv_options.external_memory =
      FakeGuestMemory::External{*first, made.first_data_pfn,
                                static_cast<size_t>((*memory)->page_count() - made.first_data_pfn)};
  auto hv = std::make_unique<FakeHypervisor>(hv_options);
  return std::unique_ptr<MockHostBridge>(
      new MockHostBridge(std::move(open), std::move(options), std::move(*memory), std::move(hv)));
}

absl::StatusOr<std::unique_ptr<MockHostBridge>> MockHostBridge::Connect(
    std::shared_ptr<grpc::ChannelInterface> channel, MockHostBridgeOptions options) {
  if (channel == nullptr) return absl::InvalidArgumentError("MockHostBridge needs a channel");
  return Create(
      [channel = std::move(channel)](grpc::ClientContext* context) {
        return mock::OpenGuestLinkStream(channel.get(), context);
      },
      std::move(options));
}

MockHostBridge::~MockHostBridge() { Stop(); }

void MockHostBridge::Log(absl::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "mock_host_bridge: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

// ---------------------------------------------------------------------------------------------
// Start / Stop
// ---------------------------------------------------------------------------------------------

absl::Status MockHostBridge::Start() {
  {
    MutexLock lock(&mu_);
    if (started_) return absl::FailedPreconditionError("the bridge was already started");
    started_ = true;
  }
  stream_ = open_(&context_);
  if (stream_ == nullptr) return absl::UnavailableError("GuestLink.Connect gave no stream");
  const v1::GuestToHost first = mock::AttachMessage(*memory_, options_.guest_name);
  {
    MutexLock lock(&write_mu_);
    writes_open_ = true;
  }
  reader_ = std::thread([this] { ReadLoop(); });
  {
    MutexLock lock(&write_mu_);
    if (!stream_->Write(first)) writes_open_ = false;  // the reader learns why from Finish
  }

  const absl::Time deadline = absl::Now() + options_.attach_timeout;
  bool attached;
  absl::Status why;
  {
    MutexLock lock(&mu_);
    cv_.AwaitWithDeadline(&mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return attached_ || ended_;
    });
    attached = attached_;
    if (!attached) {
      stopping_ = true;
      why = ended_ ? end_status_
                   : absl::DeadlineExceededError(absl::StrCat(
                         "the mock host did not answer the attach of ", options_.guest_name,
                         " within ", absl::FormatDuration(options_.attach_timeout)));
    }
  }
  if (!attached) {
    context_.TryCancel();
    if (reader_.joinable()) reader_.join();
    if (why.code() == absl::StatusCode::kDeadlineExceeded) return why;
    return absl::UnavailableError(absl::StrCat("attach of ", options_.guest_name,
                                               " to the mock host failed: ", why.message()));
  }
  // The host's ports: InitiateContact and every later message (docs/hyperv.md §11).
  auto on_post = [this](const PostedMessage& posted) { OnPost(posted); };
  hv_->AddMessageConnection(kVmbusMessageConnectionId, on_post);
  if (options_.connection_v5) hv_->AddMessageConnection(kVmbusMessageConnectionIdV5, on_post);
  for (uint32_t vp = 0; vp < options_.vp_count; ++vp) {
    doorbells_.emplace_back([this, vp] { DoorbellLoop(vp); });
  }
  monitor_ = std::thread([this] { MonitorLoop(); });
  return absl::OkStatus();
}

void MockHostBridge::CloseConnections() {
  hv_->RemoveMessageConnection(kVmbusMessageConnectionId);
  hv_->RemoveMessageConnection(kVmbusMessageConnectionIdV5);
  ForgetChannels();
}

void MockHostBridge::ForgetRelid(uint32_t relid) {
  std::vector<uint32_t> connections;
  {
    MutexLock lock(&mu_);
    for (auto it = connection_relid_.begin(); it != connection_relid_.end();) {
      if (it->second == relid) {
        connections.push_back(it->first);
        it = connection_relid_.erase(it);
      } else {
        ++it;
      }
    }
    for (uint32_t& r : monitor_relid_) {
      if (r == relid) r = 0;
    }
  }
  for (uint32_t id : connections) hv_->RemoveEventConnection(id);
}

void MockHostBridge::ForgetChannels() {
  std::vector<uint32_t> connections;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, relid] : connection_relid_) connections.push_back(id);
    connection_relid_.clear();
    monitor_relid_.fill(0);
  }
  for (uint32_t id : connections) hv_->RemoveEventConnection(id);
}

size_t MockHostBridge::MonitoredLocked() const {
  size_t n = 0;
  for (uint32_t relid : monitor_relid_) n += relid != 0 ? 1 : 0;
  return n;
}

void MockHostBridge::Stop() {
  MutexLock serial(&stop_mu_);
  bool started;
  bool link_up;
  {
    MutexLock lock(&mu_);
    started = started_;
    link_up = link_up_;
    stopping_ = true;
    cv_.SignalAll();
  }
  if (!started) return;
  // No new guest post or signal reaches the bridge from here on.
  CloseConnections();
  stop_doorbells_.store(true, std::memory_order_relaxed);
  for (uint32_t vp = 0; vp < doorbells_.size(); ++vp) {
    memory_->Ring(mock::Doorbell::kGuest, vp);  // wakes that doorbell thread now
    doorbells_[vp].join();
  }
  doorbells_.clear();
  if (monitor_.joinable()) monitor_.join();
  bool half_closed = false;
  {
    MutexLock lock(&write_mu_);
    if (writes_open_ && link_up && stream_ != nullptr) {
      // Say goodbye: the host detaches the guest and ends the call.
      half_closed = stream_->WritesDone();
    }
    writes_open_ = false;
  }
  if (half_closed) {
    MutexLock lock(&mu_);
    cv_.AwaitWithDeadline(&mu_, absl::Now() + absl::Seconds(1),
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_; });
  }
  if (stream_ != nullptr) context_.TryCancel();
  if (reader_.joinable()) reader_.join();
  ForgetChannels();  // any the reader opened while Stop began
}

bool MockHostBridge::link_up() const {
  MutexLock lock(&mu_);
  return link_up_;
}

std::string MockHostBridge::guest_id() const {
  MutexLock lock(&mu_);
  return guest_id_;
}

MockHostBridgeStats MockHostBridge::stats() const {
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  MockHostBridgeStats s;
  s.posts_forwarded = get(posts_forwarded_);
  s.posts_dropped = get(posts_dropped_);
  s.misrouted_posts = get(misrouted_posts_);
  s.messages_queued = get(messages_queued_);
  s.messages_dropped = get(messages_dropped_);
  s.event_signals = get(event_signals_);
  s.monitor_signals = get(monitor_signals_);
  s.host_events = get(host_events_);
  s.events_dropped = get(events_dropped_);
  s.protocol_errors = get(protocol_errors_);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Guest → host
// ---------------------------------------------------------------------------------------------

void MockHostBridge::OnPost(const PostedMessage& posted) {
  MutexLock lock(&post_mu_);
  if (posted.message_type != kVmbusMessageType) {
    posts_dropped_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat("dropping a post of SynIC message type ", posted.message_type,
                     " on connection ", posted.connection_id, ": VMBus uses type ",
                     kVmbusMessageType));
    return;
  }
  absl::StatusOr<std::optional<v1::ControlMessage>> decoded = decoder_.Decode(posted.payload);
  if (!decoded.ok()) {
    posts_dropped_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat("dropping a post the codec refuses: ", decoded.status().message()));
    return;
  }
  if (!decoded->has_value()) return;  // a GPADL part; the rest is due
  v1::ControlMessage message = std::move(**decoded);
  FromGuest(posted.connection_id, &message);
  Write(message);
}

void MockHostBridge::FromGuest(uint32_t connection_id, v1::ControlMessage* message) {
  const bool contact = message->has_initiate_contact();
  const uint32_t version = message->initiate_contact().version_requested();
  uint32_t expected;
  {
    MutexLock lock(&mu_);
    expected = contact ? InitiateContactConnectionId(version) : message_connection_;
    if (contact) {
      const v1::InitiateContact& c = message->initiate_contact();
      contact_version_ = version;
      contact_pending_ = true;
      message_vp_ = c.target_vcpu();
      message_sint_ =
          protocol::UsesReturnedConnectionId(version) ? c.message_sint() : kVmbusMessageSint;
      guest_monitor_page2_ = c.monitor_page2();
      guest_interrupt_page_ = protocol::UsesReturnedConnectionId(version) ? 0 : c.interrupt_page();
      message_connection_ = kVmbusMessageConnectionId;  // until the host answers
    }
    if (message->has_unload()) unload_pending_ = true;
  }
  if (connection_id != expected) {
    misrouted_posts_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat(KindOf(*message), " posted on connection ", connection_id,
                     "; docs/hyperv.md §11 names connection ", expected));
  }
  // Closed before the host hears of the release: a new offer of the relid, which may follow at
  // once, opens its own connection.
  if (message->has_relid_released()) ForgetRelid(message->relid_released().child_relid());
  if (contact) {
    // The mock host reaches the guest through its own pages (mock/guest_memory.h): the
    // guest's are relayed by the bridge.
    v1::InitiateContact* c = message->mutable_initiate_contact();
    const mock::MemoryLayout& layout = memory_->layout();
    if (!protocol::UsesReturnedConnectionId(version)) {
      c->set_interrupt_page(GpaOf(layout.host_event_page_pfn));
    }
    c->set_monitor_page1(GpaOf(layout.monitor_page1_pfn));
    c->set_monitor_page2(GpaOf(layout.monitor_page2_pfn));
  }
  if (message->has_unload()) decoder_.gpadls().Clear();
}

void MockHostBridge::Write(const v1::ControlMessage& message) {
  v1::GuestToHost out;
  *out.mutable_control() = message;
  MutexLock lock(&write_mu_);
  if (!writes_open_) {
    posts_dropped_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat("dropping ", KindOf(message), ": the stream to the mock host is closed"));
    return;
  }
  if (!stream_->Write(out)) {
    // The call is over: the reader sees its end and closes the connections.
    writes_open_ = false;
    posts_dropped_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat("dropping ", KindOf(message), ": writing to the mock host failed"));
    return;
  }
  posts_forwarded_.fetch_add(1, std::memory_order_relaxed);
}

void MockHostBridge::OnSignal(uint32_t relid) {
  event_signals_.fetch_add(1, std::memory_order_relaxed);
  Relay(relid, std::nullopt);
}

void MockHostBridge::RelayInterruptPage() {
  uint64_t page;
  {
    MutexLock lock(&mu_);
    page = guest_interrupt_page_;
  }
  if (page == 0) return;
  absl::StatusOr<std::vector<uint32_t>> bits = hv_->TakeInterruptPageBits(page);
  if (!bits.ok()) return;  // not guest memory: the guest signals nothing through it
  for (uint32_t relid : *bits) {
    if (relid == 0 || relid >= protocol::kRelidCount) continue;
    absl::StatusOr<mock::GuestMemory::Signalled> s = memory_->SignalChannel(relid, std::nullopt);
    if (!s.ok()) Log(absl::StrCat("relaying relid ", relid, ": ", s.status().message()));
  }
}

void MockHostBridge::Relay(uint32_t relid, std::optional<uint32_t> monitor_id) {
  RelayInterruptPage();
  // SignalChannel: the relid's bit first (release), then the trigger or the doorbell, as a
  // guest on the mock platform signals (mock/guest_memory.h).
  absl::StatusOr<mock::GuestMemory::Signalled> s = memory_->SignalChannel(relid, monitor_id);
  if (!s.ok()) Log(absl::StrCat("relaying a signal of relid ", relid, ": ", s.status().message()));
}

void MockHostBridge::MonitorLoop() {
  pthread_setname_np(pthread_self(), "vbus-hvmonitor");
  bool reported = false;
  for (;;) {
    uint64_t page;
    {
      MutexLock lock(&mu_);
      cv_.AwaitWithDeadline(
          &mu_, absl::Now() + options_.doorbell_slice, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return stopping_ || (guest_monitor_page2_ != 0 && MonitoredLocked() > 0);
          });
      if (stopping_) return;
      if (guest_monitor_page2_ == 0 || MonitoredLocked() == 0) continue;
      page = guest_monitor_page2_;
    }
    absl::StatusOr<std::vector<uint32_t>> ids = hv_->TakeMonitorTriggers(page);
    if (!ids.ok() && !reported) {
      reported = true;
      Log(absl::StrCat("the guest's monitor page 2 is unusable: ", ids.status().message()));
    }
    for (uint32_t id : ids.ok() ? *ids : std::vector<uint32_t>()) {
      uint32_t relid;
      {
        MutexLock lock(&mu_);
        relid = monitor_relid_[id];
      }
      if (relid == 0) continue;  // no channel has that monitor id (any more)
      monitor_signals_.fetch_add(1, std::memory_order_relaxed);
      Relay(relid, id);
    }
    // The monitor latency: the next scan, unless Stop comes first.
    MutexLock lock(&mu_);
    cv_.AwaitWithDeadline(&mu_, absl::Now() + options_.monitor_latency,
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; });
  }
}

// ---------------------------------------------------------------------------------------------
// Host → guest
// ---------------------------------------------------------------------------------------------

void MockHostBridge::ReadLoop() {
  pthread_setname_np(pthread_self(), "vbus-hvbridge");
  grpc::ByteBuffer bytes;
  v1::HostToGuest message;
  while (stream_->Read(&bytes)) {
    const absl::Status parsed = mock::ParseHostMessage(&bytes, &message);
    bytes.Clear();
    if (parsed.ok()) {
      HandleHostMessage(&message);
    } else {
      messages_dropped_.fetch_add(1, std::memory_order_relaxed);
      Log(absl::StrCat("dropping a host message that does not parse: ", parsed.message()));
    }
    message.Clear();
  }
  grpc::Status finished;
  {
    MutexLock lock(&write_mu_);
    writes_open_ = false;
    finished = stream_->Finish();
  }
  absl::Status status =
      finished.ok()
          ? absl::UnavailableError("GuestLink stream: the host ended the stream")
          : absl::Status(static_cast<absl::StatusCode>(finished.error_code()),
                         absl::StrCat("GuestLink stream: ", HostText(finished.error_message())));
  bool lost;
  {
    MutexLock lock(&mu_);
    ended_ = true;
    end_status_ = status;
    lost = attached_ && !stopping_;
    cv_.SignalAll();
  }
  // The connections close before link_up() says the link is down, so that whoever sees it down
  // finds them closed.
  if (lost) OnLinkLost(status);
  MutexLock lock(&mu_);
  link_up_ = false;
}

void MockHostBridge::OnLinkLost(const absl::Status& why) {
  CloseConnections();
  Log(absl::StrCat("link to the mock host lost (", why.ToString(),
                   "); its connections are closed: posts and signals now fail with "
                   "HV_STATUS_INVALID_CONNECTION_ID"));
}

void MockHostBridge::HandleHostMessage(v1::HostToGuest* message) {
  switch (message->kind_case()) {
    case v1::HostToGuest::kAttached: {
      MutexLock lock(&mu_);
      if (attached_) {
        Log("ignoring a second `attached` from the host");
        return;
      }
      attached_ = true;
      link_up_ = true;
      guest_id_ = message->attached().guest_id();
      cv_.SignalAll();
      return;
    }
    case v1::HostToGuest::kControl:
      ToGuest(message->control());
      return;
    case v1::HostToGuest::kBatch: {
      const int count = message->batch().messages_size();
      if (count == 0 || count > v1::CONTROL_BATCH_MAX_MESSAGES) {
        messages_dropped_.fetch_add(1, std::memory_order_relaxed);
        Log(absl::StrCat("ignoring a control batch of ", count, " messages from the host"));
        return;
      }
      for (const v1::ControlMessage& m : message->batch().messages()) ToGuest(m);
      return;
    }
    case v1::HostToGuest::kSignal:
      RaiseEvent(message->signal().target_vp(), message->signal().child_relid());
      return;
    case v1::HostToGuest::kError:
      protocol_errors_.fetch_add(1, std::memory_order_relaxed);
      Log(absl::StrFormat("host reported a protocol error (code %d): %s", message->error().code(),
                          HostText(message->error().message())));
      return;
    case v1::HostToGuest::KIND_NOT_SET:
      Log("ignoring an empty message from the host");
      return;
  }
}

void MockHostBridge::ToGuest(const v1::ControlMessage& message) {
  FromHost(message);  // an offer's event connection opens before the guest can see the offer
  absl::StatusOr<std::vector<WireMessage>> parts = EncodeMessage(message);
  if (!parts.ok()) {
    messages_dropped_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat("dropping a host ", KindOf(message),
                     " the codec cannot encode: ", parts.status().message()));
    return;
  }
  uint32_t vp;
  uint32_t sint;
  {
    MutexLock lock(&mu_);
    vp = message_vp_;
    sint = message_sint_;
  }
  for (const WireMessage& part : *parts) {
    absl::Status s = hv_->QueueMessage(vp, sint, kVmbusMessageType, part);
    if (!s.ok()) {
      messages_dropped_.fetch_add(1, std::memory_order_relaxed);
      Log(absl::StrCat("dropping a host ", KindOf(message), ": ", s.message()));
      return;
    }
  }
  messages_queued_.fetch_add(1, std::memory_order_relaxed);
}

void MockHostBridge::FromHost(const v1::ControlMessage& message) {
  switch (message.message_case()) {
    case v1::ControlMessage::kOffer: {
      const v1::Offer& o = message.offer();
      const uint32_t relid = o.child_relid();
      if (relid == 0 || relid >= protocol::kRelidCount) return;  // refused by the encoder
      if (o.monitor_allocated() && o.monitor_id() >= protocol::kMonitorIdCount) return;  // too
      {
        MutexLock lock(&mu_);
        connection_relid_[o.connection_id()] = relid;
        if (o.monitor_allocated()) {
          monitor_relid_[o.monitor_id()] = relid;
          cv_.SignalAll();  // the monitor scanner starts
        }
      }
      hv_->AddEventConnection(o.connection_id(), 1,
                              [this, relid](const SignalledEvent&) { OnSignal(relid); });
      return;
    }
    case v1::ControlMessage::kVersionResponse: {
      const v1::VersionResponse& r = message.version_response();
      MutexLock lock(&mu_);
      if (!contact_pending_) return;  // not an answer to the guest
      contact_pending_ = false;
      if (!r.version_supported()) return;
      message_connection_ =
          protocol::UsesReturnedConnectionId(contact_version_) && r.message_connection_id() != 0
              ? r.message_connection_id()
              : kVmbusMessageConnectionId;
      return;
    }
    case v1::ControlMessage::kUnloadResponse: {
      {
        MutexLock lock(&mu_);
        if (!unload_pending_) return;  // not an answer to the guest
        unload_pending_ = false;
        message_connection_ = kVmbusMessageConnectionId;
      }
      ForgetChannels();
      return;
    }
    default:
      return;
  }
}

void MockHostBridge::RaiseEvent(uint32_t vp, uint32_t relid) {
  if (vp >= options_.vp_count || relid == 0 || relid >= protocol::kRelidCount) {
    events_dropped_.fetch_add(1, std::memory_order_relaxed);
    Log(absl::StrCat("ignoring a host event for relid ", relid, " on VP ", vp));
    return;
  }
  absl::StatusOr<bool> raised = hv_->SetEventFlag(vp, kVmbusMessageSint, relid);
  if (!raised.ok()) {
    // The guest's SynIC is off (before its backend started or after it stopped).
    events_dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  host_events_.fetch_add(1, std::memory_order_relaxed);
}

void MockHostBridge::DoorbellLoop(uint32_t vp) {
  pthread_setname_np(pthread_self(), absl::StrCat("vbus-hvbell", vp).substr(0, 15).c_str());
  const absl::Span<uint8_t> flags = memory_->GuestEventFlags(vp);
  auto* words = reinterpret_cast<uint64_t*>(flags.data());
  const size_t word_count = flags.size() / sizeof(uint64_t);
  // The receiver's loop of mock/guest_memory.h: read the doorbell, scan, wait for a change.
  uint32_t seen = memory_->DoorbellValue(mock::Doorbell::kGuest, vp);
  while (!stop_doorbells_.load(std::memory_order_relaxed)) {
    for (size_t w = 0; w < word_count; ++w) {
      std::atomic_ref<uint64_t> word(words[w]);
      if (word.load(std::memory_order_relaxed) == 0) continue;  // a later bit: the next scan
      // [MB-A1] acquire test-and-clear: pairs with the mock host's release OR setting the bit
      // ([EP-S1]), so the ring writes it announced happen before the event flag that passes
      // it on to the guest ([HV-H5], a release).
      uint64_t bits = word.exchange(0, std::memory_order_acquire);
      if (w == 0) bits &= ~uint64_t{1};  // bit 0 is never a channel
      while (bits != 0) {
        const uint32_t bit = static_cast<uint32_t>(std::countr_zero(bits));
        bits &= bits - 1;
        RaiseEvent(vp, static_cast<uint32_t>(w * 64 + bit));
      }
    }
    const absl::Status rang =
        memory_->Wait(mock::Doorbell::kGuest, seen, absl::Now() + options_.doorbell_slice, vp,
                      options_.doorbell_poll);
    if (stop_doorbells_.load(std::memory_order_relaxed)) break;
    if (rang.ok()) seen = memory_->DoorbellValue(mock::Doorbell::kGuest, vp);
  }
}

}  // namespace vbus::hyperv::testing
