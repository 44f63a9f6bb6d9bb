// cvx_make_tiny writes, for every variant style of the golden set, a model folder whose transformer
// has exactly the golden model's key set, and cvx_inspect lists them.
#include <gtest/gtest.h>

#include "cvx/io/model_folder.h"
#include "cvx/model/transformer_config.h"
#include "golden_util.h"
#include "test_util.h"

TEST(TinyModelGolden, MakeTinyHasTheGoldenKeySetPerVariant) {
  CVX_REQUIRE_GOLDEN();
  for (const auto& c : cvx::test::golden_cases("transformer")) {
    SCOPED_TRACE(c.name);
    const auto golden = cvx::open_component(c.dir / c.meta.at("model_dir").get<std::string>(), "", true);
    const std::string variant = cvx::TransformerConfig::from_json(golden.config).variant();
    const auto dir = cvx::test::scratch_dir("tiny_" + variant);
    std::string out;
    ASSERT_EQ(cvx::test::run_command("'" + cvx::test::built_program("cvx_make_tiny").string() + "' '" + dir.string() +
                                         "' --variant " + variant,
                                     &out),
              0)
        << out;
    const auto tiny = cvx::open_component(dir / "transformer", "", true);
    EXPECT_EQ(tiny.weights->names(), golden.weights->names());
    for (const auto& name : golden.weights->names())
      EXPECT_EQ(tiny.weights->info(name).shape.size(), golden.weights->info(name).shape.size()) << name;
    ASSERT_EQ(cvx::test::run_command(
                  "'" + cvx::test::built_program("cvx_inspect").string() + "' '" + dir.string() + "'", &out),
              0)
        << out;
    for (const auto& name : golden.weights->names()) EXPECT_NE(out.find(name + " "), std::string::npos) << name;
  }
}
