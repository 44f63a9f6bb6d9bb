#include "cvx/model/t5_tokenizer.h"

#include <limits>

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"

namespace fs = std::filesystem;

namespace cvx {
namespace {

nlohmann::json read_optional_json(const fs::path& file) {
  return fs::exists(file) ? read_json_file(file) : nlohmann::json::object();
}

// A special token entry is either the token text or an AddedToken object {"content": ...}.
std::string token_content(const nlohmann::json& value, const std::string& source) {
  if (value.is_string()) return value.get<std::string>();
  CVX_CHECK_AS(FormatError, value.is_object() && value.contains("content") && value["content"].is_string(), source,
               ": expected a token string or an object with \"content\", got ", value.dump());
  return value["content"].get<std::string>();
}

// Length of the Python-whitespace code point (str.isspace) that starts / ends at `s[i]`, or 0.
size_t space_at(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20)) return 1;
  auto cp3 = [&](size_t j) -> uint32_t {  // a 3-byte sequence at j
    return ((s[j] & 0x0f) << 12) | ((s[j + 1] & 0x3f) << 6) | (s[j + 2] & 0x3f);
  };
  if (c == 0xc2 && i + 1 < s.size()) {
    const auto d = static_cast<unsigned char>(s[i + 1]);
    return d == 0x85 || d == 0xa0 ? 2 : 0;
  }
  if ((c == 0xe1 || c == 0xe2 || c == 0xe3) && i + 2 < s.size()) {
    const uint32_t cp = cp3(i);
    const bool space = cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
                       cp == 0x205f || cp == 0x3000;
    return space ? 3 : 0;
  }
  return 0;
}

// Python's str.lstrip() / str.rstrip() on UTF-8 text.
std::string lstrip(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = space_at(s, i);
    if (!n) break;
    i += n;
  }
  return s.substr(i);
}

std::string rstrip(const std::string& s) {
  size_t end = s.size();
  while (end > 0) {
    // The last code point starts at the last byte that is not a continuation byte.
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) --start;
    const size_t n = space_at(s, start);
    if (!n || start + n != end) break;
    end = start;
  }
  return s.substr(0, end);
}

}  // namespace

T5Tokenizer T5Tokenizer::load(const fs::path& dir) {
  CVX_CHECK_AS(ConfigError, fs::is_directory(dir), "tokenizer folder ", dir.string(), " does not exist");
  T5Tokenizer t;
  t.sp_ = SentencePiece::load(dir / "spiece.model");
  const fs::path config_file = dir / "tokenizer_config.json";
  const nlohmann::json config = read_optional_json(config_file);
  const nlohmann::json special = read_optional_json(dir / "special_tokens_map.json");
  const std::string source = config_file.string();

  // legacy=false strips the dummy prefix and re-adds it by hand, which gives different ids after
  // added tokens; the CogVideoX tokenizers (and google/t5-v1_1-xxl, where None means true) are legacy.
  CVX_CHECK_AS(ConfigError, !config.contains("legacy") || config["legacy"].is_null() || config["legacy"] == true,
               source, ": legacy=false T5 tokenizers are not supported (CogVideoX uses legacy=true)");
  if (config.contains("model_max_length") && config["model_max_length"].is_number()) {
    // transformers writes a huge float (1e30) when there is no limit.
    const double m = config["model_max_length"].get<double>();
    t.model_max_length_ = m < 1e15 ? static_cast<int64_t>(m) : std::numeric_limits<int64_t>::max();
  }

  std::map<int64_t, AddedToken> by_id;
  if (config.contains("added_tokens_decoder")) {
    for (const auto& [key, value] : config["added_tokens_decoder"].items()) {
      AddedToken token;
      try {
        token.id = std::stoll(key);
        token.content = value.at("content").get<std::string>();
        token.lstrip = value.value("lstrip", false);
        token.rstrip = value.value("rstrip", false);
      } catch (const std::exception& e) {
        CVX_THROW_AS(FormatError, source, ": added_tokens_decoder entry ", quote(key), " is malformed (", e.what(),
                     ")");
      }
      by_id[token.id] = token;
    }
  } else {
    // Older folders: T5Tokenizer creates <extra_id_i> itself, counting down from the last id.
    const int64_t extra_ids = config.value("extra_ids", 100);
    for (int64_t i = 0; i < extra_ids; ++i) {
      const int64_t id = t.sp_.piece_size() - 1 + extra_ids - i;
      by_id[id] = AddedToken{"<extra_id_" + std::to_string(i) + ">", id, true, true};
    }
    for (const auto& [content, id] : read_optional_json(dir / "added_tokens.json").items()) {
      CVX_CHECK_AS(FormatError, id.is_number_integer(), (dir / "added_tokens.json").string(), ": the id of ",
                   quote(content), " must be an integer, got ", id.dump());
      if (!by_id.count(id.get<int64_t>())) by_id[id.get<int64_t>()] = AddedToken{content, id.get<int64_t>()};
    }
  }
  // The special tokens are always split out of the text, at their vocabulary ids unless added above.
  auto special_id = [&](const char* key, const char* fallback) {
    std::string content = fallback;
    if (special.contains(key)) {
      content = token_content(special[key], (dir / "special_tokens_map.json").string());
    } else if (config.contains(key) && !config[key].is_null()) {
      content = token_content(config[key], source);
    }
    for (const auto& [id, token] : by_id) {
      if (token.content == content) return id;
    }
    const int64_t id = t.sp_.piece_to_id(content);
    CVX_CHECK_AS(FormatError, t.sp_.id_to_piece(id) == content, dir.string(), ": the ", key, " ", quote(content),
                 " is neither an added token nor a piece of spiece.model");
    by_id[id] = AddedToken{content, id};
    return id;
  };
  t.eos_id_ = special_id("eos_token", "</s>");
  t.pad_id_ = special_id("pad_token", "<pad>");
  t.unk_id_ = special_id("unk_token", "<unk>");
  for (auto& [id, token] : by_id) {
    CVX_CHECK_AS(FormatError, id >= 0 && !token.content.empty(), source, ": added token ", quote(token.content),
                 " has id ", id, " (expected a non-negative id and non-empty text)");
    t.added_.push_back(token);
  }
  return t;
}

std::vector<int64_t> T5Tokenizer::encode(const std::string& text) const {
  // Cut the text at added tokens, leftmost match first and the longest at a position (transformers'
  // Trie.split), then strip whitespace beside tokens that ask for it.
  struct Segment {
    std::string text;
    const AddedToken* token = nullptr;
  };
  std::vector<Segment> segments;
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* match = nullptr;
    for (const auto& token : added_) {
      if (text.compare(i, token.content.size(), token.content) == 0 &&
          (!match || token.content.size() > match->content.size()))
        match = &token;
    }
    if (!match) {
      ++i;
      continue;
    }
    if (i > start) segments.push_back({text.substr(start, i - start)});
    segments.push_back({"", match});
    i += match->content.size();
    start = i;
  }
  if (start < text.size()) segments.push_back({text.substr(start)});
  for (size_t i = 0; i < segments.size(); ++i) {
    const AddedToken* token = segments[i].token;
    if (!token) continue;
    if (token->rstrip && i + 1 < segments.size() && !segments[i + 1].token)
      segments[i + 1].text = lstrip(segments[i + 1].text);
    if (token->lstrip && i > 0 && !segments[i - 1].token) segments[i - 1].text = rstrip(segments[i - 1].text);
  }
  std::vector<int64_t> ids;
  for (const auto& segment : segments) {
    if (segment.token) {
      ids.push_back(segment.token->id);
    } else if (!segment.text.empty()) {
      const auto piece_ids = sp_.encode(segment.text);
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    }
  }
  return ids;
}

TokenizedPrompt T5Tokenizer::tokenize(const std::string& prompt, int64_t max_length) const {
  CVX_CHECK_AS(ConfigError, max_length >= 1, "max_sequence_length must be at least 1 (the eos token), got ",
               max_length);
  auto add_eos = [&](std::vector<int64_t> ids) {  // transformers does not repeat a trailing eos
    if (ids.empty() || ids.back() != eos_id_) ids.push_back(eos_id_);
    return ids;
  };
  const auto tokens = encode(prompt);
  TokenizedPrompt p;
  p.untruncated = add_eos(tokens);
  // Truncation reserves room for the one special token before it is added.
  const size_t keep = std::min<size_t>(tokens.size(), max_length - 1);
  p.ids = add_eos(std::vector<int64_t>(tokens.begin(), tokens.begin() + keep));
  p.length = static_cast<int64_t>(p.ids.size());
  p.ids.resize(max_length, pad_id_);
  return p;
}

TokenizedBatch T5Tokenizer::tokenize(const std::vector<std::string>& prompts, int64_t max_length) const {
  TokenizedBatch b;
  const auto n = static_cast<int64_t>(prompts.size());
  size_t longest = 0;
  for (const auto& prompt : prompts) {
    b.prompts.push_back(tokenize(prompt, max_length));
    longest = std::max(longest, b.prompts.back().untruncated.size());
  }
  b.input_ids = torch::full({n, max_length}, pad_id_, torch::kLong);
  b.attention_mask = torch::zeros({n, max_length}, torch::kLong);
  b.untruncated_ids = torch::full({n, static_cast<int64_t>(longest)}, pad_id_, torch::kLong);
  b.untruncated_lengths = torch::zeros({n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const auto& p = b.prompts[i];
    auto as_tensor = [](const std::vector<int64_t>& ids) {
      return torch::tensor(c10::ArrayRef<int64_t>(ids), torch::kLong);
    };
    b.input_ids[i].copy_(as_tensor(p.ids));
    b.attention_mask[i].narrow(0, 0, p.length).fill_(1);
    b.untruncated_ids[i].narrow(0, 0, p.untruncated.size()).copy_(as_tensor(p.untruncated));
    b.untruncated_lengths[i] = static_cast<int64_t>(p.untruncated.size());
  }
  return b;
}

const AddedToken* T5Tokenizer::added_token(int64_t id) const {
  auto it = std::lower_bound(added_.begin(), added_.end(), id,
                             [](const AddedToken& t, int64_t value) { return t.id < value; });
  return it != added_.end() && it->id == id ? &*it : nullptr;
}

std::string T5Tokenizer::id_to_token(int64_t id) const {
  if (const AddedToken* token = added_token(id)) return token->content;
  return sp_.id_to_piece(id);
}

std::string T5Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  std::vector<int64_t> run;  // consecutive sentencepiece ids, decoded together
  auto flush = [&] {
    const std::string text = sp_.decode(run);
    if (!text.empty() && !out.empty()) out += ' ';
    out += text;
    run.clear();
  };
  for (int64_t id : ids) {
    if (const AddedToken* token = added_token(id)) {
      flush();
      out += (out.empty() ? "" : " ") + token->content;
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

int64_t T5Tokenizer::size() const {
  return std::max(sp_.piece_size(), added_.empty() ? int64_t{0} : added_.back().id + 1);
}

}  // namespace cvx
