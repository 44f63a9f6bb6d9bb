// cvx_generate as a user runs it, on tiny model folders from cvx_make_tiny: T2V and I2V mp4s that
// ffprobe reads with the expected frame count, size and fps; several prompts reuse the models.
#include <gtest/gtest.h>

#include <fstream>

#include "cvx/data/image_io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::built_program;
using cvx::test::run_command;

namespace {

std::string probe(const fs::path& file) {
  std::string out;
  EXPECT_EQ(run_command("ffprobe -v error -count_frames -select_streams v:0 -show_entries "
                        "stream=width,height,r_frame_rate,nb_read_frames -of default=noprint_wrappers=1 " +
                            cvx::test::shell_quote(file),
                        &out),
            0)
      << out;
  return out;
}

void make_tiny(const fs::path& dir, const std::string& variant) {
  std::string out;
  ASSERT_EQ(run_command(cvx::test::shell_quote(built_program("cvx_make_tiny")) + " " + cvx::test::shell_quote(dir) +
                            " --variant " + variant,
                        &out),
            0)
      << out;
}
}  // namespace

TEST(GenerateE2E, TextToVideoWritesAPlayableMp4) {
  const auto dir = cvx::test::scratch_dir("generate_t2v");
  make_tiny(dir / "model", "1.5-t2v");
  std::ofstream(dir / "prompts.txt") << "a red ball\na blue cube\n";
  std::string out;
  const int rc = run_command(
      cvx::test::shell_quote(built_program("cvx_generate")) + " --model_path " + cvx::test::shell_quote(dir / "model") +
          " --prompt_file " + cvx::test::shell_quote(dir / "prompts.txt") + " --height 32 --width 48 --num_frames 9" +
          " --num_inference_steps 2 --fps 10 --dtype fp32 --save_frames --output " +
          cvx::test::shell_quote(dir / "out" / "video.mp4"),
      &out);
  ASSERT_EQ(rc, 0) << out;
  for (const char* name : {"video_000.mp4", "video_001.mp4"}) {
    const std::string info = probe(dir / "out" / name);
    EXPECT_NE(info.find("width=48"), std::string::npos) << info;
    EXPECT_NE(info.find("height=32"), std::string::npos) << info;
    EXPECT_NE(info.find("r_frame_rate=10/1"), std::string::npos) << info;
    EXPECT_NE(info.find("nb_read_frames=9"), std::string::npos) << info;
  }
  EXPECT_TRUE(fs::exists(dir / "out" / "video_000_frames" / "frame_0008.png"));
  EXPECT_NE(out.find("ETA"), std::string::npos) << "progress lines";
}

TEST(GenerateE2E, ImageToVideoWritesAPlayableMp4) {
  const auto dir = cvx::test::scratch_dir("generate_i2v");
  make_tiny(dir / "model", "1.5-i2v");
  auto image = torch::randint(0, 256, {40, 56, 3}, torch::kLong).to(torch::kUInt8);  // resized to 32x48
  cvx::write_png(dir / "first.png", image);
  std::string out;
  const int rc = run_command(
      cvx::test::shell_quote(built_program("cvx_generate")) + " --model_path " + cvx::test::shell_quote(dir / "model") +
          " --prompt 'a cat' --image " + cvx::test::shell_quote(dir / "first.png") +
          " --height 32 --width 48 --num_frames 9 --num_inference_steps 2 --dtype fp32 --output " +
          cvx::test::shell_quote(dir / "i2v.mp4"),
      &out);
  ASSERT_EQ(rc, 0) << out;
  const std::string info = probe(dir / "i2v.mp4");
  EXPECT_NE(info.find("nb_read_frames=9"), std::string::npos) << info;
  EXPECT_NE(info.find("r_frame_rate=16/1"), std::string::npos) << "1.5 default fps: " << info;
}

TEST(GenerateE2E, MisuseIsAClearError) {
  const auto dir = cvx::test::scratch_dir("generate_misuse");
  make_tiny(dir / "model", "5b");
  cvx::write_png(dir / "first.png", torch::zeros({32, 48, 3}, torch::kUInt8));
  std::string out;
  EXPECT_NE(run_command(cvx::test::shell_quote(built_program("cvx_generate")) + " --model_path " +
                            cvx::test::shell_quote(dir / "model") + " --prompt x --image " +
                            cvx::test::shell_quote(dir / "none.png"),
                        &out),
            0);
  EXPECT_NE(out.find("none.png does not exist"), std::string::npos) << out;
  EXPECT_NE(run_command(cvx::test::shell_quote(built_program("cvx_generate")) + " --model_path " +
                            cvx::test::shell_quote(dir / "model") + " --prompt x --image " +
                            cvx::test::shell_quote(dir / "first.png") + " --height 32 --width 48 --num_frames 9",
                        &out),
            0);
  EXPECT_NE(out.find("text-to-video model"), std::string::npos) << out;
  EXPECT_NE(run_command(cvx::test::shell_quote(built_program("cvx_generate")) + " --model_path " +
                            cvx::test::shell_quote(dir / "model") + " --prompt x --height 30 --width 48",
                        &out),
            0);
  EXPECT_NE(out.find("multiples of 16"), std::string::npos) << out;
}
