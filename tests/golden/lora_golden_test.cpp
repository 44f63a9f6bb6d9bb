// LoRA on the transformer against PEFT/diffusers: a LoRA file saved by diffusers loads at diffusers'
// default strength, at the trained strength with the multiplier alpha/r, fused; and the file cvx
// exports from the trained adapter gives the trained strength at diffusers' default setting.
#include <gtest/gtest.h>

#include "cvx/io/safetensors.h"
#include "cvx/model/lora.h"
#include "cvx/model/transformer.h"
#include "golden_util.h"
#include "test_util.h"

namespace {

struct LoraCase {
  const cvx::test::GoldenCase& c;
  torch::Tensor hidden, encoder, timestep;
  cvx::RotaryEmbedding rope;
  double atol;

  explicit LoraCase(const cvx::test::GoldenCase& golden) : c(golden) {
    hidden = c.tensor("input.hidden_states");
    encoder = c.tensor("input.encoder_hidden_states");
    timestep = c.tensor("input.timestep");
    if (c.has("input.image_rotary_emb.cos"))
      rope = {c.tensor("input.image_rotary_emb.cos"), c.tensor("input.image_rotary_emb.sin")};
    // The README's rule (30 x observed, at least 1e-5) on the explicit-merge error it reports.
    atol = std::max(1e-5, 30 * c.meta.at("observed").value("peft_vs_explicit_merge_max_abs", 0.0));
  }
  cvx::CogVideoXTransformer base() const {
    auto m = cvx::load_transformer(c.dir / c.meta.at("base_model_dir").get<std::string>());
    m->eval();
    return m;
  }
  torch::Tensor run(cvx::CogVideoXTransformer& m) const {
    torch::NoGradGuard no_grad;
    return m->forward(hidden, encoder, timestep, std::nullopt, rope.cos.defined() ? &rope : nullptr);
  }
  std::filesystem::path lora_file() const { return c.dir / c.meta.at("lora_file").get<std::string>(); }
  double trained_scale() const { return c.meta.at("lora").at("scale_alpha_over_r").get<double>(); }
};

}  // namespace

TEST(LoraGolden, DiffusersFileLoadsAtEveryStrength) {
  CVX_REQUIRE_GOLDEN();
  const auto cases = cvx::test::golden_cases("lora");
  ASSERT_FALSE(cases.empty());
  for (const auto& golden : cases) {
    SCOPED_TRACE(golden.name);
    LoraCase lc(golden);
    auto model = lc.base();
    EXPECT_TRUE(cvx::test::all_close(lc.run(model), golden.tensor("output.base"), lc.atol)) << "base";
    const auto report = cvx::load_lora(*model, lc.lora_file());
    EXPECT_DOUBLE_EQ(report.scale, 1.0) << "a file without alpha loads at scale 1.0, as in diffusers";
    EXPECT_TRUE(cvx::test::all_close(lc.run(model), golden.tensor("output.loaded_default"), lc.atol)) << "default";
    cvx::set_lora_multiplier(*model, lc.trained_scale());
    EXPECT_TRUE(cvx::test::all_close(lc.run(model), golden.tensor("output.loaded_scale_alpha_over_r"), lc.atol));
    EXPECT_TRUE(cvx::test::all_close(lc.run(model), golden.tensor("output.lora_trained_scale"), lc.atol));
    cvx::set_lora_multiplier(*model, 1.0);
    cvx::merge_lora(*model);
    EXPECT_TRUE(cvx::test::all_close(lc.run(model), golden.tensor("output.fused_scale_1"), lc.atol)) << "fused";
  }
}

TEST(LoraGolden, ExportedFileGivesTheTrainedStrengthAtDefaultSettings) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& golden : cvx::test::golden_cases("lora")) {
    SCOPED_TRACE(golden.name);
    LoraCase lc(golden);
    const auto& lora_meta = golden.meta.at("lora");
    // Rebuild the adapter as trained (rank, alpha, targets from meta.json; A and B from the file).
    auto trained = lc.base();
    cvx::LoraConfig config;
    config.rank = lora_meta.at("rank");
    config.alpha = lora_meta.at("alpha");
    config.target_modules = lora_meta.at("target_modules").get<std::vector<std::string>>();
    cvx::inject_lora(*trained, config);
    const auto file = cvx::SafetensorsFile::open(lc.lora_file());
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, tensor] : cvx::lora_state(*trained)) tensor.copy_(file->tensor("transformer." + name));
    }
    EXPECT_TRUE(cvx::test::all_close(lc.run(trained), golden.tensor("output.lora_trained_scale"), lc.atol));

    const auto exported = cvx::test::scratch_dir("lora_export") / "pytorch_lora_weights.safetensors";
    cvx::save_lora_diffusers(exported, *trained);
    const auto written = cvx::SafetensorsFile::open(exported);
    EXPECT_EQ(written->names(), file->names()) << "the documented diffusers key set";
    EXPECT_EQ(written->metadata().at("format"), "pt");
    EXPECT_EQ(written->metadata().at("cvx.alpha_folded"), "true");

    auto fresh = lc.base();
    const auto report = cvx::load_lora(*fresh, exported);
    EXPECT_DOUBLE_EQ(report.scale, 1.0);
    EXPECT_TRUE(cvx::test::all_close(lc.run(fresh), golden.tensor("output.lora_trained_scale"), lc.atol));
  }
}
