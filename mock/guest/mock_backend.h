// MockBackend: the Backend (backends/backend.h) that connects a guest's ChannelBus to the mock
// host (mock/host) — in the same process or in another one.
//
// What it does, per Backend duty:
//   - memory: creates the shared guest-memory file (mock/guest_memory.h; a sealed memfd by
//     default) with the standard layout, and hands out its data pages through a PagePool
//     (PFN = file offset / 4096);
//   - control messages: opens one GuestLink.Connect stream, attaches (name, memory path, size,
//     layout, accepts_batches), then posts every ControlMessage on the stream as it is
//     (PostMessage queues it for a writer thread, which writes what queued up as one
//     ControlBatch when the host accepts batches, else as a burst with one flush; a failed
//     write ends the link, reported through OnHostLost by the reader); a reader thread
//     delivers the host's ControlMessages in order (a batch's one by one; an empty or
//     over-long batch is logged, counted and dropped), honouring PauseDelivery, turns
//     slow-path `signal` messages into events, and logs the host's ProtocolError replies;
//   - host messages that do not parse (malformed protobuf, invalid UTF-8 in a `string` field):
//     the reader reads raw bytes and parses them itself (mock/guest/guest_link_stream.h), so
//     such a message is one bad message, never the end of the link: it is counted
//     (messages_unparsable), logged with what did not parse (field path, fault, an escaped
//     preview of the bytes) and dropped, and the stream goes on — later messages are
//     delivered, posts keep flowing. A dropped control message or batch is lost like a
//     malformed batch: the bus's waits for it end at their deadlines. One exception: before
//     `attached`, a message that does not parse and may be the `attached` (its kind is
//     `attached`, or unreadable) ends the attach at once — Start fails with Unavailable naming
//     what did not parse — instead of waiting out attach_timeout;
//   - host text (ProtocolError messages, the host's status message when the stream ends)
//     reaches log lines and Status messages only through vbus::HostText (escaped, bounded);
//   - events host → guest: the guest takes events on options.vp_count virtual processors; per
//     VP a doorbell thread waits on that VP's futex doorbell (in deadline slices, so Stop is
//     prompt) and raises OnEventsPending(vp) whenever it rang; VP v's receive event flags are
//     its 256 bytes of the guest event page of the file (mock/guest_memory.h);
//   - signals guest → host: SignalHost sets the relid's bit in the host event page and rings
//     the host's doorbell only if the bit was clear (so a burst of signals costs one wake-up);
//     a monitored channel sets its monitor bit instead (the host scans those periodically).
// No RPC is on the data path: packets move through rings in the shared file.
//
// The stream comes from a GuestLinkOpener (mock/guest/guest_link_stream.h), so a test can hand
// in its own stream (a scripted or failing host) instead of a real channel.
//
// Example:
//   ASSIGN_OR_RETURN(std::unique_ptr<MockBackend> backend,
//                    MockBackend::Dial("unix:/tmp/mock_host.sock", {.guest_name = "agent-1"}));
//   ASSIGN_OR_RETURN(std::unique_ptr<ChannelBus> bus, ChannelBus::Create(backend.get(), {}));
//   // bus->Connect(...), channels, ...; destroy the bus before the backend.
//
// Thread safety: as Backend. The backend must outlive every Pages it handed out.
#ifndef VBUS_MOCK_GUEST_MOCK_BACKEND_H_
#define VBUS_MOCK_GUEST_MOCK_BACKEND_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "backends/backend.h"
#include "backends/page_pool.h"
#include "core/data/event_page.h"
#include "core/runtime/sync.h"
#include "core/runtime/work_queue.h"
#include "grpcpp/grpcpp.h"
#include "mock/guest/guest_link_stream.h"
#include "mock/guest_memory.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

struct MockBackendOptions {
  // Sent in Attach; must be unique among the guests attached to one host.
  std::string guest_name = "vbus-guest";
  // Size of the shared guest-memory file (a multiple of 4096; the special pages come first).
  uint64_t memory_bytes = uint64_t{64} << 20;
  // Where to create it: empty = a sealed memfd (shareable as /proc/<pid>/fd/<n>); otherwise a
  // new file (e.g. under /dev/shm), removed when the backend is destroyed.
  std::string memory_path;
  // How long Start waits for the host's `attached`.
  absl::Duration attach_timeout = absl::Seconds(10);
  // The doorbell threads re-check for Stop at least this often while no doorbell rings.
  absl::Duration doorbell_slice = absl::Milliseconds(100);
  // How long a doorbell thread polls its doorbell (yielding the CPU between looks) before it
  // sleeps on it, as a hypervisor's halt polling does: a ring within the window costs the
  // ringer no FUTEX_WAKE and this thread no sleep and wake-up. Zero: sleep at once.
  absl::Duration doorbell_poll = absl::Microseconds(20);
  // Virtual processors the guest takes host events on (1..kMaxGuestVps), each with its event
  // flags, doorbell and doorbell thread. Sent to the host in the Attach's memory layout.
  uint32_t vp_count = 1;
  // Log lines (host ProtocolErrors, the end of the stream); empty = stderr.
  std::function<void(absl::string_view)> log;
};

// MockBackendStats: counters since creation (relaxed snapshots).
struct MockBackendStats {
  uint64_t messages_posted = 0;
  uint64_t messages_delivered = 0;
  uint64_t protocol_errors = 0;      // ProtocolError replies from the host
  uint64_t doorbell_wakeups = 0;     // the guest doorbell rang (OnEventsPending raised)
  uint64_t stream_signals = 0;       // slow-path Signal messages from the host
  uint64_t host_doorbells = 0;       // SignalHost calls that rang the host's doorbell
  uint64_t signals_coalesced = 0;    // SignalHost calls whose event bit was already set
  uint64_t monitor_signals = 0;      // SignalHost calls for monitored channels
  uint64_t batches_posted = 0;       // stream messages that carried a ControlBatch to the host
  uint64_t batches_received = 0;     // ControlBatches from the host, delivered
  uint64_t batches_refused = 0;      // malformed ControlBatches from the host (empty, too long)
  uint64_t messages_unparsable = 0;  // host stream messages whose bytes did not parse, dropped
};

class MockBackend final : public Backend {
 public:
  // Create
  // Creates the guest memory (errors: GuestMemory::Create's) and keeps `open` for Start, which
  // opens the GuestLink stream with it.
  static absl::StatusOr<std::unique_ptr<MockBackend>> Create(GuestLinkOpener open,
                                                             MockBackendOptions options = {});
  // Dial: Create with streams on an insecure channel to `target` ("unix:PATH", "HOST:PORT").
  static absl::StatusOr<std::unique_ptr<MockBackend>> Dial(const std::string& target,
                                                           MockBackendOptions options = {});
  // Create with streams on an existing channel (e.g. MockHostServer::InProcessChannel()).
  static absl::StatusOr<std::unique_ptr<MockBackend>> Connect(
      std::shared_ptr<grpc::ChannelInterface> channel, MockBackendOptions options = {});

  // Stops (see Stop). Every Pages handed out must be gone.
  ~MockBackend() override;
  MockBackend(const MockBackend&) = delete;
  MockBackend& operator=(const MockBackend&) = delete;

  // ---- Backend ---------------------------------------------------------------------------
  // Start: opens the stream, attaches and waits for `attached` until attach_timeout.
  // Unavailable if the host cannot be reached or ends the stream (the host's status message
  // is included, e.g. a refused attach); DeadlineExceeded if it does not answer in time;
  // FailedPrecondition if already started.
  absl::Status Start(BackendListener* listener) override;
  void Stop() override;
  ContactInfo contact_info() const override;
  absl::Status PostMessage(const v1::ControlMessage& message) override;
  void SetConnection(const NegotiatedConnection& connection) override;
  void PauseDelivery() override;
  void ResumeDelivery() override;
  absl::Status SignalHost(const ChannelSignal& signal) override;
  uint32_t vp_count() const override { return memory_->layout().vp_count; }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override;
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override;
  // The shared file's pages mapped a second time (GuestMemory::MapRingMirrored).
  absl::StatusOr<MirroredMapping> MapRingMirrored(const Pages& pages, size_t first_page,
                                                  size_t page_count) override;

  // ---- Mock specifics --------------------------------------------------------------------
  // The id the host gave this guest (empty before Start succeeded).
  std::string guest_id() const;
  GuestMemory& memory() const { return *memory_; }
  PagePool& pool() const { return *pool_; }
  // Host messages held back by PauseDelivery (for tests and diagnostics).
  size_t held_messages() const;
  // The connection SetConnection recorded, if any.
  std::optional<NegotiatedConnection> connection() const;
  MockBackendStats stats() const;

 private:
  MockBackend(GuestLinkOpener open, MockBackendOptions options, std::unique_ptr<GuestMemory> memory,
              std::unique_ptr<PagePool> pool, std::vector<EventPage> guest_events);

  void ReadLoop();
  // One parsed host message.
  void HandleHostMessage(v1::HostToGuest* message);
  // A host message that did not parse (`why`), about the HostToGuest kind `kind`: counted,
  // logged and dropped. Returns whether to read on (false: it ended the attach, see above).
  bool HandleUnparsable(const absl::Status& why, v1::HostToGuest::KindCase kind);
  bool IsAttached() ABSL_LOCKS_EXCLUDED(mu_);
  // `batches`: the host accepts ControlBatch (its Attached said so).
  void WriteLoop(bool batches);
  void WriterDone();  // the writer thread's last act
  void DoorbellLoop(uint32_t vp);
  // Queues a host message (or a checked batch's messages, in order) and delivers what may be
  // delivered now.
  void Deliver(v1::ControlMessage message);
  void DeliverBatch(v1::ControlBatch* batch);
  void DrainLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(absl::string_view line) const;

  const GuestLinkOpener open_;
  const MockBackendOptions options_;
  const std::unique_ptr<GuestMemory> memory_;
  const std::unique_ptr<PagePool> pool_;
  std::vector<EventPage> guest_events_;  // per VP: host sets bits, the bus scans them

  // The stream. Written by the writer thread (and Start, Stop) under write_mu_; read by the
  // reader thread; finished by the reader thread under write_mu_ (gRPC forbids Finish
  // concurrently with Write).
  grpc::ClientContext context_;
  std::unique_ptr<GuestLinkStream> stream_;
  Mutex write_mu_;

  // Posted messages waiting for the writer thread, which takes them all at once and writes
  // them as ControlBatches (if the host accepts them; else one by one with gRPC's buffer hint
  // on all but the last): a burst of posts (pipelined opens) costs one stream message and one
  // flush, and the bus's control thread never blocks in a gRPC write.
  static constexpr size_t kBatchBytes = size_t{1} << 20;  // a batch stops growing at ~1 MiB
  // Closed by Stop (the writer drains it first) or when a write fails (the rest is dropped).
  WorkQueue<v1::ControlMessage> outbox_;
  std::thread writer_;
  Mutex stop_mu_;  // serialises Stop

  mutable Mutex mu_;
  CondVar cv_;  // attached_, ended_, delivering_, writer_done_ changed
  BackendListener* listener_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool attached_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool writer_done_ ABSL_GUARDED_BY(mu_) = false;  // the writer thread has returned
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<std::thread::id> delivering_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::ControlMessage> queue_ ABSL_GUARDED_BY(mu_);
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  // Why the reader ended the stream itself (an `attached` that does not parse); reported
  // instead of the cancelled call's status.
  absl::Status link_fault_ ABSL_GUARDED_BY(mu_);
  std::string guest_id_ ABSL_GUARDED_BY(mu_);
  std::optional<NegotiatedConnection> connection_ ABSL_GUARDED_BY(mu_);
  bool host_accepts_batches_ ABSL_GUARDED_BY(mu_) = false;  // from `attached`

  // Relaxed: read by SignalHost/PostMessage on hot paths to fail fast after the link is gone.
  std::atomic<bool> link_up_{false};
  std::atomic<bool> stop_doorbell_{false};
  std::thread reader_;
  std::vector<std::thread> doorbells_;  // one per VP

  // Counters (relaxed).
  std::atomic<uint64_t> messages_posted_{0};
  std::atomic<uint64_t> messages_delivered_{0};
  std::atomic<uint64_t> protocol_errors_{0};
  std::atomic<uint64_t> doorbell_wakeups_{0};
  std::atomic<uint64_t> stream_signals_{0};
  std::atomic<uint64_t> host_doorbells_{0};
  std::atomic<uint64_t> signals_coalesced_{0};
  std::atomic<uint64_t> monitor_signals_{0};
  std::atomic<uint64_t> batches_posted_{0};
  std::atomic<uint64_t> batches_received_{0};
  std::atomic<uint64_t> batches_refused_{0};
  std::atomic<uint64_t> messages_unparsable_{0};
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_GUEST_MOCK_BACKEND_H_
