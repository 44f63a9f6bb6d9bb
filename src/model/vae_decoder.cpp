// CogVideoXDecoder3D: one latent frame batch -> pixels.
#include "cvx/model/vae.h"

namespace cvx {

VAEDecoderImpl::VAEDecoderImpl(const VAEConfig& c, const ModuleInit& init) {
  const std::vector<int64_t> channels(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  const int64_t blocks = static_cast<int64_t>(channels.size()), groups = c.norm_num_groups, zc = c.latent_channels;
  conv_in = register_module("conv_in", CausalConv3d(zc, channels[0], 3, init));
  mid_block = register_module("mid_block", VAEBlock(channels[0], channels[0], 2, groups, c.norm_eps, zc,
                                                    VAEBlockImpl::Resample::none, false, init));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < blocks; ++i) {
    const bool last = i == blocks - 1;
    up_blocks->push_back(VAEBlock(channels[std::max<int64_t>(i - 1, 0)], channels[i], c.layers_per_block + 1, groups,
                                  c.norm_eps, zc, last ? VAEBlockImpl::Resample::none : VAEBlockImpl::Resample::up,
                                  i < c.temporal_compression_levels(), init));
  }
  norm_out = register_module("norm_out", SpatialNorm3D(channels.back(), zc, groups, init));
  conv_out = register_module("conv_out", CausalConv3d(channels.back(), c.out_channels, 3, init));
}

torch::Tensor VAEDecoderImpl::forward(const torch::Tensor& z, ConvCache& cache) {
  auto h = conv_in->forward(z, cache);
  h = mid_block->forward(h, z, cache);
  for (const auto& block : *up_blocks) h = block->as<VAEBlockImpl>()->forward(h, z, cache);
  h = norm_out->forward(h, z, cache);
  return conv_out->forward(torch::silu_(h), cache);
}

}  // namespace cvx
