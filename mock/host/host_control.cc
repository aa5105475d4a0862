// MockHost's HostControl side: the gRPC service (a thin adapter over MockHost's public
// methods; WatchEvents and WatchPackets pump a WatchHub subscription) and the HostControl
// methods themselves, which run engine calls and read the guests' data planes.
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "mock/host/mock_host.h"
#include "mock/host/mock_host_internal.h"

namespace vbus::mock {
namespace {

template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpc(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

class HostControlService final : public v1::HostControl::Service {
 public:
  explicit HostControlService(MockHost* host) : host_(host) {}

  grpc::Status Offer(grpc::ServerContext*, const v1::OfferRequest* request,
                     v1::OfferResponse* response) override {
    return Reply(host_->Offer(*request), response);
  }
  grpc::Status Rescind(grpc::ServerContext*, const v1::RescindRequest* request,
                       v1::RescindResponse* response) override {
    return Reply(host_->Rescind(*request), response);
  }
  grpc::Status ListGuests(grpc::ServerContext*, const v1::ListGuestsRequest*,
                          v1::ListGuestsResponse* response) override {
    *response = host_->ListGuests();
    return grpc::Status::OK;
  }
  grpc::Status ListChannels(grpc::ServerContext*, const v1::ListChannelsRequest* request,
                            v1::ListChannelsResponse* response) override {
    return Reply(host_->ListChannels(*request), response);
  }
  grpc::Status SendPacket(grpc::ServerContext*, const v1::SendPacketRequest* request,
                          v1::SendPacketResponse* response) override {
    return Reply(host_->SendPacket(*request), response);
  }
  grpc::Status InjectFault(grpc::ServerContext*, const v1::InjectFaultRequest* request,
                           v1::InjectFaultResponse* response) override {
    return Reply(host_->InjectFault(*request), response);
  }
  grpc::Status Configure(grpc::ServerContext*, const v1::ConfigureRequest* request,
                         v1::HostSettings* response) override {
    return Reply(host_->Configure(*request), response);
  }
  grpc::Status RequestShutdown(grpc::ServerContext*, const v1::GuestShutdownRequest* request,
                               v1::GuestShutdownResponse* response) override {
    return Reply(host_->RequestShutdown(*request), response);
  }
  grpc::Status KvpExchange(grpc::ServerContext*, const v1::KvpRequest* request,
                           v1::KvpResponse* response) override {
    return Reply(host_->KvpExchange(*request), response);
  }
  grpc::Status TimeSync(grpc::ServerContext*, const v1::TimeSyncRequest* request,
                        v1::TimeSyncResponse* response) override {
    return Reply(host_->TimeSync(*request), response);
  }
  grpc::Status IcStatus(grpc::ServerContext*, const v1::IcStatusRequest* request,
                        v1::IcStatusResponse* response) override {
    return Reply(host_->IcStatus(*request), response);
  }
  grpc::Status ConfigureIc(grpc::ServerContext*, const v1::ConfigureIcRequest* request,
                           v1::IcSettings* response) override {
    return Reply(host_->ConfigureIc(*request), response);
  }
  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                           grpc::ServerWriter<v1::ProtocolEvent>* writer) override {
    auto sub = host_->WatchEvents(*request);
    if (!sub.ok()) return ToGrpc(sub.status());
    grpc::Status s = Pump(context, writer, **sub);
    host_->Unwatch(*sub);
    return s;
  }
  grpc::Status WatchPackets(grpc::ServerContext* context, const v1::WatchPacketsRequest* request,
                            grpc::ServerWriter<v1::GuestPacket>* writer) override {
    auto sub = host_->WatchPackets(*request);
    if (!sub.ok()) return ToGrpc(sub.status());
    grpc::Status s = Pump(context, writer, **sub);
    host_->Unwatch(*sub);
    return s;
  }

 private:
  // Streams a subscription until the client goes away or the host shuts down. The initial
  // metadata goes out first: it tells the client that the watch is registered.
  template <typename T>
  static grpc::Status Pump(grpc::ServerContext* context, grpc::ServerWriter<T>* writer,
                           typename WatchHub<T>::Subscription& sub) {
    writer->SendInitialMetadata();
    while (!context->IsCancelled()) {
      absl::StatusOr<std::optional<T>> item = sub.Next(absl::Now() + absl::Milliseconds(200));
      if (!item.ok()) return ToGrpc(item.status());
      if (item->has_value() && !writer->Write(**item)) break;
    }
    return grpc::Status::OK;
  }

  MockHost* const host_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewHostControlService(MockHost* host) {
  return std::make_unique<HostControlService>(host);
}

absl::StatusOr<v1::OfferResponse> MockHost::Offer(const v1::OfferRequest& request) {
  return Run([&](absl::Time now, Actions* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::StatusOr<v1::OfferResponse> r = engine_->Offer(request, now, out);
    if (r.ok()) {
      // A relid offered anew starts with fresh counters.
      absl::StatusOr<std::string> id = engine_->ResolveGuest(request.guest());
      auto it = id.ok() ? sessions_.find(*id) : sessions_.end();
      if (it != sessions_.end()) {
        it->second->closed_counters.erase(r->child_relid());
        for (uint32_t sub : r->sub_channel_relids()) it->second->closed_counters.erase(sub);
      }
    }
    return r;
  });
}

absl::StatusOr<v1::RescindResponse> MockHost::Rescind(const v1::RescindRequest& request) {
  return Run([&](absl::Time now, Actions* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return engine_->Rescind(request, now, out);
  });
}

v1::ListGuestsResponse MockHost::ListGuests() {
  MutexLock lock(&mu_);
  return engine_->ListGuests();
}

absl::StatusOr<v1::ListChannelsResponse> MockHost::ListChannels(
    const v1::ListChannelsRequest& request) {
  MutexLock lock(&mu_);
  absl::StatusOr<v1::ListChannelsResponse> r = engine_->ListChannels(request.guest());
  if (!r.ok()) return r;
  for (v1::ChannelInfo& c : *r->mutable_channels()) {
    auto it = sessions_.find(c.guest_id());
    if (it == sessions_.end()) continue;
    ChannelCounters sum;
    if (auto closed = it->second->closed_counters.find(c.child_relid());
        closed != it->second->closed_counters.end()) {
      sum = closed->second;
    }
    if (absl::StatusOr<ChannelCounters> live = it->second->plane->Counters(c.child_relid());
        live.ok()) {
      sum.packets_to_guest += live->packets_to_guest;
      sum.bytes_to_guest += live->bytes_to_guest;
      sum.packets_from_guest += live->packets_from_guest;
      sum.bytes_from_guest += live->bytes_from_guest;
      sum.signals_to_guest += live->signals_to_guest;
      sum.signals_from_guest += live->signals_from_guest;
    }
    c.set_packets_to_guest(sum.packets_to_guest);
    c.set_bytes_to_guest(sum.bytes_to_guest);
    c.set_packets_from_guest(sum.packets_from_guest);
    c.set_bytes_from_guest(sum.bytes_from_guest);
    c.set_signals_to_guest(sum.signals_to_guest);
    c.set_signals_from_guest(sum.signals_from_guest);
  }
  return r;
}

absl::StatusOr<v1::SendPacketResponse> MockHost::SendPacket(const v1::SendPacketRequest& request) {
  PacketType type;
  switch (request.type()) {
    case v1::PACKET_TYPE_UNSPECIFIED:
    case v1::PACKET_TYPE_DATA_INBAND:
      type = PacketType::kDataInband;
      break;
    case v1::PACKET_TYPE_COMPLETION:
      type = PacketType::kCompletion;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("packet type ", request.type(), " cannot be sent (in-band or completion)"));
  }
  MutexLock lock(&mu_);
  absl::StatusOr<std::string> id = engine_->ResolveGuest(request.guest());
  if (!id.ok()) return id.status();
  absl::StatusOr<HostEngine::ChannelSnapshot> channel =
      engine_->FindChannel(*id, request.child_relid());
  if (!channel.ok()) return channel.status();
  if (channel->state != HostEngine::ChannelState::kOpen) {
    return absl::FailedPreconditionError(
        absl::StrCat("relid ", request.child_relid(), " of ", *id, " is not open"));
  }
  const std::string& payload = request.payload();
  absl::StatusOr<bool> signalled = sessions_.at(*id)->plane->SendPacket(
      request.child_relid(), type, request.completion_requested() ? kCompletionRequested : 0,
      request.transaction_id(),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()));
  if (!signalled.ok()) {
    if (signalled.status().code() == absl::StatusCode::kNotFound) {
      return absl::FailedPreconditionError(signalled.status().message());
    }
    return signalled.status();
  }
  v1::SendPacketResponse response;
  response.set_signalled(*signalled);
  return response;
}

absl::StatusOr<v1::InjectFaultResponse> MockHost::InjectFault(
    const v1::InjectFaultRequest& request) {
  if (request.fault_case() == v1::InjectFaultRequest::kRing) return InjectRingFault(request);
  absl::Status armed = Run([&](absl::Time now, Actions* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return engine_->InjectFault(request, now, out);
  });
  if (!armed.ok()) return armed;
  return v1::InjectFaultResponse();
}

namespace {

// What a ring fault does, for its FAULT_FIRED event ("ring fault: field_write", ...).
std::string DescribeRingFault(const v1::RingFault& fault) {
  switch (fault.kind_case()) {
    case v1::RingFault::kFieldWrite:
      return absl::StrCat("ring fault: write ",
                          v1::RingFault::Field_Name(fault.field_write().field()), " of ",
                          v1::RingFault::Ring_Name(fault.field_write().ring()));
    case v1::RingFault::kRawPacket:
      return absl::StrCat("ring fault: a raw packet of ", fault.raw_packet().size(), " bytes");
    case v1::RingFault::kEventStorm:
      return absl::StrCat("ring fault: an event storm of ", fault.event_storm().count(),
                          " rounds over ", fault.event_storm().relids_size(), " relids");
    case v1::RingFault::kReading:
      return absl::StrCat("ring fault: ", v1::RingFault::Reading_Name(fault.reading()));
    case v1::RingFault::KIND_NOT_SET:
      break;
  }
  return "ring fault";
}

}  // namespace

absl::StatusOr<v1::InjectFaultResponse> MockHost::InjectRingFault(
    const v1::InjectFaultRequest& request) {
  const v1::RingFault& fault = request.ring();
  if (fault.kind_case() == v1::RingFault::KIND_NOT_SET) {
    return absl::InvalidArgumentError("ring fault: no kind given");
  }
  // Under mu_, as SendPacket: the session and its data plane stay while the fault runs.
  MutexLock lock(&mu_);
  absl::StatusOr<std::string> id = engine_->ResolveGuest(request.guest());
  if (!id.ok()) return id.status();
  auto session = sessions_.find(*id);
  if (session == sessions_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(*id, " has no data plane"));
  }
  const bool storm = fault.kind_case() == v1::RingFault::kEventStorm;
  const uint32_t relid = storm ? 0 : fault.child_relid();
  if (!storm) {
    absl::StatusOr<HostEngine::ChannelSnapshot> channel = engine_->FindChannel(*id, relid);
    if (!channel.ok()) return channel.status();
    if (channel->state != HostEngine::ChannelState::kOpen) {
      return absl::FailedPreconditionError(
          absl::StrCat("relid ", relid, " of ", *id, " is not open"));
    }
  }
  absl::StatusOr<v1::RingFaultResult> result = session->second->plane->InjectRingFault(fault);
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kNotFound) {
      return absl::FailedPreconditionError(result.status().message());
    }
    return result.status();
  }
  v1::ProtocolEvent e;
  e.set_unix_nanos(absl::ToUnixNanos(absl::Now()));
  e.set_guest_id(*id);
  e.set_kind(v1::EVENT_KIND_FAULT_FIRED);
  e.set_child_relid(relid);
  e.set_detail(DescribeRingFault(fault));
  PublishEvent(std::move(e));
  v1::InjectFaultResponse response;
  *response.mutable_ring() = *std::move(result);
  return response;
}

absl::StatusOr<v1::HostSettings> MockHost::Configure(const v1::ConfigureRequest& request) {
  MutexLock lock(&mu_);
  absl::StatusOr<v1::HostSettings> s = engine_->Configure(request);
  if (s.ok()) monitor_latency_us_.store(s->monitor_latency_us(), std::memory_order_relaxed);
  return s;
}

absl::StatusOr<std::shared_ptr<WatchHub<v1::ProtocolEvent>::Subscription>> MockHost::WatchEvents(
    const v1::WatchEventsRequest& request) {
  absl::flat_hash_set<int> kinds;
  for (int kind : request.kinds()) {
    if (!v1::EventKind_IsValid(kind) || kind == v1::EVENT_KIND_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat("event kind ", kind, " is not valid"));
    }
    kinds.insert(kind);
  }
  const std::string guest = request.guest();
  const uint32_t relid = request.child_relid();
  return events_.Subscribe([this, guest, kinds, relid](const v1::ProtocolEvent& e) {
    if (!kinds.empty() && !kinds.contains(e.kind())) return false;
    if (relid != 0 && e.child_relid() != relid) return false;
    return guest.empty() || e.guest_id() == guest || NameOf(e.guest_id()) == guest;
  });
}

absl::StatusOr<std::shared_ptr<WatchHub<v1::GuestPacket>::Subscription>> MockHost::WatchPackets(
    const v1::WatchPacketsRequest& request) {
  const std::string guest = request.guest();
  const uint32_t relid = request.child_relid();
  return packets_.Subscribe([this, guest, relid](const v1::GuestPacket& p) {
    if (relid != 0 && p.child_relid() != relid) return false;
    return guest.empty() || p.guest_id() == guest || NameOf(p.guest_id()) == guest;
  });
}

void MockHost::Unwatch(const std::shared_ptr<WatchHub<v1::ProtocolEvent>::Subscription>& sub) {
  events_.Unsubscribe(sub);
}

void MockHost::Unwatch(const std::shared_ptr<WatchHub<v1::GuestPacket>::Subscription>& sub) {
  packets_.Unsubscribe(sub);
}

}  // namespace vbus::mock
