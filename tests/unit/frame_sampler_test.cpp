// Frame sampling rules: exact indices for the official stride rule, spread and fps.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/data/frame_sampler.h"

using cvx::FrameSampling;
using Indices = std::vector<int64_t>;

namespace {
Indices range(int64_t begin, int64_t end, int64_t step = 1) {
  Indices r;
  for (int64_t i = begin; i < end; i += step) r.push_back(i);
  return r;
}
}  // namespace

// Python: indices = list(range(0, N, N // F))[:F], or all frames then the last repeated when N < F.
TEST(FrameSampler, StrideIsTheOfficialRule) {
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::stride, 100, 49), range(0, 98, 2));
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::stride, 49, 49), range(0, 49));
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::stride, 97, 49), range(0, 49));  // 97 // 49 = 1
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::stride, 147, 49), range(0, 147, 3));
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::stride, 250, 81), range(0, 243, 3));
  Indices short_clip = range(0, 30);
  short_clip.resize(49, 29);
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::stride, 30, 49), short_clip);
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::stride, 1, 9), Indices(9, 0));
}

// numpy: np.round(np.linspace(0, N - 1, F)) (halves to even).
TEST(FrameSampler, SpreadCoversTheWholeClip) {
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::spread, 10, 9), (Indices{0, 1, 2, 3, 4, 6, 7, 8, 9}));
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::spread, 5, 9), (Indices{0, 0, 1, 2, 2, 2, 3, 4, 4}));
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::spread, 97, 49), range(0, 97, 2));
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::spread, 1, 1), Indices{0});
}

TEST(FrameSampler, FpsResamplesByTime) {
  std::vector<double> t24;
  for (int i = 0; i < 20; ++i) t24.push_back(i / 24.0);
  // 8 fps from 24 fps: every third frame; past the end (frame 19 at 0.79 s) the last frame repeats.
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::fps, 20, 9, t24, 8), (Indices{0, 3, 6, 9, 12, 15, 18, 19, 19}));
  // Upsampling repeats frames: 16 fps from 8 fps (halfway between two frames: the earlier).
  std::vector<double> t8 = {0, 0.125, 0.25, 0.375, 0.5};
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::fps, 5, 9, t8, 16), (Indices{0, 0, 1, 1, 2, 2, 3, 3, 4}));
  // Variable frame rate (50 ms apart from 0.5 s): by time, not by index.
  std::vector<double> vfr = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7};
  EXPECT_EQ(cvx::sample_frame_indices(FrameSampling::fps, 10, 9, vfr, 10), (Indices{0, 1, 2, 3, 4, 5, 7, 9, 9}));
  EXPECT_THROW(cvx::sample_frame_indices(FrameSampling::fps, 10, 9, vfr, 0), cvx::ConfigError);
  EXPECT_THROW(cvx::sample_frame_indices(FrameSampling::fps, 5, 9, vfr, 8), cvx::ConfigError);
}

TEST(FrameSampler, FrameCountMustBe8NPlus1) {
  try {
    cvx::sample_frame_indices(FrameSampling::stride, 100, 50);
    FAIL() << "no error";
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("nearest valid: 49 or 57"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cvx::sample_frame_indices(FrameSampling::stride, 100, 0), cvx::ConfigError);
  EXPECT_THROW(cvx::sample_frame_indices(FrameSampling::stride, 0, 9), cvx::ConfigError);
  EXPECT_EQ(cvx::parse_frame_sampling("spread"), FrameSampling::spread);
  EXPECT_THROW(cvx::parse_frame_sampling("random"), cvx::ConfigError);
}
