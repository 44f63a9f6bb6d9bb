// What a training run hands to inference: the files diffusers and cvx_generate load, written from
// the engine's shards (no rank ever holds the full model).
//   LoRA: pytorch_lora_weights.safetensors, diffusers keys, alpha / r folded into lora_B (lora.h).
//   SFT:  a diffusers transformer/ folder: the base config.json and diffusion_pytorch_model
//         safetensors (sharded + index above max_shard_bytes, as save_pretrained splits), streamed
//         unit by unit.
//   Pipeline (optional): a complete diffusers folder: the trained transformer (SFT) or the LoRA
//   file beside links to the base model's components.
#pragma once
#include <filesystem>

#include "cvx/dist/fsdp_engine.h"
#include "cvx/model/transformer.h"

namespace cvx {

// Collective over the engine's groups; rank 0 writes `file` atomically.
void export_lora(FsdpEngine& engine, const CogVideoXTransformer& model, const std::filesystem::path& file,
                 torch::Dtype dtype);

// Collective; rank 0 writes `dir` (replaced whole, atomically) with the base model's
// transformer/config.json.
void export_transformer(FsdpEngine& engine, const CogVideoXTransformer& model,
                        const std::filesystem::path& base_transformer_dir, const std::filesystem::path& dir,
                        torch::Dtype dtype, uint64_t max_shard_bytes = 10ull << 30);

// Rank 0 only. `trained_transformer` (SFT) or `lora_file` (LoRA): exactly one is non-empty.
void export_pipeline(const std::filesystem::path& base_model, const std::filesystem::path& dir,
                     const std::filesystem::path& trained_transformer, const std::filesystem::path& lora_file);

}  // namespace cvx
