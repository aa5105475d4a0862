// Strongly typed identifiers that the bus state machine hands out.
//
// - OfferId names one offer for its whole life in the guest, from the Offer message until the
//   runtime releases it. Unlike a relid it is never reused, so a stale call (a driver closing a
//   channel whose relid the host has since reused) cannot reach the wrong channel.
// - RequestId names one waiting operation (Connect, Open, Close, GpadlCreate, GpadlTeardown,
//   ModifyChannel, Unload) and the timer that bounds it; its completion carries the same id.
//
// Both are never 0 when valid; the default-constructed value is "none".
#ifndef VBUS_CORE_STATE_BUS_IDS_H_
#define VBUS_CORE_STATE_BUS_IDS_H_

#include <compare>
#include <cstdint>
#include <ostream>
#include <utility>

namespace vbus {

template <typename Tag>
class BusId {
 public:
  constexpr BusId() = default;
  constexpr explicit BusId(uint64_t value) : value_(value) {}

  constexpr uint64_t value() const { return value_; }
  constexpr bool valid() const { return value_ != 0; }

  friend constexpr bool operator==(BusId a, BusId b) = default;
  friend constexpr auto operator<=>(BusId a, BusId b) = default;
  template <typename H>
  friend H AbslHashValue(H h, BusId id) {
    return H::combine(std::move(h), id.value_);
  }
  friend std::ostream& operator<<(std::ostream& os, BusId id) { return os << id.value_; }

 private:
  uint64_t value_ = 0;
};

using OfferId = BusId<struct OfferIdTag>;
using RequestId = BusId<struct RequestIdTag>;

}  // namespace vbus

#endif  // VBUS_CORE_STATE_BUS_IDS_H_
