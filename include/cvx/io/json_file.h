// Reading JSON files with errors that name the file and the position, and the typed fields of
// config files: each config lists its fields once (a visitor) and these read and write them all.
#pragma once
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>

#include "cvx/core/error.h"

namespace cvx {
// Throws ConfigError if missing, FormatError (with line/column) if malformed.
nlohmann::json read_json_file(const std::filesystem::path& file);
// Atomic write (temp + fsync + rename), pretty-printed with 2-space indent.
void write_json_file(const std::filesystem::path& file, const nlohmann::json& value);

// Sets `field` from j[key] when the key is present and not null (absent keys keep the default, as
// the reference constructors do); throws FormatError naming `source` and the key for another type.
// Integer fields take integral JSON numbers only (4.0 is accepted, 4.5 is not).
template <class T>
void read_json_field(const nlohmann::json& j, const char* key, T& field, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return;
  const auto& value = j[key];
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    CVX_CHECK_AS(FormatError,
                 value.is_number_integer() ||
                     (value.is_number_float() && std::trunc(value.get<double>()) == value.get<double>()),
                 source, ": key '", key, "' must be an integer, got ", value.dump());
  }
  try {
    field = value.template get<T>();
  } catch (const nlohmann::json::exception&) {
    CVX_THROW_AS(FormatError, source, ": key '", key, "' has an unexpected type (", value.dump(), ")");
  }
}

// Optional fields: an absent or null key empties the field.
template <class T>
void read_json_field(const nlohmann::json& j, const char* key, std::optional<T>& field, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) {
    field.reset();
    return;
  }
  T value{};
  read_json_field(j, key, value, source);
  field = std::move(value);
}

template <class T>
void write_json_field(nlohmann::json& j, const char* key, const T& field) {
  j[key] = field;
}

template <class T>
void write_json_field(nlohmann::json& j, const char* key, const std::optional<T>& field) {
  j[key] = field ? nlohmann::json(*field) : nlohmann::json(nullptr);
}

// A diffusers config.json: the class header plus every field `fields(config, visitor)` lists.
template <class Config, class Fields>
nlohmann::json config_to_json(const Config& config, const char* class_name, Fields&& fields) {
  nlohmann::json j;
  j["_class_name"] = class_name;
  j["_diffusers_version"] = "0.32.2";
  fields(config, [&j](const char* key, const auto& field) { write_json_field(j, key, field); });
  return j;
}

// Reads a diffusers config of `class_name` (one without _class_name is accepted) and validates it.
template <class Config, class Fields>
Config config_from_json(const nlohmann::json& j, const char* class_name, const std::string& source, Fields&& fields) {
  CVX_CHECK_AS(FormatError, j.is_object(), source, ": expected a JSON object");
  if (j.contains("_class_name")) {
    CVX_CHECK_AS(FormatError, j["_class_name"] == class_name, source, ": _class_name is ", j["_class_name"].dump(),
                 ", expected \"", class_name, "\"");
  }
  Config c;
  fields(c, [&](const char* key, auto& field) { read_json_field(j, key, field, source); });
  c.validate(source);
  return c;
}

}  // namespace cvx
