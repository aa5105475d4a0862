#include "hyperv/hyperv_backend.h"

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/protocol.h"
#include "google/protobuf/descriptor.h"
#include "hyperv/detect.h"
#include "hyperv/hypercall_page.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {

namespace {

// The pages of shared_pages_ (docs/protocol.md §12, docs/hyperv.md §10, §11).
constexpr size_t kInterruptPage = 0;
constexpr size_t kMonitorPage1 = 1;  // host → guest
constexpr size_t kMonitorPage2 = 2;  // guest → host: SignalHost sets trigger bits here
constexpr size_t kSharedPageCount = 3;

// "gpadl_create", "initiate_contact", …: the ControlMessage field that is set.
std::string KindOf(const v1::ControlMessage& message) {
  const google::protobuf::FieldDescriptor* field =
      message.GetDescriptor()->FindFieldByNumber(message.message_case());
  return field == nullptr ? std::string("an empty ControlMessage") : field->name();
}

absl::Status Annotate(const absl::Status& s, absl::string_view step) {
  return absl::Status(s.code(), absl::StrCat("HyperVBackend: ", step, ": ", s.message()));
}

uint64_t GpaOf(const Pages& pages, size_t index) {
  return pages.pfns()[index] * protocol::kPageSize;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HyperVBackend>> HyperVBackend::Create(HvPlatform& platform,
                                                                     HyperVBackendOptions options) {
  if (options.vector < kSintMinVector) {
    return absl::InvalidArgumentError(
        absl::StrCat("HyperVBackend: vector ", options.vector, " is below ", kSintMinVector,
                     " (an unmasked SINT would raise #GP; docs/hyperv.md §3)"));
  }
  const uint32_t most_vps = std::min(platform.vp_count(), kMaxEventVps);
  if (options.vp_count == 0 || options.vp_count > most_vps) {
    return absl::InvalidArgumentError(absl::StrCat("HyperVBackend: vp_count ", options.vp_count,
                                                   " is outside 1..", most_vps,
                                                   " (the platform has ", platform.vp_count(),
                                                   " VPs; a backend takes events "
                                                   "on at most ",
                                                   kMaxEventVps, ")"));
  }
  if (options.message_vp >= options.vp_count) {
    return absl::InvalidArgumentError(absl::StrCat("HyperVBackend: message_vp ", options.message_vp,
                                                   " is not one of the ", options.vp_count,
                                                   " VPs the backend takes events on"));
  }
  if (options.post_retry.max_attempts < 1) {
    return absl::InvalidArgumentError(absl::StrCat("HyperVBackend: post_retry.max_attempts ",
                                                   options.post_retry.max_attempts, " is below 1"));
  }
  if (options.post_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("HyperVBackend: post_timeout ",
                                                   absl::FormatDuration(options.post_timeout),
                                                   " is not positive"));
  }
  return std::unique_ptr<HyperVBackend>(new HyperVBackend(platform, std::move(options)));
}

HyperVBackend::HyperVBackend(HvPlatform& platform, HyperVBackendOptions options)
    : platform_(platform),
      options_(std::move(options)),
      delivery_([this](absl::string_view line) { Log(line); }) {}

HyperVBackend::~HyperVBackend() { Stop(); }

void HyperVBackend::Log(absl::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "hyperv_backend: %.*s\n", static_cast<int>(line.size()), line.data());
  }
}

absl::Status HyperVBackend::OnVp(uint32_t vp, const std::function<absl::Status()>& work) const {
  return options_.run_on_vp ? options_.run_on_vp(vp, work) : work();
}

// ---------------------------------------------------------------------------------------------
// Start and Stop
// ---------------------------------------------------------------------------------------------

absl::Status HyperVBackend::Start(BackendListener* listener) {
  if (listener == nullptr)
    return absl::InvalidArgumentError("HyperVBackend: Start needs a listener");
  MutexLock lifecycle(&lifecycle_mu_);
  if (started_) {
    return absl::FailedPreconditionError("HyperVBackend: Start was called before");
  }
  started_ = true;
  listener_ = listener;
  absl::Status set_up = SetUp();
  if (!set_up.ok()) TearDown();
  return set_up;
}

absl::Status HyperVBackend::SetUp() {
  // 1. Hyper-V, with the privileges VMBus needs (docs/hyperv.md §2)? Reads CPUID only.
  absl::StatusOr<HyperVInfo> info = DetectHyperV(platform_);
  if (!info.ok()) {
    if (absl::IsNotFound(info.status())) {
      // No hypervisor to post to: the host cannot be reached (backends/backend.h).
      return absl::UnavailableError(
          absl::StrCat("HyperVBackend: not running on Hyper-V: ", info.status().message()));
    }
    return Annotate(info.status(), "detecting Hyper-V");
  }
  // 2. The hypercall page (docs/hyperv.md §4).
  if (absl::Status s = SetUpHypercallPage(); !s.ok()) return s;
  // 3. The pages InitiateContact names and the post input page.
  absl::StatusOr<Pages> shared = platform_.AllocatePages(kSharedPageCount);
  if (!shared.ok()) return Annotate(shared.status(), "allocating the interrupt and monitor pages");
  shared_pages_ = *std::move(shared);
  absl::StatusOr<Pages> input = platform_.AllocatePages(1);
  if (!input.ok()) return Annotate(input.status(), "allocating the hypercall input page");
  input_page_ = *std::move(input);
  // 4. The SynIC pages of every VP (enabled below).
  absl::StatusOr<std::unique_ptr<Synic>> synic =
      Synic::Create(platform_, SynicOptionsFor(*info, options_.vector));
  if (!synic.ok()) return Annotate(synic.status(), "creating the SynIC");
  synic_ = *std::move(synic);
  {
    MutexLock lock(&mu_);
    contact_.target_vcpu = options_.message_vp;
    contact_.message_sint = kVmbusMessageSint;
    contact_.message_vtl = 0;
    contact_.interrupt_page_gpa = GpaOf(shared_pages_, kInterruptPage);
    contact_.monitor_page1_gpa = GpaOf(shared_pages_, kMonitorPage1);
    contact_.monitor_page2_gpa = GpaOf(shared_pages_, kMonitorPage2);
  }
  // 5. Posts and signals may go from here on: a handler may already answer a message.
  {
    WriterMutexLock link(&link_mu_);
    link_ = Link::kUp;
    interrupt_page_ = shared_pages_.page(kInterruptPage);
    monitor_page2_ = shared_pages_.page(kMonitorPage2);
  }
  delivery_.Start(listener_);
  // 6. Interrupts on, VP by VP (each enable registers the handler first; synic.h).
  for (uint32_t vp = 0; vp < options_.vp_count; ++vp) {
    absl::Status enabled =
        OnVp(vp, [&] { return synic_->Enable(vp, [this, vp] { OnInterrupt(vp); }); });
    if (!enabled.ok()) return Annotate(enabled, "enabling the SynIC");
  }
  return absl::OkStatus();
}

absl::Status HyperVBackend::SetUpHypercallPage() {
  const uint32_t vp = options_.message_vp;
  uint64_t hypercall = 0;
  absl::Status read = OnVp(vp, [&] {
    absl::StatusOr<uint64_t> value = platform_.ReadMsr(vp, kMsrHypercall);
    if (value.ok()) hypercall = *value;
    return value.status();
  });
  if (!read.ok()) return Annotate(read, "reading the HYPERCALL MSR");
  // Enabled already: the platform's (X86HvPlatform enables it at Create and disables it when
  // destroyed). It is used as it is and left to its owner.
  if ((hypercall & kHypercallMsrEnable) != 0) return absl::OkStatus();
  if (options_.guest_os_id == 0) {
    return absl::InvalidArgumentError(
        "HyperVBackend: the hypercall page is not enabled and options.guest_os_id is 0: the "
        "backend needs a GUEST_OS_ID to enable it (docs/hyperv.md §3, §4)");
  }
  absl::StatusOr<Pages> page = platform_.AllocatePages(1);
  if (!page.ok()) return Annotate(page.status(), "allocating the hypercall page");
  absl::Status enabled = OnVp(vp, [&] {
    return EnableHypercallPage(platform_, vp, options_.guest_os_id, GpaOf(*page, 0));
  });
  if (!enabled.ok()) return Annotate(enabled, "enabling the hypercall page");
  hypercall_page_ = *std::move(page);
  MutexLock lock(&mu_);
  owns_hypercall_page_ = true;
  return absl::OkStatus();
}

void HyperVBackend::Stop() {
  MutexLock lifecycle(&lifecycle_mu_);
  if (!started_ || stopped_) return;
  TearDown();
}

void HyperVBackend::TearDown() {
  stopped_ = true;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    stopping_cv_.SignalAll();  // a post waiting to retry gives up (PolicyFor)
  }
  // 1. No OnHostMessage starts from now on; one running on another thread has returned when
  //    Stop returns. The handlers report no more events.
  quiet_.store(true, std::memory_order_relaxed);
  delivery_.Stop();
  // 2. Interrupts off, the last VP first (Synic::Disable returns once the VP's handler is not
  //    running and will not run again).
  if (synic_ != nullptr) {
    for (uint32_t vp = options_.vp_count; vp > 0; --vp) {
      absl::Status s = OnVp(vp - 1, [&] { return synic_->Disable(vp - 1); });
      if (!s.ok()) Log(absl::StrCat("stopping: disabling the SynIC: ", s.message()));
    }
  }
  // 3. Waits for every post and signal in flight; none starts afterwards, so no hypercall
  //    runs once the page is disabled.
  {
    WriterMutexLock link(&link_mu_);
    link_ = Link::kDown;
    interrupt_page_ = nullptr;
    monitor_page2_ = nullptr;
  }
  bool owned;
  {
    MutexLock lock(&mu_);
    owned = owns_hypercall_page_;
  }
  if (owned) {
    const uint32_t vp = options_.message_vp;
    absl::Status s = OnVp(vp, [&] { return DisableHypercallPage(platform_, vp); });
    if (!s.ok()) Log(absl::StrCat("stopping: disabling the hypercall page: ", s.message()));
  }
  hypercall_page_.Reset();
  input_page_.Reset();
}

// ---------------------------------------------------------------------------------------------
// Host → guest: the interrupt handler
// ---------------------------------------------------------------------------------------------

void HyperVBackend::OnInterrupt(uint32_t vp) {
  interrupts_.fetch_add(1, std::memory_order_relaxed);
  // Events first: the host sets event flags and raises the same SINT (docs/hyperv.md §6);
  // the bus scans the VP's flags itself.
  if (!quiet_.load(std::memory_order_relaxed)) {
    events_raised_.fetch_add(1, std::memory_order_relaxed);
    listener_->OnEventsPending(vp);
  }
  TakeMessages(vp);
}

void HyperVBackend::TakeMessages(uint32_t vp) {
  // Every message is taken out of the slot, wherever it arrived: one left there would hold
  // back the VP's queue for good (docs/hyperv.md §5).
  for (;;) {
    absl::StatusOr<std::optional<SynicMessage>> taken = synic_->TakeMessage(vp);
    if (!taken.ok()) {
      messages_taken_.fetch_add(1, std::memory_order_relaxed);
      Drop(vp, taken.status().message());
      continue;  // the slot was released (synic.h): go on with the next one
    }
    if (!taken->has_value()) return;
    messages_taken_.fetch_add(1, std::memory_order_relaxed);
    const SynicMessage& m = **taken;
    if (vp != options_.message_vp) {
      Drop(vp, absl::StrFormat("SynIC message type 0x%X arrived on a VP that is not the "
                               "message VP %u",
                               m.message_type, options_.message_vp));
      continue;
    }
    if (m.message_type != kVmbusMessageType) {
      Drop(vp, absl::StrFormat("SynIC message type 0x%X is not a VMBus message (%u)",
                               m.message_type, kVmbusMessageType));
      continue;
    }
    absl::StatusOr<std::optional<v1::ControlMessage>> decoded = decoder_.Decode(m.bytes());
    if (!decoded.ok()) {
      decode_errors_.fetch_add(1, std::memory_order_relaxed);
      Drop(vp, decoded.status().message());
      continue;
    }
    if (!decoded->has_value()) continue;  // a GPADL part: more to come
    delivery_.Push(**std::move(decoded));
  }
}

void HyperVBackend::Drop(uint32_t vp, absl::string_view why) {
  messages_dropped_.fetch_add(1, std::memory_order_relaxed);
  // The decoder's and the SynIC's messages name types, fields and numbers only: no host text.
  Log(absl::StrCat("dropped a host message on VP ", vp, ": ", why));
}

void HyperVBackend::PauseDelivery() { delivery_.Pause(); }

void HyperVBackend::ResumeDelivery() { delivery_.Resume(); }

// ---------------------------------------------------------------------------------------------
// Guest → host: posts and signals
// ---------------------------------------------------------------------------------------------

absl::Status HyperVBackend::LinkStatus(absl::string_view what) const {
  // Built only when the link is not up (not on the data path).
  switch (link_) {
    case Link::kNotStarted:
      return absl::FailedPreconditionError(absl::StrCat("HyperVBackend: ", what, " before Start"));
    case Link::kDown:
      return absl::UnavailableError(
          absl::StrCat("HyperVBackend: ", what, " after Stop (the SynIC is torn down)"));
    case Link::kUp:
      break;
  }
  return absl::OkStatus();
}

PostRetryPolicy HyperVBackend::PolicyFor(bool contact) {
  // InitiateContact: one attempt, INVALID_CONNECTION_ID final (NotFound: "try the next
  // version", docs/hyperv.md §8, §11).
  PostRetryPolicy policy = contact ? PostRetryPolicy::NoRetry() : options_.post_retry;
  std::function<absl::Time()> now = options_.post_retry.now;
  if (!now) now = [] { return absl::Now(); };
  policy.deadline = std::min(policy.deadline, now() + options_.post_timeout);
  // Once Stop began the deadline has passed: the post ends after the attempt in progress.
  policy.now = [this, now] {
    {
      MutexLock lock(&mu_);
      if (stopping_) return absl::InfiniteFuture();
    }
    return now();
  };
  policy.wait = [this, wait = options_.post_retry.wait](absl::Duration d) {
    post_retries_.fetch_add(1, std::memory_order_relaxed);
    if (wait) {
      wait(d);
      return;
    }
    // Waits at most `d` (HvPostMessage's rule), less when Stop begins.
    MutexLock lock(&mu_);
    stopping_cv_.AwaitWithDeadline(
        &mu_, absl::Now() + d, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; });
  };
  return policy;
}

absl::Status HyperVBackend::PostFailure(absl::string_view kind, bool contact, size_t part,
                                        size_t parts, uint32_t connection_id,
                                        const absl::Status& status) {
  post_failures_.fetch_add(1, std::memory_order_relaxed);
  const std::string where = parts == 1
                                ? absl::StrCat("posting ", kind, " on connection ", connection_id)
                                : absl::StrCat("posting ", kind, " (part ", part + 1, " of ", parts,
                                               ") on connection ", connection_id);
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      return absl::UnavailableError(
          absl::StrCat("HyperVBackend: stopped while ", where, ": ", status.message()));
    }
  }
  // NotFound means "that version's connection was rejected" and is reserved for
  // InitiateContact (backends/backend.h); anywhere else a missing port or object is a state
  // the host has to fix, not a reason to try another version.
  if (absl::IsNotFound(status) && !contact) {
    return absl::FailedPreconditionError(
        absl::StrCat("HyperVBackend: ", where, ": ", status.message()));
  }
  return Annotate(status, where);
}

absl::Status HyperVBackend::PostMessage(const v1::ControlMessage& message) {
  const std::string kind = KindOf(message);
  absl::StatusOr<std::vector<WireMessage>> parts = EncodeMessage(message);
  if (!parts.ok()) {
    post_failures_.fetch_add(1, std::memory_order_relaxed);
    return absl::InvalidArgumentError(
        absl::StrCat("HyperVBackend: cannot encode ", kind, ": ", parts.status().message()));
  }
  ReaderMutexLock link(&link_mu_);
  if (link_ != Link::kUp) {
    post_failures_.fetch_add(1, std::memory_order_relaxed);
    return LinkStatus(absl::StrCat("posting ", kind));
  }
  // The connection (docs/hyperv.md §11): InitiateContact's is implied by the version it asks
  // for; every later message goes where the host's VersionResponse said (1 below 5.0).
  const bool contact = message.has_initiate_contact();
  uint32_t connection_id = kVmbusMessageConnectionId;
  if (contact) {
    connection_id = InitiateContactConnectionId(message.initiate_contact().version_requested());
  } else {
    MutexLock lock(&mu_);
    if (connection_.has_value() && connection_->message_connection_id != 0) {
      connection_id = connection_->message_connection_id;
    }
  }
  const PostRetryPolicy policy = PolicyFor(contact);
  MutexLock post(&post_mu_);
  const HypercallInputPage input = InputPageOf(input_page_);
  for (size_t i = 0; i < parts->size(); ++i) {
    absl::Status posted =
        HvPostMessage(platform_, input, connection_id, kVmbusMessageType, (*parts)[i], policy);
    if (!posted.ok()) return PostFailure(kind, contact, i, parts->size(), connection_id, posted);
    parts_posted_.fetch_add(1, std::memory_order_relaxed);
  }
  messages_posted_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

void HyperVBackend::SetConnection(const NegotiatedConnection& connection) {
  MutexLock lock(&mu_);
  connection_ = connection;
}

std::optional<NegotiatedConnection> HyperVBackend::connection() const {
  MutexLock lock(&mu_);
  return connection_;
}

absl::Status HyperVBackend::SignalHost(const ChannelSignal& signal) {
  if (signal.relid == 0 || signal.relid >= kEventFlagCount) {
    signal_failures_.fetch_add(1, std::memory_order_relaxed);
    return absl::InvalidArgumentError(absl::StrCat("HyperVBackend: signal for relid ", signal.relid,
                                                   " (1..", kEventFlagCount - 1, ")"));
  }
  if (signal.monitor_allocated && signal.monitor_id >= protocol::kMonitorIdCount) {
    signal_failures_.fetch_add(1, std::memory_order_relaxed);
    return absl::InvalidArgumentError(absl::StrCat("HyperVBackend: signal for relid ", signal.relid,
                                                   " with monitor id ", signal.monitor_id, " (0..",
                                                   protocol::kMonitorIdCount - 1, ")"));
  }
  ReaderMutexLock link(&link_mu_);
  if (link_ != Link::kUp) {
    signal_failures_.fetch_add(1, std::memory_order_relaxed);
    return LinkStatus(absl::StrCat("signalling relid ", signal.relid));
  }
  // docs/protocol.md §12: the interrupt page's send-half bit first, then the monitor trigger
  // or the hypercall.
  if (!signal.dedicated_interrupt) {
    auto* send_half = reinterpret_cast<uint64_t*>(interrupt_page_ + kInterruptPageSendHalfOffset);
    // [HV-B1] release OR: publishes the ring writes this signal announces (made before the
    // call) to the host, which takes the bit with an acquire exchange ([HV-H7] in the fake).
    std::atomic_ref<uint64_t>(send_half[signal.relid / 64])
        .fetch_or(uint64_t{1} << (signal.relid % 64), std::memory_order_release);
  } else {
    signals_dedicated_.fetch_add(1, std::memory_order_relaxed);
  }
  if (signal.monitor_allocated) {
    auto* page = reinterpret_cast<HvMonitorPage*>(monitor_page2_);
    const uint32_t group = signal.monitor_id / kMonitorsPerGroup;
    const uint32_t bit = signal.monitor_id % kMonitorsPerGroup;
    // [HV-B2] release OR: as [HV-B1], for the host's scan of the trigger bits, which takes
    // them with an acquire exchange ([HV-H6] in the fake). No hypercall: the host polls.
    std::atomic_ref<uint32_t>(page->trigger_group[group].pending)
        .fetch_or(uint32_t{1} << bit, std::memory_order_release);
    signals_monitor_.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }
  absl::Status s = HvSignalEvent(platform_, signal.connection_id);
  if (!s.ok()) {
    signal_failures_.fetch_add(1, std::memory_order_relaxed);
    return Annotate(s, absl::StrCat("signalling relid ", signal.relid));
  }
  signals_event_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Events, memory, state
// ---------------------------------------------------------------------------------------------

absl::Span<uint8_t> HyperVBackend::ReceiveEventFlags(uint32_t vp) {
  // synic_ is set by Start before it returns and kept to destruction (callers ask after Start).
  if (vp >= options_.vp_count || synic_ == nullptr) return {};
  return synic_->EventFlags(vp);
}

absl::StatusOr<Pages> HyperVBackend::AllocatePages(size_t count, PageSharing sharing) {
  if (count == 0) return absl::InvalidArgumentError("HyperVBackend: AllocatePages of 0 pages");
  if (sharing == PageSharing::kHostVisible && !options_.pages_host_visible) {
    return absl::FailedPreconditionError(
        "HyperVBackend: this platform cannot share pages with the host (isolated guests are "
        "not supported)");
  }
  absl::StatusOr<Pages> pages = platform_.AllocatePages(count);
  if (!pages.ok()) return Annotate(pages.status(), absl::StrCat("allocating ", count, " pages"));
  return pages;
}

ContactInfo HyperVBackend::contact_info() const {
  MutexLock lock(&mu_);
  return contact_;
}

bool HyperVBackend::owns_hypercall_page() const {
  MutexLock lock(&mu_);
  return owns_hypercall_page_;
}

HyperVBackendStats HyperVBackend::stats() const {
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  HyperVBackendStats s;
  s.messages_posted = get(messages_posted_);
  s.parts_posted = get(parts_posted_);
  s.post_retries = get(post_retries_);
  s.post_failures = get(post_failures_);
  s.interrupts = get(interrupts_);
  s.events_raised = get(events_raised_);
  s.messages_taken = get(messages_taken_);
  s.messages_dropped = get(messages_dropped_);
  s.decode_errors = get(decode_errors_);
  s.messages_delivered = delivery_.delivered();
  s.signals_event = get(signals_event_);
  s.signals_monitor = get(signals_monitor_);
  s.signals_dedicated = get(signals_dedicated_);
  s.signal_failures = get(signal_failures_);
  return s;
}

}  // namespace vbus::hyperv
