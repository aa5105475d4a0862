// SimRng: the simulation's pseudo-random generator — the same numbers for the same seed on
// every machine, compiler and run.
//
// absl::BitGen is deliberately non-reproducible and std::uniform_int_distribution's algorithm
// is implementation-defined, so the simulation uses neither: SimRng is xoshiro256** (Blackman
// and Vigna) seeded through SplitMix64, and every derived draw (ranges, chances, picks) is
// spelled out here in plain integer arithmetic.
//
// Example:
//   SimRng rng(seed);
//   uint64_t delay_us = rng.Range(0, 200);        // inclusive
//   if (rng.Chance(0.25)) ...;
//   SimRng link_rng = rng.Fork();                 // an independent stream
//
// Thread-compatible (the simulation is single-threaded).
#ifndef VBUS_TEST_SIM_SIM_RNG_H_
#define VBUS_TEST_SIM_SIM_RNG_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vbus::sim {

// SplitMix64: one step of Steele, Lea and Flood's generator; used to expand a seed.
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class SimRng {
 public:
  explicit SimRng(uint64_t seed) {
    uint64_t s = seed;
    for (uint64_t& word : state_) word = SplitMix64(s);
  }

  // Next: 64 uniformly distributed bits.
  uint64_t Next() {
    const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }

  // Below: uniform in [0, n); 0 when n is 0. (Modulo bias is irrelevant here; determinism is
  // what matters.)
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }

  // Range: uniform in [lo, hi] (inclusive); lo when hi < lo.
  uint64_t Range(uint64_t lo, uint64_t hi) { return hi < lo ? lo : lo + Below(hi - lo + 1); }

  // Chance: true with probability p (p in [0, 1]), in units of 2^-32.
  bool Chance(double p) {
    if (p <= 0) return false;
    if (p >= 1) return true;
    return (Next() >> 32) < static_cast<uint64_t>(p * 4294967296.0);
  }

  // Pick: a uniformly chosen element of a non-empty vector.
  template <typename T>
  const T& Pick(const std::vector<T>& items) {
    return items[Below(items.size())];
  }

  // Weighted: an index chosen with probability weights[i] / sum(weights); 0 if all are 0.
  size_t Weighted(const std::vector<uint32_t>& weights) {
    uint64_t total = 0;
    for (uint32_t w : weights) total += w;
    uint64_t r = Below(total);
    for (size_t i = 0; i < weights.size(); ++i) {
      if (r < weights[i]) return i;
      r -= weights[i];
    }
    return 0;
  }

  // Fork: a generator seeded from this one's next output (an independent stream, so adding
  // draws to one part of the simulation does not shift every other part's numbers).
  SimRng Fork() { return SimRng(Next()); }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace vbus::sim

#endif  // VBUS_TEST_SIM_SIM_RNG_H_
