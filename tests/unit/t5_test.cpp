// T5 tokenizer, encoder and prompt encoder on the tiny tokenizer / text encoder of cvx_make_tiny:
// tokenizer edge cases, sentencepiece beside libtorch, reduced precision, loading variants, batching.
#include <gtest/gtest.h>

#include <fstream>
#include <numeric>

#include "cvx/core/error.h"
#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/prompt_encoder.h"
#include "cvx/model/tiny_pipeline.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

const cvx::T5Tokenizer& tiny_tokenizer() {
  static const auto tokenizer = cvx::T5Tokenizer::load(cvx::tiny_tokenizer_dir());
  return tokenizer;
}

// A tiny pipeline folder's text encoder + tokenizer, written once per test binary.
const fs::path& tiny_folder() {
  static const fs::path dir = [] {
    const auto d = cvx::test::scratch_dir("tiny_text_encoder");
    cvx::write_tiny_text_encoder(d, 7, 16);
    return d;
  }();
  return dir;
}

const std::vector<std::string> kPrompts{"A panda plays a tiny guitar in a bamboo forest.",
                                        "",
                                        "  spaces\tand\nnewlines  ",
                                        "Unicode: café 日本語 😀 ＡＢＣ ﬁne.",
                                        "text <extra_id_0> and </s> inside",
                                        "a dog runs on the beach at sunset"};

std::vector<int64_t> ids_of(const std::string& text) { return tiny_tokenizer().encode(text); }

}  // namespace

// ---------------------------------------------------------------- tokenizer

// The test binary links libtorch; libsentencepiece linked beside it crashes at load. Through the
// privately loaded module both work in one process.
TEST(T5Tokenizer, SentencepieceRunsInAProcessWithLibtorch) {
  const auto sp = cvx::SentencePiece::load(cvx::tiny_tokenizer_dir() / "spiece.model");
  EXPECT_TRUE(fs::exists(cvx::SentencePiece::module_path()));
  const auto ids = sp.encode("a panda plays");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(sp.decode(ids), "a panda plays");
  EXPECT_EQ(torch::tensor(ids).sum().item<int64_t>(), std::accumulate(ids.begin(), ids.end(), int64_t{0}));
  EXPECT_EQ(sp.piece_to_id("</s>"), 1);
  EXPECT_EQ(sp.id_to_piece(0), "<pad>");
}

TEST(T5Tokenizer, SpecialIdsAndExtraIdsFollowT5) {
  const auto& t = tiny_tokenizer();
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.unk_id(), 2);
  const auto pieces = cvx::SentencePiece::load(cvx::tiny_tokenizer_dir() / "spiece.model").piece_size();
  EXPECT_EQ(t.size(), pieces + 100);
  // <extra_id_k> = pieces + 99 - k; <extra_id_1> must not swallow the start of <extra_id_10>.
  EXPECT_EQ(ids_of("<extra_id_0>"), std::vector<int64_t>{pieces + 99});
  EXPECT_EQ(ids_of("<extra_id_10><extra_id_1>"), (std::vector<int64_t>{pieces + 89, pieces + 98}));
  EXPECT_EQ(t.id_to_token(pieces + 99), "<extra_id_0>");
}

TEST(T5Tokenizer, EmptyAndWhitespacePromptsAreJustEos) {
  for (const std::string prompt : {"", " ", "  \t\n "}) {
    const auto p = tiny_tokenizer().tokenize(prompt, 226);
    ASSERT_EQ(p.ids.size(), 226u);
    EXPECT_EQ(p.ids[0], 1);
    EXPECT_EQ(p.length, 1);
    EXPECT_EQ(std::count(p.ids.begin(), p.ids.end(), 0), 225);
    EXPECT_FALSE(p.truncated());
  }
}

TEST(T5Tokenizer, AddedTokensAreCutOutOfTheText) {
  const auto& t = tiny_tokenizer();
  const auto extra0 = ids_of("<extra_id_0>").at(0);
  // <extra_id_N> strips whitespace on both sides (sentencepiece would drop it anyway).
  EXPECT_EQ(ids_of("a dog <extra_id_0> runs"), ids_of("a dog<extra_id_0>runs"));
  const auto with_token = ids_of("a dog <extra_id_0> runs");
  EXPECT_EQ(std::count(with_token.begin(), with_token.end(), extra0), 1);
  // Literal "</s>" and "<pad>" map to their ids, counted as tokens by the attention mask.
  const auto p = t.tokenize("a dog </s> runs <pad>", 226);
  EXPECT_EQ(std::count(p.ids.begin(), p.ids.begin() + p.length, 1), 2);  // the literal one + eos
  EXPECT_EQ(p.ids[p.length - 2], 0);
  // A prompt ending in "</s>" does not get a second eos.
  const auto ends = t.tokenize("a dog runs</s>", 226);
  EXPECT_EQ(ends.ids[ends.length - 1], 1);
  EXPECT_NE(ends.ids[ends.length - 2], 1);
  EXPECT_EQ(ends.untruncated, std::vector<int64_t>(ends.ids.begin(), ends.ids.begin() + ends.length));
}

TEST(T5Tokenizer, UnknownCharactersBecomeUnk) {
  const auto ids = ids_of("日本語");
  EXPECT_NE(std::find(ids.begin(), ids.end(), 2), ids.end());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1) << "a run of unknown characters is one <unk>";
}

TEST(T5Tokenizer, TruncationKeepsEosAndReportsTheCut) {
  const auto& t = tiny_tokenizer();
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "A golden retriever runs across a sandy beach. ";
  const auto tokens = t.encode(prompt);
  for (const int64_t max_length : {226, 17, 2, 1}) {
    SCOPED_TRACE(max_length);
    const auto p = t.tokenize(prompt, max_length);
    ASSERT_EQ(static_cast<int64_t>(p.ids.size()), max_length);
    EXPECT_EQ(p.length, max_length);
    EXPECT_EQ(p.ids.back(), 1);
    EXPECT_TRUE(std::equal(p.ids.begin(), p.ids.end() - 1, tokens.begin()));
    EXPECT_TRUE(p.truncated());
    EXPECT_EQ(p.untruncated.size(), tokens.size() + 1);
  }
  // Exactly max_length - 1 tokens fit with their eos: nothing is cut; one less and eos replaces the last.
  const std::string short_prompt = "a dog runs on the beach at sunset";
  const auto n = static_cast<int64_t>(t.encode(short_prompt).size());
  const auto exact = t.tokenize(short_prompt, n + 1);
  EXPECT_EQ(exact.length, n + 1);
  EXPECT_FALSE(exact.truncated());
  EXPECT_EQ(cvx::truncated_text(t, exact), "");
  EXPECT_TRUE(t.tokenize(short_prompt, n).truncated());
  const auto cut = t.tokenize(prompt, 226);
  const auto removed = cvx::truncated_text(t, cut);
  EXPECT_FALSE(removed.empty());
  EXPECT_NE(prompt.find(removed.substr(removed.size() / 2)), std::string::npos) << removed;
  EXPECT_THROW(t.tokenize(prompt, 0), cvx::ConfigError);
}

TEST(T5Tokenizer, BatchTensorsMatchThePrompts) {
  const auto& t = tiny_tokenizer();
  const auto b = t.tokenize(kPrompts, 64);
  const auto n = static_cast<int64_t>(kPrompts.size());
  ASSERT_EQ(b.input_ids.sizes(), (c10::IntArrayRef{n, 64}));
  EXPECT_EQ(b.input_ids.scalar_type(), torch::kLong);
  size_t longest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto& p = b.prompts[i];
    EXPECT_EQ(b.input_ids[i].equal(torch::tensor(p.ids)), true);
    EXPECT_EQ(b.attention_mask[i].sum().item<int64_t>(), p.length);
    EXPECT_EQ(b.untruncated_lengths[i].item<int64_t>(), static_cast<int64_t>(p.untruncated.size()));
    longest = std::max(longest, p.untruncated.size());
  }
  EXPECT_EQ(b.untruncated_ids.size(1), static_cast<int64_t>(longest));
}

TEST(T5Tokenizer, LoadErrorsNameTheFile) {
  const auto dir = cvx::test::scratch_dir("bad_tokenizer");
  EXPECT_THROW(cvx::T5Tokenizer::load(dir / "absent"), cvx::ConfigError);
  EXPECT_THROW(cvx::T5Tokenizer::load(dir), cvx::ConfigError);  // no spiece.model
  std::ofstream(dir / "spiece.model") << "not a model";
  try {
    cvx::T5Tokenizer::load(dir);
    FAIL() << "a corrupt spiece.model was accepted";
  } catch (const cvx::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("spiece.model"), std::string::npos) << e.what();
  }
  fs::copy_file(cvx::tiny_tokenizer_dir() / "spiece.model", dir / "spiece.model", fs::copy_options::overwrite_existing);
  cvx::write_json_file(dir / "tokenizer_config.json", {{"legacy", false}});
  EXPECT_THROW(cvx::T5Tokenizer::load(dir), cvx::ConfigError);
  // Without tokenizer_config.json the extra ids are generated as T5Tokenizer does.
  fs::remove(dir / "tokenizer_config.json");
  const auto bare = cvx::T5Tokenizer::load(dir);
  EXPECT_EQ(bare.encode("a <extra_id_3> b"), ids_of("a <extra_id_3> b"));
}

// ---------------------------------------------------------------- encoder

TEST(T5Encoder, ConfigDefaultsAndUnsupportedActivations) {
  const auto c = cvx::T5Config::from_json({{"feed_forward_proj", "gated-gelu"}, {"d_model", 32}});
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.vocab_size, 32128);
  EXPECT_EQ(c.relative_attention_num_buckets, 32);
  EXPECT_EQ(cvx::T5Config::from_json(c.to_json()).to_json(), c.to_json());
  EXPECT_THROW(cvx::T5Config::from_json(nlohmann::json::object()), cvx::FormatError);  // relu: T5 v1.0
  EXPECT_THROW(cvx::T5Config::from_json({{"feed_forward_proj", "gated-gelu"}, {"dense_act_fn", "relu"}}),
               cvx::FormatError);
  EXPECT_THROW(cvx::T5Config::from_json({{"feed_forward_proj", "gated-gelu"}, {"num_heads", "8"}}), cvx::FormatError);
}

TEST(T5Encoder, RelativePositionBucketsFollowTheLogScale) {
  const auto relative = torch::arange(-300, 301, torch::kLong);
  const auto buckets = cvx::t5_relative_position_bucket(relative, true, 32, 128);
  auto bucket = [&](int64_t r) { return buckets[r + 300].item<int64_t>(); };
  // Exact below 8, logarithmic to 128, then saturated; positive offsets use the upper half.
  const std::vector<std::pair<int64_t, int64_t>> expected{{0, 0},   {7, 7},   {8, 8},   {11, 8},  {12, 9},
                                                          {16, 10}, {32, 12}, {64, 14}, {91, 15}, {300, 15}};
  for (const auto& [distance, b] : expected) {
    EXPECT_EQ(bucket(-distance), b) << -distance;
    if (distance > 0) EXPECT_EQ(bucket(distance), b + 16) << distance;
  }
}

// bf16 (and fp16 where the device has fp16 matmul; libtorch 1.13's CPU does not) against fp32 on the
// tiny encoder: max abs error <= 2% of the output's largest magnitude (bf16 keeps 8 mantissa bits,
// ~0.4% per rounding; two blocks and a norm compound it; observed 0.8%).
TEST(T5Encoder, ReducedPrecisionIsCloseToFloat32) {
  const auto ids = tiny_tokenizer().tokenize(kPrompts, 32).input_ids;
  auto reference_model = cvx::load_t5_encoder(tiny_folder() / "text_encoder", torch::kFloat32);
  torch::NoGradGuard no_grad;
  const auto reference = reference_model->forward(ids);
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    auto model = cvx::load_t5_encoder(tiny_folder() / "text_encoder", dtype);
    EXPECT_EQ(model->dtype(), dtype);
    // transformers keeps `wo` in float32 for float16 only (4.43).
    const auto wo_dtype = model->encoder->blocks[0]->feed_forward->DenseReluDense->wo->weight.scalar_type();
    EXPECT_EQ(wo_dtype, dtype == torch::kHalf ? torch::kFloat : dtype);
    try {
      torch::mm(torch::ones({1, 1}, dtype), torch::ones({1, 1}, dtype));
    } catch (const c10::Error&) {
      continue;  // no matmul in this dtype on this device
    }
    const auto out = model->forward(ids);
    EXPECT_EQ(out.scalar_type(), dtype);
    const double error = (out.to(torch::kFloat) - reference).abs().max().item<double>();
    EXPECT_LE(error, 0.02 * reference.abs().max().item<double>()) << "max abs error " << error;
  }
}

TEST(T5Encoder, MaskOnlyChangesPaddedInputs) {
  auto model = cvx::load_t5_encoder(tiny_folder() / "text_encoder", torch::kFloat32);
  const auto b = tiny_tokenizer().tokenize(kPrompts, 32);
  torch::NoGradGuard no_grad;
  const auto unmasked = model->forward(b.input_ids);
  const auto masked = model->forward(b.input_ids, b.attention_mask);
  // Without a mask the padding is attended to, so the outputs differ on prompts shorter than 32.
  EXPECT_FALSE(torch::allclose(unmasked, masked));
  // With the mask a prompt's tokens see only tokens: the same as encoding it without padding.
  const auto& p = b.prompts[0];
  const auto alone = model->forward(b.input_ids.slice(0, 0, 1).narrow(1, 0, p.length));
  EXPECT_TRUE(torch::allclose(masked.slice(0, 0, 1).narrow(1, 0, p.length), alone, 1e-5, 1e-5));
}

TEST(T5Encoder, LoadsEitherEmbeddingNameAndIgnoresTheDecoder) {
  const auto source = cvx::open_component(tiny_folder() / "text_encoder", "", true);
  auto reference = cvx::load_t5_encoder(tiny_folder() / "text_encoder", torch::kFloat32);
  const auto ids = tiny_tokenizer().tokenize(kPrompts, 32).input_ids;
  torch::NoGradGuard no_grad;
  const auto expected = reference->forward(ids);
  auto variant = [&](const std::string& name, const std::function<void(cvx::NamedTensors&)>& edit) {
    const auto dir = cvx::test::scratch_dir("t5_" + name);
    cvx::NamedTensors tensors = cvx::module_state(*reference);
    edit(tensors);
    cvx::SaveOptions options;
    options.weights_base = "model";
    cvx::save_component(dir, source.config, tensors, options);
    return dir;
  };
  auto rename_embedding = [](cvx::NamedTensors& t, bool keep_shared) {
    for (auto& item : t) {
      if (item.first == "shared.weight") {
        if (keep_shared) {
          t.emplace_back("encoder.embed_tokens.weight", item.second);
        } else {
          item.first = "encoder.embed_tokens.weight";
        }
        break;
      }
    }
  };
  const auto embed_only = variant("embed_only", [&](cvx::NamedTensors& t) { rename_embedding(t, false); });
  const auto both = variant("both", [&](cvx::NamedTensors& t) {
    rename_embedding(t, true);
    t.emplace_back("decoder.final_layer_norm.weight", torch::ones({16}));
    t.emplace_back("lm_head.weight", torch::zeros({4, 16}));
  });
  for (const auto& dir : {embed_only, both})
    EXPECT_TRUE(torch::equal(cvx::load_t5_encoder(dir, torch::kFloat32)->forward(ids), expected)) << dir;
  const auto missing = variant("missing", [](cvx::NamedTensors& t) {
    t.erase(std::remove_if(t.begin(), t.end(),
                           [](const auto& item) { return item.first.find("layer_norm") != std::string::npos; }),
            t.end());
  });
  EXPECT_THROW(cvx::load_t5_encoder(missing, torch::kFloat32), cvx::FormatError);
}

// ---------------------------------------------------------------- prompt encoder

TEST(PromptEncoder, BatchingEqualsOneByOne) {
  auto encoder = cvx::PromptEncoder::load(tiny_folder(), torch::kFloat32);
  encoder.set_batch_size(4);
  const auto batched = encoder.encode(kPrompts);
  ASSERT_EQ(batched.sizes(), (c10::IntArrayRef{static_cast<int64_t>(kPrompts.size()), 226, 16}));
  encoder.set_batch_size(1);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const auto one = encoder.encode({kPrompts[i]});
    // Rows are independent without a mask; only the GEMM blocking (and so the summation order)
    // can differ with the batch size: a few fp32 ulps of values up to ~3 (1.6e-6 seen on one CPU).
    const auto row = batched.slice(0, i, i + 1);
    EXPECT_TRUE(torch::allclose(row, one, 1e-5, 1e-6))
        << kPrompts[i] << ": max difference " << (row - one).abs().max().item<float>();
  }
  EXPECT_EQ(encoder.encode({}).sizes(), (c10::IntArrayRef{0, 226, 16}));
  EXPECT_THROW(encoder.set_batch_size(0), cvx::ConfigError);
}

TEST(PromptEncoder, ReportsTruncationAndKeepsTheEncoderDtype) {
  auto encoder = cvx::PromptEncoder::load(tiny_folder(), torch::kBFloat16);
  std::string long_prompt;
  for (int i = 0; i < 60; ++i) long_prompt += "a dog runs on the beach. ";
  const auto out = encoder.encode_with_tokens({"a cat", long_prompt}, 226);
  EXPECT_EQ(out.embeddings.scalar_type(), torch::kBFloat16);
  EXPECT_FALSE(out.tokens.prompts[0].truncated());
  EXPECT_TRUE(out.tokens.prompts[1].truncated());
}

TEST(PromptEncoder, TinyPipelineFolderFeedsTheTransformer) {
  const auto dir = cvx::test::scratch_dir("tiny_pipeline_text");
  cvx::write_tiny_pipeline(dir, "5b", 3);
  const auto index = cvx::read_json_file(dir / "model_index.json");
  EXPECT_EQ(index.at("text_encoder"), nlohmann::json({"transformers", "T5EncoderModel"}));
  EXPECT_EQ(index.at("tokenizer"), nlohmann::json({"transformers", "T5Tokenizer"}));
  auto encoder = cvx::PromptEncoder::load(dir, torch::kFloat32);
  auto transformer = cvx::load_transformer(dir / "transformer");
  const auto text = encoder.encode({"a panda plays a guitar", ""});
  ASSERT_EQ(text.size(2), transformer->config.text_embed_dim);
  const auto& c = transformer->config;
  const int64_t frames = (c.sample_frames - 1) / c.temporal_compression_ratio + 1;
  const auto rope = cvx::training_rotary_embedding(c, c.sample_height, c.sample_width, frames);
  torch::NoGradGuard no_grad;
  const auto out = transformer->forward(torch::randn({2, frames, c.in_channels, c.sample_height, c.sample_width}), text,
                                        torch::tensor({10, 500}, torch::kLong), std::nullopt, &rope);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}
