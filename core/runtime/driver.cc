#include "core/runtime/driver.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/runtime/channel.h"

namespace vbus {

absl::Status Driver::Suspend(Channel& channel, absl::Time deadline) {
  return channel.Close(deadline);  // OK at once if it is closed already
}

absl::Status Driver::Resume(Channel& channel, absl::Time deadline) {
  if (!channel.open_at_suspend()) return absl::OkStatus();
  return channel.Reopen(deadline);
}

absl::Status DriverRegistry::Register(DriverSpec spec) {
  if (spec.name.empty()) return absl::InvalidArgumentError("driver registration: empty name");
  if (spec.device_class.IsNil()) {
    return absl::InvalidArgumentError(
        absl::StrCat("driver registration of ", spec.name, ": nil device class"));
  }
  if (!spec.factory) {
    return absl::InvalidArgumentError(
        absl::StrCat("driver registration of ", spec.name, ": no factory"));
  }
  MutexLock lock(&mu_);
  auto it = by_class_.find(spec.device_class);
  if (it != by_class_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("driver registration of ", spec.name,
                                                 ": device class ", spec.device_class.ToString(),
                                                 " is already driven by ", it->second->name));
  }
  const Guid key = spec.device_class;
  by_class_.emplace(key, std::make_unique<DriverSpec>(std::move(spec)));
  return absl::OkStatus();
}

const DriverSpec* DriverRegistry::Match(const OfferInfo& offer) const {
  if (offer.is_sub_channel()) return nullptr;
  return Find(offer.interface_type);
}

const DriverSpec* DriverRegistry::Find(const Guid& device_class) const {
  MutexLock lock(&mu_);
  auto it = by_class_.find(device_class);
  return it == by_class_.end() ? nullptr : it->second.get();
}

std::vector<std::string> DriverRegistry::Names() const {
  MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [cls, spec] : by_class_) names.push_back(spec->name);
  return names;
}

absl::string_view BindingName(Binding binding) {
  switch (binding) {
    case Binding::kUnmatched:
      return "unmatched";
    case Binding::kMatched:
      return "matched";
    case Binding::kBound:
      return "bound";
    case Binding::kProbeFailed:
      return "probe_failed";
    case Binding::kSubChannel:
      return "sub_channel";
  }
  return "unknown";
}

const DriverSpec* DeviceList::Add(const OfferInfo& offer) {
  if (entries_.contains(offer.id)) return nullptr;
  Entry& e = entries_[offer.id];
  e.info.offer = offer;
  if (offer.is_sub_channel()) {
    e.info.binding = Binding::kSubChannel;
    return nullptr;
  }
  const DriverSpec* spec = registry_->Match(offer);
  if (spec == nullptr) {
    e.info.binding = Binding::kUnmatched;
    return nullptr;
  }
  e.info.binding = Binding::kMatched;
  e.info.driver = spec->name;
  return spec;
}

absl::Status DeviceList::Bind(OfferId offer, std::unique_ptr<Driver> driver) {
  auto it = entries_.find(offer);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("bind: offer ", offer.value(), " is not listed"));
  }
  Entry& e = it->second;
  if (e.info.binding != Binding::kMatched) {
    return absl::FailedPreconditionError(absl::StrCat("bind: offer ", offer.value(), " (relid ",
                                                      e.info.offer.relid, ") is ",
                                                      BindingName(e.info.binding)));
  }
  if (driver == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("bind: null driver for offer ", offer.value()));
  }
  e.driver = std::move(driver);
  e.info.binding = Binding::kBound;
  return absl::OkStatus();
}

absl::Status DeviceList::ProbeFailed(OfferId offer, absl::Status error) {
  auto it = entries_.find(offer);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("probe failure: offer ", offer.value(), " is not listed"));
  }
  Entry& e = it->second;
  if (e.info.binding != Binding::kMatched) {
    return absl::FailedPreconditionError(
        absl::StrCat("probe failure: offer ", offer.value(), " is ", BindingName(e.info.binding)));
  }
  e.info.binding = Binding::kProbeFailed;
  e.info.probe_error = std::move(error);
  return absl::OkStatus();
}

std::unique_ptr<Driver> DeviceList::Remove(OfferId offer) {
  auto it = entries_.find(offer);
  if (it == entries_.end()) return nullptr;
  std::unique_ptr<Driver> driver = std::move(it->second.driver);
  entries_.erase(it);
  return driver;
}

std::vector<std::pair<OfferInfo, const DriverSpec*>> DeviceList::Unbound() {
  std::vector<std::pair<OfferInfo, const DriverSpec*>> result;
  for (auto& [id, e] : entries_) {
    if (e.info.binding == Binding::kUnmatched) {
      if (const DriverSpec* spec = registry_->Match(e.info.offer); spec != nullptr) {
        e.info.binding = Binding::kMatched;
        e.info.driver = spec->name;
      }
    }
    if (e.info.binding == Binding::kMatched) {
      result.emplace_back(e.info.offer, registry_->Match(e.info.offer));
    }
  }
  return result;
}

void DeviceList::Update(const OfferInfo& offer) {
  auto it = entries_.find(offer.id);
  if (it != entries_.end()) it->second.info.offer = offer;
}

Driver* DeviceList::driver(OfferId offer) const {
  auto it = entries_.find(offer);
  return it == entries_.end() ? nullptr : it->second.driver.get();
}

std::vector<DeviceEntry> DeviceList::List() const {
  std::vector<DeviceEntry> list;
  for (const auto& [id, e] : entries_) list.push_back(e.info);
  std::sort(list.begin(), list.end(), [](const DeviceEntry& a, const DeviceEntry& b) {
    return a.offer.relid < b.offer.relid;
  });
  return list;
}

}  // namespace vbus
