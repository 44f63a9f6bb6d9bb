// Helpers shared by the test suites.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace cvx::test {

// The golden data directory (CVX_GOLDEN_DIR, else ../shared/golden beside the source tree), or
// nullopt when it does not exist (tests then GTEST_SKIP with a message).
std::optional<std::filesystem::path> golden_dir();

// A fresh, empty directory under the build tree's test scratch area, unique per call.
std::filesystem::path scratch_dir(const std::string& name);

// Path of a program built by this project (e.g. "cvx_inspect").
std::filesystem::path built_program(const std::string& name);

// `path` single-quoted for a shell command line.
inline std::string shell_quote(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

// Runs a shell command, returns its exit code; stdout+stderr go to *output when given.
int run_command(const std::string& command, std::string* output = nullptr);

}  // namespace cvx::test
