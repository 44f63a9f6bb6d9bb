// HDF5 latent store write throughput (all ranks writing their share with MPI-IO into one file)
// against a plain sequential write of the same bytes by one process. One JSON line from rank 0.
// usage: mpirun -np N bench_store_write DIR [SAMPLES=32]
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cvx/core/checked_call.h"
#include "cvx/core/mpi_env.h"
#include "cvx/data/latent_store.h"
#include "cvx/model/model_variant.h"

int main(int argc, char** argv) {
  const auto& world = cvx::mpi_init(&argc, &argv);
  const std::filesystem::path dir = argc > 1 ? argv[1] : "/tmp";
  const int64_t samples = argc > 2 ? std::atoll(argv[2]) : 32;
  // A 1.0-sized sample: moments [32, 13, 60, 90] fp32 = 8.6 MiB.
  cvx::StoreHeader header;
  header.variant = cvx::kVariant5b;
  header.frames = 49;
  header.height = 480;
  header.width = 720;
  header.latent_shape = {16, 13, 60, 90};
  header.frame_sampling = "stride";
  header.resize_mode = "resize";
  header.vae_scaling_factor = 0.7;
  header.max_text_length = cvx::kMaxTextLength;
  header.text_embed_dim = 16;
  std::vector<cvx::SampleEntry> entries(samples);
  for (int64_t i = 0; i < samples; ++i) entries[i].id = i, entries[i].media_path = "v" + std::to_string(i) + ".mp4";
  cvx::LatentStoreOptions options;
  options.latent_dtype = cvx::StoreDtype::kFloat32;
  const auto moments = torch::randn({32, 13, 60, 90});
  const double bytes = static_cast<double>(moments.numel()) * 4 * samples;
  const auto path = dir / "bench_store.h5";

  // Best of 3 for both: the page cache and the disk make single runs noisy. Both end durable:
  // the store's flush syncs (MPI_File_sync), the plain write fsyncs.
  double store_s = 1e30;
  for (int run = 0; run < 3; ++run) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = std::chrono::steady_clock::now();
    {
      auto store = cvx::LatentStore::create(path, header, entries, {"p"}, options, MPI_COMM_WORLD);
      for (int64_t i = world.rank; i < samples; i += world.size) {
        store.write_sample(i, moments);
        store.mark_done(i, 49);
      }
      store.flush();
      store.close();
    }
    MPI_Barrier(MPI_COMM_WORLD);
    store_s = std::min(store_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (world.rank == 0) std::filesystem::remove(path);
  }

  if (world.rank == 0) {
    const auto plain = dir / "bench_plain.bin";
    double plain_s = 1e30;
    for (int run = 0; run < 3; ++run) {
      const auto t0 = std::chrono::steady_clock::now();
      const int fd = ::open(plain.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const size_t chunk = moments.numel() * 4;
      for (int64_t i = 0; i < samples; ++i)
        if (::write(fd, moments.data_ptr<float>(), chunk) != static_cast<ssize_t>(chunk)) return 1;
      ::fsync(fd);
      ::close(fd);
      plain_s = std::min(plain_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      std::filesystem::remove(plain);
    }
    std::printf(
        "{\"benchmark\": \"store_write\", \"ranks\": %d, \"samples\": %lld, \"mib\": %.0f, \"store_mib_per_s\": %.0f, "
        "\"plain_sequential_mib_per_s\": %.0f, \"ratio\": %.2f}\n",
        world.size, static_cast<long long>(samples), bytes / (1 << 20), bytes / (1 << 20) / store_s,
        bytes / (1 << 20) / plain_s, plain_s / store_s);
  }
  cvx::mpi_finalize();
  return 0;
}
