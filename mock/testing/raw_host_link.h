// RawHostLink: a GuestLink server for tests that writes raw bytes to the guest — frames that
// are not valid HostToGuest messages (malformed protobuf, invalid UTF-8 in a string field)
// beside ordinary ones — so that a test can check how a guest copes with a host whose
// messages do not parse. It serves GuestLink.Connect with gRPC's raw (ByteBuffer) callback
// API and parses the guest's messages itself.
//
// Each stream follows one RawHostScript: it waits for the guest's first message (its attach),
// writes `after_attach` in order, then answers every later guest message with
// `answer(message)`; with `end` set it instead finishes the stream with that status as soon as
// `after_attach` is written. The stream ends when the guest goes away.
//
// Example:
//   RawHostScript script;
//   script.after_attach = {RawFrame(AttachedMessage("guest-1")), std::string("\x12\x7f", 2)};
//   absl::StatusOr<std::unique_ptr<RawHostLink>> link = RawHostLink::Start(script);
//   auto backend = MockBackend::Connect((*link)->InProcessChannel(), options);
//
// Thread-safe.
#ifndef VBUS_MOCK_TESTING_RAW_HOST_LINK_H_
#define VBUS_MOCK_TESTING_RAW_HOST_LINK_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/runtime/sync.h"
#include "grpcpp/grpcpp.h"
#include "proto/mock_host.grpc.pb.h"

namespace vbus::mock {

// What each stream of a RawHostLink writes (every frame is the exact bytes of one message).
struct RawHostScript {
  std::vector<std::string> after_attach;
  std::function<std::vector<std::string>(const v1::GuestToHost&)> answer;
  std::optional<grpc::Status> end;
};

// The bytes of `message`, as a host that sends it would write them.
std::string RawFrame(const v1::HostToGuest& message);
// `frame` with the first occurrence of `marker` overwritten by `bytes` (same length): puts
// bytes that a serializer would refuse (e.g. invalid UTF-8) into a string field.
std::string OverwriteInFrame(std::string frame, absl::string_view marker, absl::string_view bytes);
// An `attached` naming the guest `guest_id`, accepting batches.
v1::HostToGuest AttachedMessage(const std::string& guest_id);

class RawHostLink {
 public:
  // Start: a server (in-process only) whose GuestLink streams follow `script`.
  static absl::StatusOr<std::unique_ptr<RawHostLink>> Start(RawHostScript script);
  ~RawHostLink();

  std::shared_ptr<grpc::Channel> InProcessChannel();

  // Guest messages read after the attach, in order (those that parsed).
  std::vector<v1::GuestToHost> received();
  // Waits until at least `count` messages were received or `wait` passed.
  bool WaitForReceived(size_t count, absl::Duration wait);

 private:
  class Stream;
  class Service;

  explicit RawHostLink(RawHostScript script);
  void Record(v1::GuestToHost message);

  const RawHostScript script_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  Mutex mu_;
  CondVar cv_;
  std::vector<v1::GuestToHost> received_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vbus::mock

#endif  // VBUS_MOCK_TESTING_RAW_HOST_LINK_H_
