// The built-in device kinds of the mock host and their class GUIDs (vbus's own GUIDs; no
// Hyper-V device uses them). An OfferSpec names a kind in its `device` field; an offer that
// leaves interface_type unset gets the kind's class GUID.
//
// The engine (mock/host/engine.h) only needs names, class GUIDs and the sub-channel limit, so
// they live here, apart from the emulators themselves (mock/host/device.h).
#ifndef VBUS_MOCK_HOST_DEVICE_KINDS_H_
#define VBUS_MOCK_HOST_DEVICE_KINDS_H_

#include <cstdint>
#include <string>

#include "absl/container/btree_map.h"
#include "core/data/guid.h"

namespace vbus::mock {

inline constexpr char kEchoKind[] = "echo";
inline constexpr char kSinkKind[] = "sink";
inline constexpr char kRawKind[] = "raw";

inline constexpr Guid kEchoDeviceClass = Guid::Literal("7a3c2e10-5b1f-4d6e-9c8a-0e1f2d3c4b5a");
inline constexpr Guid kSinkDeviceClass = Guid::Literal("7a3c2e10-5b1f-4d6e-9c8a-0e1f2d3c4b5b");
inline constexpr Guid kRawDeviceClass = Guid::Literal("7a3c2e10-5b1f-4d6e-9c8a-0e1f2d3c4b5c");

// Most sub-channels one primary may have (an OfferSpec's sub_channel_count, the count of an
// echo device's sub-channel request: mock/host/sub_channel_request.h). The mock host's choice.
inline constexpr uint32_t kMaxSubChannels = 64;

// Kind name → default class GUID, for the engine's EngineOptions::device_classes.
inline absl::btree_map<std::string, Guid> BuiltinDeviceClasses() {
  return {
      {kEchoKind, kEchoDeviceClass}, {kSinkKind, kSinkDeviceClass}, {kRawKind, kRawDeviceClass}};
}

}  // namespace vbus::mock

#endif  // VBUS_MOCK_HOST_DEVICE_KINDS_H_
