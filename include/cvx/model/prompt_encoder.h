// Prompt -> text embedding exactly as the CogVideoX pipelines do it (`_get_t5_prompt_embeds`):
// tokenise to max_sequence_length (226) with eos and padding, run the T5 encoder WITHOUT an
// attention mask, keep all positions. Also the tiny tokenizer + text encoder of demo model folders.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cvx/model/model_variant.h"
#include "cvx/model/t5_encoder.h"
#include "cvx/model/t5_tokenizer.h"

namespace cvx {

struct EncodedPrompts {
  torch::Tensor embeddings;  // [B, max_sequence_length, d_model] in the encoder's dtype
  TokenizedBatch tokens;     // ids, and per prompt whether it was truncated
};

class PromptEncoder {
 public:
  PromptEncoder(T5Tokenizer tokenizer, T5Encoder encoder);
  // `tokenizer/` and `text_encoder/` of a diffusers pipeline folder, the encoder in `dtype`.
  static PromptEncoder load(const std::filesystem::path& model_folder, torch::Dtype dtype = torch::kBFloat16);

  // [B, max_sequence_length, d_model] on the encoder's device. Prompts are encoded `batch_size` at a
  // time (without a mask the rows are independent, so the result does not depend on it). A prompt
  // that does not fit is truncated, with a warning naming the text that was cut, like the pipeline.
  torch::Tensor encode(const std::vector<std::string>& prompts, int64_t max_sequence_length = kMaxTextLength);
  EncodedPrompts encode_with_tokens(const std::vector<std::string>& prompts,
                                    int64_t max_sequence_length = kMaxTextLength);

  void set_batch_size(int64_t batch_size);
  int64_t batch_size() const { return batch_size_; }
  const T5Tokenizer& tokenizer() const { return tokenizer_; }
  T5Encoder& encoder() { return encoder_; }

 private:
  T5Tokenizer tokenizer_;
  T5Encoder encoder_;
  int64_t batch_size_ = 8;
};

// The text that truncation removed from `prompt` (empty when nothing was cut): the pipeline's warning.
std::string truncated_text(const T5Tokenizer& tokenizer, const TokenizedPrompt& prompt);

// The tiny tokenizer shipped in resources/tiny_t5/tokenizer (a unigram spiece.model trained on a small
// English corpus, plus 100 <extra_id_N> tokens), found through $CVX_RESOURCE_DIR or the source tree.
std::filesystem::path tiny_tokenizer_dir();
// Writes `dir/text_encoder/` (transformers layout: a 2-layer T5 encoder of width `d_model`, random init
// from `seed`, 1-D weights randomised too) and `dir/tokenizer/` (copy of the tiny tokenizer); returns
// their model_index.json entries. `d_model` must be the transformer's text_embed_dim.
nlohmann::json write_tiny_text_encoder(const std::filesystem::path& dir, uint64_t seed, int64_t d_model);

}  // namespace cvx
