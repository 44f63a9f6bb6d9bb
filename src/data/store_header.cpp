#include "cvx/data/store_header.h"

#include <cstdio>
#include <iomanip>
#include <sstream>

#include "cvx/core/error.h"
#include "cvx/core/shape.h"
#include "cvx/data/latent_store.h"
#include "cvx/io/json_file.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/t5_encoder.h"
#include "cvx/model/transformer_config.h"
#include "cvx/model/vae_config.h"

namespace fs = std::filesystem;

namespace cvx {
namespace {

std::string hex(uint64_t value) {
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << value;
  return os.str();
}

// Fields that may differ between a store and the run using it (see StoreHeader).
bool compared_field(const std::string& name) {
  return name != "format_version" && name != "model_path" && name != "cvx_version";
}

std::string field_text(const std::string& v) { return quote(v); }
std::string field_text(int64_t v) { return std::to_string(v); }
std::string field_text(bool v) { return v ? "true" : "false"; }
std::string field_text(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.17g", v);
  return buffer;
}
std::string field_text(const std::array<int64_t, 4>& v) { return shape_string(c10::IntArrayRef(v.data(), v.size())); }

}  // namespace

std::vector<std::pair<std::string, std::string>> store_header_fields(const StoreHeader& header) {
  std::vector<std::pair<std::string, std::string>> fields;
  visit_store_header(header,
                     [&](const char* name, const auto& value) { fields.emplace_back(name, field_text(value)); });
  return fields;
}

std::string store_header_differences(const StoreHeader& stored, const StoreHeader& other,
                                     const std::string& other_name) {
  const auto a = store_header_fields(stored);
  const auto b = store_header_fields(other);
  std::string differences;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!compared_field(a[i].first) || a[i].second == b[i].second) continue;
    differences += detail::concat(differences.empty() ? "" : "; ", a[i].first, ": stored ", a[i].second, ", ",
                                  other_name, " ", b[i].second);
  }
  return differences;
}

std::string model_fingerprint(const fs::path& model_folder) {
  std::string text;
  for (const char* part : {"vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer_config.json"})
    if (fs::exists(model_folder / part)) text += read_json_file(model_folder / part).dump();
  return hex(prompt_hash(text));
}

StoreHeader expected_store_header(const ModelConfig& model, const DataConfig& data) {
  const fs::path folder = model.path;
  const fs::path vae_file = folder / "vae" / "config.json";
  const fs::path t5_file = folder / "text_encoder" / "config.json";
  const fs::path transformer_file = folder / "transformer" / "config.json";
  const VAEConfig vae = VAEConfig::from_json(read_json_file(vae_file), vae_file.string());
  const T5Config t5 = T5Config::from_json(read_json_file(t5_file), t5_file.string());
  const TransformerConfig transformer =
      TransformerConfig::from_json(read_json_file(transformer_file), transformer_file.string());
  const Resolution resolution = data.resolution();

  StoreHeader header;
  header.model_path = fs::weakly_canonical(folder).string();
  header.model_fingerprint = model_fingerprint(folder);
  header.variant = transformer.variant();
  header.frames = resolution.frames;
  header.height = resolution.height;
  header.width = resolution.width;
  header.latent_shape = {vae.latent_channels, vae.latent_frames(resolution.frames),
                         resolution.height / vae.spatial_compression_ratio(),
                         resolution.width / vae.spatial_compression_ratio()};
  header.frame_sampling = data.frame_sampling;
  header.resize_mode = data.resize_mode;
  header.vae_scaling_factor = vae.scaling_factor;
  header.invert_scale_latents = vae.invert_scale_latents;
  header.max_text_length = kMaxTextLength;
  header.text_embed_dim = t5.d_model;
  return header;
}

}  // namespace cvx
