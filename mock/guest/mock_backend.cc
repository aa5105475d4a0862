#include "mock/guest/mock_backend.h"

#include <pthread.h>

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/host_text.h"

namespace vbus::mock {
namespace {

// The status a finished call reports; the host's message is host text.
absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::UnavailableError(absl::StrCat(what, ": the host ended the stream"));
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", HostText(s.error_message())));
}

}  // namespace

MockBackend::MockBackend(GuestLinkOpener open, MockBackendOptions options,
                         std::unique_ptr<GuestMemory> memory, std::unique_ptr<PagePool> pool,
                         std::vector<EventPage> guest_events)
    : open_(std::move(open)),
      options_(std::move(options)),
      memory_(std::move(memory)),
      pool_(std::move(pool)),
      guest_events_(std::move(guest_events)) {}

absl::StatusOr<std::unique_ptr<MockBackend>> MockBackend::Create(GuestLinkOpener open,
                                                                 MockBackendOptions options) {
  if (!open) return absl::InvalidArgumentError("MockBackend needs a GuestLink opener");
  MemoryLayout wanted;
  wanted.vp_count = options.vp_count;
  absl::StatusOr<std::unique_ptr<GuestMemory>> memory =
      GuestMemory::Create(options.memory_path, options.memory_bytes, wanted);
  if (!memory.ok()) return memory.status();
  const MemoryLayout& layout = (*memory)->layout();
  absl::StatusOr<uint8_t*> first = (*memory)->Translate(layout.first_data_pfn);
  if (!first.ok()) return first.status();
  auto pool = std::make_unique<PagePool>(*first, layout.first_data_pfn,
                                         (*memory)->page_count() - layout.first_data_pfn);
  std::vector<EventPage> guest_events;
  for (uint32_t vp = 0; vp < layout.vp_count; ++vp) {
    absl::StatusOr<EventPage> page = EventPage::Attach((*memory)->GuestEventFlags(vp));
    if (!page.ok()) return page.status();
    guest_events.push_back(*page);
  }
  return std::unique_ptr<MockBackend>(new MockBackend(std::move(open), std::move(options),
                                                      std::move(*memory), std::move(pool),
                                                      std::move(guest_events)));
}

absl::StatusOr<std::unique_ptr<MockBackend>> MockBackend::Connect(
    std::shared_ptr<grpc::ChannelInterface> channel, MockBackendOptions options) {
  if (channel == nullptr) return absl::InvalidArgumentError("MockBackend needs a channel");
  return Create(
      [channel = std::move(channel)](grpc::ClientContext* context) {
        return OpenGuestLinkStream(channel.get(), context);
      },
      std::move(options));
}

absl::StatusOr<std::unique_ptr<MockBackend>> MockBackend::Dial(const std::string& target,
                                                               MockBackendOptions options) {
  return Connect(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()),
                 std::move(options));
}

MockBackend::~MockBackend() { Stop(); }

void MockBackend::Log(absl::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "mock_backend: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

// ---------------------------------------------------------------------------------------------
// Start / Stop
// ---------------------------------------------------------------------------------------------

absl::Status MockBackend::Start(BackendListener* listener) {
  if (listener == nullptr) return absl::InvalidArgumentError("Start needs a listener");
  {
    MutexLock lock(&mu_);
    if (started_) return absl::FailedPreconditionError("the mock backend was already started");
    started_ = true;
    listener_ = listener;
  }
  stream_ = open_(&context_);
  if (stream_ == nullptr) return absl::UnavailableError("GuestLink.Connect gave no stream");

  const v1::GuestToHost first = AttachMessage(*memory_, options_.guest_name);
  reader_ = std::thread([this] { ReadLoop(); });
  {
    MutexLock lock(&write_mu_);
    stream_->Write(first);  // a failure shows as the end of the stream (below)
  }

  const absl::Time deadline = absl::Now() + options_.attach_timeout;
  bool attached;
  bool timed_out;
  {
    MutexLock lock(&mu_);
    // A failed Write means the stream is over: the reader then learns why from Finish (e.g.
    // the host refused the attach), so wait for that too.
    cv_.AwaitWithDeadline(&mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return attached_ || ended_;
    });
    attached = attached_;
    timed_out = !attached_ && !ended_;
    if (!attached) stopping_ = true;  // the reader must not call the listener any more
  }
  if (attached) {
    bool batches;
    {
      MutexLock lock(&mu_);
      batches = host_accepts_batches_;
    }
    writer_ = std::thread([this, batches] { WriteLoop(batches); });
    for (uint32_t vp = 0; vp < guest_events_.size(); ++vp) {
      doorbells_.emplace_back([this, vp] { DoorbellLoop(vp); });
    }
    return absl::OkStatus();
  }
  // Not attached: end the stream, let the reader finish, and report why.
  context_.TryCancel();
  if (reader_.joinable()) reader_.join();
  if (timed_out) {
    return absl::DeadlineExceededError(
        absl::StrFormat("the mock host did not answer the attach of %s within %s",
                        options_.guest_name, absl::FormatDuration(options_.attach_timeout)));
  }
  MutexLock lock(&mu_);
  absl::Status why = end_status_;
  if (why.ok()) why = absl::UnavailableError("the stream ended before `attached`");
  return absl::UnavailableError(
      absl::StrCat("attach of ", options_.guest_name, " to the mock host failed: ", why.message()));
}

void MockBackend::Stop() {
  MutexLock serial(&stop_mu_);
  bool started;
  {
    MutexLock lock(&mu_);
    started = started_;
    stopping_ = true;
    queue_.clear();
  }
  stop_doorbell_.store(true, std::memory_order_relaxed);
  for (uint32_t vp = 0; vp < doorbells_.size(); ++vp) {
    memory_->Ring(Doorbell::kGuest, vp);  // wakes the doorbell thread now
    doorbells_[vp].join();
  }
  doorbells_.clear();
  bool drained = false;
  if (writer_.joinable()) {
    // Let the writer send what was posted (bounded: a host that stopped reading would block
    // it; cancelling the call below then releases it).
    outbox_.Close();
    MutexLock lock(&mu_);
    drained =
        cv_.AwaitWithDeadline(&mu_, absl::Now() + absl::Seconds(1),
                              [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return writer_done_; });
  }
  if (drained && stream_ != nullptr && link_up_.load(std::memory_order_relaxed)) {
    // Say goodbye: half-close the stream so the host detaches the guest and ends the call
    // (a cancelled call may linger on the host until its own shutdown). Bounded wait.
    {
      MutexLock lock(&write_mu_);
      stream_->WritesDone();
    }
    MutexLock lock(&mu_);
    cv_.AwaitWithDeadline(&mu_, absl::Now() + absl::Seconds(1),
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_; });
  }
  if (started && stream_ != nullptr) context_.TryCancel();
  if (writer_.joinable()) writer_.join();
  if (reader_.joinable()) reader_.join();
  link_up_.store(false, std::memory_order_relaxed);
  // A ResumeDelivery on another thread may still be inside OnHostMessage: wait for it.
  MutexLock lock(&mu_);
  const std::thread::id self = std::this_thread::get_id();
  cv_.AwaitWithDeadline(&mu_, absl::InfiniteFuture(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !delivering_.has_value() || *delivering_ == self;
  });
}

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

bool MockBackend::IsAttached() {
  MutexLock lock(&mu_);
  return attached_;
}

void MockBackend::ReadLoop() {
  pthread_setname_np(pthread_self(), "vbus-guestlink");  // for debuggers and profilers
  grpc::ByteBuffer bytes;
  v1::HostToGuest message;
  while (stream_->Read(&bytes)) {
    v1::HostToGuest::KindCase kind = v1::HostToGuest::KIND_NOT_SET;
    const absl::Status parsed = ParseHostMessage(&bytes, &message, &kind);
    bytes.Clear();
    if (parsed.ok()) {
      HandleHostMessage(&message);
    } else if (!HandleUnparsable(parsed, kind)) {
      break;  // the call is cancelled: Finish returns at once
    }
    message.Clear();
  }
  grpc::Status finished;
  {
    MutexLock lock(&write_mu_);
    finished = stream_->Finish();
  }
  link_up_.store(false, std::memory_order_relaxed);
  BackendListener* listener = nullptr;
  absl::Status status = FromGrpc(finished, "GuestLink stream");
  {
    MutexLock lock(&mu_);
    if (!link_fault_.ok()) status = link_fault_;
    ended_ = true;
    end_status_ = status;
    cv_.SignalAll();
    if (stopping_ || !attached_) return;
    // Messages held back by a pause are lost with the link. Wait for a delivery running on
    // another thread (ResumeDelivery) so OnHostLost comes after the last OnHostMessage.
    queue_.clear();
    cv_.AwaitWithDeadline(&mu_, absl::InfiniteFuture(),
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !delivering_; });
    listener = listener_;
    delivering_ = std::this_thread::get_id();
  }
  Log(absl::StrCat("link to the mock host lost: ", status.ToString()));
  listener->OnHostLost(status);
  MutexLock lock(&mu_);
  delivering_.reset();
  cv_.SignalAll();
}

void MockBackend::HandleHostMessage(v1::HostToGuest* message) {
  switch (message->kind_case()) {
    case v1::HostToGuest::kAttached: {
      MutexLock lock(&mu_);
      if (attached_) {
        Log("ignoring a second `attached` from the host");
        return;
      }
      attached_ = true;
      guest_id_ = message->attached().guest_id();
      host_accepts_batches_ = message->attached().accepts_batches();
      link_up_.store(true, std::memory_order_relaxed);
      cv_.SignalAll();
      return;
    }
    case v1::HostToGuest::kControl:
      if (!IsAttached()) {
        Log("ignoring a control message before `attached`");
        return;
      }
      Deliver(std::move(*message->mutable_control()));
      return;
    case v1::HostToGuest::kBatch: {
      if (!IsAttached()) {
        Log("ignoring a control batch before `attached`");
        return;
      }
      const int count = message->batch().messages_size();
      if (count == 0 || count > v1::CONTROL_BATCH_MAX_MESSAGES) {
        // Malformed: refused whole (the guest has no way to answer a ProtocolError); the
        // waits for what it held end at their deadlines.
        batches_refused_.fetch_add(1, std::memory_order_relaxed);
        Log(count == 0 ? std::string("ignoring an empty control batch from the host")
                       : absl::StrCat("ignoring a control batch of ", count,
                                      " messages from the host (the limit is ",
                                      v1::CONTROL_BATCH_MAX_MESSAGES, ")"));
        return;
      }
      batches_received_.fetch_add(1, std::memory_order_relaxed);
      DeliverBatch(message->mutable_batch());
      return;
    }
    case v1::HostToGuest::kSignal: {
      // The slow path of a host → guest event: same effect as the doorbell.
      stream_signals_.fetch_add(1, std::memory_order_relaxed);
      const uint32_t vp = message->signal().target_vp();
      if (vp >= guest_events_.size()) {
        Log(absl::StrCat("ignoring a host signal for relid ", message->signal().child_relid(),
                         " on VP ", vp, ": this guest takes events on ", guest_events_.size(),
                         " VPs"));
        return;
      }
      absl::StatusOr<bool> set = guest_events_[vp].Set(message->signal().child_relid());
      if (!set.ok()) {
        Log(absl::StrCat("ignoring a host signal: ", set.status().message()));
        return;
      }
      BackendListener* listener = nullptr;
      {
        MutexLock lock(&mu_);
        if (!stopping_ && attached_) listener = listener_;
      }
      if (listener != nullptr) listener->OnEventsPending(vp);
      return;
    }
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

bool MockBackend::HandleUnparsable(const absl::Status& why, v1::HostToGuest::KindCase kind) {
  messages_unparsable_.fetch_add(1, std::memory_order_relaxed);
  absl::Status fault;
  {
    MutexLock lock(&mu_);
    // Before `attached`, a message that may be the `attached` ends the attach now: waiting
    // for another one would only end at attach_timeout, with a less useful error.
    if (!attached_ &&
        (kind == v1::HostToGuest::kAttached || kind == v1::HostToGuest::KIND_NOT_SET)) {
      link_fault_ = absl::UnavailableError(absl::StrCat(
          kind == v1::HostToGuest::kAttached
              ? "the host's `attached` does not parse: "
              : "a host message before `attached` does not parse (it may be the `attached`): ",
          why.message()));
      fault = link_fault_;
    }
  }
  if (fault.ok()) {
    Log(absl::StrCat("dropping a host message that does not parse: ", why.message()));
    return true;
  }
  Log(fault.message());
  context_.TryCancel();
  return false;
}

void MockBackend::WriterDone() {
  MutexLock lock(&mu_);
  writer_done_ = true;
  cv_.SignalAll();
}

void MockBackend::WriteLoop(bool batches) {
  pthread_setname_np(pthread_self(), "vbus-guestwrite");
  std::deque<v1::ControlMessage> pending;
  v1::GuestToHost message;
  for (;;) {
    if (!outbox_.TakeAll(absl::InfiniteFuture(), &pending)) {
      WriterDone();  // stopping, and everything posted is written
      return;
    }
    while (!pending.empty()) {
      // Everything queued goes in as few stream messages as the limits allow: one batch (if
      // the host accepts batches) of up to CONTROL_BATCH_MAX_MESSAGES messages and about
      // kBatchBytes, or a lone `control`. Swap moves each message in without copying it.
      message.Clear();
      uint64_t count = 0;
      if (batches && pending.size() > 1) {
        v1::ControlBatch* batch = message.mutable_batch();
        size_t bytes = 0;
        while (!pending.empty() && batch->messages_size() < v1::CONTROL_BATCH_MAX_MESSAGES &&
               bytes < kBatchBytes) {
          bytes += pending.front().ByteSizeLong();
          batch->add_messages()->Swap(&pending.front());
          pending.pop_front();
        }
        count = static_cast<uint64_t>(batch->messages_size());
      } else {
        message.mutable_control()->Swap(&pending.front());
        pending.pop_front();
        count = 1;
      }
      grpc::WriteOptions options;
      if (!pending.empty()) options.set_buffer_hint();  // more follow: no flush yet
      bool written;
      {
        MutexLock lock(&write_mu_);
        written = stream_->Write(message, options);
      }
      if (!written) {
        // The stream is broken: the reader sees its end and reports the lost link; later
        // posts fail with Unavailable.
        link_up_.store(false, std::memory_order_relaxed);
        outbox_.Close();
        WriterDone();
        return;
      }
      messages_posted_.fetch_add(count, std::memory_order_relaxed);
      if (message.has_batch()) batches_posted_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void MockBackend::DoorbellLoop(uint32_t vp) {
  pthread_setname_np(pthread_self(), absl::StrCat("vbus-doorbell", vp).substr(0, 15).c_str());
  BackendListener* listener;
  {
    MutexLock lock(&mu_);
    listener = listener_;
  }
  // The receiver's loop of mock/guest_memory.h: read the doorbell, scan, wait for a change.
  // Reading `seen` before the scan means a ring during the scan ends the wait at once.
  uint32_t seen = memory_->DoorbellValue(Doorbell::kGuest, vp);
  listener->OnEventsPending(vp);
  while (!stop_doorbell_.load(std::memory_order_relaxed)) {
    const absl::Status waited = memory_->Wait(
        Doorbell::kGuest, seen, absl::Now() + options_.doorbell_slice, vp, options_.doorbell_poll);
    if (stop_doorbell_.load(std::memory_order_relaxed)) break;
    if (!waited.ok()) continue;  // the slice ended with no ring: look for Stop, wait again
    seen = memory_->DoorbellValue(Doorbell::kGuest, vp);
    doorbell_wakeups_.fetch_add(1, std::memory_order_relaxed);
    listener->OnEventsPending(vp);
  }
}

// ---------------------------------------------------------------------------------------------
// Control messages
// ---------------------------------------------------------------------------------------------

void MockBackend::Deliver(v1::ControlMessage message) {
  MutexLock lock(&mu_);
  if (stopping_) return;
  queue_.push_back(std::move(message));
  DrainLocked();
}

void MockBackend::DeliverBatch(v1::ControlBatch* batch) {
  MutexLock lock(&mu_);
  if (stopping_) return;
  for (v1::ControlMessage& m : *batch->mutable_messages()) queue_.push_back(std::move(m));
  DrainLocked();
}

void MockBackend::DrainLocked() {
  while (!paused_ && !delivering_.has_value() && !queue_.empty() && !stopping_) {
    v1::ControlMessage next = std::move(queue_.front());
    queue_.pop_front();
    delivering_ = std::this_thread::get_id();
    BackendListener* listener = listener_;
    mu_.Unlock();
    listener->OnHostMessage(next);
    messages_delivered_.fetch_add(1, std::memory_order_relaxed);
    mu_.Lock();
    delivering_.reset();
    cv_.SignalAll();
  }
}

void MockBackend::PauseDelivery() {
  MutexLock lock(&mu_);
  paused_ = true;
  const std::thread::id self = std::this_thread::get_id();
  // From inside OnHostMessage the pause takes effect when that call returns (DrainLocked
  // re-checks paused_); from another thread, wait for the call in progress.
  cv_.AwaitWithDeadline(&mu_, absl::InfiniteFuture(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !delivering_.has_value() || *delivering_ == self;
  });
}

void MockBackend::ResumeDelivery() {
  MutexLock lock(&mu_);
  paused_ = false;
  DrainLocked();
}

absl::Status MockBackend::PostMessage(const v1::ControlMessage& message) {
  if (!link_up_.load(std::memory_order_relaxed)) {
    MutexLock lock(&mu_);
    if (!started_ || !attached_) {
      return absl::FailedPreconditionError("the mock backend is not attached (call Start)");
    }
    return absl::UnavailableError("the link to the mock host is gone");
  }
  if (!outbox_.Post(message)) {
    return absl::UnavailableError("the GuestLink stream is closed");
  }
  return absl::OkStatus();
}

void MockBackend::SetConnection(const NegotiatedConnection& connection) {
  MutexLock lock(&mu_);
  connection_ = connection;
}

std::optional<NegotiatedConnection> MockBackend::connection() const {
  MutexLock lock(&mu_);
  return connection_;
}

// ---------------------------------------------------------------------------------------------
// Signals, events, memory
// ---------------------------------------------------------------------------------------------

absl::Status MockBackend::SignalHost(const ChannelSignal& signal) {
  if (signal.relid == 0 || signal.relid >= kEventFlagCount) {
    return absl::InvalidArgumentError(absl::StrCat("signal for relid ", signal.relid));
  }
  if (!link_up_.load(std::memory_order_relaxed)) {
    return absl::UnavailableError("the link to the mock host is gone");
  }
  absl::StatusOr<GuestMemory::Signalled> signalled = memory_->SignalChannel(
      signal.relid,
      signal.monitor_allocated ? std::optional<uint32_t>(signal.monitor_id) : std::nullopt);
  if (!signalled.ok()) return signalled.status();
  switch (*signalled) {
    case GuestMemory::Signalled::kMonitored:
      monitor_signals_.fetch_add(1, std::memory_order_relaxed);
      break;
    case GuestMemory::Signalled::kRang:
      host_doorbells_.fetch_add(1, std::memory_order_relaxed);
      break;
    case GuestMemory::Signalled::kCoalesced:
      signals_coalesced_.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  return absl::OkStatus();
}

absl::Span<uint8_t> MockBackend::ReceiveEventFlags(uint32_t vp) {
  return memory_->GuestEventFlags(vp);
}

absl::StatusOr<Pages> MockBackend::AllocatePages(size_t count, PageSharing sharing) {
  (void)sharing;  // every page of the shared file is the host's to read: shared either way
  return pool_->Allocate(count);
}

absl::StatusOr<MirroredMapping> MockBackend::MapRingMirrored(const Pages& pages, size_t first_page,
                                                             size_t page_count) {
  if (first_page > pages.page_count() || page_count > pages.page_count() - first_page) {
    return absl::InvalidArgumentError(absl::StrCat("pages ", first_page, "+", page_count,
                                                   " are outside an allocation of ",
                                                   pages.page_count()));
  }
  return memory_->MapRingMirrored(pages.pfns().subspan(first_page, page_count));
}

ContactInfo MockBackend::contact_info() const { return memory_->GuestContactInfo(); }

size_t MockBackend::held_messages() const {
  MutexLock lock(&mu_);
  return queue_.size();
}

std::string MockBackend::guest_id() const {
  MutexLock lock(&mu_);
  return guest_id_;
}

MockBackendStats MockBackend::stats() const {
  MockBackendStats s;
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  s.messages_posted = get(messages_posted_);
  s.messages_delivered = get(messages_delivered_);
  s.protocol_errors = get(protocol_errors_);
  s.doorbell_wakeups = get(doorbell_wakeups_);
  s.stream_signals = get(stream_signals_);
  s.host_doorbells = get(host_doorbells_);
  s.signals_coalesced = get(signals_coalesced_);
  s.monitor_signals = get(monitor_signals_);
  s.batches_posted = get(batches_posted_);
  s.batches_received = get(batches_received_);
  s.batches_refused = get(batches_refused_);
  s.messages_unparsable = get(messages_unparsable_);
  return s;
}

}  // namespace vbus::mock
