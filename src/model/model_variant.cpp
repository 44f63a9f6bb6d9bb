#include "cvx/model/model_variant.h"

#include <algorithm>

#include "cvx/core/error.h"

namespace cvx {

const std::vector<std::string>& released_variants() {
  static const std::vector<std::string> names{kVariant2b, kVariant5b, kVariant5bI2v, kVariant15T2v, kVariant15I2v};
  return names;
}

std::string released_variant_list(const std::string& separator) {
  std::string out;
  for (const auto& name : released_variants()) out += (out.empty() ? "" : separator) + name;
  return out;
}

void check_released_variant(const std::string& variant) {
  const auto& names = released_variants();
  CVX_CHECK_AS(ConfigError, std::find(names.begin(), names.end(), variant) != names.end(), "unknown variant ",
               quote(variant), " (expected one of ", released_variant_list(), ")");
}

bool is_i2v_variant(const std::string& variant) { return variant == kVariant5bI2v || variant == kVariant15I2v; }

bool is_cogvideox15_variant(const std::string& variant) { return variant == kVariant15T2v || variant == kVariant15I2v; }

}  // namespace cvx
