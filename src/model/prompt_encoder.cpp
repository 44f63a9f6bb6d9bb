#include "cvx/model/prompt_encoder.h"

#include <cstdlib>

#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/io/model_folder.h"

namespace fs = std::filesystem;

namespace cvx {

PromptEncoder::PromptEncoder(T5Tokenizer tokenizer, T5Encoder encoder)
    : tokenizer_(std::move(tokenizer)), encoder_(std::move(encoder)) {
  // An id past the embedding table would index out of range inside the encoder.
  CVX_CHECK_AS(ConfigError, tokenizer_.size() <= encoder_->config.vocab_size, "the tokenizer has ", tokenizer_.size(),
               " tokens but the text encoder's embedding only ", encoder_->config.vocab_size,
               " rows: tokenizer/ and text_encoder/ do not belong together");
}

PromptEncoder PromptEncoder::load(const fs::path& model_folder, torch::Dtype dtype) {
  return PromptEncoder(T5Tokenizer::load(model_folder / "tokenizer"),
                       load_t5_encoder(model_folder / "text_encoder", dtype));
}

void PromptEncoder::set_batch_size(int64_t batch_size) {
  CVX_CHECK_AS(ConfigError, batch_size > 0, "the prompt encoder batch size must be positive, got ", batch_size);
  batch_size_ = batch_size;
}

torch::Tensor PromptEncoder::encode(const std::vector<std::string>& prompts, int64_t max_sequence_length) {
  return encode_with_tokens(prompts, max_sequence_length).embeddings;
}

EncodedPrompts PromptEncoder::encode_with_tokens(const std::vector<std::string>& prompts, int64_t max_sequence_length) {
  EncodedPrompts out;
  out.tokens = tokenizer_.tokenize(prompts, max_sequence_length);
  for (const auto& p : out.tokens.prompts) {
    if (p.truncated())
      CVX_WARN << "The following part of your input was truncated because `max_sequence_length` is set to "
               << max_sequence_length << " tokens: " << truncated_text(tokenizer_, p);
  }
  torch::NoGradGuard no_grad;
  const auto& ids = out.tokens.input_ids;  // [B, L]
  const int64_t n = ids.size(0);
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < n; start += batch_size_)
    parts.push_back(encoder_->forward(ids.narrow(0, start, std::min(batch_size_, n - start))));
  out.embeddings = parts.empty() ? torch::empty({0, max_sequence_length, encoder_->config.d_model},
                                                torch::TensorOptions(encoder_->dtype()).device(encoder_->device()))
                                 : torch::cat(parts);  // [B, L, D]
  return out;
}

std::string truncated_text(const T5Tokenizer& tokenizer, const TokenizedPrompt& prompt) {
  if (!prompt.truncated()) return "";
  // The pipeline decodes untruncated[max_length - 1 : -1]: what was cut, without the final eos.
  const auto& all = prompt.untruncated;
  return tokenizer.decode(std::vector<int64_t>(all.begin() + (prompt.ids.size() - 1), all.end() - 1));
}

// ---------------------------------------------------------------- tiny model

fs::path tiny_tokenizer_dir() {
  const char* env = std::getenv("CVX_RESOURCE_DIR");
  const fs::path dir = fs::path(env && *env ? env : CVX_SOURCE_DIR "/resources") / "tiny_t5" / "tokenizer";
  CVX_CHECK_AS(ConfigError, fs::exists(dir / "spiece.model"), "the tiny tokenizer is missing: no ",
               (dir / "spiece.model").string(), " (set CVX_RESOURCE_DIR to the resources folder of the source tree)");
  return dir;
}

nlohmann::json write_tiny_text_encoder(const fs::path& dir, uint64_t seed, int64_t d_model) {
  const fs::path tokenizer_dir = tiny_tokenizer_dir();
  T5Config c;
  // Like T5's 32100 -> 32128: the table is rounded up past the tokenizer's ids.
  c.vocab_size = (T5Tokenizer::load(tokenizer_dir).size() + 63) / 64 * 64;
  c.d_model = d_model;
  c.d_kv = 8;
  c.num_heads = 2;
  c.d_ff = 2 * d_model;
  c.num_layers = 2;
  torch::manual_seed(seed);
  auto model = make_t5_encoder(c);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      if (p.dim() == 1) p.normal_(1.0, 0.1);  // the norm weights: a loader that skips them shows up
    }
  }
  SaveOptions options;
  options.weights_base = "model";
  save_component(dir / "text_encoder", c.to_json(), module_state(*model), options);
  fs::create_directories(dir / "tokenizer");
  fs::copy(tokenizer_dir, dir / "tokenizer", fs::copy_options::overwrite_existing | fs::copy_options::recursive);
  return {{"text_encoder", {"transformers", "T5EncoderModel"}}, {"tokenizer", {"transformers", "T5Tokenizer"}}};
}

}  // namespace cvx
