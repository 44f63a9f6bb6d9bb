// StoreReader: the training side of the latent store. Opens the store read-only with the POSIX
// driver (never MPI: every training rank opens the same file on its own, no collective), checks it
// against the header the run expects, lists the trainable rows and reads batches of them as
// float32. BatchPrefetcher reads the next batches on a thread of its own while the step computes.
#pragma once
#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cvx/data/latent_store.h"
#include "cvx/data/store_header.h"

namespace cvx {

struct StoreReadOptions {
  bool prompt_embeds = true;
  bool image_moments = false;  // I2V stores
  bool images = false;         // I2V stores: the conditioning images as uint8
};

struct StoreBatch {
  std::vector<int64_t> rows;
  torch::Tensor moments;        // [B, 2C, F', h, w] float32 (mean ++ logvar)
  torch::Tensor image_moments;  // [B, 2C, 1, h, w] float32 (when asked)
  torch::Tensor images;         // [B, 3, H, W] uint8 (when asked)
  torch::Tensor prompt_embeds;  // [B, L, D] float32 (when asked)
};

// Not thread-safe (the HDF5 build is not): one thread at a time, and with a BatchPrefetcher only
// the prefetcher's thread reads.
class StoreReader {
 public:
  // Read-only, POSIX driver, no MPI call. ConfigError naming the path and the cvx_precompute command
  // when the file is missing; FormatError when it is not a store of this format version.
  static StoreReader open(const std::filesystem::path& path);

  StoreReader(StoreReader&&) noexcept;
  StoreReader& operator=(StoreReader&&) noexcept;
  ~StoreReader();

  const std::filesystem::path& path() const;
  const StoreHeader& header() const;
  const LatentStoreOptions& options() const;  // dtypes, image latents / images as stored
  // ConfigError listing every differing attribute (stored vs expected) and the fix, when the store
  // was made for another model, resolution, sampling rule or resize mode.
  void check_matches(const StoreHeader& expected) const;

  // Rows to train on, ascending: samples marked done whose prompt is encoded too (a killed
  // precompute can leave a done sample whose prompt another rank had not written yet).
  std::vector<int64_t> done_rows() const;
  int64_t num_bad() const;
  int64_t num_pending() const;  // num_samples() - done_rows().size() - num_bad()
  int64_t num_samples() const;

  // Reads `rows` (each one of done_rows(), any order, repeats allowed) as one batch in that order.
  // ConfigError for a row that is out of range or not done, or for data the store does not hold.
  StoreBatch read_batch(const std::vector<int64_t>& rows, const StoreReadOptions& options);

 private:
  struct Impl;
  explicit StoreReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads the batches enqueued by the training thread, in order, on a reader thread: the only thread
// that touches HDF5 while the prefetcher lives. At most `depth` read batches wait in memory.
class BatchPrefetcher {
 public:
  // depth 0: no thread, next() reads synchronously.
  BatchPrefetcher(StoreReader& reader, StoreReadOptions options, int depth);
  ~BatchPrefetcher();  // stops the thread (after the read in progress) and joins it
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  void enqueue(std::vector<int64_t> rows);
  // The oldest enqueued batch, blocking until it is read; *wait_seconds (when not null) = the time
  // spent blocked (with depth 0: the read itself). A failed read is rethrown here, as the same
  // error type, with the rows in the message; ConfigError when nothing is enqueued.
  StoreBatch next(double* wait_seconds);

 private:
  void run();

  StoreReader& reader_;
  const StoreReadOptions options_;
  const int depth_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<int64_t>> requests_;  // enqueued, not yet read
  struct Result {
    StoreBatch batch;
    std::exception_ptr error;
  };
  std::deque<Result> results_;  // read, in enqueue order
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace cvx
