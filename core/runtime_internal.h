// Internal to the ChannelBus runtime (core/channel_bus.cc, core/channel.cc): which of the
// runtime's own threads the caller is on, so that blocking calls made from a context that must
// not block fail fast instead of deadlocking.
#ifndef VBUS_CORE_RUNTIME_INTERNAL_H_
#define VBUS_CORE_RUNTIME_INTERNAL_H_

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

#endif  // VBUS_CORE_RUNTIME_INTERNAL_H_
