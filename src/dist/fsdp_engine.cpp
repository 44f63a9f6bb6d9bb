#include "cvx/dist/fsdp_engine.h"

#include <cmath>
#include <set>

#include "cvx/core/dtype_name.h"
#include "cvx/core/error.h"
#include "cvx/core/module_lock.h"
#include "cvx/core/recompute.h"
#include "cvx/core/shape.h"

namespace cvx {
namespace {
using torch::autograd::variable_list;

std::string list_some(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 5; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 5) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return out;
}
}  // namespace

ShardingStrategy parse_sharding_strategy(const std::string& name) {
  if (name == "full") return ShardingStrategy::full;
  if (name == "grad_optimizer") return ShardingStrategy::grad_optimizer;
  if (name == "none") return ShardingStrategy::none;
  CVX_THROW_AS(ConfigError, "unknown sharding strategy ", quote(name), " (expected full, grad_optimizer or none)");
}

const char* sharding_strategy_name(ShardingStrategy strategy) {
  switch (strategy) {
    case ShardingStrategy::full: return "full";
    case ShardingStrategy::grad_optimizer: return "grad_optimizer";
    case ShardingStrategy::none: return "none";
  }
  return "?";
}

FsdpEngine::FsdpEngine(std::vector<ShardingUnit> units, Communicator& shard_group, const FsdpOptions& options,
                       torch::Device device, Communicator* replicate_group)
    : shard_group_(shard_group), replicate_group_(replicate_group), options_(options), device_(device) {
  CVX_CHECK(!units.empty(), "sharding engine: no units to shard");
  CVX_CHECK(options.max_pending_reductions >= 1, "sharding engine: max_pending_reductions must be >= 1");
  std::set<const torch::TensorImpl*> seen;
  std::set<std::string> names;
  for (const auto& unit : units) {
    for (const auto* list : {&unit.parameters, &unit.buffers})
      for (const auto& [name, t] : *list) {
        CVX_CHECK(seen.insert(t.unsafeGetTensorImpl()).second, "sharding engine: tensor ", quote(name),
                  " is listed twice (tied tensors cannot be flattened into two units)");
        CVX_CHECK(names.insert(name).second, "sharding engine: two tensors are named ", quote(name));
      }
  }
  const bool sharded = options.strategy != ShardingStrategy::none;
  for (const auto& unit : units)
    units_.emplace_back(unit, options.precision, shard_group.rank(), shard_group.size(), sharded, options.alignment,
                        device, options.allocate);
  for (size_t u = 0; u < units_.size(); ++u) {
    const int64_t index = units_[u].runner_index();
    if (index < 0) continue;
    if (static_cast<int64_t>(by_runner_index_.size()) <= index) by_runner_index_.resize(index + 1, units_.size());
    CVX_CHECK(by_runner_index_[index] == units_.size(), "sharding engine: two units have runner index ", index);
    by_runner_index_[index] = u;
  }
  for (size_t i = 0; i < by_runner_index_.size(); ++i)
    CVX_CHECK(by_runner_index_[i] < units_.size(), "sharding engine: no unit has runner index ", i,
              " (runner indices must be 0, 1, ... without gaps)");
  for (auto& unit : units_) trainable_tensors_.push_back(trainable_tensors(unit));
  for (const auto& unit : units) {
    if (unit.module == nullptr) continue;
    lock_module_structure(*unit.module,
                          "flattened by the sharding engine (its parameters are views into the "
                          "engine's buffers)");
    locked_.push_back(unit.module);
  }
  if (!options.allocate) return;
  for (auto& unit : units_) unit.flatten();
  gather_persistent_units();
}

FsdpEngine::~FsdpEngine() {
  for (auto it = locked_.rbegin(); it != locked_.rend(); ++it) unlock_module_structure(**it);
}

std::vector<torch::Tensor> FsdpEngine::trainable_tensors(const FlatParamUnit& unit) const {
  std::vector<torch::Tensor> out;
  for (const auto& g : unit.groups())
    if (g.layout.trainable) out.insert(out.end(), g.tensors.begin(), g.tensors.end());
  return out;
}

bool FsdpEngine::sharded() const { return options_.strategy != ShardingStrategy::none && shard_group_.size() > 1; }

void FsdpEngine::check_allocated(const char* what) const {
  CVX_CHECK(options_.allocate, "sharding engine: ", what,
            " needs an engine with allocated shards (this one only plans "
            "layouts: allocate = false)");
}

void FsdpEngine::gather_persistent_units() {
  for (auto& unit : units_) {
    if (unit.runner_index() >= 0) continue;
    unit.reshard();
    unit.unshard_async(shard_group_);
  }
  for (auto& unit : units_)
    if (unit.runner_index() < 0) unit.wait_unshard();
}

ShardLoadReport FsdpEngine::load(const TensorSource& source, const std::string& prefix) {
  check_allocated("load()");
  ShardLoadReport report;
  std::set<std::string> listed;
  for (auto& unit : units_) {
    for (auto& g : unit.groups()) {
      for (size_t e = 0; e < g.layout.entries.size(); ++e) {
        const auto& entry = g.layout.entries[e];
        const std::string key = prefix + entry.name;
        listed.insert(key);
        if (g.from_module[e]) continue;  // e.g. LoRA adapters, created with their values
        if (!source.contains(key)) {
          report.missing.push_back(key);
          continue;
        }
        const TensorInfo& info = source.info(key);
        if (c10::IntArrayRef(info.shape) != c10::IntArrayRef(entry.shape)) {
          report.mismatched.push_back(key + ": file " + shape_string(info.shape) + " vs model " +
                                      shape_string(entry.shape));
          continue;
        }
        // A view of the mapped file: only the slice this rank owns is read (and converted).
        const int64_t n = unit.write_entry_slice(g, e, source.tensor(key));
        if (n == 0) continue;
        ++report.num_loaded;
        report.bytes_read += static_cast<uint64_t>(n) * safetensors_dtype_size(info.dtype);
      }
    }
  }
  for (const auto& name : source.names())
    if (name.compare(0, prefix.size(), prefix) == 0 && !listed.count(name)) report.unexpected.push_back(name);
  if (!report.missing.empty() || !report.mismatched.empty() || !report.unexpected.empty()) {
    CVX_THROW_AS(FormatError, "weights in ", source.description(),
                 " do not match the sharded model: ", report.missing.size(), " missing",
                 report.missing.empty() ? "" : " (" + list_some(report.missing) + ")", ", ", report.mismatched.size(),
                 " mismatched", report.mismatched.empty() ? "" : " (" + list_some(report.mismatched) + ")", ", ",
                 report.unexpected.size(), " unexpected",
                 report.unexpected.empty() ? "" : " (" + list_some(report.unexpected) + ")");
  }
  for (auto& g : units_)
    for (auto& group : g.groups()) std::fill(group.from_module.begin(), group.from_module.end(), true);
  gather_persistent_units();
  return report;
}

void FsdpEngine::initialize(const std::function<void(const std::string& name, torch::Tensor& values)>& init) {
  check_allocated("initialize()");
  torch::NoGradGuard no_grad;
  for (auto& unit : units_) {
    for (auto& g : unit.groups()) {
      for (size_t e = 0; e < g.layout.entries.size(); ++e) {
        if (g.from_module[e]) continue;
        const auto& entry = g.layout.entries[e];
        auto values = torch::empty(entry.shape, torch::TensorOptions().dtype(torch::kFloat32));
        init(entry.name, values);
        unit.write_entry_slice(g, e, values);
        g.from_module[e] = true;
      }
    }
  }
  gather_persistent_units();
}

FlatParamUnit& FsdpEngine::runner_unit(int64_t index) {
  CVX_CHECK(index >= 0 && index < static_cast<int64_t>(by_runner_index_.size()), "sharding engine: the model ran unit ",
            index, " but the engine was given ", by_runner_index_.size(), " runner units");
  return units_[by_runner_index_[index]];
}

void FsdpEngine::ensure_unsharded(FlatParamUnit& unit) {
  if (unit.unsharded()) return;
  if (!unit.unshard_in_flight()) unit.unshard_async(shard_group_);
  unit.wait_unshard();
}

void FsdpEngine::prefetch(int64_t runner_index) {
  if (!options_.prefetch || runner_index < 0 || runner_index >= static_cast<int64_t>(by_runner_index_.size())) return;
  auto& unit = units_[by_runner_index_[runner_index]];
  if (!unit.unsharded()) unit.unshard_async(shard_group_);
}

UnitRunner FsdpEngine::runner() {
  check_allocated("runner()");
  return [this](int64_t index, const UnitFn& fn, const variable_list& inputs) { return run_unit(index, fn, inputs); };
}

variable_list FsdpEngine::run_unit(int64_t index, const UnitFn& fn, const variable_list& inputs) {
  FlatParamUnit& unit = runner_unit(index);
  if (!torch::GradMode::is_enabled()) {
    ensure_unsharded(unit);
    prefetch(index + 1);
    auto out = fn(inputs);
    unit.reshard();  // no backward will need it (also under ZeRO-2)
    return out;
  }
  const bool reshard_after_forward = options_.strategy == ShardingStrategy::full;
  const auto& tensors = trainable_tensors_[by_runner_index_[index]];
  RecomputeHooks hooks;
  hooks.before_forward = [this, &unit, index] {
    ensure_unsharded(unit);
    prefetch(index + 1);
  };
  hooks.after_forward = [&unit, reshard_after_forward] {
    if (reshard_after_forward) unit.reshard();
  };
  hooks.before_backward = [this, &unit, index] {
    backward_unfinished_ = true;
    ensure_unsharded(unit);
    prefetch(index - 1);
  };
  hooks.on_param_grads = [this, &unit](const variable_list& grads) {
    size_t next = 0;
    for (auto& g : unit.groups()) {
      if (!g.layout.trainable) continue;
      std::vector<torch::Tensor> mine(grads.begin() + next, grads.begin() + next + g.tensors.size());
      next += g.tensors.size();
      reduce_group(g, mine);
    }
  };
  hooks.after_backward = [&unit] { unit.reshard(); };
  return run_recomputed(fn, inputs, tensors, std::move(hooks), /*keep_activations=*/!options_.recompute);
}

void FsdpEngine::reduce_group(FlatParamUnit::Group& g, const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  const auto reduce_dtype = options_.precision.reduce_dtype;
  auto full_grad = torch::zeros({g.layout.padded_numel}, torch::TensorOptions().dtype(reduce_dtype).device(device_));
  // Undefined gradients stay zero; every rank takes part in the same collectives regardless.
  for (size_t e = 0; e < grads.size(); ++e) {
    if (!grads[e].defined()) continue;
    const auto& entry = g.layout.entries[e];
    full_grad.narrow(0, entry.offset, entry.numel).copy_(grads[e].reshape({-1}));
  }
  PendingReduction p;
  p.full_grad = full_grad;
  p.target = g.grad;
  if (sharded()) {
    p.out = torch::empty({g.layout.shard_numel()}, full_grad.options());
    p.work = shard_group_.reduce_scatter(full_grad, p.out, ReduceOp::avg);
  } else {
    p.out = full_grad;
    if (shard_group_.size() > 1) p.work = shard_group_.all_reduce(full_grad, ReduceOp::avg);
  }
  pending_.push_back(std::move(p));
  while (static_cast<int>(pending_.size()) > options_.max_pending_reductions) complete_oldest_reduction();
}

void FsdpEngine::complete_oldest_reduction() {
  PendingReduction p = std::move(pending_.front());
  pending_.pop_front();
  if (p.work) p.work->wait();
  if (replicate_group_ != nullptr && replicate_group_->size() > 1)
    replicate_group_->all_reduce(p.out, ReduceOp::avg)->wait();
  torch::NoGradGuard no_grad;
  p.target.add_(p.out.to(p.target.scalar_type()));
}

void FsdpEngine::finish_backward() {
  check_allocated("finish_backward()");
  for (auto& unit : units_) {
    if (unit.runner_index() >= 0 || !unit.has_trainable()) continue;
    for (auto& g : unit.groups()) {
      if (!g.layout.trainable) continue;
      std::vector<torch::Tensor> grads;
      for (auto& t : g.tensors) {
        grads.push_back(t.grad());
        t.mutable_grad().reset();
      }
      reduce_group(g, grads);
    }
  }
  while (!pending_.empty()) complete_oldest_reduction();
  for (auto& unit : units_)
    if (unit.runner_index() >= 0 && unit.unsharded()) unit.reshard();
  backward_unfinished_ = false;
}

int FsdpEngine::num_unsharded_runner_units() const {
  int n = 0;
  for (const auto& unit : units_)
    if (unit.runner_index() >= 0 && unit.sharded() && (unit.unsharded() || unit.unshard_in_flight())) ++n;
  return n;
}

void FsdpEngine::backward(const torch::Tensor& loss) {
  loss.backward();
  finish_backward();
}

std::vector<FsdpEngine::TrainableShard> FsdpEngine::trainable_shards() {
  check_allocated("trainable_shards()");
  std::vector<TrainableShard> out;
  for (auto& unit : units_)
    for (auto& g : unit.groups())
      if (g.layout.trainable) out.push_back({unit.name() + "/" + g.layout.group_name(), g.master, g.grad});
  return out;
}

void FsdpEngine::zero_grad() {
  CVX_CHECK(pending_.empty() && !backward_unfinished_,
            "sharding engine: zero_grad() after a backward pass without "
            "finish_backward() (its gradient reductions would be lost)");
  for (auto& unit : units_) unit.zero_grad();
}

double FsdpEngine::grad_norm() {
  CVX_CHECK(pending_.empty() && !backward_unfinished_,
            "sharding engine: the gradients are incomplete: call finish_backward() after backward");
  double local = 0.0;
  for (auto& unit : units_)
    for (auto& g : unit.groups())
      if (g.grad.defined()) local += g.grad.to(torch::kFloat64).pow(2).sum().item<double>();
  if (sharded()) {
    auto total = torch::tensor({local}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
    shard_group_.all_reduce(total, ReduceOp::sum)->wait();
    local = total.item<double>();
  }
  return std::sqrt(local);
}

double FsdpEngine::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  if (max_norm > 0) {
    // As torch.nn.utils.clip_grad_norm_: the coefficient is applied even when it clamps to 1.
    const double coef = std::min(1.0, max_norm / (norm + 1e-6));
    torch::NoGradGuard no_grad;
    for (auto& unit : units_)
      for (auto& g : unit.groups())
        if (g.grad.defined()) g.grad.mul_(coef);
  }
  return norm;
}

void FsdpEngine::after_optimizer_step() {
  for (auto& unit : units_) unit.refresh_compute_shards();
  gather_persistent_units();
}

EngineMemory FsdpEngine::memory() const {
  EngineMemory m;
  m.world_size = shard_group_.size();
  m.strategy = options_.strategy;
  m.reduce_bytes = static_cast<int>(c10::elementSize(options_.precision.reduce_dtype));
  m.reduce_dtype = dtype_name(options_.precision.reduce_dtype);
  uint64_t runner_full_sum = 0, largest_full_grad = 0;
  for (const auto& unit : units_) {
    const auto b = unit.bytes();
    m.frozen_shards += b.frozen_shards;
    m.trainable_shards += b.trainable_shards;
    m.masters += b.masters;
    m.grads += b.grads;
    int64_t padded = 0, trainable_padded = 0;
    for (const auto& g : unit.groups()) {
      (g.layout.trainable ? m.num_trainable : m.num_frozen) += g.layout.numel;
      (g.layout.trainable ? m.trainable_padded : m.frozen_padded) += g.layout.padded_numel;
      padded += g.layout.padded_numel;
      if (g.layout.trainable) trainable_padded += g.layout.padded_numel;
      m.compute_bytes = static_cast<int>(c10::elementSize(g.layout.dtype));
      m.compute_dtype = dtype_name(g.layout.dtype);
    }
    if (b.full_grad > largest_full_grad) {
      largest_full_grad = b.full_grad;
      m.largest_unit_trainable_padded = trainable_padded;
    }
    if (unit.runner_index() < 0) {
      m.persistent_full += b.full;
      m.persistent_padded += padded;
    } else {
      runner_full_sum += b.full;
      m.runner_units_padded += padded;
      if (b.full > m.largest_unit_full || m.largest_unit.empty()) {
        m.largest_unit_full = b.full;
        m.largest_unit_padded = padded;
        m.largest_unit = unit.name();
      }
    }
  }
  m.optimizer = 2 * m.masters;
  if (options_.strategy == ShardingStrategy::full) {
    m.unsharded_peak = m.largest_unit_full * (options_.prefetch ? 2 : 1);
  } else if (options_.strategy == ShardingStrategy::grad_optimizer) {
    m.unsharded_peak = runner_full_sum;
  }
  m.gradient_buffers = largest_full_grad * static_cast<uint64_t>(options_.max_pending_reductions + 1);
  return m;
}

nlohmann::json FsdpEngine::layout_json() const {
  nlohmann::json out{{"world_size", shard_group_.size()},
                     {"strategy", sharding_strategy_name(options_.strategy)},
                     {"alignment", options_.alignment}};
  out["units"] = nlohmann::json::array();
  for (const auto& unit : units_) {
    nlohmann::json u{{"name", unit.name()}, {"runner_index", unit.runner_index()}};
    u["groups"] = nlohmann::json::array();
    for (const auto& g : unit.groups()) u["groups"].push_back(g.layout.to_json());
    out["units"].push_back(std::move(u));
  }
  return out;
}

}  // namespace cvx
