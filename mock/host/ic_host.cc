#include "mock/host/ic_host.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vbus::mock {

// --- IcHostChannel ---------------------------------------------------------------------------

IcHostChannel::IcHostChannel(IcHub* hub, std::string kind, ic::MessageType type,
                             std::vector<ic::IcVersion> message_versions)
    : hub_(hub),
      kind_(std::move(kind)),
      type_(type),
      message_versions_(std::move(message_versions)) {}

IcHostChannel::~IcHostChannel() { Stop(); }

void IcHostChannel::Start(ChannelPort& port) {
  guest_id_ = port.guest_id();
  relid_ = port.relid();
  {
    MutexLock lock(&mu_);
    port_ = &port;
  }
  worker_ = std::thread(&IcHostChannel::WorkerLoop, this);
}

void IcHostChannel::Stop() {
  std::deque<std::function<void(absl::Status)>> abandoned;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    abandoned.swap(work_);
    cv_.SignalAll();
  }
  for (auto& work : abandoned) {
    work(absl::UnavailableError(absl::StrCat("the ", kind_, " channel closed")));
  }
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
  MutexLock lock(&mu_);
  port_ = nullptr;
}

void IcHostChannel::OnAnswer(absl::Span<const uint8_t> payload, uint64_t trans_id) {
  absl::StatusOr<ic::IcMessage> m = ic::ParseIcMessage(payload);
  MutexLock lock(&mu_);
  if (!m.ok() || !awaiting_ || answer_.has_value() || trans_id != request_id_) {
    ++unexpected_;
    detail_ = !m.ok() ? absl::StrCat("bad answer: ", m.status().message())
              : awaiting_ && !answer_.has_value()
                  ? absl::StrCat("an answer with transaction id ", trans_id, ", not its request's ",
                                 request_id_)
                  : std::string("an answer nobody waited for");
    return;
  }
  answer_ = IcExchange{m->header, std::vector<uint8_t>(m->body.begin(), m->body.end())};
  cv_.SignalAll();
}

absl::StatusOr<IcExchange> IcHostChannel::Exchange(std::vector<uint8_t> body,
                                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  MutexLock lock(&mu_);
  if (stopping_ || port_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("the ", kind_, " channel closed"));
  }
  const bool negotiate = !negotiated_.has_value();
  const ic::IcVersion framework = negotiate ? ic::IcVersion{} : negotiated_->framework;
  const ic::IcVersion version = negotiate ? ic::IcVersion{} : negotiated_->message;
  const std::vector<uint8_t> request =
      ic::BuildRequest(negotiate ? ic::MessageType::kNegotiate : type_, framework, version, body);
  answer_.reset();
  awaiting_ = true;
  ++request_id_;  // a fresh transaction id per request: the answer must echo it
  absl::Status sent = port_->Send(PacketType::kDataInband, 0, request_id_, request);
  // A full inbound ring: the guest has not yet released the space of the previous requests.
  // Try again every millisecond until the deadline (a device has no doorbell of its own to
  // wait on; the guest frees the space as soon as its dispatcher gets to it).
  while (sent.code() == absl::StatusCode::kResourceExhausted && !stopping_ &&
         absl::Now() < deadline) {
    cv_.AwaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Milliseconds(1)),
                          [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; });
    if (stopping_ || port_ == nullptr) break;
    sent = port_->Send(PacketType::kDataInband, 0, request_id_, request);
  }
  if (!sent.ok()) {
    awaiting_ = false;
    return sent;
  }
  cv_.AwaitWithDeadline(&mu_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || answer_.has_value();
  });
  awaiting_ = false;
  if (answer_.has_value()) {
    IcExchange out = std::move(*answer_);
    answer_.reset();
    return out;
  }
  if (stopping_) return absl::UnavailableError(absl::StrCat("the ", kind_, " channel closed"));
  return absl::DeadlineExceededError(absl::StrCat(
      "the guest did not answer the ", kind_, " request within ", absl::FormatDuration(timeout)));
}

bool IcHostChannel::Negotiate() {
  const absl::Duration timeout = absl::Milliseconds(hub_->settings().answer_timeout_ms());
  std::vector<uint8_t> body = ic::EncodeNegotiateBody(ic::kFrameworkVersions, message_versions_);
  std::string offered;
  for (const ic::IcVersion& v : message_versions_) {
    absl::StrAppend(&offered, offered.empty() ? "" : " ", ic::VersionString(v));
  }
  Publish(v1::EVENT_KIND_IC_REQUEST, absl::StrCat("negotiate: versions ", offered));
  absl::StatusOr<IcExchange> answer = Exchange(std::move(body), timeout);
  absl::StatusOr<ic::Negotiated> chosen =
      answer.ok() ? ic::ParseNegotiateReply({answer->header, answer->body})
                  : absl::StatusOr<ic::Negotiated>(answer.status());
  if (chosen.ok() &&
      (std::find(message_versions_.begin(), message_versions_.end(), chosen->message) ==
           message_versions_.end() ||
       (chosen->framework != ic::IcVersion{3, 0} && chosen->framework != ic::IcVersion{1, 0}))) {
    chosen = absl::InvalidArgumentError(
        absl::StrCat("the guest chose versions the host did not offer (framework ",
                     ic::VersionString(chosen->framework), ", message ",
                     ic::VersionString(chosen->message), ")"));
  }
  std::string detail;
  {
    MutexLock lock(&mu_);
    if (chosen.ok()) {
      ++requests_;
      negotiated_ = *chosen;
      state_ = State::kReady;
      detail = absl::StrCat("negotiated framework ", ic::VersionString(chosen->framework),
                            ", message ", ic::VersionString(chosen->message));
    } else {
      state_ = State::kFailed;
      ++failures_;
      detail_ = absl::StrCat("negotiation failed: ", chosen.status().message());
      detail = detail_;
    }
  }
  Publish(v1::EVENT_KIND_IC_ANSWER, detail);
  return chosen.ok();
}

void IcHostChannel::WorkerLoop() {
  const bool ready = Negotiate();
  if (ready) OnReady();
  while (true) {
    std::function<void(absl::Status)> work;
    {
      MutexLock lock(&mu_);
      const absl::Time due = ready ? NextTick() : absl::InfiniteFuture();
      cv_.AwaitWithDeadline(&mu_, due, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !work_.empty();
      });
      if (stopping_) return;
      if (!work_.empty()) {
        work = std::move(work_.front());
        work_.pop_front();
      }
    }
    if (work) {
      work(ready ? absl::OkStatus()
                 : absl::FailedPreconditionError(
                       absl::StrCat("the ", kind_, " channel's version negotiation failed")));
    } else if (ready && absl::Now() >= NextTick()) {
      Tick();
    }
  }
}

absl::Status IcHostChannel::Run(std::function<absl::Status(absl::Status)> work,
                                absl::Time deadline) {
  // The result travels through a shared state: a caller that gave up leaves it behind.
  struct Result {
    Notification done;
    Mutex mu;
    absl::Status status ABSL_GUARDED_BY(mu);
  };
  auto result = std::make_shared<Result>();
  {
    MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError(absl::StrCat("the ", kind_, " channel closed"));
    work_.push_back([result, work = std::move(work)](absl::Status ready) {
      absl::Status s = work(ready);
      {
        MutexLock lock(&result->mu);
        result->status = s;
      }
      result->done.Notify();
    });
    cv_.SignalAll();
  }
  if (!result->done.WaitForNotificationWithDeadline(deadline)) {
    return absl::DeadlineExceededError(
        absl::StrCat("the ", kind_, " channel did not finish the request in time"));
  }
  MutexLock lock(&result->mu);
  return result->status;
}

absl::StatusOr<IcExchange> IcHostChannel::Call(std::vector<uint8_t> body, absl::Time deadline) {
  auto answer = std::make_shared<absl::StatusOr<IcExchange>>(absl::UnknownError("not run"));
  auto answer_mu = std::make_shared<Mutex>();
  absl::Status ran = Run(
      [this, answer, answer_mu, body = std::move(body), deadline](absl::Status ready) mutable {
        if (!ready.ok()) return ready;
        absl::Duration left = deadline - absl::Now();
        if (left <= absl::ZeroDuration()) left = absl::Milliseconds(1);
        absl::StatusOr<IcExchange> got = Exchange(std::move(body), left);
        MutexLock lock(answer_mu.get());
        *answer = std::move(got);
        return answer->status();
      },
      deadline);
  if (!ran.ok()) return ran;
  MutexLock lock(answer_mu.get());
  return std::move(*answer);
}

void IcHostChannel::Count(bool ok, const std::string& problem) {
  MutexLock lock(&mu_);
  ++requests_;
  if (!ok) {
    ++failures_;
    if (!problem.empty()) detail_ = problem;
  }
}

void IcHostChannel::Publish(v1::EventKind kind, std::string detail) {
  v1::ProtocolEvent e;
  e.set_unix_nanos(absl::ToUnixNanos(absl::Now()));
  e.set_guest_id(guest_id_);
  e.set_kind(kind);
  e.set_child_relid(relid_);
  e.set_detail(absl::StrCat(kind_, ": ", detail));
  hub_->Publish(std::move(e));
}

std::optional<ic::IcVersion> IcHostChannel::message_version() const {
  MutexLock lock(&mu_);
  if (!negotiated_) return std::nullopt;
  return negotiated_->message;
}

v1::IcChannelStatus IcHostChannel::Status() const {
  v1::IcChannelStatus s;
  s.set_guest_id(guest_id_);
  s.set_child_relid(relid_);
  s.set_device(kind_);
  {
    MutexLock lock(&mu_);
    s.set_state(state_ == State::kReady    ? "ready"
                : state_ == State::kFailed ? "failed"
                                           : "negotiating");
    if (negotiated_) {
      s.set_framework_version(ic::VersionString(negotiated_->framework));
      s.set_message_version(ic::VersionString(negotiated_->message));
    }
    s.set_requests(requests_);
    s.set_failures(failures_);
    s.set_detail(detail_);
  }
  FillStatus(s);
  return s;
}

// --- IcDevice --------------------------------------------------------------------------------

absl::Status IcDevice::OnOpen(ChannelPort& port) {
  channel_->Start(port);
  hub_->Add(channel_);
  registered_ = true;
  return absl::OkStatus();
}

PacketDisposition IcDevice::OnPacket(ChannelPort&, const GuestPacketRef& packet) {
  if (packet.type == static_cast<uint16_t>(PacketType::kDataInband)) {
    channel_->OnAnswer(packet.payload, packet.trans_id);
  }
  return PacketDisposition::kConsumed;
}

void IcDevice::OnClose() {
  if (registered_) hub_->Remove(channel_.get());
  registered_ = false;
  channel_->Stop();
}

// --- IcHub -----------------------------------------------------------------------------------

v1::IcSettings DefaultIcSettings() {
  v1::IcSettings s;
  s.set_heartbeat_interval_ms(2000);
  s.set_answer_timeout_ms(5000);
  s.set_timesync_skew_ms(0);
  s.set_timesync_sample_interval_ms(5000);
  return s;
}

v1::IcSettings IcHub::settings() const {
  MutexLock lock(&mu_);
  return settings_;
}

absl::StatusOr<v1::IcSettings> IcHub::Configure(const v1::IcSettings& change) {
  if (change.has_heartbeat_interval_ms() && change.heartbeat_interval_ms() == 0) {
    return absl::InvalidArgumentError("heartbeat_interval_ms must be positive");
  }
  if (change.has_answer_timeout_ms() && change.answer_timeout_ms() == 0) {
    return absl::InvalidArgumentError("answer_timeout_ms must be positive");
  }
  MutexLock lock(&mu_);
  settings_.MergeFrom(change);
  return settings_;
}

std::shared_ptr<IcHostChannel> IcHub::Find(const std::string& guest_id,
                                           const std::string& kind) const {
  MutexLock lock(&mu_);
  std::shared_ptr<IcHostChannel> found;
  for (const auto& [key, channel] : channels_) {
    if (key.first == guest_id && channel->kind() == kind) found = channel;
  }
  return found;
}

std::vector<std::shared_ptr<IcHostChannel>> IcHub::List(const std::string& guest_id) const {
  MutexLock lock(&mu_);
  std::vector<std::shared_ptr<IcHostChannel>> out;
  for (const auto& [key, channel] : channels_) {
    if (guest_id.empty() || key.first == guest_id) out.push_back(channel);
  }
  return out;
}

void IcHub::SetPublisher(std::function<void(v1::ProtocolEvent)> publish) {
  MutexLock lock(&mu_);
  publish_ = std::move(publish);
}

void IcHub::Publish(v1::ProtocolEvent event) const {
  std::function<void(v1::ProtocolEvent)> publish;
  {
    MutexLock lock(&mu_);
    publish = publish_;
  }
  if (publish) publish(std::move(event));
}

void IcHub::Add(const std::shared_ptr<IcHostChannel>& channel) {
  MutexLock lock(&mu_);
  channels_[{channel->guest_id(), channel->relid()}] = channel;
}

void IcHub::Remove(const IcHostChannel* channel) {
  MutexLock lock(&mu_);
  auto it = channels_.find({channel->guest_id(), channel->relid()});
  if (it != channels_.end() && it->second.get() == channel) channels_.erase(it);
}

}  // namespace vbus::mock
