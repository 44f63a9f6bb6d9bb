// The one list of released variants: the names users type, the presets behind them, and what
// TransformerConfig::variant() reads back from a config.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/model/model_config.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/transformer_config.h"
#include "cvx/model/vae_config.h"

TEST(ModelVariant, TheReleasedNamesAndTheirList) {
  // The spelling is user-facing ([model] variant, cvx_make_tiny --variant, store headers).
  EXPECT_EQ(cvx::released_variants(), (std::vector<std::string>{"2b", "5b", "5b-i2v", "1.5-t2v", "1.5-i2v"}));
  EXPECT_EQ(cvx::released_variant_list("|"), "2b|5b|5b-i2v|1.5-t2v|1.5-i2v");
  EXPECT_EQ(cvx::released_variant_list(), "2b, 5b, 5b-i2v, 1.5-t2v, 1.5-i2v");
  EXPECT_EQ(cvx::model_variant_names().front(), "auto");
  EXPECT_EQ(std::vector<std::string>(cvx::model_variant_names().begin() + 1, cvx::model_variant_names().end()),
            cvx::released_variants());
  EXPECT_EQ(cvx::kMaxTextLength, 226);
}

TEST(ModelVariant, PresetsReadBackAsTheirVariant) {
  for (const auto& variant : cvx::released_variants()) {
    SCOPED_TRACE(variant);
    const auto config = cvx::transformer_preset(variant);
    EXPECT_EQ(config.variant(), variant);
    EXPECT_EQ(cvx::tiny_transformer(variant).variant(), variant);
    EXPECT_EQ(config.is_i2v(), cvx::is_i2v_variant(variant));
    EXPECT_EQ(config.patch_size_t.has_value(), cvx::is_cogvideox15_variant(variant));
    EXPECT_EQ(config.max_text_seq_length, cvx::kMaxTextLength);
    EXPECT_EQ(cvx::vae_preset(variant).invert_scale_latents, cvx::is_cogvideox15_variant(variant));
  }
  EXPECT_NE(cvx::vae_preset("2b").scaling_factor, cvx::vae_preset("5b").scaling_factor);
  EXPECT_EQ(cvx::vae_preset("5b-i2v").scaling_factor, cvx::vae_preset("5b").scaling_factor);
}

TEST(ModelVariant, UnknownVariantsAreConfigErrorsListingTheReleasedOnes) {
  for (const std::string bad : {"auto", "5B", "1.5", ""}) {
    SCOPED_TRACE(bad);
    try {
      cvx::transformer_preset(bad);
      FAIL() << "accepted";
    } catch (const cvx::ConfigError& e) {
      EXPECT_NE(e.message().find("\"" + bad + "\""), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("2b, 5b, 5b-i2v, 1.5-t2v, 1.5-i2v"), std::string::npos) << e.message();
    }
    EXPECT_THROW(cvx::vae_preset(bad), cvx::ConfigError);
    EXPECT_FALSE(cvx::is_i2v_variant(bad));
    EXPECT_FALSE(cvx::is_cogvideox15_variant(bad));
  }
}
