// Single-process LatentStore behaviour. The unit test binary never initialises MPI: without MPI the
// store uses HDF5's POSIX driver and makes no MPI call (the MPI suite covers MPI-IO).
#include "cvx/data/latent_store.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cvx/core/error.h"
#include "cvx/io/hdf5.h"
#include "latent_store_test_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using cvx::test::error_text;
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

namespace {
torch::Tensor test_image(int64_t seed) {
  const auto& h = cvx::test::small_store_header();
  return torch::randint(0, 256, {3, h.height, h.width}, at::detail::createCPUGenerator(seed), torch::kInt64)
      .to(torch::kUInt8);
}

// Rewrites a store as an older (or newer) cvx would have left it.
void set_format_version(const fs::path& path, int64_t version, bool drop_images) {
  cvx::h5::silence_errors();
  const auto file = cvx::h5::file_id(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  {
    const auto group = cvx::h5::group_id(H5Gopen2(file, "/header", H5P_DEFAULT));
    cvx::h5::write_attribute(group, "format_version", version);
  }
  if (drop_images) ASSERT_GE(H5Ldelete(file, "/images", H5P_DEFAULT), 0);
}
}  // namespace

TEST(LatentStore, I2vStoreKeepsConditioningImagesAsUint8) {
  cvx::LatentStoreOptions options;
  options.image_latents = true;
  options.images = true;
  const fs::path path = make_store("latent_store_images", options);
  {
    auto store = cvx::LatentStore::open(path, MPI_COMM_SELF, false);
    const auto moments = store_test_tensor(kMoments, 1, torch::kBFloat16);
    const auto image_moments = store_test_tensor(kImage, 2, torch::kBFloat16);
    store.write_sample(3, moments, image_moments, test_image(3));
    EXPECT_THROW(store.write_sample(2, moments, image_moments), cvx::ConfigError);  // the image is missing
    EXPECT_THROW(store.write_sample(2, moments, image_moments, test_image(2).to(torch::kFloat32)), cvx::ConfigError);
    EXPECT_THROW(store.write_sample(2, moments, image_moments, test_image(2).narrow(1, 0, 8)), cvx::ConfigError);
  }
  const auto store = cvx::LatentStore::open(path, MPI_COMM_SELF);
  EXPECT_TRUE(store.options().images);
  EXPECT_EQ(store.header().format_version, cvx::kStoreFormatVersion);
  EXPECT_TRUE(torch::equal(store.read_image(3), test_image(3)));
  EXPECT_THROW(cvx::LatentStore::open(make_store("latent_store_no_images", {}), MPI_COMM_SELF).read_image(0),
               cvx::ConfigError);
}

// Format 2 only added /images to I2V stores: a T2V store of format 1 reads as it is, an I2V store of
// format 1 is refused with the command that rebuilds it, a store from a newer cvx is refused.
TEST(LatentStore, OlderFormatsReadOrRefusedWithTheRebuildCommand) {
  const fs::path t2v = make_store("latent_store_v1_t2v", {});
  set_format_version(t2v, 1, false);
  EXPECT_EQ(cvx::LatentStore::open(t2v, MPI_COMM_SELF).header().format_version, 1);

  cvx::LatentStoreOptions options;
  options.image_latents = true;
  options.images = true;
  const fs::path i2v = make_store("latent_store_v1_i2v", options);
  set_format_version(i2v, 1, true);
  const std::string text = error_text([&] { cvx::LatentStore::open(i2v, MPI_COMM_SELF); });
  for (const char* part : {"format version 1", "no conditioning images", "cvx_precompute --config CONFIG",
                           "--precompute.overwrite true", i2v.c_str()}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " not in: " << text;
  }
  EXPECT_THROW(cvx::LatentStore::open(i2v, MPI_COMM_SELF), cvx::FormatError);

  const fs::path newer = make_store("latent_store_v3", {});
  set_format_version(newer, cvx::kStoreFormatVersion + 1, false);
  EXPECT_NE(error_text([&] { cvx::LatentStore::open(newer, MPI_COMM_SELF); }).find("newer cvx"), std::string::npos);
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
  EXPECT_THROW(
      cvx::LatentStore::create(dir / "s.h5", cvx::test::small_store_header(), cvx::test::small_store_samples(3, 3),
                               cvx::test::small_store_prompts(2), {}, MPI_COMM_SELF),
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
  for (const char* part : {"cvx latent store (format 2), 5 samples", "model_fingerprint = \"fp-0123456789abcdef\"",
                           "videos/clip_1_long_name.mp4  # too short", "1 bad, 4 pending"}) {
    EXPECT_NE(output.find(part), std::string::npos) << part << " not in:\n" << output;
  }
}
