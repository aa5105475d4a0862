// FakeHypervisor (testonly): Hyper-V in software, behind the HvPlatform seam.
//
// Guest code under test (detect, synic, hypercalls, the HyperVBackend) runs against
// it exactly as against X86HvPlatform, and the fake enforces what real Hyper-V enforces
// (docs/hyperv.md §12):
//   - CPUID: a Hyper-V partition with the privileges vbus needs, every leaf replaceable
//     (SetCpuid) to model other hypervisors or missing privileges;
//   - synthetic MSRs with their reset values and rules, #GP included (FakePartition,
//     fake_partition.h): a #GP fails ReadMsr/WriteMsr with InvalidArgument("#GP: …") and is
//     recorded, as are preserve-bit changes, so a test can check both;
//   - the SynIC: per-VP, per-SINT message queues behind the one message slot, MessagePending
//     and EOM; event flags that raise the SINT only on 0 → 1;
//   - hypercalls: refused with the HV_STATUS Hyper-V would answer (fake_hypercalls.h), and
//     INVALID_CONNECTION_ID / INVALID_PARAMETER for unknown connections / flag numbers;
//   - guest memory: pages with guest physical addresses (fake_guest_memory.h), the fake's own
//     or a buffer it is given (FakeHypervisorOptions::external_memory);
//   - interrupts: one thread per VP delivers the vectors raised on it to the handler
//     registered for them, one at a time, highest vector first (as a local APIC would); after
//     each handler the fake does the APIC EOI's work (a retry of non-auto-EOI SINTs).
//
// The host side is this class's other half, for tests and for the bridge to the mock host
// (mock_host_bridge.h):
// message connections the guest posts to (a handler per connection, and a record), event
// connections it signals, queueing a message into a VP's SINT slot, setting an event flag on
// a VP, views of guest memory and of the guest → host monitor and interrupt pages, and a switch
// that makes HvPostMessage answer a transient status N times or until cleared.
//
// Example:
//   FakeHypervisor hv(FakeHypervisorOptions{.vp_count = 2});
//   hv.AddMessageConnection(kVmbusMessageConnectionIdV5, [&](const PostedMessage& m) {
//     hv.QueueMessage(0, kVmbusMessageSint, kVmbusMessageType, reply).IgnoreError();
//   });
//   ... EnableHypercallPage(hv, 0, guest_os_id, page_gpa); Synic over &hv; HvPostMessage ...
//   ASSERT_TRUE(hv.WaitForIdle(absl::Now() + absl::Seconds(10)));
//   EXPECT_THAT(hv.TakeFaults(), IsEmpty());
//
// Thread safety: every method may be called from any thread. Host handlers run on the
// calling guest thread, outside the fake's lock (they may call back into the fake), possibly
// concurrently with each other. Interrupt handlers run on their VP's thread, outside the lock.
// Lifetime: destroy what the guest built on the fake (Synic, Pages) first; the destructor
// stops and joins the VP threads.
#ifndef VBUS_HYPERV_TESTING_FAKE_HYPERVISOR_H_
#define VBUS_HYPERV_TESTING_FAKE_HYPERVISOR_H_

#include <bitset>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "hyperv/platform.h"
#include "hyperv/testing/fake_guest_memory.h"
#include "hyperv/testing/fake_hypercalls.h"
#include "hyperv/testing/fake_partition.h"

namespace vbus::hyperv::testing {

struct FakeHypervisorOptions {
  // 1..kMaxVps virtual processors, each with its interrupt thread.
  uint32_t vp_count = 1;
  // Guest memory, in 4096-byte pages.
  size_t memory_pages = 256;
  // Guest memory the fake does not own (e.g. a mock guest-memory file's data pages); when
  // set, memory_pages is not used. It must outlive the fake.
  std::optional<FakeGuestMemory::External> external_memory = std::nullopt;
  // CPUID 0x40000004 EAX bit 9: recommend against auto-EOI.
  bool deprecate_auto_eoi = false;
  // CPUID 0x40000003 EDX bit 17: SINT polling available.
  bool sint_polling_available = false;
  // Non-zero preserve bits at reset (FakePartition::Config).
  bool reserved_bit_pattern = true;
};

// A message the guest posted (HvPostMessage) that the host accepted.
struct PostedMessage {
  uint32_t connection_id = 0;
  uint32_t message_type = 0;
  std::vector<uint8_t> payload;
};

// An event the guest signalled (HvSignalEvent) that the host accepted.
struct SignalledEvent {
  uint32_t connection_id = 0;
  uint16_t flag_number = 0;
};

class FakeHypervisor final : public HvPlatform {
 public:
  static constexpr uint32_t kMaxVps = 64;

  explicit FakeHypervisor(FakeHypervisorOptions options = FakeHypervisorOptions());
  FakeHypervisor(const FakeHypervisor&) = delete;
  FakeHypervisor& operator=(const FakeHypervisor&) = delete;
  ~FakeHypervisor() override;

  // ---- HvPlatform (the guest's side) -----------------------------------------------------
  uint32_t vp_count() const override { return vp_count_; }
  CpuidResult Cpuid(uint32_t leaf) override;
  absl::StatusOr<uint64_t> ReadMsr(uint32_t vp, uint32_t msr) override;
  absl::Status WriteMsr(uint32_t vp, uint32_t msr, uint64_t value) override;
  uint64_t Hypercall(uint64_t control, uint64_t input_gpa, uint64_t output_gpa) override;
  uint64_t FastHypercall(uint64_t control, uint64_t in0, uint64_t in1) override;
  absl::StatusOr<Pages> AllocatePages(size_t count) override;
  absl::Status RegisterInterrupt(uint32_t vp, uint8_t vector,
                                 std::function<void()> handler) override;
  void UnregisterInterrupt(uint32_t vp, uint8_t vector) override;

  // ---- CPUID -----------------------------------------------------------------------------
  // SetCpuid
  // What Cpuid(leaf) answers from now on (the defaults: a Hyper-V partition, docs/hyperv.md
  // §12).
  void SetCpuid(uint32_t leaf, CpuidResult result);

  // ---- The host's side -------------------------------------------------------------------
  using PostHandler = std::function<void(const PostedMessage&)>;
  using SignalHandler = std::function<void(const SignalledEvent&)>;

  // AddMessageConnection / RemoveMessageConnection
  // Opens (or replaces) / closes a connection the guest may post to. Posts to a connection
  // that is not open fail with HV_STATUS_INVALID_CONNECTION_ID. An accepted post is recorded
  // (TakePosted) and then handed to `handler`, if any.
  void AddMessageConnection(uint32_t connection_id, PostHandler handler = nullptr);
  void RemoveMessageConnection(uint32_t connection_id);

  // AddEventConnection / RemoveEventConnection
  // The same for HvSignalEvent; flag numbers at or above `flag_count` fail with
  // HV_STATUS_INVALID_PARAMETER.
  void AddEventConnection(uint32_t connection_id, uint16_t flag_count = 1,
                          SignalHandler handler = nullptr);
  void RemoveEventConnection(uint32_t connection_id);

  // InjectPostMessageStatus / ClearPostMessageStatus
  // Makes the next `times` HvPostMessage calls that pass validation answer `hv_status`
  // (default HV_STATUS_INSUFFICIENT_BUFFERS) without delivering the message; nullopt = until
  // cleared. Clear ends it at once.
  void InjectPostMessageStatus(std::optional<int> times,
                               uint16_t hv_status = kHvStatusInsufficientBuffers);
  void ClearPostMessageStatus();

  // QueueMessage
  // Host → guest: queues a message for `sint` on `vp` (FakePartition::QueueMessage's rules).
  absl::Status QueueMessage(uint32_t vp, uint32_t sint, uint32_t message_type,
                            absl::Span<const uint8_t> payload, uint64_t sender = 0);

  // SetEventFlag
  // Host → guest: sets `flag` in `sint`'s event flags on `vp`; true if it was clear (the
  // interrupt was raised). FakePartition::SetEventFlag's errors.
  absl::StatusOr<bool> SetEventFlag(uint32_t vp, uint32_t sint, uint32_t flag);

  // HostView
  // The guest memory at [gpa, gpa + bytes), as the host sees it; InvalidArgument if any of
  // it lies outside guest memory.
  absl::StatusOr<absl::Span<uint8_t>> HostView(uint64_t gpa, size_t bytes);

  // TakeMonitorTriggers
  // Test-and-clears the pending bits of the four trigger groups of the guest → host monitor
  // page at `monitor_page_gpa`; returns the triggered monitor ids (group * 32 + bit),
  // ascending. InvalidArgument if the page is not guest memory.
  absl::StatusOr<std::vector<uint32_t>> TakeMonitorTriggers(uint64_t monitor_page_gpa);

  // TakeInterruptPageBits
  // Test-and-clears the send half (the second 2048 bytes) of the interrupt page at
  // `interrupt_page_gpa`; returns the set bit numbers (relids), ascending.
  absl::StatusOr<std::vector<uint32_t>> TakeInterruptPageBits(uint64_t interrupt_page_gpa);

  // ---- Records ---------------------------------------------------------------------------
  // What happened since the last Take, in order. Faults not tied to a VP carry VP 0.
  std::vector<PostedMessage> TakePosted();
  std::vector<SignalledEvent> TakeSignals();
  std::vector<FakeMsrWrite> TakeMsrWrites();
  std::vector<FakeFault> TakeFaults();
  // Hypercalls made (refused ones included).
  uint64_t hypercall_count() const;
  // Messages waiting behind `sint`'s slot on `vp`.
  size_t queued_messages(uint32_t vp, uint32_t sint) const;
  // Guest memory pages AllocatePages can still hand out.
  size_t free_pages() const { return memory_->free_pages(); }

  // WaitForIdle
  // Waits until no VP has an interrupt pending or a handler running; false if `deadline`
  // passed first. Call it from outside the interrupt handlers.
  bool WaitForIdle(absl::Time deadline);

 private:
  struct VpThread {
    std::bitset<256> pending;  // raised vectors not yet delivered
    std::map<uint8_t, std::shared_ptr<const std::function<void()>>> handlers;
    int running = -1;  // the vector whose handler runs now, or -1
    std::condition_variable wake;
    std::thread thread;
  };
  struct EventConnection {
    uint16_t flag_count = 1;
    SignalHandler handler;
  };

  // The hypercall entry shared by both forms (the fast bit decides).
  uint64_t Call(uint64_t control, uint64_t rdx, uint64_t r8);
  uint16_t Post(PostMessageCall call);
  uint16_t Signal(SignalEventCall call);
  // Hands the partition's raised interrupts to the VP threads. Requires mu_.
  void DispatchLocked();
  void ClearPostMessageStatusLocked();
  void VpLoop(uint32_t vp);
  bool IdleLocked() const;
  void InstallDefaultCpuid(const FakeHypervisorOptions& options);

  const uint32_t vp_count_;
  const std::unique_ptr<FakeGuestMemory> memory_;

  // Guards everything below (std::mutex: see docs/hyperv.md §12 on why not vbus::Mutex).
  mutable std::mutex mu_;
  std::condition_variable changed_;  // a handler finished or a VP went idle
  bool stopping_ = false;
  FakePartition partition_;
  std::map<uint32_t, CpuidResult> cpuid_;
  std::map<uint32_t, PostHandler> message_connections_;
  std::map<uint32_t, EventConnection> event_connections_;
  std::optional<uint16_t> injected_status_;
  std::optional<int> injected_left_;  // nullopt: until cleared
  std::vector<PostedMessage> posted_;
  std::vector<SignalledEvent> signals_;
  uint64_t hypercalls_ = 0;
  std::vector<std::unique_ptr<VpThread>> vps_;
};

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_FAKE_HYPERVISOR_H_
