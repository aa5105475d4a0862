// Trace: the demo's protocol trace — one line per event in aligned columns, time-ordered:
//
//   +0.004s  guest → host   bus                InitiateContact version=5.3 ...
//   +0.005s  host  → guest  bus                VersionResponse accepted=true ...
//   +0.312s  host  → guest  relid 1 heartbeat  beat 3
//   +0.313s  guest → host   relid 1 heartbeat  beat 4
//
// Events come from two places: the mock host's WatchEvents stream (every control message each
// way, channel opens and closes, the IC emulators' requests and the guest's answers) and the
// guest agent's own log lines. Add() collects them from any thread; Flush() prints what has
// been collected so far in time order. Colour (arrows by direction, notes dimmed, problems red)
// only when asked for — the demo asks when stdout is a terminal.
#ifndef VBUS_EXAMPLES_TRACE_H_
#define VBUS_EXAMPLES_TRACE_H_

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"

namespace vbus::examples {

enum class TraceDir {
  kGuestToHost,  // guest → host
  kHostToGuest,  // host → guest
  kGuest,        // something the guest did or noticed
  kHost,         // something the host did or noticed
  kProblem,      // an error or a missed beat
};

class Trace {
 public:
  Trace(std::FILE* out, bool colour, absl::Time start = absl::Now())
      : out_(out), colour_(colour), start_(start) {}

  // Add: one event at time `t` (thread-safe; printed by the next Flush).
  void Add(absl::Time t, TraceDir dir, std::string channel, std::string text);
  // AddHostEvent: a WatchEvents event (SIGNALS_* counts are left out: they are not events of
  // the story). Returns whether it was added.
  bool AddHostEvent(const v1::ProtocolEvent& event);
  // Flush: prints the collected events in time order.
  void Flush();
  // Section: a heading (after a Flush).
  void Section(absl::string_view title);
  // Note: a line of the demo's own, now (after a Flush).
  void Note(absl::string_view text);
  // Live: a line rewritten in place on a terminal (`final` ends it); without colour only the
  // final line is printed.
  void Live(absl::string_view text, bool final);

  // The name of a relid learned from the offers seen so far ("relid 3 heartbeat").
  std::string ChannelName(uint32_t relid);
  // Counts of host events seen by kind.
  int seen(v1::EventKind kind);

 private:
  struct Entry {
    absl::Time t;
    TraceDir dir;
    std::string channel;
    std::string text;
  };
  void Print(const Entry& e);
  std::string Describe(const v1::ControlMessage& message, uint32_t* relid);

  std::FILE* const out_;
  const bool colour_;
  const absl::Time start_;
  std::mutex mu_;
  std::vector<Entry> pending_;             // guarded by mu_
  std::map<uint32_t, std::string> kinds_;  // relid → device kind (guarded by mu_)
  std::map<int, int> seen_;                // guarded by mu_
};

// The name of a device class: "heartbeat", "echo", ... or the GUID.
std::string DeviceClassName(const std::string& guid_text);

}  // namespace vbus::examples

#endif  // VBUS_EXAMPLES_TRACE_H_
