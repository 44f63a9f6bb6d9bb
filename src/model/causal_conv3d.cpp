// CogVideoXSafeConv3d and CogVideoXCausalConv3d.
#include "cvx/model/vae.h"

namespace cvx {

SafeConv3dImpl::SafeConv3dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t padding,
                               const ModuleInit& init)
    : torch::nn::Conv3dImpl(torch::nn::Conv3dOptions(in_channels, out_channels, kernel).padding({0, padding, padding})),
      spatial_padding(padding) {
  apply_init(*this, init);
}

torch::Tensor SafeConv3dImpl::forward(const torch::Tensor& x) {
  // diffusers' estimate: 2 bytes per element of the spatially padded input, whatever the dtype
  // (0.32.2 pads before this conv). Large inputs are split along time as there, so a GPU run
  // makes the same cuDNN calls; the values are those of one convolution either way.
  const double elements = static_cast<double>(x.size(0)) * x.size(1) * x.size(2) *
                          static_cast<double>(x.size(3) + 2 * spatial_padding) * (x.size(4) + 2 * spatial_padding);
  const double gib = elements * 2 / (1024.0 * 1024.0 * 1024.0);
  if (gib <= 2) return Conv3dImpl::forward(x);
  const int64_t context = weight.size(2) - 1;  // temporal kernel - 1
  const auto chunks = x.chunk(static_cast<int64_t>(gib / 2) + 1, 2);
  std::vector<torch::Tensor> outputs;
  for (size_t i = 0; i < chunks.size(); ++i) {
    torch::Tensor piece = chunks[i];
    if (i > 0 && context > 0) {
      const auto& previous = chunks[i - 1];
      piece = torch::cat({previous.slice(2, std::max<int64_t>(0, previous.size(2) - context)), piece}, 2);
    }
    outputs.push_back(Conv3dImpl::forward(piece));
  }
  return torch::cat(outputs, 2);
}

CausalConv3dImpl::CausalConv3dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, const ModuleInit& init)
    : time_kernel(kernel) {
  conv = register_module("conv", SafeConv3d(in_channels, out_channels, kernel, (kernel - 1) / 2, init));
}

torch::Tensor CausalConv3dImpl::forward(const torch::Tensor& x, ConvCache& cache) {
  if (time_kernel == 1) return conv->forward(x);  // no temporal context, nothing to hand over
  const int64_t context = time_kernel - 1;
  auto& cached = cache[this];
  std::vector<torch::Tensor> pieces;
  if (cached.defined()) {
    pieces.push_back(cached);
  } else {
    pieces.assign(static_cast<size_t>(context), x.narrow(2, 0, 1));
  }
  pieces.push_back(x);
  const auto padded = torch::cat(pieces, 2);
  pieces.clear();
  cached = padded.narrow(2, padded.size(2) - context, context).clone();  // replaces (frees) the old context
  return conv->forward(padded);
}

}  // namespace cvx
