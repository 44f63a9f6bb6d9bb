// Single-process LatentStore behaviour. The unit test binary never initialises MPI: without MPI the
// store uses HDF5's POSIX driver and makes no MPI call (the MPI suite covers MPI-IO).
#include "cvx/data/latent_store.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cvx/core/error.h"
#include "latent_store_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::same_bits;
using cvx::test::store_test_tensor;

namespace {
constexpr int64_t kSamples = 5, kPrompts = 2;
const std::vector<int64_t> kMoments{8, 3, 4, 6}, kImage{8, 1, 4, 6}, kEmbedding{5, 8};

fs::path make_store(const std::string& name, const cvx::LatentStoreOptions& options) {
  const fs::path path = cvx::test::scratch_dir(name) / "latents.h5";
  cvx::LatentStore::create(path, cvx::test::small_store_header(), cvx::test::small_store_samples(kSamples, kPrompts),
                           cvx::test::small_store_prompts(kPrompts), options, MPI_COMM_SELF);
  return path;
}

template <class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const cvx::Error& e) {
    return e.message();
  }
  return "(no error)";
}
}  // namespace

TEST(LatentStore, WriteReadResumeWithoutMpi) {
  cvx::LatentStoreOptions options;
  options.image_latents = true;
  options.embedding_dtype = cvx::StoreDtype::kFloat32;
  const fs::path path = make_store("latent_store_basic", options);
  {
    auto store = cvx::LatentStore::open(path, MPI_COMM_SELF, /*read_only=*/false);
    EXPECT_EQ(store.pending_samples(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
    EXPECT_EQ(store.pending_prompts(), (std::vector<int64_t>{0, 1}));
    for (int64_t i : {0, 2}) {
      store.write_sample(i, store_test_tensor(kMoments, i, torch::kBFloat16),
                         store_test_tensor(kImage, 50 + i, torch::kBFloat16));
      store.mark_done(i, 9 - static_cast<int32_t>(i));
    }
    store.mark_bad(3, "decode failed: moov atom not found");
    store.write_prompt(1, store_test_tensor(kEmbedding, 7, torch::kFloat32));
  }
  auto store = cvx::LatentStore::open(path, MPI_COMM_SELF);
  EXPECT_EQ(store.pending_samples(), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(store.pending_prompts(), (std::vector<int64_t>{0}));
  EXPECT_TRUE(same_bits(store.read_moments(2), store_test_tensor(kMoments, 2, torch::kBFloat16)));
  EXPECT_TRUE(same_bits(store.read_image_moments(0), store_test_tensor(kImage, 50, torch::kBFloat16)));
  EXPECT_TRUE(same_bits(store.read_prompt(1), store_test_tensor(kEmbedding, 7, torch::kFloat32)));

  const auto index = store.index();
  const auto expected = cvx::test::small_store_samples(kSamples, kPrompts);
  ASSERT_EQ(index.size(), expected.size());
  for (size_t i = 0; i < index.size(); ++i) {
    EXPECT_EQ(index[i].id, expected[i].id);
    EXPECT_EQ(index[i].media_path, expected[i].media_path);
    EXPECT_EQ(index[i].prompt_row, expected[i].prompt_row);
  }
  EXPECT_EQ(index[2].status, cvx::SampleStatus::kDone);
  EXPECT_EQ(index[2].frames, 7);
  EXPECT_EQ(index[3].status, cvx::SampleStatus::kBad);
  EXPECT_EQ(index[3].reason, "decode failed: moov atom not found");
  const auto prompts = store.prompts();
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[1].text, cvx::test::small_store_prompts(kPrompts)[1]);
  EXPECT_EQ(prompts[1].hash, cvx::prompt_hash(prompts[1].text));
  EXPECT_TRUE(prompts[1].done);
  EXPECT_FALSE(prompts[0].done);

  const auto& header = store.header();
  EXPECT_EQ(header.latent_shape, cvx::test::small_store_header().latent_shape);
  EXPECT_EQ(header.vae_scaling_factor, cvx::test::small_store_header().vae_scaling_factor);
  EXPECT_EQ(store.options().latent_dtype, cvx::StoreDtype::kBFloat16);
  EXPECT_EQ(store.options().embedding_dtype, cvx::StoreDtype::kFloat32);
  EXPECT_TRUE(store.options().image_latents);
  EXPECT_THROW(store.write_prompt(0, store_test_tensor(kEmbedding, 0, torch::kFloat32)), cvx::ConfigError);
}

// A float32 tensor written to a bf16 store is rounded once, like Tensor::to(kBFloat16).
TEST(LatentStore, ConvertsToStoredDtypeAndChecksShapes) {
  const fs::path path = make_store("latent_store_convert", {});
  auto store = cvx::LatentStore::open(path, MPI_COMM_SELF, false);
  const auto moments = store_test_tensor(kMoments, 3, torch::kFloat32);
  store.write_sample(1, moments);
  EXPECT_TRUE(same_bits(store.read_moments(1), moments.to(torch::kBFloat16)));
  EXPECT_THROW(store.write_sample(1, torch::zeros({8, 3, 4, 5})), cvx::ConfigError);
  EXPECT_THROW(store.write_sample(1, moments, torch::zeros(kImage)), cvx::ConfigError);  // a T2V store
  EXPECT_THROW(store.write_sample(kSamples, moments), cvx::ConfigError);
  EXPECT_THROW(store.read_image_moments(0), cvx::ConfigError);
}

TEST(LatentStore, CompressedSingleProcess) {
  cvx::LatentStoreOptions options;
  options.gzip_level = 4;
  options.latent_dtype = cvx::StoreDtype::kFloat32;
  const fs::path path = make_store("latent_store_gzip", options);
  {
    auto store = cvx::LatentStore::open(path, MPI_COMM_SELF, false);
    store.write_sample(4, store_test_tensor(kMoments, 4, torch::kFloat32));
    store.mark_done(4, 9);
  }
  auto store = cvx::LatentStore::open(path, MPI_COMM_SELF);
  EXPECT_EQ(store.options().gzip_level, 4);
  EXPECT_TRUE(same_bits(store.read_moments(4), store_test_tensor(kMoments, 4, torch::kFloat32)));
}

TEST(LatentStore, CheckCompatibleNamesEveryDifference) {
  const fs::path path = make_store("latent_store_compat", {});
  const auto store = cvx::LatentStore::open(path, MPI_COMM_SELF);
  auto same = cvx::test::small_store_header();
  same.model_path = "/elsewhere/CogVideoX-2b";  // a moved model folder: the fingerprint decides
  same.cvx_version = "9.9.9";
  EXPECT_NO_THROW(store.check_compatible(same));

  auto other = same;
  other.height = 64;
  other.frame_sampling = "first";
  other.model_fingerprint = "fp-other";
  other.latent_shape[2] = 8;
  const std::string text = error_text([&] { store.check_compatible(other); });
  for (const char* part : {"height: stored 32, requested 64", "frame_sampling: stored \"uniform\", requested \"first\"",
                           "model_fingerprint", "latent_shape", "--overwrite", path.c_str()}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " not in: " << text;
  }
  EXPECT_EQ(text.find("width"), std::string::npos) << text;
  EXPECT_THROW(store.check_compatible(other), cvx::ConfigError);
}

TEST(LatentStore, RefusesFilesThatAreNotStores) {
  const fs::path dir = cvx::test::scratch_dir("latent_store_bad");
  std::ofstream(dir / "junk.h5") << "not hdf5 at all";
  EXPECT_THROW(cvx::LatentStore::open(dir / "junk.h5", MPI_COMM_SELF), cvx::FormatError);
  EXPECT_THROW(cvx::LatentStore::open(dir / "missing.h5", MPI_COMM_SELF), cvx::ConfigError);
  auto header = cvx::test::small_store_header();
  header.latent_shape[0] = 0;
  EXPECT_THROW(cvx::LatentStore::create(dir / "s.h5", header, cvx::test::small_store_samples(2, 1),
                                        cvx::test::small_store_prompts(1), {}, MPI_COMM_SELF),
               cvx::ConfigError);
  // Prompt rows must exist.
  EXPECT_THROW(cvx::LatentStore::create(dir / "s.h5", cvx::test::small_store_header(),
                                        cvx::test::small_store_samples(3, 3), cvx::test::small_store_prompts(2), {},
                                        MPI_COMM_SELF),
               cvx::ConfigError);
}

TEST(LatentStore, InspectPrintsHeaderAndTable) {
  const fs::path path = make_store("latent_store_inspect", {});
  {
    auto store = cvx::LatentStore::open(path, MPI_COMM_SELF, false);
    store.mark_bad(1, "too short");
  }
  std::string output;
  ASSERT_EQ(cvx::test::run_command(cvx::test::built_program("cvx_inspect").string() + " " + path.string(), &output), 0)
      << output;
  for (const char* part : {"cvx latent store, 5 samples", "model_fingerprint = \"fp-0123456789abcdef\"",
                           "videos/clip_1_long_name.mp4  # too short", "1 bad, 4 pending"}) {
    EXPECT_NE(output.find(part), std::string::npos) << part << " not in:\n" << output;
  }
}
