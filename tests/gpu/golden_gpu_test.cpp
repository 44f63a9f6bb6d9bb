// Golden parity of the transformer on the GPU: every transformer case of the golden set on CUDA in
// float32 (TF32 off) within the tolerance the golden README gives for the CPU, and in bfloat16
// within bfloat16's precision of the float32 reference (the dtype cvx trains in).
#include <gtest/gtest.h>

#include "cvx/model/transformer.h"
#include "golden_util.h"
#include "gpu_test_util.h"

namespace {

struct Inputs {
  torch::Tensor hidden, encoder, timestep;
  std::optional<torch::Tensor> ofs;
  cvx::RotaryEmbedding rope;
};

Inputs inputs_on(const cvx::test::GoldenCase& c, const torch::Device& device, torch::Dtype dtype) {
  Inputs in;
  in.hidden = c.tensor("input.hidden_states").to(device, dtype);
  in.encoder = c.tensor("input.encoder_hidden_states").to(device, dtype);
  in.timestep = c.tensor("input.timestep").to(device);
  if (c.has("input.ofs")) in.ofs = c.tensor("input.ofs").to(device, dtype);
  if (c.has("input.image_rotary_emb.cos")) {
    // The tables stay float32, as the pipelines pass them.
    in.rope.cos = c.tensor("input.image_rotary_emb.cos").to(device);
    in.rope.sin = c.tensor("input.image_rotary_emb.sin").to(device);
  }
  return in;
}

torch::Tensor run(const cvx::test::GoldenCase& c, const torch::Device& device, torch::Dtype dtype) {
  auto model = cvx::load_transformer(c.dir / c.meta.at("model_dir").get<std::string>(), dtype);
  model->to(device);
  model->eval();
  const Inputs in = inputs_on(c, device, dtype);
  torch::NoGradGuard no_grad;
  return model->forward(in.hidden, in.encoder, in.timestep, in.ofs, in.rope.cos.defined() ? &in.rope : nullptr)
      .to(torch::kCPU, torch::kFloat32);
}

}  // namespace

TEST(GoldenGpu, TransformerInFloat32MatchesDiffusersWithinTheGoldenTolerance) {
  CVX_REQUIRE_GPU_TEST_DEVICE(device);
  CVX_REQUIRE_GOLDEN();
  const cvx::test::NoTf32 no_tf32;
  const auto cases = cvx::test::golden_cases("transformer");
  ASSERT_FALSE(cases.empty()) << "the golden manifest lists no transformer case";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    double fallback = 1e-5;
    if (c.meta.contains("observed") && c.meta["observed"].contains("max_abs_fp32_vs_fp64"))
      fallback = std::max(1e-5, 30 * c.meta["observed"]["max_abs_fp32_vs_fp64"].get<double>());
    const double atol = cvx::test::golden_atol(c.name, "output", fallback);
    EXPECT_TRUE(cvx::test::all_close(run(c, device, torch::kFloat32), c.tensor("output.sample"), atol));
  }
}

// bfloat16 keeps 8 significant bits (relative rounding 2^-9 per operation); through the embedding,
// the blocks' norms, attention and feed-forward of the tiny models the errors add up to a few
// times that. Measured on the CPU (bf16 kernels, CVX_GPU_TESTS_ON_CPU=1): at most 1.2% of the
// output's largest magnitude over the golden cases; the bound is 3% (2^-5 ≈ 3.1%, rounded down).
TEST(GoldenGpu, TransformerInBfloat16StaysWithinBfloat16PrecisionOfTheReference) {
  CVX_REQUIRE_GPU_TEST_DEVICE(device);
  CVX_REQUIRE_GOLDEN();
  const auto cases = cvx::test::golden_cases("transformer");
  ASSERT_FALSE(cases.empty()) << "the golden manifest lists no transformer case";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto reference = c.tensor("output.sample").to(torch::kFloat32);
    const auto got = run(c, device, torch::kBFloat16);
    const double scale = reference.abs().max().item<double>();
    const double error = (got - reference).abs().max().item<double>();
    std::printf("%s: bf16 max error %.3g of max |reference| %.3g (%.2f%%)\n", c.name.c_str(), error, scale,
                100 * error / scale);
    EXPECT_LE(error, 0.03 * scale) << "bf16 error " << error << " at output magnitude " << scale;
  }
}
