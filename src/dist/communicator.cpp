#include "cvx/dist/communicator.h"

#include "cvx/core/error.h"

namespace cvx {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
  }
  return "?";
}

uint64_t CommStats::total_bytes() const {
  uint64_t total = 0;
  for (const uint64_t b : bytes) total += b;
  return total;
}

const char* CommStats::kind_name(int kind) {
  switch (kind) {
    case all_gather: return "all_gather";
    case reduce_scatter: return "reduce_scatter";
    case all_reduce: return "all_reduce";
    case broadcast: return "broadcast";
    case all_to_all: return "all_to_all";
    default: return "?";
  }
}

void Communicator::count(CommStats::Kind kind, uint64_t bytes) {
  const uint64_t n = static_cast<uint64_t>(size());
  stats_.calls[kind] += 1;
  if (n <= 1) return;
  // Ring algorithms: each rank forwards n-1 of the n chunks once per pass; all-reduce is a
  // reduce-scatter pass followed by an all-gather pass.
  switch (kind) {
    case CommStats::all_gather:
    case CommStats::reduce_scatter: stats_.bytes[kind] += bytes * (n - 1) / n; break;
    case CommStats::all_reduce: stats_.bytes[kind] += 2 * bytes * (n - 1) / n; break;
    case CommStats::broadcast:
    case CommStats::all_to_all: stats_.bytes[kind] += bytes; break;
    case CommStats::num_kinds: break;
  }
}

void Communicator::check_tensor(const char* collective, const torch::Tensor& tensor) const {
  CVX_CHECK(tensor.defined(), collective, " on ", name(), ": undefined tensor");
  CVX_CHECK(tensor.is_contiguous(), collective, " on ", name(), ": the tensor must be contiguous (got sizes ",
            tensor.sizes(), ", strides ", tensor.strides(), "); pass .contiguous() or a flat buffer");
  switch (tensor.scalar_type()) {
    case torch::kFloat32:
    case torch::kFloat64:
    case torch::kFloat16:
    case torch::kBFloat16:
    case torch::kInt32:
    case torch::kInt64: return;
    default:
      CVX_THROW(collective, " on ", name(), ": unsupported dtype ", tensor.scalar_type(),
                " (collectives carry fp32, fp64, fp16, bf16, int32 and int64)");
  }
}

void Communicator::check_shard_full(const char* collective, const torch::Tensor& shard,
                                    const torch::Tensor& full) const {
  check_tensor(collective, shard);
  check_tensor(collective, full);
  CVX_CHECK(shard.scalar_type() == full.scalar_type(), collective, " on ", name(),
            ": shard and full must have the same dtype (got ", shard.scalar_type(), " and ", full.scalar_type(), ")");
  CVX_CHECK(shard.device() == full.device(), collective, " on ", name(),
            ": shard and full must be on the same device (got ", shard.device(), " and ", full.device(), ")");
  CVX_CHECK(full.numel() == size() * shard.numel(), collective, " on ", name(), ": full has ", full.numel(),
            " elements but must have size * shard = ", size(), " * ", shard.numel(), " = ", size() * shard.numel());
  // Contiguous tensors occupy exactly [data, data + nbytes).
  const auto* s = static_cast<const char*>(shard.data_ptr());
  const auto* f = static_cast<const char*>(full.data_ptr());
  const bool overlap = shard.nbytes() > 0 && full.nbytes() > 0 && s < f + full.nbytes() && f < s + shard.nbytes();
  CVX_CHECK(!overlap, collective, " on ", name(),
            ": shard and full overlap in memory; in-place use is not supported, pass separate buffers");
}

void Communicator::check_reduce_op(const char* collective, const torch::Tensor& tensor, ReduceOp op) const {
  CVX_CHECK(op != ReduceOp::avg || tensor.is_floating_point(), collective, " on ", name(),
            ": avg is not defined for integer tensors (got ", tensor.scalar_type(),
            "); reduce with sum and divide where the rounding is wanted");
}

void Communicator::check_root(const char* collective, int root) const {
  CVX_CHECK(root >= 0 && root < size(), collective, " on ", name(), ": root ", root, " is not a rank of this group of ",
            size());
}

void Communicator::check_all_to_all(const torch::Tensor& input, const std::vector<int64_t>& send_counts,
                                    const torch::Tensor& output, const std::vector<int64_t>& recv_counts) const {
  const char* const collective = "all_to_all";
  check_tensor(collective, input);
  check_tensor(collective, output);
  CVX_CHECK(input.scalar_type() == output.scalar_type(), collective, " on ", name(),
            ": input and output must have the same dtype (got ", input.scalar_type(), " and ", output.scalar_type(),
            ")");
  CVX_CHECK(input.device() == output.device(), collective, " on ", name(),
            ": input and output must be on the same device (got ", input.device(), " and ", output.device(), ")");
  const auto total = [&](const std::vector<int64_t>& counts, const char* what) {
    CVX_CHECK(static_cast<int>(counts.size()) == size(), collective, " on ", name(), ": ", what, " has ", counts.size(),
              " entries, one per rank (", size(), ") expected");
    int64_t sum = 0;
    for (const int64_t c : counts) {
      CVX_CHECK(c >= 0, collective, " on ", name(), ": negative count ", c, " in ", what);
      sum += c;
    }
    return sum;
  };
  const int64_t sent = total(send_counts, "send_counts"), received = total(recv_counts, "recv_counts");
  CVX_CHECK(input.numel() == sent, collective, " on ", name(), ": input has ", input.numel(),
            " elements but send_counts add up to ", sent);
  CVX_CHECK(output.numel() == received, collective, " on ", name(), ": output has ", output.numel(),
            " elements but recv_counts add up to ", received);
  CVX_CHECK(send_counts[static_cast<size_t>(rank())] == recv_counts[static_cast<size_t>(rank())], collective, " on ",
            name(), ": this rank sends itself ", send_counts[static_cast<size_t>(rank())], " elements but expects ",
            recv_counts[static_cast<size_t>(rank())]);
  const auto* a = static_cast<const char*>(input.data_ptr());
  const auto* b = static_cast<const char*>(output.data_ptr());
  const bool overlap = input.nbytes() > 0 && output.nbytes() > 0 && a < b + output.nbytes() && b < a + input.nbytes();
  CVX_CHECK(!overlap, collective, " on ", name(), ": input and output overlap in memory; pass separate buffers");
}

}  // namespace cvx
