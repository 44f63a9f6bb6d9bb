#include "cvx/data/dataset_lists.h"

#include <fstream>
#include <iterator>
#include <sstream>
#include <unordered_map>

#include "cvx/core/error.h"
#include "cvx/core/log.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {

// How many offending paths a message shows before summarising the rest as a count.
constexpr size_t kShown = 5;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

// Index of the first byte that breaks UTF-8 (overlong forms, surrogates and > U+10FFFF included),
// or npos. The prompts go to a tokenizer, so bad bytes are refused here, where we can name the line.
size_t invalid_utf8_at(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + n >= s.size()) return i;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return i;
    }
    i += n + 1;
  }
  return std::string::npos;
}

// Lexically normalised, without the trailing separator that would make "/a/b/" differ from "/a/b".
fs::path normal(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (n.filename().empty() && n != n.root_path()) n = n.parent_path();
  return n;
}

bool inside(const fs::path& path, const fs::path& root) {
  const fs::path rel = path.lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

// The list file named by `option`, which must exist: the message says which option to change.
fs::path list_file(const fs::path& root, const std::string& value, const char* option, const char* what) {
  const fs::path file = normal(root / value);
  std::error_code ec;
  CVX_CHECK_AS(ConfigError, fs::is_regular_file(file, ec), what, " list file '", file.string(),
               "' not found; create it, or set its name (relative to data_root '", root.string(), "') with the option ",
               option);
  return file;
}

struct Media {
  std::string text;  // as written
  fs::path path;     // resolved
  size_t line = 0;
};

std::vector<Media> read_media(const fs::path& file) {
  std::vector<Media> media;
  for (auto& [line, text] : read_list_file(file)) {
    // Relative to the list file's folder, like the official loader; `/` keeps absolute paths as is.
    fs::path path = normal(file.parent_path() / fs::path(text));
    media.push_back({std::move(text), std::move(path), line});
  }
  return media;
}

void check_counts(const fs::path& a, size_t na, const char* a_what, const fs::path& b, size_t nb, const char* b_what,
                  const char* relation) {
  CVX_CHECK_AS(ConfigError, na == nb, a_what, " list '", a.string(), "' has ", na, " entries but ", b_what, " list '",
               b.string(), "' has ", nb, " (blank lines not counted); each line of ", a.filename().string(), " must ",
               relation, " on the same line of ", b.filename().string(),
               ": add or remove lines so both have the same count");
}

}  // namespace

void DatasetListsConfig::validate() const {
  CVX_CHECK_AS(ConfigError, !data_root.empty(), "data_root is empty; set the option data_root to the dataset folder");
  CVX_CHECK_AS(ConfigError, !caption_column.empty(),
               "caption_column is empty; set it to the prompt list file, e.g. prompts.txt");
  CVX_CHECK_AS(ConfigError, !video_column.empty(),
               "video_column is empty; set it to the video list file, e.g. videos.txt");
}

std::vector<std::pair<size_t, std::string>> read_list_file(const fs::path& file) {
  std::error_code ec;
  CVX_CHECK_AS(ConfigError, !fs::is_directory(file, ec), "list file '", file.string(), "' is a folder, not a file");
  std::ifstream in(file, std::ios::binary);
  CVX_CHECK_AS(ConfigError, in.good(), "cannot open list file '", file.string(), "'");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CVX_CHECK_AS(ConfigError, !in.bad(), "cannot read list file '", file.string(), "'");

  // Editors on Windows save "Unicode" text as UTF-16: say so instead of reporting garbage lines.
  const bool utf16 =
      data.size() >= 2 && ((data[0] == '\xFF' && data[1] == '\xFE') || (data[0] == '\xFE' && data[1] == '\xFF'));
  CVX_CHECK_AS(ConfigError, !utf16, "list file '", file.string(), "' is UTF-16; save it as UTF-8");
  if (data.compare(0, 3, "\xEF\xBB\xBF") == 0) data.erase(0, 3);

  std::vector<std::pair<size_t, std::string>> lines;
  size_t number = 0;
  for (size_t pos = 0; pos < data.size();) {
    size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    ++number;
    size_t last = end;  // trailing whitespace, the CR of CRLF included
    while (last > pos && is_space(data[last - 1])) --last;
    if (last > pos) {
      std::string text = data.substr(pos, last - pos);
      const size_t bad = invalid_utf8_at(text);
      CVX_CHECK_AS(ConfigError, bad == std::string::npos, "line ", number, " of list file '", file.string(),
                   "' is not valid UTF-8 (byte ", bad + 1, " of the line); save the file as UTF-8");
      lines.emplace_back(number, std::move(text));
    }
    pos = end + 1;
  }
  return lines;
}

DatasetLists load_dataset_lists(const DatasetListsConfig& config) {
  config.validate();
  DatasetLists out;
  out.data_root = normal(fs::absolute(config.data_root));
  const fs::path& root = out.data_root;
  std::error_code ec;
  CVX_CHECK_AS(ConfigError, fs::is_directory(root, ec), "data_root '", root.string(),
               "' is not an existing folder; set the option data_root to the folder holding the list files");

  out.prompts_file = list_file(root, config.caption_column, "caption_column", "prompt");
  out.videos_file = list_file(root, config.video_column, "video_column", "video");
  const bool with_images = !config.image_column.empty();
  if (with_images) out.images_file = list_file(root, config.image_column, "image_column", "image");

  auto prompts = read_list_file(out.prompts_file);
  const std::vector<Media> videos = read_media(out.videos_file);
  const std::vector<Media> images = with_images ? read_media(out.images_file) : std::vector<Media>{};

  CVX_CHECK_AS(ConfigError, !prompts.empty() || !videos.empty(), "dataset '", root.string(), "' is empty: '",
               out.prompts_file.string(), "' and '", out.videos_file.string(),
               "' have no entries; add one prompt and one video path per line");
  check_counts(out.prompts_file, prompts.size(), "prompt", out.videos_file, videos.size(), "video",
               "describe the video");
  if (with_images) {
    check_counts(out.images_file, images.size(), "image", out.videos_file, videos.size(), "video",
                 "be the first-frame image of the video");
  }

  // Messages name list files relative to data_root (named once) to stay readable.
  const std::string videos_label = out.videos_file.lexically_proximate(root).string();
  const std::string images_label = out.images_file.lexically_proximate(root).string();

  // Every missing file in one message: a dataset copied incompletely usually misses many.
  size_t missing = 0, media_count = 0;
  std::ostringstream shown;
  auto check_exists = [&](const Media& m, const std::string& list) {
    ++media_count;
    std::error_code e;
    if (fs::is_regular_file(m.path, e)) return;
    if (missing++ < kShown)
      shown << (missing > 1 ? ", " : "") << "'" << m.path.string() << "' (" << list << ":" << m.line << ")";
  };
  for (size_t i = 0; i < videos.size(); ++i) {
    check_exists(videos[i], videos_label);
    if (with_images) check_exists(images[i], images_label);
  }
  CVX_CHECK_AS(ConfigError, missing == 0, missing, " of ", media_count, " media files listed in dataset '",
               root.string(), "' do not exist: ", shown.str(), missing > kShown ? ", ..." : "",
               "; paths are relative to the list file's folder: fix them, or delete those lines together with"
               " the matching lines of the other list files");

  for (size_t i = 0; i < videos.size(); ++i) {
    DatasetEntry e;
    e.index = i;
    std::string& prompt = prompts[i].second;
    prompt.erase(0, prompt.find_first_not_of(" \t\r\v\f"));  // trailing side already trimmed
    e.prompt = config.id_token.empty() ? prompt : config.id_token + " " + prompt;
    e.prompt_line = prompts[i].first;
    e.video = videos[i].path;
    e.video_relative = videos[i].text;
    e.video_line = videos[i].line;
    if (with_images) {
      e.image = images[i].path;
      e.image_line = images[i].line;
    }
    out.entries.push_back(std::move(e));
  }

  // Duplicates are legal (e.g. one clip with two captions) but usually a copy-paste slip that
  // silently over-weights a clip.
  std::unordered_map<std::string, size_t> first_line;
  size_t duplicates = 0;
  std::ostringstream dup;
  for (const Media& v : videos) {
    const auto [it, fresh] = first_line.emplace(v.path.string(), v.line);
    if (fresh) continue;
    if (duplicates++ < kShown) {
      dup << (duplicates > 1 ? ", " : "") << "'" << v.text << "' on lines " << it->second << " and " << v.line;
    }
  }
  if (duplicates > 0) {
    out.warnings.push_back(detail::concat("video list '", out.videos_file.string(), "' names ", duplicates,
                                          " video(s) again after their first line, so they are trained on more often: ",
                                          dup.str(), duplicates > kShown ? ", ..." : ""));
  }

  // Media outside data_root work, but the dataset folder is then not self-contained (copying it
  // to another file system or node-local storage loses them).
  size_t outside = 0;
  std::ostringstream out_list;
  auto check_inside = [&](const Media& m, const std::string& list) {
    if (inside(m.path, root)) return;
    if (outside++ < kShown)
      out_list << (outside > 1 ? ", " : "") << "'" << m.text << "' (" << list << ":" << m.line << ")";
  };
  for (size_t i = 0; i < videos.size(); ++i) {
    check_inside(videos[i], videos_label);
    if (with_images) check_inside(images[i], images_label);
  }
  if (outside > 0) {
    out.warnings.push_back(detail::concat(outside, " media path(s) resolve outside data_root '", root.string(),
                                          "', so the dataset folder is not self-contained: ", out_list.str(),
                                          outside > kShown ? ", ..." : ""));
  }

  for (const std::string& w : out.warnings) CVX_WARN << w;
  return out;
}

}  // namespace cvx
