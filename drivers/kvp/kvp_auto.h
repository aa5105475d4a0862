// The AUTO pool: facts about the guest the host reads by index (docs/integration_components.md §6).
#ifndef VBUS_DRIVERS_KVP_KVP_AUTO_H_
#define VBUS_DRIVERS_KVP_KVP_AUTO_H_

#include <string>
#include <vector>

#include "drivers/kvp/kvp_wire.h"

namespace vbus::ic {

// The AUTO pool's keys, in index order (ENUMERATE index i is kKvpAutoKeys[i]).
inline constexpr const char* kKvpAutoKeys[] = {"FullyQualifiedDomainName",
                                               "IntegrationServicesVersion",
                                               "NetworkAddressIPv4",
                                               "NetworkAddressIPv6",
                                               "OSBuildNumber",
                                               "OSName",
                                               "OSMajorVersion",
                                               "OSMinorVersion",
                                               "OSVersion",
                                               "ProcessorArchitecture"};

// The version vbus reports as IntegrationServicesVersion.
inline constexpr char kVbusIntegrationVersion[] = "vbus 1.0";

// CollectAutoPool
// The AUTO pool of this machine, one REG_SZ record per key of kKvpAutoKeys in order: the host
// name (gethostname, with its domain if the resolver configuration names one), the
// integration version, the non-loopback IPv4 and IPv6 addresses joined with ";", and from
// uname and /etc/os-release the OS name, version, build and processor architecture. A fact
// that cannot be read is an empty string.
std::vector<KvpRecord> CollectAutoPool();

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_KVP_KVP_AUTO_H_
