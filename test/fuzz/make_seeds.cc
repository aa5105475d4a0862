// Writes the seed corpora of the fuzzers (checked in under test/fuzz/corpus/):
//   bazel run //test/fuzz:make_seeds -- $PWD/test/fuzz/corpus
// Ring seeds are real rings built with OutgoingRing (valid packets, wraps, GPA-direct, a full
// ring with pending_send_sz armed) plus scripted corruptions; event-page seeds are bitmaps and
// Set/scan scripts; bus-state seeds are scripts of the protocol's paths (connect with
// fallback, offers and sub-channels, open/modify/GPADL/close, rescind while open, unload,
// deadlines, link loss, post failures) and of hostile host input; host-engine seeds are
// scripts of guests connecting, opening and closing, with faults, and of hostile guests.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/data/ring_buffer.h"
#include "google/protobuf/text_format.h"
#include "hyperv/wire.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"
#include "test/fuzz/bus_fuzz_input.h"
#include "test/fuzz/host_fuzz_input.h"
#include "test/fuzz/ring_fuzz_input.h"

namespace vbus::fuzz {
namespace {

std::filesystem::path g_out;

void WriteFile(const std::string& dir, const std::string& name, const std::vector<uint8_t>& b) {
  std::filesystem::create_directories(g_out / dir);
  std::ofstream f(g_out / dir / name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  std::printf("%s/%s: %zu bytes\n", dir.c_str(), name.c_str(), b.size());
}

// A ring being built for a seed.
struct SeedRing {
  explicit SeedRing(size_t pages)
      : memory((pages + 1) * protocol::kPageSize + protocol::kPageSize) {
    // Page-align inside the vector.
    const auto base = reinterpret_cast<uintptr_t>(memory.data());
    start =
        memory.data() + (protocol::kPageSize - base % protocol::kPageSize) % protocol::kPageSize;
    span = absl::Span<uint8_t>(start, (pages + 1) * protocol::kPageSize);
    if (!InitializeRing(span).ok()) std::abort();
    out.emplace(*OutgoingRing::Attach(span));
    in.emplace(*IncomingRing::Attach(span, absl::MakeSpan(scratch)));
  }
  void Write(size_t payload, PacketType type = PacketType::kDataInband,
             absl::Span<const uint8_t> sub_header = {}) {
    std::vector<uint8_t> bytes(payload);
    for (size_t i = 0; i < payload; ++i) bytes[i] = static_cast<uint8_t>(i * 13 + payload);
    const absl::Span<const uint8_t> pieces[] = {bytes};
    OutgoingPacket p;
    p.type = type;
    p.trans_id = ++id;
    p.sub_header = sub_header;
    p.payload = pieces;
    if (!out->Write(p).ok()) std::abort();
  }
  void Consume(int packets) {
    for (int i = 0; i < packets; ++i) {
      if (!in->Next().ok()) std::abort();
    }
    if (!in->CommitRead().ok()) std::abort();
  }
  // Serializes in the fuzzer's input format.
  std::vector<uint8_t> Seed(uint8_t shape, const std::vector<uint8_t>& script) {
    std::vector<uint8_t> b;
    b.push_back(shape);
    b.insert(b.end(), start, start + 16);
    b.insert(b.end(), start + 64, start + 68);
    b.push_back(static_cast<uint8_t>(script.size()));
    b.insert(b.end(), script.begin(), script.end());
    size_t used = span.size() - protocol::kPageSize;
    while (used > 0 && start[protocol::kPageSize + used - 1] == 0)
      --used;  // trailing zeros implied
    b.insert(b.end(), start + protocol::kPageSize, start + protocol::kPageSize + used);
    return b;
  }
  std::vector<uint8_t> memory;
  uint8_t* start;
  absl::Span<uint8_t> span;
  std::vector<uint8_t> scratch = std::vector<uint8_t>(3 * protocol::kPageSize);
  std::optional<OutgoingRing> out;
  std::optional<IncomingRing> in;
  uint64_t id = 0;
};

constexpr uint8_t kOnePage = 0, kTwoPages = 1;
constexpr uint8_t kScratchNone = 0 << 1, kScratch64 = 1 << 1, kScratchFull = 3 << 1;

void RingSeeds() {
  const std::string dir = "ring_reader";
  {
    SeedRing r(1);
    WriteFile(dir, "empty.bin", r.Seed(kOnePage | kScratchFull, {}));
  }
  {
    SeedRing r(1);
    r.Write(0);
    r.Write(5);
    r.Write(100, PacketType::kCompletion);
    WriteFile(dir, "three_packets.bin", r.Seed(kOnePage | kScratchFull, {}));
    WriteFile(dir, "three_packets_script.bin",
              r.Seed(kOnePage | kScratchFull, {kNext, kCommitRead, kUnmask, kDrain, kCommitRead,
                                               kUnmask, kAvailable, kWrite, 10, kDrain}));
    // A peer moving write_index backwards after the reader looked.
    WriteFile(dir, "write_index_backwards.bin",
              r.Seed(kOnePage | kScratchFull, {kAvailable, kPeerWriteIndex, 0, 3, kDrain}));
    // Corrupt len8 of the second packet (at data offset 24, len8 at +4).
    WriteFile(dir, "corrupt_len8.bin",
              r.Seed(kOnePage | kScratchFull, {kPeerDataByte, 0, 28, 0xFF, kDrain}));
    WriteFile(dir, "corrupt_offset8.bin",
              r.Seed(kOnePage | kScratchFull, {kPeerDataByte, 0, 26, 0x09, kDrain}));
  }
  {
    SeedRing r(1);  // indices near the end, then a packet that wraps
    r.Write(4096 - 48 - 24);
    r.Consume(1);
    r.Write(300);
    r.Write(20);
    WriteFile(dir, "wrap.bin", r.Seed(kOnePage | kScratchFull, {}));
    WriteFile(dir, "wrap_small_scratch.bin",
              r.Seed(kOnePage | kScratch64, {kNext, kNext, kCommitRead, kAvailable}));
  }
  {
    SeedRing r(1);  // descriptor split across the end
    r.Write(4096 - 8 - 24);
    r.Consume(1);
    r.Write(40);
    WriteFile(dir, "split_descriptor.bin", r.Seed(kOnePage | kScratchNone, {}));
  }
  {
    SeedRing r(1);
    const uint64_t pfns[] = {0x1234, 0x1235, 0x99};
    const GpaRangeSpec ranges[] = {{5000, 16, absl::MakeSpan(pfns, 2)},
                                   {8, 4000, absl::MakeSpan(pfns + 2, 1)}};
    std::vector<uint8_t> sub(GpaDirectSubHeaderSize(ranges));
    if (!EncodeGpaDirectSubHeader(ranges, absl::MakeSpan(sub)).ok()) std::abort();
    r.Write(64, PacketType::kDataUsingGpaDirect, sub);
    WriteFile(dir, "gpa_direct.bin", r.Seed(kOnePage | kScratchFull, {}));
    WriteFile(dir, "gpa_direct_corrupt_count.bin",
              r.Seed(kOnePage | kScratchFull, {kPeerDataByte, 0, 20, 0x40, kDrain}));
  }
  {
    SeedRing r(1);  // full ring, writer waiting on pending_send_sz
    for (int i = 0; i < 31; ++i) r.Write(100);
    if (r.out->ArmPendingSend(PacketRingBytes(0, 300)).value_or(true)) std::abort();
    WriteFile(dir, "full_pending.bin",
              r.Seed(kOnePage | kScratchFull,
                     {kNext, kCommitRead, kNext, kCommitRead, kNext, kCommitRead, kDrain,
                      kCommitRead, kWrite, 33, kWrite, 200, kPeerReadIndex, 0, 5, kWrite, 1}));
  }
  {
    SeedRing r(2);
    r.Write(6000);
    r.Consume(1);
    r.Write(5000);
    WriteFile(dir, "two_pages_wrap.bin", r.Seed(kTwoPages | kScratchFull, {}));
  }
}

void EventPageSeeds() {
  const std::string dir = "event_page";
  WriteFile(dir, "empty.bin", std::vector<uint8_t>(256, 0));
  WriteFile(dir, "all_set.bin", std::vector<uint8_t>(256, 0xFF));
  std::vector<uint8_t> b(256, 0);
  b[0] = 0x03;    // bit 0 (reserved) and relid 1
  b[8] = 0x80;    // relid 71
  b[255] = 0x80;  // relid 2047
  auto op = [&](uint16_t v) {
    b.push_back(static_cast<uint8_t>(v));
    b.push_back(static_cast<uint8_t>(v >> 8));
  };
  op(7);
  op(7);
  op(2047);
  op(2048);    // invalid
  op(0);       // invalid
  op(0x8000);  // scan
  op(12);
  op(1000);
  op(0xC000);  // dispatch through the table
  op(3);
  WriteFile(dir, "ops.bin", b);
}

void BusSeeds() {
  using namespace bus;  // NOLINT: the script vocabulary
  const std::string dir = "bus_state";
  constexpr uint8_t kVersion53Id4 = 1 | (4 << 1);  // supported, message connection id 4
  // Connected at 5.3 with one echo offer (relid 1) and all offers delivered.
  auto connected = [] {
    Script s;
    s.Add({kConnect}).Add({kVersionResponse, kVersion53Id4});
    s.Add({kOffer, 1, 0, 0}).Add({kAllOffersDelivered});
    return s;
  };
  // ... and its channel open (ring GPADL = the first one sent, open = the first one sent).
  auto opened = [&] {
    Script s = connected();
    s.Add({kOpen, 0, 1}).Add({kGpadlCreated, 0, kStatusOk}).Add({kOpenResult, 0, kStatusOk});
    return s;
  };
  {
    Script s = opened();
    s.Add({kModify, 0, 1}).Add({kModifyResponse, 1, kStatusOk});
    s.Add({kCreateGpadl, 0, 3}).Add({kGpadlCreated, 1, kStatusOk});
    s.Add({kTeardownGpadl, 0, 1}).Add({kGpadlTorndown, 1});
    s.Add({kClose, 0}).Add({kGpadlTorndown, 0});
    s.Add({kRescind, 1}).Add({kRelease, 0}).Add({kUnload}).Add({kUnloadResponse});
    WriteFile(dir, "full_lifecycle.bin", s.bytes);
  }
  {
    Script s;
    s.Add({kConnect}).Add({kVersionResponse, 0}).Add({kVersionResponse, 0});
    s.Add({kPostFailed, 0, 1}).Add({kVersionResponse, 1}).Add({kAllOffersDelivered});
    WriteFile(dir, "version_fallback.bin", s.bytes);
  }
  {
    Script s = opened();
    s.Add({kRescind, 1}).Add({kGpadlTorndown, 0}).Add({kRelease, 0});
    s.Add({kOffer, 1, 2, 0}).Add({kOpen, 0, 2}).Add({kGpadlCreated, 1, kStatusOk});
    s.Add({kOpenResult, 1, kStatusFail});
    WriteFile(dir, "rescind_open_then_reuse.bin", s.bytes);
  }
  {
    Script s = connected();
    s.Add({kOffer, 2, 0, 1}).Add({kOffer, 3, 0, 2});  // sub-channels of relid 1
    s.Add({kOpen, 0, 1}).Add({kGpadlCreated, 0, kStatusOk}).Add({kOpenResult, 0, kStatusOk});
    s.Add({kOpen, 1, 1}).Add({kGpadlCreated, 1, kStatusOk}).Add({kOpenResult, 1, kStatusOk});
    s.Add({kRescind, 1}).Add({kRelease, 0}).Add({kRelease, 0}).Add({kRelease, 0});
    WriteFile(dir, "sub_channels.bin", s.bytes);
  }
  {
    Script s = connected();
    s.Add({kOffer, kMadeUp | 0, 0, 0});  // relid 0
    s.Add({kOffer, kMadeUp | 2, 0, 0});  // relid 2048
    s.Add({kOffer, 1, 0, 0});            // duplicate relid
    s.Add({kOffer, 5, 0x70, 0});         // malformed instance
    s.Add({kOffer, 6, 2, 3});            // sub-channel without a primary
    s.Add({kOpenResult, kMadeUp | 1, kStatusOk}).Add({kGpadlCreated, kMadeUp | 9, kStatusOk});
    s.Add({kGpadlTorndown, kMadeUp | 7}).Add({kModifyResponse, 4, kStatusOk});
    s.Add({kRescind, kMadeUp | 3}).Add({kUnloadResponse});
    v1::ControlMessage second;
    second.mutable_version_response()->set_version_supported(true);
    std::string bytes = second.SerializeAsString();
    s.Add({kRawMessage, static_cast<uint8_t>(bytes.size())});
    s.bytes.insert(s.bytes.end(), bytes.begin(), bytes.end());
    v1::ControlMessage guest_only;
    guest_only.mutable_open_channel()->set_child_relid(1);
    bytes = guest_only.SerializeAsString();
    s.Add({kRawMessage, static_cast<uint8_t>(bytes.size())});
    s.bytes.insert(s.bytes.end(), bytes.begin(), bytes.end());
    s.Add({kOpen, 0, 1}).Add({kGpadlCreated, 0, kStatusOk}).Add({kOpenResult, 0, kStatusOk});
    WriteFile(dir, "hostile_host.bin", s.bytes);
  }
  {
    Script s;
    s.Add({kConnect}).Add({kAdvance, 11}).Add({kTimer, 0});  // no answer
    s.Add({kConnect}).Add({kVersionResponse, kVersion53Id4}).Add({kOffer, 1, 0, 0});
    s.Add({kTimer, kMadeUp}).Add({kAdvance, 11}).Add({kTimer, 0});  // no AllOffersDelivered
    s.Add({kOpen, 0, 1}).Add({kAdvance, 11}).Add({kTimer, 0}).Add({kGpadlCreated, 0, 0});
    WriteFile(dir, "deadlines.bin", s.bytes);
  }
  {
    Script s = connected();
    s.Add({kOpen, 0, 1}).Add({kGpadlCreated, 0, kStatusOk}).Add({kLinkLost});
    s.Add({kRelease, 0}).Add({kConnect}).Add({kVersionResponse, kVersion53Id4});
    s.Add({kOffer, 1, 0, 0}).Add({kAllOffersDelivered}).Add({kOpen, 0, 1}).Add({kClose, 0});
    WriteFile(dir, "link_lost_mid_open.bin", s.bytes);
  }
}

void HostSeeds() {
  using bus::Script;
  using namespace host;  // NOLINT: the script vocabulary
  const std::string dir = "host_engine";
  // One guest connected at 5.3 with an echo channel (relid 1) offered.
  auto connected = [] {
    Script s;
    s.Add({kAttach}).Add({kOffer, 0, 0, 0, 0});
    s.Add({kGuestMessage, 0, kInitiateContact, 7, 0, 0})
        .Add({kGuestMessage, 0, kRequestOffers, 0, 0, 0});
    return s;
  };
  // ... and opened on GPADL 0xE1E10 (4 pages from PFN 5), split at page 2.
  auto opened = [&] {
    Script s = connected();
    s.Add({kGuestMessage, 0, kGpadlCreate, 0, 0, 3});
    s.Add({kGuestMessage, 0, kOpenChannel, 0, 0, 2});
    return s;
  };
  {
    Script s = opened();
    s.Add({kGuestMessage, 0, kModifyChannel, 0, 1, 0})
        .Add({kGuestMessage, 0, kCloseChannel, 0, 0, 0});
    s.Add({kGuestMessage, 0, kGpadlTeardown, 0, 0, 0}).Add({kRescind, 0, 0});
    s.Add({kGuestMessage, 0, kRelidReleased, 0, 0, 0}).Add({kOffer, 0, 1, 2, 0});
    s.Add({kGuestMessage, 0, kUnload, 0, 0, 0});
    WriteFile(dir, "lifecycle.bin", s.bytes);
  }
  {
    Script s = connected();
    s.Add({kAttach}).Add({kOffer, 1, 1, 0, 0});
    s.Add({kGuestMessage, 1, kInitiateContact, 2, 0, 0})
        .Add({kGuestMessage, 1, kRequestOffers, 0, 0, 0});
    s.Add({kFault, 0, 1, 2, 1});  // refuse the next open with a status
    s.Add({kGuestMessage, 0, kGpadlCreate, 0, 0, 3}).Add({kGuestMessage, 0, kOpenChannel, 0, 0, 2});
    s.Add({kFault, 1, 0, 2 | (2 << 3), 40});  // delay gpadl_created by 40 ms
    s.Add({kGuestMessage, 1, kGpadlCreate, 0, 1, 1}).Add({kAdvance, 20});
    s.Add({kFault, 1, 2, 0, 0}).Add({kGuestMessage, 0, kCloseChannel, 0, 0, 0});
    WriteFile(dir, "two_guests_faults.bin", s.bytes);
  }
  {
    Script s;
    s.Add({kAttach}).Add({kGuestMessage, 0, kRequestOffers, 0, 0, 0});  // before InitiateContact
    s.Add({kGuestMessage, 0, kInitiateContact, 8, 0, 0});               // unsupported version
    s.Add({kGuestMessage, 0, kInitiateContact, 7, 0, 0}).Add({kOffer, 0, 0, 1, 0});
    s.Add({kGuestMessage, 0, kRequestOffers, 0, 0, 0});
    s.Add({kGuestMessage, 0, kGpadlCreate, 0, 0, 0x80 | 0x7F});  // PFNs past the end
    s.Add({kGuestMessage, 0, kGpadlCreate, 0x80, 0, 3});         // relid 0
    s.Add({kGuestMessage, 0, kGpadlCreate, 0, 0, 3}).Add({kGuestMessage, 0, kGpadlCreate, 0, 1, 3});
    s.Add({kGuestMessage, 0, kOpenChannel, 0, 0, 9});  // offset past the GPADL
    s.Add({kGuestMessage, 0, kOpenChannel, 0, 0, 2}).Add({kGuestMessage, 0, kOpenChannel, 0, 0, 2});
    s.Add({kGuestMessage, 0, kHostOnlyOffer, 0, 0, 0})
        .Add({kGuestMessage, 0, kHostOnlyVersionResponse, 0, 0, 0});
    s.Add({kGuestMessage, 0, kEmptyMessage, 0, 0, 0})
        .Add({kGuestMessage, 0, kRelidReleased, 0, 0, 0});
    v1::GuestToHost batch;
    batch.mutable_batch()->add_messages()->mutable_close_channel()->set_child_relid(1);
    batch.mutable_batch()->add_messages()->mutable_unload();
    std::string bytes = batch.SerializeAsString();
    s.Add({kGuestRaw, 0, static_cast<uint8_t>(bytes.size())});
    s.bytes.insert(s.bytes.end(), bytes.begin(), bytes.end());
    v1::GuestToHost again;
    again.mutable_attach()->set_guest_name("vm1");
    bytes = again.SerializeAsString();
    s.Add({kGuestRaw, 0, static_cast<uint8_t>(bytes.size())});
    s.bytes.insert(s.bytes.end(), bytes.begin(), bytes.end());
    v1::GuestToHost empty_batch;
    empty_batch.mutable_batch();
    bytes = empty_batch.SerializeAsString();
    s.Add({kGuestRaw, 0, static_cast<uint8_t>(bytes.size())});
    s.bytes.insert(s.bytes.end(), bytes.begin(), bytes.end());
    WriteFile(dir, "hostile_guest.bin", s.bytes);
  }
  {
    Script s = connected();
    s.Add({kFailNextMap}).Add({kGuestMessage, 0, kGpadlCreate, 0, 0, 3});
    s.Add({kGuestMessage, 0, kOpenChannel, 0, 0, 2}).Add({kGuestMessage, 0, kOpenChannel, 0, 0, 2});
    s.Add({kRescind, 0, 0}).Add({kDetach, 0});
    WriteFile(dir, "failed_map_rescind_detach.bin", s.bytes);
  }
  {
    Script s = opened();
    s.Add({kConfigure, 0, 2 | 4}).Add({kOffer, 0, 1, 1, 0});
    s.Add({kGuestMessage, 0, kCloseChannel, 0, 0, 0}).Add({kGuestMessage, 0, kUnload, 0, 0, 0});
    s.Add({kGuestMessage, 0, kInitiateContact, 7, 0, 0})
        .Add({kGuestMessage, 0, kRequestOffers, 0, 0, 0});
    s.Add({kConfigure, 3, 1}).Add({kGuestMessage, 0, kUnload, 0, 0, 0});
    s.Add({kGuestMessage, 0, kInitiateContact, 7, 0, 0});
    WriteFile(dir, "unload_remap_resume.bin", s.bytes);
  }
}

// Wire seeds: streams of [length byte][message] as wire_fuzzer reads them, encoded from
// messages of every kind (and a few hand-spoiled ones), so the fuzzer starts from each type's
// valid shape.
void AppendWire(std::vector<uint8_t>& seed, const std::vector<uint8_t>& message) {
  seed.push_back(static_cast<uint8_t>(message.size()));
  seed.insert(seed.end(), message.begin(), message.end());
}
std::vector<uint8_t> WireSeed(const std::vector<std::string>& texts) {
  std::vector<uint8_t> seed;
  for (const std::string& text : texts) {
    v1::ControlMessage m;
    if (!google::protobuf::TextFormat::ParseFromString(text, &m)) std::abort();
    absl::StatusOr<std::vector<hyperv::WireMessage>> parts = hyperv::EncodeMessage(m);
    if (!parts.ok()) {
      std::fprintf(stderr, "wire seed %s: %s\n", text.c_str(), parts.status().ToString().c_str());
      std::abort();
    }
    for (const hyperv::WireMessage& p : *parts) AppendWire(seed, p);
  }
  return seed;
}
std::string GpadlText(uint32_t gpadl, uint32_t pages) {
  std::string t = "gpadl_create { child_relid: 3 gpadl: " + std::to_string(gpadl) +
                  " byte_count: " + std::to_string(pages * 4096);
  for (uint32_t i = 0; i < pages; ++i) t += " pfns: " + std::to_string(0x1000 + i);
  return t + " }";
}

void WireSeeds() {
  const std::string ids =
      "guest_endpoint_id { value: '00112233-4455-6677-8899-aabbccddeeff' } "
      "host_service_id { value: 'f8615163-df3e-46c5-913f-f2d2f965ed0e' }";
  const std::string offer =
      "offer { interface_type { value: 'f8615163-df3e-46c5-913f-f2d2f965ed0e' } "
      "interface_instance { value: '00112233-4455-6677-8899-aabbccddeeff' } child_relid: 5 "
      "flags: 0x2411 mmio_megabytes: 3 user_defined: 'pipe' sub_channel_index: 1 "
      "monitor_id: 9 monitor_allocated: true dedicated_interrupt: true connection_id: 65541 "
      "interrupt_latency: 77 reserved: 1 mmio_megabytes_optional: 2 "
      "monitor_allocated_reserved_bits: 3 dedicated_interrupt_reserved_bits: 4 }";
  WriteFile("wire", "connect_5_3",
            WireSeed({"initiate_contact { version_requested: 0x50003 message_sint: 2 "
                      "monitor_page1: 4096 monitor_page2: 8192 }",
                      "version_response { version_supported: true message_connection_id: 4 }",
                      "request_offers {}", offer, "all_offers_delivered {}"}));
  WriteFile("wire", "connect_old_and_6_0",
            WireSeed({"initiate_contact { version_requested: 0x40001 interrupt_page: 0x5000 }",
                      "version_response { connection_state: 2 }",
                      "initiate_contact { version_requested: 0x60000 message_sint: 2 "
                      "feature_flags: 9 client_id { value: "
                      "'57164f39-9115-4e78-ab55-382f3bd5422d' } }",
                      "version_response { version_supported: true supported_features: 3 }"}));
  WriteFile("wire", "channel_life",
            WireSeed({GpadlText(0xE1E10, 60), "gpadl_created { child_relid: 3 gpadl: 0xE1E10 }",
                      "open_channel { child_relid: 3 open_id: 1 ring_buffer_gpadl: 0xE1E10 "
                      "target_vp: 1 downstream_ring_page_offset: 30 user_data: 'x' }",
                      "open_channel { child_relid: 3 open_id: 2 ring_buffer_gpadl: 0xE1E10 "
                      "connection_id: 9 event_flag: 3 open_flags: 1 }",
                      "open_result { child_relid: 3 open_id: 1 }",
                      "modify_channel { child_relid: 3 target_vp: 2 }",
                      "modify_channel_response { child_relid: 3 status: 1 }",
                      "close_channel { child_relid: 3 }",
                      "gpadl_teardown { child_relid: 3 gpadl: 0xE1E10 }",
                      "gpadl_torndown { gpadl: 0xE1E10 }", "rescind_offer { child_relid: 3 }",
                      "relid_released { child_relid: 3 }", "unload {}", "unload_response {}"}));
  WriteFile("wire", "hv_sock",
            WireSeed({"tl_connect_request { " + ids + " }",
                      "tl_connect_request { " + ids +
                          " silo_id { value: '57164f39-9115-4e78-ab55-382f3bd5422d' } }",
                      "tl_connect_result { " + ids + " status: 0xC0000001 }"}));
  // Two GPADLs interleaved part by part, and the largest that fits the fuzzer's 4 KiB input
  // (400 pages: a header and 15 bodies).
  std::vector<uint8_t> a = WireSeed({GpadlText(7, 60)});
  std::vector<uint8_t> b = WireSeed({GpadlText(8, 40)});
  std::vector<uint8_t> interleaved;
  auto next_message = [](const std::vector<uint8_t>& from, size_t& at, std::vector<uint8_t>& to) {
    if (at >= from.size()) return;
    const size_t n = 1 + from[at];
    to.insert(to.end(), from.begin() + at, from.begin() + at + n);
    at += n;
  };
  size_t at_a = 0, at_b = 0;
  while (at_a < a.size() || at_b < b.size()) {
    next_message(a, at_a, interleaved);
    next_message(b, at_b, interleaved);
  }
  WriteFile("wire", "gpadls_interleaved", interleaved);
  WriteFile("wire", "gpadl_400_pages", WireSeed({GpadlText(9, 400)}));
  // Hostile: a body with no header, a header twice, a header with two ranges, a message past
  // 240 bytes, type 0, type 25, an offer one byte short.
  std::vector<uint8_t> hostile = WireSeed({GpadlText(10, 30)});
  const std::vector<uint8_t> header(hostile.begin() + 1, hostile.begin() + 1 + hostile[0]);
  std::vector<uint8_t> spoiled;
  AppendWire(spoiled, std::vector<uint8_t>(hostile.begin() + 1 + hostile[0], hostile.end()));
  AppendWire(spoiled, header);
  AppendWire(spoiled, header);
  std::vector<uint8_t> two_ranges = header;
  two_ranges[18] = 2;
  AppendWire(spoiled, two_ranges);
  std::vector<uint8_t> too_long(250, 0);
  too_long[0] = 3;
  AppendWire(spoiled, too_long);
  AppendWire(spoiled, std::vector<uint8_t>(8, 0));
  AppendWire(spoiled, {25, 0, 0, 0, 0, 0, 0, 0});
  std::vector<uint8_t> short_offer = WireSeed({offer});
  AppendWire(spoiled, std::vector<uint8_t>(short_offer.begin() + 1, short_offer.end() - 1));
  WriteFile("wire", "hostile", spoiled);
}

}  // namespace
}  // namespace vbus::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <corpus directory>\n");
    return 1;
  }
  vbus::fuzz::g_out = argv[1];
  vbus::fuzz::RingSeeds();
  vbus::fuzz::EventPageSeeds();
  vbus::fuzz::BusSeeds();
  vbus::fuzz::HostSeeds();
  vbus::fuzz::WireSeeds();
  return 0;
}
