#include "cvx/precompute/precompute_job.h"

#include <chrono>
#include <filesystem>
#include <future>
#include <iomanip>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "cvx/core/checked_call.h"
#include "cvx/core/dtype_name.h"
#include "cvx/core/log.h"
#include "cvx/data/dataset_lists.h"
#include "cvx/data/frame_sampler.h"
#include "cvx/data/image_io.h"
#include "cvx/data/latent_store.h"
#include "cvx/data/store_header.h"
#include "cvx/data/transforms.h"
#include "cvx/data/video_reader.h"
#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/prompt_encoder.h"
#include "cvx/model/transformer_config.h"
#include "cvx/model/vae.h"
#include "cvx/precompute/shard_plan.h"

namespace cvx {
namespace fs = std::filesystem;

namespace {

// Rank 0's list of rows, on every rank.
std::vector<int64_t> broadcast_rows(std::vector<int64_t> rows, MPI_Comm comm) {
  int64_t count = static_cast<int64_t>(rows.size());
  CVX_MPI(MPI_Bcast(&count, 1, MPI_INT64_T, 0, comm));
  rows.resize(static_cast<size_t>(count));
  CVX_MPI(MPI_Bcast(rows.data(), static_cast<int>(count), MPI_INT64_T, 0, comm));
  return rows;
}

// The store holds fp32, or bf16 as its bit pattern (uint16).
StoreDtype store_dtype(const std::string& name, const std::string& where) {
  const torch::Dtype dtype = parse_dtype(name, where);
  CVX_CHECK_AS(ConfigError, dtype != torch::kFloat16, where, ": the store holds fp32 or bf16, not ", name);
  return dtype == torch::kBFloat16 ? StoreDtype::kBFloat16 : StoreDtype::kFloat32;
}

// Decoding runs one sample ahead on a worker thread, overlapping the VAE encode of the current one.
struct Decoded {
  torch::Tensor frames;  // [F, H, W, 3] uint8
  int64_t decoded_frames = 0;
  std::string error;  // why the clip is unusable
};

// Samples encoded now, over all ranks.
struct Counts {
  int64_t done = 0, bad = 0;
};

// One run, in the stages of the README's "Precomputing latents": plan (lists, models, store, what
// is pending), prompts, samples, summary.
class PrecomputeJob {
 public:
  PrecomputeJob(const AppContext& ctx, const ModelConfig& model, const DataConfig& data, const PrecomputeConfig& config,
                const PrecomputeHooks& hooks)
      : ctx_(ctx),
        model_(model),
        data_(data),
        config_(config),
        hooks_(hooks),
        crop_rng_(static_cast<uint64_t>(ctx.mpi->rank) * 7919 + 17) {}

  int run();

 private:
  void read_lists();
  void plan_dry_run() const;
  void load_models();
  void open_store();
  void read_pending();
  void encode_prompts();
  Counts encode_samples();
  Decoded decode(int64_t i) const;
  void encode_sample(int64_t i, const Decoded& decoded);
  void summarize(const Counts& counts);

  const AppContext& ctx_;
  const ModelConfig& model_;
  const DataConfig& data_;
  const PrecomputeConfig& config_;
  const PrecomputeHooks& hooks_;

  Resolution resolution_;
  FrameSampling sampling_ = FrameSampling::stride;
  ResizeMode resize_ = ResizeMode::resize;
  DatasetLists lists_;
  std::vector<uint64_t> costs_;  // bytes of each sample's video: the shards are balanced by them

  TransformerConfig transformer_config_;
  bool i2v_ = false;
  torch::Device device_ = torch::kCPU;
  AutoencoderKLCogVideoX vae_{nullptr};
  std::optional<PromptEncoder> prompt_encoder_;

  std::vector<std::string> prompt_texts_;  // deduplicated, in order of first use
  std::optional<LatentStore> store_;
  std::vector<int64_t> pending_prompts_, pending_samples_;  // rank 0's reading, on every rank

  std::mt19937_64 crop_rng_;
  torch::Tensor vae_input_;  // the float clip, one buffer reused from clip to clip
};

int PrecomputeJob::run() {
  read_lists();
  if (config_.dry_run) {
    plan_dry_run();
    return 0;
  }
  load_models();
  open_store();
  read_pending();
  encode_prompts();
  summarize(encode_samples());
  store_->close();
  return 0;
}

void PrecomputeJob::read_lists() {
  CVX_CHECK_AS(ConfigError, !data_.lists.data_root.empty(), "[data] data_root is required: the dataset folder with ",
               data_.lists.caption_column, " and ", data_.lists.video_column);
  CVX_CHECK_AS(ConfigError, !data_.store.empty(), "[data] store is required: the HDF5 file to write the latents to");
  resolution_ = data_.resolution();
  sampling_ = parse_frame_sampling(data_.frame_sampling);
  resize_ = parse_resize_mode(data_.resize_mode);
  // Every rank reads the (small) lists; the checks are deterministic, so all ranks agree.
  lists_ = load_dataset_lists(data_.lists);
  for (const auto& e : lists_.entries) costs_.push_back(fs::file_size(e.video));
  CVX_INFO << "dataset " << lists_.data_root.string() << ": " << lists_.entries.size() << " samples"
           << (lists_.images_file.empty() ? "" : " with images") << ", " << lists_.warnings.size()
           << " warning(s); clips " << resolution_.to_string() << ", sampling " << data_.frame_sampling << ", "
           << data_.resize_mode << "; store " << data_.store;
}

void PrecomputeJob::plan_dry_run() const {
  const auto plan = balance_samples(costs_, ctx_.mpi->size);
  for (int r = 0; r < ctx_.mpi->size; ++r) {
    uint64_t bytes = 0;
    for (size_t i : plan[r]) bytes += costs_[i];
    CVX_INFO << "  rank " << r << ": " << plan[r].size() << " samples, " << bytes / 1024 << " KiB of video";
  }
  if (!fs::exists(model_.path)) CVX_WARN << "model folder " << model_.path << " does not exist";
  CVX_INFO << "dry run: dataset checked and shards planned, nothing encoded";
}

// Every rank loads both encoders: each encodes its own share.
void PrecomputeJob::load_models() {
  const fs::path model_path = model_.path;
  transformer_config_ = TransformerConfig::from_json(read_json_file(model_path / "transformer" / "config.json"),
                                                     (model_path / "transformer" / "config.json").string());
  i2v_ = transformer_config_.is_i2v();
  device_ = rank_device(*ctx_.mpi);
  const bool cuda = device_.is_cuda();
  // fp32 on CPUs (no fast bf16 convolutions there); the VAE stays fp32 on GPUs too for exact moments.
  vae_ = load_vae(model_path / "vae", torch::kFloat32);
  vae_->to(device_);
  vae_->eval();
  if (cuda) vae_->enable_tiling();
  prompt_encoder_.emplace(PromptEncoder::load(model_path, cuda ? torch::kBFloat16 : torch::kFloat32));
  prompt_encoder_->encoder()->to(device_);
  prompt_encoder_->set_batch_size(config_.text_batch_size);
}

// Header, samples and deduplicated prompts: a new store, or an existing one checked against them.
void PrecomputeJob::open_store() {
  // The one definition the trainer checks the store against, from the same config files.
  const StoreHeader header = expected_store_header(model_, data_);
  std::map<std::string, int64_t> prompt_rows;
  std::vector<SampleEntry> samples;
  for (const auto& e : lists_.entries) {
    auto [it, added] = prompt_rows.emplace(e.prompt, static_cast<int64_t>(prompt_texts_.size()));
    if (added) prompt_texts_.push_back(e.prompt);
    SampleEntry s;
    s.id = static_cast<int64_t>(e.index);
    s.media_path = e.video_relative;
    s.prompt_row = it->second;
    samples.push_back(s);
  }
  LatentStoreOptions store_options;
  store_options.latent_dtype = store_dtype(config_.latent_dtype, "[precompute] latent_dtype");
  store_options.embedding_dtype = store_dtype(config_.embedding_dtype, "[precompute] embedding_dtype");
  store_options.image_latents = i2v_;
  store_options.images = i2v_;

  const bool exists = fs::exists(data_.store);
  if (exists && !config_.overwrite) {
    store_.emplace(LatentStore::open(data_.store, ctx_.mpi->world, /*read_only=*/false));
    store_->check_compatible(header);
    CVX_CHECK_AS(ConfigError, store_->num_samples() == static_cast<int64_t>(samples.size()), "store ", data_.store,
                 " holds ", store_->num_samples(), " samples but the dataset has ", samples.size(),
                 "; use --overwrite or a new store path");
  } else {
    if (exists && ctx_.mpi->rank == 0) fs::remove(data_.store);
    CVX_MPI(MPI_Barrier(ctx_.mpi->world));
    store_.emplace(LatentStore::create(data_.store, header, samples, prompt_texts_, store_options, ctx_.mpi->world));
  }
}

// What is left to do, read once by rank 0 before any rank writes: ranks reading the flags
// themselves would race with the first writes of faster ranks and plan different shards.
void PrecomputeJob::read_pending() {
  pending_prompts_ =
      broadcast_rows(ctx_.mpi->rank == 0 ? store_->pending_prompts() : std::vector<int64_t>{}, ctx_.mpi->world);
  pending_samples_ =
      broadcast_rows(ctx_.mpi->rank == 0 ? store_->pending_samples() : std::vector<int64_t>{}, ctx_.mpi->world);
}

// The pending prompts, round-robin over the ranks.
void PrecomputeJob::encode_prompts() {
  std::vector<int64_t> mine;
  for (size_t k = 0; k < pending_prompts_.size(); ++k)
    if (static_cast<int>(k % ctx_.mpi->size) == ctx_.mpi->rank) mine.push_back(pending_prompts_[k]);
  for (size_t start = 0; start < mine.size(); start += config_.text_batch_size) {
    std::vector<std::string> batch;
    const size_t end = std::min(mine.size(), start + static_cast<size_t>(config_.text_batch_size));
    for (size_t k = start; k < end; ++k) batch.push_back(prompt_texts_[mine[k]]);
    const auto embeddings = prompt_encoder_->encode(batch).to(torch::kCPU, torch::kFloat32);
    for (size_t k = start; k < end; ++k) store_->write_prompt(mine[k], embeddings[k - start]);
  }
}

// The pending samples, balanced by file size over the ranks, in rounds of one sample per rank so
// rank 0 can report progress over all ranks.
Counts PrecomputeJob::encode_samples() {
  std::vector<uint64_t> pending_costs;
  for (int64_t i : pending_samples_) pending_costs.push_back(costs_[i]);
  const auto plan = balance_samples(pending_costs, ctx_.mpi->size);
  std::vector<int64_t> mine;
  for (size_t k : plan[ctx_.mpi->rank]) mine.push_back(pending_samples_[k]);
  const int64_t total = static_cast<int64_t>(lists_.entries.size());
  const int64_t already = total - static_cast<int64_t>(pending_samples_.size());
  CVX_INFO << pending_samples_.size() << " of " << total << " samples to encode (" << already << " done before), "
           << pending_prompts_.size() << " prompts";

  // Pinned when it goes to a GPU.
  vae_input_ = torch::empty({1, 3, resolution_.frames, resolution_.height, resolution_.width},
                            torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(device_.is_cuda()));
  const auto decode_async = [this](int64_t i) {
    return std::async(std::launch::async, [this, i] { return decode(i); });
  };
  std::future<Decoded> next;
  if (!mine.empty()) next = decode_async(mine[0]);

  int64_t local_done = 0, local_bad = 0;
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  for (size_t round = 0;; ++round) {
    if (round < mine.size()) {
      const int64_t i = mine[round];
      const Decoded d = next.get();
      if (round + 1 < mine.size()) next = decode_async(mine[round + 1]);
      if (!d.error.empty()) {
        CVX_CHECK_AS(FormatError, config_.on_bad_sample != "fail", "sample ", i, ": ", d.error,
                     " (on_bad_sample = fail; use skip to leave it out)");
        CVX_ERROR << "skipping sample " << i << " (" << lists_.entries[i].video.string() << "): " << d.error;
        store_->mark_bad(i, d.error);
        ++local_bad;
      } else {
        encode_sample(i, d);
        ++local_done;
        if (hooks_.after_sample) hooks_.after_sample(local_done);
      }
    }
    int64_t local[3] = {local_done, local_bad, static_cast<int64_t>(round + 1 < mine.size() ? 1 : 0)};
    int64_t global[3] = {0, 0, 0};
    CVX_MPI(MPI_Allreduce(local, global, 3, MPI_INT64_T, MPI_SUM, ctx_.mpi->world));
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    const bool finished = global[2] == 0;
    if (finished || std::chrono::duration<double>(now - last_report).count() > 10) {
      last_report = now;
      const int64_t processed = global[0] + global[1];
      const double rate = elapsed > 0 ? processed / elapsed : 0;
      const double eta = rate > 0 ? (static_cast<double>(pending_samples_.size()) - processed) / rate : 0;
      CVX_INFO << "precompute: " << already + global[0] << "/" << total << " done, " << global[1] << " bad, "
               << std::setprecision(3) << rate << " videos/s, ETA " << eta << " s";
    }
    if (finished) return {global[0], global[1]};
  }
}

// Runs on the decode thread: reads only what the job set up before the first sample.
Decoded PrecomputeJob::decode(int64_t i) const {
  const auto& video = lists_.entries[i].video;
  const double target_fps = config_.fps > 0 ? config_.fps : (transformer_config_.patch_size_t ? 16.0 : 8.0);
  const int64_t min_frames = config_.min_frames > 0 ? config_.min_frames : resolution_.frames;
  VideoReaderOptions reader_options;
  reader_options.threads = static_cast<int>(config_.decode_threads);
  Decoded d;
  try {
    VideoReader reader(video, reader_options);
    CVX_CHECK_AS(FormatError, reader.frame_count() > 0, video.string(), ": no decodable frames");
    const auto indices =
        sample_frame_indices(sampling_, reader.frame_count(), resolution_.frames, reader.timestamps(), target_fps);
    const auto distinct = static_cast<int64_t>(std::set<int64_t>(indices.begin(), indices.end()).size());
    CVX_CHECK_AS(FormatError, distinct >= min_frames, video.string(), ": too short: its ", resolution_.frames,
                 " training frames would come from ", distinct, " distinct frames (", reader.frame_count(),
                 " decoded, sampling ", data_.frame_sampling, "); min_frames is ", min_frames,
                 " (--min_frames 1 pads short clips by repeating frames)");
    // Decoded straight to the size the crop is cut from (swscale, in the RGB conversion).
    const auto [height, width] =
        scaled_size(resize_, reader.info().height, reader.info().width, resolution_.height, resolution_.width);
    d.frames = reader.frames(indices, height, width);
    d.decoded_frames = reader.frame_count();
  } catch (const Error& e) {
    d.error = e.message();
  }
  return d;
}

// VAE-encodes one decoded clip (and for I2V its first-frame image), writes it, then marks it done.
void PrecomputeJob::encode_sample(int64_t i, const Decoded& d) {
  const auto& entry = lists_.entries[i];
  torch::NoGradGuard no_grad;
  const auto video =
      to_vae_input(d.frames, resolution_.height, resolution_.width, resize_, &crop_rng_, &vae_input_).to(device_);
  const auto moments = vae_->encode_moments(video)[0].to(torch::kCPU);  // [2C, F', H', W']
  torch::Tensor image_moments, image;
  if (i2v_) {
    // The first-frame image: images.txt when given (resized straight to HxW, as the official
    // scheme does), else the first frame of the clip as encoded, so it has the clip's crop.
    const auto input = entry.image ? to_vae_input(read_image(*entry.image).unsqueeze(0), resolution_.height,
                                                  resolution_.width, ResizeMode::resize)
                                         .to(device_)
                                   : video.narrow(2, 0, 1);
    image_moments = vae_->encode_moments(input)[0].to(torch::kCPU);
    // The pixels the trainer noises and encodes every step: exact for a video's first frame
    // (decoded uint8), the bilinear resize of an images.txt picture rounded to uint8.
    image = ((input[0].select(1, 0).to(torch::kCPU) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch::kUInt8);
  }
  store_->write_sample(i, moments, image_moments, image);
  store_->mark_done(i, static_cast<int32_t>(d.decoded_frames));
}

void PrecomputeJob::summarize(const Counts& counts) {
  store_->flush();
  const int64_t already = static_cast<int64_t>(lists_.entries.size() - pending_samples_.size());
  CVX_INFO << "precompute finished: " << counts.done << " encoded now, " << already << " before, " << counts.bad
           << " skipped as bad, " << pending_prompts_.size() << " prompts, store " << data_.store;
}

}  // namespace

int run_precompute(const AppContext& ctx, const ModelConfig& model, const DataConfig& data,
                   const PrecomputeConfig& config, const PrecomputeHooks& hooks) {
  return PrecomputeJob(ctx, model, data, config, hooks).run();
}

}  // namespace cvx
