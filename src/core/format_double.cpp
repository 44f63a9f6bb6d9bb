#include "cvx/core/format_double.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cvx {

std::string format_double(double value) {
  char buffer[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  // %g writes 100 as "1e+02"; people reading a config or a LoRA's metadata expect "100".
  if (std::strchr(buffer, 'e') != nullptr && std::fabs(value) < 1e16 && std::nearbyint(value) == value)
    std::snprintf(buffer, sizeof(buffer), "%.0f", value);
  return buffer;
}

}  // namespace cvx
