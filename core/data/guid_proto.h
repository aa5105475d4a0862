// Conversions between vbus::Guid and the protocol's vbus.v1.Guid message (canonical text).
#ifndef VBUS_CORE_DATA_GUID_PROTO_H_
#define VBUS_CORE_DATA_GUID_PROTO_H_

#include "absl/status/statusor.h"
#include "core/data/guid.h"
#include "proto/control.pb.h"

namespace vbus {

// GuidFromProto
// Parses the message's canonical text; InvalidArgument (naming the text) if malformed. An
// unset message has empty text and is rejected too: protocol GUIDs are never optional.
absl::StatusOr<Guid> GuidFromProto(const v1::Guid& proto);

// GuidToProto
// The canonical lowercase text form.
v1::Guid GuidToProto(const Guid& guid);

}  // namespace vbus

#endif  // VBUS_CORE_DATA_GUID_PROTO_H_
