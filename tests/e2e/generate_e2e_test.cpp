// cvx_generate as a user runs it, on tiny model folders from cvx_make_tiny: T2V and I2V mp4s that
// ffprobe reads with the expected frame count, size and fps; several prompts reuse the models;
// sequence parallelism (P = 2 ranks per video, two groups on four ranks) gives the frames of one
// rank, and a P the heads or the world do not allow is refused before the models load.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

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
std::string generate_command(int ranks, const fs::path& model, const std::string& args) {
  return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " " +
         cvx::test::shell_quote(built_program("cvx_generate")) + " --model_path " + cvx::test::shell_quote(model) +
         " " + args;
}

// Largest difference in levels between the PNG frames of two --save_frames folders (which must
// hold the same frames).
int64_t max_frame_difference(const fs::path& a, const fs::path& b) {
  int64_t worst = 0, frames = 0;
  for (const auto& entry : fs::directory_iterator(a)) {
    const fs::path other = b / entry.path().filename();
    EXPECT_TRUE(fs::exists(other)) << other;
    if (!fs::exists(other)) return 1 << 20;
    const auto x = cvx::read_image(entry.path()).to(torch::kLong), y = cvx::read_image(other).to(torch::kLong);
    EXPECT_EQ(x.sizes(), y.sizes()) << entry.path();
    if (x.sizes() != y.sizes()) return 1 << 20;
    worst = std::max(worst, (x - y).abs().max().item<int64_t>());
    ++frames;
  }
  EXPECT_GT(frames, 0) << a;
  return worst;
}

// One variant at a size whose token count P = 2 does not divide (odd), so the slices are uneven:
// 1.0 at 48x80 with 9 frames is 3 x 3 x 5 = 45 tokens; 1.5 pads 3 latent frames to 4, 2 x 15 = 30
// tokens, also run on 2 ranks. CFG is on (guidance 6: both branches in one batch of 2) with DPM,
// whose per-step noise every rank draws from the same seeded generator.
void expect_sequence_parallel_frames_equal_one_rank(const std::string& variant, bool i2v) {
  const auto dir = cvx::test::scratch_dir("generate_sp_" + variant);
  make_tiny(dir / "model", variant);
  std::ofstream(dir / "prompts.txt") << "a red ball\na blue cube\n";
  std::string args = "--prompt_file " + cvx::test::shell_quote(dir / "prompts.txt") +
                     " --height 48 --width 80 --num_frames 9 --num_inference_steps 4 --scheduler dpm"
                     " --guidance_scale 6 --dtype fp32 --save_frames";
  if (i2v) {
    cvx::write_png(dir / "first.png", torch::randint(0, 256, {48, 80, 3}, torch::kLong).to(torch::kUInt8));
    args += " --image " + cvx::test::shell_quote(dir / "first.png");
  }
  std::string out;
  ASSERT_EQ(run_command(
                generate_command(1, dir / "model", args + " --output " + cvx::test::shell_quote(dir / "one" / "v.mp4")),
                &out),
            0)
      << out;
  ASSERT_EQ(run_command(generate_command(4, dir / "model",
                                         args + " --sequence_parallel_size 2 --output " +
                                             cvx::test::shell_quote(dir / "sp" / "v.mp4")),
                        &out),
            0)
      << out;
  EXPECT_NE(out.find("sequence parallel: 2 ranks per video"), std::string::npos) << out;
  for (const char* name : {"v_000", "v_001"}) {
    EXPECT_TRUE(fs::exists(dir / "sp" / (std::string(name) + ".mp4"))) << name;
    // The slices' projections and the head-split attention sum in another order than the whole
    // sequence (fp32, ~1e-7 relative), four denoising steps carry it; 1 level of 255 bounds it.
    // (The tiny VAE's frames respond weakly to the latents: the latent-level equivalence, which
    // fails when attention does not see the other ranks' tokens, is SequenceParallel.Sampling*
    // in tests/mpi; this test covers the program: groups, prompt assignment, the writing rank.)
    EXPECT_LE(max_frame_difference(dir / "one" / (std::string(name) + "_frames"),
                                   dir / "sp" / (std::string(name) + "_frames")),
              1)
        << variant << " " << name;
  }
}

}  // namespace

TEST(GenerateE2E, SequenceParallelTwoRanksPerVideoGiveTheFramesOfOneRankTextToVideo) {
  expect_sequence_parallel_frames_equal_one_rank("5b", false);
}

TEST(GenerateE2E, SequenceParallelTwoRanksPerVideoGiveTheFramesOfOneRankImageToVideo15) {
  expect_sequence_parallel_frames_equal_one_rank("1.5-i2v", true);
}

TEST(GenerateE2E, SequenceParallelSizesTheHeadsOrTheWorldDoNotAllowAreRefusedBeforeLoading) {
  const auto dir = cvx::test::scratch_dir("generate_sp_bad");
  make_tiny(dir / "model", "5b");  // tiny: 2 attention heads
  std::string out;
  EXPECT_NE(run_command(generate_command(4, dir / "model", "--prompt x --sequence_parallel_size 4"), &out), 0);
  EXPECT_NE(out.find("does not divide the transformer's 2 attention heads"), std::string::npos) << out;
  EXPECT_EQ(out.find("models loaded"), std::string::npos) << out;
  EXPECT_NE(run_command(generate_command(3, dir / "model", "--prompt x --sequence_parallel_size 2"), &out), 0);
  EXPECT_NE(out.find("does not divide the 3 ranks"), std::string::npos) << out;
}

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
  // Another process writes the same bytes (x264 reads heap memory it never wrote: video_writer.cpp).
  ASSERT_EQ(run_command(cvx::test::shell_quote(built_program("cvx_generate")) + " --model_path " +
                            cvx::test::shell_quote(dir / "model") + " --prompt_file " +
                            cvx::test::shell_quote(dir / "prompts.txt") + " --height 32 --width 48 --num_frames 9" +
                            " --num_inference_steps 2 --fps 10 --dtype fp32 --output " +
                            cvx::test::shell_quote(dir / "again" / "video.mp4"),
                        &out),
            0)
      << out;
  for (const char* name : {"video_000.mp4", "video_001.mp4"}) {
    std::ifstream a(dir / "out" / name, std::ios::binary), b(dir / "again" / name, std::ios::binary);
    const std::string x((std::istreambuf_iterator<char>(a)), {}), y((std::istreambuf_iterator<char>(b)), {});
    EXPECT_FALSE(x.empty());
    EXPECT_TRUE(x == y) << name << " differs between two runs";
  }
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
