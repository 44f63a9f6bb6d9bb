#include "cvx/train/training_loss.h"

#include <string>

#include "cvx/core/error.h"
#include "cvx/core/shape.h"

namespace cvx {
namespace {

void check_shape(const torch::Tensor& t, const char* name, c10::IntArrayRef expected) {
  CVX_CHECK(t.defined(), "training loss: ", name, " is missing (expected ", shape_string(expected), ")");
  CVX_CHECK(t.sizes() == expected, "training loss: ", name, " has shape ", shape_string(t.sizes()), ", expected ",
            shape_string(expected));
}

// [B] -> [B, 1, 1, 1, 1]
torch::Tensor per_sample(const torch::Tensor& values) { return values.reshape({-1, 1, 1, 1, 1}); }

torch::Tensor cat_field(const std::vector<LossDraws>& parts, torch::Tensor LossDraws::*field, const char* name) {
  const bool defined = (parts.front().*field).defined();
  std::vector<torch::Tensor> pieces;
  for (const auto& p : parts) {
    CVX_CHECK((p.*field).defined() == defined, "concatenate_loss_draws: ", name,
              " is defined in some parts and not in others");
    if (!defined) continue;
    auto piece = p.*field;
    // A per-batch sigma [1] stands for every sample of its part.
    if (field == &LossDraws::image_noise_sigma && piece.numel() == 1)
      piece = piece.reshape({1}).expand({p.timesteps.size(0)});
    pieces.push_back(piece);
  }
  return defined ? torch::cat(pieces, 0) : torch::Tensor();
}

// The image-condition latents [B, 1, C, h, w] (scaled, dropout applied), from the images (encode)
// or the cached clean-image moments.
torch::Tensor image_latents_of(const LossInputs& inputs, const LossDraws& draws, const LossOptions& options,
                               AutoencoderKLCogVideoX* vae, int64_t batch, int64_t channels, int64_t height,
                               int64_t width, const torch::Device& device) {
  const bool encode = inputs.images.defined();
  CVX_CHECK(encode != inputs.image_moments.defined(),
            "training loss: an I2V model takes exactly one of the images (mode encode) and the cached image "
            "moments (mode cached); got ",
            encode ? "both" : "neither");
  check_shape(draws.image_latent_eps, "image_latent_eps", {batch, channels, 1, height, width});
  LatentDistribution posterior;
  if (encode) {
    CVX_CHECK(vae != nullptr, "training loss: image latents mode encode needs the VAE");
    CVX_CHECK(inputs.images.dim() == 4 && inputs.images.size(0) == batch && inputs.images.size(1) == 3,
              "training loss: images has shape ", shape_string(inputs.images.sizes()), ", expected [", batch,
              ", 3, H, W]");
    const int64_t img_h = inputs.images.size(2), img_w = inputs.images.size(3);
    check_shape(draws.image_noise, "image_noise", {batch, 3, 1, img_h, img_w});
    CVX_CHECK(draws.image_noise_sigma.defined() &&
                  (draws.image_noise_sigma.numel() == 1 || draws.image_noise_sigma.numel() == batch),
              "training loss: image_noise_sigma must hold 1 or ", batch, " values");
    const auto images = inputs.images.to(device, torch::kFloat32).unsqueeze(2);  // [B, 3, 1, H, W]
    const auto sigma = per_sample(draws.image_noise_sigma.to(device, torch::kFloat32));
    const auto noisy_images = images + draws.image_noise.to(device, torch::kFloat32) * sigma;
    torch::NoGradGuard no_grad;  // the VAE is frozen
    torch::Tensor moments;
    try {
      moments = (*vae)->encode_moments(noisy_images.to((*vae)->dtype()));
    } catch (const c10::Error& e) {
      // Tiles of a model with a small sample size (tiny test models) can leave edge tiles smaller
      // than the encoder's downsampling; say which setting is involved.
      const auto tile = (*vae)->encode_tile_geometry();
      CVX_THROW("VAE encode of the I2V conditioning images ", shape_string(noisy_images.sizes()), " failed",
                (*vae)->tiling_enabled() ? detail::concat(" (tiled: tiles of ", tile.tile_height, "x", tile.tile_width,
                                                          " px every ", tile.stride_height, "x", tile.stride_width,
                                                          " px; [train] enable_tiling = false encodes whole frames)")
                                         : std::string(),
                ": ", e.what_without_backtrace());
    }
    posterior = LatentDistribution::from_moments(moments.to(torch::kFloat32));
  } else {
    check_shape(inputs.image_moments, "image_moments", {batch, 2 * channels, 1, height, width});
    posterior = LatentDistribution::from_moments(inputs.image_moments.to(device, torch::kFloat32));
  }
  auto latents = posterior.sample(draws.image_latent_eps.to(device, torch::kFloat32));  // [B, C, 1, h, w]
  latents = options.image_scale == ImageLatentScale::multiply ? latents * options.vae_scaling_factor
                                                              : latents / options.vae_scaling_factor;
  if (draws.image_keep.defined()) {
    check_shape(draws.image_keep, "image_keep", {batch});
    latents = latents * per_sample(draws.image_keep.to(device, torch::kFloat32));
  }
  return latents.permute({0, 2, 1, 3, 4}).detach();  // [B, 1, C, h, w]
}

}  // namespace

int64_t padded_latent_frames(const TransformerConfig& config, int64_t latent_frames) {
  return config.patch_size_t ? latent_frames + latent_frames % *config.patch_size_t : latent_frames;
}

LossDraws draw_loss_randoms(at::Generator generator, const TransformerConfig& config, int64_t batch,
                            int64_t latent_channels, int64_t latent_frames, int64_t latent_height, int64_t latent_width,
                            int64_t image_height, int64_t image_width, bool i2v, bool encode_images,
                            double image_dropout, int64_t num_train_timesteps) {
  CVX_CHECK(batch > 0 && num_train_timesteps > 0, "draw_loss_randoms: batch and num_train_timesteps must be positive");
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  const int64_t frames = padded_latent_frames(config, latent_frames);
  LossDraws d;
  d.timesteps = torch::randint(0, num_train_timesteps, {batch}, generator, torch::TensorOptions().dtype(torch::kLong));
  d.noise = torch::randn({batch, frames, latent_channels, latent_height, latent_width}, generator, f32);
  if (!i2v) return d;
  if (encode_images) {
    d.image_noise_sigma = torch::exp(torch::normal(-3.0, 0.5, {batch}, generator, f32));
    d.image_noise = torch::randn({batch, 3, 1, image_height, image_width}, generator, f32);
  }
  d.image_latent_eps = torch::randn({batch, latent_channels, 1, latent_height, latent_width}, generator, f32);
  d.image_keep = torch::rand({batch}, generator, f32) >= image_dropout;
  return d;
}

LossDraws concatenate_loss_draws(const std::vector<LossDraws>& parts) {
  CVX_CHECK(!parts.empty(), "concatenate_loss_draws: no parts");
  LossDraws d;
  d.timesteps = cat_field(parts, &LossDraws::timesteps, "timesteps");
  d.noise = cat_field(parts, &LossDraws::noise, "noise");
  d.image_noise_sigma = cat_field(parts, &LossDraws::image_noise_sigma, "image_noise_sigma");
  d.image_noise = cat_field(parts, &LossDraws::image_noise, "image_noise");
  d.image_latent_eps = cat_field(parts, &LossDraws::image_latent_eps, "image_latent_eps");
  d.image_keep = cat_field(parts, &LossDraws::image_keep, "image_keep");
  return d;
}

LossOutputs compute_training_loss(CogVideoXTransformer& transformer, const CogVideoXScheduler& scheduler,
                                  const LossInputs& inputs, const LossDraws& draws, const LossOptions& options,
                                  AutoencoderKLCogVideoX* vae) {
  const TransformerConfig& config = transformer->config;
  CVX_CHECK(options.i2v == config.is_i2v(), "training loss: options say ", options.i2v ? "I2V" : "T2V",
            " but the transformer (in_channels ", config.in_channels, ", out_channels ", config.out_channels, ") is ",
            config.is_i2v() ? "I2V" : "T2V");
  CVX_CHECK(inputs.latents.defined() && inputs.latents.dim() == 5 && inputs.latents.size(1) == config.out_channels,
            "training loss: latents must be [B, ", config.out_channels, ", F, h, w], got ",
            inputs.latents.defined() ? shape_string(inputs.latents.sizes()) : std::string("none"));
  const auto device = inputs.latents.device();
  // [B, C, F', h, w]
  auto x0 = inputs.latents.to(torch::kFloat32).detach();
  const int64_t batch = x0.size(0), channels = x0.size(1), height = x0.size(3), width = x0.size(4);
  const int64_t ncopy = padded_latent_frames(config, x0.size(2)) - x0.size(2);
  if (ncopy > 0) x0 = torch::cat({x0.narrow(2, 0, 1).repeat({1, 1, ncopy, 1, 1}), x0}, 2);
  const int64_t frames = x0.size(2);
  x0 = x0.permute({0, 2, 1, 3, 4});  // [B, F, C, h, w]

  check_shape(draws.timesteps, "timesteps", {batch});
  check_shape(draws.noise, "noise", {batch, frames, channels, height, width});
  const auto t = draws.timesteps.to(device, torch::kLong);
  CVX_CHECK(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < scheduler.config().num_train_timesteps,
            "training loss: timesteps must lie in [0, ", scheduler.config().num_train_timesteps, ")");
  CVX_CHECK(inputs.prompt_embeds.defined() && inputs.prompt_embeds.dim() == 3 && inputs.prompt_embeds.size(0) == batch,
            "training loss: prompt_embeds must be [", batch, ", L, D]");

  LossOutputs out;
  out.latent = x0;
  out.noisy_latents = scheduler.add_noise(x0, draws.noise.to(device, torch::kFloat32), t);  // [B, F, C, h, w]
  out.transformer_input = out.noisy_latents;
  if (options.i2v) {
    const auto first = image_latents_of(inputs, draws, options, vae, batch, channels, height, width, device);
    out.image_latents =
        torch::cat({first, torch::zeros({batch, frames - 1, channels, height, width}, first.options())}, 1);
    out.transformer_input = torch::cat({out.noisy_latents, out.image_latents}, 2);  // [B, F, 2C, h, w]
  }

  const auto dtype = transformer->dtype();
  RotaryEmbedding rope = training_rotary_embedding(config, height, width, frames);
  if (rope.cos.defined()) {
    rope.cos = rope.cos.to(device);
    rope.sin = rope.sin.to(device);
  }
  std::optional<torch::Tensor> ofs;
  if (config.ofs_embed_dim) ofs = torch::full({1}, 2.0, torch::TensorOptions().dtype(dtype).device(device));
  if (options.token_slice.length >= 0) {
    // This rank's tokens only; x_t and x0 cut the same way, each term over the whole sample's count.
    const VideoTokenSlice slice = options.token_slice;
    out.model_pred = transformer
                         ->forward_tokens(out.transformer_input.to(dtype), inputs.prompt_embeds.to(device, dtype), t,
                                          ofs, rope.cos.defined() ? &rope : nullptr, slice)
                         .to(torch::kFloat32);  // [B, n, K]
    const auto noisy = transformer->patchify(out.noisy_latents).narrow(1, slice.offset, slice.length);
    const auto target = transformer->patchify(x0).narrow(1, slice.offset, slice.length);
    out.latent_pred = scheduler.get_velocity(out.model_pred, noisy, t);
    out.weights = scheduler.loss_weights(t).to(device);
    const double elements = static_cast<double>(x0[0].numel());
    out.per_sample_loss =
        (out.weights.reshape({-1, 1, 1}) * (out.latent_pred - target).pow(2)).reshape({batch, -1}).sum(1) / elements;
    out.loss = out.per_sample_loss.mean();
    return out;
  }
  out.model_pred = transformer
                       ->forward(out.transformer_input.to(dtype), inputs.prompt_embeds.to(device, dtype), t, ofs,
                                 rope.cos.defined() ? &rope : nullptr)
                       .to(torch::kFloat32);

  // The reference's order of operations: x0_hat and the squared error in float32, then the float64
  // weight promotes the product.
  out.latent_pred = scheduler.get_velocity(out.model_pred, out.noisy_latents, t);
  out.weights = scheduler.loss_weights(t).to(device);  // [B] float64
  out.per_sample_loss =
      (per_sample(out.weights) * (out.latent_pred - x0).pow(2)).reshape({batch, -1}).mean(1);  // [B] float64
  out.loss = out.per_sample_loss.mean();
  return out;
}

}  // namespace cvx
