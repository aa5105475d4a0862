#include "mock/host/device.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"
#include "mock/host/sub_channel_request.h"

namespace vbus::mock {
namespace {

PacketDisposition DispositionOf(const absl::Status& sent) {
  // A full ring is the only condition worth retrying; any other failure (a corrupt ring, a
  // closing channel) ends this packet: the data plane reports the channel's error itself.
  return sent.code() == absl::StatusCode::kResourceExhausted ? PacketDisposition::kRetryLater
                                                             : PacketDisposition::kConsumed;
}

}  // namespace

absl::Status DeviceRegistry::Register(DeviceKind kind) {
  if (kind.name.empty()) return absl::InvalidArgumentError("device kind with an empty name");
  if (kinds_.contains(kind.name)) {
    return absl::AlreadyExistsError(absl::StrCat("device kind \"", kind.name, "\" exists"));
  }
  std::string name = kind.name;
  kinds_.emplace(std::move(name), std::move(kind));
  return absl::OkStatus();
}

const DeviceKind* DeviceRegistry::Find(absl::string_view name) const {
  auto it = kinds_.find(name);
  return it == kinds_.end() ? nullptr : &it->second;
}

std::vector<std::string> DeviceRegistry::Names() const {
  std::vector<std::string> names;
  names.reserve(kinds_.size());
  for (const auto& [name, kind] : kinds_) names.push_back(name);
  return names;
}

const DeviceRegistry& DeviceRegistry::Default() {
  static const DeviceRegistry* registry = [] {
    auto* r = new DeviceRegistry;
    (void)r->Register({kEchoKind, kEchoDeviceClass, "answers every packet with the same bytes",
                       [] { return std::make_unique<EchoDevice>(); }});
    (void)r->Register({kSinkKind, kSinkDeviceClass, "consumes and counts packets",
                       [] { return std::make_unique<SinkDevice>(); }});
    (void)r->Register(
        {kRawKind, kRawDeviceClass, "no emulator: driven by SendPacket and WatchPackets", nullptr});
    return r;
  }();
  return *registry;
}

PacketDisposition EchoDevice::OnPacket(ChannelPort& port, const GuestPacketRef& packet) {
  if (packet.type == static_cast<uint16_t>(PacketType::kCompletion)) {
    return PacketDisposition::kConsumed;
  }
  if (IsSubChannelRequest(packet.payload)) return AnswerSubChannelRequest(port, packet);
  const PacketType type =
      packet.completion_requested() ? PacketType::kCompletion : PacketType::kDataInband;
  return DispositionOf(port.Send(type, /*flags=*/0, packet.trans_id, packet.payload));
}

PacketDisposition EchoDevice::AnswerSubChannelRequest(ChannelPort& port,
                                                      const GuestPacketRef& packet) {
  if (!unsent_answer_.has_value() || unsent_answer_->trans_id != packet.trans_id) {
    // A new request: ask the port once, even if the answer has to wait for ring space.
    absl::StatusOr<uint16_t> count = ParseSubChannelRequest(packet.payload);
    const bool taken = count.ok() && port.RequestSubChannels(*count).ok();
    unsent_answer_ = UnsentAnswer{packet.trans_id,
                                  taken ? protocol::kStatusSuccess : protocol::kStatusUnsuccessful};
  }
  const PacketType type =
      packet.completion_requested() ? PacketType::kCompletion : PacketType::kDataInband;
  const std::vector<uint8_t> answer =
      EncodeSubChannelAnswer(unsent_answer_->status, RequestedCount(packet.payload));
  const PacketDisposition d = DispositionOf(port.Send(type, /*flags=*/0, packet.trans_id, answer));
  if (d == PacketDisposition::kConsumed) unsent_answer_.reset();
  return d;
}

PacketDisposition SinkDevice::OnPacket(ChannelPort& port, const GuestPacketRef& packet) {
  if (packet.completion_requested()) {
    const PacketDisposition d =
        DispositionOf(port.Send(PacketType::kCompletion, /*flags=*/0, packet.trans_id, {}));
    if (d == PacketDisposition::kRetryLater) return d;  // count it once, when it is consumed
  }
  packets_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(packet.payload.size(), std::memory_order_relaxed);
  return PacketDisposition::kConsumed;
}

}  // namespace vbus::mock
