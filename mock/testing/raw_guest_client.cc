#include "mock/testing/raw_guest_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/data/host_text.h"

namespace vbus::mock::testing {
namespace {

// The status of a finished call; the host's message is host text.
absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), HostText(s.error_message()));
}

}  // namespace

RawGuestClient::RawGuestClient(std::unique_ptr<v1::GuestLink::Stub> stub,
                               std::unique_ptr<GuestMemory> memory)
    : stub_(std::move(stub)), memory_(std::move(memory)), pages_(*memory_) {}

absl::StatusOr<std::unique_ptr<RawGuestClient>> RawGuestClient::Attach(
    std::shared_ptr<grpc::Channel> channel, const std::string& name, uint64_t memory_bytes,
    absl::Time deadline) {
  absl::StatusOr<std::unique_ptr<GuestMemory>> memory = GuestMemory::Create("", memory_bytes);
  if (!memory.ok()) return memory.status();
  v1::GuestToHost first;
  v1::Attach* a = first.mutable_attach();
  a->set_guest_name(name);
  a->set_memory_path((*memory)->path());
  a->set_memory_size_bytes(memory_bytes);
  *a->mutable_layout() = LayoutToProto((*memory)->layout());
  return AttachWith(std::move(channel), std::move(*memory), first, deadline);
}

absl::StatusOr<std::unique_ptr<RawGuestClient>> RawGuestClient::AttachWith(
    std::shared_ptr<grpc::Channel> channel, std::unique_ptr<GuestMemory> memory,
    const v1::GuestToHost& first_message, absl::Time deadline) {
  auto client = std::unique_ptr<RawGuestClient>(
      new RawGuestClient(v1::GuestLink::NewStub(channel), std::move(memory)));
  client->stream_ = client->stub_->Connect(&client->context_);
  client->reader_ = std::thread(&RawGuestClient::ReadLoop, client.get());
  if (absl::Status s = client->SendRaw(first_message); !s.ok()) return s;
  absl::StatusOr<v1::HostToGuest> answer = client->Receive(deadline);
  if (!answer.ok()) return answer.status();
  if (!answer->has_attached()) {
    return absl::InternalError(
        absl::StrCat("expected `attached`, got ", answer->ShortDebugString()));
  }
  client->guest_id_ = answer->attached().guest_id();
  return client;
}

RawGuestClient::~RawGuestClient() {
  context_.TryCancel();
  if (reader_.joinable()) reader_.join();
}

void RawGuestClient::ReadLoop() {
  v1::HostToGuest message;
  while (stream_->Read(&message)) {
    {
      MutexLock lock(&mu_);
      inbox_.push_back(std::move(message));
    }
    cv_.SignalAll();
    message.Clear();
  }
  grpc::Status status;
  {
    MutexLock lock(&write_mu_);
    status = stream_->Finish();
    finished_ = true;
  }
  {
    MutexLock lock(&mu_);
    final_status_ = std::move(status);
  }
  cv_.SignalAll();
}

absl::Status RawGuestClient::Send(const v1::ControlMessage& message) {
  v1::GuestToHost m;
  *m.mutable_control() = message;
  return SendRaw(m);
}

absl::Status RawGuestClient::SendRaw(const v1::GuestToHost& message) {
  // Checked under write_mu_, with the write: the reader may finish the stream at any moment.
  MutexLock lock(&write_mu_);
  if (finished_) return absl::FailedPreconditionError("the GuestLink stream has ended");
  if (!stream_->Write(message)) return absl::UnavailableError("GuestLink write failed");
  return absl::OkStatus();
}

absl::StatusOr<v1::HostToGuest> RawGuestClient::Receive(absl::Time deadline) {
  MutexLock lock(&mu_);
  cv_.AwaitWithDeadline(&mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !inbox_.empty() || final_status_.has_value();
  });
  if (!inbox_.empty()) {
    v1::HostToGuest m = std::move(inbox_.front());
    inbox_.pop_front();
    return m;
  }
  if (final_status_.has_value()) {
    if (final_status_->ok()) return absl::CancelledError("the host ended the stream (OK)");
    return FromGrpc(*final_status_);
  }
  return absl::DeadlineExceededError("no message from the host before the deadline");
}

absl::StatusOr<v1::ControlMessage> RawGuestClient::ReceiveControl(absl::Time deadline) {
  absl::StatusOr<v1::HostToGuest> m = Receive(deadline);
  if (!m.ok()) return m.status();
  if (m->has_error()) {
    return absl::Status(static_cast<absl::StatusCode>(m->error().code()),
                        absl::StrCat("host ProtocolError: ", HostText(m->error().message())));
  }
  if (!m->has_control()) {
    return absl::InternalError(absl::StrCat("unexpected ", HostText(m->ShortDebugString())));
  }
  return m->control();
}

absl::StatusOr<grpc::Status> RawGuestClient::WaitForEnd(absl::Time deadline) {
  MutexLock lock(&mu_);
  if (!cv_.AwaitWithDeadline(&mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return final_status_.has_value();
      })) {
    return absl::DeadlineExceededError("the GuestLink stream is still open");
  }
  inbox_.clear();
  return *final_status_;
}

absl::StatusOr<std::vector<v1::Offer>> RawGuestClient::Connect(uint32_t version,
                                                               absl::Time deadline) {
  v1::ControlMessage contact;
  const ContactInfo info = memory_->GuestContactInfo();
  contact.mutable_initiate_contact()->set_version_requested(version);
  if (protocol::UsesReturnedConnectionId(version)) {
    contact.mutable_initiate_contact()->set_message_sint(info.message_sint);
  } else {
    contact.mutable_initiate_contact()->set_interrupt_page(info.interrupt_page_gpa);
  }
  contact.mutable_initiate_contact()->set_monitor_page1(memory_->layout().monitor_page1_pfn *
                                                        protocol::kPageSize);
  contact.mutable_initiate_contact()->set_monitor_page2(memory_->layout().monitor_page2_pfn *
                                                        protocol::kPageSize);
  if (absl::Status s = Send(contact); !s.ok()) return s;
  absl::StatusOr<v1::ControlMessage> answer = ReceiveControl(deadline);
  if (!answer.ok()) return answer.status();
  if (!answer->version_response().version_supported()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("version 0x%08x refused: %s", version, answer->ShortDebugString()));
  }
  v1::ControlMessage request;
  request.mutable_request_offers();
  if (absl::Status s = Send(request); !s.ok()) return s;
  std::vector<v1::Offer> offers;
  while (true) {
    absl::StatusOr<v1::ControlMessage> m = ReceiveControl(deadline);
    if (!m.ok()) return m.status();
    if (m->has_all_offers_delivered()) return offers;
    if (!m->has_offer()) {
      return absl::InternalError(absl::StrCat("expected an offer, got ", m->ShortDebugString()));
    }
    offers.push_back(m->offer());
  }
}

absl::StatusOr<std::unique_ptr<GuestRings>> RawGuestClient::OpenChannel(uint32_t relid,
                                                                        uint32_t outbound_pages,
                                                                        uint32_t inbound_pages,
                                                                        absl::Time deadline) {
  absl::StatusOr<std::vector<uint64_t>> pfns = pages_.Allocate(outbound_pages + inbound_pages);
  if (!pfns.ok()) return pfns.status();
  absl::StatusOr<std::unique_ptr<GuestRings>> rings =
      GuestRings::Create(*memory_, relid, *pfns, outbound_pages);
  if (!rings.ok()) return rings.status();
  const uint32_t gpadl = next_gpadl_++;

  v1::ControlMessage create;
  v1::GpadlCreate* g = create.mutable_gpadl_create();
  g->set_child_relid(relid);
  g->set_gpadl(gpadl);
  g->set_byte_count(static_cast<uint32_t>(pfns->size() * protocol::kPageSize));
  for (uint64_t pfn : *pfns) g->add_pfns(pfn);
  if (absl::Status s = Send(create); !s.ok()) return s;
  absl::StatusOr<v1::ControlMessage> created = ReceiveControl(deadline);
  if (!created.ok()) return created.status();
  if (!created->has_gpadl_created() || created->gpadl_created().gpadl() != gpadl ||
      created->gpadl_created().creation_status() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("GPADL for relid ", relid, " not created: ", created->ShortDebugString()));
  }

  v1::ControlMessage open;
  v1::OpenChannel* o = open.mutable_open_channel();
  o->set_child_relid(relid);
  o->set_open_id(relid);
  o->set_ring_buffer_gpadl(gpadl);
  o->set_downstream_ring_page_offset(outbound_pages);
  if (absl::Status s = Send(open); !s.ok()) return s;
  absl::StatusOr<v1::ControlMessage> result = ReceiveControl(deadline);
  if (!result.ok()) return result.status();
  if (!result->has_open_result() || result->open_result().child_relid() != relid ||
      result->open_result().status() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("open of relid ", relid, " refused: ", result->ShortDebugString()));
  }
  return rings;
}

}  // namespace vbus::mock::testing
