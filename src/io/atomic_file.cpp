#include "cvx/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "cvx/core/error.h"

namespace cvx {
namespace {

constexpr size_t kBufferSize = size_t{4} << 20;

std::filesystem::path folder_of(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

void write_all(int fd, const char* data, size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    CVX_CHECK_AS(SystemError, n > 0, "cannot write ", quote(path.string()), ": ",
                 n < 0 ? std::strerror(errno) : "no progress");
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void pwrite_all(int fd, const char* data, size_t size, uint64_t offset, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    CVX_CHECK_AS(SystemError, n > 0, "cannot write ", quote(path.string()), " at byte ", offset, ": ",
                 n < 0 ? std::strerror(errno) : "no progress");
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

}  // namespace

std::filesystem::path temp_path_for(const std::filesystem::path& target) {
  // pid + counter: concurrent writers of the same target (other ranks, other threads) never share one.
  static std::atomic<unsigned> counter{0};
  return folder_of(target) /
         ("." + target.filename().string() + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++));
}

void fsync_directory(const std::filesystem::path& dir) {
  const std::filesystem::path folder = dir.empty() ? std::filesystem::path(".") : dir;
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CVX_CHECK_AS(SystemError, fd >= 0, "cannot open folder ", quote(folder.string()),
               " to sync it: ", std::strerror(errno));
  const int sync_rc = ::fsync(fd);
  const int sync_errno = errno;
  ::close(fd);
  // Some file systems cannot sync a directory at all (EINVAL); there is nothing better to do there.
  CVX_CHECK_AS(SystemError, sync_rc == 0 || sync_errno == EINVAL, "cannot sync folder ", quote(folder.string()), ": ",
               std::strerror(sync_errno));
}

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  temp_ = temp_path_for(path_);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  CVX_CHECK_AS(SystemError, fd_ >= 0, "cannot create ", quote(temp_.string()), " to write ", quote(path_.string()),
               ": ", std::strerror(errno));
  buffer_.reserve(kBufferSize);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicFile::flush() {
  write_all(fd_, buffer_.data(), buffer_.size(), temp_);
  buffer_.clear();
}

void AtomicFile::write(const void* data, size_t size) {
  CVX_CHECK(fd_ >= 0 && !committed_, "write to ", quote(path_.string()), " after commit()");
  const auto* bytes = static_cast<const char*>(data);
  if (buffer_.size() + size > kBufferSize) flush();
  if (size >= kBufferSize) {
    write_all(fd_, bytes, size, temp_);
  } else {
    buffer_.insert(buffer_.end(), bytes, bytes + size);
  }
  written_ += size;
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t size) {
  CVX_CHECK(fd_ >= 0 && !committed_, "write to ", quote(path_.string()), " after commit()");
  if (!buffer_.empty()) flush();
  pwrite_all(fd_, static_cast<const char*>(data), size, offset, temp_);
}

void AtomicFile::commit() {
  CVX_CHECK(fd_ >= 0 && !committed_, "commit() of ", quote(path_.string()), " called twice");
  flush();
  CVX_CHECK_AS(SystemError, ::fsync(fd_) == 0, "cannot sync ", quote(temp_.string()), ": ", std::strerror(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  CVX_CHECK_AS(SystemError, rc == 0, "cannot close ", quote(temp_.string()), ": ", std::strerror(errno));
  CVX_CHECK_AS(SystemError, std::rename(temp_.c_str(), path_.c_str()) == 0, "cannot rename ", quote(temp_.string()),
               " to ", quote(path_.string()), ": ", std::strerror(errno));
  committed_ = true;
  fsync_directory(folder_of(path_));
}

void write_file_atomically(const std::filesystem::path& path, const std::string& content) {
  AtomicFile file(path);
  file.write(content);
  file.commit();
}

void replace_directory(const std::filesystem::path& staging, const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fsync_directory(staging);
  const fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  const fs::path old = temp_path_for(dir);
  const bool had_old = fs::exists(dir);
  std::error_code ec;
  if (had_old) fs::rename(dir, old, ec);
  CVX_CHECK_AS(SystemError, !ec, "cannot move ", dir.string(), " aside: ", ec.message());
  fs::rename(staging, dir, ec);
  CVX_CHECK_AS(SystemError, !ec, "cannot rename ", staging.string(), " to ", dir.string(), ": ", ec.message());
  fsync_directory(parent);
  if (had_old) fs::remove_all(old, ec);
}

}  // namespace cvx
