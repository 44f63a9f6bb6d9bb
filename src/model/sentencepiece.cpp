#include "cvx/model/sentencepiece.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>

#include "cvx/core/error.h"

// Set for this file by CMake: where the build tree puts the module, and its file name.
#ifndef CVX_SPM_MODULE_PATH
#define CVX_SPM_MODULE_PATH ""
#endif
#ifndef CVX_SPM_MODULE_NAME
#define CVX_SPM_MODULE_NAME "libcvx_spm.so"
#endif

namespace fs = std::filesystem;

namespace cvx {

// The entry points of src/spm/cvx_spm.cpp (ABI version 1).
struct SentencePiece::Api {
  int (*abi_version)();
  void* (*load)(const char*, int64_t, char*, int64_t);
  void (*free)(void*);
  int64_t (*piece_size)(const void*);
  int64_t (*piece_to_id)(const void*, const char*, int64_t);
  int64_t (*id_to_piece)(const void*, int64_t, char*, int64_t);
  int64_t (*encode)(const void*, const char*, int64_t, int64_t*, int64_t);
  int64_t (*decode)(const void*, const int64_t*, int64_t, char*, int64_t);
  fs::path path;
};

namespace {

constexpr int kAbiVersion = 1;

std::vector<fs::path> module_candidates() {
  if (const char* env = std::getenv("CVX_SPM_MODULE"); env && *env) return {fs::path(env)};
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / CVX_SPM_MODULE_NAME);
    candidates.push_back(exe.parent_path().parent_path() / "lib" / CVX_SPM_MODULE_NAME);
  }
  if (*CVX_SPM_MODULE_PATH) candidates.emplace_back(CVX_SPM_MODULE_PATH);
  return candidates;
}

template <class F>
void bind(void* handle, const char* name, F& fn, const fs::path& path) {
  fn = reinterpret_cast<F>(dlsym(handle, name));
  CVX_CHECK_AS(SystemError, fn, path.string(), " has no symbol ", name, " (a stale cvx_spm module? rebuild cvx)");
}

SentencePiece::Api load_api() {
  std::string tried;
  for (const auto& path : module_candidates()) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      tried += " " + path.string();
      continue;
    }
    // DEEPBIND: the module and libsentencepiece resolve protobuf symbols in themselves before the
    // global scope, where libtorch's protobuf lives; LOCAL: nothing of theirs becomes global.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    CVX_CHECK_AS(SystemError, handle, "cannot load the sentencepiece module ", path.string(), ": ", dlerror());
    SentencePiece::Api api{};
    api.path = path;
    bind(handle, "cvx_spm_abi_version", api.abi_version, path);
    CVX_CHECK_AS(SystemError, api.abi_version() == kAbiVersion, path.string(), " has ABI version ", api.abi_version(),
                 ", expected ", kAbiVersion, " (a stale cvx_spm module? rebuild cvx)");
#define CVX_SPM_BIND(field) bind(handle, "cvx_spm_" #field, api.field, path)
    CVX_SPM_BIND(load);
    CVX_SPM_BIND(free);
    CVX_SPM_BIND(piece_size);
    CVX_SPM_BIND(piece_to_id);
    CVX_SPM_BIND(id_to_piece);
    CVX_SPM_BIND(encode);
    CVX_SPM_BIND(decode);
#undef CVX_SPM_BIND
    return api;  // the handle stays open for the life of the process
  }
  CVX_THROW_AS(SystemError, "the sentencepiece module ", CVX_SPM_MODULE_NAME, " was not found (tried", tried,
               "); build the cvx_spm target, install it next to the program, or set CVX_SPM_MODULE to its path");
}

const SentencePiece::Api& api() {
  // A failed load is not cached: the next call retries (and throws again with the same message).
  static std::mutex mutex;
  static std::unique_ptr<SentencePiece::Api> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (!loaded) loaded = std::make_unique<SentencePiece::Api>(load_api());
  return *loaded;
}

// Calls fill(buffer, capacity) -> needed size, growing the buffer once when it was too small.
template <class T, class Fill>
std::vector<T> fetch(size_t guess, Fill&& fill, const char* what, const std::string& source) {
  std::vector<T> out(std::max<size_t>(guess, 16));
  int64_t n = fill(out.data(), static_cast<int64_t>(out.size()));
  if (n > static_cast<int64_t>(out.size())) {
    out.resize(n);
    n = fill(out.data(), n);
  }
  CVX_CHECK_AS(FormatError, n >= 0, "sentencepiece (", source, ") failed to ", what);
  out.resize(n);
  return out;
}

}  // namespace

fs::path SentencePiece::module_path() { return api().path; }

SentencePiece SentencePiece::load(const fs::path& model_file) {
  std::ifstream in(model_file, std::ios::binary);
  CVX_CHECK_AS(ConfigError, in, "cannot open the sentencepiece model ", model_file.string());
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SentencePiece sp;
  sp.api_ = &api();
  sp.source_ = model_file.string();
  char error[512] = {0};
  void* processor = sp.api_->load(bytes.data(), static_cast<int64_t>(bytes.size()), error, sizeof(error));
  CVX_CHECK_AS(FormatError, processor, model_file.string(), " is not a sentencepiece model: ", one_line(error));
  sp.processor_ = std::shared_ptr<void>(processor, sp.api_->free);
  return sp;
}

int64_t SentencePiece::piece_size() const { return api_->piece_size(processor_.get()); }

int64_t SentencePiece::piece_to_id(std::string_view piece) const {
  return api_->piece_to_id(processor_.get(), piece.data(), static_cast<int64_t>(piece.size()));
}

std::string SentencePiece::id_to_piece(int64_t id) const {
  CVX_CHECK_AS(FormatError, id >= 0 && id < piece_size(), "id ", id, " is outside the ", piece_size(), " pieces of ",
               source_);
  const auto bytes = fetch<char>(
      16, [&](char* out, int64_t capacity) { return api_->id_to_piece(processor_.get(), id, out, capacity); },
      "look up a piece", source_);
  return std::string(bytes.begin(), bytes.end());
}

std::vector<int64_t> SentencePiece::encode(std::string_view text) const {
  return fetch<int64_t>(
      text.size() + 2,
      [&](int64_t* out, int64_t capacity) {
        return api_->encode(processor_.get(), text.data(), static_cast<int64_t>(text.size()), out, capacity);
      },
      "encode text", source_);
}

std::string SentencePiece::decode(const std::vector<int64_t>& ids) const {
  const auto bytes = fetch<char>(
      4 * ids.size(),
      [&](char* out, int64_t capacity) {
        return api_->decode(processor_.get(), ids.data(), static_cast<int64_t>(ids.size()), out, capacity);
      },
      "decode ids (one is out of range)", source_);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace cvx
