#include "cvx/data/latent_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "cvx/core/checked_call.h"
#include "cvx/core/error.h"
#include "cvx/core/shape.h"
#include "cvx/io/hdf5.h"

namespace fs = std::filesystem;

namespace cvx {
namespace {

constexpr size_t kReasonWidth = 128;

// ---------------------------------------------------------------- header fields
std::string field_text(const std::array<int64_t, 4>& v) { return shape_string(c10::IntArrayRef(v.data(), v.size())); }

struct AttributeWriter {
  hid_t object;
  void operator()(const char* name, const std::string& v) const { h5::write_attribute(object, name, v); }
  void operator()(const char* name, int64_t v) const { h5::write_attribute(object, name, v); }
  void operator()(const char* name, double v) const { h5::write_attribute(object, name, v); }
  void operator()(const char* name, bool v) const { h5::write_attribute(object, name, int64_t{v ? 1 : 0}); }
  void operator()(const char* name, const std::array<int64_t, 4>& v) const {
    h5::write_attribute(object, name, std::vector<int64_t>(v.begin(), v.end()));
  }
};

struct AttributeReader {
  hid_t object;
  void operator()(const char* name, std::string& v) const { v = h5::read_string_attribute(object, name); }
  void operator()(const char* name, int64_t& v) const { v = h5::read_int_attribute(object, name); }
  void operator()(const char* name, double& v) const { v = h5::read_double_attribute(object, name); }
  void operator()(const char* name, bool& v) const { v = h5::read_int_attribute(object, name) != 0; }
  void operator()(const char* name, std::array<int64_t, 4>& v) const {
    const auto values = h5::read_ints_attribute(object, name);
    CVX_CHECK_AS(FormatError, values.size() == 4, "header attribute ", name, " has ", values.size(),
                 " entries, expected 4");
    std::copy(values.begin(), values.end(), v.begin());
  }
};

// ---------------------------------------------------------------- dtypes
const char* dtype_name(StoreDtype d) { return d == StoreDtype::kFloat32 ? "float32" : "bfloat16"; }
StoreDtype parse_dtype(const std::string& name, const std::string& dataset) {
  if (name == "float32") return StoreDtype::kFloat32;
  CVX_CHECK_AS(FormatError, name == "bfloat16", "data set ", dataset, " has unknown dtype ", quote(name));
  return StoreDtype::kBFloat16;
}
// bf16 is stored as its 16-bit pattern: HDF5 1.10 has no bf16 type, and no conversion is wanted.
hid_t file_type(StoreDtype d) { return d == StoreDtype::kFloat32 ? H5T_IEEE_F32LE : H5T_STD_U16LE; }
hid_t memory_type(StoreDtype d) { return d == StoreDtype::kFloat32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT16; }
torch::Dtype torch_dtype(StoreDtype d) { return d == StoreDtype::kFloat32 ? torch::kFloat32 : torch::kBFloat16; }

// ---------------------------------------------------------------- MPI
bool mpi_usable() {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  return initialised && !finalised;
}
// MPI-IO only when there is more than one rank: a single process (or no MPI at all) uses POSIX I/O.
bool use_mpio(MPI_Comm comm) {
  if (!mpi_usable() || comm == MPI_COMM_NULL) return false;
  int size = 1;
  CVX_MPI(MPI_Comm_size(comm, &size));
  return size > 1;
}

uint64_t fnv1a(const void* data, size_t size, uint64_t hash = 1469598103934665603ull) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  return hash;
}

// Names the file and the object in errors from HDF5 calls and format checks.
template <class F>
decltype(auto) in_context(const fs::path& path, const std::string& object, F&& f) {
  try {
    return f();
  } catch (const FormatError& e) {
    CVX_THROW_AS(FormatError, "latent store ", path.string(), ", ", object, ": ", e.message());
  } catch (const SystemError& e) {
    CVX_THROW_AS(SystemError, "latent store ", path.string(), ", ", object, ": ", e.message());
  }
}

// A fixed-size string column [n] of `width` bytes per row, NUL padded.
std::vector<char> pack_strings(const std::vector<std::string>& values, size_t width) {
  std::vector<char> buffer(values.size() * width, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    std::memcpy(buffer.data() + i * width, values[i].data(), std::min(width, values[i].size()));
  }
  return buffer;
}
std::vector<std::string> unpack_strings(const std::vector<char>& buffer, size_t width) {
  std::vector<std::string> values(width == 0 ? 0 : buffer.size() / width);
  for (size_t i = 0; i < values.size(); ++i) {
    const char* row = buffer.data() + i * width;
    values[i].assign(row, strnlen(row, width));
  }
  return values;
}

}  // namespace

uint64_t prompt_hash(const std::string& text) { return fnv1a(text.data(), text.size()); }

// ---------------------------------------------------------------- Impl
struct LatentStore::Impl {
  fs::path path;
  StoreHeader header;
  LatentStoreOptions options;
  MPI_Comm comm = MPI_COMM_NULL;
  bool parallel = false;
  bool read_only = true;
  int64_t samples = 0, prompts = 0;
  // The file first: members are destroyed in reverse order, and with MPI-IO the file closes only
  // once every object in it is closed.
  h5::Id file;
  h5::Id transfer;
  h5::Id moments, image_moments, images, embeddings, prompt_text, prompt_hash, prompt_status;
  h5::Id sample_id, media_path, prompt_row, frames, status, reason;

  // A descriptor of our own on the file, only to make this rank's writes durable (fdatasync
  // flushes the file's dirty pages whichever descriptor wrote them; the MPI-IO handle offers only
  // a collective sync).
  int sync_fd = -1;

  hid_t xfer() const { return transfer.valid() ? transfer.get() : H5P_DEFAULT; }

  template <class F>
  decltype(auto) guarded(const std::string& object, F&& f) const {
    return in_context(path, object, std::forward<F>(f));
  }

  void require_writable() const {
    CVX_CHECK_AS(ConfigError, !read_only, "latent store ", path.string(), " is open read-only");
  }
  void check_row(int64_t i, int64_t n, const char* what) const {
    CVX_CHECK_AS(ConfigError, i >= 0 && i < n, "latent store ", path.string(), ": ", what, " ", i, " out of range [0, ",
                 n, ")");
  }

  std::vector<int64_t> image_shape() const { return {3, header.height, header.width}; }

  std::vector<int64_t> moments_shape(int64_t frames_dim) const {
    const auto& s = header.latent_shape;
    return {2 * s[0], frames_dim, s[2], s[3]};
  }

  void write_tensor(hid_t dataset, const char* name, StoreDtype dtype, int64_t row, const torch::Tensor& tensor,
                    const std::vector<int64_t>& shape) const {
    write_tensor_as(dataset, name, memory_type(dtype), torch_dtype(dtype), row, tensor, shape);
  }
  void write_tensor_as(hid_t dataset, const char* name, hid_t type, torch::Dtype dtype, int64_t row,
                       const torch::Tensor& tensor, const std::vector<int64_t>& shape) const {
    CVX_CHECK_AS(ConfigError, tensor.defined() && tensor.sizes().vec() == shape, "latent store ", path.string(), ": ",
                 name, " row ", row, " expects a tensor of shape ", shape_string(shape), ", got ",
                 tensor.defined() ? shape_string(tensor.sizes().vec()) : std::string("none"));
    const torch::Tensor data = tensor.detach().to(torch::kCPU, dtype).contiguous();
    guarded(name, [&] { h5::write_rows(dataset, type, row, 1, data.data_ptr(), xfer()); });
  }

  torch::Tensor read_tensor(hid_t dataset, const char* name, StoreDtype dtype, int64_t row,
                            const std::vector<int64_t>& shape) const {
    return read_tensor_as(dataset, name, memory_type(dtype), torch_dtype(dtype), row, shape);
  }
  torch::Tensor read_tensor_as(hid_t dataset, const char* name, hid_t type, torch::Dtype dtype, int64_t row,
                               const std::vector<int64_t>& shape) const {
    torch::Tensor data = torch::empty(shape, torch::TensorOptions().dtype(dtype));
    guarded(name, [&] { h5::read_rows(dataset, type, row, 1, data.data_ptr(), xfer()); });
    return data;
  }

  template <class T>
  void write_scalar(hid_t dataset, const char* name, hid_t type, int64_t row, T value) const {
    guarded(name, [&] { h5::write_rows(dataset, type, row, 1, &value, xfer()); });
  }

  template <class T>
  std::vector<T> read_column(hid_t dataset, const char* name, hid_t type, int64_t n) const {
    std::vector<T> values(static_cast<size_t>(n));
    guarded(name, [&] { h5::read_rows(dataset, type, 0, n, values.data(), xfer()); });
    return values;
  }

  std::vector<std::string> read_strings(hid_t dataset, const char* name, int64_t n) const {
    return guarded(name, [&] {
      const h5::Id stored = h5::type_id(CVX_H5(H5Dget_type(dataset)));
      const size_t width = H5Tget_size(stored);
      const h5::Id memory = h5::fixed_string_type(width);
      std::vector<char> buffer(static_cast<size_t>(n) * width);
      h5::read_rows(dataset, memory, 0, n, buffer.data(), xfer());
      return unpack_strings(buffer, width);
    });
  }

  // Flushes HDF5's caches to the file (POSIX driver only: with MPI-IO H5Fflush is collective, and
  // raw data is not cached there anyway).
  void flush_local() const {
    if (!parallel) guarded("flush", [&] { CVX_H5(H5Fflush(file, H5F_SCOPE_LOCAL)); });
  }

  // The data written so far by this rank reaches the disk before the flag that says it is there:
  // a job killed, or a node lost, between the two leaves the sample pending, never "done" with
  // missing data.
  void make_durable() const {
    flush_local();
    if (sync_fd < 0) return;
    CVX_CHECK_AS(SystemError, ::fdatasync(sync_fd) == 0, "latent store ", path.string(),
                 ": fdatasync failed: ", std::strerror(errno));
  }

  void open_datasets() {
    auto open = [&](const char* name) {
      return guarded(name, [&] {
        CVX_CHECK_AS(FormatError, CVX_H5(H5Lexists(file, name, H5P_DEFAULT)) > 0, "data set is missing");
        return h5::dataset_id(CVX_H5(H5Dopen2(file, name, H5P_DEFAULT)));
      });
    };
    moments = open("/latents/moments");
    if (CVX_H5(H5Lexists(file, "/latents/image_moments", H5P_DEFAULT)) > 0)
      image_moments = open("/latents/image_moments");
    if (CVX_H5(H5Lexists(file, "/images", H5P_DEFAULT)) > 0 &&
        CVX_H5(H5Lexists(file, "/images/pixels", H5P_DEFAULT)) > 0)
      images = open("/images/pixels");
    embeddings = open("/prompts/embeddings");
    prompt_text = open("/prompts/text");
    prompt_hash = open("/prompts/hash");
    prompt_status = open("/prompts/status");
    sample_id = open("/samples/id");
    media_path = open("/samples/media_path");
    prompt_row = open("/samples/prompt_row");
    frames = open("/samples/frames");
    status = open("/samples/status");
    reason = open("/samples/reason");
  }

  // Reads the header and options back and checks every data set's shape against them.
  void load_layout() {
    guarded("/header", [&] {
      const h5::Id group = h5::group_id(CVX_H5(H5Gopen2(file, "/header", H5P_DEFAULT)));
      header.format_version = h5::read_int_attribute(group, "format_version");
      CVX_CHECK_AS(FormatError, header.format_version >= 1 && header.format_version <= kStoreFormatVersion,
                   "format version ", header.format_version, " is not supported (this cvx reads versions 1 to ",
                   kStoreFormatVersion, "; a newer cvx wrote it)");
      visit_store_header(header, AttributeReader{group});
      options.gzip_level = static_cast<int>(h5::read_int_attribute(group, "gzip_level"));
    });
    open_datasets();
    options.latent_dtype = guarded("/latents/moments", [&] {
      return parse_dtype(h5::read_string_attribute(moments, "dtype"), "/latents/moments");
    });
    options.embedding_dtype = guarded("/prompts/embeddings", [&] {
      return parse_dtype(h5::read_string_attribute(embeddings, "dtype"), "/prompts/embeddings");
    });
    options.image_latents = image_moments.valid();
    options.images = images.valid();
    // Format 2 added the I2V conditioning images; a T2V store of format 1 has exactly format 2's layout.
    CVX_CHECK_AS(FormatError, !(header.format_version == 1 && options.image_latents), "latent store ", path.string(),
                 " is an I2V store of format version 1, which holds no conditioning images (format ",
                 kStoreFormatVersion,
                 " stores them for the official per-step image encode). Rebuild it with `mpirun "
                 "-np N cvx_precompute --config CONFIG --precompute.overwrite true` (the same [model] and [data] "
                 "settings)");
    const auto moments_dims = h5::dataset_shape(moments);
    const auto embedding_dims = h5::dataset_shape(embeddings);
    CVX_CHECK_AS(FormatError, moments_dims.size() == 5 && embedding_dims.size() == 3, "latent store ", path.string(),
                 ": /latents/moments or /prompts/embeddings has the wrong rank");
    samples = static_cast<int64_t>(moments_dims[0]);
    prompts = static_cast<int64_t>(embedding_dims[0]);
    auto expect = [&](hid_t dataset, const char* name, std::vector<int64_t> shape) {
      std::vector<int64_t> actual;
      for (hsize_t d : h5::dataset_shape(dataset)) actual.push_back(static_cast<int64_t>(d));
      CVX_CHECK_AS(FormatError, actual == shape, "latent store ", path.string(), ": ", name, " has shape ",
                   shape_string(actual), " but the header implies ", shape_string(shape));
    };
    auto with_rows = [](int64_t n, std::vector<int64_t> shape) {
      shape.insert(shape.begin(), n);
      return shape;
    };
    expect(moments, "/latents/moments", with_rows(samples, moments_shape(header.latent_shape[1])));
    if (image_moments.valid()) expect(image_moments, "/latents/image_moments", with_rows(samples, moments_shape(1)));
    if (images.valid()) expect(images, "/images/pixels", with_rows(samples, image_shape()));
    expect(embeddings, "/prompts/embeddings", {prompts, header.max_text_length, header.text_embed_dim});
    for (const auto& [dataset, name] : {std::pair{prompt_text.get(), "/prompts/text"},
                                        {prompt_hash.get(), "/prompts/hash"},
                                        {prompt_status.get(), "/prompts/status"}}) {
      expect(dataset, name, {prompts});
    }
    for (const auto& [dataset, name] : {std::pair{sample_id.get(), "/samples/id"},
                                        {media_path.get(), "/samples/media_path"},
                                        {prompt_row.get(), "/samples/prompt_row"},
                                        {frames.get(), "/samples/frames"},
                                        {status.get(), "/samples/status"},
                                        {reason.get(), "/samples/reason"}}) {
      expect(dataset, name, {samples});
    }
  }

  void open_file(bool create) {
    h5::silence_errors();
    parallel = use_mpio(comm);
    const h5::Id access = h5::plist_id(CVX_H5(H5Pcreate(H5P_FILE_ACCESS)));
    if (parallel) {
      CVX_H5(H5Pset_fapl_mpio(access, comm, MPI_INFO_NULL));
      // No sieve buffer: a rank's buffered copy of a block of small flags would be written back
      // over the flags other ranks set in the meantime.
      CVX_H5(H5Pset_sieve_buf_size(access, 0));
      transfer = h5::plist_id(CVX_H5(H5Pcreate(H5P_DATASET_XFER)));
      CVX_H5(H5Pset_dxpl_mpio(transfer, H5FD_MPIO_INDEPENDENT));
    }
    open_hdf5(create, access);
    if (!read_only) {
      sync_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      CVX_CHECK_AS(SystemError, sync_fd >= 0, "latent store ", path.string(),
                   ": cannot open it for syncing: ", std::strerror(errno));
    }
  }

  void open_hdf5(bool create, hid_t access) {
    guarded("open", [&] {
      if (create) {
        file = h5::file_id(CVX_H5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access)));
      } else {
        CVX_CHECK_AS(ConfigError, fs::exists(path), "latent store ", path.string(), " does not exist");
        CVX_CHECK_AS(FormatError, H5Fis_hdf5(path.c_str()) > 0, "not an HDF5 file");
        file = h5::file_id(CVX_H5(H5Fopen(path.c_str(), read_only ? H5F_ACC_RDONLY : H5F_ACC_RDWR, access)));
      }
    });
  }
};

// ---------------------------------------------------------------- creation
namespace {

// Header, sample and prompt lists must be the same on every rank: the metadata HDF5 writes
// collectively is taken from each rank's own arguments.
uint64_t arguments_digest(const StoreHeader& header, const std::vector<SampleEntry>& samples,
                          const std::vector<std::string>& prompts, const LatentStoreOptions& options) {
  uint64_t hash = 1469598103934665603ull;
  auto add = [&](const std::string& s) {
    const uint64_t n = s.size();
    hash = fnv1a(&n, sizeof(n), hash);
    hash = fnv1a(s.data(), s.size(), hash);
  };
  for (const auto& [name, value] : store_header_fields(header)) add(name + "=" + value);
  for (const auto& s : samples) {
    add(s.media_path);
    add(s.reason);
    add(std::to_string(s.id) + "," + std::to_string(s.prompt_row) + "," + std::to_string(s.frames) + "," +
        std::to_string(static_cast<int>(s.status)));
  }
  for (const auto& p : prompts) add(p);
  add(std::string(dtype_name(options.latent_dtype)) + dtype_name(options.embedding_dtype) +
      std::to_string(options.image_latents) + std::to_string(options.images) + std::to_string(options.gzip_level));
  return hash;
}

void check_same_on_all_ranks(MPI_Comm comm, uint64_t digest, const fs::path& path) {
  uint64_t low = digest, high = digest;
  CVX_MPI(MPI_Allreduce(MPI_IN_PLACE, &low, 1, MPI_UINT64_T, MPI_MIN, comm));
  CVX_MPI(MPI_Allreduce(MPI_IN_PLACE, &high, 1, MPI_UINT64_T, MPI_MAX, comm));
  CVX_CHECK_AS(ConfigError, low == high, "latent store ", path.string(),
               ": the ranks passed different headers, sample or prompt lists to LatentStore::create");
}

// A data set of `dims` rows; chunked one row per chunk when `chunk_rows` (optionally gzip), filled
// with zeros at allocation when `zero_fill` (status columns: 0 = pending), else never filled.
h5::Id make_dataset(hid_t file, const char* name, hid_t type, std::vector<hsize_t> dims, bool chunk_rows,
                    int gzip_level, bool zero_fill) {
  const h5::Id space = h5::dataspace_id(CVX_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  const h5::Id create = h5::plist_id(CVX_H5(H5Pcreate(H5P_DATASET_CREATE)));
  if (chunk_rows) {
    std::vector<hsize_t> chunk = dims;
    chunk[0] = 1;
    CVX_H5(H5Pset_chunk(create, static_cast<int>(chunk.size()), chunk.data()));
    if (gzip_level > 0) {
      CVX_H5(H5Pset_shuffle(create));
      CVX_H5(H5Pset_deflate(create, static_cast<unsigned>(gzip_level)));
    }
  }
  // Early allocation: parallel HDF5 can only write independently into space that already exists.
  // (Compressed chunks are sized on write, so they are allocated then.)
  CVX_H5(H5Pset_alloc_time(create, gzip_level > 0 && chunk_rows ? H5D_ALLOC_TIME_INCR : H5D_ALLOC_TIME_EARLY));
  CVX_H5(H5Pset_fill_time(create, zero_fill ? H5D_FILL_TIME_ALLOC : H5D_FILL_TIME_NEVER));
  const h5::Id link = h5::plist_id(CVX_H5(H5Pcreate(H5P_LINK_CREATE)));
  CVX_H5(H5Pset_create_intermediate_group(link, 1));
  return h5::dataset_id(CVX_H5(H5Dcreate2(file, name, type, space, link, create, H5P_DEFAULT)));
}

size_t string_width(const std::vector<std::string>& values) {
  size_t width = 1;
  for (const auto& v : values) width = std::max(width, v.size());
  return width;
}

}  // namespace

LatentStore LatentStore::create(const fs::path& path, const StoreHeader& header,
                                const std::vector<SampleEntry>& samples, const std::vector<std::string>& prompts,
                                const LatentStoreOptions& options, MPI_Comm comm) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->header = header;
  impl->header.format_version = kStoreFormatVersion;
  impl->options = options;
  impl->comm = comm;
  impl->read_only = false;
  impl->samples = static_cast<int64_t>(samples.size());
  impl->prompts = static_cast<int64_t>(prompts.size());
  const auto& s = header.latent_shape;
  CVX_CHECK_AS(ConfigError, !samples.empty() && !prompts.empty(), "latent store ", path.string(),
               ": needs at least one sample and one prompt (got ", samples.size(), " and ", prompts.size(), ")");
  CVX_CHECK_AS(ConfigError,
               s[0] > 0 && s[1] > 0 && s[2] > 0 && s[3] > 0 && header.max_text_length > 0 && header.text_embed_dim > 0,
               "latent store ", path.string(), ": latent shape ", field_text(s), ", max text length ",
               header.max_text_length, " and text embedding dim ", header.text_embed_dim, " must be positive");
  CVX_CHECK_AS(ConfigError, options.gzip_level >= 0 && options.gzip_level <= 9, "latent store ", path.string(),
               ": gzip level ", options.gzip_level, " is not in 0..9");
  for (const auto& sample : samples) {
    CVX_CHECK_AS(ConfigError, sample.prompt_row >= 0 && sample.prompt_row < impl->prompts, "latent store ",
                 path.string(), ": sample ", sample.id, " refers to prompt row ", sample.prompt_row, " of ",
                 impl->prompts);
  }
  const bool parallel = use_mpio(comm);
  // Parallel HDF5 writes filtered data sets only with collective I/O (1.10.2+), but every rank writes
  // its samples independently, whenever it has encoded them.
  CVX_CHECK_AS(ConfigError, !(parallel && options.gzip_level > 0), "latent store ", path.string(),
               ": compression (gzip level ", options.gzip_level,
               ") cannot be used when several MPI ranks write the store: parallel HDF5 writes compressed data "
               "only collectively, and the precompute ranks write independently. Use gzip level 0, or "
               "compress afterwards (h5repack -f GZIP=4)");
  if (parallel) check_same_on_all_ranks(comm, arguments_digest(header, samples, prompts, options), path);

  impl->open_file(/*create=*/true);
  Impl& st = *impl;
  const hsize_t n = samples.size(), p = prompts.size();
  std::vector<std::string> media_paths, texts;
  for (const auto& sample : samples) media_paths.push_back(sample.media_path);
  size_t path_width = string_width(media_paths);
  if (parallel) {
    // Identical on every rank (checked above); the reduction only guards the type's size.
    CVX_MPI(MPI_Allreduce(MPI_IN_PLACE, &path_width, 1, MPI_UINT64_T, MPI_MAX, comm));
  }
  const size_t text_width = string_width(prompts);
  const h5::Id path_type = h5::fixed_string_type(path_width);
  const h5::Id text_type = h5::fixed_string_type(text_width);
  const h5::Id reason_type = h5::fixed_string_type(kReasonWidth);
  const auto latent_type = file_type(options.latent_dtype);
  const auto embed_type = file_type(options.embedding_dtype);
  const int gzip = options.gzip_level;

  st.guarded("creating the data sets", [&] {
    {
      const h5::Id group = h5::group_id(CVX_H5(H5Gcreate2(st.file, "/header", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
      visit_store_header(st.header, AttributeWriter{group});
      h5::write_attribute(group, "gzip_level", int64_t{gzip});
    }
    auto dims = [](hsize_t rows, const std::vector<int64_t>& shape) {
      std::vector<hsize_t> d{rows};
      for (int64_t v : shape) d.push_back(static_cast<hsize_t>(v));
      return d;
    };
    st.moments =
        make_dataset(st.file, "/latents/moments", latent_type, dims(n, st.moments_shape(s[1])), true, gzip, false);
    h5::write_attribute(st.moments, "dtype", std::string(dtype_name(options.latent_dtype)));
    if (options.image_latents) {
      st.image_moments =
          make_dataset(st.file, "/latents/image_moments", latent_type, dims(n, st.moments_shape(1)), true, gzip, false);
      h5::write_attribute(st.image_moments, "dtype", std::string(dtype_name(options.latent_dtype)));
    }
    if (options.images) {
      st.images = make_dataset(st.file, "/images/pixels", H5T_STD_U8LE, dims(n, st.image_shape()), true, gzip, false);
    }
    st.embeddings = make_dataset(st.file, "/prompts/embeddings", embed_type,
                                 dims(p, {header.max_text_length, header.text_embed_dim}), true, gzip, false);
    h5::write_attribute(st.embeddings, "dtype", std::string(dtype_name(options.embedding_dtype)));
    st.prompt_text = make_dataset(st.file, "/prompts/text", text_type, {p}, false, 0, false);
    st.prompt_hash = make_dataset(st.file, "/prompts/hash", H5T_STD_U64LE, {p}, false, 0, false);
    st.prompt_status = make_dataset(st.file, "/prompts/status", H5T_STD_U8LE, {p}, false, 0, true);
    st.sample_id = make_dataset(st.file, "/samples/id", H5T_STD_I64LE, {n}, false, 0, false);
    st.media_path = make_dataset(st.file, "/samples/media_path", path_type, {n}, false, 0, false);
    st.prompt_row = make_dataset(st.file, "/samples/prompt_row", H5T_STD_I64LE, {n}, false, 0, false);
    st.frames = make_dataset(st.file, "/samples/frames", H5T_STD_I32LE, {n}, false, 0, true);
    st.status = make_dataset(st.file, "/samples/status", H5T_STD_U8LE, {n}, false, 0, true);
    st.reason = make_dataset(st.file, "/samples/reason", reason_type, {n}, false, 0, true);
  });

  int rank = 0;
  if (parallel) CVX_MPI(MPI_Comm_rank(comm, &rank));
  if (rank == 0) {
    std::vector<int64_t> ids, rows;
    std::vector<int32_t> frame_counts;
    std::vector<uint8_t> statuses;
    std::vector<std::string> reasons;
    std::vector<uint64_t> hashes;
    for (const auto& sample : samples) {
      ids.push_back(sample.id);
      rows.push_back(sample.prompt_row);
      frame_counts.push_back(sample.frames);
      statuses.push_back(static_cast<uint8_t>(sample.status));
      reasons.push_back(sample.reason);
    }
    for (const auto& text : prompts) hashes.push_back(prompt_hash(text));
    const auto x = st.xfer();
    const auto ni = static_cast<int64_t>(n), pi = static_cast<int64_t>(p);
    st.guarded("writing the index", [&] {
      h5::write_rows(st.sample_id, H5T_NATIVE_INT64, 0, ni, ids.data(), x);
      h5::write_rows(st.media_path, path_type, 0, ni, pack_strings(media_paths, path_width).data(), x);
      h5::write_rows(st.prompt_row, H5T_NATIVE_INT64, 0, ni, rows.data(), x);
      h5::write_rows(st.frames, H5T_NATIVE_INT32, 0, ni, frame_counts.data(), x);
      h5::write_rows(st.status, H5T_NATIVE_UINT8, 0, ni, statuses.data(), x);
      h5::write_rows(st.reason, reason_type, 0, ni, pack_strings(reasons, kReasonWidth).data(), x);
      h5::write_rows(st.prompt_text, text_type, 0, pi, pack_strings(prompts, text_width).data(), x);
      h5::write_rows(st.prompt_hash, H5T_NATIVE_UINT64, 0, pi, hashes.data(), x);
    });
  }
  LatentStore store(std::move(impl));
  store.flush();
  return store;
}

LatentStore LatentStore::open(const fs::path& path, MPI_Comm comm, bool read_only) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->comm = comm;
  impl->read_only = read_only;
  impl->open_file(/*create=*/false);
  impl->load_layout();
  return LatentStore(std::move(impl));
}

LatentStore::LatentStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LatentStore::LatentStore(LatentStore&&) noexcept = default;
LatentStore& LatentStore::operator=(LatentStore&&) noexcept = default;
LatentStore::~LatentStore() {
  try {
    close();
  } catch (const std::exception&) {
    // A destructor must not throw; close() reports.
  }
}

const fs::path& LatentStore::path() const { return impl_->path; }
const StoreHeader& LatentStore::header() const { return impl_->header; }
const LatentStoreOptions& LatentStore::options() const { return impl_->options; }
int64_t LatentStore::num_samples() const { return impl_->samples; }
int64_t LatentStore::num_prompts() const { return impl_->prompts; }

void LatentStore::check_compatible(const StoreHeader& requested) const {
  const std::string differences = store_header_differences(impl_->header, requested, "requested");
  CVX_CHECK_AS(ConfigError, differences.empty(), "latent store ", impl_->path.string(),
               " was made with different settings (", differences,
               "). Pass --overwrite to recompute it, or choose a new store path");
}

// ---------------------------------------------------------------- writes
void LatentStore::write_sample(int64_t i, const torch::Tensor& moments, const torch::Tensor& image_moments,
                               const torch::Tensor& image) {
  Impl& st = *impl_;
  st.require_writable();
  st.check_row(i, st.samples, "sample");
  st.write_tensor(st.moments, "/latents/moments", st.options.latent_dtype, i, moments,
                  st.moments_shape(st.header.latent_shape[1]));
  CVX_CHECK_AS(ConfigError, image_moments.defined() == st.image_moments.valid(), "latent store ", st.path.string(),
               ": sample ", i,
               st.image_moments.valid() ? " needs image latent moments (I2V store)"
                                        : " has image latent moments but the store has none");
  if (image_moments.defined()) {
    st.write_tensor(st.image_moments, "/latents/image_moments", st.options.latent_dtype, i, image_moments,
                    st.moments_shape(1));
  }
  CVX_CHECK_AS(ConfigError, image.defined() == st.images.valid(), "latent store ", st.path.string(), ": sample ", i,
               st.images.valid() ? " needs its conditioning image (I2V store)"
                                 : " has a conditioning image but the store holds none");
  if (image.defined()) {
    CVX_CHECK_AS(ConfigError, image.scalar_type() == torch::kUInt8, "latent store ", st.path.string(), ": sample ", i,
                 ": the conditioning image must be uint8, got ", image.scalar_type());
    st.write_tensor_as(st.images, "/images/pixels", H5T_NATIVE_UINT8, torch::kUInt8, i, image, st.image_shape());
  }
}

void LatentStore::write_prompt(int64_t p, const torch::Tensor& embedding) {
  Impl& st = *impl_;
  st.require_writable();
  st.check_row(p, st.prompts, "prompt");
  st.write_tensor(st.embeddings, "/prompts/embeddings", st.options.embedding_dtype, p, embedding,
                  {st.header.max_text_length, st.header.text_embed_dim});
  st.make_durable();
  st.write_scalar(st.prompt_status, "/prompts/status", H5T_NATIVE_UINT8, p, uint8_t{1});
}

void LatentStore::mark_done(int64_t i, int32_t frames) {
  Impl& st = *impl_;
  st.require_writable();
  st.check_row(i, st.samples, "sample");
  st.make_durable();
  st.write_scalar(st.frames, "/samples/frames", H5T_NATIVE_INT32, i, frames);
  st.write_scalar(st.status, "/samples/status", H5T_NATIVE_UINT8, i, static_cast<uint8_t>(SampleStatus::kDone));
  st.flush_local();
}

void LatentStore::mark_bad(int64_t i, const std::string& reason) {
  Impl& st = *impl_;
  st.require_writable();
  st.check_row(i, st.samples, "sample");
  const h5::Id type = h5::fixed_string_type(kReasonWidth);
  const auto packed = pack_strings({reason.substr(0, kReasonWidth - 1)}, kReasonWidth);
  st.guarded("/samples/reason", [&] { h5::write_rows(st.reason, type, i, 1, packed.data(), st.xfer()); });
  st.write_scalar(st.status, "/samples/status", H5T_NATIVE_UINT8, i, static_cast<uint8_t>(SampleStatus::kBad));
  st.flush_local();
}

void LatentStore::flush() {
  Impl& st = *impl_;
  if (!st.file.valid() || st.read_only) return;
  st.guarded("flush", [&] { CVX_H5(H5Fflush(st.file, H5F_SCOPE_GLOBAL)); });
  if (st.parallel) CVX_MPI(MPI_Barrier(st.comm));
}

void LatentStore::close() {
  if (!impl_ || !impl_->file.valid()) return;
  Impl& st = *impl_;
  for (h5::Id* id :
       {&st.moments, &st.image_moments, &st.images, &st.embeddings, &st.prompt_text, &st.prompt_hash, &st.prompt_status,
        &st.sample_id, &st.media_path, &st.prompt_row, &st.frames, &st.status, &st.reason, &st.transfer}) {
    id->reset();
  }
  st.guarded("close", [&] { st.file.close(); });
  if (st.sync_fd >= 0) {
    ::close(st.sync_fd);
    st.sync_fd = -1;
  }
}

// ---------------------------------------------------------------- reads
namespace {
std::vector<int64_t> rows_with(const std::vector<uint8_t>& flags, uint8_t value) {
  std::vector<int64_t> rows;
  for (size_t i = 0; i < flags.size(); ++i) {
    if (flags[i] == value) rows.push_back(static_cast<int64_t>(i));
  }
  return rows;
}
}  // namespace

std::vector<int64_t> LatentStore::pending_samples() const {
  const Impl& st = *impl_;
  return rows_with(st.read_column<uint8_t>(st.status, "/samples/status", H5T_NATIVE_UINT8, st.samples),
                   static_cast<uint8_t>(SampleStatus::kPending));
}

std::vector<int64_t> LatentStore::pending_prompts() const {
  const Impl& st = *impl_;
  return rows_with(st.read_column<uint8_t>(st.prompt_status, "/prompts/status", H5T_NATIVE_UINT8, st.prompts), 0);
}

torch::Tensor LatentStore::read_moments(int64_t i) const {
  const Impl& st = *impl_;
  st.check_row(i, st.samples, "sample");
  return st.read_tensor(st.moments, "/latents/moments", st.options.latent_dtype, i,
                        st.moments_shape(st.header.latent_shape[1]));
}

torch::Tensor LatentStore::read_image_moments(int64_t i) const {
  const Impl& st = *impl_;
  st.check_row(i, st.samples, "sample");
  CVX_CHECK_AS(ConfigError, st.image_moments.valid(), "latent store ", st.path.string(),
               " has no image latents (made for variant ", quote(st.header.variant), ")");
  return st.read_tensor(st.image_moments, "/latents/image_moments", st.options.latent_dtype, i, st.moments_shape(1));
}

torch::Tensor LatentStore::read_image(int64_t i) const {
  const Impl& st = *impl_;
  st.check_row(i, st.samples, "sample");
  CVX_CHECK_AS(ConfigError, st.images.valid(), "latent store ", st.path.string(),
               " holds no conditioning images (made for variant ", quote(st.header.variant), ")");
  return st.read_tensor_as(st.images, "/images/pixels", H5T_NATIVE_UINT8, torch::kUInt8, i, st.image_shape());
}

torch::Tensor LatentStore::read_prompt(int64_t p) const {
  const Impl& st = *impl_;
  st.check_row(p, st.prompts, "prompt");
  return st.read_tensor(st.embeddings, "/prompts/embeddings", st.options.embedding_dtype, p,
                        {st.header.max_text_length, st.header.text_embed_dim});
}

std::vector<SampleEntry> LatentStore::index() const {
  const Impl& st = *impl_;
  const int64_t n = st.samples;
  const auto ids = st.read_column<int64_t>(st.sample_id, "/samples/id", H5T_NATIVE_INT64, n);
  const auto paths = st.read_strings(st.media_path, "/samples/media_path", n);
  const auto rows = st.read_column<int64_t>(st.prompt_row, "/samples/prompt_row", H5T_NATIVE_INT64, n);
  const auto frame_counts = st.read_column<int32_t>(st.frames, "/samples/frames", H5T_NATIVE_INT32, n);
  const auto statuses = st.read_column<uint8_t>(st.status, "/samples/status", H5T_NATIVE_UINT8, n);
  const auto reasons = st.read_strings(st.reason, "/samples/reason", n);
  std::vector<SampleEntry> entries(static_cast<size_t>(n));
  for (size_t i = 0; i < entries.size(); ++i) {
    CVX_CHECK_AS(FormatError, statuses[i] <= 2, "latent store ", st.path.string(), ": sample ", i,
                 " has an unknown status ", int{statuses[i]});
    entries[i] = {ids[i], paths[i], rows[i], frame_counts[i], static_cast<SampleStatus>(statuses[i]), reasons[i]};
  }
  return entries;
}

std::vector<PromptEntry> LatentStore::prompts() const {
  const Impl& st = *impl_;
  const auto texts = st.read_strings(st.prompt_text, "/prompts/text", st.prompts);
  const auto hashes = st.read_column<uint64_t>(st.prompt_hash, "/prompts/hash", H5T_NATIVE_UINT64, st.prompts);
  const auto done = st.read_column<uint8_t>(st.prompt_status, "/prompts/status", H5T_NATIVE_UINT8, st.prompts);
  std::vector<PromptEntry> entries(texts.size());
  for (size_t i = 0; i < entries.size(); ++i) entries[i] = {texts[i], hashes[i], done[i] != 0};
  return entries;
}

// ---------------------------------------------------------------- cvx_inspect
void print_store(const fs::path& path) {
  const LatentStore store = LatentStore::open(path, MPI_COMM_SELF, /*read_only=*/true);
  const auto& options = store.options();
  std::printf(
      "%s: cvx latent store (format %lld), %lld samples, %lld prompts, latents %s, embeddings %s%s%s, gzip %d\n",
      path.c_str(), static_cast<long long>(store.header().format_version), static_cast<long long>(store.num_samples()),
      static_cast<long long>(store.num_prompts()), dtype_name(options.latent_dtype),
      dtype_name(options.embedding_dtype), options.image_latents ? ", image latents" : "",
      options.images ? ", images uint8" : "", options.gzip_level);
  for (const auto& [name, value] : store_header_fields(store.header()))
    std::printf("  %s = %s\n", name.c_str(), value.c_str());
  const auto entries = store.index();
  size_t done = 0, bad = 0;
  std::printf("  %8s  %-7s  %6s  %6s  %s\n", "id", "status", "frames", "prompt", "media path");
  for (const auto& e : entries) {
    const char* status = e.status == SampleStatus::kDone ? "done" : e.status == SampleStatus::kBad ? "bad" : "pending";
    done += e.status == SampleStatus::kDone;
    bad += e.status == SampleStatus::kBad;
    std::printf("  %8lld  %-7s  %6d  %6lld  %s%s%s\n", static_cast<long long>(e.id), status, e.frames,
                static_cast<long long>(e.prompt_row), e.media_path.c_str(), e.reason.empty() ? "" : "  # ",
                e.reason.c_str());
  }
  const auto pending_prompts = store.pending_prompts().size();
  std::printf("  %zu done, %zu bad, %zu pending; %zu of %lld prompts encoded\n", done, bad, entries.size() - done - bad,
              static_cast<size_t>(store.num_prompts()) - pending_prompts, static_cast<long long>(store.num_prompts()));
}

}  // namespace cvx
