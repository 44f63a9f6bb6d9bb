#include "cvx/core/error.h"

#include <algorithm>
#include <cstring>

namespace cvx {

Error::Error(const std::string& message, const char* file, int line) : std::runtime_error(message), message_(message) {
  if (file != nullptr) where_ = std::string(file) + ":" + std::to_string(line);
}

std::string one_line(std::string_view text, size_t max_length) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(text.size(), max_length) + 8);
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == max_length) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string quote(std::string_view text, size_t max_length) { return '"' + one_line(text, max_length) + '"'; }

namespace detail {
const char* short_path(const char* file) {
#ifdef CVX_SOURCE_DIR
  const size_t n = std::strlen(CVX_SOURCE_DIR);
  if (std::strncmp(file, CVX_SOURCE_DIR, n) == 0 && file[n] == '/') return file + n + 1;
#endif
  return file;
}
}  // namespace detail

}  // namespace cvx
