// The GPADL half of the binary VMBus codec (hyperv/wire.h): a GpadlCreate split into one
// GPADL_HEADER and GPADL_BODY messages, those parts decoded, and the GpadlReassembler that
// joins them (docs/protocol.md §6, docs/wire.md §1, §2).
#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/protocol.h"
#include "hyperv/wire.h"
#include "hyperv/wire_internal.h"

namespace vbus::hyperv {
namespace wire_internal {
namespace {

// Offsets (docs/wire.md §1): the header's range starts at 20 (byte_count, byte_offset),
// its first PFN at 28; a body's PFNs start at 16.
constexpr size_t kHeaderRangeAt = kGpadlHeaderFixedBytes;
constexpr size_t kHeaderFirstPfnAt = protocol::kGpadlHeaderFirstPfnOffset;
constexpr size_t kBodyFirstPfnAt = protocol::kGpadlBodyFirstPfnOffset;
static_assert(kHeaderFirstPfnAt == kHeaderRangeAt + protocol::kGpadlRangeHeaderBytes);
static_assert(kBodyFirstPfnAt == kGpadlBodyFixedBytes);

// The PFN count of a part from its length past `first_pfn_at`: a whole, non-zero number.
absl::StatusOr<size_t> PfnsIn(const WireCopy& in, WireType t, size_t first_pfn_at) {
  const size_t rest = in.size() - first_pfn_at;  // callers checked in.size() >= first_pfn_at
  if (rest == 0 || rest % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(WireTypeName(static_cast<uint32_t>(t)), " of ", in.size(), " bytes carries ",
                     rest, " bytes of PFNs; that is not a whole, non-zero number of PFNs"));
  }
  return rest / 8;
}

}  // namespace

absl::StatusOr<uint32_t> GpadlRangePages(uint32_t byte_offset, uint32_t byte_count) {
  if (byte_offset >= protocol::kPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL range byte_offset ", byte_offset,
                                                   " is not inside its first page (below ",
                                                   protocol::kPageSize, ")"));
  }
  if (byte_count == 0) return absl::InvalidArgumentError("GPADL range byte_count is 0");
  const uint64_t pages =
      (uint64_t{byte_offset} + byte_count + protocol::kPageSize - 1) / protocol::kPageSize;
  if (pages > protocol::kMaxGpadlPages) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPADL range of ", byte_count, " bytes at offset ", byte_offset, " covers ",
                     pages, " pages; at most ", protocol::kMaxGpadlPages, " fit one GPADL"));
  }
  return static_cast<uint32_t>(pages);
}

absl::StatusOr<std::vector<WireMessage>> EncodeGpadlCreate(const v1::GpadlCreate& m) {
  constexpr WireType t = WireType::kGpadlHeader;
  if (absl::Status s = CheckRelid(t, "child_relid", m.child_relid()); !s.ok()) return s;
  if (absl::Status s = CheckGpadlHandle(t, m.gpadl()); !s.ok()) return s;
  absl::StatusOr<uint32_t> pages = GpadlRangePages(m.byte_offset(), m.byte_count());
  if (!pages.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL_HEADER: ", pages.status().message()));
  }
  const size_t n = static_cast<size_t>(m.pfns_size());
  if (n != *pages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GPADL_HEADER: gpadl ", m.gpadl(), " lists ", n, " PFNs but its range (", m.byte_count(),
        " bytes at offset ", m.byte_offset(), ") covers ", *pages, " pages"));
  }
  std::vector<WireMessage> out;
  out.reserve(protocol::GpadlMessageCount(n));
  const size_t in_header = std::min(n, protocol::kMaxGpadlHeaderPfns);
  WireWriter header(t, kHeaderFirstPfnAt + 8 * in_header);
  header.U32(8, m.child_relid());
  header.U32(12, m.gpadl());
  header.U16(16, static_cast<uint16_t>(protocol::kGpadlRangeHeaderBytes + 8 * n));  // <= 65528
  header.U16(18, 1);                                                                // one range
  header.U32(kHeaderRangeAt, m.byte_count());
  header.U32(kHeaderRangeAt + 4, m.byte_offset());
  for (size_t i = 0; i < in_header; ++i) header.U64(kHeaderFirstPfnAt + 8 * i, m.pfns(i));
  out.push_back(header.Take());
  for (size_t next = in_header; next < n;) {
    const size_t count = std::min(n - next, protocol::kMaxGpadlBodyPfns);
    WireWriter body(WireType::kGpadlBody, kBodyFirstPfnAt + 8 * count);
    body.U32(8, 0);  // msgnumber: left 0, as Linux does
    body.U32(12, m.gpadl());
    for (size_t i = 0; i < count; ++i) body.U64(kBodyFirstPfnAt + 8 * i, m.pfns(next + i));
    out.push_back(body.Take());
    next += count;
  }
  return out;
}

absl::StatusOr<GpadlHeaderPart> DecodeGpadlHeader(const WireCopy& in) {
  constexpr WireType t = WireType::kGpadlHeader;
  GpadlHeaderPart part;
  part.child_relid = in.U32(8);
  part.gpadl = in.U32(12);
  const uint16_t range_buflen = in.U16(16);
  const uint16_t range_count = in.U16(18);
  if (absl::Status s = CheckRelid(t, "child_relid", part.child_relid); !s.ok()) return s;
  if (absl::Status s = CheckGpadlHandle(t, part.gpadl); !s.ok()) return s;
  if (range_count != 1) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL_HEADER: rangecount ", range_count,
                                                   "; a GPADL is exactly one range of pages"));
  }
  if (in.size() < kHeaderFirstPfnAt) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL_HEADER of ", in.size(),
                                                   " bytes ends inside its range header (",
                                                   kHeaderFirstPfnAt, " bytes needed)"));
  }
  part.byte_count = in.U32(kHeaderRangeAt);
  part.byte_offset = in.U32(kHeaderRangeAt + 4);
  absl::StatusOr<uint32_t> pages = GpadlRangePages(part.byte_offset, part.byte_count);
  if (!pages.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("GPADL_HEADER: ", pages.status().message()));
  }
  if (range_buflen != protocol::kGpadlRangeHeaderBytes + 8 * size_t{*pages}) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GPADL_HEADER: range_buflen ", range_buflen, " does not match a range of ", *pages,
        " pages (", protocol::kGpadlRangeHeaderBytes + 8 * size_t{*pages}, ")"));
  }
  absl::StatusOr<size_t> count = PfnsIn(in, t, kHeaderFirstPfnAt);
  if (!count.ok()) return count.status();
  if (*count > *pages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GPADL_HEADER carries ", *count, " PFNs, more than its range's ", *pages, " pages"));
  }
  part.total_pfns = *pages;
  part.pfns.reserve(*count);
  for (size_t i = 0; i < *count; ++i) part.pfns.push_back(in.U64(kHeaderFirstPfnAt + 8 * i));
  return part;
}

absl::StatusOr<GpadlBodyPart> DecodeGpadlBody(const WireCopy& in) {
  constexpr WireType t = WireType::kGpadlBody;
  GpadlBodyPart part;
  part.message_number = in.U32(8);
  part.gpadl = in.U32(12);
  if (absl::Status s = CheckGpadlHandle(t, part.gpadl); !s.ok()) return s;
  absl::StatusOr<size_t> count = PfnsIn(in, t, kBodyFirstPfnAt);
  if (!count.ok()) return count.status();
  part.pfns.reserve(*count);
  for (size_t i = 0; i < *count; ++i) part.pfns.push_back(in.U64(kBodyFirstPfnAt + 8 * i));
  return part;
}

}  // namespace wire_internal

// ---- GpadlReassembler ---------------------------------------------------------------------

absl::StatusOr<std::optional<v1::GpadlCreate>> GpadlReassembler::Add(GpadlHeaderPart part) {
  if (pending_.contains(part.gpadl)) {
    Erase(part.gpadl);
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPADL_HEADER for gpadl 0x%x, which is already being assembled (both dropped)",
        part.gpadl));
  }
  v1::GpadlCreate m;
  m.set_child_relid(part.child_relid);
  m.set_gpadl(part.gpadl);
  m.set_byte_count(part.byte_count);
  m.set_byte_offset(part.byte_offset);
  if (part.pfns.size() >= part.total_pfns) {  // DecodeMessage guarantees <=: complete at once
    m.mutable_pfns()->Add(part.pfns.begin(), part.pfns.end());
    return std::optional<v1::GpadlCreate>(std::move(m));
  }
  if (pending_.size() >= limits_.max_pending_gpadls) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("GPADL_HEADER for gpadl 0x%x: %d GPADLs are already being assembled",
                        part.gpadl, pending_.size()));
  }
  if (pending_pfns_ + part.total_pfns > limits_.max_pending_pfns) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "GPADL_HEADER for gpadl 0x%x of %d pages: the GPADLs being assembled already hold %d of "
        "at most %d",
        part.gpadl, part.total_pfns, pending_pfns_, limits_.max_pending_pfns));
  }
  m.mutable_pfns()->Reserve(static_cast<int>(part.total_pfns));
  m.mutable_pfns()->Add(part.pfns.begin(), part.pfns.end());
  pending_pfns_ += part.total_pfns;
  pending_.emplace(part.gpadl, Pending{std::move(m), part.total_pfns});
  return std::optional<v1::GpadlCreate>();
}

absl::StatusOr<std::optional<v1::GpadlCreate>> GpadlReassembler::Add(GpadlBodyPart part) {
  auto it = pending_.find(part.gpadl);
  if (it == pending_.end()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPADL_BODY for gpadl 0x%x, which has no GPADL_HEADER in assembly", part.gpadl));
  }
  Pending& p = it->second;
  const uint32_t total = p.total_pfns;
  const size_t remaining = total - static_cast<size_t>(p.message.pfns_size());
  if (part.pfns.size() > remaining) {
    Erase(part.gpadl);  // `p` dangles from here on
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPADL_BODY for gpadl 0x%x carries %d PFNs, but only %d of its %d remain (dropped)",
        part.gpadl, part.pfns.size(), remaining, total));
  }
  p.message.mutable_pfns()->Add(part.pfns.begin(), part.pfns.end());
  if (part.pfns.size() < remaining) return std::optional<v1::GpadlCreate>();
  v1::GpadlCreate done = std::move(p.message);
  Erase(part.gpadl);
  return std::optional<v1::GpadlCreate>(std::move(done));
}

void GpadlReassembler::Forget(uint32_t gpadl) { Erase(gpadl); }

void GpadlReassembler::Clear() {
  pending_.clear();
  pending_pfns_ = 0;
}

void GpadlReassembler::Erase(uint32_t gpadl) {
  auto it = pending_.find(gpadl);
  if (it == pending_.end()) return;
  pending_pfns_ -= it->second.total_pfns;
  pending_.erase(it);
}

}  // namespace vbus::hyperv
