#include "cvx/train/validation.h"

#include <algorithm>
#include <boost/algorithm/string/trim.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>

#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/data/dataset_lists.h"
#include "cvx/data/image_io.h"
#include "cvx/data/video_writer.h"
#include "cvx/io/json_file.h"
#include "cvx/model/module_init.h"
#include "cvx/model/prompt_encoder.h"
#include "cvx/pipeline/video_pipeline.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {

std::string video_name(const ValidationPrompt& p) {
  char index[16];
  std::snprintf(index, sizeof(index), "%03lld", static_cast<long long>(p.index));
  return std::string(index) + "_" + prompt_slug(p.prompt);
}

constexpr int64_t kStripGap = 4;  // pixels between the frames of a contact-sheet row

fs::path strip_file(const fs::path& dir, int64_t index) { return dir / (".strip-" + std::to_string(index) + ".png"); }

// The size along one axis that tiled decoding gives for `latent` latent pixels (run_tiled in
// vae.cpp keeps keep_* pixels of every tile). For the released VAEs it is latent x ratio; for
// tiles too small for the overlap (tiny test VAEs) it is not, as in diffusers.
int64_t tiled_decode_extent(int64_t latent, int64_t stride, int64_t tile, int64_t keep, int64_t ratio) {
  int64_t out = 0;
  for (int64_t i = 0; i < latent; i += stride) out += std::min(keep, std::min(tile, latent - i) * ratio);
  return out;
}

// Refuses, before training, a tiled decode that would not give height x width frames.
void check_tiled_decode(const fs::path& model_path, int64_t height, int64_t width) {
  const fs::path file = model_path / "vae" / "config.json";
  const VAEConfig config = VAEConfig::from_json(read_json_file(file), file.string());
  const int64_t ratio = config.spatial_compression_ratio();
  AutoencoderKLCogVideoX vae(config, ModuleInit::unmaterialized(torch::kFloat32));
  const std::string fix =
      "set [validation] vae_tiling = false (the VAE's tiles, half its sample_height x "
      "sample_width, are too small for tiled decoding)";
  try {
    vae->enable_tiling();
  } catch (const ConfigError& e) {
    CVX_THROW_AS(ConfigError, "[validation] vae_tiling: ", e.message(), ": ", fix);
  }
  const auto g = vae->decode_tile_geometry();
  const int64_t h = height / ratio, w = width / ratio;
  const bool tiled = h > vae->tiling().latent_min_height || w > vae->tiling().latent_min_width;
  if (!tiled) return;
  const int64_t out_h = tiled_decode_extent(h, g.stride_height, g.tile_height, g.keep_height, ratio);
  const int64_t out_w = tiled_decode_extent(w, g.stride_width, g.tile_width, g.keep_width, ratio);
  CVX_CHECK_AS(ConfigError, out_h == height && out_w == width, "[validation] vae_tiling: the VAE of ",
               model_path.string(), " would decode ", height, "x", width, " videos in tiles to ", out_h, "x", out_w,
               " frames: ", fix);
}

}  // namespace

std::string prompt_slug(const std::string& prompt, size_t max_length) {
  std::string slug;
  for (unsigned char c : prompt) {
    if (std::isalnum(c) && c < 128) {
      slug += static_cast<char>(std::tolower(c));
    } else if (!slug.empty() && slug.back() != '_') {
      slug += '_';
    }
    if (slug.size() >= max_length) break;
  }
  slug.resize(std::min(slug.size(), max_length));
  while (!slug.empty() && slug.back() == '_') slug.pop_back();
  return slug.empty() ? "prompt" : slug;
}

std::vector<std::string> split_list_option(const std::string& text, const std::string& option) {
  std::vector<std::string> out;
  const std::string separator = ":::";
  size_t begin = 0;
  while (true) {
    const size_t end = text.find(separator, begin);
    const std::string piece =
        boost::algorithm::trim_copy(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    CVX_CHECK_AS(ConfigError, !piece.empty(), option, " has an empty entry (#", out.size() + 1,
                 "): entries are separated by ':::', e.g. \"a cat:::a dog\"");
    out.push_back(piece);
    if (end == std::string::npos) break;
    begin = end + separator.size();
  }
  return out;
}

std::vector<ValidationPrompt> load_validation_prompts(const ValidationConfig& config, bool i2v) {
  std::vector<ValidationPrompt> out;
  if (!config.dir.empty()) {
    const fs::path dir = config.dir;
    const fs::path prompts_file = dir / config.caption_column;
    CVX_CHECK_AS(ConfigError, fs::exists(prompts_file), "[validation] dir = ", config.dir, " has no ",
                 config.caption_column, " (one prompt a line; caption_column names the file)");
    for (const auto& [line, text] : read_list_file(prompts_file)) {
      ValidationPrompt p;
      p.index = static_cast<int64_t>(out.size());
      p.prompt = boost::algorithm::trim_copy(text);
      p.where = prompts_file.string() + " line " + std::to_string(line);
      out.push_back(std::move(p));
    }
    CVX_CHECK_AS(ConfigError, !out.empty(), prompts_file.string(), " holds no prompt");
    if (i2v) {
      const fs::path images_file = dir / config.image_column;
      CVX_CHECK_AS(ConfigError, fs::exists(images_file), "image-to-video validation needs ", images_file.string(),
                   " (one first-frame image a line, matching ", config.caption_column, "; image_column names it)");
      const auto images = read_list_file(images_file);
      CVX_CHECK_AS(ConfigError, images.size() == out.size(), images_file.string(), " has ", images.size(),
                   " images but ", prompts_file.string(), " has ", out.size(), " prompts: give one image a prompt");
      for (size_t i = 0; i < images.size(); ++i) {
        fs::path image = boost::algorithm::trim_copy(images[i].second);
        if (image.is_relative()) image = images_file.parent_path() / image;
        out[i].image = image.lexically_normal();
        CVX_CHECK_AS(ConfigError, fs::exists(out[i].image), "image ", out[i].image.string(), " (", images_file.string(),
                     " line ", images[i].first, ") does not exist");
      }
    }
    return out;
  }
  const auto prompts = split_list_option(config.prompts, "[validation] prompts");
  for (size_t i = 0; i < prompts.size(); ++i) {
    ValidationPrompt p;
    p.index = static_cast<int64_t>(i);
    p.prompt = prompts[i];
    p.where = "[validation] prompts #" + std::to_string(i + 1);
    out.push_back(std::move(p));
  }
  if (i2v) {
    CVX_CHECK_AS(ConfigError, !config.images.empty(),
                 "image-to-video validation needs images: [validation] images = \"first.png:::second.png\", one "
                 "per prompt");
    const auto images = split_list_option(config.images, "[validation] images");
    CVX_CHECK_AS(ConfigError, images.size() == out.size(), "[validation] images has ", images.size(),
                 " entries but prompts has ", out.size(), ": give one image a prompt");
    for (size_t i = 0; i < images.size(); ++i) {
      out[i].image = fs::path(images[i]).lexically_normal();
      CVX_CHECK_AS(ConfigError, fs::exists(out[i].image), "image ", images[i], " ([validation] images #", i + 1,
                   ") does not exist");
    }
  } else {
    CVX_CHECK_AS(ConfigError, config.images.empty(),
                 "[validation] images is set but this is a text-to-video model: remove it");
  }
  return out;
}

torch::Tensor contact_strip(const torch::Tensor& frames, int64_t height, int64_t gap) {
  CVX_CHECK(frames.dim() == 4 && frames.size(3) == 3 && frames.scalar_type() == torch::kUInt8,
            "contact_strip takes [F, H, W, 3] uint8 frames, got ", frames.sizes());
  const int64_t count = frames.size(0);
  auto picked = torch::stack({frames[0], frames[count / 2], frames[count - 1]});  // [3, H, W, 3]
  if (picked.size(1) > height) {
    const int64_t width = std::max<int64_t>(1, picked.size(2) * height / picked.size(1));
    auto x = picked.permute({0, 3, 1, 2}).to(torch::kFloat32);
    x = torch::nn::functional::interpolate(
        x,
        torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{height, width}).mode(torch::kArea));
    picked = x.round().clamp(0, 255).to(torch::kUInt8).permute({0, 2, 3, 1});
  }
  const int64_t h = picked.size(1), w = picked.size(2);
  auto strip = torch::full({h, 3 * w + 2 * gap, 3}, 255, torch::kUInt8);
  for (int64_t i = 0; i < 3; ++i) strip.narrow(1, i * (w + gap), w).copy_(picked[i]);
  return strip;
}

torch::Tensor stack_strips(const std::vector<torch::Tensor>& strips, int64_t gap) {
  CVX_CHECK(!strips.empty(), "stack_strips needs at least one strip");
  const int64_t h = strips[0].size(0), w = strips[0].size(1);
  const int64_t n = static_cast<int64_t>(strips.size());
  auto sheet = torch::full({n * h + (n - 1) * gap, w, 3}, 255, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    CVX_CHECK(strips[i].sizes() == strips[0].sizes(), "contact sheet rows differ in size: ", strips[i].sizes(), " vs ",
              strips[0].sizes());
    sheet.narrow(0, i * (h + gap), h).copy_(strips[i]);
  }
  return sheet;
}

Validator::Validator(const ValidationConfig& config, ValidationSetup setup, int rank, int world_size)
    : config_(config), setup_(std::move(setup)), rank_(rank), world_size_(world_size) {
  prompts_ = load_validation_prompts(config_, setup_.transformer.is_i2v());
  // The VAE runs in fp32 on the CPU (no fast bf16 convolutions there), as cvx_generate.
  vae_dtype_ = setup_.device.is_cuda() ? setup_.dtype : torch::kFloat32;
  if (config_.vae_tiling)
    check_tiled_decode(setup_.model_path, config_.height > 0 ? config_.height : setup_.height,
                       config_.width > 0 ? config_.width : setup_.width);
  embeds_.resize(prompts_.size());
}

void Validator::encode_prompts() {
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> mine;
  for (const auto& p : prompts_)
    if (p.index % world_size_ == rank_) mine.push_back(p.prompt);
  const int64_t length = setup_.transformer.max_text_seq_length;
  dummy_embeds_ = torch::zeros({1, length, setup_.transformer.text_embed_dim}, torch::kFloat32);
  const bool cfg = config_.guidance_scale > 1.0;
  if (!mine.empty()) {
    PromptEncoder encoder = PromptEncoder::load(setup_.model_path, setup_.dtype);
    if (setup_.device.is_cuda()) encoder.encoder()->to(setup_.device);
    if (cfg) mine.push_back(config_.negative_prompt);
    const auto all = encoder.encode(mine, length).to(torch::kCPU);  // [n, L, D]
    int64_t row = 0;
    for (const auto& p : prompts_)
      if (p.index % world_size_ == rank_) embeds_[static_cast<size_t>(p.index)] = all.slice(0, row, row + 1), ++row;
    if (cfg) negative_embeds_ = all.slice(0, row, row + 1);
  }  // T5 freed here
  if (cfg && !negative_embeds_.defined()) negative_embeds_ = dummy_embeds_;
  CVX_INFO << "validation: " << prompts_.size() << " prompt(s), " << mine.size() - (cfg && !mine.empty() ? 1 : 0)
           << " on this rank, encoded in "
           << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s (T5 freed again)";
}

bool Validator::due(int64_t step, int64_t total_steps) const {
  return step == total_steps || (config_.every_steps > 0 && step % config_.every_steps == 0);
}

AutoencoderKLCogVideoX Validator::acquire_vae() {
  AutoencoderKLCogVideoX vae{nullptr};
  if (config_.keep_vae == "cpu") {
    if (kept_vae_.is_empty()) kept_vae_ = load_vae(setup_.model_path / "vae", vae_dtype_);
    vae = kept_vae_;
    if (setup_.device.is_cuda()) vae->to(setup_.device);
  } else {
    vae = load_vae(setup_.model_path / "vae", vae_dtype_, setup_.device);
  }
  vae->eval();
  if (config_.vae_tiling) {
    vae->enable_tiling();
  } else {
    vae->disable_tiling();
  }
  if (config_.vae_slicing) {
    vae->enable_slicing();
  } else {
    vae->disable_slicing();
  }
  return vae;
}

void Validator::release_vae(AutoencoderKLCogVideoX& vae) {
  if (config_.keep_vae == "cpu" && setup_.device.is_cuda()) vae->to(torch::kCPU);
  vae = AutoencoderKLCogVideoX{nullptr};
}

ValidationResult Validator::run(int64_t step, CogVideoXTransformer& transformer, Communicator& comm,
                                Communicator* sequence_group) {
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  ValidationResult result;
  result.dir = setup_.output_dir / "validation" / ("step-" + std::to_string(step));
  result.num_videos = num_prompts();
  const bool writer = sequence_group == nullptr || sequence_group->rank() == 0;
  if (comm.rank() == 0) fs::create_directories(result.dir);
  comm.barrier();

  AutoencoderKLCogVideoX vae = acquire_vae();
  VideoPipeline pipeline = VideoPipeline::from_parts(
      transformer, vae, sampling_scheduler(setup_.scheduler, config_.scheduler, setup_.transformer.variant()),
      setup_.device);
  pipeline.sequence_group = sequence_group;
  const int64_t fps = config_.fps > 0 ? config_.fps : (setup_.transformer.patch_size_t ? 16 : 8);

  const int64_t rounds = (num_prompts() + world_size_ - 1) / world_size_;
  std::vector<std::string> rendered;
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t index = round * world_size_ + rank_;
    const bool real = index < num_prompts();
    GenerateRequest request;
    request.num_frames = config_.num_frames > 0 ? config_.num_frames : setup_.frames;
    request.height = config_.height > 0 ? config_.height : setup_.height;
    request.width = config_.width > 0 ? config_.width : setup_.width;
    request.denoise.num_inference_steps = config_.num_inference_steps;
    request.denoise.guidance_scale = config_.guidance_scale;
    request.denoise.use_dynamic_cfg = config_.use_dynamic_cfg;
    request.seed = static_cast<uint64_t>(config_.seed);
    request.max_sequence_length = setup_.transformer.max_text_seq_length;
    request.negative_prompt_embeds = negative_embeds_;
    request.decode = real && writer;
    if (real) {
      const auto& p = prompts_[static_cast<size_t>(index)];
      request.prompt = p.prompt;
      request.prompt_embeds = embeds_[static_cast<size_t>(index)];
      if (setup_.transformer.is_i2v()) request.image = read_image(p.image);
    } else {
      // Joins the round's collectives (the engine's gathers) and discards the result.
      request.prompt_embeds = dummy_embeds_;
      if (setup_.transformer.is_i2v()) request.image = torch::zeros({request.height, request.width, 3}, torch::kUInt8);
    }
    const auto out = pipeline.generate(request);
    if (!real || !writer) continue;
    const auto& p = prompts_[static_cast<size_t>(index)];
    const auto frames = to_uint8_frames(out.video);  // [F, H, W, 3]
    VideoWriterOptions writer;
    writer.fps = static_cast<int>(fps);
    write_video(result.dir / (video_name(p) + ".mp4"), frames, writer);
    write_png(strip_file(result.dir, p.index), contact_strip(frames, config_.contact_sheet_height, kStripGap));
    rendered.push_back(video_name(p));
  }
  std::string names;
  for (const auto& n : rendered) names += (names.empty() ? "" : ", ") + n;
  CVX_INFO << "validation at step " << step << ": this rank rendered " << rendered.size() << " video(s)"
           << (names.empty() ? "" : ": " + names);
  release_vae(vae);
  comm.barrier();  // every rank's videos and strips are on disk

  if (comm.rank() == 0) {
    std::vector<torch::Tensor> strips;
    for (const auto& p : prompts_) {
      const fs::path file = strip_file(result.dir, p.index);
      strips.push_back(read_image(file));
      fs::remove(file);
      const int64_t w = (strips.back().size(1) - 2 * kStripGap) / 3;
      result.first_frames.emplace_back("validation/" + video_name(p), strips.back().narrow(1, 0, w).contiguous());
    }
    write_png(result.dir / "contact_sheet.png", stack_strips(strips, kStripGap));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CVX_INFO << "validation at step " << step << ": " << num_prompts() << " video(s) on " << world_size_
           << (sequence_group != nullptr && sequence_group->size() > 1
                   ? " sequence group(s) of " + std::to_string(sequence_group->size())
                   : std::string(""))
           << " rank(s) in " << result.seconds << " s (" << rounds << " round(s) of " << config_.num_inference_steps
           << " steps) -> " << result.dir.string();
  return result;
}

}  // namespace cvx
