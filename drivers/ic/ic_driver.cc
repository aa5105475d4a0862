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
  open.on_packet = [this](const PacketView& p) { OnPacket(p); };
  absl::Status opened = channel.Open(open, absl::Now() + options_.open_timeout);
  if (!opened.ok()) {
    Log(absl::StrCat("open failed: ", opened.ToString()));
    return opened;
  }
  std::vector<IcEndpoint::Output> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    held.swap(held_);
    for (IcEndpoint::Output& out : held) SendAnswer(out);
  }
  for (IcEndpoint::Output& out : held) {
    if (out.after_send) out.after_send();
  }
  Log(absl::StrCat("channel relid ", channel.relid(), " open"));
  return absl::OkStatus();
}

void IcDriver::Remove() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = false;
    held_.clear();
  }
  if (channel_ != nullptr) (void)channel_->Close(absl::Now() + absl::Seconds(5));
}

uint64_t IcDriver::send_failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return send_failures_;
}

void IcDriver::SendAnswer(IcEndpoint::Output& out) {
  absl::Status sent = channel_->Send(out.answer);
  if (!sent.ok()) {
    ++send_failures_;
    out.after_send = nullptr;  // the host never heard the answer: do not act on it
    Log(absl::StrCat("answer not sent: ", sent.ToString()));
  }
}

void IcDriver::OnPacket(const PacketView& packet) {
  if (packet.type() != PacketType::kDataInband) {
    Log(absl::StrCat("ignored a packet of type ", packet.raw_type()));
    return;
  }
  IcEndpoint::Output out = endpoint_.Process(packet.payload());
  if (!out.note.empty()) Log(out.note);
  if (out.answer.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) {
      held_.push_back(std::move(out));
      return;
    }
    SendAnswer(out);
  }
  if (out.after_send) out.after_send();
}

}  // namespace vbus::ic
