// StoreReader inside an MPI job: every training rank opens the one store on its own (POSIX driver)
// and reads only its samples, concurrently with the others, with no collective call.
#include "cvx/data/store_reader.h"

#include <gtest/gtest.h>

#include "cvx/core/checked_call.h"
#include "cvx/core/mpi_env.h"
#include "latent_store_test_util.h"
#include "mpi/mpi_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::store_test_tensor;

namespace {
constexpr int64_t kSamples = 13, kPrompts = 4;
const std::vector<int64_t> kMoments{8, 3, 4, 6}, kEmbedding{5, 8};

// Rank 0 writes a complete T2V store alone (MPI_COMM_SELF), the others wait for it.
fs::path complete_store(const std::string& name) {
  const fs::path path = cvx::test::shared_scratch(name) / "latents.h5";
  if (cvx::mpi_world().rank == 0) {
    auto store = cvx::LatentStore::create(path, cvx::test::small_store_header(),
                                          cvx::test::small_store_samples(kSamples, kPrompts),
                                          cvx::test::small_store_prompts(kPrompts), {}, MPI_COMM_SELF);
    for (int64_t i = 0; i < kSamples; ++i) {
      store.write_sample(i, store_test_tensor(kMoments, i, torch::kFloat32));
      store.mark_done(i, 9);
    }
    for (int64_t p = 0; p < kPrompts; ++p)
      store.write_prompt(p, store_test_tensor(kEmbedding, 50 + p, torch::kFloat32));
  }
  CVX_MPI(MPI_Barrier(MPI_COMM_WORLD));
  return path;
}

void expect_rows(cvx::BatchPrefetcher& prefetcher, const std::vector<int64_t>& rows) {
  const auto batch = prefetcher.next(nullptr);
  ASSERT_EQ(batch.rows, rows);
  for (size_t k = 0; k < rows.size(); ++k) {
    const auto expected =
        store_test_tensor(kMoments, rows[k], torch::kFloat32).to(torch::kBFloat16).to(torch::kFloat32);
    EXPECT_TRUE(torch::equal(batch.moments[k], expected)) << "rank " << cvx::mpi_world().rank << " row " << rows[k];
    // Both stored as bf16 (the store's default): the float32 read is the bf16 rounding.
    const auto embedding = store_test_tensor(kEmbedding, 50 + rows[k] % kPrompts, torch::kFloat32)
                               .to(torch::kBFloat16)
                               .to(torch::kFloat32);
    EXPECT_TRUE(torch::equal(batch.prompt_embeds[k], embedding))
        << "rank " << cvx::mpi_world().rank << " row " << rows[k];
  }
}
}  // namespace

TEST(StoreReaderMpi, RanksReadTheirOwnSamplesConcurrently) {
  const fs::path path = complete_store("store_reader_mpi");
  const auto& world = cvx::mpi_world();
  auto reader = cvx::StoreReader::open(path);
  ASSERT_EQ(static_cast<int64_t>(reader.done_rows().size()), kSamples);
  cvx::BatchPrefetcher prefetcher(reader, {}, 2);
  std::vector<std::vector<int64_t>> batches;
  for (int64_t start = world.rank; start < kSamples; start += 2 * world.size) {
    std::vector<int64_t> rows{start};
    if (start + world.size < kSamples) rows.push_back(start + world.size);
    batches.push_back(rows);
    prefetcher.enqueue(rows);
  }
  for (const auto& rows : batches) expect_rows(prefetcher, rows);
}

// Rank 0 opens and reads while every other rank is blocked in a barrier that rank 0 enters only
// afterwards: an open or read that were collective over the world would deadlock here.
TEST(StoreReaderMpi, OpenAndReadMakeNoCollectiveCall) {
  const fs::path path = complete_store("store_reader_mpi_independent");
  if (cvx::mpi_world().rank == 0) {
    auto reader = cvx::StoreReader::open(path);
    cvx::BatchPrefetcher prefetcher(reader, {}, 1);
    prefetcher.enqueue({kSamples - 1, 0});
    expect_rows(prefetcher, {kSamples - 1, 0});
  }
  CVX_MPI(MPI_Barrier(MPI_COMM_WORLD));
}
