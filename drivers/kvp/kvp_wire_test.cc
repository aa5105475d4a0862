#include "drivers/kvp/kvp_wire.h"

#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

void Put(std::vector<uint8_t>& b, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
}
// ASCII as UTF-16LE at `at` (no NUL written: the buffer is zeroed).
void PutText(std::vector<uint8_t>& b, size_t at, const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) Put(b, at + 2 * i, static_cast<uint8_t>(s[i]), 2);
}

// Offsets below are from the IC body (the IC message's byte 28): the documented @32 is 4 here.
TEST(KvpWireTest, SetAtDocumentedOffsets) {
  std::vector<uint8_t> body(2576, 0);
  body[0] = 1;                  // SET
  body[1] = 0;                  // EXTERNAL
  Put(body, 4, 1, 4);           // value_type @32: REG_SZ
  Put(body, 8, 8, 4);           // key_size @36: "key" + NUL
  Put(body, 12, 12, 4);         // value_size @40: "hello" + NUL
  PutText(body, 16, "key");     // key @44
  PutText(body, 528, "hello");  // value @556
  absl::StatusOr<KvpRequest> r = ParseKvpRequest(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->operation, 1);
  EXPECT_EQ(r->pool, 0);
  EXPECT_EQ(r->record.key, "key");
  EXPECT_EQ(r->record.value, "hello");
  absl::StatusOr<std::vector<uint8_t>> encoded = EncodeKvpRequest(*r);
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(*encoded, body);
}

TEST(KvpWireTest, EnumerateAndDeleteAtDocumentedOffsets) {
  std::vector<uint8_t> e(2580, 0);
  e[0] = 3;
  e[1] = 2;
  Put(e, 4, 7, 4);  // index @32
  absl::StatusOr<KvpRequest> r = ParseKvpRequest(e);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->index, 7u);
  ASSERT_TRUE(FillKvpAnswer(3, absl::MakeSpan(e), {kKvpString, "OSName", "Linux"}).ok());
  EXPECT_EQ(e[8], 1);      // value_type @36
  EXPECT_EQ(e[12], 14);    // key_size @40: 6 chars + NUL
  EXPECT_EQ(e[16], 12);    // value_size @44
  EXPECT_EQ(e[20], 'O');   // key @48
  EXPECT_EQ(e[532], 'L');  // value @560
  EXPECT_EQ(e[533], 0);
  absl::StatusOr<KvpRecord> back = ParseKvpAnswer(3, e);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->value, "Linux");

  std::vector<uint8_t> d(520, 0);
  d[0] = 2;
  Put(d, 4, 4, 4);     // key_size @32
  PutText(d, 8, "k");  // key @36
  r = ParseKvpRequest(d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->record.key, "k");
}

TEST(KvpWireTest, NumbersAndUnicode) {
  std::vector<uint8_t> body(2576, 0);
  body[0] = 1;
  Put(body, 4, 4, 4);  // REG_U32
  Put(body, 8, 4, 4);
  PutText(body, 16, "n");
  Put(body, 12, 4, 4);
  Put(body, 528, 123456, 4);
  absl::StatusOr<KvpRequest> r = ParseKvpRequest(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->record.value, "123456");
  Put(body, 4, 11, 4);  // REG_U64 as 11
  Put(body, 12, 8, 4);
  Put(body, 528, 1ull << 40, 8);
  r = ParseKvpRequest(body);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->record.value, "1099511627776");

  absl::StatusOr<std::vector<uint8_t>> u = Utf8ToUtf16("\xC3\xA9\xF0\x9F\x98\x80", 10);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(*u, (std::vector<uint8_t>{0xE9, 0, 0x3D, 0xD8, 0x00, 0xDE, 0, 0}));
  absl::StatusOr<std::string> back = Utf16ToUtf8(*u);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, "\xC3\xA9\xF0\x9F\x98\x80");
}

TEST(KvpWireTest, BadRequests) {
  auto code = [](const std::vector<uint8_t>& b) { return ParseKvpRequest(b).status().code(); };
  std::vector<uint8_t> body(2576, 0);
  body[0] = 1;
  Put(body, 4, 1, 4);
  Put(body, 8, 4, 4);
  PutText(body, 16, "k");
  Put(body, 12, 2, 4);
  ASSERT_EQ(code(body), absl::StatusCode::kOk);
  EXPECT_EQ(code(std::vector<uint8_t>(body.begin(), body.end() - 1)),
            absl::StatusCode::kInvalidArgument);  // short
  std::vector<uint8_t> b = body;
  Put(b, 8, 514, 4);  // key_size past the key field
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  Put(b, 8, 3, 4);  // odd
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  Put(b, 8, 2, 4);  // "k" without its NUL
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  Put(b, 8, 0, 4);  // empty
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  Put(b, 12, 2050, 4);  // value_size past the value field
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  Put(b, 4, 4, 4);  // REG_U32 with a 2-byte value
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  Put(b, 4, 3, 4);  // unknown type
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  Put(b, 16, 0xDC00, 2);  // lone low surrogate
  EXPECT_EQ(code(b), absl::StatusCode::kInvalidArgument);
  b = body;
  b[0] = 4;  // GET_IP_INFO
  EXPECT_EQ(code(b), absl::StatusCode::kUnimplemented);
  b[0] = 9;
  EXPECT_EQ(code(b), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(code({1, 0, 0}), absl::StatusCode::kInvalidArgument);
}

TEST(KvpWireTest, LimitsOnEncode) {
  EXPECT_TRUE(Utf8ToUtf16(std::string(254, 'k'), kKvpMaxKeyChars).ok());
  EXPECT_FALSE(Utf8ToUtf16(std::string(255, 'k'), kKvpMaxKeyChars).ok());
  EXPECT_FALSE(Utf8ToUtf16("\xFF", 10).ok());
  EXPECT_FALSE(Utf8ToUtf16("\xC0\x80", 10).ok());  // overlong NUL
  KvpRequest r;
  r.operation = 1;
  r.record = {kKvpU32, "n", "4294967296"};
  EXPECT_EQ(EncodeKvpRequest(r).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vbus::ic
