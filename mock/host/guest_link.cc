// MockHost's GuestLink side: the GuestLink service, which gives each new stream a GuestStream
// reactor, and the host's handling of what arrives on a stream — the attach, control messages
// and batches, signals — and of its end.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "mock/host/guest_stream.h"
#include "mock/host/mock_host.h"
#include "mock/host/mock_host_internal.h"

namespace vbus::mock {

class GuestLinkService final : public v1::GuestLink::CallbackService {
 public:
  explicit GuestLinkService(MockHost* host) : host_(host) {}
  grpc::ServerBidiReactor<v1::GuestToHost, v1::HostToGuest>* Connect(
      grpc::CallbackServerContext* /*context*/) override {
    auto* stream = new GuestStream(host_);
    if (host_->RegisterStream(stream)) stream->StartReading();
    return stream;
  }

 private:
  MockHost* const host_;
};

std::unique_ptr<grpc::Service> NewGuestLinkService(MockHost* host) {
  return std::make_unique<GuestLinkService>(host);
}

bool MockHost::RegisterStream(GuestStream* stream) {
  MutexLock lock(&mu_);
  if (shutting_down_) {
    stream->FinishWith(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "the mock host is shutting down"));
    return false;
  }
  unattached_streams_.insert(stream);
  return true;
}

void MockHost::ForgetStream(GuestStream* stream) {
  MutexLock lock(&mu_);
  unattached_streams_.erase(stream);
  // An attached stream is always detached (and erased from stream_guest_) before it is
  // finished, and OnDone follows Finish.
}

bool MockHost::OnStreamMessage(GuestStream* stream, const v1::GuestToHost& message) {
  std::string guest_id;
  {
    MutexLock lock(&mu_);
    auto it = stream_guest_.find(stream);
    if (it != stream_guest_.end()) guest_id = it->second;
  }
  if (guest_id.empty()) return Attach(stream, message);
  if (message.has_batch()) return OnStreamBatch(guest_id, message.batch());
  absl::Status handled = Run([&](absl::Time now, Actions* out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return engine_->HandleGuestMessage(guest_id, message, now, out);
  });
  return handled.ok();  // NotFound: detached meanwhile, the stream is finishing
}

bool MockHost::OnStreamBatch(const std::string& guest_id, const v1::ControlBatch& batch) {
  std::vector<std::unique_ptr<Session>> dead;
  absl::Status handled;
  {
    MutexLock lock(&mu_);
    Actions out;
    absl::StatusOr<bool> well_formed = engine_->CheckBatch(guest_id, batch, absl::Now(), &out);
    Execute(std::move(out), &dead);  // the refusal of a malformed batch
    if (!well_formed.ok()) {
      handled = well_formed.status();
    } else if (*well_formed) {
      // One message at a time, each one's actions carried out before the next (the engine's
      // MapRings contract): exactly what the messages sent alone would do, under one lock.
      for (const v1::ControlMessage& m : batch.messages()) {
        Actions actions;
        SyncMessageEventsLocked();
        handled = engine_->HandleGuestControl(guest_id, m, absl::Now(), &actions);
        if (!handled.ok()) break;  // NotFound: detached by one of the earlier messages
        Execute(std::move(actions), &dead);
      }
    }
  }
  dead.clear();  // joins doorbell threads outside the lock
  return handled.ok();
}

void MockHost::OnStreamEnded(GuestStream* stream) {
  std::vector<std::unique_ptr<Session>> dead;
  {
    MutexLock lock(&mu_);
    auto it = stream_guest_.find(stream);
    if (it != stream_guest_.end()) {
      DetachLocked(it->second, "the guest closed its stream", grpc::Status::OK, &dead);
    } else {
      unattached_streams_.erase(stream);
      stream->FinishWith(grpc::Status::OK);
    }
  }
  dead.clear();
}

bool MockHost::Attach(GuestStream* stream, const v1::GuestToHost& message) {
  auto refuse = [&](const absl::Status& why, const std::string& name) {
    Log(absl::StrCat("attach of \"", name, "\" refused: ", why.message()));
    {
      MutexLock lock(&mu_);
      unattached_streams_.erase(stream);
    }
    stream->FinishWith(ToGrpc(why));
    return false;
  };
  if (!message.has_attach()) {
    return refuse(absl::InvalidArgumentError("the first GuestLink message must be `attach`"), "");
  }
  const v1::Attach& attach = message.attach();
  absl::StatusOr<std::unique_ptr<GuestMemory>> memory = GuestMemory::Open(
      attach.memory_path(), attach.memory_size_bytes(), LayoutFromProto(attach.layout()));
  if (!memory.ok()) return refuse(memory.status(), attach.guest_name());

  std::vector<std::unique_ptr<Session>> dead;
  absl::Status refused;
  {
    MutexLock lock(&mu_);
    if (shutting_down_) {
      refused = absl::UnavailableError("the mock host is shutting down");
    } else {
      Actions out;
      absl::StatusOr<std::string> id = engine_->Attach(attach, absl::Now(), &out);
      if (!id.ok()) {
        refused = id.status();
      } else {
        {
          MutexLock names_lock(&names_mu_);
          guest_names_[*id] = attach.guest_name();
        }
        auto session = std::make_unique<Session>();
        DataPlaneHooks hooks;
        hooks.wants_packets = [this] { return packets_.HasWatchers(); };
        hooks.on_packet = [this](v1::GuestPacket p) { packets_.Publish(std::move(p)); };
        hooks.on_event = [this](v1::ProtocolEvent e) { PublishEvent(std::move(e)); };
        // On the draining thread under the data plane's locks: queue for the doorbell thread
        // and wake it (it runs the queue after every scan; the ring matters when the drain
        // ran elsewhere, e.g. before an unmap). The session and the memory outlive the plane.
        hooks.on_sub_channel_request = [queue = session.get(), bell = memory->get()](
                                           uint32_t relid, uint16_t count) {
          {
            MutexLock lock(&queue->requests_mu);
            if (queue->sub_channel_requests.size() >= kMaxQueuedSubChannelRequests) {
              return absl::ResourceExhaustedError(
                  absl::StrCat(kMaxQueuedSubChannelRequests, " sub-channel requests are queued"));
            }
            queue->sub_channel_requests.push_back({relid, count});
          }
          bell->Ring(Doorbell::kHost);
          return absl::OkStatus();
        };
        absl::StatusOr<std::unique_ptr<GuestDataPlane>> plane =
            GuestDataPlane::Create(*id, std::move(*memory), devices_, std::move(hooks));
        if (!plane.ok()) {
          Actions ignored;
          (void)engine_->Detach(*id, "no data plane", absl::Now(), &ignored);
          refused = plane.status();
        } else {
          session->guest_id = *id;
          session->name = attach.guest_name();
          session->stream = stream;
          session->plane = std::move(*plane);
          session->doorbell = std::thread(&MockHost::DoorbellLoop, this, session.get());
          sessions_.emplace(*id, std::move(session));
          stream_guest_[stream] = *id;
          unattached_streams_.erase(stream);
          stream->SetAcceptsBatches(attach.accepts_batches());
          Execute(std::move(out), &dead);  // the Attached answer, the event
        }
      }
    }
  }
  dead.clear();
  if (!refused.ok()) return refuse(refused, attach.guest_name());
  return true;
}

}  // namespace vbus::mock
