#include "cvx/pipeline/generate.h"

#include <chrono>
#include <cstdio>

#include "cvx/core/dtype_name.h"
#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/data/dataset_lists.h"
#include "cvx/data/image_io.h"
#include "cvx/data/video_writer.h"
#include "cvx/dist/sequence_parallel.h"
#include "cvx/dist/world_communicator.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/lora.h"
#include "cvx/model/model_variant.h"
#include "cvx/pipeline/video_pipeline.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {

std::vector<std::string> list_or_single(const std::string& single, const std::string& list_file) {
  if (!single.empty()) return {single};
  if (list_file.empty()) return {};
  std::vector<std::string> out;
  for (auto& [line, text] : read_list_file(list_file)) out.push_back(text);
  return out;
}

fs::path output_for(const fs::path& output, size_t index, size_t count) {
  if (count == 1) return output;
  char suffix[16];
  std::snprintf(suffix, sizeof(suffix), "_%03zu", index);
  return output.parent_path() / (output.stem().string() + suffix + output.extension().string());
}

}  // namespace

int run_generate(const AppContext& ctx, const GenerateConfig& config) {
  const auto prompts = list_or_single(config.prompt, config.prompt_file);
  auto images = list_or_single(config.image, config.image_file);
  CVX_CHECK_AS(ConfigError, !prompts.empty(), "no prompts in ", config.prompt_file);
  if (images.size() == 1 && prompts.size() > 1) images.assign(prompts.size(), images.front());
  CVX_CHECK_AS(ConfigError, images.empty() || images.size() == prompts.size(), "image_file ", config.image_file,
               " has ", images.size(), " entries but there are ", prompts.size(), " prompts");
  if (!config.image_file.empty()) {
    // Image paths in a list file are relative to the list file, like the dataset lists.
    for (auto& image : images)
      if (fs::path(image).is_relative()) image = (fs::path(config.image_file).parent_path() / image).string();
  }

  // Fail before the (slow) model load on inputs that cannot work.
  for (const auto& image : images) CVX_CHECK_AS(ConfigError, fs::exists(image), "image ", image, " does not exist");
  const auto dtype = parse_dtype(config.dtype, "dtype");
  // Sequence parallelism: groups of P consecutive ranks sample one video together; prompt i goes
  // to group i mod (world / P), and the group's first rank decodes and writes it.
  const int seq_size = static_cast<int>(config.sequence_parallel_size);
  CVX_CHECK_AS(ConfigError, ctx.mpi->size % seq_size == 0, "sequence_parallel_size = ", seq_size,
               " does not divide the ", ctx.mpi->size, " ranks: run a multiple of ", seq_size,
               " ranks or lower sequence_parallel_size");
  if (seq_size > 1) {
    const auto folder = open_component(fs::path(config.model_path) / "transformer");
    check_sequence_parallel_size(
        TransformerConfig::from_json(folder.config, folder.config_file.string()).num_attention_heads, seq_size);
  }
  const int group_index = ctx.mpi->rank / seq_size, num_groups = ctx.mpi->size / seq_size;
  const bool writer_rank = ctx.mpi->rank % seq_size == 0;
  // The VAE stays in fp32 on the CPU (no fast bf16 convolutions there); bf16 on GPUs.
  const torch::Device device = rank_device(*ctx.mpi);
  const bool cuda = device.is_cuda();
  std::unique_ptr<Communicator> world, sequence_group;
  if (seq_size > 1) {
    world = make_communicator(ParallelConfig{}, ctx.mpi->world, device);
    sequence_group = world->split(group_index, ctx.mpi->rank % seq_size, "sequence");
  }
  VideoPipeline pipeline = VideoPipeline::load(config.model_path, dtype, cuda ? dtype : torch::kFloat32, device);
  pipeline.sequence_group = sequence_group.get();
  if (seq_size > 1)
    CVX_INFO << "sequence parallel: " << seq_size << " ranks per video (group " << group_index << " of " << num_groups
             << "), " << pipeline.transformer->config.num_attention_heads / seq_size << " heads per rank in attention";
  CVX_INFO << "models loaded on " << device << " (" << config.dtype << ")";
  if (config.vae_tiling) pipeline.vae->enable_tiling();
  // auto: DPM for the 5b-class models and DDIM for 2b, as the official demo samples them.
  pipeline.scheduler_config =
      sampling_scheduler(pipeline.scheduler_config, config.scheduler, pipeline.transformer->config.variant());
  if (!config.lora_path.empty()) {
    const auto report = load_lora(*pipeline.transformer, config.lora_path, config.lora_scale);
    CVX_INFO << "LoRA " << config.lora_path << ": " << report.modules.size() << " layers, rank " << report.rank
             << ", scale " << report.scale << " (" << report.alpha_source << ", multiplier " << config.lora_scale
             << ")";
  }
  const int64_t fps = config.fps > 0 ? config.fps : (pipeline.transformer->config.patch_size_t ? 16 : 8);

  for (size_t i = 0; i < prompts.size(); ++i) {
    if (static_cast<int>(i % static_cast<size_t>(num_groups)) != group_index) continue;
    GenerateRequest request;
    request.prompt = prompts[i];
    request.negative_prompt = config.negative_prompt;
    if (!images.empty()) request.image = read_image(images[i]);
    request.num_frames = config.num_frames;
    request.height = config.height;
    request.width = config.width;
    request.denoise.num_inference_steps = config.num_inference_steps;
    request.denoise.guidance_scale = config.guidance_scale;
    request.denoise.use_dynamic_cfg = config.use_dynamic_cfg;
    request.seed = static_cast<uint64_t>(config.seed);
    request.decode = writer_rank;
    const auto start = std::chrono::steady_clock::now();
    auto progress = [&](const DenoiseStep& step) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double per_step = elapsed / static_cast<double>(step.index + 1);
      CVX_INFO << "prompt " << i + 1 << "/" << prompts.size() << " step " << step.index + 1 << "/"
               << config.num_inference_steps << " t=" << step.timestep << " " << per_step << " s/step, ETA "
               << per_step * static_cast<double>(config.num_inference_steps - step.index - 1) << " s";
    };
    const auto result = pipeline.generate(request, writer_rank ? DenoiseCallback(progress) : DenoiseCallback());
    if (!writer_rank) continue;
    const fs::path out = output_for(config.output, i, prompts.size());
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    const auto frames = to_uint8_frames(result.video);
    VideoWriterOptions writer;
    writer.fps = static_cast<int>(fps);
    write_video(out, frames, writer);
    if (config.save_frames) {
      const fs::path dir = out.parent_path() / (out.stem().string() + "_frames");
      fs::create_directories(dir);
      for (int64_t f = 0; f < frames.size(0); ++f) {
        char name[32];
        std::snprintf(name, sizeof(name), "frame_%04lld.png", static_cast<long long>(f));
        write_png(dir / name, frames[f]);
      }
    }
    CVX_INFO << "wrote " << out.string() << " (" << frames.size(0) << " frames, " << frames.size(2) << "x"
             << frames.size(1) << ", " << fps << " fps)";
  }
  return 0;
}

}  // namespace cvx
