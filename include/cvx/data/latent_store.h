// LatentStore: the one HDF5 file that the precompute job writes from all MPI ranks at once (MPI-IO)
// and training reads. It holds VAE posterior moments per sample, prompt embeddings deduplicated by
// prompt, and an index table with per-sample status flags, so a killed job resumes where it stopped.
//
// Layout (format version 2; version 1 = the same without /images, read only for T2V stores):
//   /header                 group; attributes = StoreHeader (see write/read in latent_store.cpp)
//   /latents/moments        [N, 2C, F', H', W']  mean ++ logvar; float32, or bf16 bits as uint16
//   /latents/image_moments  [N, 2C, 1, H', W']   I2V only (same dtype): the clean first frame
//   /images/pixels          [N, 3, H, W] uint8    I2V only: the conditioning image at the training
//                                                 size, as the VAE saw it (the trainer noises and
//                                                 encodes it every step, as the official one does)
//   /prompts/embeddings     [P, L, D]            float32, or bf16 bits as uint16
//   /prompts/text           [P] fixed-size string;  /prompts/hash [P] uint64 (FNV-1a of the text)
//   /prompts/status         [P] uint8 (0 pending, 1 done)
//   /samples/id             [N] int64;  /samples/media_path [N] fixed-size string
//   /samples/prompt_row     [N] int64;  /samples/frames [N] int32
//   /samples/status         [N] uint8 (0 pending, 1 done, 2 bad);  /samples/reason [N] char[128]
// The latent and embedding data sets carry a "dtype" attribute: "float32", or "bfloat16" (the 16-bit
// pattern in uint16: HDF5 1.10 has no bf16 type); /header also holds "gzip_level".
//
// MPI: with a communicator of more than one rank the file is opened with the MPI-IO driver; create,
// open, flush and close are collective, writes and reads are independent (each rank at its own pace).
// With one rank, or when MPI is not initialised (unit tests, training reading the store), the plain
// POSIX driver is used and MPI is never called.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "cvx/data/store_header.h"

namespace cvx {

enum class StoreDtype { kFloat32, kBFloat16 };

struct LatentStoreOptions {
  StoreDtype latent_dtype = StoreDtype::kBFloat16;
  StoreDtype embedding_dtype = StoreDtype::kBFloat16;
  bool image_latents = false;  // I2V: also /latents/image_moments
  bool images = false;         // I2V: also /images/pixels
  // gzip level 1..9 for the latent and embedding data sets, 0 = none. Parallel HDF5 writes filtered
  // data sets only collectively, but the store's writes are independent: refused with more than one
  // rank (a ConfigError), allowed for single-process stores.
  int gzip_level = 0;
};

enum class SampleStatus : uint8_t { kPending = 0, kDone = 1, kBad = 2 };

struct SampleEntry {
  int64_t id = 0;          // the sample's id in the dataset list
  std::string media_path;  // relative to the dataset root
  int64_t prompt_row = 0;  // row of /prompts
  int32_t frames = 0;      // frames actually encoded, set by mark_done
  SampleStatus status = SampleStatus::kPending;
  std::string reason;  // why the sample is bad (at most 127 bytes kept)
};

struct PromptEntry {
  std::string text;
  uint64_t hash = 0;
  bool done = false;
};

// 64-bit FNV-1a of a prompt: the key prompts are deduplicated by.
uint64_t prompt_hash(const std::string& text);

class LatentStore {
 public:
  // Collective over `comm`: creates (truncates) the file with every data set. Every rank passes the
  // same header, samples and prompts (checked); rank 0 writes the index and prompt tables.
  static LatentStore create(const std::filesystem::path& path, const StoreHeader& header,
                            const std::vector<SampleEntry>& samples, const std::vector<std::string>& prompts,
                            const LatentStoreOptions& options = {}, MPI_Comm comm = MPI_COMM_WORLD);
  // Collective over `comm`. A FormatError if the file is not a store of a supported format version.
  static LatentStore open(const std::filesystem::path& path, MPI_Comm comm = MPI_COMM_WORLD, bool read_only = true);

  LatentStore(LatentStore&&) noexcept;
  LatentStore& operator=(LatentStore&&) noexcept;
  ~LatentStore();  // closes (collective with MPI-IO; errors are swallowed, call close() to see them)

  const std::filesystem::path& path() const;
  const StoreHeader& header() const;
  const LatentStoreOptions& options() const;  // dtypes, image latents and gzip level as stored
  int64_t num_samples() const;
  int64_t num_prompts() const;

  // A ConfigError naming every attribute that differs (stored vs requested) when the store was
  // made with other settings than `requested`.
  void check_compatible(const StoreHeader& requested) const;

  // Independent writes. Tensors are converted to the store's dtype; shapes are checked.
  // moments: [2C, F', H', W'];  image_moments: [2C, 1, H', W'];  image: [3, H, W] uint8 (I2V stores only:
  // each given exactly when the store holds it).
  void write_sample(int64_t i, const torch::Tensor& moments, const torch::Tensor& image_moments = {},
                    const torch::Tensor& image = {});
  // embedding: [L, D]; also sets the prompt's done flag, after the data is on disk.
  void write_prompt(int64_t p, const torch::Tensor& embedding);
  // Sets the status once this rank's data is on disk (HDF5 flushed with one rank, then fdatasync;
  // with MPI-IO raw data goes straight to MPI_File_write_at, HDF5 caches none there), so a killed
  // job or a lost node never leaves a "done" sample without its latents.
  void mark_done(int64_t i, int32_t frames);
  void mark_bad(int64_t i, const std::string& reason);
  // Collective with MPI-IO: flushes and synchronises, so that every rank then sees all writes.
  void flush();
  void close();

  // Rows still to do, read from the file (call flush() first to see other ranks' fresh writes).
  std::vector<int64_t> pending_samples() const;
  std::vector<int64_t> pending_prompts() const;

  // Reads, as stored: float32 or bf16 tensors.
  torch::Tensor read_moments(int64_t i) const;        // [2C, F', H', W']
  torch::Tensor read_image_moments(int64_t i) const;  // [2C, 1, H', W']
  torch::Tensor read_image(int64_t i) const;          // [3, H, W] uint8
  torch::Tensor read_prompt(int64_t p) const;         // [L, D]
  std::vector<SampleEntry> index() const;
  std::vector<PromptEntry> prompts() const;

 private:
  struct Impl;
  explicit LatentStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// cvx_inspect's view of a store: header attributes and the per-sample table.
void print_store(const std::filesystem::path& path);

}  // namespace cvx
