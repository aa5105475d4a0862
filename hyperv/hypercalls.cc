#include "hyperv/hypercalls.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv {

namespace {

constexpr char kPostMessage[] = "HvPostMessage";

absl::Status CheckInputPage(const HypercallInputPage& input, size_t block_bytes) {
  if (input.bytes.size() < block_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(kPostMessage, ": input page of ",
                                                   input.bytes.size(), " bytes is shorter than ",
                                                   "the ", block_bytes, "-byte input block"));
  }
  if (input.gpa % 8 != 0 || reinterpret_cast<uintptr_t>(input.bytes.data()) % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: input block at GPA 0x%X is not 8-byte aligned", kPostMessage, input.gpa));
  }
  if (input.gpa % protocol::kPageSize + block_bytes > protocol::kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %u-byte input block at GPA 0x%X crosses a page boundary", kPostMessage,
                        block_bytes, input.gpa));
  }
  return absl::OkStatus();
}

bool IsTransient(uint16_t hv_status, const PostRetryPolicy& policy) {
  switch (hv_status) {
    case kHvStatusInsufficientMemory:
    case kHvStatusInsufficientBuffers:
      return true;
    case kHvStatusInvalidConnectionId:
      return policy.retry_invalid_connection_id;
  }
  return false;
}

absl::Status Persisting(uint16_t hv_status, int attempts, absl::string_view when) {
  return absl::ResourceExhaustedError(
      absl::StrFormat("%s: %s (0x%02X) %s %d attempt%s", kPostMessage, HvStatusName(hv_status),
                      hv_status, when, attempts, attempts == 1 ? "" : "s"));
}

}  // namespace

HypercallInputPage InputPageOf(const Pages& pages, size_t index) {
  return HypercallInputPage{absl::Span<uint8_t>(pages.page(index), protocol::kPageSize),
                            pages.pfns()[index] * protocol::kPageSize};
}

PostRetryPolicy PostRetryPolicy::NoRetry() {
  PostRetryPolicy policy;
  policy.max_attempts = 1;
  policy.retry_invalid_connection_id = false;
  return policy;
}

absl::Status HvPostMessage(HvPlatform& platform, const HypercallInputPage& input,
                           uint32_t connection_id, uint32_t message_type,
                           absl::Span<const uint8_t> payload, const PostRetryPolicy& policy) {
  if (payload.size() > kMessagePayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat(kPostMessage, ": payload of ", payload.size(),
                                                   " bytes exceeds ", kMessagePayloadBytes));
  }
  if (message_type == kMessageTypeNone || (message_type & kMessageTypeHypervisorBit) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: message type 0x%X is not a guest message type (non-zero, top bit clear)", kPostMessage,
        message_type));
  }
  if ((connection_id & ~kConnectionIdMask) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: connection id 0x%X is wider than 24 bits", kPostMessage, connection_id));
  }
  if (policy.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(kPostMessage, ": max_attempts ", policy.max_attempts, " is below 1"));
  }
  if (absl::Status s = CheckInputPage(input, sizeof(HvPostMessageInput)); !s.ok()) return s;

  HvPostMessageInput block = {};
  block.connection_id = connection_id;
  block.message_type = message_type;
  block.payload_size = static_cast<uint32_t>(payload.size());
  if (!payload.empty()) std::memcpy(block.payload, payload.data(), payload.size());
  std::memcpy(input.bytes.data(), &block, sizeof(block));

  const uint64_t control = HypercallControl(kHvCallPostMessage, /*fast=*/false);
  absl::Duration backoff = policy.first_backoff;
  for (int attempt = 1;; ++attempt) {
    const uint16_t status = HypercallResultStatus(platform.Hypercall(control, input.gpa, 0));
    if (status == kHvStatusSuccess) return absl::OkStatus();
    if (!IsTransient(status, policy)) return HvStatusToStatus(status, kPostMessage);
    if (attempt >= policy.max_attempts) return Persisting(status, attempt, "after");
    const absl::Time now = policy.now ? policy.now() : absl::Now();
    if (now >= policy.deadline) return Persisting(status, attempt, "at the deadline, after");
    const absl::Duration wait = std::min(backoff, policy.deadline - now);
    if (policy.wait) {
      policy.wait(wait);
    } else {
      absl::SleepFor(wait);
    }
    backoff = std::min(backoff * 2, policy.max_backoff);
  }
}

absl::Status HvSignalEvent(HvPlatform& platform, uint32_t connection_id, uint16_t flag_number) {
  if ((connection_id & ~kConnectionIdMask) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("HvSignalEvent: connection id 0x%X is wider than 24 bits", connection_id));
  }
  const uint64_t result =
      platform.FastHypercall(HypercallControl(kHvCallSignalEvent, /*fast=*/true),
                             SignalEventFastInput(connection_id, flag_number), 0);
  return HvStatusToStatus(HypercallResultStatus(result), "HvSignalEvent");
}

}  // namespace vbus::hyperv
