#include "drivers/kvp/kvp_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace vbus::ic {
namespace {

absl::Status CheckPool(uint8_t pool) {
  if (pool >= kKvpPoolCount) {
    return absl::InvalidArgumentError(absl::StrCat("KVP pool ", pool, " does not exist"));
  }
  return absl::OkStatus();
}

absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::optional<KvpRecord>> MemoryKvpStore::Get(uint8_t pool, absl::string_view key) {
  if (absl::Status s = CheckPool(pool); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  for (const KvpRecord& r : pools_[pool]) {
    if (r.key == key) return r;
  }
  return std::nullopt;
}

absl::Status MemoryKvpStore::Set(uint8_t pool, const KvpRecord& record) {
  if (absl::Status s = CheckPool(pool); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  Pools next = pools_;
  std::vector<KvpRecord>& records = next[pool];
  auto it = std::find_if(records.begin(), records.end(),
                         [&](const KvpRecord& r) { return r.key == record.key; });
  if (it != records.end()) {
    *it = record;
  } else {
    if (records.size() >= max_records_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("KVP pool ", KvpPoolName(pool), " is full (", max_records_, " records)"));
    }
    records.push_back(record);
  }
  if (absl::Status s = Commit(next); !s.ok()) return s;
  pools_ = std::move(next);
  return absl::OkStatus();
}

absl::Status MemoryKvpStore::Delete(uint8_t pool, absl::string_view key) {
  if (absl::Status s = CheckPool(pool); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  Pools next = pools_;
  std::vector<KvpRecord>& records = next[pool];
  auto it = std::find_if(records.begin(), records.end(),
                         [&](const KvpRecord& r) { return r.key == key; });
  if (it == records.end()) {
    return absl::NotFoundError(
        absl::StrCat("KVP pool ", KvpPoolName(pool), " has no key \"", absl::CEscape(key), "\""));
  }
  records.erase(it);
  if (absl::Status s = Commit(next); !s.ok()) return s;
  pools_ = std::move(next);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<KvpRecord>> MemoryKvpStore::At(uint8_t pool, uint32_t index) {
  if (absl::Status s = CheckPool(pool); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  if (index >= pools_[pool].size()) return std::nullopt;
  return pools_[pool][index];
}

std::vector<KvpRecord> MemoryKvpStore::List(uint8_t pool) {
  if (pool >= kKvpPoolCount) return {};
  std::lock_guard<std::mutex> lock(mu_);
  return pools_[pool];
}

absl::StatusOr<std::unique_ptr<FileKvpStore>> FileKvpStore::Open(std::string path,
                                                                 size_t max_records) {
  std::unique_ptr<FileKvpStore> store(new FileKvpStore(path, max_records));
  std::ifstream in(path);
  if (!in.is_open()) {
    if (errno == ENOENT) return store;
    return ErrnoStatus("cannot read the KVP store", path);
  }
  Pools pools;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    uint32_t pool = 0;
    KvpRecord r;
    std::string key;
    std::string value;
    if (fields.size() != 4 || !absl::SimpleAtoi(fields[0], &pool) || pool >= kKvpPoolCount ||
        !absl::SimpleAtoi(fields[1], &r.value_type) || !absl::CUnescape(fields[2], &r.key) ||
        !absl::CUnescape(fields[3], &r.value) || r.key.empty()) {
      return absl::DataLossError(
          absl::StrCat("KVP store ", path, " line ", number, " is not pool, type, key, value"));
    }
    if (pools[pool].size() >= max_records) {
      return absl::DataLossError(absl::StrCat("KVP store ", path, " holds more than ", max_records,
                                              " records in pool ", pool));
    }
    pools[pool].push_back(std::move(r));
  }
  store->Load(std::move(pools));
  return store;
}

absl::Status FileKvpStore::Commit(const Pools& pools) {
  std::string text;
  for (size_t pool = 0; pool < pools.size(); ++pool) {
    for (const KvpRecord& r : pools[pool]) {
      absl::StrAppend(&text, pool, "\t", r.value_type, "\t", absl::CEscape(r.key), "\t",
                      absl::CEscape(r.value), "\n");
    }
  }
  const std::string temp = absl::StrCat(path_, ".tmp");
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("cannot create", temp);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoStatus("cannot write", temp);
      ::close(fd);
      ::unlink(temp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = ErrnoStatus("cannot flush", temp);
    ::close(fd);
    ::unlink(temp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(temp.c_str(), path_.c_str()) != 0) {
    absl::Status s = ErrnoStatus("cannot replace", path_);
    ::unlink(temp.c_str());
    return s;
  }
  // The rename itself is durable once the directory is flushed.
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace vbus::ic
