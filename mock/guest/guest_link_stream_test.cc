// ParseHostMessage and DescribeParseFailure: what they accept and how they name what did not
// parse.
#include "mock/guest/guest_link_stream.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vbus::mock {
namespace {

using ::testing::HasSubstr;

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// An offer in a control message whose instance GUID text is `text` (which a serializer
// would refuse if it is not UTF-8: the bytes are patched in after serializing).
std::string OfferWithInstanceText(const std::string& text) {
  const std::string marker(text.size(), '@');
  v1::HostToGuest m;
  m.mutable_control()->mutable_offer()->mutable_interface_instance()->set_value(marker);
  std::string frame = m.SerializeAsString();
  frame.replace(frame.find(marker), text.size(), text);
  return frame;
}

struct Parsed {
  absl::Status status;
  v1::HostToGuest message;
  v1::HostToGuest::KindCase kind = v1::HostToGuest::KIND_NOT_SET;
};

Parsed Parse(const std::string& bytes) {
  Parsed p;
  grpc::ByteBuffer buffer = Bytes(bytes);
  p.status = ParseHostMessage(&buffer, &p.message, &p.kind);
  return p;
}

TEST(ParseHostMessageTest, ValidMessagesParse) {
  v1::HostToGuest m;
  m.mutable_control()->mutable_offer()->set_child_relid(9);
  m.mutable_control()->mutable_offer()->mutable_interface_type()->set_value("é€𝄞");
  Parsed p = Parse(m.SerializeAsString());
  ASSERT_TRUE(p.status.ok()) << p.status;
  EXPECT_EQ(p.message.control().offer().child_relid(), 9u);
  EXPECT_EQ(p.message.control().offer().interface_type().value(), "é€𝄞");

  Parsed empty = Parse("");
  ASSERT_TRUE(empty.status.ok()) << empty.status;
  EXPECT_EQ(empty.message.kind_case(), v1::HostToGuest::KIND_NOT_SET);

  // Unknown fields are kept, as protobuf does.
  Parsed unknown = Parse(std::string("\x48\x05", 2));  // field 9, varint 5
  EXPECT_TRUE(unknown.status.ok()) << unknown.status;
}

TEST(ParseHostMessageTest, InvalidUtf8IsNamedByFieldPath) {
  v1::HostToGuest attached;
  attached.mutable_attached()->set_guest_id("@@");
  std::string frame = attached.SerializeAsString();
  frame.replace(frame.find("@@"), 2, "\xc3\x28");
  Parsed p = Parse(frame);
  EXPECT_EQ(p.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status.message()), HasSubstr("attached.guest_id: not UTF-8"));
  EXPECT_EQ(p.kind, v1::HostToGuest::kAttached);
  EXPECT_EQ(p.message.kind_case(), v1::HostToGuest::KIND_NOT_SET);  // nothing half-parsed

  // Overlong, surrogate, above U+10FFFF, truncated: all refused, all named.
  for (const std::string& text : {std::string("\xc0\x80"), std::string("\xed\xa0\x80"),
                                  std::string("\xf4\x90\x80\x80"), std::string("ab\xe2\x82")}) {
    Parsed bad = Parse(OfferWithInstanceText(text));
    EXPECT_THAT(std::string(bad.status.message()),
                HasSubstr("control.offer.interface_instance.value: not UTF-8"));
    EXPECT_EQ(bad.kind, v1::HostToGuest::kControl);
  }
}

TEST(ParseHostMessageTest, RepeatedFieldsCarryTheirIndex) {
  v1::HostToGuest m;
  m.mutable_batch()->add_messages()->mutable_offer()->set_child_relid(1);
  m.mutable_batch()->add_messages()->mutable_offer()->mutable_interface_type()->set_value("@@");
  std::string frame = m.SerializeAsString();
  frame.replace(frame.find("@@"), 2, "\xff\xff");
  Parsed p = Parse(frame);
  EXPECT_THAT(std::string(p.status.message()),
              HasSubstr("batch.messages[1].offer.interface_type.value: not UTF-8"));
  EXPECT_EQ(p.kind, v1::HostToGuest::kBatch);
}

TEST(ParseHostMessageTest, MalformedWireFormatIsNamed) {
  // `control` claims 127 bytes; one follows. The status quotes the bytes, escaped.
  Parsed truncated = Parse(std::string("\x12\x7f\x01", 3));
  EXPECT_THAT(std::string(truncated.status.message()),
              HasSubstr("control: length 127 runs past the end (1 byte left) "
                        "(3 bytes: \\x12\\x7f\\x01)"));
  EXPECT_EQ(truncated.kind, v1::HostToGuest::kControl);

  Parsed zero_tag = Parse(std::string("\x00\x01", 2));
  EXPECT_THAT(std::string(zero_tag.status.message()), HasSubstr("malformed field tag at byte 0"));
  EXPECT_EQ(zero_tag.kind, v1::HostToGuest::KIND_NOT_SET);

  Parsed wire_type = Parse(std::string("\x0f", 1));  // field 1, wire type 7
  EXPECT_THAT(std::string(wire_type.status.message()), HasSubstr("attached: invalid wire type 7"));
  EXPECT_EQ(wire_type.kind, v1::HostToGuest::kAttached);

  Parsed varint = Parse(std::string("\x1a\x02\x08\xff", 4));  // signal.child_relid cut short
  EXPECT_THAT(std::string(varint.status.message()),
              HasSubstr("signal.child_relid: truncated or malformed varint"));
  EXPECT_EQ(varint.kind, v1::HostToGuest::kSignal);

  Parsed unknown = Parse(std::string("\x4a\x05\x01", 3));  // unknown field 9, cut short
  EXPECT_THAT(std::string(unknown.status.message()), HasSubstr("(field 9): length 5 runs past"));
  EXPECT_EQ(unknown.kind, v1::HostToGuest::KIND_NOT_SET);
}

TEST(ParseHostMessageTest, LongMessagesAreQuotedBounded) {
  std::string frame("\x12\xff\x7f", 3);  // `control` of 16383 bytes, 3000 present
  frame.append(3000, '\n');
  Parsed p = Parse(frame);
  EXPECT_EQ(p.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(p.status.message().size(), 300u);
  EXPECT_THAT(std::string(p.status.message()), HasSubstr("3003 bytes: \\x12\\xff\\x7f\\x0a"));
}

TEST(DescribeParseFailureTest, GroupsAreWalkedAndNestingIsBounded) {
  const google::protobuf::Descriptor& type = *v1::HostToGuest::descriptor();
  // An unknown group (field 9) holding a varint, closed: fine.
  EXPECT_EQ(DescribeParseFailure(std::string("\x4b\x08\x01\x4c", 4), type), "");
  // Not closed.
  EXPECT_THAT(DescribeParseFailure(std::string("\x4b\x08\x01", 3), type),
              HasSubstr("(field 9): group without an end tag"));
  // An end-group tag with no group.
  EXPECT_THAT(DescribeParseFailure(std::string("\x4c", 1), type),
              HasSubstr("end-group tag outside its group"));
  // 101 nested groups: deeper than protobuf parses.
  std::string deep;
  for (int i = 0; i < 101; ++i) deep += '\x4b';
  for (int i = 0; i < 101; ++i) deep += '\x4c';
  int top_field = -1;
  EXPECT_THAT(DescribeParseFailure(deep, type, &top_field), HasSubstr("nested deeper than 100"));
  EXPECT_EQ(top_field, 9);
  v1::HostToGuest m;
  EXPECT_FALSE(m.ParseFromString(deep));  // protobuf agrees
}

}  // namespace
}  // namespace vbus::mock
