// Parity of the T5 tokenizer and text encoder with transformers 4.43.4 (as CogVideoXPipeline calls
// them) for every t5 case of the golden set: token ids of every prompt, relative position buckets,
// per-block hidden states, the pipeline output (no mask) and the masked output.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "cvx/io/model_folder.h"
#include "cvx/model/prompt_encoder.h"
#include "golden_util.h"
#include "test_util.h"

namespace {

std::vector<std::string> prompts_of(const cvx::test::GoldenCase& c) {
  return c.meta.at("prompts").get<std::vector<std::string>>();
}

int64_t max_length_of(const cvx::test::GoldenCase& c) { return c.meta.at("tokenizer_call").at("max_length"); }

// The README's tolerance for the case's output; 1e-5 is its floor, should the table lack the row.
double output_atol(const cvx::test::GoldenCase& c) { return cvx::test::golden_atol(c.name, "output", 1e-5); }

}  // namespace

TEST(T5Golden, TokenIdsMatchForEveryPrompt) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = cvx::test::golden_cases("t5");
  ASSERT_FALSE(cases.empty()) << "the golden manifest lists no t5 case";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto tokenizer = cvx::T5Tokenizer::load(c.dir / "tokenizer");
    const auto prompts = prompts_of(c);
    const auto batch = tokenizer.tokenize(prompts, max_length_of(c));
    const auto expected_ids = c.tensor("input.input_ids");
    ASSERT_EQ(batch.input_ids.sizes(), expected_ids.sizes());
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE("prompt " + std::to_string(i) + ": " + prompts[i].substr(0, 80));
      const auto row = static_cast<int64_t>(i);
      EXPECT_TRUE(torch::equal(batch.input_ids[row], expected_ids[row]));
      EXPECT_TRUE(torch::equal(batch.attention_mask[row], c.tensor("input.attention_mask")[row]));
      EXPECT_EQ(batch.untruncated_lengths[row].item<int64_t>(),
                c.tensor("input.untruncated_lengths")[row].item<int64_t>());
      if (c.meta.contains("pieces_without_padding")) {
        // transformers' convert_ids_to_tokens of the unpadded ids: pieces, <unk> and added tokens.
        std::vector<std::string> pieces;
        for (int64_t k = 0; k < batch.prompts[i].length; ++k)
          pieces.push_back(tokenizer.id_to_token(batch.prompts[i].ids[k]));
        EXPECT_EQ(pieces, c.meta["pieces_without_padding"].at(i).get<std::vector<std::string>>());
      }
    }
    EXPECT_TRUE(torch::equal(batch.untruncated_ids, c.tensor("input.untruncated_input_ids")));
  }
}

TEST(T5Golden, RelativePositionBucketsMatch) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("t5")) {
    SCOPED_TRACE(c.name);
    // Entry k is the bucket of relative position k - (L - 1), for L query/key positions.
    const auto expected = c.tensor("inter.relative_position_bucket");
    const int64_t length = (expected.size(0) + 1) / 2;
    const auto config = cvx::T5Config::from_json(c.meta.at("config"));
    const auto relative = torch::arange(expected.size(0), torch::kLong) - (length - 1);
    const auto buckets =
        cvx::t5_relative_position_bucket(relative, /*bidirectional=*/true, config.relative_attention_num_buckets,
                                         config.relative_attention_max_distance);
    EXPECT_TRUE(torch::equal(buckets, expected)) << buckets << expected;
  }
}

TEST(T5Golden, HiddenStatesAndOutputsMatch) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("t5")) {
    SCOPED_TRACE(c.name);
    auto encoder = cvx::load_t5_encoder(c.dir / "text_encoder", torch::kFloat32);
    const double atol = output_atol(c);
    const auto ids = c.tensor("input.input_ids");
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> hidden;
    const auto out = encoder->forward(ids, std::nullopt, &hidden);
    EXPECT_TRUE(cvx::test::all_close(out, c.tensor("output.last_hidden_state"), atol)) << "pipeline output (no mask)";
    size_t compared = 0;
    const std::string prefix = "inter.hidden_states.";
    for (const auto& name : c.data->names()) {
      if (name.rfind(prefix, 0) != 0) continue;
      const size_t index = std::stoul(name.substr(prefix.size()));
      ASSERT_LT(index, hidden.size()) << name;
      EXPECT_TRUE(cvx::test::all_close(hidden[index], c.tensor(name), atol)) << name;
      ++compared;
    }
    EXPECT_EQ(compared, hidden.size()) << "hidden states recorded vs in the golden case";
    const auto masked = encoder->forward(ids, c.tensor("input.attention_mask"));
    EXPECT_TRUE(cvx::test::all_close(masked, c.tensor("output.last_hidden_state_masked"), atol)) << "masked output";
  }
}

TEST(T5Golden, PromptEncoderReproducesThePipelineEmbeddings) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("t5")) {
    SCOPED_TRACE(c.name);
    cvx::PromptEncoder encoder(cvx::T5Tokenizer::load(c.dir / "tokenizer"),
                               cvx::load_t5_encoder(c.dir / "text_encoder", torch::kFloat32));
    encoder.set_batch_size(3);  // batches of 3 and, unless the count divides, a shorter last one
    const auto embeddings = encoder.encode(prompts_of(c), max_length_of(c));
    EXPECT_TRUE(cvx::test::all_close(embeddings, c.tensor("output.last_hidden_state"), output_atol(c)));
  }
}

// The pipeline cases: their tokenizer/ and text_encoder/ give the prompt and negative-prompt ids and
// embeddings the pipeline recorded.
TEST(T5Golden, PipelinePromptEmbeddingsMatch) {
  CVX_REQUIRE_GOLDEN();
  double t5_atol = 1e-5;  // the README gives no row for prompt embeddings: use the t5 output's
  for (const auto& c : cvx::test::golden_cases("t5")) t5_atol = std::max(t5_atol, output_atol(c));
  size_t compared = 0;
  for (const auto& c : cvx::test::golden_cases("pipeline")) {
    if (!c.meta.contains("pipeline_dir") || !c.has("inter.prompt_embeds")) continue;
    SCOPED_TRACE(c.name);
    auto encoder = cvx::PromptEncoder::load(c.dir / c.meta["pipeline_dir"].get<std::string>(), torch::kFloat32);
    const auto& call = c.meta.at("call");
    const int64_t max_length = call.value("max_sequence_length", int64_t{226});
    const double atol = cvx::test::golden_atol(c.name, "prompt_embeds", t5_atol);
    for (const std::string kind : {"prompt", "negative_prompt"}) {
      // The pipelines' default negative prompt (None) is encoded as "".
      const std::string text = call.contains(kind) && call[kind].is_string() ? call[kind].get<std::string>() : "";
      const auto out = encoder.encode_with_tokens({text}, max_length);
      EXPECT_TRUE(torch::equal(out.tokens.input_ids, c.tensor("input." + kind + "_input_ids"))) << kind;
      EXPECT_TRUE(cvx::test::all_close(out.embeddings, c.tensor("inter." + kind + "_embeds"), atol)) << kind;
      ++compared;
    }
  }
  EXPECT_GT(compared, 0u) << "no pipeline case records prompt embeddings";
}

// cvx_make_tiny's text encoder has the key set (names and ranks) of the golden T5 encoder; blocks
// after the first (the one with the position bias) count as one, so the layer counts may differ.
TEST(T5Golden, TinyTextEncoderHasTheGoldenKeySet) {
  CVX_REQUIRE_GOLDEN();
  auto keys = [](const cvx::ComponentFolder& folder) {
    static const std::regex later_block(R"(\.block\.[1-9][0-9]*\.)");
    std::set<std::pair<std::string, size_t>> out;
    for (const auto& name : folder.weights->names())
      out.emplace(std::regex_replace(name, later_block, ".block.N."), folder.weights->info(name).shape.size());
    return out;
  };
  for (const auto& c : cvx::test::golden_cases("t5")) {
    SCOPED_TRACE(c.name);
    const auto golden = cvx::open_component(c.dir / "text_encoder", "", true);
    const auto dir = cvx::test::scratch_dir("tiny_t5_keys");
    cvx::write_tiny_text_encoder(dir, 1, cvx::T5Config::from_json(golden.config).d_model);
    EXPECT_EQ(keys(cvx::open_component(dir / "text_encoder", "", true)), keys(golden));
  }
}
