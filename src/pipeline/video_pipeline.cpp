#include "cvx/pipeline/video_pipeline.h"

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/pipeline/sequence_parallel_transformer.h"

extern "C" {
#include <libswscale/swscale.h>
}

namespace cvx {

VideoPipeline VideoPipeline::load(const std::filesystem::path& model_path, torch::Dtype dtype,
                                  std::optional<torch::Dtype> vae_dtype, torch::Device device) {
  const auto folder = ModelFolder::open(model_path);
  VideoPipeline p;
  p.transformer = load_transformer(model_path / "transformer", dtype);
  p.transformer->eval();
  p.vae = load_vae(model_path / "vae", vae_dtype.value_or(dtype));
  p.vae->eval();
  p.prompt_encoder = std::make_shared<PromptEncoder>(PromptEncoder::load(model_path, dtype));
  const auto scheduler = folder.component("scheduler");
  p.scheduler_config = SchedulerConfig::from_json(scheduler.config, scheduler.config_file.string());
  p.device = device;
  if (device != torch::Device(torch::kCPU)) {
    p.transformer->to(device);
    p.vae->to(device);
    p.prompt_encoder->encoder()->to(device);
  }
  return p;
}

VideoPipeline VideoPipeline::from_parts(CogVideoXTransformer transformer, AutoencoderKLCogVideoX vae,
                                        SchedulerConfig scheduler_config, torch::Device device) {
  VideoPipeline p;
  p.transformer = std::move(transformer);
  p.vae = std::move(vae);
  p.scheduler_config = std::move(scheduler_config);
  p.device = device;
  return p;
}

SchedulerConfig sampling_scheduler(SchedulerConfig base, const std::string& choice, const std::string& variant) {
  CVX_CHECK_AS(ConfigError, choice == "auto" || choice == "dpm" || choice == "ddim", "scheduler must be auto, dpm or ",
               "ddim (got '", choice, "')");
  const bool dpm = choice == "dpm" || (choice == "auto" && variant != kVariant2b);
  base.class_name = dpm ? "CogVideoXDPMScheduler" : "CogVideoXDDIMScheduler";
  base.timestep_spacing = "trailing";
  return base;
}

void VideoPipeline::resolve_geometry(GenerateRequest& r) const {
  const auto& c = transformer->config;
  const bool v15 = c.patch_size_t.has_value();
  if (r.height == 0) r.height = v15 ? 768 : c.sample_height * 8;
  if (r.width == 0) r.width = v15 ? 1360 : c.sample_width * 8;
  if (r.num_frames == 0) r.num_frames = c.sample_frames;
  CVX_CHECK_AS(ConfigError, r.height % 16 == 0 && r.width % 16 == 0, "height and width must be multiples of 16 (VAE ",
               "factor 8 x patch size 2); got ", r.height, "x", r.width);
  CVX_CHECK_AS(ConfigError, r.num_frames >= 1 && (r.num_frames - 1) % 4 == 0, "num_frames must be 4N+1 (the VAE ",
               "compresses 4 frames after the first; CogVideoX is trained on 8N+1 such as 49 or 81); got ",
               r.num_frames);
  CVX_CHECK_AS(ConfigError, !c.is_i2v() || r.image.defined(), "this is an image-to-video model: give an image");
  CVX_CHECK_AS(ConfigError, c.is_i2v() || !r.image.defined(), "this is a text-to-video model: it takes no image");
}

torch::Tensor VideoPipeline::prepare_image(const torch::Tensor& image_u8, int64_t height, int64_t width) const {
  CVX_CHECK_AS(ConfigError, image_u8.dim() == 3 && image_u8.size(2) == 3 && image_u8.scalar_type() == torch::kUInt8,
               "the I2V image must be [H, W, 3] uint8 RGB, got ", image_u8.sizes());
  torch::Tensor image = image_u8.contiguous();
  if (image.size(0) != height || image.size(1) != width) {
    // Lanczos like the reference's PIL resize (not bit-identical to PIL's filter).
    auto resized = torch::empty({height, width, 3}, torch::kUInt8);
    SwsContext* sws = sws_getContext(static_cast<int>(image.size(1)), static_cast<int>(image.size(0)), AV_PIX_FMT_RGB24,
                                     static_cast<int>(width), static_cast<int>(height), AV_PIX_FMT_RGB24, SWS_LANCZOS,
                                     nullptr, nullptr, nullptr);
    CVX_CHECK(sws != nullptr, "cannot set up the image resize");
    const uint8_t* src[1] = {image.data_ptr<uint8_t>()};
    const int src_stride[1] = {static_cast<int>(3 * image.size(1))};
    uint8_t* dst[1] = {resized.data_ptr<uint8_t>()};
    const int dst_stride[1] = {static_cast<int>(3 * width)};
    sws_scale(sws, src, src_stride, 0, static_cast<int>(image.size(0)), dst, dst_stride);
    sws_freeContext(sws);
    image = resized;
  }
  return (image.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32) / 255.0) * 2 - 1;
}

torch::Tensor VideoPipeline::decode(const torch::Tensor& latents) {
  torch::NoGradGuard no_grad;
  const auto z = unscale_latents(latents.permute({0, 2, 1, 3, 4}).to(vae->dtype()), vae->config);
  const auto video = vae->decode(z);  // [1, 3, F, H, W]
  return (video.to(torch::kCPU, torch::kFloat32) * 0.5 + 0.5).clamp(0, 1)[0].permute({1, 0, 2, 3}).contiguous();
}

GenerateResult VideoPipeline::generate(const GenerateRequest& request_in, const DenoiseCallback& callback) {
  torch::NoGradGuard no_grad;
  GenerateRequest r = request_in;
  resolve_geometry(r);
  const auto& c = transformer->config;
  GenerateResult result;
  const bool cfg = r.denoise.guidance_scale > 1.0;
  CVX_CHECK(r.prompt_embeds.defined() || prompt_encoder,
            "this pipeline has no prompt encoder: the request must carry prompt_embeds");
  CVX_CHECK(!cfg || r.prompt_embeds.defined() == r.negative_prompt_embeds.defined(),
            "give both prompt_embeds and negative_prompt_embeds (guidance_scale > 1), or neither");
  const auto embed = [&](const std::string& text, const torch::Tensor& given) {
    return (given.defined() ? given.to(device) : prompt_encoder->encode({text}, r.max_sequence_length))
        .to(transformer->dtype());
  };
  result.prompt_embeds = embed(r.prompt, r.prompt_embeds);
  if (cfg) result.negative_prompt_embeds = embed(r.negative_prompt, r.negative_prompt_embeds);
  const auto dtype = result.prompt_embeds.scalar_type();

  // Latent geometry; 1.5 pads the latent frame count to a multiple of patch_size_t with extra frames at the front.
  int64_t frames = (r.num_frames - 1) / 4 + 1;
  int64_t extra = 0;
  if (c.patch_size_t && frames % *c.patch_size_t != 0) extra = *c.patch_size_t - frames % *c.patch_size_t;
  frames += extra;
  const int64_t h = r.height / 8, w = r.width / 8;
  const int64_t channels = c.is_i2v() ? c.in_channels / 2 : c.in_channels;

  auto generator = at::detail::createCPUGenerator(r.seed);
  if (c.is_i2v()) {
    // The image latent is drawn before the initial noise (the reference's generator order).
    const auto image =
        prepare_image(r.image, r.height, r.width).to(device, vae->dtype()).unsqueeze(2);  // [1, 3, 1, H, W]
    const auto posterior = vae->encode(image);
    auto latent = scale_image_latents(posterior.sample(generator), vae->config).to(dtype);  // [1, C, 1, h, w]
    latent = latent.permute({0, 2, 1, 3, 4});
    result.image_latents = torch::cat({latent, torch::zeros({1, frames - 1, channels, h, w}, latent.options())}, 1);
  }
  // Drawn on the CPU generator in the model dtype, then moved (diffusers' randn_tensor).
  auto latents =
      r.initial_latents.defined()
          ? r.initial_latents.to(device, dtype)
          : torch::randn({1, frames, channels, h, w}, generator, torch::TensorOptions().dtype(dtype)).to(device);
  auto rope = pipeline_rotary_embedding(c, r.height, r.width, frames);
  if (rope.cos.defined()) rope = {rope.cos.to(device), rope.sin.to(device)};
  std::optional<torch::Tensor> ofs;
  if (c.ofs_embed_dim) ofs = torch::full({1}, 2.0, torch::TensorOptions().dtype(dtype).device(device));

  CogVideoXScheduler scheduler(scheduler_config);
  const TransformerCall call =
      sequence_group != nullptr && sequence_group->size() > 1
          ? SequenceParallelTransformer(transformer, *sequence_group).call()
          : TransformerCall([this](const torch::Tensor& x, const torch::Tensor& e, const torch::Tensor& t,
                                   const std::optional<torch::Tensor>& o,
                                   const RotaryEmbedding* rp) { return transformer->forward(x, e, t, o, rp); });
  result.final_latents =
      denoise(call, scheduler, latents, result.prompt_embeds, result.negative_prompt_embeds, result.image_latents, ofs,
              rope.cos.defined() ? &rope : nullptr, r.denoise, generator_noise(generator), callback);
  if (r.decode) result.video = decode(result.final_latents.narrow(1, extra, frames - extra));
  return result;
}

}  // namespace cvx
