// HyperVBackend: the Backend (backends/backend.h) of a guest running on Hyper-V, built on the
// platform layer (docs/hyperv.md): detection, the hypercall page, the SynIC and the two VMBus
// hypercalls, with the binary codec (hyperv/wire.h) between the neutral ControlMessages and
// the 240-byte SynIC payloads.
//
// What each Backend duty becomes here (docs/hyperv.md §14 has the full story):
//   - Start: DetectHyperV; the hypercall page (enabled here unless the platform already did,
//     e.g. X86HvPlatform; then it is left to its owner); the interrupt page and the two
//     monitor pages the guest names in InitiateContact; a hypercall input page; the SynIC of
//     every VP the backend takes events on, with an interrupt handler that first reports the
//     VP's events (OnEventsPending) and then, on the message VP, empties the SINT2 message
//     slot, decodes each message (GPADL parts reassembled) and hands it on (HostMessageQueue:
//     serialised, in host order, held while paused). A message that does not decode is
//     counted, logged and dropped; the bus goes on.
//   - PostMessage: EncodeMessage, then one HvPostMessage per wire message (a GpadlCreate is a
//     GPADL_HEADER and GPADL_BODY messages), on the connection docs/hyperv.md §11 names:
//     InitiateContact on 4 (from 5.0) or 1 (below), with one attempt so that
//     HV_STATUS_INVALID_CONNECTION_ID comes back as NotFound ("try the next version"); every
//     other message on the connection SetConnection recorded (1 when it is 0), with the
//     options' retries. Posts are serialised, so GPADL parts are never interleaved.
//   - SignalHost: the relid's bit in the interrupt page's send half (unless the channel has a
//     dedicated interrupt), then the monitor trigger bit (monitored channels: no hypercall)
//     or HvSignalEvent on the channel's connection (docs/protocol.md §12).
//   - ReceiveEventFlags(vp): the SINT2 block of the VP's SynIC event-flags page.
//   - AllocatePages: the platform's pages. All of an ordinary guest's memory is host-visible;
//     an isolated guest's is not, and this backend cannot convert pages, so kHostVisible
//     fails with FailedPrecondition unless the options say the platform's pages are already
//     host-visible.
//   - OnHostLost is never called: the SynIC does not go away under a running guest.
//
// Example (a ring-0 agent; the test suite uses FakeHypervisor instead):
//   HyperVBackendOptions options;
//   options.vector = 0x52;
//   options.vp_count = platform->vp_count();
//   ASSIGN_OR_RETURN(std::unique_ptr<HyperVBackend> backend,
//                    HyperVBackend::Create(*platform, options));
//   ASSIGN_OR_RETURN(std::unique_ptr<ChannelBus> bus, ChannelBus::Create(backend.get(), {}));
//   RETURN_IF_ERROR(bus->Connect(absl::Now() + absl::Seconds(10)));
//
// Threads: the interrupt handlers run on their VPs (platform.h); OnEventsPending(vp) comes
// from VP vp's handler, OnHostMessage from the message VP's handler or from a thread calling
// ResumeDelivery. Every Backend method may be called from any thread except Stop from a
// listener callback (backends/backend.h). Lifetime: the platform must outlive the backend,
// the backend every Pages it handed out.
#ifndef VBUS_HYPERV_HYPERV_BACKEND_H_
#define VBUS_HYPERV_HYPERV_BACKEND_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "backends/pages.h"
#include "core/runtime/sync.h"
#include "hyperv/host_message_queue.h"
#include "hyperv/hypercalls.h"
#include "hyperv/platform.h"
#include "hyperv/synic.h"
#include "hyperv/wire.h"

namespace vbus::hyperv {

// HyperVBackendOptions: fixed for the backend's life.
struct HyperVBackendOptions {
  // The interrupt vector SINT2 raises on every VP (16..255).
  uint8_t vector = 0;
  // The VP that receives control messages: InitiateContact's target_vcpu (< vp_count).
  uint32_t message_vp = 0;
  // VPs the backend takes events on (Backend::vp_count): 1..min(platform VPs, kMaxEventVps),
  // VP indexes 0..vp_count-1. Each gets its SynIC enabled.
  uint32_t vp_count = 1;
  // Retries of every post but InitiateContact's (hypercalls.h). Its `deadline` caps every
  // post; `post_timeout` gives each post its own on top (whichever comes first).
  PostRetryPolicy post_retry;
  absl::Duration post_timeout = absl::Seconds(10);
  // GUEST_OS_ID, written when the backend enables the hypercall page itself (tlfs.h
  // OpenSourceGuestOsId). Not used when the platform enabled the page already; Start fails
  // with InvalidArgument if it is needed and 0.
  uint64_t guest_os_id = 0;
  // The platform's pages are already visible to the host (a non-isolated guest whose
  // environment says so explicitly): AllocatePages then grants PageSharing::kHostVisible.
  bool pages_host_visible = false;
  // Runs `work` on VP `vp` and returns its status. Synthetic MSRs are per VP (platform.h):
  // on real hardware each VP's SynIC set-up and teardown must run on that VP, which only the
  // environment can arrange (e.g. an IPI or a thread pinned to the CPU). Empty = run on the
  // calling thread, for a platform that reaches any VP from anywhere (FakeHypervisor).
  std::function<absl::Status(uint32_t vp, const std::function<absl::Status()>& work)> run_on_vp;
  // Log lines (dropped host messages, teardown problems, stalls); empty = stderr.
  std::function<void(absl::string_view)> log;
};

// HyperVBackendStats: counters since creation (relaxed snapshots).
struct HyperVBackendStats {
  uint64_t messages_posted = 0;     // ControlMessages the hypervisor accepted whole
  uint64_t parts_posted = 0;        // HvPostMessage calls that succeeded (GPADL parts each)
  uint64_t post_retries = 0;        // waits between HvPostMessage attempts (transient status)
  uint64_t post_failures = 0;       // PostMessage calls that failed (encoding included)
  uint64_t interrupts = 0;          // interrupt handler runs, all VPs
  uint64_t events_raised = 0;       // OnEventsPending calls
  uint64_t messages_taken = 0;      // messages taken out of SINT2 slots, all VPs
  uint64_t messages_dropped = 0;    // of those: over-long, not a VMBus message, not on the
                                    // message VP, or refused by the decoder (each logged)
  uint64_t decode_errors = 0;       // of the dropped: refused by the decoder
  uint64_t messages_delivered = 0;  // OnHostMessage calls that returned
  uint64_t signals_event = 0;       // SignalHost calls that made HvSignalEvent
  uint64_t signals_monitor = 0;     // SignalHost calls that set a monitor trigger bit
  uint64_t signals_dedicated = 0;   // SignalHost calls that set no interrupt-page bit
  uint64_t signal_failures = 0;     // SignalHost calls that failed
};

class HyperVBackend final : public Backend {
 public:
  // Create
  // Checks the options against the platform and allocates nothing yet (Start does).
  // InvalidArgument naming the option: a vector below 16, vp_count 0 or above the platform's
  // VPs or kMaxEventVps, message_vp not below vp_count, post_retry.max_attempts below 1, a
  // post_timeout that is not positive.
  static absl::StatusOr<std::unique_ptr<HyperVBackend>> Create(HvPlatform& platform,
                                                               HyperVBackendOptions options);

  // Stops (see Stop), then frees the SynIC, interrupt and monitor pages.
  ~HyperVBackend() override;
  HyperVBackend(const HyperVBackend&) = delete;
  HyperVBackend& operator=(const HyperVBackend&) = delete;

  // ---- Backend ---------------------------------------------------------------------------
  // Start: the set-up above, in that order; on failure everything done is undone and the
  // backend stays stopped. Unavailable when this is not Hyper-V (DetectHyperV's NotFound),
  // FailedPrecondition naming every missing privilege, or if Start was called before (even
  // unsuccessfully); InvalidArgument for a null listener or a needed guest_os_id of 0; the
  // platform's errors (pages, MSRs, interrupt registration), annotated.
  absl::Status Start(BackendListener* listener) override;
  // Stop: the SynIC off on every VP (the last VP first; afterwards no handler runs), held
  // messages dropped, a delivery in progress on another thread waited for, in-flight posts
  // and signals waited for (a post waiting to retry gives up), then the hypercall page
  // disabled (only if Start enabled it) and it and the input page freed. The SynIC, interrupt
  // and monitor pages stay until destruction: ReceiveEventFlags' spans must stay valid and
  // the host may still hold the page addresses. Later posts and signals fail with
  // Unavailable. Idempotent.
  void Stop() override;
  // contact_info: target_vcpu = message_vp, SINT 2, VTL 0 and the three pages' GPAs. Zeros
  // before Start.
  ContactInfo contact_info() const override;
  // PostMessage: as above. FailedPrecondition before Start; Unavailable after Stop;
  // InvalidArgument naming the message when it cannot be encoded (nothing is posted);
  // NotFound only for an InitiateContact whose connection the hypervisor rejected;
  // ResourceExhausted when the host's buffers stayed full (after the retries, or at once for
  // InitiateContact); another HV_STATUS as HvStatusToStatus maps it, except that NotFound
  // (INVALID_PORT_ID, NOT_FOUND) on any other message becomes FailedPrecondition. A
  // GpadlCreate that fails after some of its parts were accepted leaves the host half a
  // GPADL it never completes or answers (as Linux does); the handle is not reused soon
  // (docs/protocol.md §6).
  absl::Status PostMessage(const v1::ControlMessage& message) override;
  void SetConnection(const NegotiatedConnection& connection) override;
  void PauseDelivery() override;
  void ResumeDelivery() override;
  // SignalHost: InvalidArgument for relid 0 or >= 2048 and for a monitored channel's
  // monitor_id of 128 or more; FailedPrecondition before Start; Unavailable after Stop;
  // HvSignalEvent's error (e.g. NotFound for a connection the host does not have).
  absl::Status SignalHost(const ChannelSignal& signal) override;
  uint32_t vp_count() const override { return options_.vp_count; }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override;
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override;

  // ---- Hyper-V specifics -----------------------------------------------------------------
  HyperVBackendStats stats() const;
  // Host messages held back by PauseDelivery.
  size_t held_messages() const { return delivery_.held(); }
  // The connection SetConnection recorded, if any.
  std::optional<NegotiatedConnection> connection() const;
  // Whether Start enabled the hypercall page (and Stop disables it).
  bool owns_hypercall_page() const;

 private:
  // Where posts and signals may go. kDown after Stop (and after a failed Start).
  enum class Link { kNotStarted, kUp, kDown };

  HyperVBackend(HvPlatform& platform, HyperVBackendOptions options);

  // Start's steps; on failure the caller runs TearDown.
  absl::Status SetUp() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lifecycle_mu_);
  absl::Status SetUpHypercallPage() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lifecycle_mu_);
  // Stop's steps, for whatever SetUp got done.
  void TearDown() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lifecycle_mu_);

  // The interrupt handler of `vp`, and its message half.
  void OnInterrupt(uint32_t vp);
  void TakeMessages(uint32_t vp);
  void Drop(uint32_t vp, absl::string_view why);

  // The status of a failed post, per the Backend contract (see PostMessage).
  absl::Status PostFailure(absl::string_view kind, bool contact, size_t part, size_t parts,
                           uint32_t connection_id, const absl::Status& status)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The retry policy of one post: the options' (or one attempt for InitiateContact), with a
  // deadline, retries counted and cut short by Stop.
  PostRetryPolicy PolicyFor(bool contact);
  absl::Status LinkStatus(absl::string_view what) const ABSL_SHARED_LOCKS_REQUIRED(link_mu_);
  // `work` on VP `vp` (options_.run_on_vp).
  absl::Status OnVp(uint32_t vp, const std::function<absl::Status()>& work) const;
  void Log(absl::string_view line) const;

  HvPlatform& platform_;
  const HyperVBackendOptions options_;

  // Serialises Start and Stop; guards what they build. The interrupt handlers, posts and
  // signals read those members only while the SynIC is enabled / the link is up, i.e. between
  // a Start that published them and the Stop that waits for all of them first.
  Mutex lifecycle_mu_;
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  BackendListener* listener_ = nullptr;  // set by Start before any handler can run
  std::unique_ptr<Synic> synic_;         // from Start to destruction
  Pages hypercall_page_;                 // Start enabled it (else empty)
  Pages shared_pages_;                   // 0: interrupt page, 1: monitor page 1, 2: page 2
  Pages input_page_;                     // HvPostMessage's input block, under post_mu_
  // Touched only by the message VP's interrupt handler (one at a time, platform.h).
  WireDecoder decoder_;
  HostMessageQueue delivery_;

  // Posts and signals hold this shared; Stop takes it exclusively to bring the link down
  // before it disables the hypercall page, so no hypercall runs after that.
  mutable SharedMutex link_mu_;
  Link link_ ABSL_GUARDED_BY(link_mu_) = Link::kNotStarted;
  // Interrupt page (send half) and guest → host monitor page, for SignalHost.
  uint8_t* interrupt_page_ ABSL_GUARDED_BY(link_mu_) = nullptr;
  uint8_t* monitor_page2_ ABSL_GUARDED_BY(link_mu_) = nullptr;

  // Serialises posts: messages reach the host in call order, GPADL parts together, and the
  // one input page is used by one post at a time.
  Mutex post_mu_;

  mutable Mutex mu_;
  CondVar stopping_cv_;  // stopping_ became true (wakes posts waiting to retry)
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  ContactInfo contact_ ABSL_GUARDED_BY(mu_);
  std::optional<NegotiatedConnection> connection_ ABSL_GUARDED_BY(mu_);
  bool owns_hypercall_page_ ABSL_GUARDED_BY(mu_) = false;

  // Read by the interrupt handlers without a lock: after Stop began, report nothing more.
  std::atomic<bool> quiet_{false};

  // Counters (relaxed).
  std::atomic<uint64_t> messages_posted_{0};
  std::atomic<uint64_t> parts_posted_{0};
  std::atomic<uint64_t> post_retries_{0};
  std::atomic<uint64_t> post_failures_{0};
  std::atomic<uint64_t> interrupts_{0};
  std::atomic<uint64_t> events_raised_{0};
  std::atomic<uint64_t> messages_taken_{0};
  std::atomic<uint64_t> messages_dropped_{0};
  std::atomic<uint64_t> decode_errors_{0};
  std::atomic<uint64_t> signals_event_{0};
  std::atomic<uint64_t> signals_monitor_{0};
  std::atomic<uint64_t> signals_dedicated_{0};
  std::atomic<uint64_t> signal_failures_{0};
};

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_HYPERV_BACKEND_H_
