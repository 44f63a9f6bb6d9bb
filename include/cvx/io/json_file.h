// Reading JSON files with errors that name the file and the position.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "cvx/core/error.h"

namespace cvx {
// Throws ConfigError if missing, FormatError (with line/column) if malformed.
nlohmann::json read_json_file(const std::filesystem::path& file);
// Atomic write (temp + fsync + rename), pretty-printed with 2-space indent.
void write_json_file(const std::filesystem::path& file, const nlohmann::json& value);

// Sets `field` from j[key] when the key is present and not null (absent keys keep the default, as
// the reference constructors do); throws FormatError naming `source` and the key for another type.
template <class T>
void read_json_field(const nlohmann::json& j, const char* key, T& field, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return;
  try {
    field = j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    CVX_THROW_AS(FormatError, source, ": key '", key, "' has an unexpected type (", j[key].dump(), ")");
  }
}
}  // namespace cvx
