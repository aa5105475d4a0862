// FuzzReader: reads a fuzz input as a script of bytes; past the end every byte reads as 0, so a
// truncated script still runs to its end. RunScript: the loop of a script-driven target.
#ifndef VBUS_TEST_FUZZ_FUZZ_READER_H_
#define VBUS_TEST_FUZZ_FUZZ_READER_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace vbus::fuzz {

class FuzzReader {
 public:
  FuzzReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  // Up to n bytes (fewer at the end of the input).
  std::string Bytes(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// RunScript: a fresh Driver steps through the input (at most 4 KiB, to bound the work per
// input) until it is used up, then finishes. Driver: Step(FuzzReader&), Finish().
template <typename Driver>
void RunScript(const uint8_t* data, size_t size) {
  FuzzReader in(data, std::min<size_t>(size, 4096));
  Driver driver;
  while (!in.done()) driver.Step(in);
  driver.Finish();
}

}  // namespace vbus::fuzz

#endif  // VBUS_TEST_FUZZ_FUZZ_READER_H_
