// libFuzzer target: the event page scan and dispatch through a channel table, over an
// arbitrary initial bitmap (a hostile peer may set any bit, bit 0 included) and a script of
// Set and scan operations, checked against a std::bitset model: Set reports exactly the
// 0 → 1 transitions and rejects relid 0 and relids >= 2048; a scan visits exactly the model's
// set bits except bit 0, once each, in ascending order, and leaves the page clear; dispatch
// delivers published relids to their target and counts the rest as spurious.
//
// Input: bytes 0-255 the initial bitmap (zero-padded), then 2-byte little-endian operations:
// bit 15 set → scan (bit 14: through the channel table), else Set(value & 0xFFF).
#include <bitset>
#include <cstring>
#include <vector>

#include "core/data/channel_table.h"
#include "core/data/event_page.h"
#include "test/fuzz/fuzz_check.h"

namespace vbus::fuzz {
namespace {

// Relids whose slot holds a target (the others are spurious when signalled).
bool Published(uint32_t relid) { return relid % 5 == 2; }

class CountingTarget : public EventTarget {
 public:
  bool OnEvent(uint32_t relid) override {
    last = relid, ++count;
    return false;
  }
  uint32_t last = 0;
  uint64_t count = 0;
};

void Run(const uint8_t* data, size_t size) {
  alignas(8) uint8_t memory[EventPage::kBytes] = {};
  std::memcpy(memory, data, std::min(size, EventPage::kBytes));
  absl::StatusOr<EventPage> page = EventPage::Attach(absl::MakeSpan(memory));
  FUZZ_CHECK(page.ok());
  std::bitset<protocol::kRelidCount> model;
  for (uint32_t bit = 0; bit < protocol::kRelidCount; ++bit)
    model[bit] = (memory[bit / 8] >> (bit % 8)) & 1;

  // One table for the whole run (built once: publishing 409 targets per input would dominate
  // the fuzzer's time). Checks compare target counts before and after each dispatch.
  static ChannelTable* const table = new ChannelTable();
  static std::vector<CountingTarget>& targets = *[] {
    auto* t = new std::vector<CountingTarget>(protocol::kRelidCount);
    for (uint32_t relid = 1; relid < protocol::kRelidCount; ++relid) {
      if (Published(relid)) FUZZ_CHECK(table->Publish(relid, &(*t)[relid]).ok());
    }
    return t;
  }();
  {
    absl::StatusOr<ChannelTable::Dispatcher> dispatcher = table->RegisterDispatcher();
    FUZZ_CHECK(dispatcher.ok());
    auto scan = [&](bool through_table) {
      std::vector<uint32_t> expected;
      for (size_t bit = model._Find_next(0); bit < protocol::kRelidCount;
           bit = model._Find_next(bit)) {
        expected.push_back(static_cast<uint32_t>(bit));
      }
      if (through_table) {
        std::vector<uint64_t> before;
        for (uint32_t r : expected) before.push_back(targets[r].count);
        const DispatchStats stats = dispatcher->Dispatch(*page);
        uint32_t published = 0;
        for (size_t i = 0; i < expected.size(); ++i) {
          const uint32_t r = expected[i];
          if (Published(r)) {
            ++published;
            FUZZ_CHECK(targets[r].count == before[i] + 1 && targets[r].last == r);
          }
        }
        FUZZ_CHECK(stats.delivered == published);
        FUZZ_CHECK(stats.spurious == expected.size() - published);
      } else {
        std::vector<uint32_t> seen;
        const size_t n = page->Scan([&](uint32_t relid) { seen.push_back(relid); });
        FUZZ_CHECK(n == seen.size() && seen == expected);
      }
      model.reset();
      for (uint8_t b : memory) FUZZ_CHECK(b == 0);
    };
    for (size_t pos = EventPage::kBytes; pos + 2 <= size; pos += 2) {
      const uint16_t op = static_cast<uint16_t>(data[pos] | data[pos + 1] << 8);
      if (op & 0x8000) {
        scan((op & 0x4000) != 0);
        continue;
      }
      const uint32_t relid = op & 0xFFF;
      absl::StatusOr<bool> was_clear = page->Set(relid);
      if (relid == 0 || relid >= protocol::kRelidCount) {
        FUZZ_CHECK(was_clear.status().code() == absl::StatusCode::kInvalidArgument);
        continue;
      }
      FUZZ_CHECK(was_clear.ok() && *was_clear == !model[relid]);
      model[relid] = true;
    }
    scan(true);
  }
  // Every published target is still there, and nobody is inside a dispatch section.
  FUZZ_CHECK(table->Lookup(2) == &targets[2]);
  FUZZ_CHECK(table->WaitForQuiescence(absl::InfinitePast()).ok());
}

}  // namespace
}  // namespace vbus::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vbus::fuzz::Run(data, size);
  return 0;
}
