// Channel-bus benchmarks: the control path and the data path of ChannelBus against the
// in-process mock host, through each guest backend, each beside its baseline in the same binary.
//
//   BM_GrpcRoundTrip          one request/answer on a GuestLink-shaped bidirectional stream
//                             (same service, same messages, in-process channel) answered by a
//                             bare echo handler: the price of one control round trip.
//   BM_HandoffRoundTrip       two threads passing a turn back and forth through Mutex +
//                             CondVar: the price of two thread hand-offs (futex wake-ups),
//                             the unit the guest's extra threads add to a control round trip.
//   BM_ChannelLifecycle<K>/N  N channels hot-added by the host, opened (pipelined), closed,
//                             rescinded and released by the guest, per iteration, on backend K:
//                             kMock (MockBackend) or kHyperV (HyperVBackend on the
//                             FakeHypervisor bridged to the same host: every control message
//                             through the binary codec and the SynIC message slot). Reports
//                             channels/s and vs_grpc_rtt = channels/s ÷ round trips/s (an open
//                             alone needs about three round trips); ooc_per_s and
//                             ooc_vs_grpc_rtt: the same rounds timed without their rescind and
//                             release phase (which only makes the relids reusable);
//                             opens_vs_grpc_rtt = opens/s ÷ round trips/s, with opens/s timed
//                             over the open phase alone (from the first OpenAsync to the last
//                             completion); for kHyperV, vs_mock = its channels/s ÷ kMock's.
//   BM_BareRingEcho/B         B-byte packets through a bare ring pair: the guest thread writes
//                             ring A and drains ring B, an echo thread copies each packet from
//                             A to B; both spin (no doorbells, no signals, no bus).
//   BM_MockEcho<K>/B          the same traffic through the whole stack on backend K:
//                             Channel::Send, the mock host's echo device, the receive callback,
//                             with signal suppression and doorbells (MockBackend's futexes, or
//                             HvSignalEvent / event flags through the fake hypervisor).
//                             vs_bare_ring = its bytes/s ÷ BM_BareRingEcho's at the same size;
//                             for kHyperV, vs_mock = its bytes/s ÷ kMock's.
//   BM_MockEchoBatched/B      BM_MockEcho<kMock> with adaptive send batching (16 packets, 100 us):
//                             vs_unbatched = its bytes/s ÷ BM_MockEcho<kMock>'s; batched_share =
//                             the sends that left their signal decision to a later one.
//   BM_MockEchoPolled/B       BM_MockEcho<kMock> with the bare pair's structure: one guest
//                             thread sends and polls (no receive callback); vs_callback = its
//                             bytes/s ÷ BM_MockEcho<kMock>'s.
//   BM_MockSend/B,            sends only, to the host's sink device (the sender's own cost),
//   BM_MockSendBatched/B      without and with adaptive batching; vs_unbatched as above.
//
// Run: bazel run --config=opt //test/bench:bus_bench
// The ratios need the baselines first: run the whole binary (or filter so that each baseline
// runs before its contender; registration order is baseline first).
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "core/data/ring_buffer.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "mock/guest/mock_backend.h"
#include "mock/host/mock_host.h"
#include "proto/mock_host.grpc.pb.h"
#include "test/e2e/e2e_host.h"

namespace vbus {
namespace {

absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

// Baselines measured in this run, for the ratios.
std::atomic<double> g_round_trips_per_second{0};
std::atomic<double> g_bare_bytes_per_second[2] = {0, 0};  // 64 B, 1500 B

// Sets counter `name` to rate ÷ the baseline's rate, if both were measured.
void SetRatio(benchmark::State& state, const char* name, double rate,
              const std::atomic<double>& baseline) {
  if (const double base = baseline.load(); rate > 0 && base > 0) state.counters[name] = rate / base;
}

int SizeSlot(size_t bytes) { return bytes <= 64 ? 0 : 1; }

// ---------------------------------------------------------------------------------------------
// Control path
// ---------------------------------------------------------------------------------------------

// GuestLink answered by a bare echo: each control message comes straight back.
class EchoLink final : public v1::GuestLink::Service {
 public:
  grpc::Status Connect(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::HostToGuest, v1::GuestToHost>* stream) override {
    v1::GuestToHost in;
    v1::HostToGuest out;
    while (stream->Read(&in)) {
      *out.mutable_control() = in.control();
      if (!stream->Write(out)) break;
    }
    return grpc::Status::OK;
  }
};

void BM_GrpcRoundTrip(benchmark::State& state) {
  EchoLink service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  std::unique_ptr<v1::GuestLink::Stub> stub =
      v1::GuestLink::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext context;
  auto stream = stub->Connect(&context);
  // A message like the ones an open sends (an OpenChannel).
  v1::GuestToHost request;
  v1::OpenChannel* open = request.mutable_control()->mutable_open_channel();
  open->set_child_relid(7);
  open->set_open_id(1);
  open->set_ring_buffer_gpadl(0xE1E10);
  open->set_downstream_ring_page_offset(2);
  v1::HostToGuest answer;
  const absl::Time start = absl::Now();
  for (auto _ : state) {
    if (!stream->Write(request) || !stream->Read(&answer)) {
      state.SkipWithError("stream broke");
      break;
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  stream->WritesDone();
  stream->Finish().ok();
  server->Shutdown();
  const double rate = static_cast<double>(state.iterations()) / seconds;
  g_round_trips_per_second.store(rate);
  state.counters["round_trips_per_s"] = rate;
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GrpcRoundTrip)->UseRealTime()->MinTime(1.0);

// Two threads handing a turn back and forth through vbus::Mutex + CondVar, the way the bus
// hands work to its control thread and MockBackend to its writer: the price of two thread
// hand-offs (a futex wake-up each), to set beside a gRPC round trip.
void BM_HandoffRoundTrip(benchmark::State& state) {
  Mutex mu;
  CondVar cv;
  int turn = 0;  // guarded by mu. 1: the partner's move; 0: ours; -1: stop
  std::thread partner([&] {
    MutexLock lock(&mu);
    for (;;) {
      cv.AwaitWithDeadline(&mu, absl::InfiniteFuture(), [&] { return turn != 0; });
      if (turn < 0) return;
      turn = 0;
      cv.SignalAll();
    }
  });
  const absl::Time start = absl::Now();
  for (auto _ : state) {
    MutexLock lock(&mu);
    turn = 1;
    cv.SignalAll();
    if (!cv.AwaitWithDeadline(&mu, Deadline(), [&] { return turn == 0; })) {
      state.SkipWithError("partner did not answer");
      break;
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  {
    MutexLock lock(&mu);
    turn = -1;
    cv.SignalAll();
  }
  partner.join();
  const double rate = static_cast<double>(state.iterations()) / seconds;
  state.counters["round_trips_per_s"] = rate;
  SetRatio(state, "vs_grpc_rtt", rate, g_round_trips_per_second);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HandoffRoundTrip)->UseRealTime()->MinTime(1.0);

// Counts offers the guest has seen come and go.
struct OfferCounter {
  Mutex mu;
  CondVar cv;
  std::vector<std::shared_ptr<Channel>> added ABSL_GUARDED_BY(mu);
  size_t removed ABSL_GUARDED_BY(mu) = 0;
};

// Mock rates measured in this run, for the HyperV/Mock ratios (index: SizeSlot or LifecycleSlot).
std::atomic<double> g_mock_channels_per_second[3] = {0, 0, 0};
std::atomic<double> g_mock_echo_bytes_per_second[2] = {0, 0};
int LifecycleSlot(size_t n) { return n <= 1 ? 0 : n <= 256 ? 1 : 2; }

// The guest on `kind` (MockBackend, or HyperVBackend on the FakeHypervisor bridged to the
// mock host) attached as "bench" to an in-process host. Null (and the benchmark skipped) on
// failure.
std::unique_ptr<e2e::E2eGuest> AttachGuest(benchmark::State& state, e2e::E2eHost& host,
                                           e2e::BackendKind kind, ChannelBusOptions options) {
  options.log = [](absl::string_view) {};
  e2e::E2eGuestOptions guest_options;
  guest_options.backend = kind;
  guest_options.memory_bytes = uint64_t{64} << 20;  // 2047 channels x 4 ring pages fit
  absl::StatusOr<std::unique_ptr<e2e::E2eGuest>> guest =
      e2e::E2eGuest::Attach(host, "bench", std::move(options), guest_options);
  if (!guest.ok()) {
    state.SkipWithError(std::string(guest.status().message()).c_str());
    return nullptr;
  }
  return *std::move(guest);
}

std::unique_ptr<e2e::E2eHost> StartHost(benchmark::State& state) {
  absl::StatusOr<std::unique_ptr<e2e::E2eHost>> host =
      e2e::E2eHost::Start(e2e::E2eHost::Mode::kInProcess, Deadline());
  if (!host.ok()) {
    state.SkipWithError(std::string(host.status().message()).c_str());
    return nullptr;
  }
  return *std::move(host);
}

template <e2e::BackendKind kKind>
void BM_ChannelLifecycle(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::unique_ptr<e2e::E2eHost> e2e_host = StartHost(state);
  if (e2e_host == nullptr) return;
  OfferCounter counter;
  ChannelBusOptions options;
  // The benchmark thread waits for all n of each: wake it once, at the last.
  options.on_offer = [&](const std::shared_ptr<Channel>& c) {
    MutexLock lock(&counter.mu);
    counter.added.push_back(c);
    if (counter.added.size() == n) counter.cv.SignalAll();
  };
  options.on_offer_removed = [&](const OfferInfo&, const absl::Status&) {
    MutexLock lock(&counter.mu);
    if (++counter.removed == n) counter.cv.SignalAll();
  };
  std::unique_ptr<e2e::E2eGuest> guest = AttachGuest(state, *e2e_host, kKind, std::move(options));
  if (guest == nullptr) return;
  if (!guest->bus().Connect(Deadline()).ok()) {
    state.SkipWithError("guest did not connect");
    return;
  }
  mock::MockHost& host = *e2e_host->in_process_host();
  ChannelOpenOptions open_options;
  open_options.outbound_ring_pages = 2;
  open_options.inbound_ring_pages = 2;
  open_options.on_packet = [](const PacketView&) {};

  struct Pending {
    Mutex mu;
    CondVar cv;
    size_t left ABSL_GUARDED_BY(mu) = 0;
    size_t failed ABSL_GUARDED_BY(mu) = 0;
  };
  auto await_all = [](Pending& p) {
    MutexLock lock(&p.mu);
    return p.cv.AwaitWithDeadline(&p.mu, Deadline(), [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(p.mu) {
      return p.left == 0;
    }) && p.failed == 0;
  };
  // One round: N offered (hot-add), opened (pipelined), closed, rescinded and released.
  // Returns "" or what went wrong. Adds the time from the first OpenAsync to the last open
  // completion to `open_time`, and from the first rescind to the last release to
  // `release_time`.
  absl::Duration offer_time;
  absl::Duration open_time;
  absl::Duration close_time;
  absl::Duration release_time;
  auto round = [&]() -> std::string {
    // Offer N (hot-add) and wait until the guest has them all.
    const absl::Time offer_start = absl::Now();
    std::vector<uint32_t> relids;
    for (size_t i = 0; i < n; ++i) {
      v1::OfferRequest offer;
      offer.set_guest("bench");
      offer.mutable_spec()->set_device("sink");
      absl::StatusOr<v1::OfferResponse> r = host.Offer(offer);
      if (!r.ok()) {
        return std::string(r.status().message());
      }
      relids.push_back(r->child_relid());
    }
    std::vector<std::shared_ptr<Channel>> channels;
    {
      MutexLock lock(&counter.mu);
      counter.cv.AwaitWithDeadline(
          &counter.mu, Deadline(),
          [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(counter.mu) { return counter.added.size() == n; });
      channels.swap(counter.added);
    }
    if (channels.size() != n) {
      return std::string("offers did not arrive");
    }
    offer_time += absl::Now() - offer_start;
    // Open all (pipelined), then close all.
    Pending opens;
    {
      MutexLock lock(&opens.mu);
      opens.left = n;
    }
    const absl::Time open_start = absl::Now();
    for (const std::shared_ptr<Channel>& c : channels) {
      c->OpenAsync(open_options, Deadline(), [&](absl::Status s) {
        MutexLock lock(&opens.mu);
        if (!s.ok()) ++opens.failed;
        if (--opens.left == 0) opens.cv.SignalAll();
      });
    }
    if (!await_all(opens)) {
      return std::string("opens failed");
    }
    open_time += absl::Now() - open_start;
    const absl::Time close_start = absl::Now();
    Pending closes;
    {
      MutexLock lock(&closes.mu);
      closes.left = n;
    }
    for (const std::shared_ptr<Channel>& c : channels) {
      c->CloseAsync(Deadline(), [&](absl::Status s) {
        MutexLock lock(&closes.mu);
        if (!s.ok()) ++closes.failed;
        if (--closes.left == 0) closes.cv.SignalAll();
      });
    }
    if (!await_all(closes)) {
      return std::string("closes failed");
    }
    close_time += absl::Now() - close_start;
    // Rescind all; the guest releases every relid before the next round needs it.
    const absl::Time release_start = absl::Now();
    for (uint32_t relid : relids) {
      v1::RescindRequest rescind;
      rescind.set_guest("bench");
      rescind.set_child_relid(relid);
      if (!host.Rescind(rescind).ok()) {
        return std::string("rescind failed");
      }
    }
    {
      MutexLock lock(&counter.mu);
      counter.cv.AwaitWithDeadline(
          &counter.mu, Deadline(),
          [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(counter.mu) { return counter.removed == n; });
      counter.removed = 0;
    }
    // The guest has posted every RelidReleased; the next round needs the host to have read
    // them (it forgets each relid on arrival). A cheap poll: the guest's channel count.
    for (;;) {
      v1::ListGuestsResponse guests = host.ListGuests();
      if (guests.guests_size() == 0 || guests.guests(0).channel_count() == 0) break;
      std::this_thread::yield();
    }
    release_time += absl::Now() - release_start;
    return "";
  };
  // A first round outside the timing: the shared file's pages are touched for the first time
  // by both mappings (page faults), the allocators warm up.
  if (std::string error = round(); !error.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  offer_time = absl::ZeroDuration();
  open_time = absl::ZeroDuration();
  close_time = absl::ZeroDuration();
  release_time = absl::ZeroDuration();
  const absl::Time start = absl::Now();
  for (auto _ : state) {
    if (std::string error = round(); !error.empty()) {
      state.SkipWithError(error.c_str());
      return;
    }
  }
  const absl::Duration elapsed = absl::Now() - start;
  const double channels = static_cast<double>(state.iterations() * n);
  const double rate = channels / absl::ToDoubleSeconds(elapsed);
  const double ooc_rate = channels / absl::ToDoubleSeconds(elapsed - release_time);
  const double open_rate = channels / absl::ToDoubleSeconds(open_time);
  state.counters["channels_per_s"] = rate;
  state.counters["ooc_per_s"] = ooc_rate;
  state.counters["opens_per_s"] = open_rate;
  // Each phase alone (per channel): where a change in the whole rate comes from.
  state.counters["offers_per_s"] = channels / absl::ToDoubleSeconds(offer_time);
  state.counters["closes_per_s"] = channels / absl::ToDoubleSeconds(close_time);
  state.counters["releases_per_s"] = channels / absl::ToDoubleSeconds(release_time);
  if (const double rtt = g_round_trips_per_second.load(); rtt > 0) {
    state.counters["vs_grpc_rtt"] = rate / rtt;
    state.counters["ooc_vs_grpc_rtt"] = ooc_rate / rtt;
    state.counters["opens_vs_grpc_rtt"] = open_rate / rtt;
  }
  if constexpr (kKind == e2e::BackendKind::kMock) {
    g_mock_channels_per_second[LifecycleSlot(n)].store(rate);
  } else {
    SetRatio(state, "vs_mock", rate, g_mock_channels_per_second[LifecycleSlot(n)]);
    // Where a HyperV guest's time goes: HvPostMessage calls per channel, and the waits after a
    // transient refusal (the hypervisor's message buffers full).
    const hyperv::HyperVBackendStats stats = guest->hyperv_backend()->stats();
    const double per_channel = 1.0 / static_cast<double>(state.iterations() * n + n);
    state.counters["posts_per_channel"] = static_cast<double>(stats.parts_posted) * per_channel;
    state.counters["post_retries_per_channel"] =
        static_cast<double>(stats.post_retries) * per_channel;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK_TEMPLATE(BM_ChannelLifecycle, e2e::BackendKind::kMock)
    ->Arg(1)
    ->Arg(256)
    ->Arg(2047)
    ->UseRealTime()
    ->MinTime(1.0);
BENCHMARK_TEMPLATE(BM_ChannelLifecycle, e2e::BackendKind::kHyperV)
    ->Arg(1)
    ->Arg(256)
    ->Arg(2047)
    ->UseRealTime()
    ->MinTime(1.0);

// ---------------------------------------------------------------------------------------------
// Data path
// ---------------------------------------------------------------------------------------------

constexpr size_t kEchoRingPages = 65;  // 256 KiB of data per ring, as in ring_bench

void Relax(int& spins) {
  if (++spins < 256) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

// As ring_bench does: the two spinning threads on different CPUs, so that on a 2-CPU machine
// the scheduler does not time-slice them on one (best effort; restored afterwards).
class ScopedPin {
 public:
  explicit ScopedPin(int cpu) {
    pthread_getaffinity_np(pthread_self(), sizeof(saved_), &saved_);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  }
  ~ScopedPin() { pthread_setaffinity_np(pthread_self(), sizeof(saved_), &saved_); }

 private:
  cpu_set_t saved_;
};

struct alignas(4096) RingMemory {
  explicit RingMemory(size_t pages) : bytes(pages * protocol::kPageSize) {
    data = static_cast<uint8_t*>(std::aligned_alloc(protocol::kPageSize, bytes));
    std::memset(data, 0, bytes);
  }
  ~RingMemory() { std::free(data); }
  absl::Span<uint8_t> span() { return {data, bytes}; }
  uint8_t* data;
  size_t bytes;
};

void BM_BareRingEcho(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  RingMemory a(kEchoRingPages), b(kEchoRingPages);
  if (!InitializeRing(a.span()).ok() || !InitializeRing(b.span()).ok()) {
    state.SkipWithError("ring init");
    return;
  }
  std::vector<uint8_t> scratch_a(a.bytes), scratch_b(b.bytes);
  OutgoingRing to_host = *OutgoingRing::Attach(a.span());
  IncomingRing host_in = *IncomingRing::Attach(a.span(), absl::MakeSpan(scratch_a));
  OutgoingRing host_out = *OutgoingRing::Attach(b.span());
  IncomingRing from_host = *IncomingRing::Attach(b.span(), absl::MakeSpan(scratch_b));
  std::atomic<bool> stop{false};
  // The echo ("host"): copy every packet from A into B; free A's space every 16 packets.
  std::thread echo([&] {
    ScopedPin pin(1);
    int spins = 0;
    uint64_t count = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      absl::StatusOr<std::optional<PacketView>> p = host_in.Next();
      if (!p.ok() || !p->has_value()) {
        host_in.CommitRead().IgnoreError();
        Relax(spins);
        continue;
      }
      spins = 0;
      for (;;) {
        absl::StatusOr<WriteResult> w =
            host_out.Write(PacketType::kDataInband, 0, (*p)->trans_id(), (*p)->payload());
        if (w.ok() && *w != WriteResult::kFull) break;
        if (stop.load(std::memory_order_relaxed)) return;
        Relax(spins);
      }
      if ((++count & 15) == 0) host_in.CommitRead().IgnoreError();  // after the copy
    }
  });
  // The guest: one thread that writes A and drains B (copying each payload out, as a
  // receive callback would), never waiting while it can do either.
  ScopedPin pin(0);
  std::vector<uint8_t> payload(size, 0x5A);
  std::vector<uint8_t> sink(size + 8);
  uint64_t sent = 0;
  uint64_t received = 0;
  auto drain = [&] {
    bool any = false;
    for (;;) {
      absl::StatusOr<std::optional<PacketView>> p = from_host.Next();
      if (!p.ok() || !p->has_value()) break;
      std::memcpy(sink.data(), (*p)->payload().data(), (*p)->payload().size());
      ++received;
      any = true;
    }
    if (any) from_host.CommitRead().IgnoreError();
    return any;
  };
  const absl::Time start = absl::Now();
  for (auto _ : state) {
    int spins = 0;
    for (;;) {
      absl::StatusOr<WriteResult> w = to_host.Write(PacketType::kDataInband, 0, sent, payload);
      if (w.ok() && *w != WriteResult::kFull) break;
      if (!drain()) Relax(spins);
    }
    ++sent;
    if ((sent & 15) == 0) drain();
  }
  int spins = 0;
  while (received < sent) {
    if (!drain()) Relax(spins);
  }
  // Measured as BM_MockEcho measures: from the first send until every echo is back.
  const double rate = static_cast<double>(sent * size) / absl::ToDoubleSeconds(absl::Now() - start);
  g_bare_bytes_per_second[SizeSlot(size)].store(rate);
  state.counters["echo_bytes_per_s"] = rate;
  stop.store(true);
  echo.join();
  state.SetItemsProcessed(static_cast<int64_t>(sent));
  state.SetBytesProcessed(static_cast<int64_t>(sent * size));
}

// How the guest takes the echoes: a receive callback on the doorbell thread, or polling from
// the sending thread (the bare pair's structure: one guest thread writes and drains); or
// there are none: the host's sink device reads and drops every packet.
enum class EchoReceive { kCallback, kPolled, kSink };

// The echo through the whole stack; returns its bytes/s (0 when skipped).
double RunMockEcho(benchmark::State& state, e2e::BackendKind kind, uint32_t batch_packets,
                   EchoReceive receive = EchoReceive::kCallback) {
  const size_t size = static_cast<size_t>(state.range(0));
  std::unique_ptr<e2e::E2eHost> e2e_host = StartHost(state);
  if (e2e_host == nullptr) return 0;
  std::unique_ptr<e2e::E2eGuest> guest = AttachGuest(state, *e2e_host, kind, {});
  if (guest == nullptr) return 0;
  v1::OfferRequest offer;
  offer.set_guest("bench");
  offer.mutable_spec()->set_device(receive == EchoReceive::kSink ? "sink" : "echo");
  auto offered = e2e_host->in_process_host()->Offer(offer);
  if (!offered.ok() || !guest->bus().Connect(Deadline()).ok()) {
    state.SkipWithError("setup failed");
    return 0;
  }
  std::shared_ptr<Channel> channel = guest->bus().FindChannel(offered->child_relid());
  std::atomic<uint64_t> received{0};
  ChannelOpenOptions open;
  open.outbound_ring_pages = kEchoRingPages;
  open.inbound_ring_pages = kEchoRingPages;
  open.mirrored_rings = true;  // where the backend can (MockBackend)
  open.send_batch_packets = batch_packets;
  std::vector<uint8_t> sink(size + 8);
  auto copy_out = [&](const PacketView& p) {
    std::memcpy(sink.data(), p.payload().data(), p.payload().size());
    received.fetch_add(1, std::memory_order_release);  // [BB-R1] pairs with [BB-R2]
  };
  if (receive == EchoReceive::kCallback) open.on_packet = copy_out;
  if (!channel->Open(open, Deadline()).ok()) {
    state.SkipWithError("open failed");
    return 0;
  }
  std::vector<uint8_t> payload(size, 0x5A);
  SendOptions wait;
  wait.deadline = absl::InfiniteFuture();
  uint64_t sent = 0;
  bool failed = false;
  // Polled: drain what came back; false if nothing did.
  auto poll = [&] {
    absl::StatusOr<size_t> n = channel->Poll(copy_out);
    failed = failed || !n.ok();
    return n.ok() && *n > 0;
  };
  const absl::Time start = absl::Now();
  for (auto _ : state) {
    if (receive != EchoReceive::kPolled) {
      failed = !channel->Send(payload, wait).ok();
    } else {
      // As the bare pair's guest: never wait while there is something to drain.
      for (int spins = 0;;) {
        const absl::Status s = channel->Send(payload);
        if (s.ok()) break;
        if (s.code() != absl::StatusCode::kResourceExhausted) failed = true;
        if (failed) break;
        if (!poll()) Relax(spins);
      }
      if (((sent + 1) & 15) == 0) poll();
    }
    if (failed) {
      state.SkipWithError("send failed");
      break;
    }
    ++sent;
  }
  // [BB-R2] acquire, pairs with [BB-R1]: the sink's copies are done.
  for (int spins = 0; !failed && receive != EchoReceive::kSink &&
                      received.load(std::memory_order_acquire) < sent;) {
    if (receive == EchoReceive::kCallback || !poll()) Relax(spins);
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  state.SetItemsProcessed(static_cast<int64_t>(sent));
  state.SetBytesProcessed(static_cast<int64_t>(sent * size));
  const double rate = static_cast<double>(sent * size) / seconds;
  state.counters["echo_bytes_per_s"] = rate;
  if (receive != EchoReceive::kSink) {
    SetRatio(state, "vs_bare_ring", rate, g_bare_bytes_per_second[SizeSlot(size)]);
  }
  const ChannelStats stats = channel->stats();
  state.counters["signals_per_packet"] =
      static_cast<double>(stats.signals_sent + stats.signals_received) /
      static_cast<double>(std::max<uint64_t>(1, 2 * sent));
  // How often a send found the ring full and had to wait for the host to free room.
  state.counters["full_per_packet"] =
      static_cast<double>(stats.ring_full) / static_cast<double>(std::max<uint64_t>(1, sent));
  if (batch_packets > 1) {
    state.counters["batched_share"] =
        static_cast<double>(stats.sends_batched) / static_cast<double>(std::max<uint64_t>(1, sent));
  }
  channel->Close(Deadline()).IgnoreError();
  return rate;
}

template <e2e::BackendKind kKind>
void BM_MockEcho(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const double rate = RunMockEcho(state, kKind, 1);
  if constexpr (kKind == e2e::BackendKind::kMock) {
    if (rate > 0) g_mock_echo_bytes_per_second[SizeSlot(size)].store(rate);
  } else {
    SetRatio(state, "vs_mock", rate, g_mock_echo_bytes_per_second[SizeSlot(size)]);
  }
}

void BM_MockEchoPolled(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  SetRatio(state, "vs_callback",
           RunMockEcho(state, e2e::BackendKind::kMock, 1, EchoReceive::kPolled),
           g_mock_echo_bytes_per_second[SizeSlot(size)]);
}

// Sends only (the host's sink drops them): where the sender's own cost is the limit.
std::atomic<double> g_send_bytes_per_second[2] = {0, 0};

void BM_MockSend(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  g_send_bytes_per_second[SizeSlot(size)].store(
      RunMockEcho(state, e2e::BackendKind::kMock, 1, EchoReceive::kSink));
}

void BM_MockSendBatched(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  SetRatio(state, "vs_unbatched",
           RunMockEcho(state, e2e::BackendKind::kMock, 16, EchoReceive::kSink),
           g_send_bytes_per_second[SizeSlot(size)]);
}

void BM_MockEchoBatched(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  SetRatio(state, "vs_unbatched", RunMockEcho(state, e2e::BackendKind::kMock, 16),
           g_mock_echo_bytes_per_second[SizeSlot(size)]);
}

BENCHMARK(BM_BareRingEcho)->Arg(64)->Arg(1500)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MockEcho, e2e::BackendKind::kMock)->Arg(64)->Arg(1500)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MockEcho, e2e::BackendKind::kHyperV)->Arg(64)->Arg(1500)->UseRealTime();
BENCHMARK(BM_MockEchoBatched)->Arg(64)->Arg(1500)->UseRealTime();
BENCHMARK(BM_MockEchoPolled)->Arg(64)->Arg(1500)->UseRealTime();
BENCHMARK(BM_MockSend)->Arg(64)->Arg(1500)->UseRealTime();
BENCHMARK(BM_MockSendBatched)->Arg(64)->Arg(1500)->UseRealTime();

}  // namespace
}  // namespace vbus

BENCHMARK_MAIN();
