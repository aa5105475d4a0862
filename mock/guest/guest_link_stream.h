// The guest's end of the GuestLink.Connect call: the host's messages arrive as raw bytes and
// are parsed here, so that one that does not parse is a single bad message instead of the end
// of the link.
//
// Why raw bytes: gRPC's typed synchronous reader (ClientReaderWriter<W, HostToGuest>) reports
// a message that fails to parse — malformed protobuf, or a proto3 `string` field holding
// invalid UTF-8, which protobuf C++ refuses on parse — exactly like the end of the stream:
// Read returns false and the parse error is discarded, while the call stays open. A reader
// that then calls Finish waits for a status the host never sends. Reading grpc::ByteBuffer
// (whose "parse" cannot fail) keeps Read's false for the real end of the call, and lets the
// guest count, log and drop a message that does not parse and go on reading.
//
// ParseHostMessage names what did not parse — the field path and the fault:
//   "control.offer.interface_instance.value: not UTF-8"
//   "batch.messages[0]: length 5 runs past the end (1 byte left)"
//
// Example:
//   grpc::ClientContext context;
//   std::unique_ptr<GuestLinkStream> stream = OpenGuestLinkStream(channel, &context);
//   grpc::ByteBuffer bytes;
//   while (stream->Read(&bytes)) {
//     v1::HostToGuest message;
//     if (absl::Status s = ParseHostMessage(&bytes, &message); !s.ok()) { /* drop it */ }
//   }
#ifndef VBUS_MOCK_GUEST_GUEST_LINK_STREAM_H_
#define VBUS_MOCK_GUEST_GUEST_LINK_STREAM_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/sync_stream.h"
#include "mock/guest_memory.h"
#include "proto/mock_host.pb.h"

namespace vbus::mock {

// AttachMessage
// The first message of every GuestLink.Connect call: attach as `guest_name` with `memory` (its
// file, size and layout), accepting batched host messages.
v1::GuestToHost AttachMessage(const GuestMemory& memory, const std::string& guest_name);

// The GuestLink.Connect call as the guest drives it: GuestToHost out, raw bytes in.
using GuestLinkStream = grpc::ClientReaderWriterInterface<v1::GuestToHost, grpc::ByteBuffer>;

// Opens a GuestLink.Connect call on `context` (the seam through which a test hands in its own
// stream); nullptr if it cannot.
using GuestLinkOpener =
    std::function<std::unique_ptr<GuestLinkStream>(grpc::ClientContext* context)>;

// OpenGuestLinkStream
// Starts GuestLink.Connect on `channel`, which must outlive the stream.
std::unique_ptr<GuestLinkStream> OpenGuestLinkStream(grpc::ChannelInterface* channel,
                                                     grpc::ClientContext* context);

// ParseHostMessage
// Parses one stream message from the host into `message`. InvalidArgument if the bytes are not
// a valid HostToGuest: "<field path>: <fault> (<size> bytes: <the first 32, escaped>)" (see
// DescribeParseFailure; the bytes pass through vbus::HostText); then `failed_kind` (if not
// null) is the HostToGuest kind the fault lies in, KIND_NOT_SET if the bytes broke before one
// could be read.
absl::Status ParseHostMessage(grpc::ByteBuffer* bytes, v1::HostToGuest* message,
                              v1::HostToGuest::KindCase* failed_kind = nullptr);

// FlattenBytes: the bytes of `buffer` in one string (empty if it holds none).
std::string FlattenBytes(const grpc::ByteBuffer& buffer);

// DescribeParseFailure
// Walks `bytes` as a serialized `type` message and names the first fault protobuf refuses:
// "<path>: <fault>", where the path lists field names (unknown fields as "(field N)") with an
// index for repeated ones, and the fault is a truncated or malformed tag, varint, fixed value
// or length, an invalid wire type, a string that is not UTF-8, or nesting deeper than
// protobuf's limit of 100. Empty if it finds nothing. `top_field` (if not null) is set to the
// number of the top-level field the fault lies in, 0 if none.
std::string DescribeParseFailure(absl::string_view bytes, const google::protobuf::Descriptor& type,
                                 int* top_field = nullptr);

}  // namespace vbus::mock

#endif  // VBUS_MOCK_GUEST_GUEST_LINK_STREAM_H_
