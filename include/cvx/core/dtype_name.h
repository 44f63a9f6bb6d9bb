// The names cvx gives floating-point dtypes ("fp32", "bf16", "fp16", "fp64") in options,
// layout.json and reports, and the one parser of the options that name a dtype.
#pragma once
#include <torch/types.h>

#include <optional>
#include <string>

namespace cvx {

// "fp32", "bf16", "fp16" or "fp64"; throws Error for any other dtype (cvx names no other).
const char* dtype_name(torch::Dtype dtype);
// The reverse of dtype_name(); nullopt for a name it never gives (callers choose the error type:
// a bad option is a ConfigError, a bad file a FormatError).
std::optional<torch::Dtype> dtype_from_name(const std::string& name);

// An option naming a compute or storage dtype: "fp32", "bf16" or "fp16". A value outside them is a
// ConfigError naming `where` (e.g. "[train] export_dtype"), the value and the accepted names —
// never a silent fp32.
torch::Dtype parse_dtype(const std::string& name, const std::string& where);
// [train] mixed_precision, as accelerate spells it: "no" (fp32), "bf16" or "fp16".
torch::Dtype parse_mixed_precision(const std::string& name, const std::string& where);

}  // namespace cvx
