// cvx_train --dry_run --simulate_world_size N on the real-size configs, without any weights: the
// per-rank memory report is printed, every figure equals its printed formula, and the formula's
// inputs are what the model and the LoRA configuration imply.
#include <gtest/gtest.h>

#include <regex>

#include "cvx/core/tensor_storage.h"
#include "cvx/io/model_folder.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

struct ReportLine {
  std::string item;
  double bytes = 0;    // as printed (rounded to 2 decimals of its unit)
  double formula = 0;  // the printed right-hand side, evaluated
  std::string text;
};

double printed_bytes(double value, const std::string& unit) {
  const std::map<std::string, double> scale{
      {"B", 1}, {"KiB", 1024.0}, {"MiB", 1024.0 * 1024}, {"GiB", 1024.0 * 1024 * 1024}};
  return value * scale.at(unit);
}

// "2 x 5,570,687,488 / 8" or "34 x 1 x 45106 x 3072 x 2/2": products and one optional division.
double evaluate(std::string expr) {
  expr.erase(std::remove(expr.begin(), expr.end(), ','), expr.end());
  double value = 1, divisor = 1;
  bool dividing = false;
  std::string token;
  std::istringstream in(std::regex_replace(expr, std::regex("/"), " / "));
  while (in >> token) {
    if (token == "x") continue;
    if (token == "/") {
      dividing = true;
      continue;
    }
    (dividing ? divisor : value) *= std::stod(token);
    dividing = false;
  }
  return value / divisor;
}

std::vector<ReportLine> parse_report(const std::string& out) {
  std::vector<ReportLine> lines;
  const std::regex row(R"(^  (.+?)\s+([0-9.]+) (B|KiB|MiB|GiB)\s+(.*= )?(.*)$)");
  std::istringstream in(out);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.find("memory per rank:") != std::string::npos) inside = true;
    if (!inside) continue;
    std::smatch m;
    if (std::regex_match(line, m, row)) {
      ReportLine r{m[1], printed_bytes(std::stod(m[2]), m[3]), 0, line};
      if (r.item != "total") r.formula = evaluate(m[5]);
      lines.push_back(r);
      if (r.item == "total") break;
    }
  }
  return lines;
}

int64_t parsed_count(const std::string& out, const std::string& symbol) {
  const std::regex pattern(symbol + R"( = ([0-9,]+) )");
  std::smatch m;
  if (!std::regex_search(out, m, pattern)) return -1;
  std::string digits = m[1];
  digits.erase(std::remove(digits.begin(), digits.end(), ','), digits.end());
  return std::stoll(digits);
}

std::string dry_run(const std::string& config, const std::string& extra) {
  const fs::path dir = cvx::test::scratch_dir("train_dry_run");
  std::string out;
  const std::string command = cvx::test::shell_quote(cvx::test::built_program("cvx_train")) + " --config " +
                              cvx::test::shell_quote(fs::path(CVX_SOURCE_DIR) / "configs" / config) +
                              " --dry_run --simulate_world_size 8 --output_dir " + cvx::test::shell_quote(dir / "run") +
                              " " + extra;
  EXPECT_EQ(cvx::test::run_command(command, &out), 0) << out;
  return out;
}

int64_t model_numel(const std::string& variant) {
  cvx::CogVideoXTransformer m(cvx::transformer_preset(variant), cvx::ModuleInit::unmaterialized(torch::kBFloat16));
  int64_t n = 0;
  for (const auto& [name, t] : cvx::module_state(*m)) n += t.numel();
  return n;
}

void expect_figures_match_formulas(const std::vector<ReportLine>& lines) {
  ASSERT_GE(lines.size(), 6u);
  double sum = 0;
  for (const auto& l : lines) {
    if (l.item == "total") {
      EXPECT_NEAR(l.bytes, sum, 0.01 * sum) << l.text;
      continue;
    }
    // Printed with two decimals in its unit: within 0.5% (or 10 bytes).
    EXPECT_NEAR(l.bytes, l.formula, std::max(10.0, 0.005 * l.formula)) << l.text;
    sum += l.bytes;
  }
}

const ReportLine* find(const std::vector<ReportLine>& lines, const std::string& prefix) {
  for (const auto& l : lines)
    if (l.item.rfind(prefix, 0) == 0) return &l;
  return nullptr;
}

}  // namespace

TEST(TrainDryRun, LoraReportForEightRanksFollowsTheZero3Formula) {
  const std::string out = dry_run("cogvideox1.5_5b_lora_t2v.ini", "");
  EXPECT_NE(out.find("shard group N = 8, sharding full (ZeRO-3)"), std::string::npos) << out;
  EXPECT_NE(out.find("1.5-t2v preset"), std::string::npos) << out;
  const auto lines = parse_report(out);
  expect_figures_match_formulas(lines);
  // LoRA r128 on to_q, to_k, to_v, to_out.0 of 42 blocks of width 3072: 42 x 4 x 2 x 128 x 3072.
  EXPECT_EQ(parsed_count(out, "Ψt"), int64_t{42} * 4 * 2 * 128 * 3072);
  const int64_t psi_f = parsed_count(out, "Ψf");
  EXPECT_GE(psi_f, model_numel("1.5-t2v"));
  EXPECT_LE(psi_f, model_numel("1.5-t2v") + 43 * 8 * 64);  // + alignment padding of 43 units
  const auto* frozen = find(lines, "frozen shards");
  ASSERT_NE(frozen, nullptr);
  EXPECT_NEAR(frozen->bytes, 2.0 * psi_f / 8, 0.005 * frozen->bytes);
  const auto* gathered = find(lines, "gathered units");
  ASSERT_NE(gathered, nullptr);
  EXPECT_NE(gathered->item.find("prefetch"), std::string::npos);
}

TEST(TrainDryRun, FullFineTuningReportShardsEveryWeight) {
  const std::string out = dry_run("cogvideox1.5_5b_sft_t2v.ini", "");
  const auto lines = parse_report(out);
  expect_figures_match_formulas(lines);
  EXPECT_EQ(parsed_count(out, "Ψf"), 0);
  const int64_t psi_t = parsed_count(out, "Ψt");
  EXPECT_GE(psi_t, model_numel("1.5-t2v"));
  const auto* moments = find(lines, "AdamW moments");
  ASSERT_NE(moments, nullptr);
  EXPECT_NEAR(moments->bytes, 8.0 * psi_t / 8, 0.005 * moments->bytes);  // 8 B per element over 8 ranks
}

TEST(TrainDryRun, Zero2KeepsEveryBlockGathered) {
  const std::string zero3 = dry_run("cogvideox1.5_5b_lora_t2v.ini", "");
  const std::string zero2 = dry_run("cogvideox1.5_5b_lora_t2v.ini", "--sharding grad_optimizer");
  EXPECT_NE(zero2.find("sharding grad_optimizer (ZeRO-2)"), std::string::npos) << zero2;
  const auto l2 = parse_report(zero2), l3 = parse_report(zero3);
  expect_figures_match_formulas(l2);
  const auto* all = find(l2, "gathered units (all");
  const auto* two = find(l3, "gathered units");
  ASSERT_TRUE(all && two);
  EXPECT_NEAR(all->bytes / two->bytes, 42.0 / 2, 1.0);  // every one of the 42 blocks vs two at a time
  EXPECT_EQ(find(l2, "frozen shards")->bytes, find(l3, "frozen shards")->bytes);
}

// I2V with the official per-step image encode: every rank also keeps the VAE encoder, in the compute
// dtype; with cached image latents it does not.
TEST(TrainDryRun, ImageToVideoEncodeModeCountsTheVaeEncoder) {
  const std::string out = dry_run("cogvideox1.5_5b_lora_i2v.ini", "");
  const auto lines = parse_report(out);
  expect_figures_match_formulas(lines);
  const auto* encoder = find(lines, "I2V VAE encoder");
  ASSERT_NE(encoder, nullptr) << out;
  cvx::AutoencoderKLCogVideoX vae(cvx::vae_preset("1.5-i2v"), cvx::ModuleInit::unmaterialized(torch::kBFloat16));
  int64_t numel = 0;
  for (const auto& [name, t] : cvx::module_state(*vae->encoder)) numel += t.numel();
  EXPECT_NEAR(encoder->bytes, 2.0 * numel, 0.005 * encoder->bytes);  // bf16
  EXPECT_EQ(
      find(parse_report(dry_run("cogvideox1.5_5b_lora_i2v.ini", "--train.image_latents cached")), "I2V VAE encoder"),
      nullptr);
  EXPECT_EQ(find(parse_report(dry_run("cogvideox1.5_5b_lora_t2v.ini", "")), "I2V VAE encoder"), nullptr);
}

TEST(TrainDryRun, HybridShardingPlansOneReplicasShardGroup) {
  // 16 ranks as 2 replicas of 8 (the second --simulate_world_size wins): each rank holds what it
  // holds with 8 ranks, and the data-parallel world, hence the global batch, doubles.
  const std::string eight = dry_run("cogvideox1.5_5b_lora_t2v.ini", "");
  const std::string hybrid =
      dry_run("cogvideox1.5_5b_lora_t2v.ini", "--simulate_world_size 16 --parallel.replicate_size 2");
  EXPECT_NE(hybrid.find("(16 ranks = 2 replicas x 8 shards x 1 sequence) (simulated)"), std::string::npos) << hybrid;
  EXPECT_NE(hybrid.find("shard group N = 8, sharding full (ZeRO-3)"), std::string::npos) << hybrid;
  const auto total = [](const std::string& out) {
    std::smatch m;
    return std::regex_search(out, m, std::regex(R"(\n  total\s+([0-9.]+ \w+))")) ? std::string(m[1]) : "none";
  };
  EXPECT_NE(total(eight), "none") << eight;
  EXPECT_EQ(total(hybrid), total(eight));
  EXPECT_NE(hybrid.find("global batch 16 ="), std::string::npos) << hybrid;
  EXPECT_NE(eight.find("global batch 8 ="), std::string::npos) << eight;
}

TEST(TrainDryRun, SimulatedWorldWithoutDryRunIsRefused) {
  const fs::path dir = cvx::test::scratch_dir("train_dry_run_refused");
  std::string out;
  const std::string command =
      cvx::test::shell_quote(cvx::test::built_program("cvx_train")) + " --config " +
      cvx::test::shell_quote(fs::path(CVX_SOURCE_DIR) / "configs" / "cogvideox1.5_5b_lora_t2v.ini") +
      " --simulate_world_size 8 --output_dir " + cvx::test::shell_quote(dir / "run");
  EXPECT_NE(cvx::test::run_command(command, &out), 0) << out;
  EXPECT_NE(out.find("needs --dry_run"), std::string::npos) << out;
}
