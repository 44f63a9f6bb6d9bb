#include "cvx/data/dataset_lists.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "cvx/core/error.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

void write(const fs::path& file, const std::string& bytes) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << bytes;
}
void touch(const fs::path& file) { write(file, "x"); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Runs the loader expecting a ConfigError; returns its message (empty, with a failure, otherwise).
std::string config_error(const cvx::DatasetListsConfig& config) {
  try {
    cvx::load_dataset_lists(config);
    ADD_FAILURE() << "load_dataset_lists accepted the dataset";
  } catch (const cvx::ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "messages are one line: " << e.what();
    return e.what();
  }
  return {};
}

cvx::DatasetListsConfig config_for(const fs::path& root) {
  cvx::DatasetListsConfig config;
  config.data_root = root.string();
  return config;
}

}  // namespace

TEST(DatasetLists, HappyPathRelativeAndNested) {
  const fs::path root = cvx::test::scratch_dir("dataset_happy");
  touch(root / "videos/a.mp4");
  touch(root / "videos/deep/b.mp4");
  write(root / "prompts.txt", "a cat\na dog\n");
  write(root / "videos.txt", "videos/a.mp4\n./videos/deep/../deep/b.mp4\n");

  const cvx::DatasetLists lists = cvx::load_dataset_lists(config_for(root));
  ASSERT_EQ(lists.entries.size(), 2u);
  EXPECT_TRUE(lists.warnings.empty());
  EXPECT_EQ(lists.prompts_file, root / "prompts.txt");
  EXPECT_EQ(lists.videos_file, root / "videos.txt");
  EXPECT_TRUE(lists.images_file.empty());
  const cvx::DatasetEntry& b = lists.entries[1];
  EXPECT_EQ(b.index, 1u);
  EXPECT_EQ(b.prompt, "a dog");
  EXPECT_EQ(b.video, root / "videos/deep/b.mp4");
  EXPECT_EQ(b.video_relative, "./videos/deep/../deep/b.mp4");
  EXPECT_EQ(b.prompt_line, 2u);
  EXPECT_EQ(b.video_line, 2u);
  EXPECT_FALSE(b.image.has_value());
  EXPECT_EQ(b.image_line, 0u);
}

TEST(DatasetLists, MediaPathsAreRelativeToTheListFileFolder) {
  // A validation set kept in a subfolder with its own lists: same loader, another root.
  const fs::path root = cvx::test::scratch_dir("dataset_nested_lists");
  touch(root / "lists/clips/v.mp4");
  touch(root / "lists/frames/v.png");
  write(root / "lists/p.txt", "a prompt\n");
  write(root / "lists/v.txt", "clips/v.mp4\n");
  write(root / "lists/i.txt", "frames/v.png\n");
  cvx::DatasetListsConfig config = config_for(root);
  config.caption_column = "lists/p.txt";
  config.video_column = "lists/v.txt";
  config.image_column = "lists/i.txt";

  const cvx::DatasetLists lists = cvx::load_dataset_lists(config);
  ASSERT_EQ(lists.entries.size(), 1u);
  EXPECT_EQ(lists.entries[0].video, root / "lists/clips/v.mp4");
  ASSERT_TRUE(lists.entries[0].image.has_value());
  EXPECT_EQ(*lists.entries[0].image, root / "lists/frames/v.png");
  EXPECT_EQ(lists.entries[0].image_line, 1u);
  EXPECT_EQ(lists.images_file, root / "lists/i.txt");
}

TEST(DatasetLists, CrlfBomTrailingWhitespaceAndBlankLines) {
  const fs::path root = cvx::test::scratch_dir("dataset_crlf");
  touch(root / "v/1.mp4");
  touch(root / "v/2.mp4");
  write(root / "prompts.txt", "\xEF\xBB\xBF  first  prompt \t\r\n\r\n   \r\n\tsecond\r\n");
  write(root / "videos.txt", "\xEF\xBB\xBFv/1.mp4  \r\n\n\nv/2.mp4");  // no final newline

  const auto raw = cvx::read_list_file(root / "prompts.txt");
  ASSERT_EQ(raw.size(), 2u);
  EXPECT_EQ(raw[0], std::make_pair(size_t{1}, std::string("  first  prompt")));  // leading kept here
  EXPECT_EQ(raw[1], std::make_pair(size_t{4}, std::string("\tsecond")));

  const cvx::DatasetLists lists = cvx::load_dataset_lists(config_for(root));
  ASSERT_EQ(lists.entries.size(), 2u);
  EXPECT_EQ(lists.entries[0].prompt, "first  prompt");  // inner whitespace kept
  EXPECT_EQ(lists.entries[1].prompt, "second");
  EXPECT_EQ(lists.entries[0].video_relative, "v/1.mp4");
  EXPECT_EQ(lists.entries[1].video, root / "v/2.mp4");
  EXPECT_EQ(lists.entries[1].prompt_line, 4u);
  EXPECT_EQ(lists.entries[1].video_line, 4u);
}

TEST(DatasetLists, CountMismatchNamesBothFilesAndCounts) {
  const fs::path root = cvx::test::scratch_dir("dataset_mismatch");
  touch(root / "a.mp4");
  touch(root / "b.mp4");
  write(root / "prompts.txt", "one\ntwo\nthree\n");
  write(root / "videos.txt", "a.mp4\nb.mp4\n");

  const std::string message = config_error(config_for(root));
  EXPECT_TRUE(contains(message, (root / "prompts.txt").string())) << message;
  EXPECT_TRUE(contains(message, (root / "videos.txt").string())) << message;
  EXPECT_TRUE(contains(message, "has 3 entries")) << message;
  EXPECT_TRUE(contains(message, "has 2")) << message;
  EXPECT_TRUE(contains(message, "each line of prompts.txt must describe the video on the same line of videos.txt"))
      << message;
}

TEST(DatasetLists, MissingMediaListsTheFirstFiveAndTheTotal) {
  const fs::path root = cvx::test::scratch_dir("dataset_missing");
  std::string prompts, videos;
  for (int i = 1; i <= 8; ++i) {
    prompts += "prompt " + std::to_string(i) + "\n";
    videos += "clips/" + std::to_string(i) + ".mp4\n";
  }
  touch(root / "clips/4.mp4");  // the only one present: 7 missing
  write(root / "prompts.txt", prompts);
  write(root / "videos.txt", videos);

  const std::string message = config_error(config_for(root));
  EXPECT_TRUE(contains(message, "7 of 8 media files")) << message;
  for (int i : {1, 2, 3, 5, 6}) {
    EXPECT_TRUE(contains(
        message, (root / "clips" / (std::to_string(i) + ".mp4")).string() + "' (videos.txt:" + std::to_string(i) + ")"))
        << i << ": " << message;
  }
  EXPECT_FALSE(contains(message, "clips/4.mp4")) << message;
  EXPECT_FALSE(contains(message, "clips/7.mp4")) << message;
  EXPECT_TRUE(contains(message, ", ...")) << message;
}

TEST(DatasetLists, MissingImagesAreReportedWithTheirList) {
  const fs::path root = cvx::test::scratch_dir("dataset_missing_image");
  touch(root / "a.mp4");
  write(root / "prompts.txt", "p\n");
  write(root / "videos.txt", "a.mp4\n");
  write(root / "images.txt", "\nframes/a.png\n");
  cvx::DatasetListsConfig config = config_for(root);
  config.image_column = "images.txt";

  const std::string message = config_error(config);
  EXPECT_TRUE(contains(message, "1 of 2 media files")) << message;
  EXPECT_TRUE(contains(message, (root / "frames/a.png").string() + "' (images.txt:2)")) << message;
}

TEST(DatasetLists, ImageCountMismatch) {
  const fs::path root = cvx::test::scratch_dir("dataset_images_mismatch");
  touch(root / "a.mp4");
  touch(root / "b.mp4");
  touch(root / "a.png");
  write(root / "prompts.txt", "one\ntwo\n");
  write(root / "videos.txt", "a.mp4\nb.mp4\n");
  write(root / "images.txt", "a.png\n");
  cvx::DatasetListsConfig config = config_for(root);
  config.image_column = "images.txt";

  const std::string message = config_error(config);
  EXPECT_TRUE(contains(message, (root / "images.txt").string() + "' has 1 entries")) << message;
  EXPECT_TRUE(contains(message, (root / "videos.txt").string() + "' has 2")) << message;
}

TEST(DatasetLists, MissingListFileNamesThePathAndTheOption) {
  const fs::path root = cvx::test::scratch_dir("dataset_no_list");
  touch(root / "a.mp4");
  write(root / "videos.txt", "a.mp4\n");
  std::string message = config_error(config_for(root));
  EXPECT_TRUE(contains(message, (root / "prompts.txt").string())) << message;
  EXPECT_TRUE(contains(message, "caption_column")) << message;

  write(root / "prompts.txt", "p\n");
  cvx::DatasetListsConfig config = config_for(root);
  config.image_column = "images.txt";
  message = config_error(config);
  EXPECT_TRUE(contains(message, (root / "images.txt").string())) << message;
  EXPECT_TRUE(contains(message, "image_column")) << message;

  message = config_error(config_for(root / "nowhere"));
  EXPECT_TRUE(contains(message, (root / "nowhere").string())) << message;
  EXPECT_TRUE(contains(message, "data_root")) << message;
}

TEST(DatasetLists, EmptyDatasetIsRefused) {
  const fs::path root = cvx::test::scratch_dir("dataset_empty");
  write(root / "prompts.txt", "\n  \n\r\n");
  write(root / "videos.txt", "");
  const std::string message = config_error(config_for(root));
  EXPECT_TRUE(contains(message, "is empty")) << message;
  EXPECT_TRUE(contains(message, (root / "prompts.txt").string())) << message;
}

TEST(DatasetLists, DuplicateVideosWarn) {
  const fs::path root = cvx::test::scratch_dir("dataset_duplicates");
  touch(root / "v/a.mp4");
  touch(root / "v/b.mp4");
  write(root / "prompts.txt", "1\n2\n3\n4\n");
  write(root / "videos.txt", "v/a.mp4\nv/b.mp4\n\n./v/a.mp4\nv/../v/b.mp4\n");

  const cvx::DatasetLists lists = cvx::load_dataset_lists(config_for(root));
  ASSERT_EQ(lists.entries.size(), 4u);
  ASSERT_EQ(lists.warnings.size(), 1u);
  const std::string& w = lists.warnings[0];
  EXPECT_TRUE(contains(w, "names 2 video(s) again")) << w;
  EXPECT_TRUE(contains(w, "'./v/a.mp4' on lines 1 and 4")) << w;
  EXPECT_TRUE(contains(w, "'v/../v/b.mp4' on lines 2 and 5")) << w;
}

TEST(DatasetLists, PathsOutsideDataRootWarn) {
  const fs::path base = cvx::test::scratch_dir("dataset_outside");
  const fs::path root = base / "ds";
  touch(root / "in.mp4");
  touch(base / "shared/out.mp4");
  touch(base / "elsewhere/abs.mp4");
  const std::string absolute = (base / "elsewhere/abs.mp4").string();
  write(root / "prompts.txt", "1\n2\n3\n");
  write(root / "videos.txt", "in.mp4\n../shared/out.mp4\n" + absolute + "\n");

  const cvx::DatasetLists lists = cvx::load_dataset_lists(config_for(root.string() + "/"));
  ASSERT_EQ(lists.entries.size(), 3u);
  EXPECT_EQ(lists.entries[1].video, base / "shared/out.mp4");
  ASSERT_EQ(lists.warnings.size(), 1u);
  const std::string& w = lists.warnings[0];
  EXPECT_TRUE(contains(w, "2 media path(s) resolve outside data_root '" + root.string() + "'")) << w;
  EXPECT_TRUE(contains(w, "'../shared/out.mp4' (videos.txt:2)")) << w;
  EXPECT_TRUE(contains(w, "'" + absolute + "'")) << w;
  EXPECT_FALSE(contains(w, "in.mp4")) << w;
}

TEST(DatasetLists, AbsolutePathsInsideTheRootAreFine) {
  const fs::path root = cvx::test::scratch_dir("dataset_absolute");
  touch(root / "clips/a.mp4");
  write(root / "prompts.txt", "p\n");
  write(root / "videos.txt", (root / "clips/a.mp4").string() + "\n");

  const cvx::DatasetLists lists = cvx::load_dataset_lists(config_for(root));
  ASSERT_EQ(lists.entries.size(), 1u);
  EXPECT_EQ(lists.entries[0].video, root / "clips/a.mp4");
  EXPECT_TRUE(lists.warnings.empty());
}

TEST(DatasetLists, IdTokenIsPrependedWithOneSpace) {
  const fs::path root = cvx::test::scratch_dir("dataset_id_token");
  touch(root / "a.mp4");
  write(root / "prompts.txt", "  a dog runs\n");
  write(root / "videos.txt", "a.mp4\n");
  cvx::DatasetListsConfig config = config_for(root);
  config.id_token = "BW_STYLE";
  EXPECT_EQ(cvx::load_dataset_lists(config).entries[0].prompt, "BW_STYLE a dog runs");
  config.id_token = "";
  EXPECT_EQ(cvx::load_dataset_lists(config).entries[0].prompt, "a dog runs");
}

TEST(DatasetLists, UnicodePromptIsPreservedByteExactly) {
  const fs::path root = cvx::test::scratch_dir("dataset_unicode");
  touch(root / "a.mp4");
  // Non-ASCII spaces (U+00A0, U+3000) are content, not trimmed whitespace.
  const std::string prompt = "\xC2\xA0一只猫在雪地里奔跑 🐈‍⬛ — café  naïve\xE3\x80\x80";
  write(root / "prompts.txt", prompt + " \r\n");
  write(root / "videos.txt", "a.mp4\n");
  EXPECT_EQ(cvx::load_dataset_lists(config_for(root)).entries[0].prompt, prompt);
}

TEST(DatasetLists, NonUtf8ListsAreRefused) {
  const fs::path root = cvx::test::scratch_dir("dataset_encoding");
  write(root / "latin1.txt", "ok\ncaf\xE9\n");
  try {
    cvx::read_list_file(root / "latin1.txt");
    FAIL() << "latin-1 accepted";
  } catch (const cvx::ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "line 2 of list file '" + (root / "latin1.txt").string())) << e.what();
    EXPECT_TRUE(contains(e.what(), "UTF-8")) << e.what();
  }
  for (const std::string bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE2\x82"}) {
    write(root / "bad.txt", "x" + bad + "\n");
    EXPECT_THROW(cvx::read_list_file(root / "bad.txt"), cvx::ConfigError) << bad.size();
  }
  write(root / "utf16.txt", std::string("\xFF\xFEp\0\n\0", 6));
  EXPECT_THROW(cvx::read_list_file(root / "utf16.txt"), cvx::ConfigError);
}

TEST(DatasetLists, ValidateAndVisit) {
  cvx::DatasetListsConfig config;
  EXPECT_THROW(config.validate(), cvx::ConfigError);
  config.data_root = "/data";
  EXPECT_NO_THROW(config.validate());
  config.video_column.clear();
  EXPECT_THROW(config.validate(), cvx::ConfigError);

  struct Recorder {
    std::vector<std::string> keys;
    void operator()(const char* key, std::string& field, const char* help) {
      keys.push_back(key);
      EXPECT_NE(std::string(help), "");
      field = std::string("set:") + key;
    }
  } recorder;
  config.visit(recorder);
  EXPECT_EQ(recorder.keys,
            (std::vector<std::string>{"data_root", "caption_column", "video_column", "image_column", "id_token"}));
  EXPECT_EQ(config.caption_column, "set:caption_column");
  EXPECT_EQ(config.id_token, "set:id_token");
}
