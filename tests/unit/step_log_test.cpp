// The step line, the console's progress line, metrics.jsonl (a resumed run keeps one curve) and the FLOP count of a
// step.
#include <gtest/gtest.h>

#include <fstream>

#include "cvx/train/step_flops.h"
#include "cvx/train/step_log.h"
#include "test_util.h"

using namespace cvx;

TEST(StepLog, LineHasEveryFixedField) {
  StepReport r;
  r.step = 12;
  r.total_steps = 400;
  r.loss = 0.125;
  r.mfu = 0.25;
  r.eta_seconds = 3723;
  const std::string line = format_step_line(r);
  for (const char* field : {"step 12/400", "epoch", "loss 0.125000", "grad_norm", "lr", "s/step", "data", "mem",
                            "samples/s", "tokens/s", "TFLOP/s", "MFU 25.0%", "ETA 1h02m03s"})
    EXPECT_NE(line.find(field), std::string::npos) << field << " in " << line;
  r.mfu = -1;
  EXPECT_NE(format_step_line(r).find("MFU n/a"), std::string::npos);
}

TEST(StepLog, ProgressLineShowsStepPercentLossSpeedAndEtaOnOneLine) {
  StepReport r;
  r.step = 12;
  r.total_steps = 400;
  r.loss = 0.123456;
  r.step_seconds = 3.214;
  r.eta_seconds = 1231;
  EXPECT_EQ(format_progress_line(r), "step 12/400 (3.0%) | loss 0.1235 | 3.21 s/step | ETA 20m31s");
  r.total_steps = 0;  // unknown total: no division by zero
  EXPECT_NE(format_progress_line(r).find("(0.0%)"), std::string::npos);
}

TEST(StepLog, MetricsOfAResumedRunDropTheLinesAfterTheCheckpoint) {
  const auto file = test::scratch_dir("metrics") / "metrics.jsonl";
  {
    MetricsLog log(file, 0);
    for (int64_t s = 1; s <= 5; ++s) {
      StepReport r;
      r.step = s;
      r.loss = static_cast<double>(s);
      log.write(r);
    }
  }
  { std::ofstream(file, std::ios::app) << "{\"step\": 6, \"lo"; }  // torn by a crash
  {
    MetricsLog log(file, 3);
    StepReport r;
    r.step = 4;
    r.loss = 40;
    log.write(r);
  }
  std::ifstream in(file);
  std::vector<double> losses;
  std::string line;
  while (std::getline(in, line)) losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  EXPECT_EQ(losses, (std::vector<double>{1, 2, 3, 40}));
}

TEST(StepFlops, ForwardCountMatchesTheMatmulsOfA5bBlockAtOfficialSize) {
  // 49x480x720 on CogVideoX-5b: 13 latent frames of 60x90 -> 13 x 30 x 45 = 17,550 video tokens
  // (shared spec finetune.md §7), forward ~0.33 PFLOP per sample.
  const TransformerConfig c = transformer_preset("5b");
  StepGeometry g;
  g.latent_frames = 13;
  g.latent_height = 60;
  g.latent_width = 90;
  EXPECT_EQ(video_tokens(c, g), 17550);
  const double forward = transformer_forward_flops(c, g);
  EXPECT_NEAR(forward / 1e15, 0.33, 0.02);
  // Attention (4 s^2 D per block) is about 45% of the forward here.
  const double attention = attention_forward_flops(c, g);
  EXPECT_DOUBLE_EQ(attention, 42.0 * 4 * 17776.0 * 17776.0 * 3072);
  EXPECT_NEAR(attention / forward, 0.45, 0.05);
  // Executed work. SFT: every matmul's backward is twice its forward (input and weight gradients;
  // attention's dQ, dK and dP, dV): 4 forwards with recompute, 3 without. LoRA: frozen weights
  // give input gradients only (x1), attention still x2: 3 forwards + the attention with recompute.
  EXPECT_DOUBLE_EQ(training_step_flops(c, g, true, true), 4 * forward);
  EXPECT_DOUBLE_EQ(training_step_flops(c, g, true, false), 3 * forward);
  EXPECT_NEAR(training_step_flops(c, g, false, true), 3 * forward + attention, 1e-9 * forward);
  EXPECT_NEAR(training_step_flops(c, g, false, false), 2 * forward + attention, 1e-9 * forward);
}

TEST(StepFlops, CogVideoX15At81x768x1360IsAbout1Point5PflopForward) {
  const TransformerConfig c = transformer_preset("1.5-t2v");
  StepGeometry g;
  g.latent_frames = 22;  // 21 padded to even
  g.latent_height = 96;
  g.latent_width = 170;
  EXPECT_EQ(video_tokens(c, g), 44880);
  EXPECT_NEAR(transformer_forward_flops(c, g) / 1e15, 1.48, 0.05);
  EXPECT_EQ(device_peak_tflops("NVIDIA H200"), 989.0);
  EXPECT_EQ(device_peak_tflops("cpu"), 0.0);
}
