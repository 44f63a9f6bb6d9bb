// cvx_inspect PATH: what is inside a safetensors file, a sharded index, a diffusers component
// folder, a whole pipeline folder (every tensor's name, dtype, shape and size, plus configs) or a
// latent store (header attributes and the per-sample table).
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>

#include "cvx/core/error.h"
#include "cvx/core/format_bytes.h"
#include "cvx/core/shape.h"
#include "cvx/data/latent_store.h"
#include "cvx/io/model_folder.h"
#include "cvx/io/safetensors.h"

namespace fs = std::filesystem;

namespace {

void print_tensors(const cvx::TensorSource& source, const std::string& indent) {
  const auto names = source.names();
  size_t name_width = 4;
  for (const auto& n : names) name_width = std::max(name_width, n.size());
  uint64_t total = 0;
  std::map<std::string, size_t> per_dtype;
  for (const auto& n : names) {
    const auto& info = source.info(n);
    const std::string shape = cvx::shape_string(info.shape);
    std::printf("%s%-*s  %-4s  %-22s  %llu\n", indent.c_str(), static_cast<int>(name_width), n.c_str(),
                info.dtype.c_str(), shape.c_str(), static_cast<unsigned long long>(info.num_bytes()));
    total += info.num_bytes();
    ++per_dtype[info.dtype];
  }
  std::string dtypes;
  for (const auto& [dtype, count] : per_dtype)
    dtypes += (dtypes.empty() ? "" : ", ") + std::to_string(count) + " " + dtype;
  std::printf("%s%zu tensors (%s), %s\n", indent.c_str(), names.size(), dtypes.empty() ? "none" : dtypes.c_str(),
              cvx::format_bytes(total, 1).c_str());
}

void print_metadata(const cvx::TensorSource& source, const std::string& indent) {
  const auto metadata = source.metadata();
  if (metadata.empty()) return;
  std::printf("%smetadata:", indent.c_str());
  for (const auto& [k, v] : metadata) std::printf(" %s=%s", k.c_str(), v.c_str());
  std::printf("\n");
}

// The scalar entries of a config, "key=value" joined, wrapped to ~100 columns.
void print_config(const cvx::ComponentFolder& c, const std::string& indent) {
  if (c.config_file.empty()) return;
  std::printf("%sconfig (%s):", indent.c_str(), c.config_file.filename().c_str());
  size_t column = indent.size() + 10 + c.config_file.filename().string().size();
  for (const auto& [key, value] : c.config.items()) {
    if (key.empty() || key[0] == '_' || value.is_object()) continue;
    std::string text = value.is_string() ? value.get<std::string>() : value.dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    const std::string item = " " + key + "=" + text;
    if (column + item.size() > 100) {
      std::printf("\n%s   ", indent.c_str());
      column = indent.size() + 3;
    }
    std::printf("%s", item.c_str());
    column += item.size();
  }
  std::printf("\n");
}

void print_component(const cvx::ComponentFolder& c, const std::string& indent) {
  std::printf("%s%s/  %s\n", indent.c_str(), c.name.c_str(), c.class_name().c_str());
  print_config(c, indent + "  ");
  if (c.weights) {
    std::printf("%s  weights: %s\n", indent.c_str(), c.weights->description().c_str());
    print_metadata(*c.weights, indent + "  ");
    print_tensors(*c.weights, indent + "  ");
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int inspect(const fs::path& path) {
  const std::string name = path.filename().string();
  if (fs::is_directory(path)) {
    if (fs::exists(path / "model_index.json")) {
      const auto folder = cvx::ModelFolder::open(path);
      std::printf("%s: diffusers pipeline %s, components: ", path.c_str(), folder.class_name().c_str());
      for (const auto& n : folder.component_names()) std::printf("%s ", n.c_str());
      std::printf("\n");
      for (const auto& n : folder.component_names()) print_component(folder.component(n), "  ");
      return 0;
    }
    print_component(cvx::open_component(path), "");
    return 0;
  }
  CVX_CHECK_AS(cvx::ConfigError, fs::exists(path), path.string(), " does not exist");
  if (ends_with(name, ".safetensors") || ends_with(name, ".safetensors.index.json")) {
    const auto source = cvx::open_tensor_source(path);
    std::printf("%s\n", source->description().c_str());
    print_metadata(*source, "  ");
    print_tensors(*source, "  ");
    return 0;
  }
  if (ends_with(name, ".h5")) {
    cvx::print_store(path);
    return 0;
  }
  CVX_THROW_AS(cvx::ConfigError, "don't know how to inspect ", path.string(),
               ": expected a .safetensors file, a .safetensors.index.json, a latent store (.h5), or a diffusers "
               "model/component folder");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fprintf(argc == 2 ? stdout : stderr,
                 "usage: cvx_inspect PATH\n"
                 "  PATH: a .safetensors file, a *.safetensors.index.json, a diffusers component folder\n"
                 "        (config.json + weights), a pipeline folder (model_index.json) or a latent store (.h5)\n"
                 "Prints every tensor's name, dtype, shape and byte size, and each component's config.\n");
    return argc == 2 ? 0 : 2;
  }
  try {
    return inspect(argv[1]);
  } catch (const cvx::Error& e) {
    std::fprintf(stderr, "cvx_inspect: error: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cvx_inspect: error: %s: %s\n", argv[1], e.what());
  }
  return 1;
}
