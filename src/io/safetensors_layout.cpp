// The layout of the reference `safetensors` library and the shard split of huggingface_hub, shared by
// every writer.
#include "safetensors_layout.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string_view>
#include <system_error>

#include "cvx/core/error.h"

namespace cvx::safetensors_layout {
namespace {

namespace fs = std::filesystem;

// A strided or non-CPU tensor is copied to contiguous CPU memory at most about this much at a time.
constexpr int64_t kChunkBytes = int64_t{16} << 20;

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

}  // namespace

std::vector<PlannedTensor> plan_tensors(const std::vector<TensorDecl>& decls, const std::string& where) {
  std::vector<PlannedTensor> out;
  out.reserve(decls.size());
  std::set<std::string_view> seen;
  for (size_t i = 0; i < decls.size(); ++i) {
    const TensorDecl& d = decls[i];
    CVX_CHECK(d.name != "__metadata__", where, "\"__metadata__\" is reserved and cannot name a tensor");
    CVX_CHECK(seen.insert(d.name).second, where, "tensor ", quote(d.name), " is given twice");
    PlannedTensor p;
    try {
      p.dtype = torch_dtype_to_safetensors(d.dtype);
    } catch (const Error& e) {
      CVX_THROW(where, "tensor ", quote(d.name), ": ", e.message());
    }
    p.numel = 1;
    for (const int64_t n : d.shape) {
      CVX_CHECK(n >= 0, where, "tensor ", quote(d.name), " has a negative size in shape ", c10::IntArrayRef(d.shape));
      CVX_CHECK(!__builtin_mul_overflow(p.numel, n, &p.numel), where, "tensor ", quote(d.name), " of shape ",
                c10::IntArrayRef(d.shape), " has too many elements");
    }
    const uint64_t element_size = safetensors_dtype_size(p.dtype);
    CVX_CHECK(static_cast<uint64_t>(p.numel) <= (uint64_t{1} << 62) / element_size, where, "tensor ", quote(d.name),
              " of shape ", c10::IntArrayRef(d.shape), " is too large");
    p.bytes = static_cast<uint64_t>(p.numel) * element_size;
    p.name = d.name;
    p.shape = d.shape;
    p.input = i;
    out.push_back(std::move(p));
  }
  return out;
}

FileLayout lay_out_file(std::vector<PlannedTensor> tensors, const std::map<std::string, std::string>& metadata,
                        const std::string& where) {
  FileLayout layout;
  layout.tensors = std::move(tensors);
  std::stable_sort(layout.tensors.begin(), layout.tensors.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    const int oa = safetensors_dtype_order(a.dtype);
    const int ob = safetensors_dtype_order(b.dtype);
    return oa != ob ? oa > ob : a.name < b.name;
  });

  // ordered_json keeps insertion order: "__metadata__" first, then the tensors in data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (PlannedTensor& p : layout.tensors) {
    p.begin = layout.data_size;
    CVX_CHECK(layout.data_size <= (uint64_t{1} << 62) - p.bytes, where, "the tensors add up to too many bytes");
    layout.data_size += p.bytes;
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = p.dtype;
    entry["shape"] = p.shape;
    entry["data_offsets"] = nlohmann::ordered_json::array({p.begin, layout.data_size});
    header[p.name] = std::move(entry);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception&) {
    CVX_THROW(where, "tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  layout.header.resize(8);
  for (int i = 0; i < 8; ++i) layout.header[i] = static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  layout.header += text;
  return layout;
}

ShardSplit split_into_shards(const std::vector<PlannedTensor>& tensors, const std::string& base,
                             uint64_t max_shard_bytes, const std::string& where) {
  CVX_CHECK(!base.empty() && base.find('/') == std::string::npos, where, "the base name must be a plain file name");
  // The split of huggingface_hub's split_torch_state_dict_into_shards (which diffusers and
  // transformers use), so equal inputs give equal files: greedy in input order, and a tensor above
  // the limit becomes a shard of its own at once, ahead of the shard still being filled.
  ShardSplit split;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = tensors[i].bytes;
    total_bytes += bytes;
    if (bytes > max_shard_bytes) {
      split.members.push_back({i});
      continue;
    }
    if (current_bytes + bytes > max_shard_bytes) {
      split.members.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += bytes;
  }
  if (!current.empty() || split.members.empty()) split.members.push_back(std::move(current));

  const size_t count = split.members.size();
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t k = 0; k < count; ++k) {
    split.files.push_back(count == 1 ? base + ".safetensors" : shard_name(base, k, count));
    for (const size_t i : split.members[k]) weight_map[tensors[i].name] = split.files.back();
  }
  if (count > 1) {
    // As diffusers writes it: json.dumps(index, indent=2, sort_keys=True) + "\n".
    const nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    split.index_json = index.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
  }
  return split;
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

void for_each_chunk(const torch::Tensor& tensor, const std::function<void(const void*, size_t)>& sink) {
  // A negative-bit view stores the un-negated values; resolve it before reading raw bytes.
  torch::Tensor t = tensor.detach().resolve_neg();
  if (t.numel() == 0) return;
  if (t.is_cpu() && t.is_contiguous()) {
    sink(t.data_ptr(), t.nbytes());
    return;
  }
  // Row blocks along dim 0, each made contiguous on the CPU, concatenate to the row-major whole.
  if (t.dim() == 0) t = t.unsqueeze(0);
  const int64_t rows = t.size(0);
  const int64_t row_bytes = t.numel() / rows * static_cast<int64_t>(t.element_size());
  const int64_t step = std::max<int64_t>(1, kChunkBytes / row_bytes);
  for (int64_t r = 0; r < rows; r += step) {
    const torch::Tensor part = t.narrow(0, r, std::min(step, rows - r)).to(torch::kCPU).contiguous();
    sink(part.data_ptr(), part.nbytes());
  }
}

}  // namespace cvx::safetensors_layout
