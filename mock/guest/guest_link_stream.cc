#include "mock/guest/guest_link_stream.h"

#include <climits>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/data/host_text.h"
#include "google/protobuf/io/coded_stream.h"
#include "proto/mock_host.grpc.pb.h"

namespace vbus::mock {

v1::GuestToHost AttachMessage(const GuestMemory& memory, const std::string& guest_name) {
  v1::GuestToHost first;
  v1::Attach* attach = first.mutable_attach();
  attach->set_guest_name(guest_name);
  attach->set_memory_path(memory.path());
  attach->set_memory_size_bytes(memory.size_bytes());
  *attach->mutable_layout() = LayoutToProto(memory.layout());
  attach->set_accepts_batches(true);  // the reader unpacks HostToGuest.batch
  return first;
}
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::io::CodedInputStream;

// Wire types of the protobuf encoding (the low three bits of a field tag).
enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

// protobuf's default recursion limit: a message nested deeper does not parse.
constexpr int kMaxDepth = 100;
// Bytes of a message that does not parse quoted (escaped) in its Status.
constexpr size_t kPreviewBytes = 32;

// Whether `s` is UTF-8 as protobuf checks it: shortest forms only, no surrogates, at most
// U+10FFFF.
bool IsUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t lead = static_cast<uint8_t>(s[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code;
    uint32_t smallest;
    if ((lead & 0xE0) == 0xC0) {
      length = 2, code = lead & 0x1F, smallest = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, code = lead & 0x0F, smallest = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, code = lead & 0x07, smallest = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      const uint8_t next = static_cast<uint8_t>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = code << 6 | (next & 0x3F);
    }
    if (code < smallest || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

std::string Fault(const std::string& path, absl::string_view fault) {
  return path.empty() ? std::string(fault) : absl::StrCat(path, ": ", fault);
}

// Walks the fields of one message (or, with group_number != 0, of a group up to its end tag)
// in `in`, which reads `bytes`. Returns the first fault, "" if none; `top_field` (if not
// null) gets the number of the field the fault lies in.
std::string WalkFields(CodedInputStream* in, absl::string_view bytes, const Descriptor* type,
                       const std::string& path, int depth, uint32_t group_number, int* top_field) {
  if (depth > kMaxDepth) {
    return Fault(path, absl::StrCat("nested deeper than ", kMaxDepth, " messages"));
  }
  absl::flat_hash_map<uint32_t, int> occurrences;  // of each repeated field so far
  for (;;) {
    const size_t at = static_cast<size_t>(in->CurrentPosition());
    if (at == bytes.size()) {
      return group_number == 0 ? std::string() : Fault(path, "group without an end tag");
    }
    const uint32_t tag = in->ReadTag();
    const uint32_t number = tag >> 3;
    if (number == 0) return Fault(path, absl::StrCat("malformed field tag at byte ", at));
    const FieldDescriptor* field = type == nullptr ? nullptr : type->FindFieldByNumber(number);
    std::string name = field != nullptr ? field->name() : absl::StrCat("(field ", number, ")");
    if (field != nullptr && field->is_repeated()) {
      absl::StrAppend(&name, "[", occurrences[number]++, "]");
    }
    const std::string here = path.empty() ? name : absl::StrCat(path, ".", name);
    std::string fault;
    switch (tag & 7) {
      case kVarint: {
        uint64_t value;
        if (!in->ReadVarint64(&value)) fault = Fault(here, "truncated or malformed varint");
        break;
      }
      case kFixed64: {
        uint64_t value;
        if (!in->ReadLittleEndian64(&value)) fault = Fault(here, "truncated 8-byte value");
        break;
      }
      case kFixed32: {
        uint32_t value;
        if (!in->ReadLittleEndian32(&value)) fault = Fault(here, "truncated 4-byte value");
        break;
      }
      case kLengthDelimited: {
        uint32_t length;
        if (!in->ReadVarint32(&length)) {
          fault = Fault(here, "truncated or malformed length");
          break;
        }
        const size_t start = static_cast<size_t>(in->CurrentPosition());
        const size_t left = bytes.size() - start;
        if (length > left) {
          fault = Fault(here, absl::StrCat("length ", length, " runs past the end (", left,
                                           left == 1 ? " byte" : " bytes", " left)"));
          break;
        }
        const absl::string_view payload = bytes.substr(start, length);
        in->Skip(static_cast<int>(length));
        if (field == nullptr) break;
        if (field->type() == FieldDescriptor::TYPE_STRING && !IsUtf8(payload)) {
          fault = Fault(here, "not UTF-8");
        } else if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
          CodedInputStream nested(reinterpret_cast<const uint8_t*>(payload.data()),
                                  static_cast<int>(payload.size()));
          fault = WalkFields(&nested, payload, field->message_type(), here, depth + 1, 0, nullptr);
        }
        break;
      }
      case kStartGroup:
        fault = WalkFields(in, bytes, nullptr, here, depth + 1, number, nullptr);
        break;
      case kEndGroup:
        if (number == group_number) return std::string();
        fault = Fault(here, "end-group tag outside its group");
        break;
      default:
        fault = Fault(here, absl::StrCat("invalid wire type ", tag & 7));
        break;
    }
    if (!fault.empty()) {
      if (top_field != nullptr) *top_field = static_cast<int>(number);
      return fault;
    }
  }
}

}  // namespace

std::unique_ptr<GuestLinkStream> OpenGuestLinkStream(grpc::ChannelInterface* channel,
                                                     grpc::ClientContext* context) {
  // "/vbus.v1.GuestLink/Connect".
  static const std::string* const kMethod =
      new std::string(absl::StrCat("/", v1::GuestLink::service_full_name(), "/Connect"));
  // gRPC has no public synchronous generic streaming call. This is the factory the generated
  // v1::GuestLink::Stub::Connect calls, with grpc::ByteBuffer as the read type.
  return std::unique_ptr<GuestLinkStream>(
      grpc::internal::ClientReaderWriterFactory<v1::GuestToHost, grpc::ByteBuffer>::Create(
          channel,
          grpc::internal::RpcMethod(kMethod->c_str(), grpc::internal::RpcMethod::BIDI_STREAMING),
          context));
}

std::string FlattenBytes(const grpc::ByteBuffer& buffer) {
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (!buffer.Valid() || !buffer.Dump(&slices).ok()) return bytes;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

absl::Status ParseHostMessage(grpc::ByteBuffer* bytes, v1::HostToGuest* message,
                              v1::HostToGuest::KindCase* failed_kind) {
  const std::string flat = FlattenBytes(*bytes);
  if (flat.size() <= INT_MAX &&
      message->ParseFromArray(flat.data(), static_cast<int>(flat.size()))) {
    return absl::OkStatus();
  }
  message->Clear();
  int top_field = 0;
  std::string what = DescribeParseFailure(flat, *v1::HostToGuest::descriptor(), &top_field);
  if (what.empty()) what = "protobuf refused it";
  if (failed_kind != nullptr) {
    const Descriptor* type = v1::HostToGuest::descriptor();
    const FieldDescriptor* field = type->FindFieldByNumber(top_field);
    *failed_kind = field != nullptr && field->containing_oneof() == type->FindOneofByName("kind")
                       ? static_cast<v1::HostToGuest::KindCase>(top_field)
                       : v1::HostToGuest::KIND_NOT_SET;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " (", flat.size(), " bytes: ", HostText(flat, kPreviewBytes), ")"));
}

std::string DescribeParseFailure(absl::string_view bytes, const Descriptor& type, int* top_field) {
  if (top_field != nullptr) *top_field = 0;
  if (bytes.size() > INT_MAX) return "longer than protobuf's 2 GiB limit";
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  return WalkFields(&in, bytes, &type, "", 0, 0, top_field);
}

}  // namespace vbus::mock
