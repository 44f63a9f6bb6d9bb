// Byte counts for people: "7 B", "12.0 KiB", "1.30 GiB".
#pragma once
#include <cstdint>
#include <string>

namespace cvx {

// Binary units (KiB = 1024 B) with `decimals` digits after the point; whole bytes below 1 KiB.
std::string format_bytes(uint64_t bytes, int decimals = 2);

}  // namespace cvx
