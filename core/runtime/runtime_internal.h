// Internal to the bus runtime (core/runtime/bus_runtime.cc, channel*.cc, bus_executor*.cc):
// which of the runtime's own contexts the caller is in, so that blocking calls made from a
// context that must not block fail fast instead of deadlocking; and the fault points through
// which tests plant deliberate bugs in the production code to prove their checks catch them.
#ifndef VBUS_CORE_RUNTIME_RUNTIME_INTERNAL_H_
#define VBUS_CORE_RUNTIME_RUNTIME_INTERNAL_H_

#include <functional>

namespace vbus {

// PlantedFault: a deliberately broken behaviour of the runtime, planted through a FaultPoint to
// prove that the simulation's checks catch it. Never planted in production (no FaultPoint).
enum class PlantedFault {
  kSkipUnpublish,      // a retired channel stays published in the channel table
  kIgnoreInUse,        // a receive side is let go while a dispatcher still delivers to it
  kFreeHeldMemory,     // a retiring channel's GPADL memory is freed at its ReleaseGpadl
  kCompleteAbandoned,  // a call whose caller gave up is completed instead of undone
  kSkipUnmaskRecheck,  // a drain ignores packets its re-check after unmasking finds
};
// True where the fault should be planted.
using FaultPoint = std::function<bool(PlantedFault)>;

}  // namespace vbus

namespace vbus::internal {

// Depth of ChannelBus dispatch sections on this thread (> 0 inside a channel callback).
inline thread_local int dispatch_depth = 0;

inline bool InDispatch() { return dispatch_depth > 0; }

// Marks the calling thread as dispatching for its scope.
class ScopedDispatch {
 public:
  ScopedDispatch() { ++dispatch_depth; }
  ~ScopedDispatch() { --dispatch_depth; }
  ScopedDispatch(const ScopedDispatch&) = delete;
  ScopedDispatch& operator=(const ScopedDispatch&) = delete;
};

}  // namespace vbus::internal

#endif  // VBUS_CORE_RUNTIME_RUNTIME_INTERNAL_H_
