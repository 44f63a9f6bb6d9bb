#include "cvx/dist/memory_report.h"

#include <cstdio>
#include <sstream>

#include "cvx/core/format_bytes.h"

namespace cvx {

std::vector<MemoryLine> engine_memory_lines(const EngineMemory& m, const FsdpOptions& options) {
  const bool sharded = m.strategy != ShardingStrategy::none && m.world_size > 1;
  const std::string n = sharded ? std::to_string(m.world_size) : "1";
  const std::string c = std::to_string(m.compute_bytes), r = std::to_string(m.reduce_bytes);
  const std::string pf = grouped_digits(m.frozen_padded), pt = grouped_digits(m.trainable_padded);
  std::vector<MemoryLine> lines;
  lines.push_back({"frozen shards", c + " B x Ψf / N = " + c + " x " + pf + " / " + n, m.frozen_shards});
  if (m.trainable_shards > 0)
    lines.push_back(
        {"trainable compute copies", c + " B x Ψt / N = " + c + " x " + pt + " / " + n, m.trainable_shards});
  lines.push_back({"fp32 master shards", "4 B x Ψt / N = 4 x " + pt + " / " + n, m.masters});
  lines.push_back(
      {"gradient shards (" + m.reduce_dtype + ")", r + " B x Ψt / N = " + r + " x " + pt + " / " + n, m.grads});
  lines.push_back({"AdamW moments", "8 B x Ψt / N = 8 x " + pt + " / " + n, m.optimizer});
  if (sharded) {
    lines.push_back({"persistent units, gathered", c + " B x R = " + c + " x " + grouped_digits(m.persistent_padded),
                     m.persistent_full});
    if (m.strategy == ShardingStrategy::full) {
      const std::string k = options.prefetch ? "2" : "1";
      lines.push_back({"gathered units (" + m.largest_unit + (options.prefetch ? " + prefetch)" : ")"),
                       k + " x " + c + " B x U = " + k + " x " + c + " x " + grouped_digits(m.largest_unit_padded),
                       m.unsharded_peak});
    } else {
      lines.push_back({"gathered units (all, ZeRO-2)",
                       c + " B x ΣU = " + c + " x " + grouped_digits(m.runner_units_padded), m.unsharded_peak});
    }
  }
  const std::string k = std::to_string(options.max_pending_reductions + 1);
  lines.push_back(
      {"gradient buffers in flight",
       k + " x " + r + " B x Ut = " + k + " x " + r + " x " + grouped_digits(m.largest_unit_trainable_padded),
       m.gradient_buffers});
  return lines;
}

std::string format_memory_report(const EngineMemory& m, const FsdpOptions& options,
                                 const std::vector<MemoryLine>& extra) {
  std::ostringstream os;
  const char* zero = m.strategy == ShardingStrategy::full             ? "ZeRO-3"
                     : m.strategy == ShardingStrategy::grad_optimizer ? "ZeRO-2"
                                                                      : "replicated";
  os << "memory per rank: shard group N = " << m.world_size << ", sharding " << sharding_strategy_name(m.strategy)
     << " (" << zero << "), compute " << m.compute_dtype << ", gradients reduced in " << m.reduce_dtype
     << "\n  Ψf = " << grouped_digits(m.frozen_padded) << " frozen elements (" << grouped_digits(m.num_frozen)
     << " unpadded), Ψt = " << grouped_digits(m.trainable_padded) << " trainable (" << grouped_digits(m.num_trainable)
     << " unpadded), largest unit U = " << grouped_digits(m.largest_unit_padded) << " (" << m.largest_unit
     << "), persistent R = " << grouped_digits(m.persistent_padded) << "\n";
  uint64_t total = 0;
  auto print = [&](const MemoryLine& line) {
    char row[256];
    std::snprintf(row, sizeof row, "  %-48s %12s   %s\n", line.item.c_str(), format_bytes(line.bytes).c_str(),
                  line.formula.c_str());
    os << row;
    total += line.bytes;
  };
  for (const auto& line : engine_memory_lines(m, options)) print(line);
  for (const auto& line : extra) print(line);
  char row[128];
  std::snprintf(row, sizeof row, "  %-48s %12s\n", "total", format_bytes(total).c_str());
  os << row;
  return os.str();
}

}  // namespace cvx
