// LatentStore over MPI-IO: every rank writes its round-robin share of one shared file.
#include "cvx/data/latent_store.h"

#include <gtest/gtest.h>

#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"
#include "cvx/core/mpi_env.h"
#include "latent_store_test_util.h"
#include "mpi/mpi_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::same_bits;
using cvx::test::shared_scratch;
using cvx::test::store_test_tensor;

namespace {
constexpr int64_t kSamples = 11, kPrompts = 3;
const std::vector<int64_t> kMoments{8, 3, 4, 6}, kImage{8, 1, 4, 6}, kEmbedding{5, 8};

bool mine(int64_t row) {
  const auto& world = cvx::mpi_world();
  return row % world.size == world.rank;
}

cvx::LatentStoreOptions i2v_options() {
  cvx::LatentStoreOptions options;
  options.image_latents = true;
  options.latent_dtype = cvx::StoreDtype::kBFloat16;
  options.embedding_dtype = cvx::StoreDtype::kFloat32;
  return options;
}

cvx::LatentStore create_store(const fs::path& path) {
  return cvx::LatentStore::create(path, cvx::test::small_store_header(),
                                  cvx::test::small_store_samples(kSamples, kPrompts),
                                  cvx::test::small_store_prompts(kPrompts), i2v_options(), MPI_COMM_WORLD);
}

// Writes this rank's share of samples in [begin, end) and of the prompts; sample 5 is "bad".
void write_share(cvx::LatentStore& store, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    if (!mine(i)) continue;
    if (i == 5) {
      store.mark_bad(i, "rank " + std::to_string(cvx::mpi_world().rank) + " could not decode");
      continue;
    }
    store.write_sample(i, store_test_tensor(kMoments, i, torch::kBFloat16),
                       store_test_tensor(kImage, 1000 + i, torch::kBFloat16));
    store.mark_done(i, static_cast<int32_t>(i + 1));
  }
  for (int64_t p = 0; p < kPrompts; ++p) {
    if (mine(p)) store.write_prompt(p, store_test_tensor(kEmbedding, 500 + p, torch::kFloat32));
  }
}

void expect_everything(const cvx::LatentStore& store) {
  const auto index = store.index();
  ASSERT_EQ(static_cast<int64_t>(index.size()), kSamples);
  for (int64_t i = 0; i < kSamples; ++i) {
    const auto& e = index[i];
    EXPECT_EQ(e.id, 100 + i);
    EXPECT_EQ(e.prompt_row, i % kPrompts);
    if (i == 5) {
      EXPECT_EQ(e.status, cvx::SampleStatus::kBad);
      EXPECT_NE(e.reason.find("could not decode"), std::string::npos) << e.reason;
      continue;
    }
    EXPECT_EQ(e.status, cvx::SampleStatus::kDone) << "sample " << i;
    EXPECT_EQ(e.frames, i + 1);
    EXPECT_TRUE(same_bits(store.read_moments(i), store_test_tensor(kMoments, i, torch::kBFloat16))) << "sample " << i;
    EXPECT_TRUE(same_bits(store.read_image_moments(i), store_test_tensor(kImage, 1000 + i, torch::kBFloat16)));
  }
  for (int64_t p = 0; p < kPrompts; ++p) {
    EXPECT_TRUE(same_bits(store.read_prompt(p), store_test_tensor(kEmbedding, 500 + p, torch::kFloat32)));
  }
  EXPECT_TRUE(store.pending_samples().empty());
  EXPECT_TRUE(store.pending_prompts().empty());
}
}  // namespace

TEST(LatentStoreMpi, EveryRankWritesItsShareAndEveryRankReadsAll) {
  const fs::path path = shared_scratch("latent_store_mpi") / "latents.h5";
  {
    auto store = create_store(path);
    write_share(store, 0, kSamples);
    store.flush();
    // After the collective flush every rank sees the others' writes.
    EXPECT_TRUE(store.pending_samples().empty());
  }
  const auto store = cvx::LatentStore::open(path, MPI_COMM_WORLD);
  expect_everything(store);
  const auto prompts = store.prompts();
  ASSERT_EQ(static_cast<int64_t>(prompts.size()), kPrompts);
  EXPECT_EQ(prompts[2].text, cvx::test::small_store_prompts(kPrompts)[2]);
}

// A job killed after the first samples: the reopened store lists exactly the rest as pending, and
// finishing them completes the store.
TEST(LatentStoreMpi, ResumeSeesDoneFlags) {
  const fs::path path = shared_scratch("latent_store_resume") / "latents.h5";
  {
    auto store = create_store(path);
    write_share(store, 0, 4);
  }
  {
    auto store = cvx::LatentStore::open(path, MPI_COMM_WORLD, /*read_only=*/false);
    store.check_compatible(cvx::test::small_store_header());
    std::vector<int64_t> expected;
    for (int64_t i = 4; i < kSamples; ++i) expected.push_back(i);
    EXPECT_EQ(store.pending_samples(), expected);
    EXPECT_TRUE(store.pending_prompts().empty());
    // Every rank has read the flags before any rank writes more.
    CVX_MPI(MPI_Barrier(MPI_COMM_WORLD));
    write_share(store, 4, kSamples);
  }
  expect_everything(cvx::LatentStore::open(path, MPI_COMM_WORLD));
}

TEST(LatentStoreMpi, CheckCompatibleNamesDifferences) {
  const fs::path path = shared_scratch("latent_store_mpi_compat") / "latents.h5";
  create_store(path).close();
  const auto store = cvx::LatentStore::open(path, MPI_COMM_WORLD);
  auto requested = cvx::test::small_store_header();
  requested.variant = "t2v";
  requested.max_text_length = 226;
  try {
    store.check_compatible(requested);
    ADD_FAILURE() << "no error";
  } catch (const cvx::ConfigError& e) {
    const std::string text = e.message();
    EXPECT_NE(text.find("variant: stored \"i2v\", requested \"t2v\""), std::string::npos) << text;
    EXPECT_NE(text.find("max_text_length: stored 5, requested 226"), std::string::npos) << text;
    EXPECT_NE(text.find("--overwrite"), std::string::npos) << text;
  }
}

// Compressed data sets can only be written collectively: refused on every rank, before any I/O.
TEST(LatentStoreMpi, RefusesCompressionWithSeveralRanks) {
  if (cvx::mpi_world().size < 2) GTEST_SKIP() << "needs several ranks";
  const fs::path path = shared_scratch("latent_store_mpi_gzip") / "latents.h5";
  auto options = i2v_options();
  options.gzip_level = 4;
  EXPECT_THROW(cvx::LatentStore::create(path, cvx::test::small_store_header(),
                                        cvx::test::small_store_samples(kSamples, kPrompts),
                                        cvx::test::small_store_prompts(kPrompts), options, MPI_COMM_WORLD),
               cvx::ConfigError);
}

// Ranks that pass different sample lists get a ConfigError (on every rank) instead of a corrupt file.
TEST(LatentStoreMpi, RefusesDifferentArgumentsAcrossRanks) {
  if (cvx::mpi_world().size < 2) GTEST_SKIP() << "needs several ranks";
  const fs::path path = shared_scratch("latent_store_mpi_mismatch") / "latents.h5";
  auto samples = cvx::test::small_store_samples(kSamples, kPrompts);
  if (cvx::mpi_world().rank == 1) samples[0].media_path = "videos/other.mp4";
  EXPECT_THROW(cvx::LatentStore::create(path, cvx::test::small_store_header(), samples,
                                        cvx::test::small_store_prompts(kPrompts), i2v_options(), MPI_COMM_WORLD),
               cvx::ConfigError);
}

// A store on MPI_COMM_SELF inside an MPI job (training reading, or one rank's private store).
TEST(LatentStoreMpi, SingleRankStoreInsideJob) {
  const fs::path dir = shared_scratch("latent_store_mpi_self");
  const fs::path path = dir / ("rank" + std::to_string(cvx::mpi_world().rank) + ".h5");
  {
    auto store = cvx::LatentStore::create(path, cvx::test::small_store_header(), cvx::test::small_store_samples(2, 1),
                                          cvx::test::small_store_prompts(1), {}, MPI_COMM_SELF);
    store.write_sample(1, store_test_tensor(kMoments, 9, torch::kBFloat16));
    store.mark_done(1, 3);
  }
  const auto store = cvx::LatentStore::open(path, MPI_COMM_SELF);
  EXPECT_EQ(store.pending_samples(), (std::vector<int64_t>{0}));
  EXPECT_TRUE(same_bits(store.read_moments(1), store_test_tensor(kMoments, 9, torch::kBFloat16)));
}
