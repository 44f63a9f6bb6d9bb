#include "cvx/io/json_file.h"

#include <fstream>
#include <sstream>

#include "cvx/core/error.h"
#include "cvx/io/atomic_file.h"

namespace cvx {

nlohmann::json read_json_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  CVX_CHECK_AS(ConfigError, in.good(), "cannot read ", file.string(), " (missing or unreadable)");
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(buffer.str());
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() carries "line L, column C"; keep only that part of the library's message.
    std::string what = e.what();
    const auto at = what.find("at line");
    CVX_THROW_AS(FormatError, file.string(), " is not valid JSON",
                 at == std::string::npos ? std::string() : " (" + what.substr(at) + ")");
  }
}

void write_json_file(const std::filesystem::path& file, const nlohmann::json& value) {
  write_file_atomically(file, value.dump(2) + "\n");
}

}  // namespace cvx
