// libFuzzer target: the guest's bus state machine (core/bus_state) against a hostile host.
// The input is a script (test/fuzz/bus_fuzz_input.h) interleaving host messages — well-formed,
// out of order, for unknown relids, GPADLs and opens, or arbitrary serialized bytes — with
// driver calls, timer expiries, post failures and link loss. After every step:
//   - BusState::CheckInvariants holds;
//   - every Complete names a request that was issued and is still outstanding (each call
//     completes exactly once), and every ReleaseGpadl a handle the bus created and has not
//     released yet (no double free of guest memory the host may still map);
// and at the end, after the link is lost and every removed offer released:
//   - no request is left waiting (nothing hangs), no GPADL is left (nothing leaks), no offer
//     is left, and the bus is disconnected.
// VBUS_FUZZ_TRACE=1 prints every step's operation and actions (for reading a crash input).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/data/guid.h"
#include "core/data/guid_proto.h"
#include "core/state/bus_actions.h"
#include "core/state/bus_state.h"
#include "test/fuzz/bus_fuzz_input.h"
#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_reader.h"

namespace vbus::fuzz::bus {
namespace {

constexpr Guid kClasses[] = {Guid::Literal("8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501"),
                             Guid::Literal("57164f39-9115-4e78-ab55-382f3bd5422d")};
constexpr Guid kInstances[] = {Guid::Literal("11111111-2222-3333-4444-555555555555"),
                               Guid::Literal("66666666-7777-8888-9999-aaaaaaaaaaaa"),
                               Guid::Literal("00000000-0000-0000-0000-000000000001"),
                               Guid::Literal("00000000-0000-0000-0000-000000000000")};
constexpr uint32_t kHostileRelids[] = {0, 2047, 2048, 0xFFFFFFFF};
constexpr uint32_t kRefused = 0xC0000001;

class Driver {
 public:
  Driver() : bus_(BusConfig{}) {}

  void Step(FuzzReader& in) {
    const uint8_t op = in.Byte() % kOpCount;
    Actions out;
    switch (static_cast<Op>(op)) {
      case kVersionResponse: {
        const uint8_t flags = in.Byte();
        v1::ControlMessage m;
        m.mutable_version_response()->set_version_supported(flags & 1);
        m.mutable_version_response()->set_message_connection_id(flags >> 1);
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kOffer: {
        const uint32_t relid = Relid(in.Byte());
        const uint8_t guids = in.Byte();
        v1::ControlMessage m;
        v1::Offer* offer = m.mutable_offer();
        offer->set_child_relid(relid);
        *offer->mutable_interface_type() = GuidToProto(kClasses[guids & 1]);
        if ((guids & 0x70) == 0x70) {
          offer->mutable_interface_instance()->set_value("not-a-guid");
        } else {
          *offer->mutable_interface_instance() = GuidToProto(kInstances[(guids >> 1) & 3]);
        }
        offer->set_sub_channel_index(in.Byte() % 4);
        offer->set_monitor_allocated(guids & 0x80);
        offer->set_monitor_id(relid & 0xFF);
        offer->set_connection_id(relid);
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kAllOffersDelivered: {
        v1::ControlMessage m;
        m.mutable_all_offers_delivered();
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kRescind: {
        v1::ControlMessage m;
        m.mutable_rescind_offer()->set_child_relid(Relid(in.Byte()));
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kGpadlCreated: {
        const auto [relid, gpadl] = SentGpadl(in.Byte());
        v1::ControlMessage m;
        m.mutable_gpadl_created()->set_child_relid(relid);
        m.mutable_gpadl_created()->set_gpadl(gpadl);
        m.mutable_gpadl_created()->set_creation_status(Status(in.Byte()));
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kGpadlTorndown: {
        v1::ControlMessage m;
        m.mutable_gpadl_torndown()->set_gpadl(SentGpadl(in.Byte()).second);
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kOpenResult: {
        const uint8_t sel = in.Byte();
        v1::ControlMessage m;
        v1::OpenResult* r = m.mutable_open_result();
        if ((sel & kMadeUp) || opens_.empty()) {
          r->set_child_relid(Relid(sel));
          r->set_open_id(sel);
        } else {
          r->set_child_relid(opens_[sel % opens_.size()].first);
          r->set_open_id(opens_[sel % opens_.size()].second);
        }
        r->set_status(Status(in.Byte()));
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kModifyResponse: {
        v1::ControlMessage m;
        m.mutable_modify_channel_response()->set_child_relid(Relid(in.Byte()));
        m.mutable_modify_channel_response()->set_status(Status(in.Byte()));
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kUnloadResponse: {
        v1::ControlMessage m;
        m.mutable_unload_response();
        bus_.OnHostMessage(m, &out);
        break;
      }
      case kRawMessage: {
        v1::ControlMessage m;
        // Bytes that do not parse are what a transport would drop; parsed ones go in whole,
        // whatever message kind and field values they carry.
        if (m.ParseFromString(in.Bytes(in.Byte()))) bus_.OnHostMessage(m, &out);
        break;
      }
      case kConnect:
        Issue(bus_.Connect(Deadline(), &out));
        break;
      case kOpen: {
        const OfferId offer = PickOffer(in.Byte());
        const uint32_t half = 1 + in.Byte() % 4;  // pages per ring
        OpenParams params;
        for (uint32_t i = 0; i < 2 * half; ++i) params.ring_pfns.push_back(next_pfn_++);
        params.outbound_ring_pages = half;
        Issue(bus_.Open(offer, std::move(params), Deadline(), &out));
        break;
      }
      case kClose:
        Issue(bus_.Close(PickOffer(in.Byte()), Deadline(), &out));
        break;
      case kCreateGpadl: {
        const OfferId offer = PickOffer(in.Byte());
        GpadlParams params;
        for (uint32_t i = 0, n = in.Byte() % 8; i < n; ++i) params.pfns.push_back(next_pfn_++);
        Issue(bus_.CreateGpadl(offer, std::move(params), Deadline(), &out));
        break;
      }
      case kTeardownGpadl: {
        const OfferId offer = PickOffer(in.Byte());
        Issue(bus_.TeardownGpadl(offer, SentGpadl(in.Byte()).second, Deadline(), &out));
        break;
      }
      case kModify: {
        const OfferId offer = PickOffer(in.Byte());
        Issue(bus_.ModifyChannel(offer, in.Byte(), Deadline(), &out));
        break;
      }
      case kUnload:
        Issue(bus_.Unload(Deadline(), &out));
        break;
      case kRelease: {
        const uint8_t sel = in.Byte();
        if (removed_.empty()) {
          // Releasing what was never removed: NotFound or FailedPrecondition, nothing else.
          const absl::Status s = bus_.ReleaseOffer(PickOffer(sel), &out);
          FUZZ_CHECK(!s.ok());
          break;
        }
        auto it = std::next(removed_.begin(), sel % removed_.size());
        const OfferId offer = *it;
        removed_.erase(it);
        FUZZ_CHECK_OK(bus_.ReleaseOffer(offer, &out));
        break;
      }
      case kTimer: {
        const uint8_t sel = in.Byte();
        if (timers_.empty()) break;
        auto it = std::next(timers_.begin(), sel % timers_.size());
        const RequestId request = it->first;
        absl::Time when = it->second;
        if (sel & kMadeUp) {
          when -= absl::Seconds(1);  // early: must be armed again, not fire
        } else {
          timers_.erase(it);
          now_ = std::max(now_, when);
        }
        bus_.OnTimer(request, when, &out);
        break;
      }
      case kLinkLost:
        bus_.OnLinkLost(absl::UnavailableError("fuzz: link lost"), &out);
        break;
      case kPostFailed: {
        const uint8_t sel = in.Byte();
        const uint8_t code = in.Byte();
        if (sent_.empty()) break;
        absl::Status status;
        switch (code % 4) {
          case 0:
            status = absl::UnavailableError("fuzz: link gone");
            break;
          case 1:
            status = absl::NotFoundError("fuzz: connection rejected");
            break;
          case 2:
            status = absl::ResourceExhaustedError("fuzz: host message buffers full");
            break;
          default:
            status = absl::InvalidArgumentError("fuzz: cannot encode");
            break;
        }
        bus_.OnPostFailed(sent_[sel % sent_.size()], status, &out);
        break;
      }
      case kAdvance:
        now_ += absl::Seconds(in.Byte());
        break;
      case kOpCount:
        break;
    }
    if (TraceEnabled()) {
      std::fprintf(stderr, "op %u:\n", op);
      for (const std::string& line : DescribeActions(out)) {
        std::fprintf(stderr, "  %s\n", line.c_str());
      }
    }
    Absorb(out);
    // A message that completes its request once posted: posted, or (one op in four) failed.
    while (!unposted_.empty()) {
      Actions posted;
      const auto [request, message] = std::move(unposted_.back());
      unposted_.pop_back();
      if ((op & 3) != 0) {
        bus_.OnPosted(request, &posted);
      } else {
        bus_.OnPostFailed(message, absl::ResourceExhaustedError("fuzz: buffers full"), &posted);
      }
      Absorb(posted);
    }
  }

  // Ends the run the way the runtime ends a connection, then checks that nothing is left.
  void Finish() {
    Actions out;
    bus_.OnLinkLost(absl::UnavailableError("fuzz: end of input"), &out);
    Absorb(out);
    while (!removed_.empty()) {
      const OfferId offer = *removed_.begin();
      removed_.erase(removed_.begin());
      Actions more;
      FUZZ_CHECK_OK(bus_.ReleaseOffer(offer, &more));
      Absorb(more);
    }
    FUZZ_CHECK(bus_.phase() == BusPhase::kDisconnected);
    FUZZ_CHECK(outstanding_.empty());
    FUZZ_CHECK(bus_.pending_requests() == 0);
    FUZZ_CHECK(bus_.Offers().empty());
    FUZZ_CHECK(bus_.Gpadls().empty());
    FUZZ_CHECK(live_gpadls_.empty());
  }

 private:
  absl::Time Deadline() const { return now_ + absl::Seconds(10); }

  static uint32_t Relid(uint8_t sel) { return (sel & kMadeUp) ? kHostileRelids[sel & 3] : sel % 8; }
  static uint32_t Status(uint8_t sel) { return sel % 4 == kStatusFail ? kRefused : 0; }

  // (relid, handle) of a GpadlCreate the bus sent, or made up.
  std::pair<uint32_t, uint32_t> SentGpadl(uint8_t sel) const {
    if ((sel & kMadeUp) || gpadls_sent_.empty()) return {Relid(sel), sel};
    return gpadls_sent_[sel % gpadls_sent_.size()];
  }

  OfferId PickOffer(uint8_t sel) const {
    const std::vector<OfferInfo> offers = bus_.Offers();
    if ((sel & kMadeUp) || offers.empty()) return OfferId(sel & 0x7F);  // maybe unknown
    return offers[sel % offers.size()].id;
  }

  void Issue(RequestId id) {
    FUZZ_CHECK(id.valid());
    FUZZ_CHECK(outstanding_.insert(id).second);
  }

  void Absorb(const Actions& out) {
    for (const Action& action : out) {
      if (const auto* send = std::get_if<SendMessage>(&action)) {
        const v1::ControlMessage& m = send->message;
        if (send->completes.valid()) unposted_.emplace_back(send->completes, m);
        if (sent_.size() == 16) sent_.erase(sent_.begin());
        sent_.push_back(m);
        if (m.has_gpadl_create()) {
          gpadls_sent_.emplace_back(m.gpadl_create().child_relid(), m.gpadl_create().gpadl());
          // A handle is never handed out again while the bus may still release it.
          FUZZ_CHECK(live_gpadls_.insert(m.gpadl_create().gpadl()).second);
        }
        if (m.has_open_channel()) {
          opens_.emplace_back(m.open_channel().child_relid(), m.open_channel().open_id());
        }
      } else if (const auto* release = std::get_if<ReleaseGpadl>(&action)) {
        FUZZ_CHECK(live_gpadls_.erase(release->gpadl) == 1);
      } else if (const auto* complete = std::get_if<Complete>(&action)) {
        FUZZ_CHECK(outstanding_.erase(complete->request) == 1);
      } else if (const auto* removed = std::get_if<OfferRemoved>(&action)) {
        FUZZ_CHECK(removed_.insert(removed->offer).second);
      } else if (const auto* arm = std::get_if<ArmTimer>(&action)) {
        timers_[arm->request] = arm->deadline;
      } else if (const auto* cancel = std::get_if<CancelTimer>(&action)) {
        timers_.erase(cancel->request);
      }
    }
    FUZZ_CHECK_OK(bus_.CheckInvariants());
  }

  BusState bus_;
  absl::Time now_ = absl::UnixEpoch();
  uint64_t next_pfn_ = 100;
  std::set<RequestId> outstanding_;                         // issued calls not yet completed
  std::map<RequestId, absl::Time> timers_;                  // armed and not cancelled
  std::set<OfferId> removed_;                               // OfferRemoved, not yet released
  std::set<uint32_t> live_gpadls_;                          // created (sent) and not yet released
  std::vector<std::pair<uint32_t, uint32_t>> gpadls_sent_;  // (relid, handle), all time
  std::vector<std::pair<uint32_t, uint32_t>> opens_;        // (relid, open id), all time
  std::vector<v1::ControlMessage> sent_;                    // the last 16 sent
  // Sent messages that complete a request once posted, not yet reported posted or failed.
  std::vector<std::pair<RequestId, v1::ControlMessage>> unposted_;
};

}  // namespace
}  // namespace vbus::fuzz::bus

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vbus::fuzz::QuietProtobufLogs();
  vbus::fuzz::RunScript<vbus::fuzz::bus::Driver>(data, size);
  return 0;
}
