// Ring throughput: one producer thread and one consumer thread move packets of 64 B, 1500 B and
// 64 KiB through
//   - the vbus ring (OutgoingRing::Write per packet; the consumer polls with interrupts masked,
//     copies each payload out and commits read_index every 16 packets),
//   - the vbus ring with the writer batching 16 packets per Commit,
//   - both again on a mirrored ring (its data area mapped twice back to back: a packet that
//     wraps is written and read in one piece, never through the scratch buffer),
//   - the same format without validation, with Linux's barrier placement (same_format_ring.h):
//     the limit for this format, per packet and batched like the vbus ring,
//   - boost::lockfree::spsc_queue of fixed-size slots (push copies in, consume_one copies out),
//   - DPDK rte_ring (no EAL) carrying pointers to buffers of a pool: the producer takes a free
//     buffer, copies the payload in and enqueues it; the consumer dequeues, copies out and
//     returns the buffer through a second rte_ring (how DPDK moves packet data),
// and, as the physical limit, one thread doing a plain memcpy of the same bytes.
// Every contestant copies the payload in on the producer and out on the consumer, and the
// consumer checks each packet's sequence number. All queues hold about the same bytes
// (max(256 KiB, 8 packets)).
//
// Run: bazel run --config=opt //test/bench:ring_bench
// Counters: items_per_second = packets/s, bytes_per_second = payload bytes/s.
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "boost/lockfree/spsc_queue.hpp"
#include "core/data/mirrored_mapping.h"
#include "core/data/ring_buffer.h"
#include "rte_ring.h"
#include "test/bench/same_format_ring.h"

namespace vbus {
namespace {

// Waiting for the other thread: pause for a while (~100 us), then yield, so that on a machine with
// fewer idle cores than threads the peer gets to run (the same policy for every contestant).
class Backoff {
 public:
  void Wait() {
    if (++spins_ < 4096) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
  void Reset() { spins_ = 0; }
  int spins() const { return spins_; }

 private:
  int spins_ = 0;
};

// Best effort: the producer on CPU 0, the consumer on CPU 1, so the two never share a core
// (on a 2-CPU machine the scheduler may otherwise time-slice them on one).
void PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Undoes PinToCpu for the benchmark thread when the benchmark ends.
class ScopedPin {
 public:
  explicit ScopedPin(int cpu) {
    pthread_getaffinity_np(pthread_self(), sizeof(saved_), &saved_);
    PinToCpu(cpu);
  }
  ~ScopedPin() { pthread_setaffinity_np(pthread_self(), sizeof(saved_), &saved_); }

 private:
  cpu_set_t saved_;
};

size_t QueueBytes(size_t payload) { return std::max<size_t>(256 * 1024, 8 * payload); }

struct AlignedBuffer {
  explicit AlignedBuffer(size_t size) : size(size) {
    data = static_cast<uint8_t*>(std::aligned_alloc(
        protocol::kPageSize, (size + protocol::kPageSize - 1) & ~(protocol::kPageSize - 1)));
    std::memset(data, 0x5A, size);
  }
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data;
  size_t size;
};

void SetCounters(benchmark::State& state, size_t payload) {
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload));
}

// Stamps the packet's sequence number into the first 8 bytes of the payload.
inline void Stamp(uint8_t* payload, uint64_t seq) { std::memcpy(payload, &seq, 8); }
inline bool Check(const uint8_t* payload, uint64_t seq) {
  uint64_t got;
  std::memcpy(&got, payload, 8);
  return got == seq;
}

// --- vbus ring ---------------------------------------------------------------------------------

// `publish`: every packet between two Commits is made visible at once with Publish (what the
// channel's adaptive batching does while the reader drains); otherwise it stays appended.
void RunVbus(benchmark::State& state, size_t batch, RingMapping mapping = RingMapping::kSingle,
             bool publish = false) {
  const size_t payload = static_cast<size_t>(state.range(0));
  const size_t ring_bytes = protocol::kPageSize + QueueBytes(payload);
  std::optional<AlignedBuffer> plain;
  std::optional<MirroredMapping> mirror;
  absl::Span<uint8_t> ring;  // what the ring objects attach to
  if (mapping == RingMapping::kMirrored) {
    absl::StatusOr<MirroredMapping> m = MirroredMapping::Anonymous(ring_bytes);
    if (!m.ok()) std::abort();
    mirror.emplace(*std::move(m));
    ring = mirror->memory();
    if (!InitializeRing(mirror->ring()).ok()) std::abort();
  } else {
    plain.emplace(ring_bytes);
    ring = absl::MakeSpan(plain->data, plain->size);
    if (!InitializeRing(ring).ok()) std::abort();
  }
  std::vector<uint8_t> scratch(payload + 64);
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(ring, mapping);
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(ring, absl::MakeSpan(scratch), mapping);
  if (!out.ok() || !in.ok()) std::abort();
  in->MaskInterrupts();  // a polling consumer: the producer never needs to signal
  const size_t packet_bytes = PacketRingBytes(0, payload);
  const size_t quarter_ring = out->data_size() / 4;

  const int64_t total = state.max_iterations;
  std::atomic<bool> bad{false};
  ScopedPin pin(0);
  std::thread consumer([&] {
    PinToCpu(1);
    std::vector<uint8_t> sink(payload);
    Backoff backoff;
    int64_t since_commit = 0;
    for (int64_t seq = 0; seq < total;) {
      absl::StatusOr<std::optional<PacketView>> p = in->Next();
      if (!p.ok()) std::abort();
      if (!p->has_value()) {
        // Caught up with the writer. Publishing read_index at once would pull the shared
        // control line away from the writer on every batch; commit only if the writer seems
        // to be waiting (no new data for a while). The byte threshold below bounds what stays
        // uncommitted, so a writer waiting for space always gets it.
        if (since_commit > 0 && backoff.spins() >= 64) {
          if (!in->CommitRead().ok()) std::abort();
          since_commit = 0;
        }
        backoff.Wait();
        continue;
      }
      backoff.Reset();
      std::memcpy(sink.data(), (*p)->payload().data(), payload);
      if (!Check(sink.data(), seq)) bad.store(true, std::memory_order_relaxed);
      ++seq;
      // Batched commits: every 16 packets, or sooner for big packets (a quarter of the ring),
      // so the writer is never kept waiting for space we already consumed.
      if (++since_commit == 16 || since_commit * packet_bytes >= quarter_ring) {
        if (!in->CommitRead().ok()) std::abort();
        since_commit = 0;
      }
    }
    if (!in->CommitRead().ok()) std::abort();
  });

  std::vector<uint8_t> source(payload, 0x42);
  const absl::Span<const uint8_t> pieces[] = {source};
  OutgoingPacket packet;
  packet.payload = pieces;
  uint64_t seq = 0;
  size_t pending = 0;
  for (auto _ : state) {
    Stamp(source.data(), seq);
    packet.trans_id = seq;
    for (Backoff backoff;;) {
      absl::StatusOr<AppendResult> r = out->Append(packet);
      if (!r.ok()) std::abort();
      if (*r == AppendResult::kAppended) break;
      out->Commit();  // publish what is batched, then wait for space
      pending = 0;
      backoff.Wait();
    }
    ++seq;
    if (++pending == batch || pending * packet_bytes >= quarter_ring) {
      out->Commit();
      pending = 0;
    } else if (publish) {
      out->Publish();
    }
  }
  out->Commit();
  consumer.join();
  if (bad.load()) state.SkipWithError("consumer saw a wrong sequence number");
  SetCounters(state, payload);
}

void BM_VbusRing(benchmark::State& state) { RunVbus(state, 1); }
void BM_VbusRingBatch16(benchmark::State& state) { RunVbus(state, 16); }
void BM_VbusRingPublish16(benchmark::State& state) {
  RunVbus(state, 16, RingMapping::kSingle, /*publish=*/true);
}
void BM_VbusRingMirrored(benchmark::State& state) { RunVbus(state, 1, RingMapping::kMirrored); }
void BM_VbusRingMirroredBatch16(benchmark::State& state) {
  RunVbus(state, 16, RingMapping::kMirrored);
}

// --- The same format without validation (Linux's barrier placement) --------------------------

// The same traffic, the same consumer policy (poll masked, commit every 16 packets or quarter
// ring, or when the writer seems to wait) and the same batching as RunVbus.
void RunSameFormat(benchmark::State& state, size_t batch) {
  const size_t payload = static_cast<size_t>(state.range(0));
  AlignedBuffer memory(protocol::kPageSize + QueueBytes(payload));
  if (!InitializeRing({memory.data, memory.size}).ok()) std::abort();
  bench::SameFormatRing out(memory.data, memory.size);
  bench::SameFormatRing in(memory.data, memory.size);
  in.MaskInterrupts();
  const size_t packet_bytes = PacketRingBytes(0, payload);
  const size_t quarter_ring = (memory.size - protocol::kPageSize) / 4;
  const int64_t total = state.max_iterations;
  std::atomic<bool> bad{false};
  ScopedPin pin(0);
  std::thread consumer([&] {
    PinToCpu(1);
    std::vector<uint8_t> sink(payload + 8);
    Backoff backoff;
    int64_t since_commit = 0;
    for (int64_t seq = 0; seq < total;) {
      uint64_t trans_id;
      if (!in.Next(sink.data(), sink.size(), &trans_id)) {
        if (since_commit > 0 && backoff.spins() >= 64) {
          in.CommitRead();
          since_commit = 0;
        }
        backoff.Wait();
        continue;
      }
      backoff.Reset();
      if (!Check(sink.data(), seq)) bad.store(true, std::memory_order_relaxed);
      ++seq;
      if (++since_commit == 16 || since_commit * packet_bytes >= quarter_ring) {
        in.CommitRead();
        since_commit = 0;
      }
    }
    in.CommitRead();
  });

  std::vector<uint8_t> source(payload, 0x42);
  uint64_t seq = 0;
  size_t pending = 0;
  for (auto _ : state) {
    Stamp(source.data(), seq);
    for (Backoff backoff; !out.Append(static_cast<uint16_t>(PacketType::kDataInband), 0, seq,
                                      source.data(), payload);) {
      out.Commit();
      pending = 0;
      backoff.Wait();
    }
    ++seq;
    if (++pending == batch || pending * packet_bytes >= quarter_ring) {
      out.Commit();
      pending = 0;
    }
  }
  out.Commit();
  consumer.join();
  if (bad.load()) state.SkipWithError("consumer saw a wrong sequence number");
  SetCounters(state, payload);
}

void BM_SameFormatRing(benchmark::State& state) { RunSameFormat(state, 1); }
void BM_SameFormatRingBatch16(benchmark::State& state) { RunSameFormat(state, 16); }

// --- boost::lockfree::spsc_queue ---------------------------------------------------------------

template <size_t kPayload>
void BM_BoostSpscQueue(benchmark::State& state) {
  using Slot = std::array<uint8_t, kPayload>;
  auto queue = std::make_unique<boost::lockfree::spsc_queue<Slot>>(QueueBytes(kPayload) / kPayload);
  const int64_t total = state.max_iterations;
  std::atomic<bool> bad{false};
  ScopedPin pin(0);
  std::thread consumer([&] {
    PinToCpu(1);
    std::vector<uint8_t> sink(kPayload);
    Backoff backoff;
    for (int64_t seq = 0; seq < total;) {
      const bool got = queue->consume_one(
          [&](const Slot& slot) { std::memcpy(sink.data(), slot.data(), kPayload); });
      if (!got) {
        backoff.Wait();
        continue;
      }
      backoff.Reset();
      if (!Check(sink.data(), seq)) bad.store(true, std::memory_order_relaxed);
      ++seq;
    }
  });
  auto source = std::make_unique<Slot>();
  source->fill(0x42);
  uint64_t seq = 0;
  for (auto _ : state) {
    Stamp(source->data(), seq++);
    for (Backoff backoff; !queue->push(*source);) backoff.Wait();
  }
  consumer.join();
  if (bad.load()) state.SkipWithError("consumer saw a wrong sequence number");
  SetCounters(state, kPayload);
}

// --- DPDK rte_ring -----------------------------------------------------------------------------

struct RteRingDeleter {
  void operator()(rte_ring* r) const { std::free(r); }
};

std::unique_ptr<rte_ring, RteRingDeleter> MakeRteRing(const char* name, unsigned count) {
  const ssize_t size = rte_ring_get_memsize(count);
  if (size < 0) std::abort();
  auto* r = static_cast<rte_ring*>(
      std::aligned_alloc(64, (static_cast<size_t>(size) + 63) & ~size_t{63}));
  if (rte_ring_init(r, name, count, RING_F_SP_ENQ | RING_F_SC_DEQ) != 0) std::abort();
  return std::unique_ptr<rte_ring, RteRingDeleter>(r);
}

void BM_DpdkRteRing(benchmark::State& state) {
  const size_t payload = static_cast<size_t>(state.range(0));
  // Power-of-two ring sizes; usable capacity is count - 1 ≈ the other queues' bytes.
  unsigned count = 2;
  while (count * payload < QueueBytes(payload)) count *= 2;
  auto data_ring = MakeRteRing("vbus_data", count);
  auto free_ring = MakeRteRing("vbus_free", count * 2);
  AlignedBuffer pool(count * payload);
  for (unsigned i = 0; i < count; ++i) {
    if (rte_ring_sp_enqueue(free_ring.get(), pool.data + i * payload) != 0) std::abort();
  }
  const int64_t total = state.max_iterations;
  std::atomic<bool> bad{false};
  ScopedPin pin(0);
  std::thread consumer([&] {
    PinToCpu(1);
    std::vector<uint8_t> sink(payload);
    Backoff backoff;
    for (int64_t seq = 0; seq < total;) {
      void* buffer;
      if (rte_ring_sc_dequeue(data_ring.get(), &buffer) != 0) {
        backoff.Wait();
        continue;
      }
      backoff.Reset();
      std::memcpy(sink.data(), buffer, payload);
      if (!Check(sink.data(), seq)) bad.store(true, std::memory_order_relaxed);
      ++seq;
      for (Backoff b; rte_ring_sp_enqueue(free_ring.get(), buffer) != 0;) b.Wait();
    }
  });
  std::vector<uint8_t> source(payload, 0x42);
  uint64_t seq = 0;
  for (auto _ : state) {
    Stamp(source.data(), seq++);
    void* buffer;
    for (Backoff b; rte_ring_sc_dequeue(free_ring.get(), &buffer) != 0;) b.Wait();
    std::memcpy(buffer, source.data(), payload);
    for (Backoff b; rte_ring_sp_enqueue(data_ring.get(), buffer) != 0;) b.Wait();
  }
  consumer.join();
  if (bad.load()) state.SkipWithError("consumer saw a wrong sequence number");
  SetCounters(state, payload);
}

// --- memcpy: the physical limit ----------------------------------------------------------------

void BM_Memcpy(benchmark::State& state) {
  const size_t payload = static_cast<size_t>(state.range(0));
  // The same bytes a queue of QueueBytes would cycle through, so caches see the same footprint.
  const size_t slots = QueueBytes(payload) / payload;
  AlignedBuffer source(payload), dest(slots * payload);
  size_t slot = 0;
  for (auto _ : state) {
    std::memcpy(dest.data + slot * payload, source.data, payload);
    benchmark::DoNotOptimize(dest.data);
    benchmark::ClobberMemory();
    if (++slot == slots) slot = 0;
  }
  SetCounters(state, payload);
}

// --- One thread writes and reads: the ring's own CPU cost per packet ----------------------------

void BM_VbusRingSameThread(benchmark::State& state) {
  const size_t payload = static_cast<size_t>(state.range(0));
  AlignedBuffer memory(protocol::kPageSize + QueueBytes(payload));
  if (!InitializeRing({memory.data, memory.size}).ok()) std::abort();
  std::vector<uint8_t> scratch(payload + 64), sink(payload), source(payload, 0x42);
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach({memory.data, memory.size});
  absl::StatusOr<IncomingRing> in =
      IncomingRing::Attach({memory.data, memory.size}, absl::MakeSpan(scratch));
  if (!out.ok() || !in.ok()) std::abort();
  in->MaskInterrupts();
  for (auto _ : state) {
    if (!out->Write(PacketType::kDataInband, 0, 1, source).ok()) std::abort();
    absl::StatusOr<std::optional<PacketView>> p = in->Next();
    if (!p.ok() || !p->has_value()) std::abort();
    std::memcpy(sink.data(), (*p)->payload().data(), payload);
    if (!in->CommitRead().ok()) std::abort();
  }
  SetCounters(state, payload);
}

void BM_SameFormatRingSameThread(benchmark::State& state) {
  const size_t payload = static_cast<size_t>(state.range(0));
  AlignedBuffer memory(protocol::kPageSize + QueueBytes(payload));
  if (!InitializeRing({memory.data, memory.size}).ok()) std::abort();
  std::vector<uint8_t> sink(payload + 8), source(payload, 0x42);
  bench::SameFormatRing out(memory.data, memory.size);
  bench::SameFormatRing in(memory.data, memory.size);
  in.MaskInterrupts();
  uint64_t trans_id;
  for (auto _ : state) {
    if (!out.Append(static_cast<uint16_t>(PacketType::kDataInband), 0, 1, source.data(), payload)) {
      std::abort();
    }
    out.Commit();
    if (!in.Next(sink.data(), sink.size(), &trans_id)) std::abort();
    in.CommitRead();
  }
  SetCounters(state, payload);
}

#define VBUS_PAYLOADS ->Arg(64)->Arg(1500)->Arg(65536)

BENCHMARK(BM_VbusRing) VBUS_PAYLOADS->UseRealTime();
BENCHMARK(BM_VbusRingBatch16) VBUS_PAYLOADS->UseRealTime();
BENCHMARK(BM_VbusRingPublish16) VBUS_PAYLOADS->UseRealTime();
BENCHMARK(BM_VbusRingMirrored) VBUS_PAYLOADS->UseRealTime();
BENCHMARK(BM_VbusRingMirroredBatch16) VBUS_PAYLOADS->UseRealTime();
BENCHMARK(BM_SameFormatRing) VBUS_PAYLOADS->UseRealTime();
BENCHMARK(BM_SameFormatRingBatch16) VBUS_PAYLOADS->UseRealTime();
BENCHMARK_TEMPLATE(BM_BoostSpscQueue, 64)->Arg(64)->UseRealTime();
BENCHMARK_TEMPLATE(BM_BoostSpscQueue, 1500)->Arg(1500)->UseRealTime();
BENCHMARK_TEMPLATE(BM_BoostSpscQueue, 65536)->Arg(65536)->UseRealTime();
BENCHMARK(BM_DpdkRteRing) VBUS_PAYLOADS->UseRealTime();
BENCHMARK(BM_Memcpy) VBUS_PAYLOADS;
BENCHMARK(BM_VbusRingSameThread) VBUS_PAYLOADS;
BENCHMARK(BM_SameFormatRingSameThread) VBUS_PAYLOADS;

}  // namespace
}  // namespace vbus
