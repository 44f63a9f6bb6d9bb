// Videos and images written with FFmpeg read back as written: ffprobe sees the frames, size and
// fps of an mp4, and the same frames give the same mp4 bytes whatever the heap held before; a PNG
// round-trips exactly.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "cvx/core/error.h"
#include "cvx/core/host_memory.h"
#include "cvx/data/image_io.h"
#include "cvx/data/video_writer.h"
#include "test_util.h"

namespace {
std::string probe(const std::filesystem::path& file) {
  std::string out;
  const int rc = cvx::test::run_command(
      "ffprobe -v error -count_frames -select_streams v:0 -show_entries "
      "stream=codec_name,width,height,r_frame_rate,nb_read_frames,pix_fmt -of default=noprint_wrappers=1 '" +
          file.string() + "'",
      &out);
  EXPECT_EQ(rc, 0) << out;
  return out;
}

torch::Tensor gradient_frames(int64_t frames, int64_t height, int64_t width) {
  auto y = torch::arange(height).view({1, height, 1, 1}).expand({frames, height, width, 3});
  auto x = torch::arange(width).view({1, 1, width, 1}).expand({frames, height, width, 3});
  auto f = torch::arange(frames).view({frames, 1, 1, 1}).expand({frames, height, width, 3});
  return ((x * 4 + y * 2 + f * 10) % 256).to(torch::kUInt8).contiguous();
}
std::string file_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Fills and frees heap blocks of many sizes with bytes from `seed`, so the next allocations get
// recycled memory that differs from seed to seed (as in a long-running process, where it holds
// old tensors and allocator bookkeeping whose values vary between runs).
void scribble_on_the_heap(uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<std::vector<uint8_t>> blocks;
  for (int i = 0; i < 400; ++i) {
    blocks.emplace_back(16 + random() % (i % 4 == 0 ? (1u << 20) : 4096u));
    for (auto& b : blocks.back()) b = static_cast<uint8_t>(random());
  }
}
}  // namespace

// x264 reads heap memory it never wrote (measured: a process whose heap held other bytes encoded
// the same frames to other B-frames, up to 20 levels apart), so cvx encodes with glibc's
// M_PERTURB set: every allocation then starts as the same byte pattern.
TEST(VideoWriter, SameFramesGiveTheSameBytesWhateverTheHeapHeldBefore) {
  cvx::tune_host_allocator();  // as every cvx program: freed memory stays in the heap for reuse
  const auto dir = cvx::test::scratch_dir("video_writer_heap");
  const auto frames = gradient_frames(9, 48, 64) ^ torch::randint(0, 4, {9, 48, 64, 3}).to(torch::kUInt8);
  std::vector<std::string> files;
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    scribble_on_the_heap(seed);
    const auto file = dir / ("clip" + std::to_string(seed) + ".mp4");
    cvx::write_video(file, frames, {});
    files.push_back(file_bytes(file));
  }
  for (size_t i = 1; i < files.size(); ++i) EXPECT_EQ(files[i], files[0]) << "heap scribbled with seed " << i + 1;
}

TEST(VideoWriter, Mp4HasTheFramesSizeAndFps) {
  const auto dir = cvx::test::scratch_dir("video_writer");
  cvx::VideoWriterOptions options;
  options.fps = 12;
  cvx::write_video(dir / "clip.mp4", gradient_frames(10, 48, 64), options);
  const std::string info = probe(dir / "clip.mp4");
  EXPECT_NE(info.find("codec_name=h264"), std::string::npos) << info;
  EXPECT_NE(info.find("width=64"), std::string::npos) << info;
  EXPECT_NE(info.find("height=48"), std::string::npos) << info;
  EXPECT_NE(info.find("r_frame_rate=12/1"), std::string::npos) << info;
  EXPECT_NE(info.find("nb_read_frames=10"), std::string::npos) << info;
  EXPECT_NE(info.find("pix_fmt=yuv420p"), std::string::npos) << info;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename(), "clip.mp4") << "leftover " << entry.path();
}

TEST(VideoWriter, OddSizesArePaddedByOnePixel) {
  const auto dir = cvx::test::scratch_dir("video_writer_odd");
  cvx::write_video(dir / "odd.mp4", gradient_frames(3, 47, 63));
  const std::string info = probe(dir / "odd.mp4");
  EXPECT_NE(info.find("width=64"), std::string::npos) << info;
  EXPECT_NE(info.find("height=48"), std::string::npos) << info;
  EXPECT_THROW(cvx::write_video(dir / "bad.mp4", torch::zeros({3, 8, 8, 3})), cvx::Error);  // not uint8
}

TEST(VideoWriter, ModelOutputToUint8) {
  const auto video = torch::tensor({0.0, 0.5, 1.0, 1.2}).view({1, 1, 1, 4}).expand({2, 3, 1, 4});
  const auto frames = cvx::to_uint8_frames(video);
  EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{2, 1, 4, 3}));
  EXPECT_EQ(frames[0][0][1][0].item<int>(), 128);  // 127.5: round half to even
  EXPECT_EQ(frames[0][0][3][2].item<int>(), 255);  // clamped
}

TEST(ImageIo, PngRoundTripsExactly) {
  const auto dir = cvx::test::scratch_dir("image_io");
  const auto image = gradient_frames(1, 33, 51)[0].contiguous();
  cvx::write_png(dir / "frame.png", image);
  EXPECT_TRUE(torch::equal(cvx::read_image(dir / "frame.png"), image));
  EXPECT_THROW(cvx::read_image(dir / "missing.png"), cvx::ConfigError);
  std::ofstream(dir / "broken.png") << "not a png";
  EXPECT_THROW(cvx::read_image(dir / "broken.png"), cvx::Error);
}

TEST(ImageIo, EncodePngGivesThePngThatWritePngWrites) {
  const auto dir = cvx::test::scratch_dir("encode_png");
  const auto image = torch::randint(0, 256, {5, 7, 3}, torch::kUInt8);
  const std::string png = cvx::encode_png(image);
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  cvx::write_png(dir / "a.png", image);
  std::ifstream in(dir / "a.png", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), png);
}
