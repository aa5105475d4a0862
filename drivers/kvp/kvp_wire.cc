#include "drivers/kvp/kvp_wire.h"

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "drivers/ic/ic_wire.h"

namespace vbus::ic {

std::string KvpOperationName(uint8_t op) {
  switch (static_cast<KvpOperation>(op)) {
    case KvpOperation::kGet:
      return "get";
    case KvpOperation::kSet:
      return "set";
    case KvpOperation::kDelete:
      return "delete";
    case KvpOperation::kEnumerate:
      return "enumerate";
    case KvpOperation::kGetIpInfo:
      return "get-ip-info";
    case KvpOperation::kSetIpInfo:
      return "set-ip-info";
  }
  return absl::StrCat("operation ", op);
}

std::string KvpPoolName(uint8_t pool) {
  switch (pool) {
    case kKvpPoolExternal:
      return "external";
    case kKvpPoolGuest:
      return "guest";
    case kKvpPoolAuto:
      return "auto";
    case kKvpPoolAutoExternal:
      return "auto-external";
    case kKvpPoolAutoInternal:
      return "auto-internal";
  }
  return absl::StrCat("pool ", pool);
}

absl::StatusOr<std::string> Utf16ToUtf8(absl::Span<const uint8_t> bytes) {
  if (bytes.size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("UTF-16 string of odd size ", bytes.size()));
  }
  size_t units = bytes.size() / 2;
  if (units == 0 || Load16(bytes, 2 * (units - 1)) != 0) {
    return absl::InvalidArgumentError("UTF-16 string without its NUL");
  }
  while (units > 0 && Load16(bytes, 2 * (units - 1)) == 0) --units;
  std::string out;
  for (size_t i = 0; i < units; ++i) {
    uint32_t c = Load16(bytes, 2 * i);
    if (c == 0) return absl::InvalidArgumentError("UTF-16 string with a NUL inside");
    if (c >= 0xD800 && c <= 0xDBFF) {
      if (i + 1 >= units) return absl::InvalidArgumentError("UTF-16 string ends in a surrogate");
      const uint32_t low = Load16(bytes, 2 * (i + 1));
      if (low < 0xDC00 || low > 0xDFFF) {
        return absl::InvalidArgumentError("UTF-16 high surrogate without its low surrogate");
      }
      c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
      ++i;
    } else if (c >= 0xDC00 && c <= 0xDFFF) {
      return absl::InvalidArgumentError("UTF-16 low surrogate without its high surrogate");
    }
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | c >> 6));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | c >> 12));
      out.push_back(static_cast<char>(0x80 | (c >> 6 & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | c >> 18));
      out.push_back(static_cast<char>(0x80 | (c >> 12 & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c >> 6 & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> Utf8ToUtf16(absl::string_view text, size_t max_chars) {
  std::vector<uint16_t> units;
  for (size_t i = 0; i < text.size();) {
    const uint8_t b = static_cast<uint8_t>(text[i]);
    uint32_t c;
    size_t n;
    if (b < 0x80) {
      c = b;
      n = 1;
    } else if ((b & 0xE0) == 0xC0) {
      c = b & 0x1F;
      n = 2;
    } else if ((b & 0xF0) == 0xE0) {
      c = b & 0x0F;
      n = 3;
    } else if ((b & 0xF8) == 0xF0) {
      c = b & 0x07;
      n = 4;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 byte at ", i));
    }
    if (i + n > text.size()) return absl::InvalidArgumentError("truncated UTF-8 sequence");
    for (size_t k = 1; k < n; ++k) {
      const uint8_t cont = static_cast<uint8_t>(text[i + k]);
      if ((cont & 0xC0) != 0x80) {
        return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 byte at ", i + k));
      }
      c = c << 6 | (cont & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < kMin[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF) || c == 0) {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 sequence at ", i));
    }
    if (c >= 0x10000) {
      units.push_back(static_cast<uint16_t>(0xD800 + ((c - 0x10000) >> 10)));
      units.push_back(static_cast<uint16_t>(0xDC00 + ((c - 0x10000) & 0x3FF)));
    } else {
      units.push_back(static_cast<uint16_t>(c));
    }
    i += n;
  }
  if (units.size() > max_chars) {
    return absl::InvalidArgumentError(
        absl::StrCat("string of ", units.size(), " UTF-16 characters exceeds ", max_chars));
  }
  units.push_back(0);
  std::vector<uint8_t> out(units.size() * 2);
  for (size_t i = 0; i < units.size(); ++i) Store16(absl::MakeSpan(out), 2 * i, units[i]);
  return out;
}

namespace {

// The key at `key_at` with its byte size at `size_at`.
absl::StatusOr<std::string> ReadKey(absl::Span<const uint8_t> body, size_t size_at, size_t key_at) {
  const uint32_t size = Load32(body, size_at);
  if (size > kKvpKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP key_size ", size, " exceeds ", kKvpKeyBytes));
  }
  absl::StatusOr<std::string> key = Utf16ToUtf8(body.subspan(key_at, size));
  if (!key.ok())
    return absl::InvalidArgumentError(absl::StrCat("KVP key: ", key.status().message()));
  if (key->empty()) return absl::InvalidArgumentError("KVP key is empty");
  return key;
}

// The value block at `at`.
absl::StatusOr<KvpRecord> ReadBlock(absl::Span<const uint8_t> body, size_t at, bool with_value) {
  KvpRecord r;
  r.value_type = Load32(body, at);
  absl::StatusOr<std::string> key = ReadKey(body, at + 4, at + 12);
  if (!key.ok()) return key.status();
  r.key = std::move(*key);
  if (!with_value) return r;
  const uint32_t size = Load32(body, at + 8);
  if (size > kKvpValueBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP value_size ", size, " exceeds ", kKvpValueBytes));
  }
  absl::Span<const uint8_t> value = body.subspan(at + 12 + kKvpKeyBytes, size);
  switch (r.value_type) {
    case kKvpString: {
      absl::StatusOr<std::string> text = Utf16ToUtf8(value);
      if (!text.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("KVP value: ", text.status().message()));
      }
      r.value = std::move(*text);
      return r;
    }
    case kKvpU32:
      if (size != 4) {
        return absl::InvalidArgumentError(absl::StrCat("KVP REG_U32 value of ", size, " bytes"));
      }
      r.value = absl::StrCat(Load32(value, 0));
      return r;
    case kKvpU64:
    case kKvpU64Alt:
      if (size != 8) {
        return absl::InvalidArgumentError(absl::StrCat("KVP REG_U64 value of ", size, " bytes"));
      }
      r.value = absl::StrCat(Load64(value, 0));
      return r;
  }
  return absl::InvalidArgumentError(absl::StrCat("KVP value_type ", r.value_type, " is unknown"));
}

absl::Status WriteKey(absl::Span<uint8_t> body, size_t size_at, size_t key_at,
                      absl::string_view key) {
  absl::StatusOr<std::vector<uint8_t>> k = Utf8ToUtf16(key, kKvpMaxKeyChars);
  if (!k.ok()) return absl::InvalidArgumentError(absl::StrCat("KVP key: ", k.status().message()));
  std::memset(body.data() + key_at, 0, kKvpKeyBytes);
  std::memcpy(body.data() + key_at, k->data(), k->size());
  Store32(body, size_at, static_cast<uint32_t>(k->size()));
  return absl::OkStatus();
}

absl::Status WriteBlock(absl::Span<uint8_t> body, size_t at, const KvpRecord& r) {
  if (absl::Status s = WriteKey(body, at + 4, at + 12, r.key); !s.ok()) return s;
  std::vector<uint8_t> value;
  switch (r.value_type) {
    case kKvpString: {
      absl::StatusOr<std::vector<uint8_t>> v = Utf8ToUtf16(r.value, kKvpMaxValueChars);
      if (!v.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("KVP value: ", v.status().message()));
      }
      value = std::move(*v);
      break;
    }
    case kKvpU32: {
      uint32_t n;
      if (!absl::SimpleAtoi(r.value, &n)) {
        return absl::InvalidArgumentError(
            absl::StrCat("KVP REG_U32 value \"", r.value, "\" is not a 32-bit number"));
      }
      value.resize(4);
      Store32(absl::MakeSpan(value), 0, n);
      break;
    }
    case kKvpU64:
    case kKvpU64Alt: {
      uint64_t n;
      if (!absl::SimpleAtoi(r.value, &n)) {
        return absl::InvalidArgumentError(
            absl::StrCat("KVP REG_U64 value \"", r.value, "\" is not a 64-bit number"));
      }
      value.resize(8);
      Store64(absl::MakeSpan(value), 0, n);
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("KVP value_type ", r.value_type, " is unknown"));
  }
  Store32(body, at, r.value_type);
  Store32(body, at + 8, static_cast<uint32_t>(value.size()));
  std::memset(body.data() + at + 12 + kKvpKeyBytes, 0, kKvpValueBytes);
  std::memcpy(body.data() + at + 12 + kKvpKeyBytes, value.data(), value.size());
  return absl::OkStatus();
}

size_t BodySizeOf(uint8_t operation) {
  switch (static_cast<KvpOperation>(operation)) {
    case KvpOperation::kGet:
    case KvpOperation::kSet:
      return kKvpGetSetBody;
    case KvpOperation::kEnumerate:
      return kKvpEnumerateBody;
    case KvpOperation::kDelete:
      return kKvpDeleteBody;
    default:
      return 0;
  }
}

}  // namespace

absl::StatusOr<KvpRequest> ParseKvpRequest(absl::Span<const uint8_t> body) {
  if (body.size() < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP body of ", body.size(), " bytes lacks its 4-byte header"));
  }
  KvpRequest r;
  r.operation = body[0];
  r.pool = body[1];
  const size_t needed = BodySizeOf(r.operation);
  if (needed == 0) {
    return absl::UnimplementedError(
        absl::StrCat("KVP ", KvpOperationName(r.operation), " is not supported"));
  }
  if (body.size() < needed) {
    return absl::InvalidArgumentError(absl::StrCat("KVP ", KvpOperationName(r.operation),
                                                   " body of ", body.size(),
                                                   " bytes is shorter than ", needed));
  }
  switch (static_cast<KvpOperation>(r.operation)) {
    case KvpOperation::kGet:
    case KvpOperation::kSet: {
      const bool is_set = r.operation == static_cast<uint8_t>(KvpOperation::kSet);
      absl::StatusOr<KvpRecord> record = ReadBlock(body, kKvpBlockAt, is_set);
      if (!record.ok()) return record.status();
      r.record = std::move(*record);
      return r;
    }
    case KvpOperation::kEnumerate:
      r.index = Load32(body, kKvpEnumIndexAt);
      return r;
    case KvpOperation::kDelete: {
      absl::StatusOr<std::string> key = ReadKey(body, 4, kKvpDeleteKeyAt);
      if (!key.ok()) return key.status();
      r.record.key = std::move(*key);
      return r;
    }
    default:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat("KVP ", KvpOperationName(r.operation), " is not supported"));
}

absl::StatusOr<std::vector<uint8_t>> EncodeKvpRequest(const KvpRequest& request) {
  const size_t size = BodySizeOf(request.operation);
  if (size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP ", KvpOperationName(request.operation), " cannot be encoded"));
  }
  std::vector<uint8_t> out(size, 0);
  absl::Span<uint8_t> b = absl::MakeSpan(out);
  b[0] = request.operation;
  b[1] = request.pool;
  switch (static_cast<KvpOperation>(request.operation)) {
    case KvpOperation::kGet: {
      // GET carries the key; the value is the guest's to fill.
      absl::Status s = WriteKey(b, kKvpBlockAt + 4, kKvpBlockAt + 12, request.record.key);
      if (!s.ok()) return s;
      Store32(b, kKvpBlockAt, request.record.value_type);
      break;
    }
    case KvpOperation::kSet:
      if (absl::Status s = WriteBlock(b, kKvpBlockAt, request.record); !s.ok()) return s;
      break;
    case KvpOperation::kEnumerate:
      Store32(b, kKvpEnumIndexAt, request.index);
      break;
    case KvpOperation::kDelete:
      if (absl::Status s = WriteKey(b, 4, kKvpDeleteKeyAt, request.record.key); !s.ok()) return s;
      break;
    default:
      break;
  }
  return out;
}

absl::Status FillKvpAnswer(uint8_t operation, absl::Span<uint8_t> body, const KvpRecord& record) {
  const bool enumerate = operation == static_cast<uint8_t>(KvpOperation::kEnumerate);
  if (!enumerate && operation != static_cast<uint8_t>(KvpOperation::kGet)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP ", KvpOperationName(operation), " answers carry no record"));
  }
  const size_t needed = BodySizeOf(operation);
  if (body.size() < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP answer body of ", body.size(), " bytes is shorter than ", needed));
  }
  return WriteBlock(body, enumerate ? kKvpEnumBlockAt : kKvpBlockAt, record);
}

absl::StatusOr<KvpRecord> ParseKvpAnswer(uint8_t operation, absl::Span<const uint8_t> body) {
  const bool enumerate = operation == static_cast<uint8_t>(KvpOperation::kEnumerate);
  if (!enumerate && operation != static_cast<uint8_t>(KvpOperation::kGet)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP ", KvpOperationName(operation), " answers carry no record"));
  }
  const size_t needed = BodySizeOf(operation);
  if (body.size() < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("KVP answer body of ", body.size(), " bytes is shorter than ", needed));
  }
  return ReadBlock(body, enumerate ? kKvpEnumBlockAt : kKvpBlockAt, true);
}

}  // namespace vbus::ic
