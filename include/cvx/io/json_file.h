// Reading JSON files with errors that name the file and the position.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

namespace cvx {
// Throws ConfigError if missing, FormatError (with line/column) if malformed.
nlohmann::json read_json_file(const std::filesystem::path& file);
// Atomic write (temp + fsync + rename), pretty-printed with 2-space indent.
void write_json_file(const std::filesystem::path& file, const nlohmann::json& value);
}  // namespace cvx
