// The generated gRPC code links against the system gRPC and a server with the default
// (empty) service implementations answers UNIMPLEMENTED. The real services live in mock/.
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mock_host.grpc.pb.h"

namespace vbus {
namespace {

class GrpcSmokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&host_control_);
    builder.RegisterService(&guest_link_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  static std::chrono::system_clock::time_point Deadline() {
    return std::chrono::system_clock::now() + std::chrono::seconds(10);
  }

  int port_ = 0;
  v1::HostControl::Service host_control_;  // every method: UNIMPLEMENTED
  v1::GuestLink::Service guest_link_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(GrpcSmokeTest, HostControlIsUnimplemented) {
  auto stub = v1::HostControl::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  v1::ListGuestsResponse response;
  grpc::Status status = stub->ListGuests(&ctx, v1::ListGuestsRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << status.error_message();

  grpc::ClientContext ctx2;
  ctx2.set_deadline(Deadline());
  v1::OfferRequest offer;
  offer.mutable_spec()->set_device("echo");
  v1::OfferResponse offered;
  status = stub->Offer(&ctx2, offer, &offered);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(GrpcSmokeTest, GuestLinkStreamIsUnimplemented) {
  auto stub = v1::GuestLink::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline());
  auto stream = stub->Connect(&ctx);
  v1::GuestToHost attach;
  attach.mutable_attach()->set_guest_name("smoke");
  stream->Write(attach);  // may fail once the server has closed the call: either is fine
  stream->WritesDone();
  v1::HostToGuest reply;
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << status.error_message();
}

}  // namespace
}  // namespace vbus
