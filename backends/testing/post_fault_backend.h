// PostFaultBackend (testonly): a Backend that forwards everything to another one, except that
// chosen posts fail the way a real backend reports them.
//
// A Hyper-V backend reports ResourceExhausted when the host's message buffers stay full through
// its retries, and InvalidArgument for a message it cannot encode; the mock backend never
// does either. Tests put this between the bus and any backend to drive those paths against a
// real host, e.g. the mock host over MockBackend:
//
//   PostFaultBackend faults(mock_backend.get());
//   ChannelBus::Create(&faults, options);
//   faults.FailNext("open_channel", absl::ResourceExhaustedError("host buffers full"));
//   // the next OpenChannel never reaches the host and PostMessage returns that status
//
// Thread safety: every method may be called from any thread.
#ifndef VBUS_BACKENDS_TESTING_POST_FAULT_BACKEND_H_
#define VBUS_BACKENDS_TESTING_POST_FAULT_BACKEND_H_

#include <cstdint>
#include <deque>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "backends/backend.h"
#include "core/runtime/sync.h"

namespace vbus::testing {

class PostFaultBackend final : public Backend {
 public:
  // `inner` must outlive this object.
  explicit PostFaultBackend(Backend* inner) : inner_(inner) {}

  // FailNext
  // The next `count` posts of messages of kind `kind` (the ControlMessage field name, e.g.
  // "gpadl_create", "open_channel", "close_channel") return `status` and are not forwarded.
  // Faults queue up in the order armed; each applies to the first matching post after it.
  void FailNext(absl::string_view kind, absl::Status status, uint32_t count = 1);
  // How many posts failed so far.
  uint64_t failed() const;

  absl::Status Start(BackendListener* listener) override { return inner_->Start(listener); }
  void Stop() override { inner_->Stop(); }
  ContactInfo contact_info() const override { return inner_->contact_info(); }
  absl::Status PostMessage(const v1::ControlMessage& message) override;
  void SetConnection(const NegotiatedConnection& connection) override {
    inner_->SetConnection(connection);
  }
  void PauseDelivery() override { inner_->PauseDelivery(); }
  void ResumeDelivery() override { inner_->ResumeDelivery(); }
  absl::Status SignalHost(const ChannelSignal& signal) override {
    return inner_->SignalHost(signal);
  }
  uint32_t vp_count() const override { return inner_->vp_count(); }
  absl::Span<uint8_t> ReceiveEventFlags(uint32_t vp) override {
    return inner_->ReceiveEventFlags(vp);
  }
  absl::StatusOr<Pages> AllocatePages(size_t count, PageSharing sharing) override {
    return inner_->AllocatePages(count, sharing);
  }

 private:
  struct Fault {
    std::string kind;
    absl::Status status;
  };
  Backend* const inner_;
  mutable Mutex mu_;
  std::deque<Fault> faults_ ABSL_GUARDED_BY(mu_);
  uint64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace vbus::testing

#endif  // VBUS_BACKENDS_TESTING_POST_FAULT_BACKEND_H_
