// VideoReader on clips made here with the ffmpeg CLI: every common codec and container, rotation
// metadata, odd sizes, variable frame rate, solid colours, and broken files.
#include <gtest/gtest.h>

#include <fstream>

#include "cvx/core/error.h"
#include "cvx/data/video_reader.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

using cvx::test::make_video;

std::string testsrc(int width, int height, int rate) {
  return "testsrc2=size=" + std::to_string(width) + "x" + std::to_string(height) + ":rate=" + std::to_string(rate);
}

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const cvx::FormatError& e) {
    return e.what();
  }
  return "(no FormatError)";
}

}  // namespace

TEST(VideoReader, DecodesEveryCodecAndContainer) {
  const auto dir = cvx::test::scratch_dir("video_reader_codecs");
  struct Case {
    std::string name, codec_args, codec;
  };
  const std::vector<Case> cases = {
      {"h264.mp4", "-c:v libx264 -pix_fmt yuv420p", "h264"},
      {"hevc.mkv", "-c:v libx265 -pix_fmt yuv420p -x265-params log-level=error", "hevc"},
      {"vp9.webm", "-c:v libvpx-vp9 -deadline realtime -cpu-used 8", "vp9"},
      {"av1.mp4", "-c:v libaom-av1 -cpu-used 8 -row-mt 1", "av1"},
      {"mpeg4.avi", "-c:v mpeg4", "mpeg4"},
      {"mpeg4.mov", "-c:v mpeg4", "mpeg4"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto file = make_video(dir, c.name, testsrc(64, 48, 12), 7, c.codec_args);
    const cvx::VideoReader reader(file, {/*threads=*/2});
    const auto& info = reader.info();
    EXPECT_EQ(info.frame_count, 7);
    EXPECT_EQ(info.codec, c.codec);
    EXPECT_EQ(info.width, 64);
    EXPECT_EQ(info.height, 48);
    EXPECT_NEAR(info.fps, 12.0, 1e-6);
    EXPECT_NEAR(info.duration, 7.0 / 12.0, 0.02);
    ASSERT_EQ(reader.timestamps().size(), 7u);
    for (size_t i = 0; i < 7; ++i) EXPECT_NEAR(reader.timestamps()[i], i / 12.0, 2e-3) << i;
    const auto frames = reader.all_frames();
    EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{7, 48, 64, 3}));
    EXPECT_EQ(frames.scalar_type(), torch::kUInt8);
    EXPECT_FALSE(torch::equal(frames[0], frames[6]));  // testsrc2 moves
  }
}

TEST(VideoReader, SolidColourDecodesToItsRgb) {
  const auto dir = cvx::test::scratch_dir("video_reader_colour");
  // Odd sizes need 4:4:4 (4:2:0 halves the chroma planes); lavfi's own YUV sources round to even.
  const auto file =
      make_video(dir, "red.mp4", "color=c=red:size=97x61:rate=8,format=rgb24", 3, "-c:v libx264 -pix_fmt yuv444p");
  const cvx::VideoReader reader(file);
  EXPECT_EQ(reader.info().width, 97);
  EXPECT_EQ(reader.info().height, 61);
  const auto frames = reader.frames({2, 0, 2}).to(torch::kFloat32);  // [3, 61, 97, 3]
  EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{3, 61, 97, 3}));
  const auto mean = frames.mean({0, 1, 2});
  EXPECT_NEAR(mean[0].item<float>(), 255, 6);
  EXPECT_NEAR(mean[1].item<float>(), 0, 6);
  EXPECT_NEAR(mean[2].item<float>(), 0, 6);
  EXPECT_TRUE(torch::equal(frames[0], frames[2]));
  EXPECT_THROW(reader.frames({3}), cvx::ConfigError);
}

// The reader turns frames as ffmpeg's own autorotation does (what players show).
TEST(VideoReader, RotationMetadataTurnsTheFrames) {
  const auto dir = cvx::test::scratch_dir("video_reader_rotation");
  // Red top half, blue bottom half, 32 wide and 16 high as coded.
  const auto plain =
      make_video(dir, "plain.mp4", "color=c=red:size=32x16:rate=8,drawbox=x=0:y=8:w=32:h=8:c=blue:t=fill", 2);
  const cvx::VideoReader reader(cvx::test::make_rotated_copy(plain, dir, "rotated.mp4"));
  EXPECT_EQ(reader.info().rotation, 270);  // rotate=90 is a counter-clockwise display matrix
  EXPECT_EQ(reader.info().width, 16);
  EXPECT_EQ(reader.info().height, 32);
  const auto frame = reader.frames({0})[0].to(torch::kInt32);  // [32, 16, 3]
  EXPECT_EQ(frame.sizes(), (std::vector<int64_t>{32, 16, 3}));
  // ffmpeg -i rotated.mp4 shows the red half on the left, the blue half on the right.
  EXPECT_GT(frame[16][2][0].item<int>(), 200);
  EXPECT_LT(frame[16][2][2].item<int>(), 50);
  EXPECT_GT(frame[16][13][2].item<int>(), 200);
  EXPECT_LT(frame[16][13][0].item<int>(), 50);
}

TEST(VideoReader, VariableFrameRateKeepsEveryTimestamp) {
  const auto dir = cvx::test::scratch_dir("video_reader_vfr");
  // Five frames 100 ms apart, then five 50 ms apart.
  const auto file = make_video(dir, "vfr.mkv", testsrc(64, 48, 10), 10,
                               "-vf \"settb=1/1000,setpts='if(lt(N,5),N*100,500+(N-5)*50)'\" -vsync vfr "
                               "-enc_time_base 1/1000 -c:v libx264 -pix_fmt yuv420p");
  const cvx::VideoReader reader(file);
  const std::vector<double> expected = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7};
  ASSERT_EQ(reader.timestamps().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(reader.timestamps()[i], expected[i], 1e-6) << i;
  EXPECT_GT(reader.info().duration, 0.7);
  EXPECT_LT(reader.info().duration, 0.81);
}

TEST(VideoReader, MaxFramesStopsEarly) {
  const auto dir = cvx::test::scratch_dir("video_reader_max_frames");
  const auto file = make_video(dir, "clip.mp4", testsrc(64, 48, 8), 9);
  cvx::VideoReaderOptions options;
  options.max_frames = 1;
  const cvx::VideoReader first(file, options);
  EXPECT_EQ(first.frame_count(), 1);
  EXPECT_TRUE(torch::equal(first.frames({0}), cvx::VideoReader(file).frames({0})));
}

TEST(VideoReader, BrokenFilesAreFormatErrorsNamingTheFile) {
  const auto dir = cvx::test::scratch_dir("video_reader_broken");
  { std::ofstream(dir / "empty.mp4"); }
  { std::ofstream(dir / "garbage.mp4") << std::string(4096, '\x5a'); }
  const auto good = make_video(dir, "good.mp4", testsrc(64, 48, 8), 9);
  fs::copy_file(good, dir / "truncated.mp4");
  fs::resize_file(dir / "truncated.mp4", fs::file_size(good) / 2);  // the index (moov) is at the end
  for (const char* name : {"empty.mp4", "garbage.mp4", "truncated.mp4"}) {
    const std::string message = error_of([&] { cvx::VideoReader reader(dir / name); });
    EXPECT_NE(message.find((dir / name).string()), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  EXPECT_THROW(cvx::VideoReader(dir / "missing.mp4"), cvx::ConfigError);
  // A PNG is a one-frame "video" to FFmpeg, which is fine; text is not.
  { std::ofstream(dir / "notes.txt") << "not a video\n"; }
  EXPECT_NE(error_of([&] { cvx::VideoReader reader(dir / "notes.txt"); }).find("notes.txt"), std::string::npos);
}

// Scaling in the RGB conversion is what ffmpeg's scale filter does (bicubic swscale), the resize of
// the official scheme's decord reader: the CLI scaling the same frames gives the same bytes.
TEST(VideoReader, ScaledFramesMatchFfmpegScaleFilter) {
  const auto dir = cvx::test::scratch_dir("video_reader_scaled");
  const auto file = make_video(dir, "clip.mp4", testsrc(160, 96, 8), 3);
  const int64_t height = 40, width = 72;
  const cvx::VideoReader reader(file);
  const auto ours = reader.frames({0, 1, 2}, height, width);  // [3, 40, 72, 3]
  ASSERT_EQ(ours.sizes(), (std::vector<int64_t>{3, height, width, 3}));
  const fs::path raw = dir / "cli.rgb";
  std::string out;
  ASSERT_EQ(cvx::test::run_command("ffmpeg -v error -y -i " + cvx::test::shell_quote(file) +
                                       " -vf scale=" + std::to_string(width) + ":" + std::to_string(height) +
                                       " -f rawvideo -pix_fmt rgb24 " + cvx::test::shell_quote(raw),
                                   &out),
            0)
      << out;
  std::ifstream in(raw, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(static_cast<int64_t>(bytes.size()), ours.numel());
  const auto cli = torch::from_blob(bytes.data(), ours.sizes(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(ours, cli)) << "max abs diff "
                                       << (ours.to(torch::kInt32) - cli.to(torch::kInt32)).abs().max().item<int>();
  // Scaling to the clip's own size is the plain conversion.
  EXPECT_TRUE(torch::equal(reader.frames({1}, 96, 160), reader.frames({1})));
}

// Sizes are asked for in display orientation; the quarter turn is applied after scaling.
TEST(VideoReader, ScaledFramesOfARotatedClip) {
  const auto dir = cvx::test::scratch_dir("video_reader_scaled_rotation");
  const auto plain =
      make_video(dir, "plain.mp4", "color=c=red:size=64x32:rate=8,drawbox=x=0:y=16:w=64:h=16:c=blue:t=fill", 2);
  const cvx::VideoReader reader(cvx::test::make_rotated_copy(plain, dir, "rotated.mp4"));
  const auto frame = reader.frames({0}, 24, 8)[0].to(torch::kInt32);  // [24, 8, 3] of a 64x32 display
  ASSERT_EQ(frame.sizes(), (std::vector<int64_t>{24, 8, 3}));
  EXPECT_GT(frame[12][1][0].item<int>(), 200);  // red on the left
  EXPECT_GT(frame[12][6][2].item<int>(), 200);  // blue on the right
}
