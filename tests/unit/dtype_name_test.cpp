// The one dtype parser: names round-trip, and a bad option value is a ConfigError naming the option
// instead of a silent fp32.
#include <gtest/gtest.h>

#include "cvx/core/dtype_name.h"
#include "cvx/core/error.h"

namespace {

std::string config_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const cvx::ConfigError& e) {
    return e.message();
  }
  ADD_FAILURE() << "no ConfigError";
  return "";
}

}  // namespace

TEST(DtypeName, NamesRoundTrip) {
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16, torch::kFloat64}) {
    SCOPED_TRACE(cvx::dtype_name(dtype));
    ASSERT_TRUE(cvx::dtype_from_name(cvx::dtype_name(dtype)).has_value());
    EXPECT_EQ(*cvx::dtype_from_name(cvx::dtype_name(dtype)), dtype);
    if (dtype != torch::kFloat64) EXPECT_EQ(cvx::parse_dtype(cvx::dtype_name(dtype), "[x] dtype"), dtype);
  }
  EXPECT_STREQ(cvx::dtype_name(torch::kBFloat16), "bf16");
  EXPECT_STREQ(cvx::dtype_name(torch::kFloat32), "fp32");
  EXPECT_FALSE(cvx::dtype_from_name("float32").has_value());
  EXPECT_THROW(cvx::dtype_name(torch::kInt64), cvx::Error);
}

TEST(DtypeName, MixedPrecisionNoIsFp32) {
  EXPECT_EQ(cvx::parse_mixed_precision("no", "[train] mixed_precision"), torch::kFloat32);
  EXPECT_EQ(cvx::parse_mixed_precision("bf16", "[train] mixed_precision"), torch::kBFloat16);
  EXPECT_EQ(cvx::parse_mixed_precision("fp16", "[train] mixed_precision"), torch::kFloat16);
}

TEST(DtypeName, UnknownNamesAreConfigErrorsNamingTheOption) {
  const std::string bad = config_error_of([] { cvx::parse_dtype("bfloat16", "[train] export_dtype"); });
  EXPECT_NE(bad.find("[train] export_dtype"), std::string::npos) << bad;
  EXPECT_NE(bad.find("\"bfloat16\""), std::string::npos) << bad;
  EXPECT_NE(bad.find("fp32, bf16 or fp16"), std::string::npos) << bad;
  // fp64 is a name (layout.json) but no option computes or stores in it; "no" is mixed_precision only.
  EXPECT_NE(config_error_of([] { cvx::parse_dtype("fp64", "dtype"); }).find("\"fp64\""), std::string::npos);
  EXPECT_NE(config_error_of([] { cvx::parse_dtype("no", "dtype"); }).find("dtype: unknown"), std::string::npos);
  const std::string mixed = config_error_of([] { cvx::parse_mixed_precision("fp32", "[train] mixed_precision"); });
  EXPECT_NE(mixed.find("[train] mixed_precision"), std::string::npos) << mixed;
  EXPECT_NE(mixed.find("no, bf16 or fp16"), std::string::npos) << mixed;
  const std::string empty = config_error_of([] { cvx::parse_dtype("", "[parallel] reduce_dtype"); });
  EXPECT_NE(empty.find("[parallel] reduce_dtype: unknown dtype \"\""), std::string::npos) << empty;
}
