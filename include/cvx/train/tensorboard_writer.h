// TensorBoard event files: rank 0 writes output_dir/tensorboard/events.out.tfevents.* for
// `tensorboard --logdir output_dir/tensorboard`. Each record is an Event protobuf
// (proto/tensorboard_event.proto, TensorFlow's field numbers) in TFRecord framing: uint64 length
// (little endian), uint32 masked CRC-32C of those 8 bytes, the data, uint32 masked CRC-32C of the
// data. Records are buffered and written whole by flush(), once per step, so a killed job leaves a
// file of complete records that TensorBoard reads.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "cvx/train/step_log.h"

namespace cvx {

class TensorBoardWriter {
 public:
  // Creates `dir` and a new file in it, events.out.tfevents.<unix seconds>.<host>.<pid>.<n>, whose
  // first record carries the file version. Throws SystemError naming the file.
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  ~TensorBoardWriter();  // flushes; errors there are logged, not thrown
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Buffered until flush(); TensorBoard stores scalars as float32.
  void add_scalar(const std::string& tag, int64_t step, double value);
  // [H, W, 3] uint8 RGB, stored as PNG; flushed at once (images are rare and large).
  void add_image(const std::string& tag, int64_t step, const torch::Tensor& image);
  // Writes the buffered records. Throws SystemError naming the file.
  void flush();

  const std::filesystem::path& file() const { return file_; }

 private:
  void add_record(const std::string& event);

  std::filesystem::path file_;
  int fd_ = -1;
  std::string pending_;  // framed records not yet written
};

// The scalars of one optimizer step: train/loss, train/lr, train/grad_norm, perf/step_seconds,
// perf/data_wait_seconds, perf/tokens_per_second, perf/tflops, perf/mfu (when the peak is known),
// memory/peak_gib; then flush().
void add_step_scalars(TensorBoardWriter& writer, const StepReport& report);

}  // namespace cvx
