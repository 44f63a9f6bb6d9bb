// Sharded training steps of a small CogVideoX-shaped transformer under mpirun on the CPU: step time,
// bytes each rank sends per step (ring cost, from the communicator's stats) and peak RSS per rank,
// for LoRA or full fine-tuning. Prints one JSON line (rank 0).
// usage: mpirun -np N bench_fsdp_cpu lora|full [STEPS=5] [LAYERS=8] [WIDTH=512]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cvx/core/mpi_env.h"
#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/mpi_communicator.h"
#include "cvx/dist/sharded_adamw.h"
#include "cvx/model/lora.h"
#include "cvx/model/model_variant.h"
#include "cvx/model/transformer.h"

namespace {
double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB on Linux
}
}  // namespace

int main(int argc, char** argv) {
  const auto& world = cvx::mpi_init(&argc, &argv);
  const std::string mode = argc > 1 ? argv[1] : "lora";
  const int steps = argc > 2 ? std::atoi(argv[2]) : 5;
  const int64_t layers = argc > 3 ? std::atoll(argv[3]) : 8;
  const int64_t width = argc > 4 ? std::atoll(argv[4]) : 512;
  torch::set_num_threads(std::max(1, 2 / world.size));  // this VM's 2 cores shared by the ranks

  cvx::TransformerConfig c = cvx::tiny_transformer(cvx::kVariant5b);
  c.num_layers = layers;
  c.num_attention_heads = width / 64;
  c.attention_head_dim = 64;
  c.in_channels = c.out_channels = 16;
  c.text_embed_dim = 256;
  c.time_embed_dim = 128;
  torch::manual_seed(1);
  cvx::CogVideoXTransformer model(c);
  if (mode == "lora") {
    cvx::LoraConfig lora;
    lora.rank = 32;
    lora.alpha = 32;
    cvx::inject_lora(*model, lora);
    cvx::mark_only_lora_trainable(*model);
  }
  cvx::MpiCommunicator comm(MPI_COMM_WORLD, "world");
  cvx::FsdpEngine engine(model->sharding_units(), comm, {}, torch::kCPU);
  model->set_block_runner(engine.runner());
  std::vector<cvx::ShardedAdamW::Param> params;
  for (auto& s : engine.trainable_shards()) params.push_back({s.id, s.master, s.grad});
  cvx::ShardedAdamW optimizer(params, {});

  // Global batch 4, split over the ranks; latents 2 x 16 x 16 (128 video tokens) + 32 text tokens.
  const int64_t per_rank = std::max<int64_t>(1, 4 / world.size);
  const auto latents = torch::randn({per_rank, 2, 16, 16, 16});
  const auto text = torch::randn({per_rank, 32, c.text_embed_dim});
  const auto t = torch::randint(0, 1000, {per_rank}, torch::kLong);
  const auto rope = cvx::training_rotary_embedding(c, 16, 16, 2);
  std::vector<double> times;
  uint64_t bytes = 0;
  for (int s = 0; s <= steps; ++s) {  // step 0 warms up
    comm.barrier();
    comm.reset_stats();
    const auto start = std::chrono::steady_clock::now();
    engine.zero_grad();
    const auto out = model->forward(latents, text, t, std::nullopt, &rope);
    engine.backward(out.pow(2).mean());
    engine.clip_grad_norm(1.0);
    optimizer.step(1e-4);
    engine.after_optimizer_step();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (s > 0) times.push_back(ms);
    bytes = comm.stats().total_bytes();
  }
  std::sort(times.begin(), times.end());
  double rss = peak_rss_mib(), rss_max = 0, rss_min = 0;
  MPI_Reduce(&rss, &rss_max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  MPI_Reduce(&rss, &rss_min, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
  const auto memory = engine.memory();
  if (world.rank == 0) {
    std::printf(
        "{\"benchmark\": \"fsdp_cpu\", \"mode\": \"%s\", \"ranks\": %d, \"layers\": %lld, \"width\": %lld, "
        "\"trainable\": %lld, \"frozen\": %lld, \"step_ms_median\": %.1f, \"step_ms_min\": %.1f, "
        "\"sent_mib_per_step_per_rank\": %.2f, \"engine_state_mib_per_rank\": %.1f, \"peak_rss_mib_max\": %.1f, "
        "\"peak_rss_mib_min\": %.1f}\n",
        mode.c_str(), world.size, static_cast<long long>(layers), static_cast<long long>(width),
        static_cast<long long>(memory.num_trainable), static_cast<long long>(memory.num_frozen),
        times[times.size() / 2], times.front(), static_cast<double>(bytes) / (1 << 20),
        static_cast<double>(memory.frozen_shards + memory.masters + memory.grads + memory.optimizer) / (1 << 20),
        rss_max, rss_min);
  }
  model->set_block_runner({});
  cvx::mpi_finalize();
  return 0;
}
