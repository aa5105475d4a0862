// KvpDriver: the guest's side of the KVP exchange (docs/integration_components.md §6). The host
// reads and writes the guest's pools one request at a time: GET, SET, DELETE and ENUMERATE on the
// EXTERNAL, GUEST and AUTO_EXTERNAL pools, kept in a KvpStore (in memory by default, or a
// FileKvpStore that survives restarts), and GET / ENUMERATE on the AUTO pool, whose facts
// about the guest (host name, OS, addresses, integration version) the driver fills itself.
//
// Answers: S_OK; E_FAIL for a missing key, a write to the read-only AUTO pool or a malformed
// request; S_CONT (no more items) for ENUMERATE past the end; INVALIDARG for a pool the host
// may not touch (AUTO_INTERNAL, unknown pools); DISK_FULL when the store is full; E_FAIL for
// the IP operations, which vbus does not serve.
#ifndef VBUS_DRIVERS_KVP_KVP_H_
#define VBUS_DRIVERS_KVP_KVP_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "drivers/ic/ic_driver.h"
#include "drivers/kvp/kvp_store.h"
#include "drivers/kvp/kvp_wire.h"

namespace vbus::ic {

// KVP message versions, in preference order.
inline constexpr IcVersion kKvpVersions[] = {{4, 0}, {3, 0}, {1, 0}};

struct KvpDriverOptions {
  IcDriverOptions ic;
  // The pools the host reads and writes; shared with the agent. Null = a MemoryKvpStore.
  std::shared_ptr<KvpStore> store;
  // The AUTO pool, in index order. Empty = CollectAutoPool() at construction.
  std::vector<KvpRecord> auto_pool;
};

class KvpDriver final : public IcDriver {
 public:
  explicit KvpDriver(KvpDriverOptions options = {});

  KvpStore& store() { return *store_; }

  // IcService
  MessageType type() const override { return MessageType::kKvpExchange; }
  absl::Span<const IcVersion> message_versions() const override { return kKvpVersions; }
  absl::StatusOr<IcAnswer> Handle(IcVersion version, absl::Span<const uint8_t> body) override;

 private:
  std::shared_ptr<KvpStore> store_;
  std::vector<KvpRecord> auto_pool_;
};

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_KVP_KVP_H_
