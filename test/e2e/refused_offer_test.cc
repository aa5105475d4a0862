// The guest's bus state machine (core/state) against the mock host's engine (mock/host), wired
// message for message with no I/O: an offer the guest refuses gives its relid back
// (docs/protocol.md §8), and the host offers the relid again at once — to a device the guest
// then accepts. The offer is spoiled on its way (as a buggy host or link would), since the
// mock host itself never makes an offer a correct guest refuses.
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>

#include "absl/time/time.h"
#include "core/data/protocol.h"
#include "core/state/bus_state.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mock/guest_memory.h"
#include "mock/host/engine.h"

namespace vbus {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1700000000);
const absl::Time kDeadline = kNow + absl::Seconds(10);

// A guest's BusState and the host's engine, joined by two in-order message queues.
class Link {
 public:
  Link() : bus_(BusConfig{}) {
    absl::StatusOr<std::unique_ptr<mock::HostEngine>> engine =
        mock::HostEngine::Create(mock::EngineOptions{});
    EXPECT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    v1::Attach attach;
    attach.set_guest_name("vm");
    attach.set_memory_path("/dev/shm/refused-offer-test");
    attach.set_memory_size_bytes(256 * protocol::kPageSize);
    *attach.mutable_layout() = mock::LayoutToProto(mock::MemoryLayout{});
    mock::Actions out;
    absl::StatusOr<std::string> id = engine_->Attach(attach, kNow, &out);
    EXPECT_TRUE(id.ok()) << id.status();
    guest_id_ = id.value_or("");
    FromHost(std::move(out));
    to_guest_.clear();  // the Attached message is the transport's, not BusState's
  }

  BusState& bus() { return bus_; }
  mock::HostEngine& engine() { return *engine_; }
  const std::string& guest_id() const { return guest_id_; }
  // Applied to every control message on its way to the guest.
  void set_tamper(std::function<void(v1::ControlMessage&)> tamper) { tamper_ = std::move(tamper); }

  // Runs a guest call, then carries messages both ways until neither side has more to say.
  void Guest(const std::function<void(BusState&, Actions*)>& call) {
    Actions out;
    call(bus_, &out);
    FromGuest(std::move(out));
    Pump();
  }
  // Runs a HostControl call, then carries messages until quiet.
  void Host(const std::function<void(mock::HostEngine&, mock::Actions*)>& call) {
    mock::Actions out;
    call(*engine_, &out);
    FromHost(std::move(out));
    Pump();
  }

 private:
  void FromGuest(Actions out) {
    for (const Action& a : out) {
      if (const auto* send = std::get_if<SendMessage>(&a)) to_host_.push_back(send->message);
    }
  }
  void FromHost(mock::Actions out) {
    for (mock::Action& a : out) {
      auto* send = std::get_if<mock::SendToGuest>(&a);
      if (send != nullptr && send->message.has_control()) {
        to_guest_.push_back(send->message.control());
      }
      ASSERT_FALSE(send != nullptr && send->message.has_error())
          << "protocol error from the host: " << send->message.ShortDebugString();
    }
  }
  void Pump() {
    while (!to_host_.empty() || !to_guest_.empty()) {
      if (!to_host_.empty()) {
        mock::Actions out;
        EXPECT_TRUE(engine_->HandleGuestControl(guest_id_, to_host_.front(), kNow, &out).ok());
        to_host_.pop_front();
        FromHost(std::move(out));
      } else {
        v1::ControlMessage m = std::move(to_guest_.front());
        to_guest_.pop_front();
        if (tamper_) tamper_(m);
        Actions out;
        bus_.OnHostMessage(m, &out);
        FromGuest(std::move(out));
      }
    }
  }

  BusState bus_;
  std::unique_ptr<mock::HostEngine> engine_;
  std::string guest_id_;
  std::deque<v1::ControlMessage> to_host_;
  std::deque<v1::ControlMessage> to_guest_;
  std::function<void(v1::ControlMessage&)> tamper_;
};

absl::StatusOr<v1::OfferResponse> OfferDevice(Link& link, const std::string& device) {
  absl::StatusOr<v1::OfferResponse> response = absl::UnknownError("not offered");
  link.Host([&](mock::HostEngine& e, mock::Actions* out) {
    v1::OfferRequest request;
    request.mutable_spec()->set_device(device);
    response = e.Offer(request, kNow, out);
  });
  return response;
}

TEST(RefusedOfferTest, TheHostReusesTheRelidOfAnOfferTheGuestRefused) {
  Link link;
  link.Guest([](BusState& b, Actions* out) { b.Connect(kDeadline, out); });
  ASSERT_EQ(link.bus().phase(), BusPhase::kConnected);
  ASSERT_TRUE(link.bus().all_offers_delivered());
  // The next offer arrives with a monitor id no guest accepts.
  link.set_tamper([](v1::ControlMessage& m) {
    if (!m.has_offer()) return;
    m.mutable_offer()->set_monitor_allocated(true);
    m.mutable_offer()->set_monitor_id(200);
  });
  absl::StatusOr<v1::OfferResponse> spoiled = OfferDevice(link, "echo");
  ASSERT_TRUE(spoiled.ok()) << spoiled.status();
  const uint32_t relid = spoiled->child_relid();
  EXPECT_TRUE(link.bus().Offers().empty());
  EXPECT_EQ(link.bus().counters().ignored_for(IgnoreReason::kOfferBadMonitorId), 1u);
  EXPECT_EQ(link.bus().counters().refused_relids_released, 1u);
  // The host took the RelidReleased as the refusal: the channel is gone, the relid free.
  EXPECT_EQ(link.engine().counters().offers_refused_by_guest, 1u);
  EXPECT_EQ(link.engine().counters().protocol_errors, 0u);
  EXPECT_EQ(link.engine().FindChannel(link.guest_id(), relid).status().code(),
            absl::StatusCode::kNotFound);
  // The next device gets the same relid, and the guest accepts it.
  link.set_tamper(nullptr);
  absl::StatusOr<v1::OfferResponse> next = OfferDevice(link, "sink");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->child_relid(), relid);
  ASSERT_EQ(link.bus().Offers().size(), 1u);
  EXPECT_EQ(link.bus().Offers()[0].relid, relid);
  EXPECT_EQ(link.bus().counters().offers_accepted, 1u);
  EXPECT_TRUE(link.bus().CheckInvariants().ok());
}

}  // namespace
}  // namespace vbus
