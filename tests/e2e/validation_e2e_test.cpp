// Validation videos during cvx_train (train/validation.h) on tiny models: the prompts are split over
// the ranks, the files land where the README says, the training losses do not change, and the
// videos are the ones cvx_generate renders with the exported LoRA.
#include <gtest/gtest.h>

#include <iterator>

#include "cvx/data/image_io.h"
#include "cvx/data/video_reader.h"
#include "test_util.h"
#include "train_fixture.h"

namespace fs = std::filesystem;
using cvx::test::built_program;
using cvx::test::fixture;
using cvx::test::Fixture;
using cvx::test::run_command;
using cvx::test::shell_quote;
using cvx::test::train;
using cvx::test::TrainRun;

namespace {

// The tiny VAE's tiles (16x24 px) are too small for tiled decoding (a test below checks the error).
const std::string kValidate =
    " --validation.enabled true --validation.num_inference_steps 2 --validation.vae_tiling false";

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(ValidationE2E, PromptsAreSplitOverRanksAndTheTrainingLossesDoNotChange) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("validation_split");
  // LoRA dropout on: validation must run without it and must not consume the training's draws.
  const std::string args = "--train.train_steps 4 --lora.dropout 0.1 --log_all_ranks true";
  const TrainRun plain = train(f, 2, dir / "plain", args);
  ASSERT_EQ(plain.rc, 0) << plain.output;
  // Three prompts on two ranks: rank 1 has none in the second round and joins it with a dummy.
  const TrainRun run = train(f, 2, dir / "run",
                             args + kValidate +
                                 " --validation.every_steps 2 --validation.prompts "
                                 "'a red ball:::A blue cube, rolling!:::a third prompt'");
  ASSERT_EQ(run.rc, 0) << run.output;
  ASSERT_EQ(run.metrics.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(run.metrics[i]["loss"].get<double>(), plain.metrics[i]["loss"].get<double>()) << "step " << i + 1;

  const std::vector<std::string> names{"000_a_red_ball", "001_a_blue_cube_rolling", "002_a_third_prompt"};
  for (const char* step : {"step-2", "step-4"}) {
    const fs::path out = dir / "run" / "validation" / step;
    for (const auto& name : names) {
      ASSERT_TRUE(fs::exists(out / (name + ".mp4"))) << out / name;
      const cvx::VideoReader video(out / (name + ".mp4"));
      EXPECT_EQ(video.frame_count(), 9) << "the training clips' frame count";
      EXPECT_EQ(video.info().height, 48);
      EXPECT_EQ(video.info().width, 64);
    }
    // One row per prompt (first, middle, last frame at their size, 4 px apart), rows 4 px apart.
    const auto sheet = cvx::read_image(out / "contact_sheet.png");
    EXPECT_EQ(sheet.size(0), 3 * 48 + 2 * 4);
    EXPECT_EQ(sheet.size(1), 3 * 64 + 2 * 4);
    EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 4)
        << "three videos and the contact sheet, no temporary strips left";
  }
  EXPECT_TRUE(contains(run.output,
                       "[r0] validation at step 2: this rank rendered 2 video(s): 000_a_red_ball, "
                       "002_a_third_prompt"))
      << run.output;
  EXPECT_TRUE(contains(run.output, "[r1] validation at step 2: this rank rendered 1 video(s): 001_a_blue_cube_rolling"))
      << run.output;
  EXPECT_TRUE(contains(run.output, "validation at step 4: 3 video(s) on 2 rank(s) in ")) << "the log says how long";
  // TensorBoard holds each video's first frame per validation step, as PNG at the sheet's size.
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir / "run" / "tensorboard")) files.push_back(e.path());
  std::string output;
  const auto events = cvx::test::read_tfevents(files, &output);
  ASSERT_TRUE(events) << output;
  std::vector<std::pair<int64_t, std::string>> images;
  for (const auto& image : (*events)["images"]) {
    images.emplace_back(image["step"].get<int64_t>(), image["tag"].get<std::string>());
    EXPECT_EQ(image["width"].get<int64_t>(), 64);
    EXPECT_EQ(image["height"].get<int64_t>(), 48);
  }
  std::vector<std::pair<int64_t, std::string>> expected;
  for (int64_t step : {2, 4})
    for (const auto& name : names) expected.emplace_back(step, "validation/" + name);
  EXPECT_EQ(images, expected);
  EXPECT_TRUE(contains(run.output, "T5 freed again"));
}

TEST(ValidationE2E, FinalVideosEqualCvxGenerateWithTheExportedLora) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("validation_generate");
  // fp32 export: the LoRA cvx_generate loads holds exactly the trained values.
  const TrainRun run = train(f, 2, dir / "run",
                             "--train.train_steps 3 --train.learning_rate 5e-2 --train.export_dtype fp32" + kValidate +
                                 " --validation.prompts 'a red ball:::a blue cube' --validation.seed 7");
  ASSERT_EQ(run.rc, 0) << run.output;
  std::string out;
  const fs::path generated = dir / "generated.mp4";
  ASSERT_EQ(run_command(shell_quote(built_program("cvx_generate")) + " --model_path " + shell_quote(f.model) +
                            " --lora_path " + shell_quote(dir / "run" / "pytorch_lora_weights.safetensors") +
                            " --prompt 'a blue cube' --dtype fp32 --use_dynamic_cfg false --scheduler dpm "
                            "--num_inference_steps 2 --guidance_scale 6 --seed 7 --height 48 --width 64 "
                            "--num_frames 9 --save_frames --output " +
                            shell_quote(generated),
                        &out),
            0)
      << out;
  // Compared through the lossless PNGs: the contact sheet's row of prompt 1 holds frames 0, 4 and 8
  // at full size (48 px is below contact_sheet_height), 4 px apart; rows are 4 px apart. (The mp4s
  // are not compared: their bytes are equal only for bitwise-equal frames, and this comparison
  // allows one level.)
  const auto sheet = cvx::read_image(dir / "run" / "validation" / "step-3" / "contact_sheet.png").to(torch::kInt32);
  const auto row = sheet.narrow(0, 48 + 4, 48);
  const std::vector<std::pair<int64_t, std::string>> picks{
      {0, "frame_0000.png"}, {1, "frame_0004.png"}, {2, "frame_0008.png"}};
  for (const auto& [column, name] : picks) {
    const auto expected = cvx::read_image(dir / "generated_frames" / name).to(torch::kInt32);
    const auto got = row.narrow(1, column * (64 + 4), 64);
    ASSERT_EQ(got.sizes(), expected.sizes()) << name;
    // The same arithmetic on the same values (the engine gathers what the LoRA file holds): equal
    // up to one 8-bit level where a float ulp could flip a rounding (measured: identical).
    EXPECT_LE((got - expected).abs().max().item<int>(), 1) << name;
  }
  // The base model renders something else: the validation used the trained LoRA.
  ASSERT_EQ(run_command(shell_quote(built_program("cvx_generate")) + " --model_path " + shell_quote(f.model) +
                            " --prompt 'a blue cube' --dtype fp32 --use_dynamic_cfg false --scheduler dpm "
                            "--num_inference_steps 2 --seed 7 --height 48 --width 64 --num_frames 9 --save_frames "
                            "--output " +
                            shell_quote(dir / "base.mp4"),
                        &out),
            0)
      << out;
  const auto base = cvx::read_image(dir / "base_frames" / "frame_0004.png").to(torch::kInt32);
  EXPECT_GT((base - row.narrow(1, 64 + 4, 64)).abs().max().item<int>(), 1);
}

TEST(ValidationE2E, ImageToVideoRendersFromTheValidationImages) {
  const Fixture& f = fixture("5b-i2v");
  const auto dir = cvx::test::scratch_dir("validation_i2v");
  // The dataset format: dir/prompts.txt + dir/images.txt (the fixture's own data folder).
  const TrainRun run = train(
      f, 2, dir / "run",
      "--train.train_steps 1 --train.enable_tiling false" + kValidate + " --validation.dir " + shell_quote(f.data));
  ASSERT_EQ(run.rc, 0) << run.output;
  size_t num_videos = 0;
  for (const auto& e : fs::directory_iterator(dir / "run" / "validation" / "step-1"))
    num_videos += e.path().extension() == ".mp4";
  EXPECT_EQ(num_videos, 4u) << "one video per line of prompts.txt";
  EXPECT_TRUE(fs::exists(dir / "run" / "validation" / "step-1" / "contact_sheet.png"));
}

TEST(ValidationE2E, BadValidationSettingsFailBeforeTrainingNamingTheOptionAndTheFix) {
  const Fixture& t2v = fixture("5b");
  const Fixture& i2v = fixture("5b-i2v");
  const auto dir = cvx::test::scratch_dir("validation_bad");
  fs::create_directories(dir / "empty");
  struct Case {
    const Fixture* f;
    std::string args, expected;
  };
  const std::vector<Case> cases{
      {&t2v, "--validation.enabled true", "[validation] enabled = true needs the validation prompts"},
      {&t2v, "--validation.enabled true --validation.prompts 'a:::'", "empty entry (#2)"},
      {&t2v, "--validation.enabled true --validation.dir " + shell_quote(dir / "empty"), "has no prompts.txt"},
      {&t2v, "--validation.enabled true --validation.prompts a --validation.images x.png", "text-to-video"},
      {&i2v, "--train.enable_tiling false --validation.enabled true --validation.prompts a", "needs images"},
      {&i2v,
       "--train.enable_tiling false --validation.enabled true --validation.prompts 'a:::b' --validation.images " +
           shell_quote(dir / "missing.png"),
       "images has 1 entries but prompts has 2"},
      // Tiled decoding with the tiny VAE's tiles would give frames of another size.
      {&t2v, "--validation.enabled true --validation.prompts a", "vae_tiling = false"},
  };
  for (const auto& c : cases) {
    const TrainRun r = train(*c.f, 2, dir / "run", "--train.train_steps 1 " + c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_TRUE(contains(r.output, c.expected)) << c.args << "\n" << r.output;
    EXPECT_FALSE(contains(r.output, "transformer: ")) << "no weights loaded for: " << c.args;
  }
}
