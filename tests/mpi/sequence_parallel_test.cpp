// Ulysses sequence parallelism (dist/sequence_parallel.h) on 1, 2 and 4 ranks: the joint text +
// video attention with the video tokens split over the ranks equals attention on the whole
// sequence, forward and backward, for token counts that divide by the rank count and ones that do
// not (down to ranks holding no token); the transformer and the loss on token slices; sampling with
// a sequence group gives the latents of the whole model.
#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "cvx/dist/mpi_communicator.h"
#include "cvx/dist/sequence_parallel.h"
#include "cvx/model/attention.h"
#include "cvx/model/transformer.h"
#include "cvx/model/vae.h"
#include "cvx/pipeline/video_pipeline.h"
#include "cvx/train/training_loss.h"

namespace {

using cvx::MpiCommunicator;

// The plain math attention, fp32: what the split run must reproduce.
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  return torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1).matmul(v);
}

// Float32 attention with the same per-head arithmetic on a subset of heads: agreement to a few
// ulps of the values (~1e-6 relative); the summed text gradients add P partial sums in another
// order, hence the absolute floor.
void expect_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6)) << what << ": max difference " << (a - b).abs().max().item<double>();
}

// Parameter gradients are sums over every token; split over P ranks they are P partial sums added
// in another order, whose fp32 rounding scales with the largest summands, not with each element:
// agreement to 1e-5 of the tensor's largest magnitude.
void expect_close_sum(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = b.abs().max().item<double>();
  const double diff = (a - b).abs().max().item<double>();
  EXPECT_LE(diff, 1e-5 * scale + 1e-6) << what << ": max difference " << diff << " at magnitude " << scale;
}

}  // namespace

TEST(SequenceParallel, SplitGivesTheFirstRanksOneTokenMore) {
  EXPECT_EQ(cvx::sequence_split(11, 4), (std::vector<int64_t>{3, 3, 3, 2}));
  EXPECT_EQ(cvx::sequence_split(3, 4), (std::vector<int64_t>{1, 1, 1, 0}));
  EXPECT_EQ(cvx::sequence_split(17550, 8)[0], 2194);
  EXPECT_EQ(cvx::slice_offsets({3, 3, 3, 2}), (std::vector<int64_t>{0, 3, 6, 9}));
}

TEST(SequenceParallel, SizesThatDoNotDivideTheHeadsAreRefusedWithTheValidOnes) {
  EXPECT_NO_THROW(cvx::check_sequence_parallel_size(48, 8));
  try {
    cvx::check_sequence_parallel_size(48, 5);
    ADD_FAILURE() << "5 does not divide 48";
  } catch (const cvx::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("1, 2, 3, 4, 6, 8, 12, 16, 24, 48"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sequence_parallel_size = 5"), std::string::npos) << e.what();
  }
}

TEST(SequenceParallel, UlyssesAttentionEqualsWholeSequenceAttentionForwardAndBackward) {
  MpiCommunicator group(MPI_COMM_WORLD, "sequence");
  const int parts = group.size(), me = group.rank();
  const int64_t batch = 2, heads = 4, text = 5, dim = 8;
  for (const int64_t video : {int64_t{12}, int64_t{11}, int64_t{3}}) {
    // The same full tensors on every rank (one seed), and the reference on the whole sequence.
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(100 + video));
    const auto q = torch::randn({batch, heads, text + video, dim}, gen).requires_grad_();
    const auto k = torch::randn({batch, heads, text + video, dim}, gen).requires_grad_();
    const auto v = torch::randn({batch, heads, text + video, dim}, gen).requires_grad_();
    const auto weights = torch::randn({batch, heads, text + video, dim}, gen);
    const auto reference = attend(q, k, v);
    (reference * weights).sum().backward();

    // This rank's share: the text tokens (replicated) and its slice of the video tokens.
    const auto lengths = cvx::sequence_split(video, parts);
    const int64_t start = cvx::slice_offsets(lengths)[static_cast<size_t>(me)], mine = lengths[static_cast<size_t>(me)];
    const auto local = [&](const torch::Tensor& x) {
      return torch::cat({x.narrow(2, 0, text), x.narrow(2, text + start, mine)}, 2).detach().requires_grad_();
    };
    const auto lq = local(q), lk = local(k), lv = local(v);
    const auto out = cvx::ulysses_attention(lq, lk, lv, text, group, lengths, attend);
    const std::string label = std::to_string(video) + " video tokens on " + std::to_string(parts) + " ranks";
    expect_close(out, torch::cat({reference.narrow(2, 0, text), reference.narrow(2, text + start, mine)}, 2).detach(),
                 "output, " + label);
    // The total loss of the unsplit run: each rank's video tokens once, the replicated text 1/P each.
    const auto lw = torch::cat({weights.narrow(2, 0, text) / parts, weights.narrow(2, text + start, mine)}, 2);
    (out * lw).sum().backward();
    for (const auto& [name, mine_grad, full] :
         {std::tuple<std::string, torch::Tensor, torch::Tensor>{"q", lq, q}, {"k", lk, k}, {"v", lv, v}}) {
      // Video tokens: this rank's gradients are the unsplit ones; text: partial sums over the group.
      expect_close(mine_grad.grad().narrow(2, text, mine), full.grad().narrow(2, text + start, mine),
                   "d" + name + " of the video tokens, " + label);
      auto text_grad = mine_grad.grad().narrow(2, 0, text).contiguous();
      cvx::all_reduce(group, text_grad, cvx::ReduceOp::sum);
      expect_close(text_grad, full.grad().narrow(2, 0, text), "d" + name + " of the text tokens, " + label);
    }
  }
}

TEST(SequenceParallel, ExchangesAreEachOthersInverse) {
  MpiCommunicator group(MPI_COMM_WORLD, "sequence");
  const auto lengths = cvx::sequence_split(7, group.size());
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(7 + group.rank()));
  const auto x = torch::randn({1, 2 * group.size(), lengths[static_cast<size_t>(group.rank())], 3}, gen);
  const auto heads = cvx::sequence_to_heads(x, group, lengths);
  EXPECT_EQ(heads.sizes(), (std::vector<int64_t>{1, 2, 7, 3}));
  EXPECT_TRUE(torch::equal(cvx::heads_to_sequence(heads, group, lengths), x));
  // Text tokens are the same count on every rank: each rank's heads land at its place.
  const auto text = torch::randn({1, 2, 5, 3}, gen);
  const auto all = cvx::gather_heads(text, group);
  EXPECT_EQ(all.size(1), 2 * group.size());
  EXPECT_TRUE(torch::equal(all.narrow(1, 2 * group.rank(), 2), text));
}

// The model's second seam: the transformer run with its video tokens split over the ranks (each
// rank its contiguous slice, the attention runner doing Ulysses) gives the unsplit model's token
// outputs, and its parameter gradients summed over the group are the unsplit ones.
TEST(SequenceParallel, TransformerOnSplitTokensEqualsTheWholeModelWithSummedGradients) {
  MpiCommunicator group(MPI_COMM_WORLD, "sequence");
  const int parts = group.size(), me = group.rank();
  for (const std::string variant : {"2b", "5b", "1.5-t2v", "1.5-i2v"}) {
    cvx::TransformerConfig config = cvx::tiny_transformer(variant);
    config.num_attention_heads = 4;  // divisible by 1, 2 and 4 ranks
    torch::manual_seed(5);
    cvx::CogVideoXTransformer model(config);
    auto gen = at::detail::createCPUGenerator(9);
    const int64_t frames = config.patch_size_t ? 4 : (config.sample_frames - 1) / 4 + 1;
    const int64_t h = config.sample_height, w = config.sample_width;
    const auto latents = torch::randn({1, frames, config.in_channels, h, w}, gen);
    const auto text = torch::randn({1, 7, config.text_embed_dim}, gen);
    const auto t = torch::tensor({321}, torch::kLong);
    std::optional<torch::Tensor> ofs;
    if (config.ofs_embed_dim) ofs = torch::full({1}, 2.0);
    const auto rope = cvx::training_rotary_embedding(config, h, w, frames);
    const cvx::RotaryEmbedding* rope_ptr = rope.cos.defined() ? &rope : nullptr;

    const auto reference = model->forward_tokens(latents, text, t, ofs, rope_ptr);  // [1, N, K]
    const auto weights = torch::randn(reference.sizes(), gen);
    (reference * weights).sum().backward();
    std::vector<torch::Tensor> expected;
    for (auto& p : model->parameters()) {
      expected.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      p.mutable_grad().reset();
    }

    const int64_t num_tokens = reference.size(1);
    const auto lengths = cvx::sequence_split(num_tokens, parts);
    const int64_t start = cvx::slice_offsets(lengths)[static_cast<size_t>(me)], mine = lengths[static_cast<size_t>(me)];
    model->set_attention_runner([&](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t l) {
      return cvx::ulysses_attention(q, k, v, l, group, lengths, cvx::scaled_dot_product_attention);
    });
    const auto out = model->forward_tokens(latents, text, t, ofs, rope_ptr, {start, mine});
    const std::string label = variant + ", " + std::to_string(num_tokens) + " tokens on " + std::to_string(parts);
    expect_close(out, reference.narrow(1, start, mine).detach(), "token outputs, " + label);
    (out * weights.narrow(1, start, mine)).sum().backward();
    size_t i = 0;
    for (const auto& item : model->named_parameters()) {
      const auto& p = item.value();
      auto grad = p.grad().defined() ? p.grad().clone() : torch::zeros_like(p);
      cvx::all_reduce(group, grad, cvx::ReduceOp::sum);
      expect_close_sum(grad, expected[i++], "d" + item.key() + ", " + label);
    }
    model->set_attention_runner({});
  }
}

// The training loss on a slice of the tokens (LossOptions::token_slice): the slices' losses add up
// to the whole sample's loss, and their parameter gradients to its gradients (T2V and I2V, 1.0
// and 1.5, with the 1.5 frame padding; I2V from cached image latents, so no VAE).
TEST(SequenceParallel, LossOfTokenSlicesSumsToTheWholeLossAndGradients) {
  MpiCommunicator group(MPI_COMM_WORLD, "sequence");
  const int parts = group.size(), me = group.rank();
  for (const std::string variant : {"5b", "5b-i2v", "1.5-t2v", "1.5-i2v"}) {
    cvx::TransformerConfig config = cvx::tiny_transformer(variant);
    config.num_attention_heads = 4;
    torch::manual_seed(6);
    cvx::CogVideoXTransformer model(config);
    const cvx::CogVideoXScheduler scheduler(cvx::scheduler_config_5b());
    const int64_t channels = config.out_channels, frames = 3, h = config.sample_height, w = config.sample_width;
    auto gen = at::detail::createCPUGenerator(13);
    cvx::LossInputs inputs;
    inputs.latents = torch::randn({2, channels, frames, h, w}, gen);
    inputs.prompt_embeds = torch::randn({2, config.max_text_seq_length, config.text_embed_dim}, gen);
    if (config.is_i2v()) inputs.image_moments = torch::randn({2, 2 * channels, 1, h, w}, gen) * 0.5;
    const auto draws = cvx::draw_loss_randoms(gen, config, 2, channels, frames, h, w, 8 * h, 8 * w, config.is_i2v(),
                                              /*encode_images=*/false, 0.0);
    cvx::LossOptions options;
    options.i2v = config.is_i2v();

    const auto whole = cvx::compute_training_loss(model, scheduler, inputs, draws, options);
    whole.loss.backward();
    std::vector<torch::Tensor> expected;
    for (auto& p : model->parameters()) {
      expected.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      p.mutable_grad().reset();
    }

    const int64_t num_tokens = model->patchify(whole.latent).size(1);
    const auto lengths = cvx::sequence_split(num_tokens, parts);
    options.token_slice = {cvx::slice_offsets(lengths)[static_cast<size_t>(me)], lengths[static_cast<size_t>(me)]};
    model->set_attention_runner([&](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t l) {
      return cvx::ulysses_attention(q, k, v, l, group, lengths, cvx::scaled_dot_product_attention);
    });
    const auto part = cvx::compute_training_loss(model, scheduler, inputs, draws, options);
    part.loss.backward();
    const std::string label = variant + ", " + std::to_string(num_tokens) + " tokens on " + std::to_string(parts);
    auto total = part.per_sample_loss.detach().clone();
    cvx::all_reduce(group, total, cvx::ReduceOp::sum);
    expect_close(total, whole.per_sample_loss.detach(), "per-sample losses, " + label);
    size_t i = 0;
    for (const auto& item : model->named_parameters()) {
      const auto& p = item.value();
      auto grad = p.grad().defined() ? p.grad().clone() : torch::zeros_like(p);
      cvx::all_reduce(group, grad, cvx::ReduceOp::sum);
      expect_close_sum(grad, expected[i++], "d" + item.key() + ", " + label);
    }
    model->set_attention_runner({});
  }
}

// Sampling (VideoPipeline::generate, as cvx_generate and validation run it) with the group as its
// sequence group: every rank ends with the final latents of the whole model, T2V and I2V, 1.0 and
// 1.5, at a size whose token count the ranks do not divide evenly (1.0: 3 x 3 x 5 = 45 tokens; 1.5:
// 2 x 15 = 30), with classifier-free guidance (a batch of 2) and DPM's per-step noise.
TEST(SequenceParallel, SamplingOnSplitTokensGivesTheLatentsOfTheWholeModel) {
  MpiCommunicator group(MPI_COMM_WORLD, "sequence");
  for (const std::string variant : {"5b", "1.5-t2v", "1.5-i2v"}) {
    cvx::TransformerConfig config = cvx::tiny_transformer(variant);
    config.num_attention_heads = 4;  // divisible by 1, 2 and 4 ranks
    torch::manual_seed(11);
    cvx::CogVideoXTransformer model(config);
    {
      // Non-zero norms and output projection, so every token's output depends on attention.
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) p.normal_(0.0, p.dim() == 1 ? 0.3 : 0.2);
    }
    model->eval();
    auto pipeline = cvx::VideoPipeline::from_parts(model, cvx::make_tiny_vae(3, variant),
                                                   cvx::sampling_scheduler({}, "dpm", variant), torch::kCPU);
    cvx::GenerateRequest request;
    request.height = 48;
    request.width = 80;
    request.num_frames = 9;
    request.denoise.num_inference_steps = 4;
    request.denoise.guidance_scale = 6.0;
    request.seed = 7;
    request.decode = false;
    auto gen = at::detail::createCPUGenerator(13);
    request.prompt_embeds = torch::randn({1, config.max_text_seq_length, config.text_embed_dim}, gen);
    request.negative_prompt_embeds = torch::randn({1, config.max_text_seq_length, config.text_embed_dim}, gen);
    if (config.is_i2v()) request.image = torch::randint(0, 256, {48, 80, 3}, gen, torch::kLong).to(torch::kUInt8);
    const auto reference = pipeline.generate(request).final_latents;

    pipeline.sequence_group = &group;
    std::vector<torch::Tensor> outputs;
    const auto split =
        pipeline.generate(request, [&](const cvx::DenoiseStep& step) { outputs.push_back(step.transformer_output); })
            .final_latents;
    const std::string label = variant + " on " + std::to_string(group.size()) + " rank(s)";
    // The same fp32 per-head arithmetic on other token blocks (~1e-7 relative per evaluation),
    // carried through four DPM steps: 1e-5 relative with a floor for values near 0.
    EXPECT_TRUE(torch::allclose(split, reference, 1e-5, 1e-5))
        << label << ": max difference " << (split - reference).abs().max().item<double>();
    // Every rank holds the whole output of every step, and the runner is gone afterwards.
    ASSERT_EQ(outputs.size(), 4u) << label;
    EXPECT_EQ(outputs[0].sizes(), (std::vector<int64_t>{2, split.size(1), config.out_channels, 6, 10})) << label;
    pipeline.sequence_group = nullptr;
    EXPECT_TRUE(torch::equal(pipeline.generate(request).final_latents, reference)) << label << " (runner removed)";
  }
}
