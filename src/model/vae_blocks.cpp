// The building blocks of the CogVideoX VAE: spatial norm, resnet, temporal/spatial resampling.
#include "cvx/core/error.h"
#include "cvx/model/vae.h"

namespace cvx {
namespace F = torch::nn::functional;

namespace {

torch::Tensor nearest(const torch::Tensor& x, int64_t frames, int64_t height, int64_t width) {
  return F::interpolate(
      x, F::InterpolateFuncOptions().size(std::vector<int64_t>{frames, height, width}).mode(torch::kNearest));
}

// Nearest resize of [B, C, T, H, W] to `frames` x height x width. For an odd frame count > 1 the
// first frame is resized on its own and the rest to frames - 1: the first frame of a causal video
// stands alone (the spatial norm's latent conditioning and the temporal upsampler both do this).
torch::Tensor resize_keeping_first(const torch::Tensor& x, int64_t frames, int64_t height, int64_t width) {
  if (frames > 1 && frames % 2 == 1) {
    return torch::cat({nearest(x.narrow(2, 0, 1), 1, height, width),
                       nearest(x.narrow(2, 1, x.size(2) - 1), frames - 1, height, width)},
                      2);
  }
  return nearest(x, frames, height, width);
}

// A Conv2d applied to every frame: [B, C, T, H, W] -> [B, C', T, H', W'].
torch::Tensor per_frame(torch::nn::Conv2d& conv, const torch::Tensor& x) {
  const int64_t batch = x.size(0), frames = x.size(2);
  auto y = conv->forward(x.transpose(1, 2).flatten(0, 1));  // [B*T, C', H', W']
  return y.unflatten(0, {batch, frames}).transpose(1, 2);
}

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

}  // namespace

SpatialNorm3DImpl::SpatialNorm3DImpl(int64_t channels, int64_t latent_channels, int64_t groups,
                                     const ModuleInit& init) {
  norm_layer =
      register_module("norm_layer", adopt(group_norm(groups, channels, 1e-6), init));  // eps fixed in diffusers
  conv_y = register_module("conv_y", CausalConv3d(latent_channels, channels, 1, init));
  conv_b = register_module("conv_b", CausalConv3d(latent_channels, channels, 1, init));
}

torch::Tensor SpatialNorm3DImpl::forward(const torch::Tensor& f, const torch::Tensor& zq, ConvCache& cache) {
  const auto z = resize_keeping_first(zq, f.size(2), f.size(3), f.size(4));
  // norm(f) * y + b with at most two f-sized tensors alive besides f (same operations as diffusers).
  auto out = norm_layer->forward(f);
  out.mul_(conv_y->forward(z, cache));
  return out.add_(conv_b->forward(z, cache));
}

ResnetBlock3DImpl::ResnetBlock3DImpl(int64_t in_channels, int64_t out_channels, int64_t groups, double eps,
                                     int64_t latent_channels, const ModuleInit& init) {
  if (latent_channels > 0) {
    spatial_norm1 = register_module("norm1", SpatialNorm3D(in_channels, latent_channels, groups, init));
    spatial_norm2 = register_module("norm2", SpatialNorm3D(out_channels, latent_channels, groups, init));
  } else {
    group_norm1 = register_module("norm1", adopt(group_norm(groups, in_channels, eps), init));
    group_norm2 = register_module("norm2", adopt(group_norm(groups, out_channels, eps), init));
  }
  conv1 = register_module("conv1", CausalConv3d(in_channels, out_channels, 3, init));
  conv2 = register_module("conv2", CausalConv3d(out_channels, out_channels, 3, init));
  if (in_channels != out_channels)
    conv_shortcut = register_module("conv_shortcut", SafeConv3d(in_channels, out_channels, 1, 0, init));
}

torch::Tensor ResnetBlock3DImpl::norm(int index, const torch::Tensor& x, const torch::Tensor& zq, ConvCache& cache) {
  if (spatial_norm1) {
    CVX_CHECK(zq.defined(), "vae decoder resnet: the spatial norm needs the latent batch");
    return (index == 1 ? spatial_norm1 : spatial_norm2)->forward(x, zq, cache);
  }
  return (index == 1 ? group_norm1 : group_norm2)->forward(x);
}

torch::Tensor ResnetBlock3DImpl::forward(const torch::Tensor& x, const torch::Tensor& zq, ConvCache& cache) {
  // The norms return fresh tensors, so SiLU and the residual sum can work in place (same values).
  auto h = norm(1, x, zq, cache);
  h = conv1->forward(torch::silu_(h), cache);
  h = norm(2, h, zq, cache);
  h = conv2->forward(torch::silu_(h), cache);  // dropout p = 0
  return h.add_(conv_shortcut ? conv_shortcut->forward(x) : x);
}

Downsample3DImpl::Downsample3DImpl(int64_t channels, bool compress, const ModuleInit& init) : compress_time(compress) {
  conv = register_module("conv",
                         adopt(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).stride(2)), init));
}

torch::Tensor Downsample3DImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = input;
  const int64_t frames = x.size(2);
  if (compress_time && frames > 1) {
    // Pairwise frame means (diffusers' avg_pool1d, kernel 2: (a + b) / 2, the same rounding, and
    // libtorch 1.13 has no bf16 CPU avg_pool3d); an odd first frame passes through unchanged.
    const int64_t first = frames % 2;
    auto pooled = (x.slice(2, first, frames, 2) + x.slice(2, first + 1, frames, 2)).div_(2);
    x = first ? torch::cat({x.narrow(2, 0, 1), pooled}, 2) : pooled;
  }
  return per_frame(conv, torch::constant_pad_nd(x, {0, 1, 0, 1}));  // zero pad right and bottom
}

Upsample3DImpl::Upsample3DImpl(int64_t channels, bool compress, const ModuleInit& init) : compress_time(compress) {
  conv = register_module("conv",
                         adopt(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)), init));
}

torch::Tensor Upsample3DImpl::forward(const torch::Tensor& x) {
  const int64_t t = x.size(2);
  const int64_t frames = compress_time && t > 1 ? 2 * t - t % 2 : t;  // odd: 1 + 2 (t - 1)
  return per_frame(conv, resize_keeping_first(x, frames, 2 * x.size(3), 2 * x.size(4)));
}

VAEBlockImpl::VAEBlockImpl(int64_t in_channels, int64_t out_channels, int64_t num_resnets, int64_t groups, double eps,
                           int64_t latent_channels, Resample resample, bool compress_time, const ModuleInit& init) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t i = 0; i < num_resnets; ++i)
    resnets->push_back(
        ResnetBlock3D(i == 0 ? in_channels : out_channels, out_channels, groups, eps, latent_channels, init));
  if (resample == Resample::down)
    downsamplers =
        register_module("downsamplers", torch::nn::ModuleList(Downsample3D(out_channels, compress_time, init)));
  if (resample == Resample::up)
    upsamplers = register_module("upsamplers", torch::nn::ModuleList(Upsample3D(out_channels, compress_time, init)));
}

torch::Tensor VAEBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& zq, ConvCache& cache) {
  torch::Tensor h = x;
  for (const auto& resnet : *resnets) h = resnet->as<ResnetBlock3DImpl>()->forward(h, zq, cache);
  if (downsamplers) h = downsamplers->ptr<Downsample3DImpl>(0)->forward(h);
  if (upsamplers) h = upsamplers->ptr<Upsample3DImpl>(0)->forward(h);
  return h;
}

}  // namespace cvx
