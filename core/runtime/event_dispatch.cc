#include "core/runtime/event_dispatch.h"

#include <utility>

#include "core/runtime/runtime_internal.h"

namespace vbus {

absl::StatusOr<std::unique_ptr<EventDispatch>> EventDispatch::Create(ChannelTable* table) {
  absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table->RegisterDispatcher();
  if (!dispatcher.ok()) return dispatcher.status();
  return std::unique_ptr<EventDispatch>(new EventDispatch(*std::move(dispatcher)));
}

absl::Status EventDispatch::Attach(absl::Span<uint8_t> flags) {
  if (ready_.load(std::memory_order_relaxed)) {
    return absl::FailedPreconditionError("event dispatch: flags already attached");
  }
  absl::StatusOr<EventPage> page = EventPage::Attach(flags);
  if (!page.ok()) return page.status();
  page_.emplace(*page);
  // [ED-R1] seq_cst: the page is set before any raiser can see ready_ (pairs with [ED-R2]).
  ready_.store(true, std::memory_order_seq_cst);
  Raise();  // the start-up pass: scans what raises before this point announced
  return absl::OkStatus();
}

void EventDispatch::Raise() {
  raised_.fetch_add(1, std::memory_order_relaxed);
  // [ED-K1] seq_cst RMW: announce the work (see the header).
  pending_.exchange(true, std::memory_order_seq_cst);
  // [ED-R2] seq_cst: pairs with [ED-R1].
  if (!ready_.load(std::memory_order_seq_cst)) return;
  for (;;) {
    bool expected = false;
    // [ED-K2] seq_cst CAS (acquire on success): pairs with the previous scanner's [ED-K3].
    if (!scanning_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) return;
    {
      internal::ScopedDispatch in_dispatch;
      // [ED-K5] seq_cst exchange: take every announcement made so far.
      while (pending_.exchange(false, std::memory_order_seq_cst)) {
        passes_.fetch_add(1, std::memory_order_relaxed);
        const DispatchStats stats = dispatcher_.Dispatch(*page_);
        if (stats.delivered != 0) delivered_.fetch_add(stats.delivered, std::memory_order_relaxed);
        if (stats.requeued != 0) {
          // Channels left work for the next pass (their bits are set again): make one.
          requeued_.fetch_add(stats.requeued, std::memory_order_relaxed);
          pending_.exchange(true, std::memory_order_seq_cst);  // [ED-K1] for ourselves
        }
      }
    }
    scanning_.store(false, std::memory_order_seq_cst);      // [ED-K3]
    if (!pending_.load(std::memory_order_seq_cst)) return;  // [ED-K4]
  }
}

EventDispatchStats EventDispatch::stats() const {
  EventDispatchStats s;
  s.raised = raised_.load(std::memory_order_relaxed);
  s.passes = passes_.load(std::memory_order_relaxed);
  s.delivered = delivered_.load(std::memory_order_relaxed);
  s.requeued = requeued_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace vbus
