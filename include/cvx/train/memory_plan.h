// Planning a training run before anything is allocated: the transformer it trains (from the model
// folder, or the variant's preset when there is none), the engine options its config implies, and
// the per-rank memory report for a world of any size (an unmaterialised model planned over a fake
// world: nothing the size of the model is allocated).
#pragma once
#include <string>
#include <vector>

#include "cvx/data/data_config.h"
#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/memory_report.h"
#include "cvx/model/transformer_config.h"
#include "cvx/train/trainer.h"

namespace cvx {

// transformer/config.json of [model] path when it exists, else the preset of [model] variant.
// `source` says which. Throws ConfigError when there is neither (variant = auto, no folder).
TransformerConfig resolve_transformer_config(const ModelConfig& model, std::string* source = nullptr);

// The engine options of a run: [parallel] sharding/prefetch/reduce_dtype, [train] mixed_precision
// (the compute dtype of every tensor) and gradient_checkpointing (units recompute in backward).
FsdpOptions engine_options(const TrainRunConfig& config);

// Activation memory of one rank for a clip of `resolution` (the lines of the report): with
// checkpointing, each block's input (hidden + text, c bytes per element) is kept, plus one block's
// activations while it recomputes and back-propagates, estimated as 34 B S D c / 2 bytes
// (Korthikanti et al. 2022 for a transformer layer with 16-bit activations and fused attention;
// CogVideoX's blocks have the same 4x MLP); without checkpointing every block's. With sequence
// parallelism S counts one rank's tokens: ceil(video tokens / P) + the text tokens.
std::vector<MemoryLine> activation_estimate(const TransformerConfig& config, const Resolution& resolution,
                                            int64_t batch_size, bool checkpointing, int compute_bytes,
                                            int64_t sequence_parallel = 1);

// I2V with image_latents = encode: the VAE encoder every rank keeps (unsharded, compute dtype;
// from [model] path's vae/config.json, or the transformer variant's VAE preset). Its per-step
// encode is transient and bounded by [train] enable_tiling (bench/i2v_encoder_cpu.sh).
MemoryLine i2v_encoder_line(const TrainRunConfig& config, const TransformerConfig& transformer, torch::Dtype dtype);

// The report for `world_size` ranks, as rank 0 prints it.
std::string plan_memory_report(const TrainRunConfig& config, int world_size);

}  // namespace cvx
