#include "cvx/train/tensorboard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "cvx/core/crc32c.h"
#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/data/image_io.h"
#include "tensorboard_event.pb.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buffer[256] = {};
  if (gethostname(buffer, sizeof(buffer) - 1) != 0 || buffer[0] == '\0') return "localhost";
  return buffer;
}

// TFRecord stores integers little endian whatever the host is.
template <class T>
void append_little_endian(std::string& out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::string serialized(const tensorboard::Event& event) {
  std::string bytes;
  CVX_CHECK(event.SerializeToString(&bytes), "cannot serialise a TensorBoard event");
  return bytes;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  CVX_CHECK_AS(SystemError, !ec, "cannot create the TensorBoard folder ", dir.string(), ": ", ec.message());
  // The counter tells apart two writers one process opens within the same second.
  static std::atomic<int> counter{0};
  const double now = unix_seconds();
  char name[512];
  std::snprintf(name, sizeof(name), "events.out.tfevents.%010lld.%s.%d.%d", static_cast<long long>(now),
                host_name().c_str(), static_cast<int>(getpid()), counter++);
  file_ = dir / name;
  fd_ = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  CVX_CHECK_AS(SystemError, fd_ >= 0, "cannot create the TensorBoard event file ", file_.string(), ": ",
               std::strerror(errno));
  tensorboard::Event event;
  event.set_wall_time(now);
  event.set_file_version("brain.Event:2");
  add_record(serialized(event));
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ < 0) return;
  try {
    flush();
  } catch (const std::exception& e) {
    CVX_WARN << e.what();
  }
  ::close(fd_);
}

void TensorBoardWriter::add_record(const std::string& event) {
  std::string length;
  append_little_endian<uint64_t>(length, event.size());
  pending_ += length;
  append_little_endian<uint32_t>(pending_, masked_crc32c(crc32c(length)));
  pending_ += event;
  append_little_endian<uint32_t>(pending_, masked_crc32c(crc32c(event)));
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, double value) {
  tensorboard::Event event;
  event.set_wall_time(unix_seconds());
  event.set_step(step);
  auto* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  add_record(serialized(event));
}

void TensorBoardWriter::add_image(const std::string& tag, int64_t step, const torch::Tensor& image) {
  // image: [H, W, 3] uint8 (encode_png checks)
  tensorboard::Event event;
  event.set_wall_time(unix_seconds());
  event.set_step(step);
  auto* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  auto* img = v->mutable_image();
  img->set_encoded_image_string(encode_png(image));
  img->set_height(static_cast<int32_t>(image.size(0)));
  img->set_width(static_cast<int32_t>(image.size(1)));
  img->set_colorspace(3);  // RGB
  add_record(serialized(event));
  flush();
}

void TensorBoardWriter::flush() {
  size_t done = 0;
  while (done < pending_.size()) {
    const ssize_t n = ::write(fd_, pending_.data() + done, pending_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) pending_.erase(0, done);  // what reached the file is not written again
    CVX_CHECK_AS(SystemError, n > 0, "cannot write the TensorBoard event file ", file_.string(), ": ",
                 n < 0 ? std::strerror(errno) : "no progress", " (disk full? TensorBoard logging needs space in ",
                 file_.parent_path().string(), ")");
    done += static_cast<size_t>(n);
  }
  pending_.clear();
}

void add_step_scalars(TensorBoardWriter& writer, const StepReport& r) {
  writer.add_scalar("train/loss", r.step, r.loss);
  writer.add_scalar("train/lr", r.step, r.lr);
  writer.add_scalar("train/grad_norm", r.step, r.grad_norm);
  writer.add_scalar("perf/step_seconds", r.step, r.step_seconds);
  writer.add_scalar("perf/data_wait_seconds", r.step, r.data_wait_seconds);
  writer.add_scalar("perf/tokens_per_second", r.step, r.tokens_per_second);
  writer.add_scalar("perf/tflops", r.step, r.tflops);
  if (r.mfu >= 0) writer.add_scalar("perf/mfu", r.step, r.mfu);
  writer.add_scalar("memory/peak_gib", r.step, static_cast<double>(r.peak_memory_bytes) / double(1ull << 30));
  writer.flush();
}

}  // namespace cvx
