// cvx_extract_images on a two-clip dataset: one PNG first frame per clip and images.txt naming them.
#include <gtest/gtest.h>

#include <fstream>

#include "cvx/data/dataset_lists.h"
#include "cvx/data/image_io.h"
#include "test_util.h"

namespace fs = std::filesystem;

TEST(ExtractImages, WritesFirstFramesAndTheList) {
  const auto dir = cvx::test::scratch_dir("extract_images");
  fs::create_directories(dir / "videos" / "more");
  std::string out;
  // Two clips with the same stem in different folders; the first frame of each is a solid colour.
  for (const auto& [path, colour] :
       {std::pair<std::string, std::string>{"videos/clip.mp4", "red"}, {"videos/more/clip.mp4", "blue"}}) {
    ASSERT_EQ(cvx::test::run_command("ffmpeg -v error -y -f lavfi -i color=c=" + colour +
                                         ":size=48x32:rate=8 -frames:v 3 -c:v libx264 -pix_fmt yuv420p '" +
                                         (dir / path).string() + "'",
                                     &out),
              0)
        << out;
  }
  std::ofstream(dir / "prompts.txt") << "a red clip\na blue clip\n";
  std::ofstream(dir / "videos.txt") << "videos/clip.mp4\nvideos/more/clip.mp4\n";
  const std::string program = cvx::test::built_program("cvx_extract_images").string();
  ASSERT_EQ(cvx::test::run_command("'" + program + "' --data_root '" + dir.string() + "'", &out), 0) << out;

  cvx::DatasetListsConfig config;
  config.data_root = dir.string();
  config.image_column = "images.txt";
  const auto lists = cvx::load_dataset_lists(config);  // checks every image exists
  ASSERT_EQ(lists.entries.size(), 2u);
  EXPECT_EQ(lists.entries[0].image, fs::path(dir / "images" / "clip.png"));
  EXPECT_EQ(lists.entries[1].image, fs::path(dir / "images" / "clip_1.png"));
  const auto red = cvx::read_image(*lists.entries[0].image).to(torch::kFloat32);   // [32, 48, 3]
  const auto blue = cvx::read_image(*lists.entries[1].image).to(torch::kFloat32);  // [32, 48, 3]
  EXPECT_EQ(red.sizes(), (std::vector<int64_t>{32, 48, 3}));
  EXPECT_GT(red.select(2, 0).mean().item<float>(), 240);
  EXPECT_GT(blue.select(2, 2).mean().item<float>(), 240);

  // A clip that cannot be read fails the run with its name.
  std::ofstream(dir / "videos" / "more" / "clip.mp4", std::ios::trunc) << "not a video";
  EXPECT_NE(cvx::test::run_command("'" + program + "' --data_root '" + dir.string() + "'", &out), 0);
  EXPECT_NE(out.find("more/clip.mp4"), std::string::npos) << out;
}
