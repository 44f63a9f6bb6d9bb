// Files that are either fully written or not there at all: write to a temp file in the same
// folder, fsync, rename over the target, fsync the folder.
#pragma once
#include <filesystem>
#include <string>

namespace cvx {
void write_file_atomic(const std::filesystem::path& file, const std::string& content);
// Makes a completed rename in `dir` durable.
void fsync_directory(const std::filesystem::path& dir);
// A temp name next to `target` that no other process uses: ".<name>.tmp.<pid>.<n>".
std::filesystem::path temp_path_for(const std::filesystem::path& target);
}  // namespace cvx
