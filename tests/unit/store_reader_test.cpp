// StoreReader and BatchPrefetcher on a real single-process HDF5 store (POSIX driver, no MPI).
#include "cvx/data/store_reader.h"

#include <gtest/gtest.h>

#include "cvx/core/error.h"
#include "latent_store_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::error_text;
using cvx::test::store_test_tensor;

namespace {
constexpr int64_t kSamples = 6, kPrompts = 3;
const std::vector<int64_t> kMoments{8, 3, 4, 6}, kImageMoments{8, 1, 4, 6}, kEmbedding{5, 8};

torch::Tensor test_image(int64_t i) {
  const auto& h = cvx::test::small_store_header();
  return torch::arange(3 * h.height * h.width, torch::kInt64)
      .add(i * 37)
      .remainder(256)
      .to(torch::kUInt8)
      .view({3, h.height, h.width});
}

// Samples 0, 2, 3, 5 done; 1 bad; 4 pending. Prompts 0 and 1 encoded, prompt 2 not: sample 2 (prompt
// row 2) is done but not trainable, as after a precompute killed between the two writes.
fs::path make_i2v_store(const std::string& name) {
  const fs::path path = cvx::test::scratch_dir(name) / "latents.h5";
  cvx::LatentStoreOptions options;
  options.image_latents = true;
  options.images = true;
  options.latent_dtype = cvx::StoreDtype::kBFloat16;
  options.embedding_dtype = cvx::StoreDtype::kFloat32;
  auto store = cvx::LatentStore::create(path, cvx::test::small_store_header(),
                                        cvx::test::small_store_samples(kSamples, kPrompts),
                                        cvx::test::small_store_prompts(kPrompts), options, MPI_COMM_SELF);
  for (int64_t i : {0, 2, 3, 5}) {
    store.write_sample(i, store_test_tensor(kMoments, i, torch::kFloat32),
                       store_test_tensor(kImageMoments, 100 + i, torch::kFloat32), test_image(i));
    store.mark_done(i, 9);
  }
  store.mark_bad(1, "too short");
  for (int64_t p : {0, 1}) store.write_prompt(p, store_test_tensor(kEmbedding, 200 + p, torch::kFloat32));
  store.close();
  return path;
}

cvx::StoreReadOptions everything() {
  cvx::StoreReadOptions options;
  options.image_moments = true;
  options.images = true;
  return options;
}

void expect_batch(const cvx::StoreBatch& batch, const std::vector<int64_t>& rows) {
  ASSERT_EQ(batch.rows, rows);
  ASSERT_EQ(batch.moments.size(0), static_cast<int64_t>(rows.size()));
  EXPECT_EQ(batch.moments.scalar_type(), torch::kFloat32);
  EXPECT_EQ(batch.images.scalar_type(), torch::kUInt8);
  for (size_t k = 0; k < rows.size(); ++k) {
    const int64_t r = rows[k];
    // Stored as bf16: the float32 read is the bf16 rounding of what was written.
    const auto expected = store_test_tensor(kMoments, r, torch::kFloat32).to(torch::kBFloat16).to(torch::kFloat32);
    EXPECT_TRUE(torch::equal(batch.moments[k], expected)) << "row " << r;
    EXPECT_TRUE(torch::equal(
        batch.image_moments[k],
        store_test_tensor(kImageMoments, 100 + r, torch::kFloat32).to(torch::kBFloat16).to(torch::kFloat32)))
        << "row " << r;
    EXPECT_TRUE(torch::equal(batch.images[k], test_image(r))) << "row " << r;
    EXPECT_TRUE(
        torch::equal(batch.prompt_embeds[k], store_test_tensor(kEmbedding, 200 + r % kPrompts, torch::kFloat32)))
        << "row " << r;
  }
}
}  // namespace

TEST(StoreReader, TrainsOnlyOnDoneSamplesWithEncodedPrompts) {
  const auto reader = cvx::StoreReader::open(make_i2v_store("store_reader_rows"));
  EXPECT_EQ(reader.num_samples(), kSamples);
  EXPECT_EQ(reader.done_rows(), (std::vector<int64_t>{0, 3}));  // 2: prompt not encoded; 5: prompt row 2 too
  EXPECT_EQ(reader.num_bad(), 1);
  EXPECT_EQ(reader.num_pending(), kSamples - 2 - 1);
  EXPECT_TRUE(reader.options().images);
}

TEST(StoreReader, ReadsBatchesInRequestedOrderWithRepeats) {
  auto reader = cvx::StoreReader::open(make_i2v_store("store_reader_batch"));
  expect_batch(reader.read_batch({3, 0, 3}, everything()), {3, 0, 3});
  cvx::StoreReadOptions latents_only;
  latents_only.prompt_embeds = false;
  const auto batch = reader.read_batch({0}, latents_only);
  EXPECT_FALSE(batch.prompt_embeds.defined());
  EXPECT_FALSE(batch.images.defined());
  EXPECT_FALSE(batch.image_moments.defined());
}

TEST(StoreReader, RefusesRowsThatAreNotTrainable) {
  auto reader = cvx::StoreReader::open(make_i2v_store("store_reader_refuse"));
  const auto options = everything();
  EXPECT_NE(error_text([&] { reader.read_batch({1}, options); }).find("sample row 1 is bad"), std::string::npos);
  EXPECT_NE(error_text([&] { reader.read_batch({4}, options); }).find("sample row 4 is pending"), std::string::npos);
  EXPECT_NE(error_text([&] { reader.read_batch({2}, options); }).find("prompt row 2 is not encoded"),
            std::string::npos);
  EXPECT_NE(error_text([&] { reader.read_batch({kSamples}, options); }).find("out of range"), std::string::npos);
  EXPECT_THROW(reader.read_batch({}, options), cvx::ConfigError);
}

TEST(StoreReader, T2vStoreHasNoImages) {
  const fs::path path = cvx::test::scratch_dir("store_reader_t2v") / "latents.h5";
  {
    auto store = cvx::LatentStore::create(path, cvx::test::small_store_header(), cvx::test::small_store_samples(2, 1),
                                          cvx::test::small_store_prompts(1), {}, MPI_COMM_SELF);
    store.write_sample(0, store_test_tensor(kMoments, 0, torch::kFloat32));
    store.mark_done(0, 9);
    store.write_prompt(0, store_test_tensor(kEmbedding, 0, torch::kFloat32));
  }
  auto reader = cvx::StoreReader::open(path);
  cvx::StoreReadOptions images;
  images.images = true;
  EXPECT_NE(error_text([&] { reader.read_batch({0}, images); }).find("holds no conditioning images"),
            std::string::npos);
  cvx::StoreReadOptions image_moments;
  image_moments.image_moments = true;
  EXPECT_NE(error_text([&] { reader.read_batch({0}, image_moments); }).find("has no image latents"), std::string::npos);
}

TEST(StoreReader, MissingStoreNamesThePrecomputeCommand) {
  const fs::path missing = cvx::test::scratch_dir("store_reader_missing") / "absent.h5";
  const std::string text = error_text([&] { cvx::StoreReader::open(missing); });
  EXPECT_NE(text.find(missing.string()), std::string::npos) << text;
  EXPECT_NE(text.find("cvx_precompute --config"), std::string::npos) << text;
}

TEST(StoreReader, CheckMatchesListsDifferencesAndTheRebuildCommand) {
  const auto reader = cvx::StoreReader::open(make_i2v_store("store_reader_match"));
  auto expected = cvx::test::small_store_header();
  expected.model_path = "/moved/model";  // the same model elsewhere: accepted
  EXPECT_NO_THROW(reader.check_matches(expected));
  expected.width = 64;
  expected.resize_mode = "resize";
  const std::string text = error_text([&] { reader.check_matches(expected); });
  for (const char* part : {"width: stored 48, expected 64", "resize_mode: stored \"crop\", expected \"resize\"",
                           "--precompute.overwrite true"}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " not in: " << text;
  }
}

// Whatever the depth, the prefetcher hands back the enqueued batches in order with the same data.
TEST(BatchPrefetcher, SameBatchesInOrderAtAnyDepth) {
  auto reader = cvx::StoreReader::open(make_i2v_store("store_reader_prefetch"));
  const std::vector<std::vector<int64_t>> requests{{0, 3}, {3}, {3, 3, 0}, {0}};
  for (int depth : {0, 1, 3}) {
    cvx::BatchPrefetcher prefetcher(reader, everything(), depth);
    for (const auto& rows : requests) prefetcher.enqueue(rows);
    for (const auto& rows : requests) {
      double wait = -1;
      const auto batch = prefetcher.next(&wait);
      EXPECT_GE(wait, 0.0);
      expect_batch(batch, rows);
    }
    EXPECT_THROW(prefetcher.next(nullptr), cvx::ConfigError) << "depth " << depth;
  }
}

// A failed read on the reader thread reaches the training thread as the same error type, with the
// rows; the batches after it are still read.
TEST(BatchPrefetcher, RethrowsReadErrorsWithTheRows) {
  auto reader = cvx::StoreReader::open(make_i2v_store("store_reader_prefetch_error"));
  for (int depth : {0, 2}) {
    cvx::BatchPrefetcher prefetcher(reader, everything(), depth);
    prefetcher.enqueue({0, 1});
    prefetcher.enqueue({3});
    try {
      prefetcher.next(nullptr);
      ADD_FAILURE() << "no error at depth " << depth;
    } catch (const cvx::ConfigError& e) {
      EXPECT_NE(e.message().find("rows [0, 1]"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("sample row 1 is bad"), std::string::npos) << e.message();
    }
    expect_batch(prefetcher.next(nullptr), {3});
  }
}

// Destroying a prefetcher with batches still queued stops its thread without reading them all.
TEST(BatchPrefetcher, StopsWithRequestsOutstanding) {
  auto reader = cvx::StoreReader::open(make_i2v_store("store_reader_prefetch_stop"));
  {
    cvx::BatchPrefetcher prefetcher(reader, everything(), 1);
    for (int k = 0; k < 50; ++k) prefetcher.enqueue({0, 3});
  }
  expect_batch(reader.read_batch({0}, everything()), {0});
}
