#include "drivers/kvp/kvp.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/data/host_text.h"
#include "drivers/kvp/kvp_auto.h"

namespace vbus::ic {

KvpDriver::KvpDriver(KvpDriverOptions options)
    : IcDriver("kvp", options.ic),
      store_(options.store ? std::move(options.store) : std::make_shared<MemoryKvpStore>()),
      auto_pool_(options.auto_pool.empty() ? CollectAutoPool() : std::move(options.auto_pool)) {}

absl::StatusOr<IcAnswer> KvpDriver::Handle(IcVersion, absl::Span<const uint8_t> body) {
  IcAnswer answer;
  answer.body.assign(body.begin(), body.end());
  absl::StatusOr<KvpRequest> request = ParseKvpRequest(body);
  if (!request.ok()) {
    if (request.status().code() != absl::StatusCode::kUnimplemented) return request.status();
    answer.status = ic_status::kFail;
    answer.note = absl::StrCat("refused: ", request.status().message());
    return answer;
  }
  const KvpRequest& r = *request;
  const std::string what = absl::StrCat(KvpOperationName(r.operation), " ", KvpPoolName(r.pool));
  const std::string key = HostText(r.record.key, 80);
  if (r.pool >= kKvpPoolAutoInternal) {
    answer.status = ic_status::kInvalidArgument;
    answer.note = absl::StrCat("refused ", what, ": not a pool the host may use");
    return answer;
  }
  const bool auto_pool = r.pool == kKvpPoolAuto;
  switch (static_cast<KvpOperation>(r.operation)) {
    case KvpOperation::kGet: {
      std::optional<KvpRecord> found;
      if (auto_pool) {
        for (const KvpRecord& a : auto_pool_) {
          if (a.key == r.record.key) found = a;
        }
      } else {
        absl::StatusOr<std::optional<KvpRecord>> got = store_->Get(r.pool, r.record.key);
        if (got.ok()) found = *got;
      }
      if (!found) {
        answer.status = ic_status::kFail;
        answer.note = absl::StrCat(what, " ", key, ": no such key");
        return answer;
      }
      if (absl::Status s = FillKvpAnswer(r.operation, absl::MakeSpan(answer.body), *found);
          !s.ok()) {
        answer.status = ic_status::kFail;
        answer.note = absl::StrCat(what, " ", key, ": ", s.message());
        return answer;
      }
      answer.note = absl::StrCat(what, " ", key, " = ", HostText(found->value, 80));
      return answer;
    }
    case KvpOperation::kSet:
    case KvpOperation::kDelete: {
      const bool set = r.operation == static_cast<uint8_t>(KvpOperation::kSet);
      if (auto_pool) {
        answer.status = ic_status::kFail;
        answer.note = absl::StrCat("refused ", what, ": the auto pool is read-only");
        return answer;
      }
      absl::Status s = set ? store_->Set(r.pool, r.record) : store_->Delete(r.pool, r.record.key);
      if (!s.ok()) {
        answer.status = s.code() == absl::StatusCode::kResourceExhausted ? ic_status::kDiskFull
                                                                         : ic_status::kFail;
        answer.note = absl::StrCat(what, " ", key, " failed: ", s.message());
        return answer;
      }
      answer.note = set ? absl::StrCat(what, " ", key, " = ", HostText(r.record.value, 80))
                        : absl::StrCat(what, " ", key);
      return answer;
    }
    case KvpOperation::kEnumerate: {
      std::optional<KvpRecord> found;
      if (auto_pool) {
        if (r.index < auto_pool_.size()) found = auto_pool_[r.index];
      } else {
        absl::StatusOr<std::optional<KvpRecord>> got = store_->At(r.pool, r.index);
        if (got.ok()) found = *got;
      }
      if (!found) {
        answer.status = ic_status::kNoMoreItems;
        answer.note = absl::StrCat(what, " #", r.index, ": no more items");
        return answer;
      }
      if (absl::Status s = FillKvpAnswer(r.operation, absl::MakeSpan(answer.body), *found);
          !s.ok()) {
        answer.status = ic_status::kFail;
        answer.note = absl::StrCat(what, " #", r.index, ": ", s.message());
        return answer;
      }
      answer.note = absl::StrCat(what, " #", r.index, " ", HostText(found->key, 80));
      return answer;
    }
    default:
      break;
  }
  answer.status = ic_status::kFail;
  answer.note = absl::StrCat("refused ", what);
  return answer;
}

}  // namespace vbus::ic
