#include "cvx/precompute/precompute_job.h"

#include <chrono>
#include <cstdlib>
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

}  // namespace

int run_precompute(const AppContext& ctx, const ModelConfig& model, const DataConfig& data,
                   const PrecomputeConfig& config) {
  CVX_CHECK_AS(ConfigError, !data.lists.data_root.empty(), "[data] data_root is required: the dataset folder with ",
               data.lists.caption_column, " and ", data.lists.video_column);
  CVX_CHECK_AS(ConfigError, !data.store.empty(), "[data] store is required: the HDF5 file to write the latents to");
  const Resolution resolution = data.resolution();
  const FrameSampling sampling = parse_frame_sampling(data.frame_sampling);
  const ResizeMode resize = parse_resize_mode(data.resize_mode);
  // Every rank reads the (small) lists; the checks are deterministic, so all ranks agree.
  const DatasetLists lists = load_dataset_lists(data.lists);
  std::vector<uint64_t> costs;
  for (const auto& e : lists.entries) costs.push_back(fs::file_size(e.video));
  CVX_INFO << "dataset " << lists.data_root.string() << ": " << lists.entries.size() << " samples"
           << (lists.images_file.empty() ? "" : " with images") << ", " << lists.warnings.size() << " warning(s); clips "
           << resolution.to_string() << ", sampling " << data.frame_sampling << ", " << data.resize_mode << "; store "
           << data.store;
  if (config.dry_run) {
    const auto plan = balance_samples(costs, ctx.mpi->size);
    for (int r = 0; r < ctx.mpi->size; ++r) {
      uint64_t bytes = 0;
      for (size_t i : plan[r]) bytes += costs[i];
      CVX_INFO << "  rank " << r << ": " << plan[r].size() << " samples, " << bytes / 1024 << " KiB of video";
    }
    if (!fs::exists(model.path)) CVX_WARN << "model folder " << model.path << " does not exist";
    CVX_INFO << "dry run: dataset checked and shards planned, nothing encoded";
    return 0;
  }

  // ---- models (every rank: each encodes its own share)
  const fs::path model_path = model.path;
  const auto transformer_config = TransformerConfig::from_json(
      read_json_file(model_path / "transformer" / "config.json"), (model_path / "transformer" / "config.json").string());
  const bool i2v = transformer_config.is_i2v();
  const torch::Device device = rank_device(*ctx.mpi);
  const bool cuda = device.is_cuda();
  // fp32 on CPUs (no fast bf16 convolutions there); the VAE stays fp32 on GPUs too for exact moments.
  auto vae = load_vae(model_path / "vae", torch::kFloat32);
  vae->to(device);
  vae->eval();
  if (cuda) vae->enable_tiling();
  auto prompts_encoder = PromptEncoder::load(model_path, cuda ? torch::kBFloat16 : torch::kFloat32);
  prompts_encoder.encoder()->to(device);
  prompts_encoder.set_batch_size(config.text_batch_size);

  // ---- store: header, samples, deduplicated prompts
  // The one definition the trainer checks the store against, from the same config files.
  const StoreHeader header = expected_store_header(model, data);
  std::vector<std::string> prompt_texts;
  std::map<std::string, int64_t> prompt_rows;
  std::vector<SampleEntry> samples;
  for (const auto& e : lists.entries) {
    auto [it, added] = prompt_rows.emplace(e.prompt, static_cast<int64_t>(prompt_texts.size()));
    if (added) prompt_texts.push_back(e.prompt);
    SampleEntry s;
    s.id = static_cast<int64_t>(e.index);
    s.media_path = e.video_relative;
    s.prompt_row = it->second;
    samples.push_back(s);
  }
  LatentStoreOptions store_options;
  store_options.latent_dtype = store_dtype(config.latent_dtype, "[precompute] latent_dtype");
  store_options.embedding_dtype = store_dtype(config.embedding_dtype, "[precompute] embedding_dtype");
  store_options.image_latents = i2v;
  store_options.images = i2v;

  const bool exists = fs::exists(data.store);
  std::optional<LatentStore> store;
  if (exists && !config.overwrite) {
    store.emplace(LatentStore::open(data.store, ctx.mpi->world, /*read_only=*/false));
    store->check_compatible(header);
    CVX_CHECK_AS(ConfigError, store->num_samples() == static_cast<int64_t>(samples.size()), "store ", data.store,
                 " holds ", store->num_samples(), " samples but the dataset has ", samples.size(),
                 "; use --overwrite or a new store path");
  } else {
    if (exists && ctx.mpi->rank == 0) fs::remove(data.store);
    CVX_MPI(MPI_Barrier(ctx.mpi->world));
    store.emplace(LatentStore::create(data.store, header, samples, prompt_texts, store_options, ctx.mpi->world));
  }

  // What is left to do, read once by rank 0 before any rank writes: ranks reading the flags
  // themselves would race with the first writes of faster ranks and plan different shards.
  const auto pending_prompts = broadcast_rows(ctx.mpi->rank == 0 ? store->pending_prompts() : std::vector<int64_t>{},
                                              ctx.mpi->world);
  const auto pending = broadcast_rows(ctx.mpi->rank == 0 ? store->pending_samples() : std::vector<int64_t>{},
                                      ctx.mpi->world);

  // ---- prompts: the pending ones, round-robin over the ranks
  std::vector<int64_t> my_prompts;
  for (size_t k = 0; k < pending_prompts.size(); ++k)
    if (static_cast<int>(k % ctx.mpi->size) == ctx.mpi->rank) my_prompts.push_back(pending_prompts[k]);
  for (size_t start = 0; start < my_prompts.size(); start += config.text_batch_size) {
    std::vector<std::string> batch;
    const size_t end = std::min(my_prompts.size(), start + static_cast<size_t>(config.text_batch_size));
    for (size_t k = start; k < end; ++k) batch.push_back(prompt_texts[my_prompts[k]]);
    const auto embeddings = prompts_encoder.encode(batch).to(torch::kCPU, torch::kFloat32);
    for (size_t k = start; k < end; ++k) store->write_prompt(my_prompts[k], embeddings[k - start]);
  }

  // ---- samples: the pending ones, balanced by file size over the ranks
  std::vector<uint64_t> pending_costs;
  for (int64_t i : pending) pending_costs.push_back(costs[i]);
  const auto plan = balance_samples(pending_costs, ctx.mpi->size);
  std::vector<int64_t> mine;
  for (size_t k : plan[ctx.mpi->rank]) mine.push_back(pending[k]);
  const int64_t total = static_cast<int64_t>(samples.size());
  const int64_t already = total - static_cast<int64_t>(pending.size());
  CVX_INFO << pending.size() << " of " << total << " samples to encode (" << already << " done before), "
           << pending_prompts.size() << " prompts";
  const double target_fps = config.fps > 0 ? config.fps : (transformer_config.patch_size_t ? 16.0 : 8.0);
  std::mt19937_64 crop_rng(static_cast<uint64_t>(ctx.mpi->rank) * 7919 + 17);
  const int64_t min_frames = config.min_frames > 0 ? config.min_frames : resolution.frames;
  VideoReaderOptions reader_options;
  reader_options.threads = static_cast<int>(config.decode_threads);

  // Decoding runs one sample ahead on a worker thread, overlapping the VAE encode of the current one.
  struct Decoded {
    torch::Tensor frames;  // [F, H, W, 3] uint8
    int64_t decoded_frames = 0;
    std::string error;  // why the clip is unusable
  };
  auto decode = [&](int64_t i) {
    Decoded d;
    try {
      VideoReader reader(lists.entries[i].video, reader_options);
      CVX_CHECK_AS(FormatError, reader.frame_count() > 0, lists.entries[i].video.string(), ": no decodable frames");
      const auto indices =
          sample_frame_indices(sampling, reader.frame_count(), resolution.frames, reader.timestamps(), target_fps);
      const auto distinct = static_cast<int64_t>(std::set<int64_t>(indices.begin(), indices.end()).size());
      CVX_CHECK_AS(FormatError, distinct >= min_frames, lists.entries[i].video.string(), ": too short: its ",
                   resolution.frames, " training frames would come from ", distinct, " distinct frames (",
                   reader.frame_count(), " decoded, sampling ", data.frame_sampling, "); min_frames is ", min_frames,
                   " (--min_frames 1 pads short clips by repeating frames)");
      // Decoded straight to the size the crop is cut from (swscale, in the RGB conversion).
      const auto [height, width] =
          scaled_size(resize, reader.info().height, reader.info().width, resolution.height, resolution.width);
      d.frames = reader.frames(indices, height, width);
      d.decoded_frames = reader.frame_count();
    } catch (const Error& e) {
      d.error = e.message();
    }
    return d;
  };
  // The float clip is prepared in one buffer reused from clip to clip (pinned when it goes to a GPU).
  torch::Tensor vae_input = torch::empty({1, 3, resolution.frames, resolution.height, resolution.width},
                                         torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(cuda));
  std::future<Decoded> next;
  if (!mine.empty()) next = std::async(std::launch::async, decode, mine[0]);

  int64_t local_done = 0, local_bad = 0;
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  // Rounds of one sample per rank, so rank 0 can report progress aggregated over all ranks.
  for (size_t round = 0;; ++round) {
    if (round < mine.size()) {
      const int64_t i = mine[round];
      const auto& entry = lists.entries[i];
      Decoded d = next.get();
      if (round + 1 < mine.size()) next = std::async(std::launch::async, decode, mine[round + 1]);
      if (!d.error.empty()) {
        CVX_CHECK_AS(FormatError, config.on_bad_sample != "fail", "sample ", i, ": ", d.error,
                     " (on_bad_sample = fail; use skip to leave it out)");
        CVX_ERROR << "skipping sample " << i << " (" << entry.video.string() << "): " << d.error;
        store->mark_bad(i, d.error);
        ++local_bad;
      } else {
        torch::NoGradGuard no_grad;
        const auto video =
            to_vae_input(d.frames, resolution.height, resolution.width, resize, &crop_rng, &vae_input).to(device);
        const auto moments = vae->encode_moments(video)[0].to(torch::kCPU);  // [2C, F', H', W']
        torch::Tensor image_moments, image;
        if (i2v) {
          // The first-frame image: images.txt when given (resized straight to HxW, as the official
          // scheme does), else the first frame of the clip as encoded, so it has the clip's crop.
          const auto input = entry.image ? to_vae_input(read_image(*entry.image).unsqueeze(0), resolution.height,
                                                        resolution.width, ResizeMode::resize)
                                               .to(device)
                                         : video.narrow(2, 0, 1);
          image_moments = vae->encode_moments(input)[0].to(torch::kCPU);
          // The pixels the trainer noises and encodes every step: exact for a video's first frame
          // (decoded uint8), the bilinear resize of an images.txt picture rounded to uint8.
          image = ((input[0].select(1, 0).to(torch::kCPU) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch::kUInt8);
        }
        store->write_sample(i, moments, image_moments, image);
        store->mark_done(i, static_cast<int32_t>(d.decoded_frames));
        ++local_done;
        // Test hook: a rank dying mid-run (as if killed) after this many samples.
        if (const char* die_after = std::getenv("CVX_PRECOMPUTE_DIE_AFTER");
            die_after != nullptr && ctx.mpi->rank == ctx.mpi->size - 1 && local_done >= std::atoll(die_after))
          std::_Exit(9);
      }
    }
    int64_t local[3] = {local_done, local_bad, static_cast<int64_t>(round + 1 < mine.size() ? 1 : 0)};
    int64_t global[3] = {0, 0, 0};
    CVX_MPI(MPI_Allreduce(local, global, 3, MPI_INT64_T, MPI_SUM, ctx.mpi->world));
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    const bool finished = global[2] == 0;
    if (finished || std::chrono::duration<double>(now - last_report).count() > 10) {
      last_report = now;
      const int64_t processed = global[0] + global[1];
      const double rate = elapsed > 0 ? processed / elapsed : 0;
      const double eta = rate > 0 ? (static_cast<double>(pending.size()) - processed) / rate : 0;
      CVX_INFO << "precompute: " << already + global[0] << "/" << total << " done, " << global[1] << " bad, "
               << std::setprecision(3) << rate << " videos/s, ETA " << eta << " s";
    }
    if (finished) {
      store->flush();
      CVX_INFO << "precompute finished: " << global[0] << " encoded now, " << already << " before, " << global[1]
               << " skipped as bad, " << pending_prompts.size() << " prompts, store " << data.store;
      break;
    }
  }
  store->close();
  return 0;
}

}  // namespace cvx
