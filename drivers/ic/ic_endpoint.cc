#include "drivers/ic/ic_endpoint.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace vbus::ic {

IcEndpoint::Output IcEndpoint::Fail(const IcHeader& request, std::string why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.requests;
    ++stats_.failed_answers;
  }
  Output out;
  out.answer = BuildResponse(request, ic_status::kFail, {});
  out.note = std::move(why);
  return out;
}

IcEndpoint::Output IcEndpoint::Process(absl::Span<const uint8_t> payload) {
  absl::StatusOr<IcMessage> m = ParseIcMessage(payload);
  if (!m.ok()) {
    Output out;
    if (payload.size() < kBodyOffset) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.dropped;
      out.note = absl::StrCat("dropped: ", m.status().message());
      return out;
    }
    // The headers are there, only icmsgsize lies: answer with what was received.
    IcHeader header;
    header.framework = {Load16(payload, 8), Load16(payload, 10)};
    header.type = Load16(payload, 12);
    header.version = {Load16(payload, 14), Load16(payload, 16)};
    header.transaction_id = payload[24];
    return Fail(header, absl::StrCat("refused: ", m.status().message()));
  }
  const IcHeader& h = m->header;
  if ((h.flags & kFlagResponse) != 0 || (h.flags & kFlagRequest) == 0) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.dropped;
    return {{}, nullptr, absl::StrCat("dropped: message with flags ", h.flags, " is no request")};
  }
  if (h.type == static_cast<uint16_t>(MessageType::kNegotiate)) {
    absl::StatusOr<NegotiateBody> offered = ParseNegotiateBody(m->body);
    if (!offered.ok()) {
      Output out = Fail(h, absl::StrCat("refused negotiate: ", offered.status().message()));
      out.answer = BuildResponse(h, ic_status::kFail, NegotiateReplyBody(nullptr));
      return out;
    }
    absl::StatusOr<Negotiated> chosen =
        ChooseVersions(*offered, kFrameworkVersions, service_->message_versions());
    if (!chosen.ok()) {
      Output out = Fail(h, absl::StrCat("refused negotiate: ", chosen.status().message()));
      out.answer = BuildResponse(h, ic_status::kFail, NegotiateReplyBody(nullptr));
      return out;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.requests;
      ++stats_.negotiations;
      negotiated_ = *chosen;
    }
    Output out;
    out.answer = BuildResponse(h, ic_status::kOk, NegotiateReplyBody(&*chosen));
    out.note = absl::StrCat("negotiated framework ", VersionString(chosen->framework), ", message ",
                            VersionString(chosen->message));
    return out;
  }
  if (h.type != static_cast<uint16_t>(service_->type())) {
    return Fail(h,
                absl::StrCat("refused: ", MessageTypeName(h.type), " request on the ",
                             MessageTypeName(static_cast<uint16_t>(service_->type())), " channel"));
  }
  std::optional<Negotiated> negotiated = this->negotiated();
  if (!negotiated) {
    return Fail(h, absl::StrCat("refused: ", MessageTypeName(h.type),
                                " request before the version negotiation"));
  }
  absl::StatusOr<IcAnswer> answer = service_->Handle(negotiated->message, m->body);
  if (!answer.ok()) return Fail(h, absl::StrCat("refused: ", answer.status().message()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.requests;
    if (answer->status != ic_status::kOk) ++stats_.failed_answers;
  }
  Output out;
  out.answer = BuildResponse(h, answer->status, answer->body);
  out.after_send = std::move(answer->after_send);
  out.note = std::move(answer->note);
  return out;
}

std::optional<Negotiated> IcEndpoint::negotiated() const {
  std::lock_guard<std::mutex> lock(mu_);
  return negotiated_;
}

IcStats IcEndpoint::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace vbus::ic
