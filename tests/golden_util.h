// Golden reference data: the cases manifest.json lists, each case's meta.json and data.safetensors,
// and comparisons with the tolerances of the golden README (atol per quantity, rtol 1e-4).
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cvx/io/safetensors.h"
#include "test_util.h"

namespace cvx::test {

struct GoldenCase {
  std::string name;  // as listed in manifest.json, e.g. "transformer/<variant>"
  std::filesystem::path dir;
  nlohmann::json meta;                                  // meta.json
  std::shared_ptr<SafetensorsFile> data;                // data.safetensors (null when the case has none)
  torch::Tensor tensor(const std::string& name) const;  // copy, throws naming the case if absent
  bool has(const std::string& name) const;
};

// Cases of the golden manifest whose name starts with `prefix` + "/" or equals `prefix`, e.g.
// golden_cases("transformer"). Empty when the golden directory is absent.
std::vector<GoldenCase> golden_cases(const std::string& prefix);

// Suggested absolute tolerance for (case, quantity) from the golden README's table (30 x observed,
// at least 1e-5), or `fallback` when the table has no row for it.
double golden_atol(const std::string& case_name, const std::string& quantity, double fallback);

// EXPECTs |actual - expected| <= atol + rtol * |expected| elementwise, reporting the worst element.
::testing::AssertionResult all_close(const torch::Tensor& actual, const torch::Tensor& expected, double atol,
                                     double rtol = 1e-4);

}  // namespace cvx::test

// Skips the test when the golden data is absent.
#define CVX_REQUIRE_GOLDEN()                                                                      \
  do {                                                                                            \
    if (!::cvx::test::golden_dir()) GTEST_SKIP() << "golden data not found (set CVX_GOLDEN_DIR)"; \
  } while (0)
