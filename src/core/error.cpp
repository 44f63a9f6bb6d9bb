#include "cvx/core/error.h"

#include <cstring>

namespace cvx {

Error::Error(const std::string& message, const char* file, int line)
    : std::runtime_error(message), message_(message) {
  if (file != nullptr) where_ = std::string(file) + ":" + std::to_string(line);
}

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
