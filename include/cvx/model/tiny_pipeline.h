// Tiny random-initialised models in the diffusers folder layout, so demos and end-to-end tests need
// no download. Shapes follow the variant (patching, positional scheme, I2V channels, ofs), widths are
// tiny. Norm weights and biases are randomised on top of the default init (as in the golden set), so
// a component that ignores or mis-loads a 1-D parameter changes the outputs.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "cvx/model/transformer.h"

namespace cvx {

// A tiny transformer of a released `variant` (model_variant.h), randomly initialised from `seed`.
CogVideoXTransformer make_tiny_transformer(const std::string& variant, uint64_t seed);

// Writes `dir/transformer/` and `dir/vae/` (config.json + diffusion_pytorch_model.safetensors each),
// `dir/scheduler/` (the released scheduler configuration of the variant) and `dir/model_index.json`
// naming the pipeline class of the variant and the components present.
void write_tiny_pipeline(const std::filesystem::path& dir, const std::string& variant, uint64_t seed);

}  // namespace cvx
