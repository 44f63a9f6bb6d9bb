// cvx_extract_images --data_root DIR: the first frame of every clip of a dataset as a PNG under
// DIR/images/ plus DIR/images.txt naming them (relative to DIR), for image-to-video training with
// explicit first frames; the counterpart of the official extract_images.py. Frames are taken in
// display orientation (rotation metadata applied), as the training clips are.
#include <cstdio>
#include <set>
#include <string>

#include "cvx/core/error.h"
#include "cvx/core/options.h"
#include "cvx/data/dataset_lists.h"
#include "cvx/data/image_io.h"
#include "cvx/data/video_reader.h"
#include "cvx/io/atomic_file.h"

namespace fs = std::filesystem;

namespace {

struct ExtractConfig {
  std::string image_dir = "images";
  std::string image_list = "images.txt";
  template <class V>
  void visit(V& v) {
    v("image_dir", image_dir, "folder for the PNG first frames, relative to data_root");
    v("image_list", image_list, "list file written, one image a line (relative to data_root), relative to data_root");
  }
  void validate() const {
    CVX_CHECK_AS(cvx::ConfigError, !image_dir.empty() && !image_list.empty(), "image_dir and image_list must be set");
  }
};

// One PNG name per clip: the clip's file stem, made unique with the sample index when two clips
// in different folders share a stem.
std::string image_name(const cvx::DatasetEntry& entry, std::set<std::string>& taken) {
  std::string name = entry.video.stem().string() + ".png";
  if (!taken.insert(name).second) {
    name = entry.video.stem().string() + "_" + std::to_string(entry.index) + ".png";
    taken.insert(name);
  }
  return name;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    cvx::DatasetListsConfig lists;
    ExtractConfig extract;
    cvx::Options options("cvx_extract_images",
                         "write the first frame of every dataset clip as a PNG plus an image list for I2V training");
    options.add("", lists).add("", extract);
    if (options.parse(argc, argv) == cvx::Options::Outcome::help_shown) return 0;
    const cvx::DatasetLists data = cvx::load_dataset_lists(lists);
    const fs::path image_dir = data.data_root / extract.image_dir;
    fs::create_directories(image_dir);
    std::set<std::string> taken;
    std::string list;
    cvx::VideoReaderOptions first_only;
    first_only.max_frames = 1;
    for (const auto& entry : data.entries) {
      const std::string name = image_name(entry, taken);
      const cvx::VideoReader reader(entry.video, first_only);
      cvx::write_png(image_dir / name, reader.frames({0})[0]);  // [H, W, 3]
      list += (fs::path(extract.image_dir) / name).generic_string() + "\n";
    }
    cvx::write_file_atomically(data.data_root / extract.image_list, list);
    std::printf("cvx_extract_images: wrote %zu images to %s and the list %s\n", data.entries.size(),
                image_dir.string().c_str(), (data.data_root / extract.image_list).string().c_str());
    return 0;
  } catch (const cvx::Error& e) {
    std::fprintf(stderr, "cvx_extract_images: error: %s\n", e.message().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cvx_extract_images: error: %s\n", e.what());
  }
  return 1;
}
