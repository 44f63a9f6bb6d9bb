// save_safetensors / save_safetensors_sharded: byte-for-byte the layout of the reference library (and
// the shard split of huggingface_hub), written atomically.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string_view>
#include <system_error>

#include "cvx/core/error.h"
#include "cvx/io/atomic_file.h"
#include "cvx/io/safetensors.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little endian; tensors are written as they lie in memory");

namespace cvx {
namespace {

namespace fs = std::filesystem;

// A strided or non-CPU tensor is copied to contiguous CPU memory at most about this much at a time,
// so saving a model never holds a second copy of a large tensor.
constexpr int64_t kChunkBytes = int64_t{16} << 20;

struct Planned {
  const std::string* name;
  const torch::Tensor* tensor;
  std::string dtype;
  uint64_t bytes;
};

// Checks every tensor before anything is written, so bad input never leaves a file half-replaced.
std::vector<Planned> plan(const NamedTensors& tensors, const std::string& where) {
  std::vector<Planned> out;
  std::set<std::string_view> seen;
  for (const auto& [name, tensor] : tensors) {
    CVX_CHECK(name != "__metadata__", where, "\"__metadata__\" is reserved and cannot name a tensor");
    CVX_CHECK(seen.insert(name).second, where, "tensor ", quote(name), " is given twice");
    CVX_CHECK(tensor.defined(), where, "tensor ", quote(name), " is undefined");
    CVX_CHECK(tensor.layout() == torch::kStrided, where, "tensor ", quote(name), " has layout ", tensor.layout(),
              "; only dense tensors can be saved");
    std::string dtype;
    try {
      dtype = torch_dtype_to_safetensors(tensor.scalar_type());
    } catch (const Error& e) {
      CVX_THROW(where, "tensor ", quote(name), ": ", e.message());
    }
    out.push_back({&name, &tensor, std::move(dtype), static_cast<uint64_t>(tensor.numel()) * tensor.element_size()});
  }
  return out;
}

void write_data(AtomicFile& out, const torch::Tensor& tensor) {
  // A negative-bit view stores the un-negated values; resolve it before reading raw bytes.
  torch::Tensor t = tensor.detach().resolve_neg();
  if (t.numel() == 0) return;
  if (t.is_cpu() && t.is_contiguous()) {
    out.write(t.data_ptr(), t.nbytes());
    return;
  }
  // Row blocks along dim 0, each made contiguous on the CPU, concatenate to the row-major whole.
  if (t.dim() == 0) t = t.unsqueeze(0);
  const int64_t rows = t.size(0);
  const int64_t row_bytes = t.numel() / rows * static_cast<int64_t>(t.element_size());
  const int64_t step = std::max<int64_t>(1, kChunkBytes / row_bytes);
  for (int64_t r = 0; r < rows; r += step) {
    const torch::Tensor part = t.narrow(0, r, std::min(step, rows - r)).to(torch::kCPU).contiguous();
    out.write(part.data_ptr(), part.nbytes());
  }
}

std::string shard_name(const std::string& base, size_t k, size_t count) {
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu", k + 1, count);
  return base + suffix + ".safetensors";
}

bool is_shard_name(const std::string& name, const std::string& base) {
  const std::string prefix = base + "-";
  const std::string suffix = ".safetensors";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  const std::string middle = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  const size_t of = middle.find("-of-");
  const auto digits = [](const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return of != std::string::npos && digits(middle.substr(0, of)) && digits(middle.substr(of + 4));
}

// A previous save into the folder may have left files of this checkpoint that the new save does not
// replace (more shards, or the single file vs. the index); loaders would mix them up (diffusers
// even prefers a single file over an index), so they go once the new checkpoint is complete.
void remove_stale(const fs::path& dir, const std::string& base, const ShardedWriteResult& result) {
  std::set<std::string> keep;
  for (const fs::path& f : result.files) keep.insert(f.filename().string());
  if (!result.index.empty()) keep.insert(result.index.filename().string());
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const bool ours =
        name == base + ".safetensors" || name == base + ".safetensors.index.json" || is_shard_name(name, base);
    if (ours && keep.count(name) == 0 && it->is_regular_file()) {
      std::error_code remove_ec;
      fs::remove(it->path(), remove_ec);
      CVX_CHECK_AS(SystemError, !remove_ec, "cannot remove stale checkpoint file ", quote(it->path().string()), ": ",
                   remove_ec.message());
    }
  }
  CVX_CHECK_AS(SystemError, !ec, "cannot list ", quote(dir.string()), " to remove stale shards: ", ec.message());
}

}  // namespace

void save_safetensors(const fs::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = "cannot save safetensors file " + quote(path.string()) + ": ";
  std::vector<Planned> planned = plan(tensors, where);
  std::stable_sort(planned.begin(), planned.end(), [](const Planned& a, const Planned& b) {
    const int oa = safetensors_dtype_order(a.dtype);
    const int ob = safetensors_dtype_order(b.dtype);
    return oa != ob ? oa > ob : *a.name < *b.name;
  });

  // ordered_json keeps insertion order: "__metadata__" first, then the tensors in data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Planned& p : planned) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = p.dtype;
    entry["shape"] = p.tensor->sizes().vec();
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, offset + p.bytes});
    header[*p.name] = std::move(entry);
    offset += p.bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception&) {
    CVX_THROW(where, "tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));

  AtomicFile file(path);
  file.write(length, sizeof length);
  file.write(text);
  for (const Planned& p : planned) {
    try {
      write_data(file, *p.tensor);
    } catch (const c10::Error& e) {
      CVX_THROW(where, "tensor ", quote(*p.name), ": ", one_line(e.what_without_backtrace(), 300));
    }
  }
  CVX_CHECK(file.bytes_written() == sizeof length + text.size() + offset, where, "wrote ", file.bytes_written(),
            " bytes instead of ", sizeof length + text.size() + offset);
  file.commit();
}

ShardedWriteResult save_safetensors_sharded(const fs::path& dir, const std::string& base, const NamedTensors& tensors,
                                            uint64_t max_shard_bytes,
                                            const std::map<std::string, std::string>& metadata) {
  const std::string where = "cannot save checkpoint " + quote((dir / base).string()) + ": ";
  CVX_CHECK(!base.empty() && base.find('/') == std::string::npos, where, "the base name must be a plain file name");
  const std::vector<Planned> planned = plan(tensors, where);

  // The split of huggingface_hub's split_torch_state_dict_into_shards (which diffusers and
  // transformers use), so equal inputs give equal files: greedy in input order, and a tensor above
  // the limit becomes a shard of its own at once, ahead of the shard still being filled.
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < planned.size(); ++i) {
    const uint64_t bytes = planned[i].bytes;
    total_bytes += bytes;
    if (bytes > max_shard_bytes) {
      shards.push_back({i});
      continue;
    }
    if (current_bytes + bytes > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += bytes;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));

  ShardedWriteResult result;
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string name = shards.size() == 1 ? base + ".safetensors" : shard_name(base, k, shards.size());
    NamedTensors part;
    for (const size_t i : shards[k]) {
      part.push_back(tensors[i]);
      weight_map[tensors[i].first] = name;
    }
    save_safetensors(dir / name, part, metadata);
    result.files.push_back(dir / name);
  }
  if (shards.size() > 1) {
    // As diffusers writes it: json.dumps(index, indent=2, sort_keys=True) + "\n".
    const nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    result.index = dir / (base + ".safetensors.index.json");
    write_file_atomically(result.index, index.dump(2, ' ', /*ensure_ascii=*/true) + "\n");
  }
  remove_stale(dir, base, result);
  return result;
}

}  // namespace cvx
