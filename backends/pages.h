// Pages: host-reachable guest memory, as page frame numbers (PFNs) plus a guest mapping.
//
// Every backend hands core memory the host can reach: ring buffers, GPADL-described buffers.
// Core needs two views of it: a guest-virtual address to read and write through, and the list
// of PFNs (guest-physical address / 4096) to describe it to the host in a GpadlCreate. `Pages`
// is that pair, as a move-only owner: destroying it (or calling Reset) returns the pages to
// whoever allocated them through the `PageReleaser` interface.
//
// The guest mapping of a `Pages` is always virtually contiguous (page_count * 4096 bytes from
// data()); its PFNs need not be consecutive (on Hyper-V they usually are not; in the mock
// host's shared-memory file they are).
//
// Lifetime rule, which callers must keep: the host may read and write the pages for as long as
// a GPADL describing them is live. Free pages only after the GPADL is torn down (core's bus
// state machine says so with its ReleaseGpadl action), never when an operation merely fails or
// times out.
//
// Example:
//   absl::StatusOr<Pages> rings = backend.AllocatePages(8);
//   if (!rings.ok()) return rings.status();
//   std::memset(rings->data(), 0, rings->size_bytes());  // already zero; just an example
//   v1::GpadlCreate msg;
//   for (uint64_t pfn : rings->pfns()) msg.add_pfns(pfn);
#ifndef VBUS_BACKENDS_PAGES_H_
#define VBUS_BACKENDS_PAGES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/data/protocol.h"  // protocol::kPageSize: GPADLs, rings and PFNs count 4096-byte pages

namespace vbus {

// PageReleaser
// Implemented by whatever hands out `Pages` (a backend, a PagePool). ReleasePages is called
// exactly once per non-empty `Pages`, from the thread that destroys or resets it, with the
// same data pointer and PFNs the allocation had. It must not fail; it may be called from any
// thread, so implementations synchronise internally.
class PageReleaser {
 public:
  virtual void ReleasePages(uint8_t* data, absl::Span<const uint64_t> pfns) = 0;

 protected:
  ~PageReleaser() = default;
};

// Pages
// Owns an allocation of whole pages. Move-only; an empty (default-constructed or moved-from)
// Pages owns nothing. Not thread-safe: one owner at a time; the memory itself is shared with
// the host and its contents follow whatever protocol lives in it.
class Pages {
 public:
  Pages() = default;
  // Adopts an allocation: `data` maps pfns.size() pages contiguously. `releaser` gets them
  // back on destruction; it must outlive this object. Intended for allocators only.
  Pages(uint8_t* data, std::vector<uint64_t> pfns, PageReleaser* releaser)
      : data_(data), pfns_(std::move(pfns)), releaser_(releaser) {}

  Pages(Pages&& other) noexcept
      : data_(other.data_), pfns_(std::move(other.pfns_)), releaser_(other.releaser_) {
    other.data_ = nullptr;
    other.pfns_.clear();
    other.releaser_ = nullptr;
  }
  Pages& operator=(Pages&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = other.data_;
      pfns_ = std::move(other.pfns_);
      releaser_ = other.releaser_;
      other.data_ = nullptr;
      other.pfns_.clear();
      other.releaser_ = nullptr;
    }
    return *this;
  }
  Pages(const Pages&) = delete;
  Pages& operator=(const Pages&) = delete;
  ~Pages() { Reset(); }

  // Reset
  // Returns the pages to their releaser now; afterwards this object is empty.
  void Reset() {
    if (releaser_ != nullptr && !pfns_.empty()) releaser_->ReleasePages(data_, pfns_);
    data_ = nullptr;
    pfns_.clear();
    releaser_ = nullptr;
  }

  bool empty() const { return pfns_.empty(); }
  size_t page_count() const { return pfns_.size(); }
  size_t size_bytes() const { return pfns_.size() * protocol::kPageSize; }
  // Guest mapping of the first page; nullptr when empty.
  uint8_t* data() const { return data_; }
  // Guest mapping of page `index` (< page_count()).
  uint8_t* page(size_t index) const { return data_ + index * protocol::kPageSize; }
  // The whole allocation as bytes.
  absl::Span<uint8_t> bytes() const { return absl::Span<uint8_t>(data_, size_bytes()); }
  // PFN of each page, in mapping order.
  absl::Span<const uint64_t> pfns() const { return pfns_; }

 private:
  uint8_t* data_ = nullptr;
  std::vector<uint64_t> pfns_;
  PageReleaser* releaser_ = nullptr;
};

}  // namespace vbus

#endif  // VBUS_BACKENDS_PAGES_H_
