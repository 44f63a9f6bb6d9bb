// cvx_train's job: the store is checked before any model is loaded, the transformer is built
// unmaterialised and filled shard by shard by the engine, then the loop runs optimizer steps of
// gradient_accumulation_steps micro-batches, checkpoints and exports.
//
// Randomness: every draw of a sample (its posterior sample, timestep, noise, image noise) comes
// from a generator seeded by (seed, epoch, global position of the sample in the epoch's order), so
// a sample gets the same draws whichever rank trains it, with any world size and after a resume;
// only LoRA dropout uses torch's generator, whose state each rank saves in its checkpoint.
#include "cvx/train/trainer.h"

#include <sys/resource.h>

#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "cvx/core/checked_call.h"
#include "cvx/core/device_memory.h"
#include "cvx/core/dtype_name.h"
#include "cvx/core/error.h"
#include "cvx/core/log.h"
#include "cvx/core/recompute.h"
#include "cvx/data/distributed_sampler.h"
#include "cvx/data/store_header.h"
#include "cvx/data/store_reader.h"
#include "cvx/diffusion/scheduler.h"
#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/process_grid.h"
#include "cvx/dist/sequence_parallel.h"
#include "cvx/dist/sharded_adamw.h"
#include "cvx/dist/sharded_state.h"
#include "cvx/dist/world_communicator.h"
#include "cvx/io/atomic_file.h"
#include "cvx/io/json_file.h"
#include "cvx/io/model_folder.h"
#include "cvx/io/safetensors.h"
#include "cvx/model/lora.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"
#include "cvx/precompute/precompute_job.h"
#include "cvx/train/checkpoint_folders.h"
#include "cvx/train/checkpoint_manifest.h"
#include "cvx/train/lr_schedule.h"
#include "cvx/train/memory_plan.h"
#include "cvx/train/step_flops.h"
#include "cvx/train/tensorboard_writer.h"
#include "cvx/train/training_export.h"
#include "cvx/train/training_loss.h"
#include "cvx/train/validation.h"

#ifdef CVX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace cvx {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The generator of one sample's draws (see the file comment).
at::Generator sample_generator(uint64_t seed, int64_t epoch, int64_t position) {
  const uint64_t key = splitmix64(splitmix64(seed) ^ splitmix64(static_cast<uint64_t>(epoch) * 0x100000001b3ull) ^
                                  static_cast<uint64_t>(position));
  return at::detail::createCPUGenerator(key);
}

uint64_t peak_host_rss() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux: kilobytes
}

std::string precompute_command(const std::string& config_file) {
  return "mpirun -np N cvx_precompute --config " + (config_file.empty() ? std::string("CONFIG.ini") : config_file);
}

// The noise schedule the model was trained with (the official trainer loads scheduler/), else the
// variant's default.
SchedulerConfig model_scheduler_config(const fs::path& model_path, const TransformerConfig& tc) {
  const fs::path file = model_path / "scheduler" / "scheduler_config.json";
  if (fs::exists(file)) return SchedulerConfig::from_json(read_json_file(file), file.string());
  return tc.variant() == kVariant2b ? scheduler_config_2b() : scheduler_config_5b();
}

class TrainingJob {
 public:
  TrainingJob(const AppContext& ctx, const TrainRunConfig& config, const TrainHooks& hooks)
      : ctx_(ctx), config_(config), hooks_(hooks), t_(config.train), device_(rank_device(*ctx.mpi)) {}

  int run();

 private:
  std::optional<CheckpointFolder> agree_on_resume_checkpoint() const;
  void open_store();
  void build_model();
  void resume();
  void train();
  double train_step(int64_t step, double* data_wait);
  void enqueue_next_batch();
  void save_checkpoint(int64_t step);
  void prepare_validation(torch::Dtype dtype);
  void run_validation(int64_t step);
  void export_final();
  bool is_rank0() const { return ctx_.mpi->rank == 0; }

  const AppContext& ctx_;
  const TrainRunConfig& config_;
  const TrainHooks& hooks_;
  const TrainConfig& t_;
  torch::Device device_;
  fs::path output_dir_;

  // store
  std::optional<StoreReader> reader_;
  StoreHeader header_;
  std::vector<int64_t> rows_;  // done store rows; the sampler indexes this list
  StoreReadOptions read_options_;
  std::unique_ptr<BatchPrefetcher> prefetcher_;
  struct Queued {
    SamplerState before;  // the sampler's state before this batch: where a resume continues
    std::vector<int64_t> indices;
  };
  std::deque<Queued> queued_;

  // model and training state
  TransformerConfig tc_;
  CogVideoXTransformer model_{nullptr};
  AutoencoderKLCogVideoX vae_{nullptr};
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<FsdpEngine> engine_;
  std::unique_ptr<ShardedAdamW> optimizer_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<DistributedSampler> sampler_;
  std::unique_ptr<CogVideoXScheduler> noise_scheduler_;
  LossOptions loss_options_;
  StepGeometry geometry_;
  int64_t total_steps_ = 0;
  int64_t start_step_ = 0;
  std::optional<CheckpointFolder> resumed_from_;
  std::optional<Validator> validator_;
  // Sequence parallelism: groups of seq_size_ consecutive ranks split each sample's video tokens;
  // the data-parallel world (sampler, global batch) is world / seq_size_.
  int seq_size_ = 1, dp_rank_ = 0, dp_size_ = 1;
  ProcessGrid grid_;
  std::unique_ptr<Communicator> shard_comm_, replicate_comm_;  // the engine's groups (process_grid.h)
  std::unique_ptr<Communicator> seq_comm_;
  std::vector<int64_t> seq_lengths_;
  bool stopped_early_ = false;  // should_stop ended the run before total_steps_
  double flops_per_sample_ = 0, peak_tflops_ = 0;
  // Rank 0's TensorBoard event file, opened by train(): step scalars, and validation's images.
  std::optional<TensorBoardWriter> tensorboard_;
};

int TrainingJob::run() {
  output_dir_ = t_.output_dir;
  grid_ = ProcessGrid::resolve(config_.parallel, ctx_.mpi->size);
  seq_size_ = grid_.sequence;
  dp_rank_ = grid_.data_parallel_rank(ctx_.mpi->rank);
  dp_size_ = grid_.data_parallel_size();
  // A wrong resume path or a damaged checkpoint is an error before anything heavy happens.
  resumed_from_ = agree_on_resume_checkpoint();
  open_store();
  build_model();
  resume();
  train();
  if (stopped_early_) return kExitStoppedToResume;
  export_final();
  return 0;
}

// Rank 0 resolves and verifies the checkpoint (reading every file once, not once per rank) and the
// others take its choice, so all resume from the same one; an error on rank 0 aborts the job.
std::optional<CheckpointFolder> TrainingJob::agree_on_resume_checkpoint() const {
  std::optional<CheckpointFolder> chosen;
  if (is_rank0()) chosen = resolve_resume_checkpoint(t_.resume_from_checkpoint, output_dir_);
  int64_t step = chosen ? chosen->step : -1;
  std::string path = chosen ? chosen->path.string() : std::string();
  int length = static_cast<int>(path.size());
  CVX_MPI(MPI_Bcast(&step, 1, MPI_INT64_T, 0, ctx_.mpi->world));
  CVX_MPI(MPI_Bcast(&length, 1, MPI_INT, 0, ctx_.mpi->world));
  path.resize(static_cast<size_t>(length));
  CVX_MPI(MPI_Bcast(path.data(), length, MPI_CHAR, 0, ctx_.mpi->world));
  if (step < 0) return std::nullopt;
  return CheckpointFolder{step, path};
}

void TrainingJob::open_store() {
  const fs::path store = config_.data.store;
  CVX_CHECK_AS(ConfigError, !config_.data.store.empty(),
               "[data] store is not set: cvx_train reads the latent store that cvx_precompute writes (set store = "
               "PATH.h5 and run ",
               precompute_command(config_.config_file), ")");
  if (!fs::exists(store)) {
    CVX_CHECK_AS(ConfigError, t_.precompute_if_missing, "latent store ", store.string(),
                 " does not exist: make it with `", precompute_command(config_.config_file),
                 "` (the same config file works for both programs), or set [train] precompute_if_missing = true");
    CVX_INFO << "latent store " << store.string() << " is missing: running the precompute first";
    CVX_CHECK(run_precompute(ctx_, config_.model, config_.data, config_.precompute) == 0, "the precompute failed");
  }
  const StoreHeader expected = expected_store_header(config_.model, config_.data);
  reader_.emplace(StoreReader::open(store));
  reader_->check_matches(expected);
  header_ = reader_->header();
  rows_ = reader_->done_rows();
  const int64_t skipped_bad = reader_->num_bad(), skipped_pending = reader_->num_pending();
  CVX_CHECK_AS(ConfigError, !rows_.empty(), "latent store ", store.string(), " has no finished sample (", skipped_bad,
               " bad, ", skipped_pending, " pending): run or finish `", precompute_command(config_.config_file),
               "` first");
  if (skipped_bad + skipped_pending > 0) {
    CVX_WARN << "latent store: training on " << rows_.size() << " samples; skipped " << skipped_bad << " bad and "
             << skipped_pending << " pending (cvx_inspect " << store.string() << " lists them)";
  } else {
    CVX_INFO << "latent store " << store.string() << ": " << rows_.size() << " samples";
  }
  const int64_t per_micro_step = t_.batch_size * dp_size_;
  CVX_CHECK_AS(ConfigError, per_micro_step <= static_cast<int64_t>(rows_.size()),
               "[train] batch_size = ", t_.batch_size, " on ", dp_size_, " data-parallel rank(s) takes ",
               per_micro_step, " samples per micro-step, more than the ", rows_.size(),
               " samples of the store: lower batch_size or run on fewer ranks");
}

void TrainingJob::build_model() {
  const fs::path model_path = config_.model.path;
  const ComponentFolder transformer_folder = open_component(model_path / "transformer", "", /*require_weights=*/true);
  tc_ = TransformerConfig::from_json(transformer_folder.config, transformer_folder.config_file.string());
  // The store's latents must be what this transformer denoises (checked before any weight is read).
  CVX_CHECK_AS(ConfigError, header_.latent_shape[0] == tc_.out_channels, "latent store ", config_.data.store,
               " holds latents of ", header_.latent_shape[0], " channels but the transformer of ", config_.model.path,
               " takes ", tc_.out_channels,
               " (its VAE and transformer do not belong together): make the store with this model's vae/");
  check_sequence_parallel_size(tc_.num_attention_heads, seq_size_);
  // The compute dtype the engine is planned with (one reading of mixed_precision: memory_plan).
  const FsdpOptions options = engine_options(config_);
  const torch::Dtype dtype = *options.precision.param_dtype;
  const bool lora = t_.training_type == "lora";
  // Before the transformer exists: T5 encodes the validation prompts and is freed again.
  if (config_.validation.enabled) prepare_validation(dtype);

  // Every rank builds the same unmaterialised model; LoRA adapters are initialised from the seed
  // (identical on every rank), the base weights come from the checkpoint shard by shard.
  torch::manual_seed(t_.seed);
  model_ = CogVideoXTransformer(tc_, ModuleInit::unmaterialized(dtype, torch::kCPU));
  if (lora) {
    const auto adapted = inject_lora(*model_, config_.lora, torch::kFloat32);
    mark_only_lora_trainable(*model_);
    CVX_INFO << "LoRA rank " << config_.lora.rank << ", alpha " << config_.lora.alpha << " on " << adapted.size()
             << " layers";
  } else {
    for (auto& p : model_->parameters()) p.set_requires_grad(true);
  }
  comm_ = make_communicator(config_.parallel, ctx_.mpi->world, device_);
  ProcessGroups groups = make_process_groups(*comm_, grid_);
  shard_comm_ = std::move(groups.shard);
  replicate_comm_ = std::move(groups.replicate);
  seq_comm_ = std::move(groups.sequence);
  if (!grid_.describe().empty())
    CVX_INFO << "process groups: " << grid_.describe() << "; this rank is replica "
             << grid_.replicate_rank(ctx_.mpi->rank) << ", shard " << grid_.shard_rank(ctx_.mpi->rank) << ", sequence "
             << grid_.sequence_rank(ctx_.mpi->rank) << " (the engine shards over " << shard_comm_->size()
             << " rank(s))";
  engine_ =
      std::make_unique<FsdpEngine>(model_->sharding_units(), *shard_comm_, options, device_, replicate_comm_.get());
  const auto report = engine_->load(*transformer_folder.weights);
  CVX_INFO << "transformer: " << report.num_loaded << " tensors, " << report.bytes_read / (1 << 20)
           << " MiB read by this rank (its shards)";
  model_->set_compute_dtype(dtype);
  model_->set_block_runner(engine_->runner());

  std::vector<ShardedAdamW::Param> params;
  for (auto& s : engine_->trainable_shards()) params.push_back({s.id, s.master, s.grad});
  AdamWOptions adam;
  adam.beta1 = t_.beta1;
  adam.beta2 = t_.beta2;
  adam.epsilon = t_.epsilon;
  adam.weight_decay = t_.weight_decay;
  optimizer_ = std::make_unique<ShardedAdamW>(params, adam);

  noise_scheduler_ = std::make_unique<CogVideoXScheduler>(model_scheduler_config(model_path, tc_));

  // Geometry and the I2V conditioning.
  geometry_.latent_frames = padded_latent_frames(tc_, header_.latent_shape[1]);
  geometry_.latent_height = header_.latent_shape[2];
  geometry_.latent_width = header_.latent_shape[3];
  geometry_.text_tokens = tc_.max_text_seq_length;
  if (seq_size_ > 1) {
    seq_lengths_ = sequence_split(video_tokens(tc_, geometry_), seq_size_);
    const int r = seq_comm_->rank();
    loss_options_.token_slice = {slice_offsets(seq_lengths_)[static_cast<size_t>(r)],
                                 seq_lengths_[static_cast<size_t>(r)]};
    CVX_INFO << "sequence parallel: " << seq_size_ << " ranks per sample, " << video_tokens(tc_, geometry_)
             << " video tokens split " << seq_lengths_.front() << ".." << seq_lengths_.back() << " per rank, "
             << tc_.num_attention_heads / seq_size_ << " heads per rank in attention";
  }
  loss_options_.i2v = tc_.is_i2v();
  loss_options_.vae_scaling_factor = header_.vae_scaling_factor;
  const std::string scale =
      t_.image_latent_scale == "auto" ? (header_.invert_scale_latents ? "divide" : "multiply") : t_.image_latent_scale;
  loss_options_.image_scale = scale == "divide" ? ImageLatentScale::divide : ImageLatentScale::multiply;
  read_options_.image_moments = loss_options_.i2v && t_.image_latents == "cached";
  read_options_.images = loss_options_.i2v && t_.image_latents == "encode";
  if (read_options_.images) {
    // Only the encoder: the decoder stays unmaterialised (no memory).
    const ComponentFolder vae_folder = open_component(model_path / "vae", "", /*require_weights=*/true);
    const VAEConfig vae_config = VAEConfig::from_json(vae_folder.config, vae_folder.config_file.string());
    vae_ = AutoencoderKLCogVideoX(vae_config, ModuleInit::unmaterialized(dtype, device_));
    LoadOptions load;
    load.dtype = dtype;
    load.prefix = "encoder.";
    load_state(*vae_->encoder, *vae_folder.weights, load);
    vae_->eval();
    // As the official trainer prepares its VAE (enable_slicing / enable_tiling, both on by default).
    if (t_.enable_tiling) vae_->enable_tiling();
    if (t_.enable_slicing) vae_->enable_slicing();
    CVX_INFO << "I2V: image latents encoded every step (noised first frame, VAE encoder resident in "
             << dtype_name(dtype) << (t_.enable_tiling ? ", tiled" : "") << ", image latents "
             << (scale == "divide" ? "divided by" : "multiplied by") << " the scaling factor)";
  } else if (loss_options_.i2v) {
    CVX_INFO << "I2V: cached image latents from the store (clean first frame; deviates from the official recipe)";
  }
  flops_per_sample_ = training_step_flops(tc_, geometry_, !lora, t_.gradient_checkpointing);
  peak_tflops_ = t_.peak_tflops;
#ifdef CVX_WITH_CUDA
  if (peak_tflops_ == 0 && device_.is_cuda())
    peak_tflops_ = device_peak_tflops(at::cuda::getDeviceProperties(device_.index())->name);
#endif
}

void TrainingJob::resume() {
  const int64_t world = ctx_.mpi->size;
  sampler_ = std::make_unique<DistributedSampler>(static_cast<int64_t>(rows_.size()), t_.batch_size,
                                                  t_.gradient_accumulation_steps, dp_rank_, dp_size_,
                                                  static_cast<uint64_t>(t_.seed));
  total_steps_ = t_.train_steps > 0 ? t_.train_steps : t_.train_epochs * sampler_->steps_per_epoch();
  LrScheduleConfig lr;
  lr.name = t_.lr_scheduler;
  lr.learning_rate = t_.learning_rate;
  lr.warmup_steps = t_.lr_warmup_steps;
  lr.total_steps = total_steps_;
  lr.num_cycles = t_.lr_num_cycles;
  lr.power = t_.lr_power;
  schedule_ = std::make_unique<LrSchedule>(lr);
  // Each rank's LoRA-dropout stream; replaced by the saved one on resume.
  // (By data-parallel rank: the ranks of a sequence group compute the same text tokens, which must
  // see the same dropout.)
  torch::manual_seed(static_cast<uint64_t>(t_.seed) + 1000003ull * static_cast<uint64_t>(dp_rank_ + 1));

  if (!resumed_from_) {
    if (t_.resume_from_checkpoint == "latest" || t_.resume_from_checkpoint == "latest_valid")
      CVX_INFO << "resume_from_checkpoint = " << t_.resume_from_checkpoint << ": no checkpoint yet, starting fresh";
    return;
  }
  const fs::path dir = resumed_from_->path;
  const nlohmann::json state = read_json_file(dir / kTrainerStateFile);
  load_sharded_state(dir / "state", *engine_, optimizer_.get());
  start_step_ = state.at("step").get<int64_t>();
  sampler_->load_state(state.at("sampler").get<SamplerState>());
  const int64_t saved_world = state.at("world_size").get<int64_t>();
  const fs::path rng = dir / "rng" / ("rank-" + std::to_string(ctx_.mpi->rank) + ".safetensors");
  if (saved_world == world && fs::exists(rng)) {
    const auto file = SafetensorsFile::open(rng);
    RngSnapshot snapshot;
    snapshot.device = device_;
    snapshot.cpu_state = file->tensor("cpu").clone();
    if (file->contains("device") && device_.is_cuda()) snapshot.device_state = file->tensor("device").clone();
    snapshot.replay();
  } else if (saved_world != world) {
    CVX_WARN << "resuming a checkpoint of " << saved_world << " rank(s) on " << world
             << ": state resharded; the LoRA-dropout streams restart from the seed (every sample's draws are "
                "unchanged)";
  }
  CVX_INFO << "resumed from " << dir.string() << " at step " << start_step_ << " (epoch " << sampler_->epoch() << ")";
}

void TrainingJob::enqueue_next_batch() {
  Queued q;
  q.before = sampler_->state();
  q.indices = sampler_->next_batch();
  std::vector<int64_t> rows;
  for (int64_t i : q.indices) rows.push_back(rows_[static_cast<size_t>(i)]);
  prefetcher_->enqueue(std::move(rows));
  queued_.push_back(std::move(q));
}

double TrainingJob::train_step(int64_t step, double* data_wait) {
  const int64_t accumulation = t_.gradient_accumulation_steps;
  // Installed for the step only (validation runs whole sequences); recomputation in backward uses it too.
  struct AttentionRunnerScope {
    CogVideoXTransformer& model;
    ~AttentionRunnerScope() { model->set_attention_runner({}); }
  } runner_scope{model_};
  if (seq_comm_) {
    model_->set_attention_runner(
        [this](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t text_len) {
          return ulysses_attention(q, k, v, text_len, *seq_comm_, seq_lengths_, scaled_dot_product_attention);
        });
  }
  engine_->zero_grad();
  double loss_sum = 0;
  *data_wait = 0;
  for (int64_t m = 0; m < accumulation; ++m) {
    double wait = 0;
    StoreBatch batch = prefetcher_->next(&wait);
    *data_wait += wait;
    const Queued q = queued_.front();
    queued_.pop_front();
    enqueue_next_batch();

    // Per-sample draws, keyed by the sample's global position (see the file comment).
    const int64_t first_position = q.before.position + dp_rank_ * t_.batch_size;
    std::vector<torch::Tensor> latents;
    std::vector<LossDraws> sample_draws;
    const auto moments = batch.moments.to(torch::kFloat32);  // [B, 2C, F', h, w]
    const int64_t channels = moments.size(1) / 2;
    for (int64_t j = 0; j < moments.size(0); ++j) {
      auto gen = sample_generator(static_cast<uint64_t>(t_.seed), q.before.epoch, first_position + j);
      const auto posterior = LatentDistribution::from_moments(moments.slice(0, j, j + 1));
      const torch::Tensor x0 =
          t_.latent_sampling == "mean" ? posterior.mean : posterior.sample(torch::randn(posterior.mean.sizes(), gen));
      latents.push_back(x0 * header_.vae_scaling_factor);  // [1, C, F', h, w]
      sample_draws.push_back(draw_loss_randoms(gen, tc_, 1, channels, moments.size(2), moments.size(3), moments.size(4),
                                               header_.height, header_.width, loss_options_.i2v, read_options_.images,
                                               t_.noised_image_dropout,
                                               noise_scheduler_->config().num_train_timesteps));
    }
    LossInputs inputs;
    inputs.latents = torch::cat(latents, 0).to(device_);
    inputs.prompt_embeds = batch.prompt_embeds.to(device_, torch::kFloat32);
    if (read_options_.images) inputs.images = (batch.images.to(device_, torch::kFloat32) / 255.0) * 2.0 - 1.0;
    if (read_options_.image_moments) inputs.image_moments = batch.image_moments.to(device_, torch::kFloat32);
    const LossDraws draws = concatenate_loss_draws(sample_draws);

    const LossOutputs out = compute_training_loss(model_, *noise_scheduler_, inputs, draws, loss_options_,
                                                  vae_.is_empty() ? nullptr : &vae_);
    // The engine averages gradients over all ranks; a sequence group's P partial losses add up to its
    // samples' loss, so each is scaled by P (the data-parallel average of whole-sample gradients).
    engine_->backward(out.loss * static_cast<double>(seq_size_) / static_cast<double>(accumulation));
    loss_sum += out.loss.item<double>() * seq_size_;
  }
  auto total = torch::tensor({loss_sum / static_cast<double>(accumulation)}, torch::kFloat64);
  if (device_.is_cuda()) total = total.to(device_);
  comm_->all_reduce(total, ReduceOp::avg)->wait();
  (void)step;
  return total.cpu().item<double>();
}

void TrainingJob::train() {
  const int64_t world = ctx_.mpi->size;
  read_options_.prompt_embeds = true;
  prefetcher_ = std::make_unique<BatchPrefetcher>(*reader_, read_options_, static_cast<int>(t_.prefetch_batches));
  for (int64_t i = 0; i < std::max<int64_t>(1, t_.prefetch_batches); ++i) enqueue_next_batch();
  std::optional<MetricsLog> metrics;
  if (is_rank0()) {
    metrics.emplace(output_dir_ / "metrics.jsonl", start_step_);
    tensorboard_.emplace(output_dir_ / "tensorboard");
  }
  const int64_t global_batch = t_.batch_size * t_.gradient_accumulation_steps * dp_size_;
  const double tokens_per_sample = static_cast<double>(video_tokens(tc_, geometry_) + geometry_.text_tokens);
  CVX_INFO << "training: steps " << start_step_ << " -> " << total_steps_ << ", global batch " << global_batch << " ("
           << sampler_->steps_per_epoch() << " steps per epoch over " << rows_.size() << " samples), "
           << video_tokens(tc_, geometry_) << " video + " << geometry_.text_tokens << " text tokens per sample, "
           << flops_per_sample_ / 1e12 << " TFLOP per sample and step";
  const auto run_start = Clock::now();
  int64_t steps_this_run = 0;
  for (int64_t step = start_step_; step < total_steps_; ++step) {
    const auto start = Clock::now();
#ifdef CVX_WITH_CUDA
    if (device_.is_cuda()) reset_cuda_peak_memory(device_.index());
#endif
    const int64_t epoch = queued_.front().before.epoch;
    if (seq_comm_) seq_comm_->reset_stats();
    double data_wait = 0;
    const double loss = train_step(step, &data_wait);
    const double grad_norm = engine_->clip_grad_norm(t_.max_grad_norm);
    const double lr = schedule_->lr(step);
    optimizer_->step(lr);
    engine_->after_optimizer_step();
    const double seconds = seconds_since(start);
    ++steps_this_run;

    StepReport r;
    r.step = step + 1;
    r.total_steps = total_steps_;
    r.epoch = epoch;
    r.loss = loss;
    r.grad_norm = grad_norm;
    r.lr = lr;
    r.step_seconds = seconds;
    r.data_wait_seconds = data_wait;
    r.peak_memory_bytes = peak_host_rss();
#ifdef CVX_WITH_CUDA
    if (device_.is_cuda()) {
      r.memory_kind = "CUDA max allocated";
      r.peak_memory_bytes = static_cast<uint64_t>(cuda_peak_allocated_bytes(device_.index()));
    }
#endif
    r.samples = global_batch;
    r.samples_per_second = static_cast<double>(global_batch) / seconds;
    r.tokens_per_second = r.samples_per_second * tokens_per_sample;
    r.tflops = flops_per_sample_ * static_cast<double>(global_batch) / static_cast<double>(world) / seconds / 1e12;
    r.mfu = peak_tflops_ > 0 ? r.tflops / peak_tflops_ : -1;
    if (seq_comm_) r.sequence_bytes = seq_comm_->stats().total_bytes();
    r.eta_seconds =
        seconds_since(run_start) / static_cast<double>(steps_this_run) * static_cast<double>(total_steps_ - step - 1);
    if (is_rank0()) {
      log_step(r);
      metrics->write(r);
      add_step_scalars(*tensorboard_, r);
    }
    for (const auto& hook : hooks_.on_step) hook(r);

    bool stop = hooks_.should_stop && hooks_.should_stop(r.step);
    if (hooks_.should_stop) {
      auto flag = torch::tensor({stop ? 1.0 : 0.0}, torch::kFloat64);
      if (device_.is_cuda()) flag = flag.to(device_);
      comm_->all_reduce(flag, ReduceOp::max)->wait();
      stop = flag.cpu().item<double>() > 0;
    }
    if (r.step % t_.checkpointing_steps == 0 || r.step == total_steps_ || stop) save_checkpoint(r.step);
    // Not when stopping early: a preempted job should exit quickly.
    if (validator_ && !stop && validator_->due(r.step, total_steps_)) run_validation(r.step);
    if (stop) {
      CVX_INFO << "stopped after step " << r.step << " of " << total_steps_ << " (checkpoint saved; exit status "
               << kExitStoppedToResume << "): resume with --train.resume_from_checkpoint latest";
      stopped_early_ = r.step < total_steps_;
      total_steps_ = r.step;
      break;
    }
  }
  prefetcher_.reset();
}

void TrainingJob::prepare_validation(torch::Dtype dtype) {
  ValidationSetup setup;
  setup.model_path = config_.model.path;
  setup.output_dir = output_dir_;
  setup.dtype = dtype;
  setup.device = device_;
  setup.frames = header_.frames;
  setup.height = header_.height;
  setup.width = header_.width;
  setup.transformer = tc_;
  setup.scheduler = model_scheduler_config(config_.model.path, tc_);
  // Under sequence parallelism the prompts go to the data-parallel ranks (sequence groups).
  validator_.emplace(config_.validation, setup, dp_rank_, dp_size_);
  validator_->encode_prompts();
}

void TrainingJob::run_validation(int64_t step) {
  // The model as trained (no dropout); the engine gathers its units as in a training forward.
  // Loading the VAE initialises modules from torch's generator: put the LoRA-dropout stream back
  // where training left it, so a run's losses do not depend on validation.
  const RngSnapshot rng = RngSnapshot::capture(device_);
  model_->eval();
  const ValidationResult result = validator_->run(step, model_, *comm_, seq_comm_.get());
  model_->train();
  rng.replay();
  if (tensorboard_) {
    for (const auto& [tag, frame] : result.first_frames) tensorboard_->add_image(tag, step, frame);
    tensorboard_->add_scalar("validation/seconds", step, result.seconds);
    tensorboard_->flush();
  }
}

void TrainingJob::save_checkpoint(int64_t step) {
  const auto start = Clock::now();
  const fs::path final_dir = output_dir_ / checkpoint_folder_name(step);
  const fs::path staging = output_dir_ / (checkpoint_folder_name(step) + ".partial");
  if (is_rank0()) {
    fs::remove_all(staging);
    fs::create_directories(staging / "rng");
  }
  comm_->barrier();
  // The position a resume continues from: before the first batch read ahead but not trained.
  const SamplerState position = queued_.empty() ? sampler_->state() : queued_.front().before;
  nlohmann::json state{
      {"step", step},
      {"epoch", position.epoch},
      {"sampler", position},
      {"world_size", ctx_.mpi->size},
      {"seed", t_.seed},
      {"training_type", t_.training_type},
      {"lr_scheduler", {{"name", t_.lr_scheduler}, {"steps_done", step}, {"next_lr", schedule_->lr(step)}}},
      {"cvx_version", CVX_VERSION}};
  save_sharded_state(staging / "state", *engine_, optimizer_.get(), state);
  {
    const RngSnapshot rng = RngSnapshot::capture(device_);
    NamedTensors tensors{{"cpu", rng.cpu_state}};
    if (rng.device_state.defined()) tensors.emplace_back("device", rng.device_state.cpu());
    save_safetensors(staging / "rng" / ("rank-" + std::to_string(ctx_.mpi->rank) + ".safetensors"), tensors);
  }
  if (t_.training_type == "lora")
    export_lora(*engine_, model_, staging / "pytorch_lora_weights.safetensors",
                parse_dtype(t_.export_dtype, "[train] export_dtype"));
  comm_->barrier();  // every rank's files are on disk
  if (hooks_.before_checkpoint_commit) hooks_.before_checkpoint_commit(step, staging);
  if (is_rank0()) {
    if (fs::exists(output_dir_ / "config.ini")) fs::copy_file(output_dir_ / "config.ini", staging / "config.ini");
    state["files"] = checkpoint_manifest(staging);                      // what a resume verifies
    write_file_atomically(staging / kTrainerStateFile, state.dump(2));  // last: marks the folder complete
    fsync_directory(staging);
    replace_directory(staging, final_dir);
    const auto removed =
        rotate_checkpoints(output_dir_, t_.checkpointing_limit,
                           resumed_from_ ? std::optional<fs::path>(resumed_from_->path) : std::nullopt);
    for (const auto& r : removed) CVX_INFO << "removed old checkpoint " << r.string();
  }
  comm_->barrier();
  CVX_INFO << "checkpoint " << final_dir.string() << " saved in " << seconds_since(start) << " s";
  for (const auto& hook : hooks_.on_checkpoint) hook(step, final_dir);
}

void TrainingJob::export_final() {
  const torch::Dtype dtype = parse_dtype(t_.export_dtype, "[train] export_dtype");
  const fs::path model_path = config_.model.path;
  if (t_.training_type == "lora") {
    const fs::path file = output_dir_ / "pytorch_lora_weights.safetensors";
    export_lora(*engine_, model_, file, dtype);
    if (is_rank0()) {
      CVX_INFO << "LoRA exported to " << file.string() << " (diffusers format, alpha folded: pipe.load_lora_weights(\""
               << output_dir_.string() << "\") gives the trained strength)";
      if (!t_.export_pipeline.empty()) export_pipeline(model_path, t_.export_pipeline, {}, file);
    }
  } else {
    const fs::path dir = output_dir_ / "transformer";
    export_transformer(*engine_, model_, model_path / "transformer", dir, dtype);
    if (is_rank0()) {
      CVX_INFO << "transformer exported to " << dir.string()
               << " (diffusers format: CogVideoXTransformer3DModel.from_pretrained)";
      if (!t_.export_pipeline.empty()) export_pipeline(model_path, t_.export_pipeline, dir, {});
    }
  }
  comm_->barrier();
}

}  // namespace

int run_training(const AppContext& ctx, const TrainRunConfig& config, const TrainHooks& hooks) {
  const auto& t = config.train;
  const Resolution resolution = config.data.resolution();
  const int simulated = static_cast<int>(config.parallel.simulate_world_size);
  CVX_CHECK_AS(ConfigError, simulated == 0 || t.dry_run, "[parallel] simulate_world_size = ", simulated,
               " plans a world that is not there: it needs --dry_run");
  const int world_size = simulated > 0 ? simulated : ctx.mpi->size;
  const ProcessGrid grid = ProcessGrid::resolve(config.parallel, world_size);
  const int64_t seq = grid.sequence;
  const int64_t global_batch = t.batch_size * t.gradient_accumulation_steps * grid.data_parallel_size();
  std::ostringstream lora;
  if (t.training_type == "lora") lora << "; LoRA rank " << config.lora.rank << ", scale " << config.lora.scale();
  const std::string backend = resolve_backend(config.parallel.backend, rank_device(*ctx.mpi));
  CVX_INFO << "plan: " << t.training_type << " fine-tuning of " << config.model.path << " (variant "
           << config.model.variant << ", compute dtype "
           << dtype_name(parse_mixed_precision(t.mixed_precision, "[train] mixed_precision")) << ") on clips "
           << resolution.to_string() << "; global batch " << global_batch << " = " << t.batch_size << " per rank x "
           << t.gradient_accumulation_steps << " accumulation x " << grid.data_parallel_size()
           << " data-parallel rank(s)"
           << (grid.describe().empty() ? std::string()
                                       : " (" + std::to_string(world_size) + " ranks = " + grid.describe() + ")")
           << (simulated > 0 ? " (simulated)" : "") << "; sharding " << config.parallel.resolved_sharding() << " over "
           << backend << lora.str();
  // The memory plan needs the transformer's shape: from the model folder, or the variant's preset.
  const bool plannable =
      std::filesystem::exists(std::filesystem::path(config.model.path) / "transformer" / "config.json") ||
      config.model.variant != "auto";
  if (plannable) {
    std::string source;
    const TransformerConfig planned = resolve_transformer_config(config.model, &source);
    CVX_INFO << "transformer configuration from " << source;
    check_sequence_parallel_size(planned.num_attention_heads, static_cast<int>(seq));
    if (ctx.mpi->rank == 0) CVX_INFO << plan_memory_report(config, grid.shard * grid.sequence);
  } else {
    CVX_WARN << "no memory plan: " << config.model.path << " has no transformer/config.json and [model] variant is "
             << "auto (set the variant to plan without the weights)";
  }
  if (t.dry_run) {
    if (!std::filesystem::exists(config.model.path))
      CVX_WARN << "model folder " << config.model.path << " does not exist";
    if (!config.data.store.empty() && !std::filesystem::exists(config.data.store))
      CVX_WARN << "latent store " << config.data.store << " does not exist yet (run cvx_precompute first)";
    CVX_INFO << "dry run: configuration checked, nothing trained";
    return 0;
  }
  TrainingJob job(ctx, config, hooks);
  return job.run();
}

}  // namespace cvx
