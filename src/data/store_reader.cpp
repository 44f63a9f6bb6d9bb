#include "cvx/data/store_reader.h"

#include <chrono>
#include <unordered_map>

#include "cvx/core/error.h"

namespace fs = std::filesystem;

namespace cvx {
namespace {

// Prompt embeddings are kept in memory up to this many bytes (as stored): most datasets repeat few
// prompts or have so many that caching all would cost more than rereading (226 x 4096 floats each).
constexpr int64_t kPromptCacheBytes = int64_t{512} << 20;

std::string rows_text(const std::vector<int64_t>& rows) {
  constexpr size_t kShown = 8;
  std::string text = "[";
  for (size_t k = 0; k < rows.size() && k < kShown; ++k) text += (k ? ", " : "") + std::to_string(rows[k]);
  if (rows.size() > kShown) text += ", ... (" + std::to_string(rows.size()) + " rows)";
  return text + "]";
}

}  // namespace

struct StoreReader::Impl {
  explicit Impl(LatentStore s) : store(std::move(s)) {}
  LatentStore store;
  std::vector<SampleStatus> status;
  std::vector<int64_t> prompt_row;
  std::vector<bool> prompt_done;
  std::vector<int64_t> done;
  int64_t bad = 0;
  std::unordered_map<int64_t, torch::Tensor> prompt_cache;  // [L, D] as stored
  int64_t cached_bytes = 0;

  std::string where() const { return "latent store " + store.path().string(); }

  torch::Tensor prompt(int64_t p) {
    if (auto it = prompt_cache.find(p); it != prompt_cache.end()) return it->second;
    torch::Tensor embedding = store.read_prompt(p);
    const int64_t bytes = embedding.numel() * static_cast<int64_t>(embedding.element_size());
    if (cached_bytes + bytes <= kPromptCacheBytes) {
      prompt_cache.emplace(p, embedding);
      cached_bytes += bytes;
    }
    return embedding;
  }
};

StoreReader StoreReader::open(const fs::path& path) {
  CVX_CHECK_AS(ConfigError, fs::exists(path), "latent store ", path.string(),
               " does not exist: make it first with `mpirun -np N cvx_precompute --config CONFIG` (the same [model] "
               "and [data] settings as this run), or point [data] store at an existing store");
  // MPI_COMM_SELF: the POSIX driver, no collective, so each rank opens the file on its own.
  auto impl = std::make_unique<Impl>(LatentStore::open(path, MPI_COMM_SELF, /*read_only=*/true));
  for (const auto& p : impl->store.prompts()) impl->prompt_done.push_back(p.done);
  for (const auto& e : impl->store.index()) {
    const auto row = static_cast<int64_t>(impl->status.size());
    impl->status.push_back(e.status);
    impl->prompt_row.push_back(e.prompt_row);
    if (e.status == SampleStatus::kBad) ++impl->bad;
    if (e.status == SampleStatus::kDone && impl->prompt_done.at(static_cast<size_t>(e.prompt_row)))
      impl->done.push_back(row);
  }
  return StoreReader(std::move(impl));
}

StoreReader::StoreReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StoreReader::StoreReader(StoreReader&&) noexcept = default;
StoreReader& StoreReader::operator=(StoreReader&&) noexcept = default;
StoreReader::~StoreReader() = default;

const fs::path& StoreReader::path() const { return impl_->store.path(); }
const StoreHeader& StoreReader::header() const { return impl_->store.header(); }
const LatentStoreOptions& StoreReader::options() const { return impl_->store.options(); }
std::vector<int64_t> StoreReader::done_rows() const { return impl_->done; }
int64_t StoreReader::num_bad() const { return impl_->bad; }
int64_t StoreReader::num_samples() const { return impl_->store.num_samples(); }
int64_t StoreReader::num_pending() const {
  return num_samples() - static_cast<int64_t>(impl_->done.size()) - impl_->bad;
}

void StoreReader::check_matches(const StoreHeader& expected) const {
  const std::string differences = store_header_differences(header(), expected, "expected");
  CVX_CHECK_AS(ConfigError, differences.empty(), impl_->where(), " was made for other settings than this run (",
               differences,
               "). Rebuild it for this model and resolution with `mpirun -np N cvx_precompute --config "
               "CONFIG --precompute.overwrite true`, or point [data] store at a store made for them");
}

StoreBatch StoreReader::read_batch(const std::vector<int64_t>& rows, const StoreReadOptions& options) {
  Impl& st = *impl_;
  const int64_t n = num_samples();
  CVX_CHECK_AS(ConfigError, !rows.empty(), st.where(), ": read_batch needs at least one row");
  for (int64_t r : rows) {
    CVX_CHECK_AS(ConfigError, r >= 0 && r < n, st.where(), ": sample row ", r, " out of range [0, ", n, ")");
    const auto status = st.status[static_cast<size_t>(r)];
    CVX_CHECK_AS(ConfigError, status == SampleStatus::kDone, st.where(), ": sample row ", r, " is ",
                 status == SampleStatus::kBad ? "bad" : "pending", "; train only on done_rows()");
    const int64_t p = st.prompt_row[static_cast<size_t>(r)];
    CVX_CHECK_AS(ConfigError, st.prompt_done[static_cast<size_t>(p)], st.where(), ": sample row ", r,
                 " is done but its prompt row ", p,
                 " is not encoded (a precompute that stopped early; rerun it to finish); train only on done_rows()");
  }
  const auto& stored = st.store.options();
  CVX_CHECK_AS(ConfigError, !options.image_moments || stored.image_latents, st.where(),
               " has no image latents (made for variant ", quote(header().variant),
               "); an I2V run needs a store precomputed with an I2V model");
  CVX_CHECK_AS(ConfigError, !options.images || stored.images, st.where(),
               " holds no conditioning images (made for variant ", quote(header().variant),
               "); an I2V run needs a store precomputed with an I2V model");

  const auto& s = header().latent_shape;
  const auto b = static_cast<int64_t>(rows.size());
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  StoreBatch batch;
  batch.rows = rows;
  batch.moments = torch::empty({b, 2 * s[0], s[1], s[2], s[3]}, f32);  // [B, 2C, F', h, w]
  if (options.image_moments) batch.image_moments = torch::empty({b, 2 * s[0], 1, s[2], s[3]}, f32);
  if (options.prompt_embeds)
    batch.prompt_embeds = torch::empty({b, header().max_text_length, header().text_embed_dim}, f32);
  if (options.images) batch.images = torch::empty({b, 3, header().height, header().width}, torch::kUInt8);
  // One read per row: a row is one chunk, so a contiguous-run read would touch the same chunks.
  for (int64_t k = 0; k < b; ++k) {
    const int64_t r = rows[static_cast<size_t>(k)];
    batch.moments[k].copy_(st.store.read_moments(r));
    if (options.image_moments) batch.image_moments[k].copy_(st.store.read_image_moments(r));
    if (options.images) batch.images[k].copy_(st.store.read_image(r));
    if (options.prompt_embeds) batch.prompt_embeds[k].copy_(st.prompt(st.prompt_row[static_cast<size_t>(r)]));
  }
  return batch;
}

// ---------------------------------------------------------------- BatchPrefetcher
BatchPrefetcher::BatchPrefetcher(StoreReader& reader, StoreReadOptions options, int depth)
    : reader_(reader), options_(options), depth_(depth) {
  CVX_CHECK_AS(ConfigError, depth >= 0, "the batch prefetch depth must be 0 or more, got ", depth);
  if (depth_ > 0) thread_ = std::thread([this] { run(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BatchPrefetcher::enqueue(std::vector<int64_t> rows) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    requests_.push_back(std::move(rows));
  }
  changed_.notify_all();
}

void BatchPrefetcher::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock,
                  [&] { return stopping_ || (!requests_.empty() && results_.size() < static_cast<size_t>(depth_)); });
    if (stopping_) return;
    const std::vector<int64_t> rows = requests_.front();
    lock.unlock();
    Result result;
    try {
      result.batch = reader_.read_batch(rows, options_);
    } catch (...) {
      result.error = std::current_exception();
      result.batch.rows = rows;
    }
    lock.lock();
    requests_.pop_front();
    results_.push_back(std::move(result));
    changed_.notify_all();
  }
}

StoreBatch BatchPrefetcher::next(double* wait_seconds) {
  const auto start = std::chrono::steady_clock::now();
  Result result;
  if (depth_ == 0) {
    std::vector<int64_t> rows;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      CVX_CHECK_AS(ConfigError, !requests_.empty(), "BatchPrefetcher::next: no batch was enqueued");
      rows = std::move(requests_.front());
      requests_.pop_front();
    }
    try {
      result.batch = reader_.read_batch(rows, options_);
    } catch (...) {
      result.error = std::current_exception();
      result.batch.rows = rows;
    }
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    CVX_CHECK_AS(ConfigError, !requests_.empty() || !results_.empty(), "BatchPrefetcher::next: no batch was enqueued");
    changed_.wait(lock, [&] { return !results_.empty(); });
    result = std::move(results_.front());
    results_.pop_front();
    lock.unlock();
    changed_.notify_all();  // room for the reader thread to read ahead again
  }
  if (wait_seconds != nullptr)
    *wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!result.error) return std::move(result.batch);
  const std::string context = detail::concat("reading the batch of store rows ", rows_text(result.batch.rows), " from ",
                                             reader_.path().string(), " failed: ");
  try {
    std::rethrow_exception(result.error);
  } catch (const ConfigError& e) {
    CVX_THROW_AS(ConfigError, context, e.message());
  } catch (const FormatError& e) {
    CVX_THROW_AS(FormatError, context, e.message());
  } catch (const SystemError& e) {
    CVX_THROW_AS(SystemError, context, e.message());
  } catch (const Error& e) {
    CVX_THROW_AS(Error, context, e.message());
  } catch (const std::exception& e) {
    CVX_THROW_AS(SystemError, context, e.what());
  }
}

}  // namespace cvx
