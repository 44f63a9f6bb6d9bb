// Sinusoidal timestep embedding (diffusers get_timestep_embedding).
#include <cmath>

#include "cvx/core/error.h"
#include "cvx/model/embeddings.h"

namespace cvx {

// [N] -> [N, dim] float32
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                                 double downscale_freq_shift, double scale, double max_period) {
  CVX_CHECK(timesteps.dim() == 1, "timestep_embedding: timesteps must be 1-D, got shape ", timesteps.sizes());
  CVX_CHECK(dim >= 1, "timestep_embedding: dim must be positive, got ", dim);
  const int64_t half = dim / 2;
  CVX_CHECK(half == 0 || static_cast<double>(half) != downscale_freq_shift,
            "timestep_embedding: downscale_freq_shift equals dim/2 (", half, "): the frequencies divide by zero");

  // Same op sequence and dtypes as the reference (float32 arange times a double constant, divided by a
  // double, then exp): each step rounds to float32, so folding the constants would change bits.
  auto exponent = torch::arange(half, timesteps.options().dtype(torch::kFloat32)) * (-std::log(max_period));
  exponent = exponent / (static_cast<double>(half) - downscale_freq_shift);
  const auto freqs = torch::exp(exponent);                                      // [half]
  auto args = timesteps.unsqueeze(1).to(torch::kFloat32) * freqs.unsqueeze(0);  // [N, half]
  args = args * scale;

  auto emb = flip_sin_to_cos ? torch::cat({torch::cos(args), torch::sin(args)}, 1)
                             : torch::cat({torch::sin(args), torch::cos(args)}, 1);  // [N, 2*half]
  if (dim % 2 == 1) emb = torch::constant_pad_nd(emb, {0, 1});
  return emb;  // [N, dim]
}

}  // namespace cvx
