#include "cvx/core/module_lock.h"

#include <mutex>
#include <unordered_map>

#include "cvx/core/error.h"

namespace cvx {
namespace {
std::mutex g_mutex;
std::unordered_map<const torch::nn::Module*, std::string> g_locked;

// The tree by address: modules(include_self=true) needs the root to live in a shared_ptr.
std::vector<const torch::nn::Module*> tree(const torch::nn::Module& root) {
  std::vector<const torch::nn::Module*> out{&root};
  for (const auto& m : root.modules(/*include_self=*/false)) out.push_back(m.get());
  return out;
}
}  // namespace

void lock_module_structure(const torch::nn::Module& root, const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const auto* m : tree(root)) g_locked[m] = reason;
}

void unlock_module_structure(const torch::nn::Module& root) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const auto* m : tree(root)) g_locked.erase(m);
}

void check_module_unlocked(const torch::nn::Module& module, const std::string& action) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const auto it = g_locked.find(&module);
  if (it != g_locked.end()) CVX_THROW("cannot ", action, ": the model is ", it->second);
}

}  // namespace cvx
