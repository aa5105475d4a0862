// Device class GUIDs of the Hyper-V synthetic devices that vbus knows by name. A channel
// offer's interface_type is one of these (or a vendor's own class).
#ifndef VBUS_CORE_DATA_DEVICE_CLASSES_H_
#define VBUS_CORE_DATA_DEVICE_CLASSES_H_

#include "core/data/guid.h"

namespace vbus::device_class {

// Integration components (drivers/).
inline constexpr Guid kHeartbeat = Guid::Literal("57164f39-9115-4e78-ab55-382f3bd5422d");
inline constexpr Guid kShutdown = Guid::Literal("0e0b6031-5213-4934-818b-38d90ced39db");
inline constexpr Guid kTimeSync = Guid::Literal("9527e630-d0ae-497b-adce-e80ab0175caf");
inline constexpr Guid kKvp = Guid::Literal("a9a0f4e7-5a45-4d96-b827-8a841e8c03e6");
inline constexpr Guid kVss = Guid::Literal("35fa2e29-ea23-4236-96ae-3a6ebacba440");
inline constexpr Guid kFileCopy = Guid::Literal("34d14be3-dee4-41c8-9ae7-6b174977c192");

// Storage, network and other synthetic devices.
inline constexpr Guid kNetwork = Guid::Literal("f8615163-df3e-46c5-913f-f2d2f965ed0e");
inline constexpr Guid kScsi = Guid::Literal("ba6163d9-04a1-4d29-b605-72e2ffb1dc7f");
inline constexpr Guid kIde = Guid::Literal("32412632-86cb-44a2-9b5c-50d1417354f5");
inline constexpr Guid kKeyboard = Guid::Literal("f912ad6d-2b17-48ea-bd65-f927a61c7684");
inline constexpr Guid kMouse = Guid::Literal("cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a");
inline constexpr Guid kPciPassthrough = Guid::Literal("44c4f61d-4444-4400-9d52-802e27ede19f");
inline constexpr Guid kBalloon = Guid::Literal("525074dc-8985-46e2-8057-a307dc18a502");
inline constexpr Guid kSyntheticVideo = Guid::Literal("da0a7802-e377-4aac-8e77-0558eb1073f8");

}  // namespace vbus::device_class

#endif  // VBUS_CORE_DATA_DEVICE_CLASSES_H_
