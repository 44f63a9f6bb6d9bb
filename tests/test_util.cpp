#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>

#include <gtest/gtest.h>

namespace cvx::test {

std::optional<std::filesystem::path> golden_dir() {
  std::filesystem::path dir;
  if (const char* env = std::getenv("CVX_GOLDEN_DIR"); env != nullptr && *env != '\0') {
    dir = env;
  } else {
    dir = CVX_DEFAULT_GOLDEN_DIR;
  }
  if (!std::filesystem::exists(dir / "manifest.json")) return std::nullopt;
  return std::filesystem::weakly_canonical(dir);
}

std::filesystem::path scratch_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::path(CVX_BINARY_DIR) / "test_scratch" /
                   (name + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::filesystem::path built_program(const std::string& name) { return std::filesystem::path(CVX_BINARY_DIR) / name; }

std::optional<nlohmann::json> read_tfevents(const std::vector<std::filesystem::path>& files, std::string* output) {
  std::string command = std::string(CVX_PYTHON3) + " " +
                        shell_quote(std::filesystem::path(CVX_SOURCE_DIR) / "tools" / "read_tfevents.py");
  for (const auto& f : files) command += " " + shell_quote(f);
  std::string text;
  const int rc = run_command(command, &text);
  if (output != nullptr) *output = text;
  if (rc != 0) return std::nullopt;
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(json.is_discarded()) << "read_tfevents.py printed no JSON:\n" << text;
  if (json.is_discarded()) return std::nullopt;
  return json;
}

int run_command(const std::string& command, std::string* output) {
  const std::string full = command + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buffer{};
  std::string text;
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) text.append(buffer.data(), n);
  const int status = pclose(pipe);
  if (output != nullptr) *output = text;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::filesystem::path make_video(const std::filesystem::path& dir, const std::string& name, const std::string& source,
                                 int frames, const std::string& codec_args) {
  const auto file = dir / name;
  std::string out;
  EXPECT_EQ(run_command("ffmpeg -v error -y -f lavfi -i \"" + source + "\" -frames:v " + std::to_string(frames) + " " +
                            codec_args + " " + shell_quote(file),
                        &out),
            0)
      << file << ": " << out;
  return file;
}

std::filesystem::path make_rotated_copy(const std::filesystem::path& video, const std::filesystem::path& dir,
                                        const std::string& name) {
  const auto file = dir / name;
  std::string out;
  EXPECT_EQ(run_command(
                "ffmpeg -v error -y -i " + shell_quote(video) + " -c copy -metadata:s:v rotate=90 " + shell_quote(file),
                &out),
            0)
      << file << ": " << out;
  return file;
}

}  // namespace cvx::test
