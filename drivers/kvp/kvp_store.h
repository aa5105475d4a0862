// KvpStore: where a guest keeps its KVP pools (docs/integration_components.md §6). The KvpDriver
// reads and writes it for the host's requests; the agent may read it too.
//
// Two stores ship: MemoryKvpStore (the default; gone with the process) and FileKvpStore,
// which keeps every pool in one file that survives restarts. The file is rewritten whole on
// each change, atomically: written to a temporary file beside it, flushed to disk, renamed
// over the old one (and the directory flushed), so a crash leaves the old or the new
// contents, never a mix.
//
// Records keep their insertion order within a pool (ENUMERATE's indexes follow it); SET of an
// existing key replaces its value in place.
//
// Thread safety: every method may be called from any thread.
#ifndef VBUS_DRIVERS_KVP_KVP_STORE_H_
#define VBUS_DRIVERS_KVP_KVP_STORE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "drivers/kvp/kvp_wire.h"

namespace vbus::ic {

class KvpStore {
 public:
  virtual ~KvpStore() = default;
  // The record with `key` in `pool`, or nullopt. InvalidArgument for a pool out of range.
  virtual absl::StatusOr<std::optional<KvpRecord>> Get(uint8_t pool, absl::string_view key) = 0;
  // Adds or replaces. ResourceExhausted when the pool is full; Internal/Unavailable from a
  // store that could not persist it (the change is then not made).
  virtual absl::Status Set(uint8_t pool, const KvpRecord& record) = 0;
  // NotFound if the key is not in the pool.
  virtual absl::Status Delete(uint8_t pool, absl::string_view key) = 0;
  // The record at `index` in insertion order, or nullopt past the end.
  virtual absl::StatusOr<std::optional<KvpRecord>> At(uint8_t pool, uint32_t index) = 0;
  // Every record of a pool, in order.
  virtual std::vector<KvpRecord> List(uint8_t pool) = 0;
};

// MemoryKvpStore: pools in memory, at most `max_records` per pool.
class MemoryKvpStore : public KvpStore {
 public:
  explicit MemoryKvpStore(size_t max_records = 1024) : max_records_(max_records) {}

  absl::StatusOr<std::optional<KvpRecord>> Get(uint8_t pool, absl::string_view key) override;
  absl::Status Set(uint8_t pool, const KvpRecord& record) override;
  absl::Status Delete(uint8_t pool, absl::string_view key) override;
  absl::StatusOr<std::optional<KvpRecord>> At(uint8_t pool, uint32_t index) override;
  std::vector<KvpRecord> List(uint8_t pool) override;

 protected:
  using Pools = std::array<std::vector<KvpRecord>, kKvpPoolCount>;
  // Called with the pools as they would be after a change, under the store's lock; an error
  // refuses the change. The memory store accepts every change.
  virtual absl::Status Commit(const Pools& pools) {
    (void)pools;
    return absl::OkStatus();
  }
  // Replaces the pools (loading); under no lock, before the store is shared.
  void Load(Pools pools) { pools_ = std::move(pools); }

 private:
  const size_t max_records_;
  std::mutex mu_;
  Pools pools_;
};

// FileKvpStore: a MemoryKvpStore persisted to one file (one line per record: pool, value
// type, key and value, C-escaped and tab-separated).
class FileKvpStore final : public MemoryKvpStore {
 public:
  // Open
  // Loads `path` if it exists (NotFound is not an error: the store starts empty). DataLoss
  // naming the line for a file that does not parse; the error of the read otherwise.
  static absl::StatusOr<std::unique_ptr<FileKvpStore>> Open(std::string path,
                                                            size_t max_records = 1024);
  const std::string& path() const { return path_; }

 private:
  FileKvpStore(std::string path, size_t max_records)
      : MemoryKvpStore(max_records), path_(std::move(path)) {}
  absl::Status Commit(const Pools& pools) override;

  const std::string path_;
};

}  // namespace vbus::ic

#endif  // VBUS_DRIVERS_KVP_KVP_STORE_H_
