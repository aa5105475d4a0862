// A hostile host on the data path, end to end through every host mode and backend: the mock
// host writes the shared ring memory and the guest's event flags as a malicious or broken host
// would (InjectFault{ring}: control-page fields, raw packets, event storms, a device that
// stops reading; completions through SendPacket) while the guest runs two echo channels, the
// victim A and the bystander B. For each input the guest either fails A with a DataLoss that
// names what was wrong (counted in ChannelStats::errors; A's waiting requests fail with it) or
// ignores and counts it; it never crashes (ASan in CI), every wait has a deadline, and B keeps
// echoing a checked stream. The table of cases and outcomes is docs/security.md.
//
// Usage: hostile_ring_test <path of mock_host>   (Bazel passes $(rootpath //mock:mock_host))
#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/data/ring_buffer.h"
#include "core/runtime/channel_bus.h"
#include "core/runtime/sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test/e2e/e2e_host.h"
#include "test/e2e/e2e_params.h"
#include "test/e2e/echo_stream.h"
#include "test/e2e/eventually.h"

namespace vbus::e2e {
namespace {

using ::testing::HasSubstr;

constexpr char kGuest[] = "hostile-ring";
constexpr uint32_t kRingPages = 4;  // each ring: a control page and 12288 data bytes
constexpr uint32_t kDataSize = (kRingPages - 1) * 4096;
constexpr uint32_t kFarOutside = 1 << 20;

std::string Descriptor(uint16_t type, uint16_t offset8, uint16_t len8, size_t body) {
  PacketDescriptor d{type, offset8, len8, 0, 0x5EED};
  std::string bytes(sizeof(d) + body, '\x5a');
  std::memcpy(bytes.data(), &d, sizeof(d));
  return bytes;
}

// A thread that is asked to stop (if it has a flag) and joined when the scope ends, also when
// an assertion returns early.
class ScopedThread {
 public:
  explicit ScopedThread(std::function<void()> body, std::atomic<bool>* stop = nullptr)
      : stop_(stop), thread_(std::move(body)) {}
  ~ScopedThread() { Join(); }
  void Join() {
    if (stop_ != nullptr) stop_->store(true, std::memory_order_relaxed);
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool>* const stop_;
  std::thread thread_;
};

class HostileRingTest : public ::testing::TestWithParam<E2eParam> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<E2eHost>> host = E2eHost::Start(ModeOf(GetParam()), Deadline());
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    ChannelBusOptions options;
    options.log = [](absl::string_view) {};
    E2eGuestOptions guest_options;
    guest_options.backend = BackendOf(GetParam());
    guest_options.memory_bytes = 16 << 20;
    absl::StatusOr<std::unique_ptr<E2eGuest>> guest =
        E2eGuest::Attach(*host_, kGuest, std::move(options), std::move(guest_options));
    ASSERT_TRUE(guest.ok()) << guest.status();
    guest_ = std::move(*guest);
    for (uint32_t* relid : {&a_relid_, &b_relid_, &closed_relid_}) {
      absl::StatusOr<v1::OfferResponse> echo = host_->Offer(kGuest, "echo");
      ASSERT_TRUE(echo.ok()) << echo.status();
      *relid = echo->child_relid();
    }
    ASSERT_TRUE(bus().Connect(Deadline()).ok());
    a_ = bus().FindChannel(a_relid_);
    b_ = bus().FindChannel(b_relid_);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    ASSERT_TRUE(b_->Open(EchoOptions(&stream_b_, kRingPages), Deadline()).ok());
  }
  void TearDown() override {
    guest_.reset();
    host_.reset();
  }

  ChannelBus& bus() { return guest_->bus(); }

  // Opens the victim: callback mode (in-band echoes checked by a fresh stream_a_, packets of
  // other types recorded in odd_types_), or polling mode.
  void OpenVictim(bool polling = false) {
    ChannelOpenOptions o;
    o.outbound_ring_pages = kRingPages;
    o.inbound_ring_pages = kRingPages;
    auto stream = std::make_shared<EchoStream>(/*salt=*/7);
    stream_a_ = stream;
    if (!polling) {
      o.on_packet = [this, stream](const PacketView& p) {
        if (p.type() == PacketType::kDataInband) {
          stream->OnPacket(p);
          return;
        }
        MutexLock lock(&odd_mu_);
        odd_types_.push_back(p.raw_type());
      };
    }
    ASSERT_TRUE(a_->Open(o, Deadline()).ok());
    if (!polling) {
      ASSERT_TRUE(Echo(*a_).ok());
    }
  }

  absl::Status Echo(Channel& channel) {
    const uint8_t ping[8] = {'r', 'i', 'n', 'g', 'p', 'i', 'n', 'g'};
    return CallEcho(channel, ping, Deadline(absl::Seconds(10)));
  }

  absl::StatusOr<v1::RingFaultResult> Fault(v1::RingFault fault) {
    return host_->RingFault(kGuest, fault);
  }
  static v1::RingFault FieldWrite(uint32_t relid, v1::RingFault::Ring ring,
                                  v1::RingFault::Field field) {
    v1::RingFault f;
    f.set_child_relid(relid);
    f.mutable_field_write()->set_ring(ring);
    f.mutable_field_write()->set_field(field);
    return f;
  }
  absl::Status Reading(v1::RingFault::Reading reading) {
    v1::RingFault f;
    f.set_child_relid(a_relid_);
    f.set_reading(reading);
    return Fault(f).status();
  }
  absl::Status SendToVictim(PacketType type, uint64_t trans_id, std::string payload) {
    v1::SendPacketRequest r;
    r.set_guest(kGuest);
    r.set_child_relid(a_relid_);
    r.set_type(type == PacketType::kCompletion ? v1::PACKET_TYPE_COMPLETION
                                               : v1::PACKET_TYPE_DATA_INBAND);
    r.set_transaction_id(trans_id);
    r.set_payload(std::move(payload));
    return host_->SendPacket(r);
  }

  // The victim failed with a DataLoss naming `what` (and `also`), counted once, and refuses to
  // send.
  void ExpectVictimFailed(const std::string& what, uint64_t errors_before,
                          const std::string& also = "") {
    ASSERT_TRUE(Eventually([&] { return !a_->is_open(); })) << "A still open; expected " << what;
    const uint8_t data[8] = {};
    const absl::Status sent = a_->Send(data);
    EXPECT_EQ(sent.code(), absl::StatusCode::kDataLoss) << sent;
    EXPECT_THAT(sent.message(), HasSubstr(what));
    EXPECT_THAT(sent.message(), HasSubstr(also));
    EXPECT_THAT(sent.message(), HasSubstr(absl::StrCat("relid ", a_relid_)));
    EXPECT_EQ(a_->stats().errors, errors_before + 1);
  }

  // The victim can be closed and opened again on fresh rings, and echoes.
  void ExpectVictimRecovers() {
    ASSERT_TRUE(a_->Close(Deadline()).ok());
    OpenVictim();
    EXPECT_TRUE(a_->is_open());
  }

  // The bystander echoes a checked stream and the bus is connected, then shuts down in time.
  void FinishWithTheBystander() {
    const uint64_t first = stream_b_.sent();
    ASSERT_TRUE(stream_b_.SendRange(*b_, first, 300).ok());
    ASSERT_TRUE(stream_b_.WaitFor(first + 300, Deadline()));
    EXPECT_EQ(stream_b_.bad(), 0u);
    EXPECT_EQ(stream_b_.received_sum(), stream_b_.sent_sum());
    EXPECT_TRUE(Echo(*b_).ok());
    EXPECT_EQ(bus().phase(), BusPhase::kConnected);
    EXPECT_TRUE(bus().Shutdown(Deadline()).ok());
  }

  void CorruptReadIndexUnderAWaitingSender(bool callback_driven);

  std::unique_ptr<E2eHost> host_;
  std::unique_ptr<E2eGuest> guest_;
  uint32_t a_relid_ = 0;
  uint32_t b_relid_ = 0;
  uint32_t closed_relid_ = 0;  // offered, never opened
  std::shared_ptr<Channel> a_;
  std::shared_ptr<Channel> b_;
  std::shared_ptr<EchoStream> stream_a_;
  EchoStream stream_b_{/*salt=*/11};
  Mutex odd_mu_;
  std::vector<uint16_t> odd_types_ ABSL_GUARDED_BY(odd_mu_);
};

// --- The inbound ring's write_index (the host's, read by the guest) --------------------------

TEST_P(HostileRingTest, InboundWriteIndexOutOfRangeFailsTheChannelAndItsRequests) {
  OpenVictim();
  // A request the host will not answer (its device stopped reading), so that one is waiting.
  ASSERT_TRUE(Reading(v1::RingFault::READING_STOP).ok());
  struct Answer {
    Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::Status status ABSL_GUARDED_BY(mu);
  };
  auto answer = std::make_shared<Answer>();
  const uint8_t ping[8] = {};
  const absl::Span<const uint8_t> pieces[1] = {ping};
  ASSERT_TRUE(a_->SendRequest(pieces, [answer](const Completion& c) {
                  MutexLock lock(&answer->mu);
                  answer->done = true;
                  answer->status = c.status;
                }).ok());
  const uint64_t errors = a_->stats().errors;

  v1::RingFault f =
      FieldWrite(a_relid_, v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_WRITE_INDEX);
  f.mutable_field_write()->set_set(kFarOutside);
  f.mutable_field_write()->set_signal(true);
  absl::StatusOr<v1::RingFaultResult> r = Fault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->data_size(), kDataSize);
  const std::string what =
      absl::StrCat("ring write_index ", kFarOutside, " is outside the ", kDataSize, "-byte");
  ExpectVictimFailed(what, errors);
  ASSERT_TRUE(Eventually([&] {
    MutexLock lock(&answer->mu);
    return answer->done;
  }));
  {
    MutexLock lock(&answer->mu);
    EXPECT_EQ(answer->status.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(answer->status.message(), HasSubstr(what));
  }
  ExpectVictimRecovers();
  FinishWithTheBystander();
}

TEST_P(HostileRingTest, InboundWriteIndexMisalignedFailsTheChannel) {
  OpenVictim();
  const uint64_t errors = a_->stats().errors;
  v1::RingFault f =
      FieldWrite(a_relid_, v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_WRITE_INDEX);
  f.mutable_field_write()->set_add(4);
  f.mutable_field_write()->set_signal(true);
  absl::StatusOr<v1::RingFaultResult> r = Fault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVictimFailed(absl::StrCat("ring write_index ", r->value_after(), " is not 8-byte aligned"),
                     errors);
  FinishWithTheBystander();
}

// Behind packets the guest has seen but not read: write_index moving backwards is detected.
TEST_P(HostileRingTest, InboundWriteIndexMovedBackOverUnreadPacketsFailsTheChannel) {
  OpenVictim(/*polling=*/true);
  for (uint64_t i = 1; i <= 3; ++i) {
    ASSERT_TRUE(SendToVictim(PacketType::kDataInband, i, "unread!!").ok());
  }
  ASSERT_TRUE(a_->WaitForPackets(Deadline()).ok());  // the guest has seen all three
  const uint64_t errors = a_->stats().errors;
  v1::RingFault f =
      FieldWrite(a_relid_, v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_WRITE_INDEX);
  f.mutable_field_write()->set_add(-8);
  absl::StatusOr<v1::RingFaultResult> r = Fault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  size_t delivered = 0;
  absl::StatusOr<size_t> polled = a_->Poll([&](const PacketView&) { ++delivered; });
  EXPECT_EQ(polled.status().code(), absl::StatusCode::kDataLoss);
  const std::string what = absl::StrCat("ring write_index moved from ", r->value_before(), " to ",
                                        r->value_after(), ": backwards");
  EXPECT_THAT(polled.status().message(), HasSubstr(what));
  EXPECT_EQ(delivered, 3u);  // the packets before the lie were intact
  ExpectVictimFailed(what, errors);
  FinishWithTheBystander();
}

// On an empty ring an index moved back by d reads as d bytes short of a full ring of new
// packets (the format cannot tell the two apart): the guest parses what is there and fails at
// the first descriptor that breaks the rules (here: never-written, zeroed memory). Polling, so
// that the guest's read is over (committed) when the host lies.
TEST_P(HostileRingTest, InboundWriteIndexMovedBackOnAnEmptyRingFailsAtTheFirstBadDescriptor) {
  OpenVictim(/*polling=*/true);
  ASSERT_TRUE(SendToVictim(PacketType::kDataInband, 1, "read it").ok());
  ASSERT_TRUE(a_->WaitForPackets(Deadline()).ok());
  absl::StatusOr<size_t> polled = a_->Poll([](const PacketView&) {});
  ASSERT_TRUE(polled.ok()) << polled.status();
  ASSERT_EQ(*polled, 1u);
  const uint64_t errors = a_->stats().errors;
  v1::RingFault f =
      FieldWrite(a_relid_, v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_WRITE_INDEX);
  f.mutable_field_write()->set_add(-8);
  absl::StatusOr<v1::RingFaultResult> r = Fault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_NE(r->value_before(), 0u);
  polled = a_->Poll([](const PacketView&) {});
  const std::string what = absl::StrCat("packet at read offset ", r->value_before(), ": len8 0");
  EXPECT_THAT(polled.status().message(), HasSubstr(what));
  ExpectVictimFailed(what, errors);
  ExpectVictimRecovers();
  FinishWithTheBystander();
}

// --- Fields the guest owns, or reads only when it attaches -----------------------------------

TEST_P(HostileRingTest, FieldsTheGuestOwnsOrReadsOnlyAtAttachAreIgnored) {
  OpenVictim();
  const uint64_t errors = a_->stats().errors;
  struct Write {
    v1::RingFault::Ring ring;
    v1::RingFault::Field field;
    enum { kSet, kToggle } op;
    uint32_t value;
    uint32_t times;
  };
  const Write kWrites[] = {
      {v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_INTERRUPT_MASK, Write::kToggle, 1, 100000},
      {v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_PENDING_SEND_SZ, Write::kSet, 0xFFFFFFFF,
       1},
      {v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_FEATURE_BITS, Write::kToggle, 1, 1},
      {v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_WRITE_INDEX, Write::kSet, kFarOutside, 1},
      {v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_INTERRUPT_MASK, Write::kToggle, 1,
       100000},
      {v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_PENDING_SEND_SZ, Write::kSet, 0xFFFFFFFF,
       1},
      {v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_FEATURE_BITS, Write::kToggle, 1, 1},
  };
  for (const Write& w : kWrites) {
    SCOPED_TRACE(
        absl::StrCat(v1::RingFault::Ring_Name(w.ring), " ", v1::RingFault::Field_Name(w.field)));
    v1::RingFault f = FieldWrite(a_relid_, w.ring, w.field);
    if (w.op == Write::kSet) {
      f.mutable_field_write()->set_set(w.value);
    } else {
      f.mutable_field_write()->set_toggle(w.value);
    }
    f.mutable_field_write()->set_times(w.times);
    f.mutable_field_write()->set_signal(true);  // the guest looks at its rings now
    ASSERT_TRUE(Fault(f).ok());
    EXPECT_TRUE(Echo(*a_).ok());
    EXPECT_TRUE(a_->is_open());
  }
  // A stream eight rings long: both rings fill and drain again, with pending_send_sz, whose
  // feature bit the host cleared (each side read it when it attached).
  ASSERT_TRUE(stream_a_->SendRange(*a_, 0, 2000).ok());
  ASSERT_TRUE(stream_a_->WaitFor(2000, Deadline()));
  EXPECT_EQ(stream_a_->bad(), 0u);
  EXPECT_EQ(stream_a_->received_sum(), stream_a_->sent_sum());
  EXPECT_EQ(a_->stats().errors, errors);
  FinishWithTheBystander();
}

// The guest never reads its inbound read_index back: it overwrites it at its next commit. Until
// then the host's writer, which compares read_index with write_index to decide whether to
// signal, misses its own signals: a host that lies here only withholds its own wake-ups.
TEST_P(HostileRingTest, InboundReadIndexIsTheGuestsOwnAndItsNextReadRestoresIt) {
  OpenVictim();
  const ChannelStats before = a_->stats();
  v1::RingFault f =
      FieldWrite(a_relid_, v1::RingFault::RING_INBOUND, v1::RingFault::FIELD_READ_INDEX);
  f.mutable_field_write()->set_set(kFarOutside);
  ASSERT_TRUE(Fault(f).ok());
  // A packet the host then writes is not signalled (the ring does not look empty to it); a
  // signal of the channel makes the guest read it and publish its own read_index again.
  ASSERT_TRUE(SendToVictim(PacketType::kCompletion, 0, "stray!!!").ok());
  v1::RingFault signal;
  signal.mutable_event_storm()->add_relids(a_relid_);
  ASSERT_TRUE(Fault(signal).ok());
  ASSERT_TRUE(Eventually(
      [&] { return a_->stats().completions_unknown == before.completions_unknown + 1; }));
  EXPECT_TRUE(Echo(*a_).ok());
  EXPECT_TRUE(a_->is_open());
  EXPECT_EQ(a_->stats().errors, before.errors);
  FinishWithTheBystander();
}

// --- The outbound ring's read_index (the host's, read by the guest's writer) -----------------

// The writer looks at read_index only when its own view of the ring says full: a sender finds
// out then, and the channel fails with the index named.
TEST_P(HostileRingTest, OutboundReadIndexOutOfRangeOrMisalignedFailsTheSender) {
  const struct {
    const char* name;
    bool misaligned;
  } kCases[] = {{"out of range", false}, {"misaligned", true}};
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    OpenVictim();
    ASSERT_TRUE(Reading(v1::RingFault::READING_STOP).ok());  // nothing moves read_index back
    const uint64_t errors = a_->stats().errors;
    v1::RingFault f =
        FieldWrite(a_relid_, v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_READ_INDEX);
    if (c.misaligned) {
      f.mutable_field_write()->set_add(4);
    } else {
      f.mutable_field_write()->set_set(kFarOutside);
    }
    absl::StatusOr<v1::RingFaultResult> r = Fault(f);
    ASSERT_TRUE(r.ok()) << r.status();
    const std::string what =
        c.misaligned ? absl::StrCat("ring read_index ", r->value_after(), " is not 8-byte aligned")
                     : absl::StrCat("ring read_index ", kFarOutside, " is outside");
    std::vector<uint8_t> payload;
    absl::Status sent;
    for (uint64_t i = 0; sent.ok() && i < 2 * kDataSize / 32; ++i) {
      FillPayload(i, 7, payload);
      sent = a_->Send(payload);
    }
    EXPECT_EQ(sent.code(), absl::StatusCode::kDataLoss) << sent;
    EXPECT_THAT(sent.message(), HasSubstr(what));
    ExpectVictimFailed(what, errors);
    ExpectVictimRecovers();
    ASSERT_TRUE(a_->Close(Deadline()).ok());
  }
  FinishWithTheBystander();
}

// read_index moved outside what the guest has written and the host could have consumed:
// backwards from where the guest last saw it, or past write_index.
TEST_P(HostileRingTest, OutboundReadIndexOutsideTheWrittenRegionFailsTheChannel) {
  const struct {
    const char* name;
    int64_t add;
  } kCases[] = {{"backwards", -8}, {"past write_index", 8}};
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    OpenVictim();
    // Stopped, the host's device has committed everything it read: read_index is where the
    // guest's writer is. WhenWritable makes the guest look at it now.
    ASSERT_TRUE(Reading(v1::RingFault::READING_STOP).ok());
    std::atomic<int> ready{0};
    ASSERT_TRUE(a_->WhenWritable(8, [&] { ready.fetch_add(1, std::memory_order_relaxed); }).ok());
    EXPECT_EQ(ready.load(std::memory_order_relaxed), 1);
    const uint64_t errors = a_->stats().errors;
    v1::RingFault f =
        FieldWrite(a_relid_, v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_READ_INDEX);
    f.mutable_field_write()->set_add(c.add);
    absl::StatusOr<v1::RingFaultResult> r = Fault(f);
    ASSERT_TRUE(r.ok()) << r.status();
    const std::string what =
        absl::StrCat("ring read_index moved from ", r->value_before(), " to ", r->value_after(),
                     ", outside the written region ending at ", r->value_before());
    const absl::Status looked = a_->WhenWritable(8, [&] { ready.fetch_add(1); });
    EXPECT_EQ(looked.code(), absl::StatusCode::kDataLoss) << looked;
    EXPECT_THAT(looked.message(), HasSubstr(what));
    EXPECT_EQ(ready.load(std::memory_order_relaxed), 1);
    ExpectVictimFailed(what, errors);
    ExpectVictimRecovers();
    ASSERT_TRUE(a_->Close(Deadline()).ok());
  }
  FinishWithTheBystander();
}

// A sender waiting for room (host stopped, ring full) while the host corrupts read_index and
// signals: the channel must fail at once with the index named, whoever waits — a blocked Send
// (which returns DataLoss long before its deadline) or a callback-driven sender in
// WhenWritable (whose callback is dropped when the channel fails, as Channel::WhenWritable
// promises).
void HostileRingTest::CorruptReadIndexUnderAWaitingSender(bool callback_driven) {
  OpenVictim();
  ASSERT_TRUE(Reading(v1::RingFault::READING_STOP).ok());
  std::vector<uint8_t> payload(64, 1);
  absl::Status full;
  for (int i = 0; full.ok() && i < 1000; ++i) full = a_->Send(payload);
  ASSERT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  const uint64_t errors = a_->stats().errors;
  const uint64_t ring_full = a_->stats().ring_full;
  std::atomic<bool> called{false};
  absl::Status waited;
  std::optional<ScopedThread> sender;  // joined by its deadline at the latest
  if (callback_driven) {
    ASSERT_TRUE(a_->WhenWritable(payload.size(), [&] { called.store(true); }).ok());
  } else {
    sender.emplace([&] {
      SendOptions wait;
      wait.deadline = Deadline(absl::Seconds(30));
      waited = a_->Send(payload, wait);
    });
    // The sender has found the ring full (and waits for room).
    ASSERT_TRUE(Eventually([&] { return a_->stats().ring_full > ring_full; }));
  }
  const absl::Time corrupted = absl::Now();
  v1::RingFault f =
      FieldWrite(a_relid_, v1::RingFault::RING_OUTBOUND, v1::RingFault::FIELD_READ_INDEX);
  f.mutable_field_write()->set_set(kFarOutside);
  f.mutable_field_write()->set_signal(true);
  ASSERT_TRUE(Fault(f).ok());
  const std::string what = absl::StrCat("ring read_index ", kFarOutside, " is outside");
  if (sender.has_value()) {
    sender->Join();
    EXPECT_EQ(waited.code(), absl::StatusCode::kDataLoss) << waited;
    EXPECT_THAT(waited.message(), HasSubstr(what));
    EXPECT_LT(absl::Now() - corrupted, absl::Seconds(10));
  }
  ASSERT_TRUE(Eventually([&] { return !a_->is_open(); }, absl::Seconds(10)))
      << "the corrupt read_index did not fail the channel";
  ExpectVictimFailed(what, errors);
  EXPECT_FALSE(called.load());
  ExpectVictimRecovers();
  FinishWithTheBystander();
}

TEST_P(HostileRingTest, ABlockedSenderLearnsOfACorruptReadIndexAtTheNextSignal) {
  CorruptReadIndexUnderAWaitingSender(/*callback_driven=*/false);
}

TEST_P(HostileRingTest, AWhenWritableWaiterLearnsOfACorruptReadIndexAtTheNextSignal) {
  CorruptReadIndexUnderAWaitingSender(/*callback_driven=*/true);
}

// --- Raw packets: descriptors that lie ----------------------------------------------------------

TEST_P(HostileRingTest, RawPacketsWithBadDescriptorsFailOnlyTheirChannel) {
  const struct {
    const char* name;
    std::string bytes;
    const char* verdict;
  } kCases[] = {
      {"less than a descriptor", std::string(8, '\0'), "less than a minimal packet"},
      {"total length below the descriptor", Descriptor(6, 2, 1, 0),
       "len8 1 is shorter than the 16-byte descriptor"},
      {"data offset beyond the length", Descriptor(6, 9, 3, 8), "offset8 9 is outside [2, len8 3]"},
      {"data offset inside the descriptor", Descriptor(6, 1, 3, 8),
       "offset8 1 is outside [2, len8 3]"},
      {"length beyond the ring's data", Descriptor(6, 2, 0xFFFF, 8),
       "len8 65535 (524280 bytes + trailer) exceeds the 32 bytes available"},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    OpenVictim();
    const uint64_t errors = a_->stats().errors;
    v1::RingFault f;
    f.set_child_relid(a_relid_);
    f.set_raw_packet(c.bytes);
    absl::StatusOr<v1::RingFaultResult> r = Fault(f);
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectVictimFailed(c.verdict, errors, absl::StrCat("at read offset ", r->packet_offset()));
    ExpectVictimRecovers();
    ASSERT_TRUE(a_->Close(Deadline()).ok());
  }
  FinishWithTheBystander();
}

// The ring passes any type through; the channel hands every type but a completion to the
// driver, which decides (docs/protocol.md §10).
TEST_P(HostileRingTest, ARawPacketOfAnUnknownTypeReachesTheDriverAsItIs) {
  OpenVictim();
  const ChannelStats before = a_->stats();
  v1::RingFault f;
  f.set_child_relid(a_relid_);
  f.set_raw_packet(Descriptor(0x77, 2, 3, 8));
  ASSERT_TRUE(Fault(f).ok());
  ASSERT_TRUE(Eventually([&] {
    MutexLock lock(&odd_mu_);
    return !odd_types_.empty();
  }));
  {
    MutexLock lock(&odd_mu_);
    EXPECT_THAT(odd_types_, ::testing::ElementsAre(0x77));
  }
  EXPECT_EQ(a_->stats().packets_received, before.packets_received + 1);
  EXPECT_EQ(a_->stats().errors, before.errors);
  EXPECT_TRUE(Echo(*a_).ok());  // the host's own packets continue behind it
  FinishWithTheBystander();
}

// --- Completions ---------------------------------------------------------------------------------

TEST_P(HostileRingTest, CompletionsWithUnknownIdsAreCountedAndDropped) {
  OpenVictim();
  const ChannelStats before = a_->stats();
  // 0 (reserved for packets that want no answer), all ones, a slot the table never had.
  for (uint64_t id : {uint64_t{0}, ~uint64_t{0}, (uint64_t{3} << 32) | 60000}) {
    ASSERT_TRUE(SendToVictim(PacketType::kCompletion, id, "forged!!").ok());
  }
  EXPECT_TRUE(Eventually(
      [&] { return a_->stats().completions_unknown == before.completions_unknown + 3; }));
  EXPECT_EQ(a_->stats().completions_received, before.completions_received);
  EXPECT_EQ(a_->stats().errors, before.errors);
  EXPECT_TRUE(Echo(*a_).ok());
  FinishWithTheBystander();
}

TEST_P(HostileRingTest, StaleCompletionsAreCountedAndDropped) {
  OpenVictim();
  std::atomic<int> answered{0};
  const uint8_t ping[8] = {};
  const absl::Span<const uint8_t> pieces[1] = {ping};
  absl::StatusOr<uint64_t> id = a_->SendRequest(
      pieces, [&](const Completion&) { answered.fetch_add(1, std::memory_order_relaxed); });
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(Eventually([&] { return answered.load(std::memory_order_relaxed) == 1; }));
  const ChannelStats before = a_->stats();
  // The id just completed, and an id of a slot that exists but was never handed out under it.
  for (uint64_t stale : {*id, (uint64_t{9} << 32) | 5}) {
    ASSERT_TRUE(SendToVictim(PacketType::kCompletion, stale, "again!!!").ok());
  }
  EXPECT_TRUE(
      Eventually([&] { return a_->stats().completions_stale == before.completions_stale + 2; }));
  EXPECT_EQ(answered.load(std::memory_order_relaxed), 1);  // no callback runs twice
  EXPECT_EQ(a_->stats().completions_received, before.completions_received);
  EXPECT_TRUE(Echo(*a_).ok());
  FinishWithTheBystander();
}

// --- Event storms ------------------------------------------------------------------------------

TEST_P(HostileRingTest, AnEventStormOnRelidsWithoutAnOpenChannelIsCountedAsSpurious) {
  OpenVictim();
  const uint64_t spurious = bus().stats().spurious_events;
  constexpr uint32_t kRounds = 100000;
  v1::RingFault f;
  f.mutable_event_storm()->add_relids(closed_relid_);  // offered, not open
  f.mutable_event_storm()->add_relids(2047);           // never offered
  f.mutable_event_storm()->set_count(kRounds);
  absl::StatusOr<v1::RingFaultResult> r = Fault(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->doorbells(), 1u);
  ASSERT_TRUE(Eventually([&] { return bus().stats().spurious_events > spurious; }));
  // Each bit the guest took is counted once; bits set again before a scan are one signal.
  EXPECT_LE(bus().stats().spurious_events - spurious, 2 * uint64_t{kRounds});
  EXPECT_TRUE(Echo(*a_).ok());
  FinishWithTheBystander();
}

TEST_P(HostileRingTest, AnEventStormOnAnOpenChannelOnlyMakesItLookAtItsRing) {
  OpenVictim();
  const ChannelStats before = a_->stats();
  v1::RingFault f;
  f.mutable_event_storm()->add_relids(a_relid_);
  f.mutable_event_storm()->set_count(100000);
  ASSERT_TRUE(Fault(f).ok());
  ASSERT_TRUE(Eventually([&] { return a_->stats().signals_received > before.signals_received; }));
  EXPECT_EQ(a_->stats().packets_received, before.packets_received);
  EXPECT_EQ(a_->stats().errors, before.errors);
  EXPECT_TRUE(Echo(*a_).ok());
  FinishWithTheBystander();
}

// Storms go on while the guest closes and opens the channel they name: closing waits for no
// delivery that never ends, and signals between two opens are counted as spurious.
TEST_P(HostileRingTest, AnEventStormWhileTheChannelClosesAndOpensAgain) {
  OpenVictim();
  std::atomic<bool> stop{false};
  std::atomic<int> storms{0};
  absl::Status storm_status;
  ScopedThread storm(
      [&] {
        v1::RingFault f;
        f.mutable_event_storm()->add_relids(a_relid_);
        f.mutable_event_storm()->add_relids(closed_relid_);
        f.mutable_event_storm()->set_count(5000);
        while (!stop.load(std::memory_order_relaxed) && storm_status.ok()) {
          storm_status = Fault(f).status();
          storms.fetch_add(1, std::memory_order_relaxed);
        }
      },
      &stop);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(a_->Close(Deadline(absl::Seconds(10))).ok()) << i;
    OpenVictim();
  }
  EXPECT_TRUE(Eventually([&] { return storms.load(std::memory_order_relaxed) >= 2; }));
  storm.Join();
  EXPECT_TRUE(storm_status.ok()) << storm_status;
  EXPECT_GT(bus().stats().spurious_events, 0u);
  EXPECT_EQ(a_->stats().errors, 0u);
  FinishWithTheBystander();
}

// --- A host that stops reading -----------------------------------------------------------------

TEST_P(HostileRingTest, AHostThatStopsReadingFillsOneRingAndOnlyItsSendersWait) {
  OpenVictim();
  ASSERT_TRUE(Reading(v1::RingFault::READING_STOP).ok());
  std::vector<uint8_t> payload;
  uint64_t sent = 0;
  absl::Status full;
  while (full.ok() && sent < 2 * kDataSize / 24) {  // bounded: the ring holds far fewer
    FillPayload(sent, 7, payload);
    full = a_->Send(payload);
    if (full.ok()) ++sent;
  }
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(full.message(),
              HasSubstr(absl::StrCat("outbound ring of relid ", a_relid_, " is full")));
  EXPECT_GT(a_->stats().ring_full, 0u);
  // A send with a deadline waits for room until then, and no longer.
  SendOptions wait;
  const absl::Time started = absl::Now();
  wait.deadline = started + absl::Milliseconds(300);
  FillPayload(sent, 7, payload);
  const absl::Status waited = a_->Send(payload, wait);
  const absl::Duration took = absl::Now() - started;
  EXPECT_EQ(waited.code(), absl::StatusCode::kDeadlineExceeded) << waited;
  EXPECT_THAT(waited.message(), HasSubstr("stayed full until the deadline"));
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(10));
  // Room asked for without blocking: not yet.
  std::atomic<bool> writable{false};
  ASSERT_TRUE(a_->WhenWritable(payload.size(), [&] {
                  writable.store(true, std::memory_order_relaxed);
                }).ok());
  EXPECT_FALSE(writable.load(std::memory_order_relaxed));
  // The other channel does not notice.
  const uint64_t first = stream_b_.sent();
  ASSERT_TRUE(stream_b_.SendRange(*b_, first, 300).ok());
  ASSERT_TRUE(stream_b_.WaitFor(first + 300, Deadline()));
  EXPECT_TRUE(a_->is_open());

  // The host reads again: the waiting sender's room comes, and every packet is echoed.
  ASSERT_TRUE(Reading(v1::RingFault::READING_RESUME).ok());
  EXPECT_TRUE(Eventually([&] { return writable.load(std::memory_order_relaxed); }));
  wait.deadline = Deadline(absl::Seconds(10));
  ASSERT_TRUE(a_->Send(payload, wait).ok());
  ++sent;
  ASSERT_TRUE(stream_a_->WaitFor(sent, Deadline()));
  EXPECT_EQ(stream_a_->bad(), 0u);
  EXPECT_EQ(a_->stats().errors, 0u);
  FinishWithTheBystander();
}

INSTANTIATE_TEST_SUITE_P(Hosts, HostileRingTest, AllHostsAndBackends(), E2eParamName());

}  // namespace
}  // namespace vbus::e2e
