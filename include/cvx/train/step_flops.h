// Floating-point work of one training step, counted from the transformer's configuration (matmuls
// and attention, 2 FLOPs per multiply-add): what the TFLOP/s and MFU columns of the step log
// divide by. Executed work, not "model FLOPs": the recomputed forward of checkpointed blocks is
// included, and the backward of a frozen weight computes only its input gradient (LoRA), of a
// trained one input and weight gradients (SFT); attention's backward is twice its forward. LoRA's own adapters (rank r
// against D, < 1%) and element-wise work (norms, activations, RoPE) are not counted.
#pragma once
#include <cstdint>
#include <string>

#include "cvx/model/model_variant.h"
#include "cvx/model/transformer_config.h"

namespace cvx {

struct StepGeometry {
  int64_t latent_frames = 0;  // as the transformer sees them (1.5: padded to even)
  int64_t latent_height = 0, latent_width = 0;
  int64_t text_tokens = kMaxTextLength;
};

// Video tokens of one sample.
int64_t video_tokens(const TransformerConfig& config, const StepGeometry& geometry);

// Forward FLOPs of one sample.
double transformer_forward_flops(const TransformerConfig& config, const StepGeometry& geometry);

// The part of the forward that is attention itself (scores and weighted sum, all blocks).
double attention_forward_flops(const TransformerConfig& config, const StepGeometry& geometry);

// Executed FLOPs of one sample's forward + backward: forward x (1 + recompute) + backward, the
// backward being 1 x the weight matmuls when the weights are frozen (LoRA: input gradients only)
// or 2 x when they train, plus 2 x attention either way. (LoRA at 81x768x1360, where attention is
// ~70% of the forward: 3.7 forwards with recompute, not 3.)
double training_step_flops(const TransformerConfig& config, const StepGeometry& geometry, bool full_finetune,
                           bool recompute);

// Dense bf16 peak of a device by name (CUDA device names such as "NVIDIA H100 80GB HBM3"), in
// TFLOP/s; 0 when unknown (CPUs): the MFU column is then left out.
double device_peak_tflops(const std::string& device_name);

}  // namespace cvx
