#include "cvx/core/dtype_name.h"

#include "cvx/core/error.h"

namespace cvx {

const char* dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "fp32";
    case torch::kBFloat16: return "bf16";
    case torch::kFloat16: return "fp16";
    case torch::kFloat64: return "fp64";
    default: CVX_THROW("no cvx name for dtype ", dtype, " (cvx names fp32, bf16, fp16 and fp64 only)");
  }
}

std::optional<torch::Dtype> dtype_from_name(const std::string& name) {
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16, torch::kFloat64})
    if (name == dtype_name(dtype)) return dtype;
  return std::nullopt;
}

torch::Dtype parse_dtype(const std::string& name, const std::string& where) {
  const auto dtype = dtype_from_name(name);
  // fp64 has a name (layout.json, reports) but nothing computes or stores in it.
  CVX_CHECK_AS(ConfigError, dtype && *dtype != torch::kFloat64, where, ": unknown dtype ", quote(name),
               " (expected fp32, bf16 or fp16)");
  return *dtype;
}

torch::Dtype parse_mixed_precision(const std::string& name, const std::string& where) {
  if (name == "no") return torch::kFloat32;
  CVX_CHECK_AS(ConfigError, name == "bf16" || name == "fp16", where, ": unknown mixed precision ", quote(name),
               " (expected no, bf16 or fp16)");
  return parse_dtype(name, where);
}

}  // namespace cvx
