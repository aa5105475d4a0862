#include "core/data/host_text.h"

#include <string>

#include "gtest/gtest.h"

namespace vbus {
namespace {

TEST(HostTextTest, PrintableAsciiPassesThrough) {
  EXPECT_EQ(HostText("relid 7: 8c2eaf3d-32a7-4b09"), "relid 7: 8c2eaf3d-32a7-4b09");
  EXPECT_EQ(HostText(""), "");
}

TEST(HostTextTest, ControlBytesBackslashAndNonAsciiAreEscaped) {
  EXPECT_EQ(HostText("a\nb"), "a\\x0ab");
  EXPECT_EQ(HostText("fake\r\nvbus: forged line"), "fake\\x0d\\x0avbus: forged line");
  EXPECT_EQ(HostText("back\\slash"), "back\\x5cslash");
  EXPECT_EQ(HostText(std::string("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(HostText("\xff\xfe\xc3\x28"), "\\xff\\xfe\\xc3(");  // invalid UTF-8
  EXPECT_EQ(HostText("\x7f"), "\\x7f");
}

TEST(HostTextTest, LongTextIsCutAndTheCutIsNamed) {
  const std::string huge(4 << 20, 'A');
  const std::string out = HostText(huge);
  EXPECT_EQ(out, std::string(kHostTextLimit, 'A') + "...[+" +
                     std::to_string(huge.size() - kHostTextLimit) + " bytes]");
  EXPECT_EQ(HostText("abcdef", 3), "abc...[+3 bytes]");
  EXPECT_EQ(HostText("abc", 3), "abc");
}

TEST(HostTextTest, OutputIsBoundedWhateverTheInput) {
  const std::string worst(10000, '\x01');
  EXPECT_LE(HostText(worst, 100).size(), 4 * 100 + 32u);
}

}  // namespace
}  // namespace vbus
