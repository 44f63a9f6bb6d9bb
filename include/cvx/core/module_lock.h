// A module tree whose structure must not change: once the sharding engine has flattened a model
// (its parameters are views into the engine's buffers), adding or removing an adapter, merging
// one or loading new storage would silently detach parameters from those buffers. Such changes
// check the lock first and are refused with the reason the lock was taken.
#pragma once
#include <torch/torch.h>

#include <string>

namespace cvx {

// Locks `root` and every module below it; `reason` is quoted in refusals ("flattened by the
// sharding engine").
void lock_module_structure(const torch::nn::Module& root, const std::string& reason);
// Unlocks the modules that lock_module_structure(root, ...) locked.
void unlock_module_structure(const torch::nn::Module& root);
// Throws cvx::Error "cannot <action>: <reason>" when `module` belongs to a locked tree.
void check_module_unlocked(const torch::nn::Module& module, const std::string& action);

}  // namespace cvx
