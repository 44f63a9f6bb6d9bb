// Parity of CogVideoXTransformer3DModel with diffusers for every transformer case of the golden set:
// final output and every intermediate the case records, plus the rotary tables the pipelines build.
#include <gtest/gtest.h>

#include "cvx/model/transformer.h"
#include "golden_util.h"
#include "test_util.h"

namespace {

// The README's suggested tolerance for the case, else its rule applied to the case's own
// observed float32-vs-float64 error: 30 x observed, at least 1e-5.
double output_atol(const cvx::test::GoldenCase& c) {
  double fallback = 1e-5;
  if (c.meta.contains("observed") && c.meta["observed"].contains("max_abs_fp32_vs_fp64"))
    fallback = std::max(1e-5, 30 * c.meta["observed"]["max_abs_fp32_vs_fp64"].get<double>());
  return cvx::test::golden_atol(c.name, "output", fallback);
}

struct Inputs {
  torch::Tensor hidden, encoder, timestep;
  std::optional<torch::Tensor> ofs;
  cvx::RotaryEmbedding rope;
};

Inputs inputs_of(const cvx::test::GoldenCase& c) {
  Inputs in;
  in.hidden = c.tensor("input.hidden_states");
  in.encoder = c.tensor("input.encoder_hidden_states");
  in.timestep = c.tensor("input.timestep");
  if (c.has("input.ofs")) in.ofs = c.tensor("input.ofs");
  if (c.has("input.image_rotary_emb.cos")) {
    in.rope.cos = c.tensor("input.image_rotary_emb.cos");
    in.rope.sin = c.tensor("input.image_rotary_emb.sin");
  }
  return in;
}

}  // namespace

TEST(TransformerGolden, OutputsAndIntermediatesMatchDiffusers) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = cvx::test::golden_cases("transformer");
  ASSERT_FALSE(cases.empty()) << "the golden manifest lists no transformer case";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto model = cvx::load_transformer(c.dir / c.meta.at("model_dir").get<std::string>(), torch::kFloat32);
    model->eval();
    const Inputs in = inputs_of(c);
    cvx::TransformerTrace trace;
    torch::NoGradGuard no_grad;
    const auto out =
        model->forward(in.hidden, in.encoder, in.timestep, in.ofs, in.rope.cos.defined() ? &in.rope : nullptr, &trace);
    const double atol = output_atol(c);
    EXPECT_TRUE(cvx::test::all_close(out, c.tensor("output.sample"), atol)) << "output.sample";
    size_t compared = 0;
    for (const auto& name : c.data->names()) {
      if (name.rfind("inter.", 0) != 0) continue;
      const std::string key = name.substr(6);
      ASSERT_TRUE(trace.tensors.count(key)) << "no intermediate '" << key << "' recorded";
      EXPECT_TRUE(cvx::test::all_close(trace.tensors.at(key), c.tensor(name), atol)) << name;
      ++compared;
    }
    EXPECT_GT(compared, 0u);
  }
}

TEST(TransformerGolden, PipelineRotaryTablesMatch) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("transformer")) {
    if (!c.has("input.image_rotary_emb.cos")) continue;
    SCOPED_TRACE(c.name);
    const auto config = cvx::TransformerConfig::from_json(c.meta.at("config"));
    const auto& in = c.meta.at("inputs");
    const auto rope = cvx::pipeline_rotary_embedding(config, in.at("height_px_for_rope"), in.at("width_px_for_rope"),
                                                     in.at("latent_frames"), in.at("vae_scale_factor_spatial"));
    EXPECT_TRUE(torch::equal(rope.cos, c.tensor("input.image_rotary_emb.cos")));
    EXPECT_TRUE(torch::equal(rope.sin, c.tensor("input.image_rotary_emb.sin")));
  }
}
