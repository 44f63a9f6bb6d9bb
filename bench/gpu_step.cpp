// One rank's training step of a real-size CogVideoX transformer with random weights (the FLOPs and
// memory of the released models), on a CUDA device or the CPU: the cvx half of the GPU benchmark
// (bench/gpu_official_step.py is the official stack's half; tools/gpu/run.sh runs both).
//
// The other ranks of a sharded world are played by FakeCommunicator (dist/fake_communicator.h):
// `--world N` gives this rank the shards, gathers and reduce-scatters of rank 0 of N, so its
// memory is what a rank of a real N-rank job holds; `--sequence P` splits the sample's video tokens
// P ways (Ulysses) within that world, and this rank computes its slice (1/P of the step's work).
// Prints the memory plan's estimate for the same setting beside the measurement, and one
// `RESULT {json}` line.
//
// usage: bench_gpu_step --variant 1.5-t2v --frames 81 --height 768 --width 1360 [--training_type lora|sft]
//        [--sharding full|grad_optimizer] [--world 8] [--sequence 1] [--steps 5] [--warmup 2]
//        [--checkpointing 1] [--lora_rank 128] [--lora_alpha 64] [--layers 0 (= the model's)]
//        [--device cuda|cpu] [--json FILE]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "cvx/core/device_memory.h"
#include "cvx/core/error.h"
#include "cvx/core/format_bytes.h"
#include "cvx/core/module_lock.h"
#include "cvx/dist/fake_communicator.h"
#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/sequence_parallel.h"
#include "cvx/dist/sharded_adamw.h"
#include "cvx/model/attention.h"
#include "cvx/model/lora.h"
#include "cvx/model/module_init.h"
#include "cvx/model/transformer.h"
#include "cvx/train/memory_plan.h"
#include "cvx/train/step_flops.h"
#include "cvx/train/trainer.h"
#include "cvx/train/training_loss.h"

#ifdef CVX_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <torch/cuda.h>
#endif

namespace {

struct Args {
  std::string variant = "1.5-t2v", training_type = "lora", sharding = "full", device = "cuda", json;
  int64_t frames = 81, height = 768, width = 1360, world = 1, sequence = 1, steps = 5, warmup = 2;
  int64_t checkpointing = 1, lora_rank = 128, lora_alpha = 64, layers = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  std::map<std::string, std::string*> text{{"--variant", &a.variant},
                                           {"--training_type", &a.training_type},
                                           {"--sharding", &a.sharding},
                                           {"--device", &a.device},
                                           {"--json", &a.json}};
  std::map<std::string, int64_t*> numbers{{"--frames", &a.frames},       {"--height", &a.height},
                                          {"--width", &a.width},         {"--world", &a.world},
                                          {"--sequence", &a.sequence},   {"--steps", &a.steps},
                                          {"--warmup", &a.warmup},       {"--checkpointing", &a.checkpointing},
                                          {"--lora_rank", &a.lora_rank}, {"--lora_alpha", &a.lora_alpha},
                                          {"--layers", &a.layers}};
  for (int i = 1; i < argc; i += 2) {
    const std::string key = argv[i];
    CVX_CHECK_AS(cvx::ConfigError, i + 1 < argc, key, " needs a value");
    if (const auto t = text.find(key); t != text.end()) {
      *t->second = argv[i + 1];
    } else if (const auto n = numbers.find(key); n != numbers.end()) {
      *n->second = std::stoll(argv[i + 1]);
    } else {
      CVX_THROW_AS(cvx::ConfigError, "unknown option ", key, " (see the usage at the top of bench/gpu_step.cpp)");
    }
  }
  CVX_CHECK_AS(cvx::ConfigError, a.training_type == "lora" || a.training_type == "sft", "--training_type lora|sft");
  CVX_CHECK_AS(cvx::ConfigError, a.world >= 1 && a.sequence >= 1 && a.world % a.sequence == 0,
               "--sequence must divide --world");
  return a;
}

void synchronize(const torch::Device& device) {
#ifdef CVX_WITH_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
#endif
  (void)device;
}

double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

// The memory plan's per-rank total for the same setting (what cvx_train --dry_run prints).
double planned_bytes(const Args& a, const cvx::TransformerConfig& tc) {
  cvx::TrainRunConfig config;
  config.model.variant = a.variant;
  config.model.path = "/nonexistent";  // the variant's preset, as a dry run without the weights
  config.data.train_resolution =
      std::to_string(a.frames) + "x" + std::to_string(a.height) + "x" + std::to_string(a.width);
  config.train.training_type = a.training_type;
  config.train.gradient_checkpointing = a.checkpointing != 0;
  config.lora.rank = a.lora_rank;
  config.lora.alpha = static_cast<double>(a.lora_alpha);
  config.parallel.sharding = a.sharding;
  config.parallel.sequence_parallel_size = a.sequence;
  (void)tc;
  const std::string report = cvx::plan_memory_report(config, static_cast<int>(a.world));
  std::fprintf(stderr, "%s\n", report.c_str());
  std::smatch m;
  if (!std::regex_search(report, m, std::regex(R"(\n  total\s+([0-9.]+) (B|KiB|MiB|GiB))"))) return -1;
  const double value = std::stod(m[1]);
  const std::string unit = m[2];
  return value * (unit == "GiB" ? 1073741824.0 : unit == "MiB" ? 1048576.0 : unit == "KiB" ? 1024.0 : 1.0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    const torch::Device device(a.device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU));
    CVX_CHECK_AS(cvx::ConfigError, !device.is_cuda() || torch::cuda::is_available(), "--device cuda: no CUDA device");
    const torch::Dtype dtype = torch::kBFloat16;
    cvx::TransformerConfig tc = cvx::transformer_preset(a.variant);
    if (a.layers > 0) tc.num_layers = a.layers;
    cvx::check_sequence_parallel_size(tc.num_attention_heads, static_cast<int>(a.sequence));
    const double planned = a.layers > 0 ? -1 : planned_bytes(a, tc);

    cvx::CogVideoXTransformer model(tc, cvx::ModuleInit::unmaterialized(dtype, device));
    const bool lora = a.training_type == "lora";
    if (lora) {
      cvx::LoraConfig config;
      config.rank = a.lora_rank;
      config.alpha = static_cast<double>(a.lora_alpha);
      cvx::inject_lora(*model, config, torch::kFloat32, /*materialize=*/false);
      cvx::mark_only_lora_trainable(*model);
    } else {
      for (auto& p : model->parameters()) p.set_requires_grad(true);
    }
    cvx::FakeCommunicator shard(0, static_cast<int>(a.world), {}, "shard");
    cvx::FakeCommunicator sequence(0, static_cast<int>(a.sequence), {}, "sequence");
    cvx::FsdpOptions options;
    options.strategy = cvx::parse_sharding_strategy(a.sharding);
    options.precision.param_dtype = dtype;
    options.precision.reduce_dtype = torch::kFloat32;
    options.recompute = a.checkpointing != 0;
    cvx::FsdpEngine engine(model->sharding_units(), shard, options, device);
    engine.initialize([](const std::string&, torch::Tensor& values) { values.normal_(0.0, 0.02); });
    model->set_compute_dtype(dtype);
    model->set_block_runner(engine.runner());
    std::vector<cvx::ShardedAdamW::Param> params;
    for (auto& s : engine.trainable_shards()) params.push_back({s.id, s.master, s.grad});
    cvx::ShardedAdamW optimizer(params, {});

    // One sample: clean latents [1, C, F', h, w], 226 text embeddings, the trainer's draws.
    const int64_t latent_frames = (a.frames - 1) / 4 + 1, h = a.height / 8, w = a.width / 8;
    const int64_t channels = tc.out_channels;
    auto gen = at::detail::createCPUGenerator(1);
    cvx::LossInputs inputs;
    inputs.latents = torch::randn({1, channels, latent_frames, h, w}, gen).to(device);
    inputs.prompt_embeds = torch::randn({1, tc.max_text_seq_length, tc.text_embed_dim}, gen).to(device);
    const cvx::LossDraws draws =
        cvx::draw_loss_randoms(gen, tc, 1, channels, latent_frames, h, w, a.height, a.width, false, false, 0.0);
    CVX_CHECK_AS(cvx::ConfigError, !tc.is_i2v(), "bench_gpu_step measures the T2V variants (the I2V step differs ",
                 "only in the input channels)");
    cvx::CogVideoXScheduler scheduler(cvx::SchedulerConfig{});
    cvx::LossOptions loss_options;
    cvx::StepGeometry geometry;
    geometry.latent_frames = cvx::padded_latent_frames(tc, latent_frames);
    geometry.latent_height = h;
    geometry.latent_width = w;
    geometry.text_tokens = tc.max_text_seq_length;
    const int64_t tokens = cvx::video_tokens(tc, geometry);
    const auto lengths = cvx::sequence_split(tokens, static_cast<int>(a.sequence));
    if (a.sequence > 1) {
      loss_options.token_slice = {0, lengths[0]};
      model->set_attention_runner(
          [&](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t text_len) {
            return cvx::ulysses_attention(q, k, v, text_len, sequence, lengths, cvx::scaled_dot_product_attention);
          });
    }

    std::vector<double> seconds;
    for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
#ifdef CVX_WITH_CUDA
      if (s == a.warmup && device.is_cuda()) cvx::reset_cuda_peak_memory(device.index());
#endif
      synchronize(device);
      const auto start = std::chrono::steady_clock::now();
      engine.zero_grad();
      const cvx::LossOutputs out = cvx::compute_training_loss(model, scheduler, inputs, draws, loss_options);
      engine.backward(out.loss * static_cast<double>(a.sequence));
      engine.clip_grad_norm(1.0);
      optimizer.step(1e-4);
      engine.after_optimizer_step();
      synchronize(device);
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "step %lld: %.3f s, loss %.5f\n", static_cast<long long>(s + 1), t, out.loss.item<double>());
      if (s >= a.warmup) seconds.push_back(t);
    }
    std::vector<double> sorted = seconds;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted.empty() ? 0 : sorted[sorted.size() / 2];
    // This rank's executed work: its 1/P of the sample (projections on its tokens, attention over
    // all tokens with H / P heads).
    const double flops =
        cvx::training_step_flops(tc, geometry, !lora, a.checkpointing != 0) / static_cast<double>(a.sequence);
    double peak = peak_rss_bytes(), peak_tflops = 0;
    std::string device_name = "cpu", memory_kind = "peak RSS";
#ifdef CVX_WITH_CUDA
    if (device.is_cuda()) {
      peak = static_cast<double>(cvx::cuda_peak_allocated_bytes(device.index()));
      device_name = at::cuda::getDeviceProperties(device.index())->name;
      memory_kind = "CUDA max allocated";
    }
#endif
    peak_tflops = cvx::device_peak_tflops(device_name);
    const double tflops = median > 0 ? flops / median / 1e12 : 0;
    nlohmann::json result{{"stack", "cvx"},
                          {"variant", a.variant},
                          {"frames", a.frames},
                          {"height", a.height},
                          {"width", a.width},
                          {"video_tokens", tokens},
                          {"training_type", a.training_type},
                          {"sharding", a.sharding},
                          {"world", a.world},
                          {"sequence", a.sequence},
                          {"checkpointing", a.checkpointing != 0},
                          {"lora_rank", lora ? a.lora_rank : 0},
                          {"layers", tc.num_layers},
                          {"device", device_name},
                          {"step_seconds_median", median},
                          {"step_seconds_all", seconds},
                          {"tflops_executed", tflops},
                          {"mfu", peak_tflops > 0 ? tflops / peak_tflops : -1.0},
                          {"memory_kind", memory_kind},
                          {"peak_memory_gib", peak / 1073741824.0},
                          {"planned_memory_gib", planned > 0 ? planned / 1073741824.0 : -1.0}};
    std::printf("RESULT %s\n", result.dump().c_str());
    if (!a.json.empty()) std::ofstream(a.json) << result.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_step: %s\n", e.what());
    nlohmann::json failure{{"stack", "cvx"}, {"error", e.what()}};
    std::printf("RESULT %s\n", failure.dump().c_str());
    return 1;
  }
}
