// The slow transformers `T5Tokenizer` (4.43, legacy mode) as the CogVideoX pipelines call it:
// `tokenizer(prompt, padding="max_length", max_length=226, truncation=True, add_special_tokens=True)`.
// Added tokens (`<pad>`, `</s>`, `<unk>`, `<extra_id_N>`) are cut out of the text first and map to
// their ids; every other stretch of text goes through sentencepiece (spiece.model).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cvx/model/model_variant.h"
#include "cvx/model/sentencepiece.h"

namespace cvx {

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool lstrip = false;  // whitespace before the token is dropped
  bool rstrip = false;  // whitespace after the token is dropped
};

// One prompt as the pipeline tokenises it.
struct TokenizedPrompt {
  std::vector<int64_t> ids;          // [max_length]: tokens, eos, then pad ids
  int64_t length = 0;                // tokens including eos, before the padding (the attention mask's ones)
  std::vector<int64_t> untruncated;  // every token plus eos, unpadded (the pipeline's "longest" call)
  bool truncated() const { return static_cast<int64_t>(untruncated.size()) > static_cast<int64_t>(ids.size()); }
};

// A batch of prompts, as the tensors the pipeline builds.
struct TokenizedBatch {
  torch::Tensor input_ids;            // [B, max_length] int64
  torch::Tensor attention_mask;       // [B, max_length] int64: 1 for tokens and eos, 0 for padding
  torch::Tensor untruncated_ids;      // [B, longest] int64, pad-padded
  torch::Tensor untruncated_lengths;  // [B] int64
  std::vector<TokenizedPrompt> prompts;
};

class T5Tokenizer {
 public:
  // Reads a transformers tokenizer folder: spiece.model and, when present, tokenizer_config.json
  // (added_tokens_decoder, special token names, extra_ids, legacy), special_tokens_map.json and
  // added_tokens.json. Throws ConfigError/FormatError naming the file.
  static T5Tokenizer load(const std::filesystem::path& dir);

  // Ids of `text` without eos or padding (`tokenizer.encode(text, add_special_tokens=False)`).
  std::vector<int64_t> encode(const std::string& text) const;
  // The pipeline call: at most max_length - 1 tokens, eos appended unless the last token is eos,
  // padded to max_length.
  TokenizedPrompt tokenize(const std::string& prompt, int64_t max_length = kMaxTextLength) const;
  TokenizedBatch tokenize(const std::vector<std::string>& prompts, int64_t max_length = kMaxTextLength) const;
  // `convert_ids_to_tokens`: the piece or added token of each id.
  std::string id_to_token(int64_t id) const;
  // Readable text of ids (for messages such as the truncation warning; not byte-exact with
  // transformers' decode around special tokens).
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t size() const;  // len(tokenizer): sentencepiece pieces plus added tokens beyond them
  int64_t pad_id() const { return pad_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t unk_id() const { return unk_id_; }
  int64_t model_max_length() const { return model_max_length_; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

 private:
  const AddedToken* added_token(int64_t id) const;
  SentencePiece sp_;
  std::vector<AddedToken> added_;  // sorted by id
  int64_t pad_id_ = 0, eos_id_ = 1, unk_id_ = 2;
  int64_t model_max_length_ = kMaxTextLength;
};

}  // namespace cvx
