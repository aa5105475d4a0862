// Two-thread ring stress: a writer and a reader on different threads push millions of packets
// of random sizes through one ring, using the full VMBus signalling protocol (the writer
// signals on empty → non-empty, the reader masks while draining and re-checks after
// unmasking, a writer that finds the ring full arms pending_send_sz and waits for the reader's
// signal). Every packet carries its sequence number, length and a checksum: the reader proves
// nothing is lost, duplicated, reordered or corrupted. A lost wake-up shows up as a thread
// waiting past its deadline.
//
// Packet counts: VBUS_RING_STRESS_PACKETS overrides the small-packet count (default 1,000,000;
// 300,000 under a sanitizer), e.g. VBUS_RING_STRESS_PACKETS=50000000 for a long soak.
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/data/mirrored_mapping.h"
#include "core/data/ring_buffer.h"
#include "gtest/gtest.h"
#include "test/stress/stress_util.h"

namespace vbus {
namespace {

using stress::Doorbell;

struct StressConfig {
  std::string name;
  size_t data_pages;
  size_t max_payload;  // payload sizes are 16 .. max_payload, skewed small
  uint64_t packets;
  uint64_t seed;
  // The ring mapped mirrored (MirroredMapping): packets that wrap are read in place, with no
  // scratch buffer at all.
  bool mirrored = false;
  // Every packet between two Commits is published at once without the signal decision
  // (OutgoingRing::Publish); the Commit decides for all of them.
  bool publish = false;
};

// Payload layout: u64 sequence, u32 length, u32 checksum of bytes [16, length), then bytes.
constexpr size_t kHeader = 16;

// A word-at-a-time checksum (fast enough for an unoptimized build).
uint32_t Checksum(const uint8_t* bytes, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes + i, 8);
    h = (h ^ word) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
  return static_cast<uint32_t>(h ^ (h >> 32));
}

size_t PickSize(std::mt19937_64& rng, size_t max_payload) {
  const uint64_t r = rng();
  switch (r % 8) {
    case 0:  // anywhere up to the maximum
      return kHeader + (r >> 8) % (max_payload - kHeader + 1);
    case 1:
    case 2:  // medium
      return kHeader + (r >> 8) % std::min<size_t>(1500, max_payload - kHeader + 1);
    default:  // small
      return kHeader + (r >> 8) % 64;
  }
}

class RingStressTest : public ::testing::TestWithParam<StressConfig> {};

TEST_P(RingStressTest, EveryPacketArrivesOnceInOrderIntact) {
  const StressConfig& config = GetParam();
  const size_t ring_size = (config.data_pages + 1) * protocol::kPageSize;
  const size_t data_size = ring_size - protocol::kPageSize;
  std::optional<MirroredMapping> mirror;
  uint8_t* memory = nullptr;
  if (config.mirrored) {
    absl::StatusOr<MirroredMapping> m = MirroredMapping::Anonymous(ring_size);
    ASSERT_TRUE(m.ok()) << m.status();
    mirror.emplace(*std::move(m));
  } else {
    memory = static_cast<uint8_t*>(std::aligned_alloc(protocol::kPageSize, ring_size));
    ASSERT_NE(memory, nullptr);
  }
  const absl::Span<uint8_t> ring = mirror ? mirror->memory() : absl::MakeSpan(memory, ring_size);
  const RingMapping mapping = mirror ? RingMapping::kMirrored : RingMapping::kSingle;
  ASSERT_TRUE(InitializeRing(ring.first(ring_size)).ok());
  std::vector<uint8_t> scratch(mirror ? 0 : config.max_payload + 64);
  absl::StatusOr<OutgoingRing> out = OutgoingRing::Attach(ring, mapping);
  absl::StatusOr<IncomingRing> in = IncomingRing::Attach(ring, absl::MakeSpan(scratch), mapping);
  ASSERT_TRUE(out.ok() && in.ok());
  // Where the data area's first copy ends: a mirrored view reaching past it wrapped in place.
  const uint8_t* const data_end = ring.data() + protocol::kPageSize + data_size;
  uint64_t crossed = 0;

  Doorbell reader_bell, writer_bell;
  const absl::Duration kWaitLimit = absl::Seconds(30);
  uint64_t writer_full = 0, writer_waits = 0, reader_waits = 0, reader_wakeups = 0, wrapped = 0,
           writer_signals_sent = 0;

  std::thread writer([&] {
    std::mt19937_64 rng(config.seed);
    std::vector<uint8_t> payload(config.max_payload);
    uint64_t sub_header[2];
    uint64_t batch = 0;
    for (uint64_t seq = 0; seq < config.packets;) {
      const size_t size = PickSize(rng, config.max_payload);
      const uint32_t length = static_cast<uint32_t>(size);
      std::memcpy(payload.data(), &seq, 8);
      std::memcpy(payload.data() + 8, &length, 4);
      for (size_t i = kHeader; i < size; i += 8) {
        const uint64_t word = rng();
        std::memcpy(payload.data() + i, &word, std::min<size_t>(8, size - i));
      }
      const uint32_t sum = Checksum(payload.data() + kHeader, size - kHeader);
      std::memcpy(payload.data() + 12, &sum, 4);
      const size_t sub_words = seq % 3;
      sub_header[0] = ~seq;
      sub_header[1] = seq * 3;
      // Gather from up to three pieces cut at random points.
      const absl::Span<const uint8_t> all(payload.data(), size);
      const size_t cut1 = rng() % (size + 1);
      const size_t cut2 = cut1 + rng() % (size - cut1 + 1);
      const absl::Span<const uint8_t> pieces[] = {
          all.subspan(0, cut1), all.subspan(cut1, cut2 - cut1), all.subspan(cut2)};
      OutgoingPacket packet;
      packet.type = seq % 5 == 0 ? PacketType::kCompletion : PacketType::kDataInband;
      packet.flags = seq % 2 ? kCompletionRequested : 0;
      packet.trans_id = seq;
      packet.sub_header =
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(sub_header), sub_words * 8);
      packet.payload = pieces;

      absl::StatusOr<AppendResult> r = out->Append(packet);
      if (!r.ok()) {
        ADD_FAILURE() << "writer: " << r.status();
        return;
      }
      if (*r == AppendResult::kAppended) {
        ++seq;
        // Commit in batches of 1-8 packets.
        if (++batch >= 1 + (seq % 8)) {
          batch = 0;
          if (out->Commit()) {
            ++writer_signals_sent;
            reader_bell.Ring();
          }
        } else if (config.publish) {
          out->Publish();
        }
        continue;
      }
      // Full: publish what we have, then wait for the reader to make room.
      ++writer_full;
      batch = 0;
      if (out->Commit()) {
        ++writer_signals_sent;
        reader_bell.Ring();
      }
      absl::StatusOr<bool> space = out->ArmPendingSend(PacketRingBytes(sub_words * 8, size));
      if (!space.ok()) {
        ADD_FAILURE() << "writer: " << space.status();
        return;
      }
      if (*space) continue;  // the reader freed space meanwhile: retry now
      ++writer_waits;
      if (!writer_bell.Wait(absl::Now() + kWaitLimit)) {
        ADD_FAILURE() << "writer: lost wake-up waiting for space at packet " << seq;
        return;
      }
    }
    if (out->Commit()) reader_bell.Ring();
  });

  std::thread reader([&] {
    uint64_t expected = 0;
    std::mt19937_64 rng(config.seed ^ 0x5555);
    uint64_t since_commit = 0;
    auto commit = [&]() -> bool {
      absl::StatusOr<bool> wake = in->CommitRead();
      if (!wake.ok()) {
        ADD_FAILURE() << "reader: " << wake.status();
        return false;
      }
      if (*wake) writer_bell.Ring();
      since_commit = 0;
      return true;
    };
    in->MaskInterrupts();
    while (expected < config.packets) {
      for (;;) {
        absl::StatusOr<std::optional<PacketView>> p = in->Next();
        if (!p.ok()) {
          ADD_FAILURE() << "reader: " << p.status();
          return;
        }
        if (!p->has_value()) break;
        const PacketView& v = **p;
        if (v.trans_id() != expected) {
          ADD_FAILURE() << "reader: expected packet " << expected << ", got " << v.trans_id();
          return;
        }
        uint64_t seq;
        uint32_t length, sum;
        const absl::Span<const uint8_t> data = v.payload();
        if (data.size() < kHeader) {
          ADD_FAILURE() << "reader: packet " << expected << " too short";
          return;
        }
        std::memcpy(&seq, data.data(), 8);
        std::memcpy(&length, data.data() + 8, 4);
        std::memcpy(&sum, data.data() + 12, 4);
        if (seq != expected || length > data.size() || data.size() - length >= 8 ||
            Checksum(data.data() + kHeader, length - kHeader) != sum) {
          ADD_FAILURE() << "reader: packet " << expected << " corrupt (seq " << seq << ", length "
                        << length << ", view " << data.size() << ")";
          return;
        }
        const size_t sub_words = expected % 3;
        uint64_t sub[2] = {~expected, expected * 3};
        if (v.sub_header().size() != sub_words * 8 ||
            std::memcmp(v.sub_header().data(), sub, sub_words * 8) != 0 ||
            v.type() != (expected % 5 == 0 ? PacketType::kCompletion : PacketType::kDataInband) ||
            v.completion_requested() != (expected % 2 == 1)) {
          ADD_FAILURE() << "reader: packet " << expected << " header fields corrupt";
          return;
        }
        wrapped += v.wrapped();
        crossed += config.mirrored && v.payload().data() + v.payload().size() > data_end;
        ++expected;
        // Batched commits of random length, sometimes mid-drain.
        if (++since_commit >= 1 + rng() % 16 && !commit()) return;
      }
      if (!commit()) return;
      absl::StatusOr<bool> more = in->UnmaskInterrupts();
      if (!more.ok()) {
        ADD_FAILURE() << "reader: " << more.status();
        return;
      }
      if (!*more) {
        if (expected == config.packets) break;
        ++reader_waits;
        if (!reader_bell.Wait(absl::Now() + kWaitLimit)) {
          ADD_FAILURE() << "reader: lost wake-up waiting for packet " << expected;
          return;
        }
        ++reader_wakeups;
      }
      in->MaskInterrupts();
    }
  });

  writer.join();
  reader.join();
  std::free(memory);  // null when mirrored
  EXPECT_TRUE(out->status().ok());
  EXPECT_TRUE(in->status().ok());
  // The run exercised what it claims to (ring full, waits on both sides, wrapped packets).
  EXPECT_GT(writer_full, 0u);
  EXPECT_GT(reader_waits, 0u);
  if (config.mirrored) {
    EXPECT_EQ(wrapped, 0u);  // never through scratch (there is none)
    EXPECT_GT(crossed, 0u);  // but packets did run past the end of the data area
  } else {
    EXPECT_GT(wrapped, 0u);
  }
  std::printf(
      "%s: %llu packets; writer full %llu times, waited %llu; reader waited %llu; "
      "%llu wrapped packets through scratch, %llu in place; %llu reader signals\n",
      config.name.c_str(), static_cast<unsigned long long>(config.packets),
      static_cast<unsigned long long>(writer_full), static_cast<unsigned long long>(writer_waits),
      static_cast<unsigned long long>(reader_waits), static_cast<unsigned long long>(wrapped),
      static_cast<unsigned long long>(crossed),
      static_cast<unsigned long long>(writer_signals_sent));
}

std::vector<StressConfig> Configs() {
  const uint64_t small =
      stress::EnvOr("VBUS_RING_STRESS_PACKETS", stress::kSanitized ? 300'000 : 1'000'000);
  return {
      // A small ring (16 KiB) with packets up to 4 KiB: constantly full, constant wraps.
      {"SmallRing", 4, 4096, small, 1},
      // A 256 KiB ring with packets up to 64 KiB.
      {"LargePackets", 64, 65536, std::max<uint64_t>(small / 20, 1000), 2},
      // Both again on mirrored rings.
      {"SmallRingMirrored", 4, 4096, small / 2, 3, true},
      {"LargePacketsMirrored", 64, 65536, std::max<uint64_t>(small / 40, 1000), 4, true},
      // Batches published packet by packet, decided once (adaptive send batching's pattern).
      {"SmallRingPublished", 4, 4096, small / 2, 5, false, true},
      {"LargePacketsPublished", 64, 65536, std::max<uint64_t>(small / 40, 1000), 6, false, true},
  };
}

INSTANTIATE_TEST_SUITE_P(Rings, RingStressTest, ::testing::ValuesIn(Configs()),
                         [](const ::testing::TestParamInfo<StressConfig>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace vbus
