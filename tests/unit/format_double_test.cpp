// format_double: the text of LoRA metadata (byte-stable across versions) and of resolved INI files
// (read back to the same value, so a saved config reproduces its run).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>

#include "cvx/core/format_double.h"
#include "cvx/core/options.h"
#include "cvx/model/lora_config.h"

TEST(FormatDouble, ShortestPercentGText) {
  // Pinned: cvx.lora_alpha and the INI files carry exactly this text.
  EXPECT_EQ(cvx::format_double(0.0), "0");
  EXPECT_EQ(cvx::format_double(2.0), "2");
  EXPECT_EQ(cvx::format_double(64.0), "64");
  EXPECT_EQ(cvx::format_double(128.0), "128");
  EXPECT_EQ(cvx::format_double(0.5), "0.5");
  EXPECT_EQ(cvx::format_double(0.1), "0.1");
  EXPECT_EQ(cvx::format_double(1e-4), "0.0001");
  EXPECT_EQ(cvx::format_double(2e-5), "2e-05");
  EXPECT_EQ(cvx::format_double(1.15258426), "1.15258426");
  EXPECT_EQ(cvx::format_double(-1.5), "-1.5");
  EXPECT_EQ(cvx::format_double(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(cvx::format_double(1.0 / 3.0), "0.3333333333333333");
  // Whole numbers in plain digits where %g would take the exponent form; huge ones keep it.
  EXPECT_EQ(cvx::format_double(10.0), "10");
  EXPECT_EQ(cvx::format_double(100.0), "100");
  EXPECT_EQ(cvx::format_double(-3000.0), "-3000");
  EXPECT_EQ(cvx::format_double(1e6), "1000000");
  EXPECT_EQ(cvx::format_double(1e20), "1e+20");
  EXPECT_EQ(cvx::format_double(1.5e10), "15000000000");
  EXPECT_EQ(cvx::format_double(static_cast<double>(0.1f)), "0.10000000149011612");
}

TEST(FormatDouble, ReadsBackToTheSameDouble) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> mantissa(-10.0, 10.0);
  std::uniform_int_distribution<int> exponent(-30, 30);
  for (int i = 0; i < 10000; ++i) {
    const double v = std::ldexp(mantissa(rng), exponent(rng));
    EXPECT_EQ(std::strtod(cvx::format_double(v).c_str(), nullptr), v) << cvx::format_double(v);
  }
  for (const double v : {std::numeric_limits<double>::max(), std::numeric_limits<double>::denorm_min(),
                         std::numeric_limits<double>::epsilon()})
    EXPECT_EQ(std::strtod(cvx::format_double(v).c_str(), nullptr), v) << cvx::format_double(v);
}

TEST(FormatDouble, ResolvedIniUsesIt) {
  cvx::LoraConfig lora;
  lora.alpha = 0.1 + 0.2;
  lora.dropout = 100.0;
  cvx::Options options("prog", "");
  options.add("lora", lora);
  const std::string ini = options.to_ini();
  EXPECT_NE(ini.find("alpha = 0.30000000000000004\n"), std::string::npos) << ini;
  EXPECT_NE(ini.find("dropout = 100\n"), std::string::npos) << ini;
}
