#include "mock/host/sub_channel_request.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vbus::mock {
namespace {

// Offsets in the payload.
constexpr size_t kCountAt = 16;           // request
constexpr size_t kStatusAt = 16;          // answer
constexpr size_t kAnswerCountAt = 20;     // answer
constexpr size_t kAnswerReservedAt = 22;  // answer

uint16_t Load16(absl::Span<const uint8_t> b, size_t at) {
  return static_cast<uint16_t>(b[at] | b[at + 1] << 8);
}
uint32_t Load32(absl::Span<const uint8_t> b, size_t at) {
  return uint32_t{Load16(b, at)} | uint32_t{Load16(b, at + 2)} << 16;
}
void Store16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v);
  b[at + 1] = static_cast<uint8_t>(v >> 8);
}
void Store32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  Store16(b, at, static_cast<uint16_t>(v));
  Store16(b, at + 2, static_cast<uint16_t>(v >> 16));
}

bool HasMagic(absl::Span<const uint8_t> payload) {
  return payload.size() >= kSubChannelMagic.size() &&
         std::equal(kSubChannelMagic.begin(), kSubChannelMagic.end(), payload.begin());
}

std::vector<uint8_t> WithMagic(size_t size) {
  std::vector<uint8_t> b(size, 0);
  std::copy(kSubChannelMagic.begin(), kSubChannelMagic.end(), b.begin());
  return b;
}

}  // namespace

std::vector<uint8_t> EncodeSubChannelRequest(uint16_t count) {
  std::vector<uint8_t> b = WithMagic(kSubChannelRequestBytes);
  Store16(b, kCountAt, count);
  return b;
}

bool IsSubChannelRequest(absl::Span<const uint8_t> payload) {
  return payload.size() >= kSubChannelRequestBytes && HasMagic(payload);
}

absl::StatusOr<uint16_t> ParseSubChannelRequest(absl::Span<const uint8_t> payload) {
  if (payload.size() < kSubChannelRequestBytes) {
    return absl::InvalidArgumentError(absl::StrCat("sub-channel request of ", payload.size(),
                                                   " bytes is too short (", kSubChannelRequestBytes,
                                                   " needed)"));
  }
  if (!HasMagic(payload)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sub-channel request without the magic \"", kSubChannelMagic, "\""));
  }
  const uint16_t count = Load16(payload, kCountAt);
  if (count == 0 || count > kMaxSubChannels) {
    return absl::InvalidArgumentError(absl::StrCat("sub-channel request for ", count,
                                                   " sub-channels; 1..", kMaxSubChannels,
                                                   " may be asked for"));
  }
  return count;
}

uint16_t RequestedCount(absl::Span<const uint8_t> payload) {
  return IsSubChannelRequest(payload) ? Load16(payload, kCountAt) : 0;
}

std::vector<uint8_t> EncodeSubChannelAnswer(uint32_t status, uint16_t count) {
  std::vector<uint8_t> b = WithMagic(kSubChannelAnswerBytes);
  Store32(b, kStatusAt, status);
  Store16(b, kAnswerCountAt, count);
  return b;
}

absl::StatusOr<SubChannelAnswer> ParseSubChannelAnswer(absl::Span<const uint8_t> payload) {
  if (payload.size() < kSubChannelAnswerBytes) {
    return absl::InvalidArgumentError(absl::StrCat("sub-channel answer of ", payload.size(),
                                                   " bytes is too short (", kSubChannelAnswerBytes,
                                                   " needed)"));
  }
  if (!HasMagic(payload)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sub-channel answer without the magic \"", kSubChannelMagic, "\""));
  }
  if (const uint16_t reserved = Load16(payload, kAnswerReservedAt); reserved != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sub-channel answer with reserved u16 ", reserved, " (must be 0)"));
  }
  SubChannelAnswer answer;
  answer.status = Load32(payload, kStatusAt);
  answer.count = Load16(payload, kAnswerCountAt);
  return answer;
}

}  // namespace vbus::mock
