// SafetensorsFile: a validated, memory-mapped safetensors file handing out tensors without copies.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cvx/core/error.h"
#include "cvx/io/safetensors.h"

namespace cvx {

struct SafetensorsFile::Mapping {
  void* base = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (base != MAP_FAILED) munmap(base, size);
  }
  const uint8_t* bytes() const { return static_cast<const uint8_t*>(base); }
};

namespace {
struct FdCloser {
  int fd;
  ~FdCloser() { ::close(fd); }
};
}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  CVX_CHECK_AS(SystemError, fd >= 0, "cannot open safetensors file ", quote(name), ": ", std::strerror(errno));
  const FdCloser closer{fd};
  struct stat st {};
  CVX_CHECK_AS(SystemError, fstat(fd, &st) == 0, "cannot stat safetensors file ", quote(name), ": ",
               std::strerror(errno));
  CVX_CHECK_AS(SystemError, S_ISREG(st.st_mode), "cannot read safetensors file ", quote(name), ": not a regular file");

  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<size_t>(st.st_size);
  if (mapping->size < 8) {
    // Too short to map usefully (mmap refuses length 0); the parser produces the message.
    const uint8_t none[8] = {};
    parse_safetensors(none, mapping->size, name);
  }
  // Private and writable so tensors can be handed out as ordinary (mutable) tensors: writes land in
  // copy-on-write pages and never reach the file. MAP_NORESERVE keeps the kernel from refusing a
  // checkpoint larger than RAM + swap, as its overcommit heuristic would for a writable mapping.
  mapping->base = mmap(nullptr, mapping->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
  CVX_CHECK_AS(SystemError, mapping->base != MAP_FAILED, "cannot map safetensors file ", quote(name), " (",
               mapping->size, " bytes): ", std::strerror(errno));
  file->header_ = parse_safetensors(mapping->bytes(), mapping->size, name);
  file->mapping_ = std::move(mapping);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_.emplace(file->header_.tensors[i].name, i);
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& entry : index_) out.push_back(entry.first);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  CVX_CHECK_AS(FormatError, it != index_.end(), "safetensors file ", quote(path_.string()), " has no tensor ",
               quote(name));
  return header_.tensors[it->second];
}

const uint8_t* SafetensorsFile::data(const TensorInfo& info) const {
  CVX_CHECK(info.begin <= info.end && info.end <= header_.data_size, "tensor ", quote(info.name),
            " lies outside the data of safetensors file ", quote(path_.string()));
  return mapping_->bytes() + 8 + header_.header_size + info.begin;
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const auto options = torch::TensorOptions().dtype(ti.scalar_type);
  if (ti.num_bytes() == 0) return torch::empty(ti.shape, options);
  auto* bytes = const_cast<uint8_t*>(data(ti));  // the mapping is writable (copy-on-write)
  if (ti.scalar_type == torch::kBool) {
    // Any byte but 0 or 1 in a bool tensor is undefined behaviour for the kernels that read it.
    const bool valid = std::all_of(bytes, bytes + ti.num_bytes(), [](uint8_t b) { return b <= 1; });
    CVX_CHECK_AS(FormatError, valid, "safetensors file ", quote(path_.string()), ": tensor ", quote(name),
                 ": BOOL data holds bytes other than 0 and 1");
  }
  if (reinterpret_cast<uintptr_t>(bytes) % c10::elementSize(ti.scalar_type) == 0) {
    // The deleter owns a reference to the mapping, so the view outlives this object if need be.
    const auto keep_mapping = [mapping = mapping_](void*) {};
    return torch::from_blob(bytes, ti.shape, keep_mapping, options);
  }
  // Writers other than the reference one may misalign data; torch kernels assume alignment.
  torch::Tensor copy = torch::empty(ti.shape, options);
  std::memcpy(copy.data_ptr(), bytes, ti.num_bytes());
  return copy;
}

torch::Tensor TensorSource::tensor(const std::string& name, torch::ScalarType dtype) const {
  torch::Tensor t = tensor(name);
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

}  // namespace cvx
