#include "backends/testing/post_fault_backend.h"

#include <utility>

namespace vbus::testing {

void PostFaultBackend::FailNext(absl::string_view kind, absl::Status status, uint32_t count) {
  MutexLock lock(&mu_);
  for (uint32_t i = 0; i < count; ++i) faults_.push_back(Fault{std::string(kind), status});
}

uint64_t PostFaultBackend::failed() const {
  MutexLock lock(&mu_);
  return failed_;
}

absl::Status PostFaultBackend::PostMessage(const v1::ControlMessage& message) {
  {
    MutexLock lock(&mu_);
    const google::protobuf::FieldDescriptor* field =
        message.GetReflection()->GetOneofFieldDescriptor(
            message, v1::ControlMessage::descriptor()->FindOneofByName("message"));
    const std::string kind = field == nullptr ? "" : field->name();
    for (auto it = faults_.begin(); it != faults_.end(); ++it) {
      if (it->kind != kind) continue;
      absl::Status status = std::move(it->status);
      faults_.erase(it);
      ++failed_;
      return status;
    }
  }
  return inner_->PostMessage(message);
}

}  // namespace vbus::testing
