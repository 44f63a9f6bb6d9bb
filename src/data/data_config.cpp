#include "cvx/data/data_config.h"

#include <cstdlib>

#include "cvx/data/frame_sampler.h"

namespace cvx {

std::string Resolution::to_string() const {
  return std::to_string(frames) + "x" + std::to_string(height) + "x" + std::to_string(width);
}

Resolution parse_resolution(const std::string& text) {
  Resolution r;
  char x1 = 0, x2 = 0;
  char tail = 0;
  long long f = 0, h = 0, w = 0;
  const int n = std::sscanf(text.c_str(), "%lld%c%lld%c%lld%c", &f, &x1, &h, &x2, &w, &tail);
  CVX_CHECK_AS(ConfigError, n == 5 && (x1 == 'x' || x1 == 'X') && (x2 == 'x' || x2 == 'X') && f > 0 && h > 0 && w > 0,
               "train_resolution '", text, "' is not of the form FRAMESxHEIGHTxWIDTH, e.g. 49x480x720");
  check_frame_count(f, "train_resolution '" + text + "'");
  for (auto [name, value] : {std::pair<const char*, long long>{"height", h}, {"width", w}}) {
    if (value % 16 != 0) {
      const long long lower = std::max(16LL, value / 16 * 16);
      CVX_THROW_AS(ConfigError, "train_resolution '", text, "': ", name, " ", value,
                   " is not a multiple of 16 (VAE factor 8 x patch size 2); nearest valid: ", lower, " or ",
                   value / 16 * 16 + 16);
    }
  }
  r.frames = f;
  r.height = h;
  r.width = w;
  return r;
}

void DataConfig::validate() const {
  // cvx_train reads only the store; the program that needs the lists checks data_root itself.
  if (!lists.data_root.empty()) lists.validate();
  parse_resolution(train_resolution);
}

}  // namespace cvx
