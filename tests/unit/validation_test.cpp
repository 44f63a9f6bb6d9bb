// The pieces of training validation that need no model: prompt lists, file names, contact sheets.
#include "cvx/train/validation.h"

#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"

namespace {

using cvx::test::error_text;

TEST(ValidationPrompts, SlugIsLowercaseAsciiWordsJoinedByUnderscores) {
  EXPECT_EQ(cvx::prompt_slug("A panda, playing guitar!"), "a_panda_playing_guitar");
  EXPECT_EQ(cvx::prompt_slug("  --Hello__World--  "), "hello_world");
  EXPECT_EQ(cvx::prompt_slug("Ünïcode café"), "n_code_caf");
  EXPECT_EQ(cvx::prompt_slug("!!!"), "prompt");
  EXPECT_EQ(cvx::prompt_slug(std::string(100, 'x')).size(), 40u);
  EXPECT_EQ(cvx::prompt_slug("abc def ghi", 4), "abc");  // no trailing '_' after the cut
}

TEST(ValidationPrompts, ListOptionSplitsAtTripleColonsAndRefusesEmptyEntries) {
  EXPECT_EQ(cvx::split_list_option("a cat ::: a dog:::x", "opt"), (std::vector<std::string>{"a cat", "a dog", "x"}));
  EXPECT_EQ(cvx::split_list_option("one: two", "opt"), std::vector<std::string>{"one: two"});
  EXPECT_NE(error_text([] {
              cvx::split_list_option("a:::  :::b", "[validation] prompts");
            }).find("[validation] prompts has an empty entry (#2)"),
            std::string::npos);
}

TEST(ValidationPrompts, DirectoryListsGiveImagesRelativeToTheirListFile) {
  const auto dir = cvx::test::scratch_dir("validation_lists");
  std::filesystem::create_directories(dir / "images");
  std::ofstream(dir / "prompts.txt") << "first prompt\n\n  second prompt  \n";
  std::ofstream(dir / "images.txt") << "images/a.png\nimages/b.png\n";
  std::ofstream(dir / "images" / "a.png") << "x";
  std::ofstream(dir / "images" / "b.png") << "x";
  cvx::ValidationConfig config;
  config.dir = dir.string();
  const auto t2v = cvx::load_validation_prompts(config, false);
  ASSERT_EQ(t2v.size(), 2u);
  EXPECT_EQ(t2v[1].prompt, "second prompt");
  EXPECT_EQ(t2v[1].index, 1);
  EXPECT_TRUE(t2v[1].image.empty());
  const auto i2v = cvx::load_validation_prompts(config, true);
  EXPECT_EQ(i2v[1].image, (dir / "images" / "b.png").lexically_normal());

  std::ofstream(dir / "images.txt") << "images/a.png\n";
  EXPECT_NE(error_text([&] { cvx::load_validation_prompts(config, true); }).find("has 1 images but"),
            std::string::npos);
  std::ofstream(dir / "images.txt") << "images/a.png\nimages/missing.png\n";
  const std::string missing = error_text([&] { cvx::load_validation_prompts(config, true); });
  EXPECT_NE(missing.find("missing.png"), std::string::npos) << missing;
  EXPECT_NE(missing.find("line 2"), std::string::npos) << missing;
}

TEST(ValidationPrompts, ConfigNeedsPromptsFromExactlyOneSource) {
  cvx::ValidationConfig config;
  config.enabled = true;
  EXPECT_NE(error_text([&] { config.validate(); }).find("needs the validation prompts"), std::string::npos);
  config.prompts = "a";
  EXPECT_NO_THROW(config.validate());
  config.dir = "somewhere";
  EXPECT_NE(error_text([&] { config.validate(); }).find("dir or prompts, not both"), std::string::npos);
}

TEST(ContactSheet, StripHoldsFirstMiddleAndLastFrameSideBySide) {
  auto frames = torch::zeros({5, 6, 8, 3}, torch::kUInt8);
  for (int64_t f = 0; f < 5; ++f) frames[f].fill_(static_cast<uint8_t>(10 * (f + 1)));
  const auto strip = cvx::contact_strip(frames, 100, 2);
  ASSERT_EQ(strip.sizes(), (std::vector<int64_t>{6, 3 * 8 + 2 * 2, 3}));
  EXPECT_EQ(strip[0][0][0].item<int>(), 10);   // frame 0
  EXPECT_EQ(strip[0][10][0].item<int>(), 30);  // frame 2 = 5 / 2
  EXPECT_EQ(strip[0][20][0].item<int>(), 50);  // frame 4
  EXPECT_EQ(strip[0][8][0].item<int>(), 255);  // the white gap
}

TEST(ContactSheet, TallFramesAreScaledToTheSheetHeight) {
  const auto frames = torch::full({3, 40, 60, 3}, 77, torch::kUInt8);
  const auto strip = cvx::contact_strip(frames, 20, 4);
  EXPECT_EQ(strip.size(0), 20);
  EXPECT_EQ(strip.size(1), 3 * 30 + 2 * 4);
  EXPECT_EQ(strip[5][5][1].item<int>(), 77);  // area scaling keeps a flat colour
}

TEST(ContactSheet, StripsStackWithWhiteRowsBetween) {
  const auto a = torch::zeros({4, 10, 3}, torch::kUInt8), b = torch::ones({4, 10, 3}, torch::kUInt8);
  const auto sheet = cvx::stack_strips({a, b}, 3);
  ASSERT_EQ(sheet.sizes(), (std::vector<int64_t>{4 + 3 + 4, 10, 3}));
  EXPECT_EQ(sheet[5][0][0].item<int>(), 255);
  EXPECT_EQ(sheet[7][0][0].item<int>(), 1);
  EXPECT_NE(error_text([&] {
              cvx::stack_strips({a, torch::zeros({5, 10, 3}, torch::kUInt8)}, 3);
            }).find("differ"),
            std::string::npos);
}

}  // namespace
