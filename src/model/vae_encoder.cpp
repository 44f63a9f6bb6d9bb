// CogVideoXEncoder3D: one frame batch of pixels -> latent moments.
#include "cvx/model/vae.h"

namespace cvx {

VAEEncoderImpl::VAEEncoderImpl(const VAEConfig& c, const ModuleInit& init) {
  const auto& channels = c.block_out_channels;
  const int64_t blocks = static_cast<int64_t>(channels.size()), groups = c.norm_num_groups;
  conv_in = register_module("conv_in", CausalConv3d(c.in_channels, channels[0], 3, init));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < blocks; ++i) {
    const bool last = i == blocks - 1;
    down_blocks->push_back(VAEBlock(channels[std::max<int64_t>(i - 1, 0)], channels[i], c.layers_per_block, groups,
                                    c.norm_eps, 0, last ? VAEBlockImpl::Resample::none : VAEBlockImpl::Resample::down,
                                    i < c.temporal_compression_levels(), init));
  }
  mid_block = register_module("mid_block", VAEBlock(channels.back(), channels.back(), 2, groups, c.norm_eps, 0,
                                                    VAEBlockImpl::Resample::none, false, init));
  // diffusers fixes this eps at 1e-6 whatever norm_eps says.
  norm_out = register_module(
      "norm_out", adopt(torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels.back()).eps(1e-6)), init));
  conv_out = register_module("conv_out", CausalConv3d(channels.back(), 2 * c.latent_channels, 3, init));
}

torch::Tensor VAEEncoderImpl::forward(const torch::Tensor& x, ConvCache& cache) {
  const torch::Tensor none;
  auto h = conv_in->forward(x, cache);
  for (const auto& block : *down_blocks) h = block->as<VAEBlockImpl>()->forward(h, none, cache);
  h = mid_block->forward(h, none, cache);
  h = norm_out->forward(h);
  return conv_out->forward(torch::silu_(h), cache);
}

}  // namespace cvx
