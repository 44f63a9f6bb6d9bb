// cvx_precompute under mpirun on a synthetic dataset (FFmpeg-made clips of several codecs, containers
// and sizes, a rotated one, a too-short one, a corrupt one) and a tiny
// model: one store with every sample once, latents equal to a single-process encode, deduplicated
// prompts, resume after a rank dies, refusal of a mismatched store.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "cvx/data/frame_sampler.h"
#include "cvx/data/image_io.h"
#include "cvx/data/latent_store.h"
#include "cvx/data/store_header.h"
#include "cvx/data/transforms.h"
#include "cvx/data/video_reader.h"
#include "cvx/model/vae.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::built_program;
using cvx::test::run_command;

namespace {

const char* kMpirun = "mpirun --oversubscribe --allow-run-as-root";

// One clip per line of a synthetic dataset: 3 H.264 mp4 test patterns (128x96, 17 frames), then
// HEVC in mkv (160x90, 13 frames), VP9 in webm at an odd size (95x127, 25 frames), a clip with
// rotate=90 metadata (shown as 96x128), a too-short one (5 frames for 9 training frames) and a
// corrupt file that shares clip 0's prompt: 8 samples, 6 good, 2 bad, 7 distinct prompts. A tiny 5b model.
constexpr int64_t kNumSamples = 8, kNumGood = 6, kNumPrompts = 7;
constexpr int64_t kTooShort = 6, kBroken = 7;

fs::path make_setup(const std::string& name) {
  const auto dir = cvx::test::scratch_dir(name);
  const auto q = [](const fs::path& p) { return cvx::test::shell_quote(p); };
  std::string out;
  EXPECT_EQ(run_command(q(built_program("cvx_make_tiny")) + " " + q(dir / "model") + " --variant 5b", &out), 0) << out;
  EXPECT_EQ(run_command("bash " + q(fs::path(CVX_SOURCE_DIR) / "tools" / "make_synthetic_dataset.sh") + " " +
                            q(dir / "data") + " 3 128x96 17",
                        &out),
            0)
      << out;
  const auto videos = dir / "data" / "videos";
  using cvx::test::make_video;
  make_video(videos, "hevc.mkv", "testsrc2=size=160x90:rate=8", 13,
             "-c:v libx265 -pix_fmt yuv420p -x265-params log-level=error");
  make_video(videos, "vp9.webm", "smptebars=size=95x127:rate=8", 25, "-c:v libvpx-vp9 -deadline realtime -cpu-used 8");
  const auto plain = make_video(videos, "plain.mp4", "rgbtestsrc=size=128x96:rate=8", 17);
  cvx::test::make_rotated_copy(plain, videos, "rotated.mp4");
  fs::remove(plain);
  make_video(videos, "short.mp4", "testsrc=size=128x96:rate=8", 5);
  std::ofstream(videos / "broken.mp4") << "not a video at all";
  std::ofstream(dir / "data" / "videos.txt", std::ios::app)
      << "videos/hevc.mkv\nvideos/vp9.webm\nvideos/rotated.mp4\nvideos/short.mp4\nvideos/broken.mp4\n";
  std::ofstream(dir / "data" / "prompts.txt", std::ios::app)
      << "an hevc clip in matroska\nsmpte bars in webm at an odd size\nstripes filmed sideways\n"
         "a clip too short to train on\na test pattern with a moving clock, clip 0\n";
  return dir;
}

// `program`: the command run under mpirun with cvx_precompute's options; cvx_precompute when empty.
std::string precompute(const fs::path& dir, int ranks, const std::string& extra = "", const std::string& program = "") {
  std::string out;
  const std::string command = std::string(kMpirun) + " -np " + std::to_string(ranks) + " " +
                              (program.empty() ? cvx::test::shell_quote(built_program("cvx_precompute")) : program) +
                              " --model.path " + cvx::test::shell_quote(dir / "model") + " --data_root " +
                              cvx::test::shell_quote(dir / "data") + " --store " +
                              cvx::test::shell_quote(dir / "store.h5") + " --train_resolution 9x64x96 " + extra;
  const int rc = run_command(command, &out);
  return std::to_string(rc) + "\n" + out;
}
}  // namespace

TEST(PrecomputeE2E, FourRanksWriteOneStoreEqualToASingleProcessEncode) {
  const auto dir = make_setup("precompute_np4");
  const std::string out = precompute(dir, 4);
  ASSERT_EQ(out.rfind("0\n", 0), 0u) << out;
  EXPECT_NE(out.find("skipping sample " + std::to_string(kBroken)), std::string::npos)
      << "corrupt clip reported: " << out;
  EXPECT_NE(out.find("short.mp4: too short"), std::string::npos) << "short clip reported: " << out;
  // Each sample is encoded by exactly one rank: ranks that planned from different views of the
  // flags would encode some twice and leave others (and prompts) pending.
  EXPECT_NE(
      out.find("precompute finished: " + std::to_string(kNumGood) + " encoded now, 0 before, " +
               std::to_string(kNumSamples - kNumGood) + " skipped as bad, " + std::to_string(kNumPrompts) + " prompts"),
      std::string::npos)
      << out;

  auto store = cvx::LatentStore::open(dir / "store.h5", MPI_COMM_SELF);
  // The header the trainer computes from the model folder's configs alone is the one written.
  cvx::ModelConfig model;
  model.path = (dir / "model").string();
  cvx::DataConfig data;
  data.train_resolution = "9x64x96";
  EXPECT_EQ(cvx::store_header_fields(store.header()),
            cvx::store_header_fields(cvx::expected_store_header(model, data)));
  const auto index = store.index();
  ASSERT_EQ(index.size(), static_cast<size_t>(kNumSamples));
  std::set<int64_t> ids;
  for (const auto& s : index) ids.insert(s.id);
  EXPECT_EQ(ids.size(), index.size()) << "every sample once";
  for (int64_t i = 0; i < kNumSamples; ++i)
    EXPECT_EQ(index[i].status, i == kTooShort || i == kBroken ? cvx::SampleStatus::kBad : cvx::SampleStatus::kDone)
        << i;
  EXPECT_EQ(store.num_prompts(), kNumPrompts) << "the repeated prompt is stored once";
  EXPECT_EQ(index[kBroken].prompt_row, index[0].prompt_row);
  EXPECT_TRUE(store.pending_prompts().empty());

  // A single-process encode of the same clip gives the same moments, bit for bit (fp32).
  auto vae = cvx::load_vae(dir / "model" / "vae");
  vae->eval();
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < kNumSamples; ++i) {
    if (i == kTooShort || i == kBroken) continue;
    cvx::VideoReader reader(dir / "data" / index[i].media_path);
    const auto idx = cvx::sample_frame_indices(cvx::FrameSampling::stride, reader.frame_count(), 9);
    const auto video = cvx::to_vae_input(reader.frames(idx, 64, 96), 64, 96, cvx::ResizeMode::resize);
    EXPECT_TRUE(torch::equal(vae->encode_moments(video)[0], store.read_moments(i))) << index[i].media_path;
  }
  std::string inspect;
  EXPECT_EQ(
      run_command(cvx::test::shell_quote(built_program("cvx_inspect")) + " " + cvx::test::shell_quote(dir / "store.h5"),
                  &inspect),
      0)
      << inspect;
  EXPECT_NE(
      inspect.find(std::to_string(kNumGood) + " done, " + std::to_string(kNumSamples - kNumGood) + " bad, 0 pending"),
      std::string::npos)
      << inspect;
}

TEST(PrecomputeE2E, ResumesAfterARankDiesAndRefusesAMismatchedStore) {
  const auto dir = make_setup("precompute_resume");
  // The last rank dies after its first sample, which aborts the job.
  const std::string killed = precompute(dir, 2, "", cvx::test::shell_quote(CVX_PRECOMPUTE_KILL_PROBE) + " 1");
  EXPECT_NE(killed.rfind("0\n", 0), 0u) << "the job must fail: " << killed;
  int64_t done_before = 0;
  {
    auto store = cvx::LatentStore::open(dir / "store.h5", MPI_COMM_SELF);
    for (const auto& s : store.index()) done_before += s.status == cvx::SampleStatus::kDone;
  }
  ASSERT_GT(done_before, 0);
  ASSERT_LT(done_before, kNumGood);
  // Resumed with 4 ranks: the pending samples are re-planned over however many ranks there are now.
  const std::string resumed = precompute(dir, 4);
  ASSERT_EQ(resumed.rfind("0\n", 0), 0u) << resumed;
  EXPECT_NE(resumed.find("(" + std::to_string(done_before) + " done before)"), std::string::npos) << resumed;
  // Nothing finished before is encoded again.
  EXPECT_NE(resumed.find("precompute finished: " + std::to_string(kNumGood - done_before) + " encoded now, " +
                         std::to_string(done_before) + " before"),
            std::string::npos)
      << resumed;
  {
    auto store = cvx::LatentStore::open(dir / "store.h5", MPI_COMM_SELF);
    int64_t done = 0;
    for (const auto& s : store.index()) done += s.status == cvx::SampleStatus::kDone;
    EXPECT_EQ(done, kNumGood);
  }
  // Another resolution: refused, naming what differs and how to proceed.
  const std::string refused = precompute(dir, 2, "--train_resolution 17x64x96");
  EXPECT_NE(refused.rfind("0\n", 0), 0u) << refused;
  EXPECT_NE(refused.find("frames"), std::string::npos) << refused;
  EXPECT_NE(refused.find("--overwrite"), std::string::npos) << refused;
  const std::string overwritten = precompute(dir, 2, "--train_resolution 17x64x96 --overwrite");
  EXPECT_EQ(overwritten.rfind("0\n", 0), 0u) << overwritten;
}

// I2V: the image latents and the conditioning pixels of each sample are the first frame of the
// clip as encoded (same crop), or the images.txt image resized straight to HxW; two ranks,
// aspect-changing center_crop.
TEST(PrecomputeE2E, ImageToVideoStoresTheFirstFrameLatentsAndPixels) {
  const auto dir = cvx::test::scratch_dir("precompute_i2v");
  std::string out;
  ASSERT_EQ(run_command(cvx::test::shell_quote(built_program("cvx_make_tiny")) + " " +
                            cvx::test::shell_quote(dir / "model") + " --variant 5b-i2v",
                        &out),
            0)
      << out;
  ASSERT_EQ(
      run_command("bash " + cvx::test::shell_quote(fs::path(CVX_SOURCE_DIR) / "tools" / "make_synthetic_dataset.sh") +
                      " " + cvx::test::shell_quote(dir / "data") + " 3 128x96 9 --images",
                  &out),
      0)
      << out;
  const int64_t height = 64, width = 64;  // from 128x96: scaled to 85x64, the middle 64 columns cut
  auto vae = cvx::load_vae(dir / "model" / "vae");
  vae->eval();
  torch::NoGradGuard no_grad;
  for (const bool with_images : {false, true}) {
    SCOPED_TRACE(with_images ? "images.txt" : "first frames");
    const std::string result = precompute(dir, 2,
                                          "--train_resolution 9x64x64 --resize_mode center_crop --overwrite" +
                                              std::string(with_images ? " --image_column images.txt" : ""));
    ASSERT_EQ(result.rfind("0\n", 0), 0u) << result;
    auto store = cvx::LatentStore::open(dir / "store.h5", MPI_COMM_SELF);
    ASSERT_TRUE(store.options().image_latents);
    const auto index = store.index();
    for (size_t i = 0; i < index.size(); ++i) {
      ASSERT_EQ(index[i].status, cvx::SampleStatus::kDone) << i;
      cvx::VideoReader reader(dir / "data" / index[i].media_path);
      const auto idx = cvx::sample_frame_indices(cvx::FrameSampling::stride, reader.frame_count(), 9);
      const auto [h, w] =
          cvx::scaled_size(cvx::ResizeMode::center_crop, reader.info().height, reader.info().width, height, width);
      const auto video = cvx::to_vae_input(reader.frames(idx, h, w), height, width, cvx::ResizeMode::center_crop);
      EXPECT_TRUE(torch::equal(vae->encode_moments(video)[0], store.read_moments(static_cast<int64_t>(i)))) << i;
      const auto image =
          with_images
              ? cvx::to_vae_input(cvx::read_image(dir / "data" / "images" /
                                                  fs::path(index[i].media_path).filename().replace_extension(".png"))
                                      .unsqueeze(0),
                                  height, width, cvx::ResizeMode::resize)
              : video.narrow(2, 0, 1);
      EXPECT_TRUE(torch::equal(vae->encode_moments(image)[0], store.read_image_moments(static_cast<int64_t>(i)))) << i;
      // The conditioning pixels the trainer encodes every step (image_latents = encode): a clip's
      // first frame exactly as the VAE saw it; an images.txt picture, its resize rounded to uint8.
      ASSERT_TRUE(store.options().images);
      const auto pixels = store.read_image(static_cast<int64_t>(i));  // [3, H, W] uint8
      const auto seen = pixels.to(torch::kFloat32) / 127.5 - 1.0;
      const auto encoded = image[0].select(1, 0);  // [3, H, W]
      if (with_images) {
        EXPECT_LE((seen - encoded).abs().max().item<double>(), 0.5 / 127.5 + 1e-6) << i;
      } else {
        EXPECT_TRUE(torch::equal(seen, encoded)) << i;
      }
    }
  }
}
