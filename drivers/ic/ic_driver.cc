#include "drivers/ic/ic_driver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vbus::ic {

IcDriver::IcDriver(std::string name, IcDriverOptions options)
    : name_(std::move(name)), options_(std::move(options)) {}

void IcDriver::Log(absl::string_view line) const {
  if (options_.log) options_.log(absl::StrCat(name_, ": ", line));
}

absl::Status IcDriver::Probe(Channel& channel) {
  channel_ = &channel;
  ChannelOpenOptions open;
  // One header page and 12 KiB of data each way.
  open.outbound_ring_pages = 4;
  open.inbound_ring_pages = 4;
  // One message per turn: the ring space of each request is given back before the next is
  // handled. The host sends its next request as soon as it has the answer, which goes out
  // from inside the callback; with a larger budget a quick host could fill the 12 KiB ring
  // with KVP messages (2.6 KiB each) the guest has handled but not yet released.
  open.drain_budget = 1;
  open.on_packet = [this](const PacketView& p) { OnPacket(p); };
  absl::Status opened = channel.Open(open, absl::Now() + options_.open_timeout);
  if (!opened.ok()) {
    Log(absl::StrCat("open failed: ", opened.ToString()));
    return opened;
  }
  std::vector<std::function<void()>> after_send;
  bool ask = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    std::vector<IcEndpoint::Output> held;
    held.swap(held_);
    for (IcEndpoint::Output& out : held) ask = SendOrQueue(std::move(out), &after_send) || ask;
  }
  if (ask) AskForRoom();
  for (auto& act : after_send) act();
  Log(absl::StrCat("channel relid ", channel.relid(), " open"));
  return absl::OkStatus();
}

void IcDriver::Remove() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
    held_.clear();
    waiting_.clear();
  }
  if (channel_ != nullptr) (void)channel_->Close(absl::Now() + absl::Seconds(5));
}

uint64_t IcDriver::send_failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return send_failures_;
}

bool IcDriver::SendOrQueue(IcEndpoint::Output out, std::vector<std::function<void()>>* after_send) {
  if (!waiting_.empty()) {  // keep the answers in order
    waiting_.push_back(std::move(out));
    return false;
  }
  SendOptions options;
  options.trans_id = out.trans_id;
  absl::Status sent = channel_->Send(out.answer, options);
  if (sent.code() == absl::StatusCode::kResourceExhausted) {
    waiting_.push_back(std::move(out));
    return true;
  }
  if (!sent.ok()) {
    ++send_failures_;
    // The host never heard the answer: do not act on it.
    Log(absl::StrCat("answer not sent: ", sent.ToString()));
    return false;
  }
  if (out.after_send) after_send->push_back(std::move(out.after_send));
  return false;
}

void IcDriver::AskForRoom() {
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (waiting_.empty()) return;
    bytes = waiting_.front().answer.size();
  }
  // Runs at once if the answer fits by now; dropped if the channel closes first.
  absl::Status asked = channel_->WhenWritable(bytes, [this] { FlushWaiting(); });
  if (!asked.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    send_failures_ += waiting_.size();
    waiting_.clear();
    Log(absl::StrCat("answers dropped: ", asked.ToString()));
  }
}

void IcDriver::FlushWaiting() {
  std::vector<std::function<void()>> after_send;
  bool ask = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::deque<IcEndpoint::Output> waiting;
    waiting.swap(waiting_);
    while (!waiting.empty() && !ask) {
      ask = SendOrQueue(std::move(waiting.front()), &after_send);
      waiting.pop_front();
    }
    for (IcEndpoint::Output& out : waiting) waiting_.push_back(std::move(out));
  }
  if (ask) AskForRoom();
  for (auto& act : after_send) act();
}

void IcDriver::OnPacket(const PacketView& packet) {
  if (packet.type() != PacketType::kDataInband) {
    Log(absl::StrCat("ignored a packet of type ", packet.raw_type()));
    return;
  }
  IcEndpoint::Output out = endpoint_.Process(packet.payload());
  out.trans_id = packet.trans_id();  // the answer carries its request's transaction id
  if (!out.note.empty()) Log(out.note);
  if (out.answer.empty()) return;
  std::vector<std::function<void()>> after_send;
  bool ask = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) {
      held_.push_back(std::move(out));
      return;
    }
    ask = SendOrQueue(std::move(out), &after_send);
  }
  if (ask) AskForRoom();
  for (auto& act : after_send) act();
}

}  // namespace vbus::ic
