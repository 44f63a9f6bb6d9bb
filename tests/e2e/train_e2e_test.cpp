// cvx_train as users run it (mpirun, INI config, the store cvx_precompute wrote), on tiny models
// from cvx_make_tiny and synthetic FFmpeg videos: it trains (the loss of an overfit falls),
// checkpoints, resumes exactly, gives the same losses on 1, 2 and 4 ranks, and exports what
// cvx_generate loads; bad configurations fail before any heavy work, naming the option.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "cvx/dist/fake_communicator.h"
#include "cvx/dist/fsdp_engine.h"
#include "cvx/dist/sharded_state.h"
#include "cvx/io/model_folder.h"
#include "cvx/io/safetensors.h"
#include "cvx/model/transformer.h"
#include "test_util.h"
#include "train_fixture.h"

namespace fs = std::filesystem;
using cvx::test::built_program;
using cvx::test::fixture;
using cvx::test::Fixture;
using cvx::test::mpirun;
using cvx::test::run_command;
using cvx::test::shell_quote;
using cvx::test::train;
using cvx::test::TrainRun;

namespace {

double mean(const std::vector<double>& v, size_t first, size_t count) {
  double s = 0;
  for (size_t i = first; i < first + count; ++i) s += v[i];
  return s / static_cast<double>(count);
}

}  // namespace

TEST(TrainE2E, LoraOverfitOfTwoSamplesLowersTheLossAndWritesCheckpointsAndTheExport) {
  const Fixture& f = fixture("5b", 2);
  const auto out = cvx::test::scratch_dir("train_overfit") / "run";
  // Two samples, the posterior mean and a high learning rate: the loss must fall. Timesteps stay
  // random, so compare the mean of the first and last steps over several steps each.
  const TrainRun r = train(f, 2, out,
                           "--train.train_steps 40 --train.checkpointing_steps 20 --train.latent_sampling mean "
                           "--train.learning_rate 5e-3 --lora.rank 8 --lora.alpha 8");
  ASSERT_EQ(r.rc, 0) << r.output;
  ASSERT_EQ(r.metrics.size(), 40u) << r.output;
  // The overfit itself with full fine-tuning: the tiny LoRA (rank 8 on attention only) barely moves
  // the x0-weighted loss in 40 steps, the full model does (measured: 1.38 -> 0.41 on 4 samples).
  const TrainRun sft = train(f, 2, out.parent_path() / "sft",
                             "--train.training_type sft --train.train_steps 40 --train.latent_sampling mean "
                             "--train.learning_rate 2e-3");
  ASSERT_EQ(sft.rc, 0) << sft.output;
  ASSERT_EQ(sft.metrics.size(), 40u);
  const auto losses = sft.losses();
  const double first = mean(losses, 0, 8), last = mean(losses, 32, 8);
  EXPECT_LT(last, 0.6 * first) << "the loss of an overfit of 2 samples falls below 60% of its start";
  for (const char* step : {"checkpoint-20", "checkpoint-40"}) {
    EXPECT_TRUE(fs::exists(out / step / "trainer_state.json")) << step;
    EXPECT_TRUE(fs::exists(out / step / "state" / "layout.json")) << step;
    EXPECT_TRUE(fs::exists(out / step / "pytorch_lora_weights.safetensors")) << step;
    EXPECT_TRUE(fs::exists(out / step / "rng" / "rank-1.safetensors")) << step;
    EXPECT_TRUE(fs::exists(out / step / "config.ini")) << step;
  }
  EXPECT_TRUE(fs::exists(out / "pytorch_lora_weights.safetensors"));
  EXPECT_NE(r.output.find("step 40/40 | epoch"), std::string::npos) << "the fixed-field step line";
  EXPECT_NE(r.output.find("TFLOP/s"), std::string::npos);
  for (const char* key : {"loss", "grad_norm", "lr", "step_seconds", "data_wait_seconds", "peak_memory_bytes",
                          "samples_per_second", "tokens_per_second", "tflops", "eta_seconds"})
    EXPECT_TRUE(r.metrics.back().contains(key)) << key;

  // The export loads in cvx_generate and changes what it renders.
  const auto gen = out.parent_path() / "gen";
  std::string base_out, lora_out;
  const std::string generate = shell_quote(built_program("cvx_generate")) + " --model_path " + shell_quote(f.model) +
                               " --prompt 'a test pattern' --height 48 --width 64 --num_frames 9 "
                               "--num_inference_steps 2 --dtype fp32 --save_frames --seed 3 --output ";
  ASSERT_EQ(run_command(generate + shell_quote(gen / "base.mp4"), &base_out), 0) << base_out;
  ASSERT_EQ(run_command(generate + shell_quote(gen / "lora.mp4") + " --lora_path " +
                            shell_quote(out / "pytorch_lora_weights.safetensors"),
                        &lora_out),
            0)
      << lora_out;
  std::ifstream a(gen / "base_frames" / "frame_0004.png", std::ios::binary),
      b(gen / "lora_frames" / "frame_0004.png", std::ios::binary);
  const std::string pa((std::istreambuf_iterator<char>(a)), {}), pb((std::istreambuf_iterator<char>(b)), {});
  ASSERT_FALSE(pa.empty());
  EXPECT_NE(pa, pb) << "the trained LoRA changes the generated frames";
}

// What a person watches a run with: TensorBoard's event file carries metrics.jsonl's losses (as the
// float32 TensorBoard stores), loss.png is drawn after the checkpoints, and the log has one plain
// line per step (mpirun's output is no terminal).
TEST(TrainE2E, RunFolderHasTensorBoardEventsWithTheMetricsLossesAndALossPlot) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("train_monitoring") / "run";
  const TrainRun r = train(f, 2, dir, "--train.train_steps 3 --train.checkpointing_steps 2 --train.plot_metrics true");
  ASSERT_EQ(r.rc, 0) << r.output;
  ASSERT_EQ(r.metrics.size(), 3u);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir / "tensorboard")) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u) << "one event file, written by rank 0 only";
  EXPECT_EQ(files[0].filename().string().rfind("events.out.tfevents.", 0), 0u) << files[0];
  std::string output;
  const auto events = cvx::test::read_tfevents(files, &output);
  ASSERT_TRUE(events) << output;
  std::vector<int64_t> steps;
  std::vector<float> losses;
  std::set<std::string> tags;
  for (const auto& s : (*events)["scalars"]) {
    tags.insert(s["tag"].get<std::string>());
    if (s["tag"] != "train/loss") continue;
    steps.push_back(s["step"].get<int64_t>());
    losses.push_back(static_cast<float>(s["value"].get<double>()));
  }
  ASSERT_EQ(steps, (std::vector<int64_t>{1, 2, 3}));
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(losses[i], static_cast<float>(r.metrics[i]["loss"].get<double>())) << "step " << i + 1;
  for (const char* tag : {"train/lr", "train/grad_norm", "perf/step_seconds", "perf/data_wait_seconds",
                          "perf/tokens_per_second", "perf/tflops", "memory/peak_gib"})
    EXPECT_TRUE(tags.count(tag)) << tag;

  std::ifstream log_file(dir / "log.txt");
  const std::string log((std::istreambuf_iterator<char>(log_file)), {});
  for (const std::string* text : {&log, &r.output}) {
    EXPECT_EQ(text->find('\r'), std::string::npos) << "no progress line outside a terminal";
    EXPECT_NE(text->find("step 3/3 | epoch"), std::string::npos) << "the fixed-field step line";
  }

  if (run_command(std::string(CVX_PYTHON3) + " -c 'import matplotlib'") != 0)
    GTEST_SKIP() << CVX_PYTHON3 << " has no matplotlib (apt install python3-matplotlib): loss.png not checked";
  std::ifstream png(dir / "loss.png", std::ios::binary);
  std::string magic(8, '\0');
  png.read(magic.data(), 8);
  std::ifstream plot_log(dir / "plot_metrics.log");
  EXPECT_EQ(magic, std::string("\x89PNG\r\n\x1a\n", 8)) << "loss.png after the checkpoints; plot_metrics.log:\n"
                                                        << std::string((std::istreambuf_iterator<char>(plot_log)), {});
  EXPECT_EQ(r.output.find("no loss plots"), std::string::npos) << r.output;
}

TEST(TrainE2E, StoppedAndResumedRunReproducesTheUninterruptedLossCurveBitwise) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("train_resume");
  const std::string args =
      "--train.train_steps 6 --train.checkpointing_steps 3 --lora.dropout 0.1 "
      "--train.lr_scheduler cosine --train.lr_warmup_steps 2";
  const TrainRun full = train(f, 2, dir / "full", args);
  ASSERT_EQ(full.rc, 0) << full.output;
  ASSERT_EQ(full.metrics.size(), 6u);
  const TrainRun resumed = train(
      f, 2, dir / "resumed", args + " --train.resume_from_checkpoint " + shell_quote(dir / "full" / "checkpoint-3"));
  ASSERT_EQ(resumed.rc, 0) << resumed.output;
  ASSERT_EQ(resumed.metrics.size(), 3u) << resumed.output;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(resumed.metrics[i]["step"], full.metrics[i + 3]["step"]);
    EXPECT_EQ(resumed.metrics[i]["loss"].get<double>(), full.metrics[i + 3]["loss"].get<double>()) << "step " << i + 4;
    EXPECT_EQ(resumed.metrics[i]["grad_norm"].get<double>(), full.metrics[i + 3]["grad_norm"].get<double>());
    EXPECT_EQ(resumed.metrics[i]["lr"].get<double>(), full.metrics[i + 3]["lr"].get<double>());
  }
  // The same run folder resumed with `latest`: the interrupted run's later lines are replaced.
  fs::remove_all(dir / "full" / "checkpoint-6");
  const TrainRun latest = train(f, 2, dir / "full", args + " --train.resume_from_checkpoint latest");
  ASSERT_EQ(latest.rc, 0) << latest.output;
  ASSERT_EQ(latest.metrics.size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(latest.metrics[i]["loss"].get<double>(), full.metrics[i]["loss"].get<double>());
}

TEST(TrainE2E, CheckpointOfFourRanksResumesOnTwo) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("train_reshard");
  // Global batch 4 on both world sizes (4 x 1 and 2 x 2), so the runs are the same computation.
  const TrainRun four =
      train(f, 4, dir / "four", "--train.train_steps 4 --train.checkpointing_steps 2 --train.batch_size 1");
  ASSERT_EQ(four.rc, 0) << four.output;
  const TrainRun two = train(f, 2, dir / "two",
                             "--train.train_steps 4 --train.batch_size 2 --train.resume_from_checkpoint " +
                                 shell_quote(dir / "four" / "checkpoint-2"));
  ASSERT_EQ(two.rc, 0) << two.output;
  ASSERT_EQ(two.metrics.size(), 2u);
  // Same samples and draws, other summation order: fp32 rounding only (tolerance as below).
  for (size_t i = 0; i < 2; ++i)
    EXPECT_NEAR(two.metrics[i]["loss"].get<double>(), four.metrics[i + 2]["loss"].get<double>(),
                1e-5 * std::abs(four.metrics[i + 2]["loss"].get<double>()));
}

TEST(TrainE2E, LoraAndSftGiveTheSameLossesOnOneTwoAndFourRanksForTheSameGlobalBatch) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("train_world_sizes");
  for (const std::string type : {"lora", "sft"}) {
    std::map<int, TrainRun> runs;
    for (const int np : {1, 2, 4}) {
      runs[np] = train(f, np, dir / (type + std::to_string(np)),
                       "--train.training_type " + type + " --train.train_steps 3 --train.batch_size " +
                           std::to_string(4 / np) + (type == "sft" ? " --train.learning_rate 1e-4" : ""));
      ASSERT_EQ(runs[np].rc, 0) << runs[np].output;
      ASSERT_EQ(runs[np].metrics.size(), 3u);
    }
    // The same samples with the same draws on every world size; only the order in which fp32
    // gradients are summed differs (reduce-scatter vs local), ~1e-7 relative per step, amplified by
    // AdamW's normalisation on later steps: 1e-4 relative bounds it with margin.
    for (const int np : {2, 4})
      for (size_t s = 0; s < 3; ++s) {
        const double a = runs[1].metrics[s]["loss"].get<double>(), b = runs[np].metrics[s]["loss"].get<double>();
        EXPECT_NEAR(b, a, 1e-4 * std::abs(a)) << type << " np " << np << " step " << s + 1;
      }
  }
}

// I2V with the per-step image encode: each rank reads its samples' conditioning images from the
// store and draws their image noise from the samples' own generators, so 1 and 2 ranks agree (same
// tolerance and reason as above).
TEST(TrainE2E, ImageToVideoEncodeGivesTheSameLossesOnOneAndTwoRanks) {
  const Fixture& f = fixture("5b-i2v");
  const auto dir = cvx::test::scratch_dir("train_world_sizes_i2v");
  std::map<int, TrainRun> runs;
  for (const int np : {1, 2}) {
    runs[np] = train(f, np, dir / std::to_string(np),
                     "--train.train_steps 3 --train.enable_tiling false --train.batch_size " + std::to_string(2 / np));
    ASSERT_EQ(runs[np].rc, 0) << runs[np].output;
    ASSERT_EQ(runs[np].metrics.size(), 3u);
    EXPECT_NE(runs[np].output.find("encoded every step"), std::string::npos) << runs[np].output;
  }
  for (size_t s = 0; s < 3; ++s) {
    const double a = runs[1].metrics[s]["loss"].get<double>(), b = runs[2].metrics[s]["loss"].get<double>();
    EXPECT_NEAR(b, a, 1e-4 * std::abs(a)) << "step " << s + 1;
  }
}

TEST(TrainE2E, SftExportIsADiffusersTransformerFolderEqualToTheTrainedWeights) {
  const Fixture& f = fixture("1.5-t2v");
  const auto dir = cvx::test::scratch_dir("train_sft_export");
  const TrainRun r = train(f, 2, dir / "run",
                           "--train.training_type sft --train.train_steps 2 --train.learning_rate 1e-4 "
                           "--train.export_dtype fp32 --train.export_pipeline " +
                               shell_quote(dir / "pipeline"));
  ASSERT_EQ(r.rc, 0) << r.output;
  const auto exported = cvx::load_transformer(dir / "run" / "transformer");
  const auto base = cvx::load_transformer(f.model / "transformer");
  // The trained weights: the last checkpoint's fp32 masters, read back through a 1-rank engine.
  cvx::CogVideoXTransformer model(base->config, cvx::ModuleInit::unmaterialized(torch::kFloat32));
  for (auto& p : model->parameters()) p.set_requires_grad(true);
  cvx::FakeCommunicator world(0, 1);
  cvx::FsdpOptions options;
  options.precision.param_dtype = torch::kFloat32;
  cvx::FsdpEngine engine(model->sharding_units(), world, options, torch::kCPU);
  engine.load(*cvx::open_component(f.model / "transformer", "", true).weights);
  cvx::load_sharded_state(dir / "run" / "checkpoint-2" / "state", engine, nullptr);
  std::map<std::string, torch::Tensor> trained;
  cvx::gather_full_state(engine, [&](const std::string& n, const torch::Tensor& v) { trained[n] = v.clone(); });
  const auto exported_state = cvx::module_state(*exported);
  ASSERT_EQ(exported_state.size(), trained.size());
  int64_t changed = 0;
  const auto base_state = cvx::module_state(*base);
  for (size_t i = 0; i < exported_state.size(); ++i) {
    const auto& [name, value] = exported_state[i];
    ASSERT_TRUE(trained.count(name)) << name;
    EXPECT_TRUE(torch::equal(value, trained[name])) << name;
    if (!torch::equal(value, base_state[i].second)) ++changed;
  }
  EXPECT_GT(changed, static_cast<int64_t>(exported_state.size()) / 2) << "SFT changes most tensors";
  EXPECT_TRUE(fs::exists(dir / "pipeline" / "transformer" / "config.json"));
  EXPECT_TRUE(fs::exists(dir / "pipeline" / "vae"));
  EXPECT_TRUE(fs::exists(dir / "pipeline" / "model_index.json"));
}

TEST(TrainE2E, EveryVariantTrainsTextAndImageToVideo) {
  for (const std::string variant : {"2b", "1.5-t2v", "5b-i2v", "1.5-i2v"}) {
    const Fixture& f = fixture(variant);
    const auto dir = cvx::test::scratch_dir("train_variant");
    for (const std::string mode : {"encode", "cached"}) {
      if (!f.i2v && mode == "cached") continue;
      // The tiny VAE's tiles (16x24 px, from its 32x48 sample size) leave edge tiles of 48x64 frames
      // too small for its three downsamplings, as diffusers' tiled_encode would: encode whole frames
      // (tiling itself is tested against diffusers by the VAE golden cases).
      const TrainRun r =
          train(f, 2, dir / mode, "--train.train_steps 2 --train.enable_tiling false --train.image_latents " + mode);
      ASSERT_EQ(r.rc, 0) << variant << " " << mode << "\n" << r.output;
      ASSERT_EQ(r.metrics.size(), 2u) << variant;
      for (const auto& m : r.metrics) EXPECT_TRUE(std::isfinite(m["loss"].get<double>())) << variant;
      if (f.i2v)
        EXPECT_NE(r.output.find(mode == "encode" ? "encoded every step" : "cached image latents"), std::string::npos)
            << r.output;
    }
  }
  // With tiling (the default) those tiles fail: the error names the tiles and the option.
  const TrainRun tiled =
      train(fixture("5b-i2v"), 2, cvx::test::scratch_dir("train_variant") / "tiled", "--train.train_steps 1");
  EXPECT_NE(tiled.rc, 0);
  EXPECT_NE(tiled.output.find("tiles of 16x24 px"), std::string::npos) << tiled.output;
  EXPECT_NE(tiled.output.find("enable_tiling = false"), std::string::npos) << tiled.output;
}

TEST(TrainE2E, BadConfigurationsFailBeforeAnyHeavyWorkNamingTheOptionAndTheFix) {
  const Fixture& f = fixture("5b");
  const auto dir = cvx::test::scratch_dir("train_bad");
  const Fixture& other = fixture("1.5-t2v");
  struct Case {
    std::string args, expected;
  };
  const std::vector<Case> cases{
      {"--data.train_resolution 10x48x64", "train_resolution"},
      {"--data.train_resolution 9x40x64", "multiple"},
      {"--data.train_resolution 9x64x96", "height"},  // a store made for another size
      {"--model.path " + shell_quote(other.model), "model_fingerprint"},
      {"--data.store " + shell_quote(dir / "missing.h5"), "cvx_precompute --config"},
      {"--train.batch_size 3", "batch_size"},
      {"--lora.rank 0", "rank must be > 0"},
      {"--lora.alpha -1", "alpha must be > 0"},
      {"--lora.target_modules to_q,to_nothing", "to_nothing"},
      {"--train.resume_from_checkpoint " + shell_quote(dir / "checkpoint-7"), "resume_from_checkpoint"},
  };
  for (const auto& c : cases) {
    const TrainRun r = train(f, 2, dir / "run", c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_EQ(r.output.find("tensors,"), std::string::npos) << "no weights loaded for: " << c.args;
  }
}
