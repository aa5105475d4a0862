// libFuzzer target: the mock host's engine (mock/host/engine) against hostile guests and a
// busy operator. The input is a byte script (test/fuzz/host_fuzz_input.h): up to three guests
// attach, send control messages built from selectors (valid and hostile relids, GPADL handles, PFNs
// beyond the guest's memory or on its special pages, ring offsets, versions, messages only a host
// may send) or arbitrary serialized GuestToHost messages (second attaches, signals, batches), and
// detach; between them the operator offers, rescinds, injects faults, reconfigures, lets time pass
// and fails ring mappings. Checked after every step:
//   - the engine answers every guest message with OK (bad input becomes a ProtocolError or a
//     status in the reply, never a failed engine call);
//   - its actions are coherent (EngineHarness: no UnmapRings without MapRings, no MapRings
//     twice);
//   - every offer sent to a guest carries a relid in 1..2047 that the guest does not hold
//     (relids are reused only after the guest's RelidReleased for a rescind or for an offer
//     it refused, or an Unload;
//     modelled from the messages, independently of the engine's state);
// and at the end, with every guest detached: no rings stay mapped, no guest or delayed
// message is left. VBUS_FUZZ_TRACE=1 prints every operation and what the host sent.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "mock/guest_memory.h"
#include "mock/host/engine.h"
#include "mock/testing/engine_harness.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"
#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_reader.h"
#include "test/fuzz/host_fuzz_input.h"

namespace vbus::fuzz::host {
namespace {

using mock::testing::EngineHarness;

constexpr uint64_t kGuestPages = 64;
constexpr uint32_t kVersions[] = {0x00020004, 0x00030000, 0x00040000, 0x00040001, 0x00050000,
                                  0x00050001, 0x00050002, 0x00050003, 0x00060000, 0};
constexpr uint32_t kHostileRelids[] = {0, 2047, 2048, 0xFFFFFFFF};
constexpr const char* kDevices[] = {"echo", "sink", "raw", "no-such-device"};
constexpr const char* kMessageTypes[] = {
    "offer",         "version_response", "gpadl_created",        "open_result",
    "rescind_offer", "gpadl_torndown",   "all_offers_delivered", "bogus"};

uint32_t Relid(uint8_t sel) { return (sel & 0x80) ? kHostileRelids[sel & 3] : 1 + sel % 8; }
uint32_t Handle(uint8_t sel) {
  return (sel & 0x80) ? (sel & 1 ? 0xFFFFFFFF : 0) : 0xE1E10 + sel % 4;
}

class Driver {
 public:
  Driver() = default;

  void Step(FuzzReader& in) {
    const uint8_t op = in.Byte() % kOpCount;
    if (TraceEnabled()) std::fprintf(stderr, "op %u\n", op);
    switch (static_cast<Op>(op)) {
      case kAttach:
        Attach();
        break;
      case kDetach: {
        const std::string* id = PickGuest(in.Byte());
        if (id != nullptr) Detach(*id);
        break;
      }
      case kGuestMessage: {
        const std::string* id = PickGuest(in.Byte());
        const uint8_t kind = in.Byte(), a = in.Byte(), b = in.Byte(), c = in.Byte();
        if (id == nullptr) break;
        v1::GuestToHost message;
        *message.mutable_control() = BuildControl(kind, a, b, c);
        FromGuest(*id, message);
        break;
      }
      case kGuestRaw: {
        const std::string* id = PickGuest(in.Byte());
        v1::GuestToHost message;
        const bool parsed = message.ParseFromString(in.Bytes(in.Byte()));
        if (id != nullptr && parsed) FromGuest(*id, message);
        break;
      }
      case kOffer: {
        const std::string* id = PickGuest(in.Byte());
        const uint8_t device = in.Byte(), subs = in.Byte(), instance = in.Byte();
        v1::OfferRequest request;
        request.set_guest(Target(id));
        request.mutable_spec()->set_device(kDevices[device % 4]);
        request.mutable_spec()->set_sub_channel_count(subs % 5);
        request.mutable_spec()->set_monitored(device & 0x10);
        if (instance & 0x80) {
          request.mutable_spec()->mutable_interface_instance()->set_value(
              absl::StrCat("00000000-0000-0000-0000-0000000000", instance % 4, "0"));
        }
        Operate([&](absl::Time now, mock::Actions* out) {
          return h_.engine().Offer(request, now, out).status();
        });
        break;
      }
      case kRescind: {
        const std::string* id = PickGuest(in.Byte());
        v1::RescindRequest request;
        request.set_guest(Target(id));
        request.set_child_relid(Relid(in.Byte()));
        Operate([&](absl::Time now, mock::Actions* out) {
          return h_.engine().Rescind(request, now, out).status();
        });
        break;
      }
      case kFault: {
        const std::string* id = PickGuest(in.Byte());
        const uint8_t kind = in.Byte(), a = in.Byte(), b = in.Byte();
        v1::InjectFaultRequest request;
        request.set_guest(Target(id));
        switch (kind % 3) {
          case 0: {
            v1::MessageFault* f = request.mutable_message();
            f->set_message_type(kMessageTypes[a % 8]);
            // A duplicated or delayed offer or rescind is a stale offer on purpose: the relid
            // check below no longer applies to this guest.
            if (id != nullptr && (a % 8 == 0 || a % 8 == 4)) unchecked_.insert(*id);
            f->set_action(static_cast<v1::MessageFault::Action>(a >> 3 & 3));
            f->set_count(b % 4);
            f->set_delay_ms(b);
            break;
          }
          case 1:
            request.mutable_refuse()->set_request(static_cast<v1::RefuseNext::Request>(a % 4));
            request.mutable_refuse()->set_status(b % 2 ? 0xC0000001 : 0);
            break;
          default:
            request.set_disconnect(true);
            break;
        }
        Operate([&](absl::Time now, mock::Actions* out) {
          return h_.engine().InjectFault(request, now, out);
        });
        break;
      }
      case kConfigure: {
        const uint8_t version = in.Byte(), flags = in.Byte();
        v1::ConfigureRequest request;
        if (flags & 1) request.mutable_settings()->set_max_version(kVersions[version % 10]);
        if (flags & 2) request.mutable_settings()->set_remap_relids_on_resume(flags & 4);
        if (flags & 8) request.mutable_settings()->set_monitor_latency_us(version * 10);
        (void)h_.engine().Configure(request);
        break;
      }
      case kFailNextMap:
        h_.FailNextMap(absl::InternalError("fuzz: ring mapping failed"));
        break;
      case kAdvance:
        h_.Advance(absl::Milliseconds(4 * in.Byte()));
        CheckOutputs();
        break;
      case kOpCount:
        break;
    }
    (void)h_.engine().ListGuests();
    for (const std::string& id : guests_) FUZZ_CHECK_OK(h_.engine().ListChannels(id).status());
  }

  void Finish() {
    while (!guests_.empty()) Detach(guests_.front());
    FUZZ_CHECK(h_.engine().GuestIds().empty());
    FUZZ_CHECK(h_.mapped().empty());
    FUZZ_CHECK(!h_.engine().NextTimer().has_value());
    FUZZ_CHECK(h_.action_violations() == 0);
  }

 private:
  const std::string* PickGuest(uint8_t sel) const {
    return guests_.empty() ? nullptr : &guests_[sel % guests_.size()];
  }

  // A HostControl call names a guest (or nobody, when none is attached).
  static std::string Target(const std::string* id) { return id != nullptr ? *id : "nobody"; }

  // An operator's HostControl call: its status is the operator's answer (an error is fine);
  // its actions run as the runtime runs them.
  template <typename Call>
  void Operate(Call call) {
    mock::Actions out;
    (void)call(h_.now(), &out);
    Run(std::move(out));
  }

  void Attach() {
    if (guests_.size() == 3) return;
    v1::Attach attach;
    attach.set_guest_name(absl::StrCat("vm", next_name_++));
    attach.set_memory_path("/dev/shm/fuzz");
    attach.set_memory_size_bytes(kGuestPages * protocol::kPageSize);
    *attach.mutable_layout() = mock::LayoutToProto(mock::MemoryLayout{});
    mock::Actions out;
    absl::StatusOr<std::string> id = h_.engine().Attach(attach, h_.now(), &out);
    FUZZ_CHECK_OK(id.status());
    guests_.push_back(*id);
    Run(std::move(out));
  }

  void Detach(const std::string& id) {
    mock::Actions out;
    FUZZ_CHECK_OK(h_.engine().Detach(id, "fuzz: detached", h_.now(), &out));
    guests_.erase(std::find(guests_.begin(), guests_.end(), id));
    relids_.erase(id);
    unchecked_.erase(id);
    Run(std::move(out));
  }

  // What the runtime does with a stream message: batches are checked, then handled message by
  // message with each one's actions carried out before the next.
  void FromGuest(const std::string& id, const v1::GuestToHost& message) {
    mock::Actions out;
    if (message.has_control()) NoteRelease(id, message.control());
    if (!message.has_batch()) {
      FUZZ_CHECK_OK(h_.engine().HandleGuestMessage(id, message, h_.now(), &out));
      Run(std::move(out));
      return;
    }
    absl::StatusOr<bool> ok = h_.engine().CheckBatch(id, message.batch(), h_.now(), &out);
    FUZZ_CHECK_OK(ok.status());
    Run(std::move(out));
    if (!*ok) return;
    for (const v1::ControlMessage& m : message.batch().messages()) {
      if (std::find(guests_.begin(), guests_.end(), id) == guests_.end()) return;  // detached
      mock::Actions each;
      NoteRelease(id, m);
      FUZZ_CHECK_OK(h_.engine().HandleGuestControl(id, m, h_.now(), &each));
      Run(std::move(each));
    }
  }

  // The guest's view of relid ownership: a relid it was offered stays its own until it
  // releases it after a rescind or a refusal of the offer (or the connection ends); the host
  // must not offer it again before. Modelled from the messages alone, not from the engine's
  // state.
  struct Relids {
    std::set<uint32_t> held;       // offered
    std::set<uint32_t> rescinded;  // of those, rescinded
  };
  void NoteRelease(const std::string& id, const v1::ControlMessage& m) {
    if (!m.has_relid_released()) return;
    // Rescinded or only offered (a refusal), the relid is free: the engine refuses the release
    // of an opening or open channel and keeps it, which the model does not tell apart (it then
    // merely checks less about that relid).
    Relids& relids = relids_[id];
    relids.rescinded.erase(m.relid_released().child_relid());
    relids.held.erase(m.relid_released().child_relid());
  }

  static v1::ControlMessage BuildControl(uint8_t kind, uint8_t a, uint8_t b, uint8_t c) {
    v1::ControlMessage m;
    switch (kind % kGuestKindCount) {
      case kInitiateContact:
        m.mutable_initiate_contact()->set_version_requested(kVersions[a % 10]);
        m.mutable_initiate_contact()->set_target_vcpu(b);
        break;
      case kRequestOffers:
        m.mutable_request_offers();
        break;
      case kGpadlCreate: {
        v1::GpadlCreate* g = m.mutable_gpadl_create();
        g->set_child_relid(Relid(a));
        g->set_gpadl(Handle(b));
        const uint32_t pages = 1 + c % 8;
        for (uint32_t i = 0; i < pages; ++i) {
          g->add_pfns((c & 0x80) ? (c & 0x7F) + i * 2 : 5 + (b % 60) + i);  // maybe past the end
        }
        g->set_byte_count((c & 0x40) ? pages * 4096 + 1 : pages * 4096);
        break;
      }
      case kGpadlTeardown:
        m.mutable_gpadl_teardown()->set_child_relid(Relid(a));
        m.mutable_gpadl_teardown()->set_gpadl(Handle(b));
        break;
      case kOpenChannel:
        m.mutable_open_channel()->set_child_relid(Relid(a));
        m.mutable_open_channel()->set_open_id(a);
        m.mutable_open_channel()->set_ring_buffer_gpadl(Handle(b));
        m.mutable_open_channel()->set_downstream_ring_page_offset(c % 10);
        m.mutable_open_channel()->set_target_vp(c >> 4);
        break;
      case kCloseChannel:
        m.mutable_close_channel()->set_child_relid(Relid(a));
        break;
      case kRelidReleased:
        m.mutable_relid_released()->set_child_relid(Relid(a));
        break;
      case kModifyChannel:
        m.mutable_modify_channel()->set_child_relid(Relid(a));
        m.mutable_modify_channel()->set_target_vp(b);
        break;
      case kUnload:
        m.mutable_unload();
        break;
      case kHostOnlyOffer:
        m.mutable_offer()->set_child_relid(Relid(a));  // only a host sends these
        break;
      case kHostOnlyVersionResponse:
        m.mutable_version_response()->set_version_supported(true);
        break;
      default:
        break;  // an empty ControlMessage
    }
    return m;
  }

  void Run(mock::Actions out) {
    h_.Run(std::move(out));
    CheckOutputs();
  }

  // Checks what the host sent since the last call, and answers a disconnect like the runtime.
  void CheckOutputs() {
    FUZZ_CHECK(h_.action_violations() == 0);
    for (const std::string& id : std::vector<std::string>(guests_)) {
      Relids& relids = relids_[id];
      for (const v1::HostToGuest& m : h_.TakeInbox(id)) {
        if (TraceEnabled()) {
          std::fprintf(stderr, "  %s <- %s\n", id.c_str(), m.ShortDebugString().c_str());
        }
        if (m.control().has_offer()) {
          const uint32_t relid = m.control().offer().child_relid();
          FUZZ_CHECK(relid >= 1 && relid <= 2047);
          FUZZ_CHECK(relids.held.insert(relid).second || unchecked_.contains(id));
        } else if (m.control().has_rescind_offer()) {
          relids.rescinded.insert(m.control().rescind_offer().child_relid());
        } else if (m.control().has_unload_response()) {
          relids = Relids();  // the next connection is offered everything afresh
        }
      }
    }
    while (disconnects_seen_ < h_.disconnects().size()) {
      const std::string id = h_.disconnects()[disconnects_seen_++].guest_id;
      if (std::find(guests_.begin(), guests_.end(), id) != guests_.end()) Detach(id);
    }
  }

  EngineHarness h_;
  std::vector<std::string> guests_;       // attached, in attach order
  std::map<std::string, Relids> relids_;  // per guest
  std::set<std::string> unchecked_;       // guests with offer/rescind message faults injected
  size_t disconnects_seen_ = 0;
  uint64_t next_name_ = 1;
};

}  // namespace
}  // namespace vbus::fuzz::host

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vbus::fuzz::QuietProtobufLogs();
  vbus::fuzz::RunScript<vbus::fuzz::host::Driver>(data, size);
  return 0;
}
