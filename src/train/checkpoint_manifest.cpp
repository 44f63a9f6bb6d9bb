#include "cvx/train/checkpoint_manifest.h"

#include <algorithm>

#include "cvx/core/crc32c.h"
#include "cvx/core/error.h"
#include "cvx/train/checkpoint_folders.h"

namespace cvx {
namespace fs = std::filesystem;

nlohmann::json checkpoint_manifest(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const fs::path relative = entry.path().lexically_relative(dir);
    if (relative == kTrainerStateFile) continue;
    files.push_back(relative);
  }
  std::sort(files.begin(), files.end());
  nlohmann::json out = nlohmann::json::array();
  for (const auto& f : files)
    out.push_back({{"path", f.generic_string()}, {"size", fs::file_size(dir / f)}, {"crc32c", file_crc32c(dir / f)}});
  return out;
}

bool verify_checkpoint_files(const fs::path& dir, const nlohmann::json& state) {
  if (!state.contains("files")) return false;
  const std::string fallback =
      "; resume from the newest checkpoint that verifies with --train.resume_from_checkpoint latest_valid";
  const fs::path state_file = dir / kTrainerStateFile;
  CVX_CHECK_AS(FormatError, state["files"].is_array(), state_file.string(), ": \"files\" is not a list", fallback);
  for (const auto& f : state["files"]) {
    CVX_CHECK_AS(FormatError, f.is_object() && f.contains("path") && f.contains("size") && f.contains("crc32c"),
                 state_file.string(), ": a \"files\" entry lacks path, size or crc32c", fallback);
    const fs::path file = dir / f["path"].get<std::string>();
    const auto size = f["size"].get<uint64_t>();
    std::error_code ec;
    const bool present = fs::is_regular_file(file, ec);
    CVX_CHECK_AS(FormatError, present, "checkpoint file ", file.string(), " is missing (", state_file.string(),
                 " records it)", fallback);
    const uint64_t actual = fs::file_size(file, ec);
    CVX_CHECK_AS(FormatError, !ec && actual == size, "checkpoint file ", file.string(), " has ", actual,
                 " bytes, the checkpoint's manifest says ", size, " (truncated or replaced)", fallback);
    const uint32_t crc = file_crc32c(file);
    CVX_CHECK_AS(FormatError, crc == f["crc32c"].get<uint32_t>(), "checkpoint file ", file.string(),
                 " is corrupt: its CRC-32C is ", crc, ", the checkpoint's manifest says ", f["crc32c"].get<uint32_t>(),
                 fallback);
  }
  return true;
}

}  // namespace cvx
