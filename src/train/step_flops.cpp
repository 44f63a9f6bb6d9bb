#include "cvx/train/step_flops.h"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

namespace cvx {

int64_t video_tokens(const TransformerConfig& c, const StepGeometry& g) {
  const int64_t temporal = c.patch_size_t ? g.latent_frames / *c.patch_size_t : g.latent_frames;
  return temporal * (g.latent_height / c.patch_size) * (g.latent_width / c.patch_size);
}

double transformer_forward_flops(const TransformerConfig& c, const StepGeometry& g) {
  const double n = static_cast<double>(video_tokens(c, g));
  const double l = static_cast<double>(g.text_tokens);
  const double s = n + l;  // joint attention over [text; video]
  const double d = static_cast<double>(c.inner_dim());
  const double ff = 4 * d;  // CogVideoX blocks: ff_inner_dim unset, 4 x inner_dim
  const double e = static_cast<double>(c.time_embed_dim);
  const double pt = c.patch_size_t ? static_cast<double>(*c.patch_size_t) : 1.0;
  const double patch = static_cast<double>(c.patch_size * c.patch_size) * pt;
  double block = 4 * 2 * s * d * d     // to_q, to_k, to_v, to_out.0
                 + 2 * 2 * s * s * d   // scores and the weighted sum over all heads
                 + 2 * 2 * s * d * ff  // ff.net.0.proj, ff.net.2
                 + 2 * 2 * e * 6 * d;  // norm1.linear, norm2.linear (per sample)
  double total = static_cast<double>(c.num_layers) * block;
  total += 2 * n * static_cast<double>(c.in_channels) * patch * d;   // patch_embed.proj
  total += 2 * l * static_cast<double>(c.text_embed_dim) * d;        // patch_embed.text_proj
  total += 2 * n * d * static_cast<double>(c.out_channels) * patch;  // proj_out
  total += 2 * e * 2 * d;                                            // norm_out.linear
  return total;
}

double attention_forward_flops(const TransformerConfig& c, const StepGeometry& g) {
  const double s = static_cast<double>(video_tokens(c, g) + g.text_tokens);
  return static_cast<double>(c.num_layers) * 2 * 2 * s * s * static_cast<double>(c.inner_dim());
}

double training_step_flops(const TransformerConfig& c, const StepGeometry& g, bool full_finetune, bool recompute) {
  const double forward = transformer_forward_flops(c, g);
  const double attention = attention_forward_flops(c, g);
  // Backward: the weight matmuls give input gradients (x1) and, when trained, weight gradients
  // (x2 in all); attention has no weights but needs the gradients of both of its products' inputs
  // (dQ and dK from the scores, dP and dV from the weighted sum): x2 whether or not weights train.
  const double backward = (forward - attention) * (full_finetune ? 2.0 : 1.0) + 2.0 * attention;
  return forward * (recompute ? 2.0 : 1.0) + backward;
}

double device_peak_tflops(const std::string& device_name) {
  std::string name = device_name;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::toupper(ch); });
  // Datasheet dense bf16 (tensor core, no sparsity).
  static const std::vector<std::pair<std::string, double>> table{
      {"H200", 989.0}, {"H100", 989.0}, {"H800", 989.0}, {"GH200", 989.0}, {"B200", 2250.0}, {"B100", 1750.0},
      {"A100", 312.0}, {"A800", 312.0}, {"L40S", 362.0}, {"A6000", 155.0}, {"V100", 125.0}};
  for (const auto& [key, tflops] : table)
    if (name.find(key) != std::string::npos) return tflops;
  return 0.0;
}

}  // namespace cvx
