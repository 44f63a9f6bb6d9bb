// The dataset list files of the official CogVideoX finetune format: a folder `data_root` holding
// `prompts.txt` (one caption a line), `videos.txt` (one clip path a line, on the same line as its
// caption) and, for image-to-video with explicit first frames, `images.txt`. Media paths are
// relative to the folder of the list file naming them; absolute paths are allowed.
//
// Reading rules (every list file): UTF-8, an optional BOM, LF or CRLF line endings, blank and
// whitespace-only lines skipped, trailing whitespace trimmed. Prompts are trimmed at both ends
// (their inner whitespace kept byte for byte). Each entry keeps its 1-based source line so
// messages can point at it. A validation set is the same format under another root: load it with
// a second config.
#pragma once
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cvx {

struct DatasetListsConfig {
  std::string data_root;                       // folder holding the list files
  std::string caption_column = "prompts.txt";  // the official trainer's option names
  std::string video_column = "videos.txt";
  std::string image_column;  // empty: no image list (T2V, or I2V from frame 0)
  // Prepended to every prompt with one space. The official trainer concatenates without a
  // separator (`id_token + prompt`), which glues the token to the first word unless the user
  // remembers a trailing space that INI files and shells tend to lose; we always separate.
  std::string id_token;

  template <class V>
  void visit(V& v) {
    v("data_root", data_root, "dataset folder holding the list files");
    v("caption_column", caption_column, "prompt list file (one prompt a line), relative to data_root");
    v("video_column", video_column,
      "video list file (one path a line, relative to the list file), relative to data_root");
    v("image_column", image_column,
      "image list file for image-to-video (one first-frame image a line), relative to data_root; empty: none");
    v("id_token", id_token, "identifier prepended to every prompt, followed by one space (e.g. BW_STYLE)");
  }
  // Throws ConfigError when a required field is empty.
  void validate() const;
};

struct DatasetEntry {
  size_t index = 0;                            // 0-based sample index
  std::string prompt;                          // trimmed, id_token applied
  std::filesystem::path video;                 // absolute, lexically normalised
  std::string video_relative;                  // as written in the list file
  std::optional<std::filesystem::path> image;  // absolute, lexically normalised
  size_t prompt_line = 0;                      // 1-based lines in their list files
  size_t video_line = 0;
  size_t image_line = 0;  // 0 without an image list
};

struct DatasetLists {
  std::vector<DatasetEntry> entries;
  std::vector<std::string> warnings;                             // also logged with CVX_WARN
  std::filesystem::path data_root;                               // absolute, lexically normalised
  std::filesystem::path prompts_file, videos_file, images_file;  // images_file empty without images
};

// Reads and checks the lists: files present, equal entry counts, at least one entry, every media
// file present (throws ConfigError otherwise). Duplicate videos and media outside data_root are
// warnings, not errors.
DatasetLists load_dataset_lists(const DatasetListsConfig& config);

// One list file read with the rules above: (1-based line, text trimmed at the end) for every
// non-blank line. Throws ConfigError when the file cannot be read, is UTF-16 or is not UTF-8.
std::vector<std::pair<size_t, std::string>> read_list_file(const std::filesystem::path& file);

}  // namespace cvx
