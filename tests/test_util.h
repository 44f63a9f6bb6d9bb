// Helpers shared by the test suites.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cvx/core/error.h"

namespace cvx::test {

// The message of the cvx::Error that `f` throws, or "(no error)".
template <class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const cvx::Error& e) {
    return e.message();
  }
  return "(no error)";
}

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

// `frames` frames of the lavfi `source` encoded by the ffmpeg CLI with `codec_args` into dir/name;
// a failing ffmpeg is a test failure.
std::filesystem::path make_video(const std::filesystem::path& dir, const std::string& name, const std::string& source,
                                 int frames, const std::string& codec_args = "-c:v libx264 -pix_fmt yuv420p");

// A stream copy of `video` into dir/name carrying rotate=90 metadata (shown a quarter turn
// counter-clockwise, as players and ffmpeg's autorotation do).
std::filesystem::path make_rotated_copy(const std::filesystem::path& video, const std::filesystem::path& dir,
                                        const std::string& name);

// tools/read_tfevents.py over `files` (every record's CRCs checked, each Event parsed with
// python3-protobuf): its JSON ({"files", "scalars": [{step, tag, value}], "images"}), or a test
// failure and nullopt when it exits non-zero (*output gets what it printed).
std::optional<nlohmann::json> read_tfevents(const std::vector<std::filesystem::path>& files,
                                            std::string* output = nullptr);

}  // namespace cvx::test
