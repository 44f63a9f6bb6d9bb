// Tensors whose shape outlives their bytes. A model can be built with every parameter shaped but
// unmaterialised (no storage, nothing initialised), then filled by a loader or by the sharding
// engine one unit at a time; and a gathered unit's flat buffer can drop its bytes after use while
// the parameters that view it keep their shapes, then regrow them in place (the views follow,
// because they share the StorageImpl, not a data pointer). Device-agnostic: the bytes come from
// and go back to the storage's own allocator (the CUDA caching allocator on GPU).
#pragma once
#include <torch/torch.h>

#include <cstddef>

namespace cvx {

// A tensor of `shape` with the dtype/device of `options` and no bytes behind it. Reading it is
// invalid until it is materialised (set_data onto real storage) or its storage is regrown.
torch::Tensor unmaterialized_tensor(at::IntArrayRef shape, const torch::TensorOptions& options);
// True when the storage holds every byte the tensor's shape, strides and offset reach.
bool is_materialized(const torch::Tensor& tensor);
// Drops the bytes of the tensor's storage (every view of it becomes unmaterialised).
void free_storage(const torch::Tensor& tensor);
// Gives the storage `nbytes` fresh (uninitialised) bytes again; a no-op when it already has them.
void allocate_storage(const torch::Tensor& tensor, size_t nbytes);

}  // namespace cvx
