// EqualsProto: a gMock matcher comparing a protobuf message with the text-format message
// `text` of the same type; on a mismatch it explains the difference field by field.
//
//   EXPECT_THAT(reply, EqualsProto(R"pb(control { open_result { child_relid: 1 } })pb"));
//   EXPECT_THAT(replies, ElementsAre(EqualsProto("..."), EqualsProto("...")));
#ifndef VBUS_MOCK_TESTING_PROTO_MATCHERS_H_
#define VBUS_MOCK_TESTING_PROTO_MATCHERS_H_

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"

namespace vbus::mock::testing {

MATCHER_P(EqualsProto, text, "equals the text-format message " + std::string(text)) {
  std::unique_ptr<google::protobuf::Message> expected(arg.New());
  if (!google::protobuf::TextFormat::ParseFromString(text, expected.get())) {
    *result_listener << "the expected text does not parse as " << arg.GetTypeName();
    return false;
  }
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  if (differ.Compare(*expected, arg)) return true;
  *result_listener << "actual: " << arg.ShortDebugString() << "\ndifferences: " << diff;
  return false;
}

}  // namespace vbus::mock::testing

#endif  // VBUS_MOCK_TESTING_PROTO_MATCHERS_H_
