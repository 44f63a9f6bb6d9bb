// Writing a file so that readers see either its old content or the complete new one, never a torn
// file: data goes to a temporary file in the same folder, which is flushed to disk and renamed over
// the target only once everything was written.
#pragma once
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace cvx {

class AtomicFile {
 public:
  // Creates `.<name>.tmp.<pid>.<n>` beside `path`; throws SystemError naming it on failure.
  explicit AtomicFile(std::filesystem::path path);
  // Removes the temporary file unless commit() succeeded (so a failed write leaves no trace).
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Buffered; large blocks go straight to the file.
  void write(const void* data, size_t size);
  void write(const std::string& text) { write(text.data(), text.size()); }
  uint64_t bytes_written() const { return written_; }
  // Writes at byte `offset` of the file (pwrite) after flushing what write() buffered, for content
  // that arrives out of order; leaves write()'s position and bytes_written() alone.
  void write_at(uint64_t offset, const void* data, size_t size);
  // Flush, fsync, rename over the target, fsync the folder (so the rename itself is durable).
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  void flush();

  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t written_ = 0;
  std::vector<char> buffer_;
};

// A temporary name beside `target` that no other process or thread uses: ".<name>.tmp.<pid>.<n>".
std::filesystem::path temp_path_for(const std::filesystem::path& target);
// Makes completed renames in `dir` durable (a no-op on file systems that cannot sync folders).
void fsync_directory(const std::filesystem::path& dir);

// Puts the completed folder `staging` in place of `dir`: an existing `dir` moves aside first and is
// removed only after the new one is in place (then the parent is synced), so a reader sees the old
// folder or the new one, never a mixture.
void replace_directory(const std::filesystem::path& staging, const std::filesystem::path& dir);

// Writes `content` to `path` through an AtomicFile.
void write_file_atomically(const std::filesystem::path& path, const std::string& content);

}  // namespace cvx
