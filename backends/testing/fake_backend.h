// FakeBackend (testonly): an in-process Backend whose "host" is the test.
//
// It keeps what the bus posts and signals, delivers whatever host messages the test injects
// (synchronously, on the test's thread, honouring PauseDelivery), owns a receive event page
// and a PagePool over heap memory. Runtime tests (ChannelBus, Channel) use it to drive every
// path without gRPC or a mock host; the state machine's own tests do not need it.
//
// Example:
//   FakeBackend backend;
//   ChannelBus bus(&backend, options);          // part 2's runtime
//   backend.DeliverToGuest(version_response);   // calls the listener's OnHostMessage
//   std::vector<v1::ControlMessage> posted = backend.TakePosted();
//   backend.RaiseEvent(7);                      // sets relid 7's bit, calls OnEventsPending
//
// Thread safety: every method may be called from any thread. Deliveries run on the thread
// that calls DeliverToGuest / ResumeDelivery / RaiseEvent / LoseHost, outside the lock.
#ifndef VBUS_BACKENDS_TESTING_FAKE_BACKEND_H_
#define VBUS_BACKENDS_TESTING_FAKE_BACKEND_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "backends/backend.h"
#include "backends/page_pool.h"
#include "core/runtime/sync.h"

namespace vbus::testing {

class FakeBackend final : public Backend {
 public:
  // `data_pages` pages for AllocatePages, with PFNs from kFirstDataPfn; `vp_count` virtual
  // processors (1..kMaxVps), each with its receive event flags.
  static constexpr uint64_t kFirstDataPfn = 16;
  static constexpr uint32_t kMaxVps = protocol::kPageSize / kEventFlagBytes;
  explicit FakeBackend(size_t data_pages = 256, ContactInfo contact = ContactInfo{},
                       uint32_t vp_count = 1);
  ~FakeBackend() override;

  // ---- Backend --------------------------------------------------------------------------
  absl::Status Start(BackendListener* listener) override;
  void Stop() override;
  ContactInfo contact_info() const override { return contact_; }
  absl::Status PostMessage(const v1::ControlMessage& message) override;
  void SetConnection(const NegotiatedConnection& connection) override;
  void PauseDelivery() override;
  void ResumeDelivery() override;
  absl::Status SignalHost(const ChannelSignal& signal) override;
  uint32_t vp_count() const override { return vp_count_; }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override;
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override;

  // ---- The test's side (the host) -------------------------------------------------------

  // DeliverToGuest
  // Hands `message` to the listener now (on this thread), or queues it while paused or while
  // another delivery runs. FailedPrecondition before Start, after Stop or after LoseHost.
  absl::Status DeliverToGuest(v1::ControlMessage message);

  // RaiseEvent
  // Sets relid's bit in VP `vp`'s receive event flags and calls OnEventsPending(vp).
  // InvalidArgument for relid 0 or >= 2048 or a VP out of range; FailedPrecondition when not
  // started.
  absl::Status RaiseEvent(uint32_t relid, uint32_t vp = 0);

  // LoseHost
  // Drops queued messages and calls OnHostLost(status) once; later posts and signals fail
  // with Unavailable. Call it while no DeliverToGuest runs (as the contract's "after the last
  // OnHostMessage" requires).
  void LoseHost(absl::Status status);

  // FailNextPost
  // The next PostMessage returns `status` (and does not record the message).
  void FailNextPost(absl::Status status);

  // What the guest did: posted messages and signals in order (taken = cleared), the
  // connection from SetConnection.
  std::vector<v1::ControlMessage> TakePosted();
  std::vector<ChannelSignal> TakeSignals();
  std::optional<NegotiatedConnection> connection() const;
  bool paused() const;
  size_t queued_messages() const;
  PagePool& pool() { return *pool_; }
  // Successful allocations asked for as `sharing` (all memory here is the host's to read).
  size_t allocations(PageSharing sharing) const;

 private:
  // Delivers queued messages unless paused or another thread is delivering.
  void Drain();

  const ContactInfo contact_;
  const uint32_t vp_count_;
  uint8_t* memory_ = nullptr;  // event page (first page: 256 bytes per VP) + data pages
  std::unique_ptr<PagePool> pool_;

  // Waits until no other thread is inside OnHostMessage (Pause) or inside any listener call
  // (Stop); bounded like every wait in vbus: a listener stuck for a minute is a test bug.
  void AwaitNoOtherDelivery() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AwaitNoOtherListenerCall() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brackets a listener call made outside mu_ (events, host lost): Stop waits for it.
  void EnterListener() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LeaveListener();

  mutable Mutex mu_;
  CondVar changed_;  // a delivery or listener call ended
  BackendListener* listener_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool host_lost_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  // The thread running OnHostMessage, if any (a Pause from it must not wait for itself).
  std::optional<std::thread::id> delivering_ ABSL_GUARDED_BY(mu_);
  // Threads inside a listener call (by count), so that Stop returns only once they left.
  std::map<std::thread::id, int> in_listener_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::ControlMessage> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ControlMessage> posted_ ABSL_GUARDED_BY(mu_);
  std::vector<ChannelSignal> signals_ ABSL_GUARDED_BY(mu_);
  std::optional<NegotiatedConnection> connection_ ABSL_GUARDED_BY(mu_);
  size_t allocations_[2] ABSL_GUARDED_BY(mu_) = {0, 0};  // by PageSharing
  std::optional<absl::Status> fail_next_post_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vbus::testing

#endif  // VBUS_BACKENDS_TESTING_FAKE_BACKEND_H_
