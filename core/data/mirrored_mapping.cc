#include "core/data/mirrored_mapping.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/data/protocol.h"

namespace vbus {
namespace {

absl::Status Errno(const char* what) {
  return absl::InternalError(absl::StrCat("MirroredMapping: ", what, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<MirroredMapping> MirroredMapping::Map(int fd, uint64_t offset, size_t ring_bytes) {
  if (offset % protocol::kPageSize != 0 || ring_bytes % protocol::kPageSize != 0 ||
      ring_bytes < 2 * protocol::kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("MirroredMapping: offset ", offset, " and ", ring_bytes,
                     " ring bytes must be page multiples, the ring at least two pages"));
  }
  const size_t data_bytes = ring_bytes - protocol::kPageSize;
  const size_t size = ring_bytes + data_bytes;
  // Reserve the whole range first so the two file mappings land back to back, then replace
  // its parts (MAP_FIXED inside our own reservation cannot clobber anything else).
  void* base = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return Errno("reserving the address range");
  auto* bytes = static_cast<uint8_t*>(base);
  if (mmap(bytes, ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
           static_cast<off_t>(offset)) == MAP_FAILED) {
    absl::Status s = Errno("mapping the ring");
    munmap(base, size);
    return s;
  }
  if (mmap(bytes + ring_bytes, data_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
           static_cast<off_t>(offset + protocol::kPageSize)) == MAP_FAILED) {
    absl::Status s = Errno("mapping the data area again");
    munmap(base, size);
    return s;
  }
  return MirroredMapping(bytes, size, ring_bytes, -1);
}

absl::StatusOr<MirroredMapping> MirroredMapping::Anonymous(size_t ring_bytes) {
  const int fd = memfd_create("vbus-ring", MFD_CLOEXEC);
  if (fd < 0) return Errno("memfd_create");
  if (ftruncate(fd, static_cast<off_t>(ring_bytes)) != 0) {
    absl::Status s = Errno("sizing the memory file");
    close(fd);
    return s;
  }
  absl::StatusOr<MirroredMapping> m = Map(fd, 0, ring_bytes);
  if (!m.ok()) {
    close(fd);
    return m.status();
  }
  m->owned_fd_ = fd;
  return m;
}

MirroredMapping::MirroredMapping(MirroredMapping&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      ring_bytes_(std::exchange(other.ring_bytes_, 0)),
      owned_fd_(std::exchange(other.owned_fd_, -1)) {}

MirroredMapping& MirroredMapping::operator=(MirroredMapping&& other) noexcept {
  if (this != &other) {
    Reset();
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    ring_bytes_ = std::exchange(other.ring_bytes_, 0);
    owned_fd_ = std::exchange(other.owned_fd_, -1);
  }
  return *this;
}

MirroredMapping::~MirroredMapping() { Reset(); }

void MirroredMapping::Reset() {
  if (base_ != nullptr) munmap(base_, size_);
  if (owned_fd_ >= 0) close(owned_fd_);
  base_ = nullptr;
  size_ = 0;
  ring_bytes_ = 0;
  owned_fd_ = -1;
}

}  // namespace vbus
