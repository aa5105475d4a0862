#include "core/data/guid_proto.h"

namespace vbus {

absl::StatusOr<Guid> GuidFromProto(const v1::Guid& proto) { return Guid::Parse(proto.value()); }

v1::Guid GuidToProto(const Guid& guid) {
  v1::Guid proto;
  proto.set_value(guid.ToString());
  return proto;
}

}  // namespace vbus
