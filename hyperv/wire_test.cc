// The binary VMBus codec, byte for byte. Every wire vector here is written by hand from the
// offsets of docs/wire.md §1 (a small offset writer, never the codec's encoder): it must
// decode to the expected message, and encoding that message must give the same bytes back.
// Then a hostile vector for every decoding rule of docs/wire.md §2, the encoder's
// refusals, and the GPADL reassembler's state and limits.
#include "hyperv/wire.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "proto/control.pb.h"

namespace vbus::hyperv {
namespace {

using ::testing::HasSubstr;

// A wire vector written at explicit offsets, little-endian.
class Bytes {
 public:
  explicit Bytes(size_t size) : b_(size, 0) {}
  Bytes& u8(size_t at, uint8_t v) { return put(at, v, 1); }
  Bytes& u16(size_t at, uint16_t v) { return put(at, v, 2); }
  Bytes& u32(size_t at, uint32_t v) { return put(at, v, 4); }
  Bytes& u64(size_t at, uint64_t v) { return put(at, v, 8); }
  Bytes& raw(size_t at, std::vector<uint8_t> v) {
    for (size_t i = 0; i < v.size(); ++i) b_.at(at + i) = v[i];
    return *this;
  }
  Bytes& fill(size_t at, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; ++i) b_.at(at + i) = static_cast<uint8_t>(seed + i * 7);
    return *this;
  }
  // A container: converts to absl::Span<const uint8_t> as well as to a vector.
  const uint8_t* data() const { return b_.data(); }
  size_t size() const { return b_.size(); }
  operator std::vector<uint8_t>() const { return b_; }  // NOLINT: test sugar

 private:
  Bytes& put(size_t at, uint64_t v, size_t width) {
    for (size_t i = 0; i < width; ++i) b_.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
    return *this;
  }
  std::vector<uint8_t> b_;
};

// f8615163-df3e-46c5-913f-f2d2f965ed0e (network) in wire order, as docs/protocol.md §14 shows.
const std::vector<uint8_t> kNetworkWire = {0x63, 0x51, 0x61, 0xf8, 0x3e, 0xdf, 0xc5, 0x46,
                                           0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e};
constexpr char kNetwork[] = "f8615163-df3e-46c5-913f-f2d2f965ed0e";
// 00112233-4455-6677-8899-aabbccddeeff in wire order.
const std::vector<uint8_t> kCountingWire = {0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66,
                                            0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
constexpr char kCounting[] = "00112233-4455-6677-8899-aabbccddeeff";
// 57164f39-9115-4e78-ab55-382f3bd5422d (heartbeat) in wire order.
const std::vector<uint8_t> kHeartbeatWire = {0x39, 0x4f, 0x16, 0x57, 0x15, 0x91, 0x78, 0x4e,
                                             0xab, 0x55, 0x38, 0x2f, 0x3b, 0xd5, 0x42, 0x2d};
constexpr char kHeartbeat[] = "57164f39-9115-4e78-ab55-382f3bd5422d";

v1::ControlMessage Text(const std::string& text) {
  v1::ControlMessage m;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &m)) << text;
  return m;
}

std::string Pattern(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7);
  return s;
}

// `parts` decode (through one WireDecoder) to `expected`, and `expected` encodes to `parts`.
void ExpectCodec(const std::vector<std::vector<uint8_t>>& parts,
                 const v1::ControlMessage& expected) {
  WireDecoder decoder;
  std::optional<v1::ControlMessage> got;
  for (size_t i = 0; i < parts.size(); ++i) {
    absl::StatusOr<std::optional<v1::ControlMessage>> m = decoder.Decode(parts[i]);
    ASSERT_TRUE(m.ok()) << "part " << i << ": " << m.status();
    ASSERT_EQ(m->has_value(), i + 1 == parts.size()) << "part " << i;
    got = std::move(*m);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*got, expected))
      << "decoded:\n"
      << got->DebugString() << "expected:\n"
      << expected.DebugString();
  absl::StatusOr<std::vector<WireMessage>> encoded = EncodeMessage(expected);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(*encoded, parts);
}

void ExpectCodec(const std::vector<uint8_t>& one, const v1::ControlMessage& expected) {
  ExpectCodec(std::vector<std::vector<uint8_t>>{one}, expected);
}

absl::Status DecodeStatus(const std::vector<uint8_t>& bytes) {
  return DecodeMessage(bytes).status();
}

// ---- Every message type, from the documented offsets ----------------------------------------

// The offer: every one of the 196 bytes but the header padding is a field, so this vector,
// with every field and reserved bit non-zero, survives decode and encode unchanged.
TEST(WireCodecTest, OfferRoundTripsByteForByte) {
  const std::vector<uint8_t> wire = Bytes(196)
                                        .u32(0, 1)
                                        .raw(8, kNetworkWire)
                                        .raw(24, kCountingWire)
                                        .u64(40, 0x1122334455667788)  // interrupt latency
                                        .u64(48, 0x99aabbccddeeff01)  // reserved
                                        .u16(56, 0x2411)              // chn_flags
                                        .u16(58, 0x0123)              // mmio_megabytes
                                        .fill(60, 120, 3)             // user_def
                                        .u16(180, 5)                  // sub_channel_index
                                        .u16(182, 0xfedc)             // mmio_megabytes_optional
                                        .u32(184, 2047)               // child_relid
                                        .u8(188, 127)                 // monitorid
                                        .u8(189, 0xab)                // allocated + reserved bits
                                        .u16(190, 0x8003)             // dedicated + reserved bits
                                        .u32(192, 0x10007);           // connection_id
  v1::ControlMessage expected;
  v1::Offer& o = *expected.mutable_offer();
  o.mutable_interface_type()->set_value(kNetwork);
  o.mutable_interface_instance()->set_value(kCounting);
  o.set_interrupt_latency(0x1122334455667788);
  o.set_reserved(0x99aabbccddeeff01);
  o.set_flags(0x2411);
  o.set_mmio_megabytes(0x0123);
  o.set_user_defined(Pattern(120, 3));
  o.set_sub_channel_index(5);
  o.set_mmio_megabytes_optional(0xfedc);
  o.set_child_relid(2047);
  o.set_monitor_id(127);
  o.set_monitor_allocated(true);
  o.set_monitor_allocated_reserved_bits(0xab >> 1);
  o.set_dedicated_interrupt(true);
  o.set_dedicated_interrupt_reserved_bits(0x8003 >> 1);
  o.set_connection_id(0x10007);
  ExpectCodec(wire, expected);
}

TEST(WireCodecTest, PlainOfferWithJunkMonitorIdRoundTrips) {
  // Not monitored: the monitor id byte is junk a host may leave there (200), carried as is.
  const std::vector<uint8_t> wire = Bytes(196)
                                        .u32(0, 1)
                                        .raw(8, kHeartbeatWire)
                                        .raw(24, kCountingWire)
                                        .u32(184, 1)
                                        .u8(188, 200)
                                        .u32(192, 0x10001);
  v1::ControlMessage expected = Text(absl::StrCat(
      "offer { interface_type { value: '", kHeartbeat, "' } interface_instance { value: '",
      kCounting, "' } child_relid: 1 monitor_id: 200 connection_id: 65537 }"));
  expected.mutable_offer()->set_user_defined(std::string(120, '\0'));
  ExpectCodec(wire, expected);
}

TEST(WireCodecTest, HeaderOnlyMessages) {
  ExpectCodec(Bytes(8).u32(0, 3), Text("request_offers {}"));
  ExpectCodec(Bytes(8).u32(0, 4), Text("all_offers_delivered {}"));
  ExpectCodec(Bytes(8).u32(0, 16), Text("unload {}"));
  ExpectCodec(Bytes(8).u32(0, 17), Text("unload_response {}"));
}

TEST(WireCodecTest, RelidMessages) {
  ExpectCodec(Bytes(12).u32(0, 2).u32(8, 7), Text("rescind_offer { child_relid: 7 }"));
  ExpectCodec(Bytes(12).u32(0, 7).u32(8, 8), Text("close_channel { child_relid: 8 }"));
  ExpectCodec(Bytes(12).u32(0, 13).u32(8, 9), Text("relid_released { child_relid: 9 }"));
  ExpectCodec(Bytes(20).u32(0, 6).u32(8, 10).u32(12, 0xabc).u32(16, 0xC0000001),
              Text("open_result { child_relid: 10 open_id: 0xabc status: 0xC0000001 }"));
  ExpectCodec(Bytes(16).u32(0, 22).u32(8, 11).u32(12, 3),
              Text("modify_channel { child_relid: 11 target_vp: 3 }"));
  ExpectCodec(Bytes(16).u32(0, 24).u32(8, 12).u32(12, 0),
              Text("modify_channel_response { child_relid: 12 status: 0 }"));
}

TEST(WireCodecTest, GpadlAnswersAndTeardown) {
  ExpectCodec(Bytes(20).u32(0, 10).u32(8, 4).u32(12, 0xE1E10).u32(16, 0),
              Text("gpadl_created { child_relid: 4 gpadl: 0xE1E10 creation_status: 0 }"));
  ExpectCodec(Bytes(16).u32(0, 11).u32(8, 4).u32(12, 0xE1E11),
              Text("gpadl_teardown { child_relid: 4 gpadl: 0xE1E11 }"));
  ExpectCodec(Bytes(12).u32(0, 12).u32(8, 0xE1E11), Text("gpadl_torndown { gpadl: 0xE1E11 }"));
}

TEST(WireCodecTest, OpenChannelBothForms) {
  const Bytes base = Bytes(148)
                         .u32(0, 5)
                         .u32(8, 6)          // child_relid
                         .u32(12, 0x77)      // openid
                         .u32(16, 0xE1E10)   // ringbuffer_gpadl
                         .u32(20, 2)         // target_vp
                         .u32(24, 16)        // downstream_ring_page_offset
                         .fill(28, 120, 9);  // userdata
  v1::ControlMessage expected = Text(
      "open_channel { child_relid: 6 open_id: 0x77 ring_buffer_gpadl: 0xE1E10 target_vp: 2 "
      "downstream_ring_page_offset: 16 }");
  expected.mutable_open_channel()->set_user_data(Pattern(120, 9));
  ExpectCodec(base, expected);

  // 6.0: connection id @148, event flag u16 @152, flags u16 @154.
  std::vector<uint8_t> long_form = base;
  long_form.resize(156);
  long_form = Bytes(156).raw(0, long_form).u32(148, 0x2001).u16(152, 6).u16(154, 1);
  expected.mutable_open_channel()->set_connection_id(0x2001);
  expected.mutable_open_channel()->set_event_flag(6);
  expected.mutable_open_channel()->set_open_flags(1);
  ExpectCodec(long_form, expected);
}

TEST(WireCodecTest, InitiateContactByVersion) {
  // 5.3: msg_sint u8 @16, msg_vtl u8 @17, feature_flags u32 @20.
  ExpectCodec(Bytes(40)
                  .u32(0, 14)
                  .u32(8, 0x00050003)
                  .u32(12, 1)
                  .u8(16, 2)
                  .u8(17, 0)
                  .u64(24, 0x3000)
                  .u64(32, 0x4000),
              Text("initiate_contact { version_requested: 0x50003 target_vcpu: 1 "
                   "message_sint: 2 monitor_page1: 0x3000 monitor_page2: 0x4000 }"));
  // 4.1: the interrupt page u64 @16.
  ExpectCodec(Bytes(40)
                  .u32(0, 14)
                  .u32(8, 0x00040001)
                  .u64(16, 0x123456789000)
                  .u64(24, 0x3000)
                  .u64(32, 0x4000),
              Text("initiate_contact { version_requested: 0x40001 interrupt_page: 0x123456789000 "
                   "monitor_page1: 0x3000 monitor_page2: 0x4000 }"));
  // 6.0 with a client id @40 and feature flags.
  ExpectCodec(Bytes(56)
                  .u32(0, 14)
                  .u32(8, 0x00060000)
                  .u8(16, 2)
                  .u8(17, 1)
                  .u32(20, 0x9)
                  .u64(24, 0x3000)
                  .u64(32, 0x4000)
                  .raw(40, kCountingWire),
              Text(absl::StrCat("initiate_contact { version_requested: 0x60000 message_sint: 2 "
                                "message_vtl: 1 feature_flags: 9 monitor_page1: 0x3000 "
                                "monitor_page2: 0x4000 client_id { value: '",
                                kCounting, "' } }")));
}

TEST(WireCodecTest, VersionResponseBothForms) {
  ExpectCodec(Bytes(16).u32(0, 15).u8(8, 1).u8(9, 0).u32(12, 4),
              Text("version_response { version_supported: true message_connection_id: 4 }"));
  ExpectCodec(Bytes(16).u32(0, 15).u8(8, 0).u8(9, 2),
              Text("version_response { connection_state: 2 }"));
  ExpectCodec(Bytes(20).u32(0, 15).u8(8, 1).u32(12, 4).u32(16, 0x13),
              Text("version_response { version_supported: true message_connection_id: 4 "
                   "supported_features: 0x13 }"));
}

TEST(WireCodecTest, TlConnectMessages) {
  const std::string ids = absl::StrCat("guest_endpoint_id { value: '", kCounting,
                                       "' } host_service_id { value: '", kNetwork, "' }");
  ExpectCodec(Bytes(40).u32(0, 21).raw(8, kCountingWire).raw(24, kNetworkWire),
              Text(absl::StrCat("tl_connect_request { ", ids, " }")));
  ExpectCodec(
      Bytes(56).u32(0, 21).raw(8, kCountingWire).raw(24, kNetworkWire).raw(40, kHeartbeatWire),
      Text(absl::StrCat("tl_connect_request { ", ids, " silo_id { value: '", kHeartbeat, "' } }")));
  ExpectCodec(Bytes(44).u32(0, 23).raw(8, kCountingWire).raw(24, kNetworkWire).u32(40, 0xC0000236),
              Text(absl::StrCat("tl_connect_result { ", ids, " status: 0xC0000236 }")));
}

// A GPADL small enough for its header: one message.
TEST(WireCodecTest, GpadlInTheHeaderAlone) {
  ExpectCodec(Bytes(44)
                  .u32(0, 8)
                  .u32(8, 3)         // child_relid
                  .u32(12, 0xE1E10)  // gpadl
                  .u16(16, 24)       // range_buflen: 8 + 8 × 2
                  .u16(18, 1)        // rangecount
                  .u32(20, 5000)     // byte_count
                  .u32(24, 100)      // byte_offset: 100 + 5000 ends in page 2
                  .u64(28, 0x1000)
                  .u64(36, 0x2000),
              Text("gpadl_create { child_relid: 3 gpadl: 0xE1E10 byte_count: 5000 "
                   "byte_offset: 100 pfns: 0x1000 pfns: 0x2000 }"));
}

// 60 pages: a header with 26 PFNs, a body with 28, a body with 6.
TEST(WireCodecTest, GpadlSplitIntoHeaderAndBodies) {
  constexpr uint32_t kPages = 60;
  Bytes header(28 + 26 * 8);  // 236: 26 PFNs fill the header
  header.u32(0, 8).u32(8, 3).u32(12, 0xE1E12).u16(16, 8 + 8 * kPages).u16(18, 1);
  header.u32(20, kPages * 4096).u32(24, 0);
  Bytes body1(240), body2(16 + 6 * 8);
  body1.u32(0, 9).u32(12, 0xE1E12);
  body2.u32(0, 9).u32(12, 0xE1E12);
  v1::ControlMessage expected = Text(absl::StrCat(
      "gpadl_create { child_relid: 3 gpadl: 0xE1E12 byte_count: ", kPages * 4096, " }"));
  for (uint32_t i = 0; i < kPages; ++i) {
    const uint64_t pfn = 0x100000 + i * 3;
    expected.mutable_gpadl_create()->add_pfns(pfn);
    if (i < 26) {
      header.u64(28 + 8 * i, pfn);
    } else if (i < 54) {
      body1.u64(16 + 8 * (i - 26), pfn);
    } else {
      body2.u64(16 + 8 * (i - 54), pfn);
    }
  }
  ExpectCodec({header, body1, body2}, expected);
}

TEST(WireCodecTest, LargestGpadlIs293Messages) {
  v1::ControlMessage m = Text("gpadl_create { child_relid: 1 gpadl: 5 }");
  v1::GpadlCreate& g = *m.mutable_gpadl_create();
  g.set_byte_count(protocol::kMaxGpadlPages * 4096);
  for (uint64_t i = 0; i < protocol::kMaxGpadlPages; ++i) g.add_pfns(i * 7 + 1);
  absl::StatusOr<std::vector<WireMessage>> parts = EncodeMessage(m);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 293u);
  EXPECT_EQ((*parts)[0].size(), 28u + 26 * 8);
  EXPECT_EQ((*parts)[0][16] | (*parts)[0][17] << 8, 65528);  // range_buflen
  for (const WireMessage& p : *parts) EXPECT_LE(p.size(), 240u);
  ExpectCodec(*parts, m);

  g.add_pfns(1);
  g.set_byte_count(g.byte_count() + 4096);
  EXPECT_THAT(EncodeMessage(m).status().message(), HasSubstr("8191 pages; at most 8190"));
}

// ---- Hostile input: one vector per rule of docs/wire.md §2 ------------------------------

TEST(WireHardeningTest, PayloadLongerThanTheSynicSlot) {
  std::vector<uint8_t> wire = Bytes(241).u32(0, 3);
  EXPECT_THAT(DecodeStatus(wire).message(), HasSubstr("241 bytes is longer than the SynIC"));
}

TEST(WireHardeningTest, ShorterThanTheHeader) {
  EXPECT_THAT(DecodeStatus(Bytes(7).u32(0, 3)).message(), HasSubstr("shorter than the 8-byte"));
  EXPECT_EQ(DecodeStatus({}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(WireHardeningTest, TypeOutOfRange) {
  EXPECT_THAT(DecodeStatus(Bytes(8).u32(0, 0)).message(), HasSubstr("type 0 (INVALID)"));
  EXPECT_THAT(DecodeStatus(Bytes(8).u32(0, 25)).message(), HasSubstr("type 25 is out of range"));
  EXPECT_THAT(DecodeStatus(Bytes(8).u32(0, 0xFFFFFFFF)).message(), HasSubstr("out of range"));
  for (uint32_t unused : {18u, 19u, 20u}) {
    EXPECT_THAT(DecodeStatus(Bytes(40).u32(0, unused)).message(),
                HasSubstr("not one a guest or its host exchanges"));
  }
}

TEST(WireHardeningTest, EveryTypeShorterThanItsMinimum) {
  int checked = 0;
  for (uint32_t type = 1; type < kWireTypeCount; ++type) {
    const size_t minimum = MinimumWireSize(type);
    if (minimum <= kWireHeaderBytes) continue;
    absl::Status s = DecodeStatus(Bytes(minimum - 1).u32(0, type));
    EXPECT_THAT(s.message(), HasSubstr("is shorter than its")) << WireTypeName(type);
    ++checked;
  }
  EXPECT_EQ(checked, 17);
  EXPECT_THAT(DecodeStatus(Bytes(195).u32(0, 1)).message(),
              HasSubstr("OFFERCHANNEL of 195 bytes is shorter than its 196"));
}

TEST(WireHardeningTest, LongerMessagesAreAccepted) {
  // Newer hosts append fields: a 24-byte OPENCHANNEL_RESULT decodes as the 20-byte one.
  absl::StatusOr<DecodedMessage> m =
      DecodeMessage(Bytes(24).u32(0, 6).u32(8, 5).u32(12, 1).u32(20, 0xdead));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(std::get<v1::ControlMessage>(*m).open_result().child_relid(), 5u);
}

TEST(WireHardeningTest, RelidOutOfRange) {
  for (uint32_t relid : {0u, 2048u, 0xFFFFFFFFu}) {
    EXPECT_THAT(DecodeStatus(Bytes(12).u32(0, 2).u32(8, relid)).message(),
                HasSubstr("RESCIND_CHANNELOFFER: child_relid"));
    EXPECT_THAT(DecodeStatus(Bytes(196).u32(0, 1).u32(184, relid)).message(),
                HasSubstr("OFFERCHANNEL: child_relid"));
    EXPECT_THAT(DecodeStatus(Bytes(16).u32(0, 24).u32(8, relid)).message(),
                HasSubstr("outside 1..2047"));
  }
}

TEST(WireHardeningTest, MonitorIdOfAMonitoredOffer) {
  Bytes offer = Bytes(196).u32(0, 1).u32(184, 4).u8(188, 128).u8(189, 1);
  EXPECT_THAT(DecodeStatus(offer).message(), HasSubstr("monitor_id 128 does not fit"));
  offer.u8(189, 0);  // not monitored: the id is junk and carried
  EXPECT_TRUE(DecodeStatus(offer).ok());
}

TEST(WireHardeningTest, GpadlHandleZero) {
  EXPECT_THAT(DecodeStatus(Bytes(12).u32(0, 12).u32(8, 0)).message(),
              HasSubstr("GPADL_TORNDOWN: GPADL handle 0"));
  EXPECT_THAT(DecodeStatus(Bytes(20).u32(0, 10).u32(8, 1).u32(12, 0)).message(),
              HasSubstr("GPADL_CREATED: GPADL handle 0"));
  EXPECT_THAT(DecodeStatus(Bytes(148).u32(0, 5).u32(8, 1).u32(16, 0)).message(),
              HasSubstr("OPENCHANNEL: GPADL handle 0"));
  EXPECT_THAT(DecodeStatus(Bytes(24).u32(0, 9).u32(12, 0)).message(),
              HasSubstr("GPADL_BODY: GPADL handle 0"));
}

// A well-formed one-page GPADL_HEADER to spoil one field at a time.
Bytes OnePageHeader() {
  return Bytes(36).u32(0, 8).u32(8, 1).u32(12, 9).u16(16, 16).u16(18, 1).u32(20, 4096).u64(28, 77);
}

TEST(WireHardeningTest, GpadlHeaderGeometry) {
  ASSERT_TRUE(DecodeStatus(OnePageHeader()).ok());
  EXPECT_THAT(DecodeStatus(OnePageHeader().u16(18, 2)).message(), HasSubstr("rangecount 2"));
  EXPECT_THAT(DecodeStatus(OnePageHeader().u16(18, 0)).message(), HasSubstr("rangecount 0"));
  EXPECT_THAT(DecodeStatus(OnePageHeader().u16(16, 24)).message(),
              HasSubstr("range_buflen 24 does not match a range of 1 pages (16)"));
  EXPECT_THAT(DecodeStatus(OnePageHeader().u32(24, 4096)).message(),
              HasSubstr("byte_offset 4096 is not inside its first page"));
  EXPECT_THAT(DecodeStatus(OnePageHeader().u32(20, 0)).message(), HasSubstr("byte_count is 0"));
  EXPECT_THAT(DecodeStatus(OnePageHeader().u32(20, 8191u * 4096)).message(),
              HasSubstr("covers 8191 pages; at most 8190"));
  // The range header cut off, PFN bytes not whole, no PFN, more PFNs than pages.
  EXPECT_THAT(DecodeStatus(Bytes(24).u32(0, 8).u32(8, 1).u32(12, 9).u16(18, 1)).message(),
              HasSubstr("ends inside its range header"));
  std::vector<uint8_t> ragged = OnePageHeader();
  ragged.resize(33);
  EXPECT_THAT(DecodeStatus(ragged).message(), HasSubstr("not a whole, non-zero number of PFNs"));
  std::vector<uint8_t> none = OnePageHeader();
  none.resize(28);
  EXPECT_THAT(DecodeStatus(none).message(), HasSubstr("not a whole, non-zero number of PFNs"));
  std::vector<uint8_t> extra = OnePageHeader();
  extra.resize(44);
  EXPECT_THAT(DecodeStatus(extra).message(), HasSubstr("carries 2 PFNs, more than its range's 1"));
}

TEST(WireHardeningTest, GpadlBodyShape) {
  EXPECT_THAT(DecodeStatus(Bytes(16).u32(0, 9).u32(12, 9)).message(),
              HasSubstr("GPADL_BODY of 16 bytes carries 0 bytes of PFNs"));
  EXPECT_THAT(DecodeStatus(Bytes(30).u32(0, 9).u32(12, 9)).message(),
              HasSubstr("carries 14 bytes of PFNs"));
}

TEST(WireHardeningTest, DecodingReadsAPrivateCopy) {
  // The result depends only on the bytes at the moment of the call: changing the caller's
  // buffer afterwards changes nothing already decoded.
  std::vector<uint8_t> wire = Bytes(12).u32(0, 2).u32(8, 7);
  absl::StatusOr<DecodedMessage> m = DecodeMessage(wire);
  wire[8] = 0;
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(std::get<v1::ControlMessage>(*m).rescind_offer().child_relid(), 7u);
}

// ---- The reassembler --------------------------------------------------------------------------

Bytes HeaderOf(uint32_t gpadl, uint32_t pages) {
  Bytes b(28 + 8 * std::min<uint32_t>(pages, 26));
  b.u32(0, 8).u32(8, 1).u32(12, gpadl).u16(16, 8 + 8 * pages).u16(18, 1).u32(20, pages * 4096);
  return b;
}
Bytes BodyOf(uint32_t gpadl, uint32_t pfns) {
  return Bytes(16 + 8 * pfns).u32(0, 9).u32(12, gpadl);
}

TEST(GpadlReassemblerTest, InterleavedGpadlsCompleteSeparately) {
  WireDecoder d;
  ASSERT_FALSE(d.Decode(HeaderOf(1, 30))->has_value());
  ASSERT_FALSE(d.Decode(HeaderOf(2, 27))->has_value());
  EXPECT_EQ(d.gpadls().pending_gpadls(), 2u);
  EXPECT_EQ(d.gpadls().pending_pfns(), 57u);
  absl::StatusOr<std::optional<v1::ControlMessage>> two = d.Decode(BodyOf(2, 1));
  ASSERT_TRUE(two.ok() && two->has_value());
  EXPECT_EQ((*two)->gpadl_create().gpadl(), 2u);
  EXPECT_EQ((*two)->gpadl_create().pfns_size(), 27);
  absl::StatusOr<std::optional<v1::ControlMessage>> one = d.Decode(BodyOf(1, 4));
  ASSERT_TRUE(one.ok() && one->has_value());
  EXPECT_EQ((*one)->gpadl_create().pfns_size(), 30);
  EXPECT_EQ(d.gpadls().pending_gpadls(), 0u);
  EXPECT_EQ(d.gpadls().pending_pfns(), 0u);
}

TEST(GpadlReassemblerTest, HostilePartsDropTheirGpadl) {
  WireDecoder d;
  EXPECT_THAT(d.Decode(BodyOf(1, 1)).status().message(),
              HasSubstr("GPADL_BODY for gpadl 0x1, which has no GPADL_HEADER"));
  ASSERT_TRUE(d.Decode(HeaderOf(1, 30)).ok());
  EXPECT_THAT(d.Decode(BodyOf(1, 5)).status().message(),
              HasSubstr("carries 5 PFNs, but only 4 of its 30 remain (dropped)"));
  EXPECT_EQ(d.gpadls().pending_gpadls(), 0u);
  ASSERT_TRUE(d.Decode(HeaderOf(1, 30)).ok());
  EXPECT_THAT(d.Decode(HeaderOf(1, 30)).status().message(),
              HasSubstr("already being assembled (both dropped)"));
  EXPECT_EQ(d.gpadls().pending_gpadls(), 0u);
  EXPECT_EQ(d.gpadls().pending_pfns(), 0u);
}

TEST(GpadlReassemblerTest, Limits) {
  WireDecoder d(GpadlReassembler::Limits{.max_pending_gpadls = 2, .max_pending_pfns = 70});
  ASSERT_TRUE(d.Decode(HeaderOf(1, 30)).ok());
  ASSERT_TRUE(d.Decode(HeaderOf(2, 30)).ok());
  absl::Status s = d.Decode(HeaderOf(3, 27)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("2 GPADLs are already being assembled"));
  // A GPADL that fits its header needs no state and passes even now.
  EXPECT_TRUE(d.Decode(HeaderOf(3, 26))->has_value());
  d.gpadls().Forget(2);
  s = d.Decode(HeaderOf(4, 41)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("already hold 30 of at most 70"));
  ASSERT_TRUE(d.Decode(HeaderOf(4, 40)).ok());
  d.gpadls().Clear();
  EXPECT_EQ(d.gpadls().pending_gpadls(), 0u);
  EXPECT_EQ(d.gpadls().pending_pfns(), 0u);
}

// ---- What the encoder refuses ---------------------------------------------------------------

TEST(WireEncodeTest, RefusesWhatCannotBeEncoded) {
  auto refusal = [](const std::string& text) {
    absl::Status s = EncodeMessage(Text(text)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    return std::string(s.message());
  };
  EXPECT_THAT(std::string(EncodeMessage(v1::ControlMessage()).status().message()),
              HasSubstr("no message set"));
  const std::string guids = absl::StrCat("interface_type { value: '", kNetwork,
                                         "' } interface_instance { value: '", kCounting, "' }");
  EXPECT_THAT(refusal(absl::StrCat("offer { ", guids, " child_relid: 1 flags: 65536 }")),
              HasSubstr("flags 65536 does not fit"));
  EXPECT_THAT(refusal(absl::StrCat("offer { ", guids,
                                   " child_relid: 1 monitor_id: 128 "
                                   "monitor_allocated: true }")),
              HasSubstr("monitor_id 128"));
  EXPECT_THAT(refusal(absl::StrCat("offer { ", guids,
                                   " child_relid: 1 monitor_allocated_reserved_bits: 128 }")),
              HasSubstr("monitor_allocated_reserved_bits 128"));
  EXPECT_THAT(refusal("offer { interface_type { value: 'x' } child_relid: 1 }"),
              HasSubstr("interface_type"));
  EXPECT_THAT(refusal("initiate_contact { version_requested: 0x50000 interrupt_page: 4096 }"),
              HasSubstr("interrupt_page is set, but version 5.0"));
  EXPECT_THAT(refusal("initiate_contact { version_requested: 0x40001 message_sint: 2 }"),
              HasSubstr("exist from 5.0"));
  EXPECT_THAT(refusal(absl::StrCat("initiate_contact { version_requested: 0x50003 client_id { "
                                   "value: '",
                                   kCounting, "' } }")),
              HasSubstr("client_id exists from 6.0"));
  EXPECT_THAT(refusal("open_channel { child_relid: 1 ring_buffer_gpadl: 2 event_flag: 3 }"),
              HasSubstr("travel only with connection_id"));
  EXPECT_THAT(refusal("gpadl_create { child_relid: 1 gpadl: 2 byte_count: 8192 pfns: 1 }"),
              HasSubstr("lists 1 PFNs but its range (8192 bytes at offset 0) covers 2 pages"));
  EXPECT_THAT(refusal("close_channel { child_relid: 4096 }"), HasSubstr("outside 1..2047"));
  EXPECT_THAT(refusal("version_response { connection_state: 256 }"),
              HasSubstr("connection_state 256"));
}

}  // namespace
}  // namespace vbus::hyperv
