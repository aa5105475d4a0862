// MockHostBridge (testonly): the mock host (mock/host) as the VMBus host behind a
// FakeHypervisor, so that a guest's HyperVBackend, and a ChannelBus over it, runs against the
// same host emulator, devices and HostControl operator as a guest on MockBackend.
//
// The bridge plays two parts at once. Towards the guest it is the hypervisor's host side
// (fake_hypervisor.h): message connections, event connections, SINT2 messages and event
// flags. Towards the mock host it is an ordinary guest: it creates the shared guest-memory
// file (mock/guest_memory.h), attaches over a GuestLink stream (mock/guest/
// guest_link_stream.h, as MockBackend does) and signals through the file's event pages and
// doorbells. What crosses, and how:
//
//   guest memory     one set of bytes. The FakeHypervisor's guest memory is the file's data
//                    pages (FakeHypervisorOptions::external_memory), numbered as the file
//                    numbers them: a PFN the guest puts in a GPADL is the PFN the mock host
//                    maps, so rings need no copying. The file's special pages (event pages,
//                    doorbells, monitor pages) are the mock platform's, like a hypervisor's
//                    own pages, and not guest memory.
//   guest → host     HvPostMessage on connection 1 or 4 (docs/hyperv.md §11): the wire bytes
//   messages         are decoded (hyperv/wire.h; GPADL_HEADER + GPADL_BODY reassembled into one
//                    GpadlCreate) and written on the stream as the neutral ControlMessage. The
//                    bridge rewrites InitiateContact's page addresses to the mock's pages (the
//                    mock host reads its own layout; below 5.0 it refuses any other interrupt
//                    page) and remembers the guest's own, whose bits it relays.
//   host → guest     each control message from the stream is encoded (EncodeMessage) and
//   messages         queued into the SINT named by the guest's InitiateContact (2) on its
//                    target VP, in stream order.
//   guest → host     HvSignalEvent on an offer's connection id sets the relid's bit in the
//   signals          mock's host event page and rings the host doorbell (GuestMemory::
//                    SignalChannel, as MockBackend::SignalHost). A monitored channel makes no
//                    hypercall: a scanner takes the trigger bits of the guest's own monitor
//                    page 2 every monitor_latency (as Hyper-V scans it) and passes each to the
//                    mock's monitor page 2 with its relid's bit. Below 5.0 the guest's
//                    interrupt page's send half is taken and passed on with every signal.
//   host → guest     one thread per VP waits on that VP's guest doorbell in the file (read the
//   signals          value, scan, wait with a deadline), test-and-clears the VP's relid bits
//                    of the guest event page and sets each as an event flag of SINT2 on the
//                    same VP (SetEventFlag), raising the guest's interrupt. The stream's
//                    slow-path `signal` messages do the same.
//
// What the bridge keeps of the conversation: the guest's InitiateContact (its message VP and
// SINT, its own pages), the connection the host's VersionResponse returns, and one event
// connection per offered connection id, closed when the guest releases the relid or an unload
// is answered. Only answers to the guest's own requests change it: a hostile host's
// VersionResponse or UnloadResponse that nobody asked for passes through to the guest, which
// refuses it, and a second offer of a live relid adds a connection, never takes one away.
//
// Why this split rather than sharing more bytes: the guest allocates its interrupt and
// monitor pages from its own memory and names them in InitiateContact, after the file's
// layout was fixed at attach, and the guest's SynIC pages are per VP where the file has one
// event bitmap per VP; relaying is what a hypervisor does anyway, and it keeps both sides'
// page formats untouched.
//
// The host going away. A Hyper-V guest has no "host lost" notice (HyperVBackend never calls
// OnHostLost). When the stream ends without Stop, the bridge removes every connection it
// opened: the host's ports are gone. Later posts then fail with INVALID_CONNECTION_ID, which
// the backend retries until its post timeout and reports as ResourceExhausted; signals fail
// at once with NotFound; requests in flight end at their deadlines. link_up() tells a test.
//
// Example:
//   MockHostBridgeOptions options;
//   options.guest_name = "vm-1";
//   ASSIGN_OR_RETURN(std::unique_ptr<MockHostBridge> bridge,
//                    MockHostBridge::Connect(server->InProcessChannel(), std::move(options)));
//   RETURN_IF_ERROR(bridge->Start());
//   HyperVBackendOptions hv;  // vector, vp_count = bridge->hypervisor().vp_count(), ...
//   hv.guest_os_id = kBridgeGuestOsId;
//   ASSIGN_OR_RETURN(auto backend, HyperVBackend::Create(bridge->hypervisor(), hv));
//   ASSIGN_OR_RETURN(auto bus, ChannelBus::Create(backend.get(), {}));
//   // ... destroy the bus, then the backend, then the bridge.
//
// Thread safety: every method may be called from any thread. The fake runs the bridge's post
// and signal handlers on the guest's posting and signalling threads. Lifetime: the bridge owns
// the guest memory and the FakeHypervisor; whatever the guest built on the fake (a
// HyperVBackend and its Pages) must be destroyed before the bridge.
#ifndef VBUS_HYPERV_TESTING_MOCK_HOST_BRIDGE_H_
#define VBUS_HYPERV_TESTING_MOCK_HOST_BRIDGE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
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
#include "core/data/protocol.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "hyperv/testing/fake_hypervisor.h"
#include "hyperv/tlfs.h"
#include "hyperv/wire.h"
#include "mock/guest/guest_link_stream.h"
#include "mock/guest_memory.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"

namespace vbus::hyperv::testing {

// A GUEST_OS_ID for a HyperVBackend on the bridge's fake (it enables the hypercall page
// itself): an open-source Linux-type guest.
inline constexpr uint64_t kBridgeGuestOsId = OpenSourceGuestOsId(kGuestOsTypeLinux, 0, 0x60100, 1);

struct MockHostBridgeOptions {
  // Sent in the Attach; unique among the guests of one host.
  std::string guest_name = "vbus-hyperv-guest";
  // The guest-memory file (a multiple of 4096; the mock's special pages come first, the rest
  // is the fake's guest memory).
  uint64_t memory_bytes = uint64_t{64} << 20;
  // The fake's VPs, and the VPs the mock host signals (1..mock::kMaxGuestVps).
  uint32_t vp_count = 1;
  // Whether message connection 4 exists (hosts of protocol 5.0 and later). Without it an
  // InitiateContact for 5.0 or later fails with INVALID_CONNECTION_ID and the guest falls
  // back to 4.1 on connection 1.
  bool connection_v5 = true;
  // The rest of the fake's options (vp_count and external_memory are the bridge's).
  FakeHypervisorOptions hypervisor = {};
  // How long Start waits for the host's `attached`.
  absl::Duration attach_timeout = absl::Seconds(10);
  // The doorbell threads look for Stop at least this often.
  absl::Duration doorbell_slice = absl::Milliseconds(100);
  // How long a doorbell thread polls its doorbell (yielding the CPU between looks) before it
  // sleeps on it, as a hypervisor's halt polling does: a ring within the window costs the
  // ringer no FUTEX_WAKE and this thread no sleep and wake-up. Zero: sleep at once.
  absl::Duration doorbell_poll = absl::Microseconds(20);
  // How often the guest's monitor page is scanned while a monitored channel is offered.
  absl::Duration monitor_latency = absl::Milliseconds(1);
  // Log lines (dropped messages, the end of the stream); empty = stderr.
  std::function<void(absl::string_view)> log = nullptr;
};

// MockHostBridgeStats: counters since creation (relaxed snapshots).
struct MockHostBridgeStats {
  uint64_t posts_forwarded = 0;   // ControlMessages written to the stream (GPADLs whole)
  uint64_t posts_dropped = 0;     // posts not forwarded: not a VMBus message, no decode, no link
  uint64_t misrouted_posts = 0;   // forwarded, but on a connection §11 does not name for them
  uint64_t messages_queued = 0;   // host ControlMessages queued into the guest's SINT
  uint64_t messages_dropped = 0;  // host messages not queued (cannot be encoded, refused)
  uint64_t event_signals = 0;     // HvSignalEvents relayed to the mock host
  uint64_t monitor_signals = 0;   // monitor triggers relayed to the mock host
  uint64_t host_events = 0;       // event flags set on the guest (doorbell and stream signals)
  uint64_t events_dropped = 0;    // host events the fake refused (the VP's SynIC is off)
  uint64_t protocol_errors = 0;   // ProtocolError replies from the host
};

class MockHostBridge {
 public:
  // Create
  // Creates the guest-memory file and the FakeHypervisor over its data pages, and keeps `open`
  // for Start. InvalidArgument for a vp_count outside 1..mock::kMaxGuestVps or a null opener;
  // GuestMemory::Create's errors.
  static absl::StatusOr<std::unique_ptr<MockHostBridge>> Create(mock::GuestLinkOpener open,
                                                                MockHostBridgeOptions options);
  // Create with streams on `channel` (e.g. MockHostServer::InProcessChannel()).
  static absl::StatusOr<std::unique_ptr<MockHostBridge>> Connect(
      std::shared_ptr<grpc::ChannelInterface> channel, MockHostBridgeOptions options);

  // Stops, then destroys the fake and the guest memory.
  ~MockHostBridge();
  MockHostBridge(const MockHostBridge&) = delete;
  MockHostBridge& operator=(const MockHostBridge&) = delete;

  // Start
  // Attaches to the mock host and waits for `attached` (attach_timeout), then opens message
  // connections 1 and 4 on the fake and starts the doorbell and monitor threads. Unavailable if
  // the host cannot be reached or ends the stream; DeadlineExceeded if it does not answer;
  // FailedPrecondition if started before.
  absl::Status Start();

  // Stop
  // Closes every connection on the fake (later guest posts and signals fail as above), stops
  // the threads, half-closes the stream so the host detaches the guest (a bounded wait), then
  // cancels it. Idempotent; every wait has a deadline.
  void Stop();

  FakeHypervisor& hypervisor() const { return *hv_; }
  mock::GuestMemory& memory() const { return *memory_; }
  // Whether the stream is attached and has not ended.
  bool link_up() const;
  // The id the host gave the guest (empty before Start succeeded).
  std::string guest_id() const;
  MockHostBridgeStats stats() const;

 private:
  MockHostBridge(mock::GuestLinkOpener open, MockHostBridgeOptions options,
                 std::unique_ptr<mock::GuestMemory> memory, std::unique_ptr<FakeHypervisor> hv);

  // Guest → host (the guest's posting thread).
  void OnPost(const PostedMessage& posted);
  // Notes what the guest's message changes (contact pages, released relids, unload) and
  // rewrites InitiateContact's pages to the mock's.
  void FromGuest(uint32_t connection_id, v1::ControlMessage* message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(post_mu_);
  void Write(const v1::ControlMessage& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(post_mu_);
  void OnSignal(uint32_t relid);
  // Sets the relid's bit in the host event page (and the trigger, for a monitored channel),
  // after passing on the guest's interrupt-page bits below 5.0.
  void Relay(uint32_t relid, std::optional<uint32_t> monitor_id);
  void RelayInterruptPage();

  // Host → guest (the reader thread).
  void ReadLoop();
  void HandleHostMessage(v1::HostToGuest* message);
  void ToGuest(const v1::ControlMessage& message);
  // Notes what the host's message changes (offers, the negotiated connection, unload).
  void FromHost(const v1::ControlMessage& message);
  void RaiseEvent(uint32_t vp, uint32_t relid);
  void DoorbellLoop(uint32_t vp);
  void MonitorLoop();

  // Removes the event connections and monitor ids of `relid` (released by the guest), or of
  // every relid (an answered unload, link loss, Stop). Require no lock.
  void ForgetRelid(uint32_t relid);
  void ForgetChannels();
  // The monitor ids mapped to a relid. Requires mu_.
  size_t MonitoredLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseConnections();
  void OnLinkLost(const absl::Status& why);
  void Log(absl::string_view line) const;

  const mock::GuestLinkOpener open_;
  const MockHostBridgeOptions options_;
  // Declared before hv_: the fake's guest memory lives in this file.
  const std::unique_ptr<mock::GuestMemory> memory_;
  const std::unique_ptr<FakeHypervisor> hv_;

  // The stream: written under write_mu_ (posts, Stop), read by the reader thread, finished
  // by the reader thread under write_mu_ (gRPC forbids Finish concurrently with Write).
  grpc::ClientContext context_;
  std::unique_ptr<mock::GuestLinkStream> stream_;
  Mutex write_mu_;
  bool writes_open_ ABSL_GUARDED_BY(write_mu_) = false;

  // Serialises posts: one decoder, and messages reach the stream in the order they were
  // posted.
  Mutex post_mu_;
  WireDecoder decoder_ ABSL_GUARDED_BY(post_mu_);

  Mutex stop_mu_;  // serialises Stop

  mutable Mutex mu_;
  CondVar cv_;  // attached_, ended_, stopping_ or the monitored channels changed
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool attached_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool link_up_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  std::string guest_id_ ABSL_GUARDED_BY(mu_);
  // From the guest's last InitiateContact.
  uint32_t message_vp_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t message_sint_ ABSL_GUARDED_BY(mu_) = kVmbusMessageSint;
  uint32_t contact_version_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t guest_monitor_page2_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t guest_interrupt_page_ ABSL_GUARDED_BY(mu_) = 0;  // below 5.0 only
  // The connection later messages must use: 1, or the host's VersionResponse's from 5.0.
  uint32_t message_connection_ ABSL_GUARDED_BY(mu_) = kVmbusMessageConnectionId;
  // Requests of the guest's whose answer changes the bridge's state. An answer nobody asked
  // for (a hostile host's) changes nothing here: the guest refuses it too.
  bool contact_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool unload_pending_ ABSL_GUARDED_BY(mu_) = false;
  // The event connections the host's offers opened: connection id → relid. Only the guest's
  // release of a relid (or an unload, link loss, Stop) closes them: a second offer naming a
  // live relid (which the guest refuses) adds, never takes away.
  std::map<uint32_t, uint32_t> connection_relid_ ABSL_GUARDED_BY(mu_);
  // Monitor id → relid (0: none), the latest offer's.
  std::array<uint32_t, protocol::kMonitorIdCount> monitor_relid_ ABSL_GUARDED_BY(mu_) = {};

  std::thread reader_;
  std::vector<std::thread> doorbells_;  // one per VP
  std::thread monitor_;
  // Relaxed: the doorbell threads' stop flag, besides stopping_ (they wait on futexes).
  std::atomic<bool> stop_doorbells_{false};

  // Counters (relaxed).
  std::atomic<uint64_t> posts_forwarded_{0};
  std::atomic<uint64_t> posts_dropped_{0};
  std::atomic<uint64_t> misrouted_posts_{0};
  std::atomic<uint64_t> messages_queued_{0};
  std::atomic<uint64_t> messages_dropped_{0};
  std::atomic<uint64_t> event_signals_{0};
  std::atomic<uint64_t> monitor_signals_{0};
  std::atomic<uint64_t> host_events_{0};
  std::atomic<uint64_t> events_dropped_{0};
  std::atomic<uint64_t> protocol_errors_{0};
};

}  // namespace vbus::hyperv::testing

#endif  // VBUS_HYPERV_TESTING_MOCK_HOST_BRIDGE_H_
