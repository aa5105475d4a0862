// The two hypercalls VMBus makes: HvPostMessage (a control message to a host connection) and
// HvSignalEvent (an event on a host connection), built, checked and issued through the
// platform (docs/hyperv.md §7, §8).
//
// HvPostMessage uses the memory form: its 256-byte input block lives in a per-call input page
// the caller provides (one per thread that posts at the same time, e.g. one per VP), filled
// once and passed by guest physical address. Hyper-V refuses a post for a while when the
// host's message buffers are full or it is short of memory; those statuses (and
// INVALID_CONNECTION_ID, which a host still setting up its connection returns, except where
// the caller says it is final) are retried with exponential back-off, bounded by an attempt
// count and a deadline. Everything else fails at once.
//
// HvSignalEvent uses the fast form (the 8-byte input in RDX, no memory) and is never retried:
// the hypervisor does not fail it for lack of buffers.
//
// Example (a control message, and the InitiateContact of a 5.x version):
//   PostRetryPolicy policy;
//   policy.deadline = absl::Now() + absl::Seconds(5);
//   absl::Status s = HvPostMessage(platform, input_page, connection_id, kVmbusMessageType,
//                                  encoded, policy);
//   absl::Status c = HvPostMessage(platform, input_page, kVmbusMessageConnectionIdV5,
//                                  kVmbusMessageType, contact, PostRetryPolicy::NoRetry());
//   if (absl::IsNotFound(c)) { /* INVALID_CONNECTION_ID: try the next older version */ }
//
// Thread safety: the functions are reentrant; concurrent HvPostMessage calls need distinct
// input pages.
#ifndef VBUS_HYPERV_HYPERCALLS_H_
#define VBUS_HYPERV_HYPERCALLS_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "backends/pages.h"
#include "hyperv/platform.h"

namespace vbus::hyperv {

// HypercallInputPage
// Where a memory-form hypercall's input block is written: a guest mapping and its guest
// physical address. The block must be 8-byte aligned (both addresses) and must not cross a
// 4096-byte page boundary.
struct HypercallInputPage {
  absl::Span<uint8_t> bytes;
  uint64_t gpa = 0;
};

// InputPageOf
// The whole of page `index` of `pages` as an input page.
HypercallInputPage InputPageOf(const Pages& pages, size_t index = 0);

// PostRetryPolicy
// How HvPostMessage retries a transient status. Attempt n + 1 follows attempt n after
// min(first_backoff × 2^(n-1), max_backoff), never waiting past `deadline`; after
// `max_attempts` attempts, or when the deadline has passed, the post fails with
// ResourceExhausted.
struct PostRetryPolicy {
  // 1 = no retry. Linux makes up to 100 attempts.
  int max_attempts = 100;
  absl::Duration first_backoff = absl::Microseconds(10);
  absl::Duration max_backoff = absl::Milliseconds(100);
  absl::Time deadline = absl::InfiniteFuture();
  // Whether INVALID_CONNECTION_ID is transient. False for InitiateContact, where it means the
  // host does not offer this version's connection.
  bool retry_invalid_connection_id = true;
  // The clock and the wait, injectable so that tests do not sleep. Unset: absl::Now and
  // absl::SleepFor. `wait` must not wait longer than it is asked to.
  std::function<absl::Time()> now;
  std::function<void(absl::Duration)> wait;

  // One attempt, and INVALID_CONNECTION_ID final: what an InitiateContact uses when a
  // failure should mean "try the next version".
  static PostRetryPolicy NoRetry();
};

// HvPostMessage
// Posts `payload` as a message of `message_type` on host connection `connection_id`.
// InvalidArgument, before any hypercall, for a payload over 240 bytes, a message type of 0 or
// with the top bit set, a connection id over 24 bits, an input page that is too small,
// misaligned or crosses a page, or a policy with max_attempts < 1. A transient status
// (INSUFFICIENT_MEMORY, INSUFFICIENT_BUFFERS, INVALID_CONNECTION_ID unless the policy says
// otherwise) is retried per `policy`; one that persists is ResourceExhausted:
// "HvPostMessage: HV_STATUS_INSUFFICIENT_BUFFERS (0x13) after 100 attempts". Any other
// failing status is HvStatusToStatus(status, "HvPostMessage") (tlfs.h): e.g. NotFound for
// INVALID_CONNECTION_ID when it is not retried.
absl::Status HvPostMessage(HvPlatform& platform, const HypercallInputPage& input,
                           uint32_t connection_id, uint32_t message_type,
                           absl::Span<const uint8_t> payload,
                           const PostRetryPolicy& policy = PostRetryPolicy());

// HvSignalEvent
// Signals event flag `flag_number` of host connection `connection_id` (VMBus uses flag 0),
// with the fast hypercall. InvalidArgument for a connection id over 24 bits; a failing status
// is HvStatusToStatus(status, "HvSignalEvent").
absl::Status HvSignalEvent(HvPlatform& platform, uint32_t connection_id, uint16_t flag_number = 0);

}  // namespace vbus::hyperv

#endif  // VBUS_HYPERV_HYPERCALLS_H_
