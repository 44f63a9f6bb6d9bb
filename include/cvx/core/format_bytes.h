// Byte and element counts for people: "7 B", "12.0 KiB", "1.30 GiB"; "5,570,000,000".
#pragma once
#include <cstdint>
#include <string>

namespace cvx {

// Binary units (KiB = 1024 B) with `decimals` digits after the point; whole bytes below 1 KiB.
std::string format_bytes(uint64_t bytes, int decimals = 2);

// Digits in groups of three: 5570000000 -> "5,570,000,000" (the memory report's element counts).
std::string grouped_digits(int64_t n);

}  // namespace cvx
